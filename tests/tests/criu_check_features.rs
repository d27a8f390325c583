//! `criu check --feature NAME` tells the truth: supported only when the kernel has the feature
//! (probed) and this criu handles what it gates; every name CRIU knows answers; unknown names
//! are errors.

use std::process::{Command, Output, Stdio};

use compel_criu_tests::workspace_bin;

fn criu(args: &[&str]) -> Output {
    Command::new(workspace_bin("criu", "criu"))
        .args(args)
        .arg("--no-default-config")
        .stdin(Stdio::null())
        .env_remove("CRIU_CONFIG_FILE")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A feature probed on the kernel (a lock taken here shows in fdinfo) and handled (file locks
/// are dumped and restored) is supported.
#[test]
fn probed_and_handled_feature_is_supported() {
    let o = criu(&["check", "--feature", "fdinfo_lock"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "fdinfo_lock is supported\n");
}

/// The kernel here has time namespaces and tun devices, but this criu handles neither: not
/// supported, exit 1, and the message says which half is missing.
#[test]
fn unhandled_feature_is_not_supported() {
    for name in ["timens", "tun"] {
        let o = criu(&["check", "--feature", name]);
        assert_eq!(o.status.code(), Some(1), "{name}: {}", stdout(&o));
        assert_eq!(stdout(&o), "", "{name}");
        let err = stderr(&o);
        assert!(
            err.contains(&format!("{name} is not supported: the kernel has it")),
            "{err}"
        );
        assert!(err.contains("does not handle"), "{err}");
    }
}

/// `--feature list` names every feature CRIU 4.2 knows, in CRIU's order, and every one of
/// them answers (supported or not) rather than being unknown.
#[test]
fn list_names_every_criu_feature_and_each_answers() {
    let o = criu(&["check", "--feature", "list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let names: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(names.len(), 45, "{out}");
    assert_eq!(names.first(), Some(&"mnt_id"));
    assert_eq!(names.last(), Some(&"pagemap_scan_guard_pages"));
    for must in [
        "uffd-noncoop",
        "tcp_half_closed",
        "move_mount_set_group",
        "get_rseq_conf",
        "has_ipt_legacy",
    ] {
        assert!(names.contains(&must), "{must} missing from {out}");
    }
    for name in &names {
        let o = criu(&["check", "--feature", name]);
        let said = format!("{}{}", stdout(&o), stderr(&o));
        if o.status.success() {
            assert_eq!(stdout(&o), format!("{name} is supported\n"));
        } else {
            assert_eq!(o.status.code(), Some(1));
            assert!(said.contains(&format!("{name} is not supported")), "{said}");
        }
    }
}

#[test]
fn unknown_feature_is_an_error() {
    let o = criu(&["check", "--feature", "no_such_feature"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), "");
    assert!(
        stderr(&o).contains("unknown feature no_such_feature"),
        "{}",
        stderr(&o)
    );
}
