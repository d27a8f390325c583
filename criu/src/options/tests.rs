//! Tests of the command-line and configuration-file parser.

use super::*;

fn p(args: &[&str]) -> Result<Options, OptionsError> {
    let mut v = vec!["criu".to_string()];
    v.extend(args.iter().map(|s| s.to_string()));
    Options::parse_with(v, None, None)
}

#[test]
fn dump_basics() {
    let o = p(&["dump", "-t", "12", "-D", "img", "-W", "wd", "-o", "d.log"]).unwrap();
    assert_eq!(o.command, Some(Command::Dump));
    assert_eq!(o.tree, Some(12));
    assert_eq!(o.images_dir, DirRef::Path(PathBuf::from("img")));
    assert_eq!(o.effective_work_dir(), Path::new("wd"));
    assert_eq!(o.log_file, Some(PathBuf::from("d.log")));
    assert_eq!(o.final_state, FinalState::Dead);
    let o = p(&["-t12", "--images-dir=x", "dump"]).unwrap();
    assert_eq!(o.tree, Some(12));
    assert_eq!(o.effective_work_dir(), Path::new("x"));
    assert!(p(&["dump", "-t", "0"]).is_err());
    assert!(p(&["dump", "-t", "abc"]).is_err());
    assert!(p(&["dump", "-t"]).is_err());
}

#[test]
fn verbosity_spellings() {
    assert_eq!(p(&["check"]).unwrap().log_level, 2);
    assert_eq!(p(&["check", "-v"]).unwrap().log_level, 3);
    assert_eq!(p(&["check", "-v4"]).unwrap().log_level, 4);
    assert_eq!(p(&["check", "-vvv"]).unwrap().log_level, 5);
    assert_eq!(p(&["check", "-v", "-v"]).unwrap().log_level, 4);
    assert_eq!(p(&["check", "--verbosity=1"]).unwrap().log_level, 1);
    assert_eq!(p(&["check", "--verbosity"]).unwrap().log_level, 3);
    assert_eq!(p(&["check", "-verbosity=0"]).unwrap().log_level, 0);
    assert_eq!(p(&["check", "-v0"]).unwrap().log_level, 0);
}

#[test]
fn bundles_flags_and_states() {
    let o = p(&["dump", "-Rj", "-t1"]).unwrap();
    assert_eq!(o.final_state, FinalState::Alive);
    assert!(o.shell_job);
    assert_eq!(p(&["dump", "-s"]).unwrap().final_state, FinalState::Stopped);
    let o = p(&["restore", "-d", "--pidfile", "pf"]).unwrap();
    assert!(o.restore_detached);
    assert_eq!(o.pidfile, Some(PathBuf::from("pf")));
    let o = p(&["restore", "--restore-detached", "--no-restore-detached"]).unwrap();
    assert!(!o.restore_detached);
    let o = p(&["dump", "--shell-job", "--tcp-established", "--file-locks"]).unwrap();
    assert!(o.shell_job && o.tcp_established && o.file_locks);
    // Unambiguous prefix, ambiguous prefix, unknown.
    assert_eq!(p(&["dump", "--tre", "5"]).unwrap().tree, Some(5));
    assert!(matches!(
        p(&["dump", "--tcp"]),
        Err(OptionsError::Ambiguous { .. })
    ));
    assert!(matches!(
        p(&["dump", "--bogus"]),
        Err(OptionsError::Unknown { .. })
    ));
    assert!(matches!(
        p(&["dump", "-q"]),
        Err(OptionsError::Unknown { .. })
    ));
    assert!(matches!(
        p(&["frobnicate"]),
        Err(OptionsError::UnknownCommand { .. })
    ));
    assert!(matches!(
        p(&["dump", "extra"]),
        Err(OptionsError::Excessive { .. })
    ));
    assert!(matches!(
        p(&["dump", "--leave-running=1"]),
        Err(OptionsError::UnexpectedArgument { .. })
    ));
}

#[test]
fn repeatable_and_ignored() {
    let o = p(&[
        "dump",
        "--action-script",
        "/a",
        "--action-script=/b",
        "--timeout",
        "30",
        "--manage-cgroups=ignore",
        "--ext-mount-map",
        "auto",
        "--no-evasive-devices",
    ])
    .unwrap();
    assert_eq!(
        o.action_scripts,
        vec![PathBuf::from("/a"), PathBuf::from("/b")]
    );
    assert_eq!(o.timeout, 30);
    assert_eq!(o.manage_cgroups, Some(CgroupMode::Ignore));
    assert!(
        o.external
            .iter()
            .any(|e| e.kind == "mnt" && e.id.is_empty() && e.value.is_none())
    );
    assert!(
        o.ignored
            .contains(&("no-evasive-devices".to_string(), None))
    );
}

#[test]
fn cpu_cap() {
    assert!(p(&["restore"]).unwrap().cpu_cap.fpu());
    assert!(p(&["restore", "--cpu-cap"]).unwrap().cpu_cap.fpu());
    assert!(p(&["restore", "--cpu-cap=fpu,cpu"]).unwrap().cpu_cap.fpu());
    assert!(!p(&["restore", "--cpu-cap=none"]).unwrap().cpu_cap.fpu());
    assert!(!p(&["restore", "--cpu-cap=cpu,ins"]).unwrap().cpu_cap.fpu());
    assert!(p(&["restore", "--cpu-cap=avx"]).is_err());
}

#[test]
fn typed_values_and_set() {
    let o = p(&[
        "restore",
        "--inherit-fd",
        "fd[5]:pipe:[77]",
        "--external",
        "mnt[/data]:vol",
        "-x12,13",
        "--cgroup-root",
        "cpu:/new",
        "--cgroup-yard",
        "/yard",
    ])
    .unwrap();
    assert_eq!(
        o.inherit_fds,
        vec![InheritFd {
            fd: 5,
            key: "pipe:[77]".into()
        }]
    );
    assert_eq!(o.external[0].kind, "mnt");
    assert!(o.ext_unix_sk);
    assert_eq!(o.ext_unix_sk_inodes, vec![12, 13]);
    assert_eq!(o.cgroup_roots[0].controller.as_deref(), Some("cpu"));
    assert_eq!(o.cgroup_yard, Some(PathBuf::from("/yard")));
    assert!(matches!(
        p(&["restore", "--inherit-fd", "5:x"]),
        Err(OptionsError::BadValue { .. })
    ));
    assert!(matches!(
        p(&["restore", "--external", "noshape"]),
        Err(OptionsError::BadValue { .. })
    ));
    assert!(matches!(
        p(&["dump", "--ms"]),
        Err(OptionsError::Deprecated { .. })
    ));
    // The same options filled by name, as an RPC request does.
    let mut o = Options::default();
    o.set("tree", Some("42")).unwrap();
    o.set("leave-running", None).unwrap();
    o.set("shell-job", None).unwrap();
    o.set("no-shell-job", None).unwrap();
    o.set("cpu-cap", Some("none")).unwrap();
    assert_eq!(o.tree, Some(42));
    assert_eq!(o.final_state, FinalState::Alive);
    assert!(!o.shell_job && !o.cpu_cap.fpu());
    assert_eq!(o.set("tre", Some("1")).unwrap_err().errno(), libc::EINVAL);
    assert!(o.set("tree", None).is_err());
    assert!(o.set("leave-running", Some("1")).is_err());
    assert_eq!(o.set("ms", None).unwrap_err().errno(), libc::EOPNOTSUPP);
}
