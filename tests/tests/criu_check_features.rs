//! `criu check --feature NAME` tells the truth: supported only when the kernel has the feature
//! (probed) and this criu handles what it gates; every name CRIU knows answers; unknown names
//! are errors. And what criu does not do with cgroups yet is said at `-v2`: the cgroup options,
//! and a dumped tree whose cgroups are not criu's.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use compel_criu_tests::{
    Exit, Spawned, assert_ok_log, become_subreaper, criu_dump, skip_if_not_root, stderr_text,
    stdout_text, test_lock, wait_file, workspace_bin,
};

fn criu(args: &[&str]) -> Output {
    Command::new(workspace_bin("criu", "criu"))
        .args(args)
        .arg("--no-default-config")
        .stdin(Stdio::null())
        .env_remove("CRIU_CONFIG_FILE")
        .output()
        .unwrap()
}

/// A feature probed on the kernel (a lock taken here shows in fdinfo) and handled (file locks
/// are dumped and restored) is supported; so are time, pid, user and cgroup namespaces, and
/// external network namespaces.
#[test]
fn probed_and_handled_feature_is_supported() {
    for name in [
        "fdinfo_lock",
        "timens",
        "ns_pid",
        "userns",
        "cgroupns",
        "external_net_ns",
    ] {
        let o = criu(&["check", "--feature", name]);
        assert!(o.status.success(), "{}", stderr_text(&o));
        assert_eq!(stdout_text(&o), format!("{name} is supported\n"));
    }
}

/// The kernel here has socket namespace ioctls and tun devices, but this criu handles
/// neither: not supported, exit 1, and the message says which half is missing.
#[test]
fn unhandled_feature_is_not_supported() {
    for name in ["sk_ns", "tun"] {
        let o = criu(&["check", "--feature", name]);
        assert_eq!(o.status.code(), Some(1), "{name}: {}", stdout_text(&o));
        assert_eq!(stdout_text(&o), "", "{name}");
        let err = stderr_text(&o);
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
    assert!(o.status.success(), "{}", stderr_text(&o));
    let out = stdout_text(&o);
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
        let said = format!("{}{}", stdout_text(&o), stderr_text(&o));
        if o.status.success() {
            assert_eq!(stdout_text(&o), format!("{name} is supported\n"));
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
    assert_eq!(stdout_text(&o), "");
    assert!(
        stderr_text(&o).contains("unknown feature no_such_feature"),
        "{}",
        stderr_text(&o)
    );
}

/// A cgroup this test makes for itself, in the first v1 hierarchy (or the v2 one) where criu's
/// test may create one; removed on drop, also when the test fails (after its tasks are gone).
struct OwnCgroup(PathBuf);

impl OwnCgroup {
    fn make() -> Option<OwnCgroup> {
        let name = format!("criu-test-cg-{}", std::process::id());
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        for (mount, ctl) in [
            ("/sys/fs/cgroup/pids", "pids"),
            ("/sys/fs/cgroup/unified", ""),
            ("/sys/fs/cgroup", ""),
        ] {
            // Under the cgroup this test runs in, in that hierarchy.
            let Some(parent) = own.lines().find_map(|l| {
                let mut it = l.splitn(3, ':');
                let (_, c, p) = (it.next()?, it.next()?, it.next()?);
                (c == ctl).then(|| p.trim_start_matches('/').to_string())
            }) else {
                continue;
            };
            let dir = Path::new(mount).join(parent).join(&name);
            if std::fs::create_dir(&dir).is_ok() {
                return Some(OwnCgroup(dir));
            }
        }
        None
    }

    fn enter(&self, pid: i32) -> std::io::Result<()> {
        std::fs::write(self.0.join("cgroup.procs"), pid.to_string())
    }

    fn name(&self) -> String {
        self.0.file_name().unwrap().to_string_lossy().into_owned()
    }
}

impl Drop for OwnCgroup {
    fn drop(&mut self) {
        for _ in 0..100 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("could not remove {}", self.0.display());
    }
}

fn dump_log(v: &mut Spawned, img: &Path) -> String {
    let o = criu_dump(v.pid(), img, &["-o", "dump.log", "-v2"]);
    assert_ok_log(&o, "criu dump", &img.join("dump.log"));
    assert_eq!(
        v.wait(Duration::from_secs(5)),
        Some(Exit::Signal(libc::SIGKILL))
    );
    std::fs::read_to_string(img.join("dump.log")).unwrap()
}

/// A victim moved into a cgroup of its own is dumped with its cgroup (`cgroup.img`: cgroups are
/// dumped now, so no warning that they are not); a victim in criu's cgroup is in criu's set.
#[test]
fn dump_warns_when_the_tree_is_in_another_cgroup() {
    skip_if_not_root!("dump_warns_when_the_tree_is_in_another_cgroup");
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let counter = env!("CARGO_BIN_EXE_criu-victim-counter");
    let start = |tag: &str| {
        let out = d.path().join(format!("count-{tag}"));
        let ready = d.path().join(format!("ready-{tag}"));
        let v = Spawned::spawn_dying_with_us(
            counter,
            &[out.to_str().unwrap(), ready.to_str().unwrap()],
            &d.path().join(format!("victim-{tag}.log")),
            None,
        );
        wait_file(&ready, Duration::from_secs(10));
        v
    };
    // In criu's own cgroups: no warning.
    let mut v = start("home");
    let img = d.path().join("img-home");
    std::fs::create_dir(&img).unwrap();
    let log = dump_log(&mut v, &img);
    assert!(!log.contains("cgroups are not dumped"), "{log}");

    let Some(cg) = OwnCgroup::make() else {
        eprintln!("skipped the cgroup half: no cgroup can be created here");
        return;
    };
    // Declared after the cgroup, so it is killed and reaped before the cgroup is removed.
    let mut v = start("away");
    cg.enter(v.pid()).unwrap();
    let img = d.path().join("img-away");
    std::fs::create_dir(&img).unwrap();
    let log = dump_log(&mut v, &img);
    assert!(!log.contains("cgroups are not dumped"), "{log}");
    let e: criu_images::pb::CgroupEntry =
        criu_images::read_single(img.join("cgroup.img"), criu_images::magic::CGROUP).unwrap();
    let set = criu_images::ImageDir::new(&img)
        .read_core(v.pid() as u32)
        .unwrap()
        .tc
        .unwrap()
        .cg_set
        .unwrap();
    let s = e.sets.iter().find(|s| s.id == set).unwrap();
    assert!(s.ctls.iter().any(|m| m.path.ends_with(&cg.name())), "{s:?}");
}

/// The cgroup options are accepted and, as they all act on dumps and restores, not warned
/// about; a bad mode is refused.
#[test]
fn cgroup_options_are_accepted_unwarned() {
    let d = tempfile::tempdir().unwrap();
    let w = d.path().to_str().unwrap();
    let o = criu(&[
        "check",
        "-W",
        w,
        "-o",
        "check.log",
        "--manage-cgroups=full",
        "--cgroup-root",
        "cpu:/elsewhere",
        "--cgroup-yard",
        "/yard",
    ]);
    assert!(o.status.success(), "{}", stderr_text(&o));
    let log = std::fs::read_to_string(d.path().join("check.log")).unwrap();
    // All three act on dumps and restores (criu_cgroup_props has the yard): none is warned
    // about as ignored.
    for opt in ["--manage-cgroups", "--cgroup-root", "--cgroup-yard"] {
        assert!(
            !log.lines().any(|l| l.contains(opt) && l.contains("WARN")),
            "{opt} warned about: {log}"
        );
    }
    // A bad mode is refused, not ignored.
    let o = criu(&["check", "--manage-cgroups=sometimes"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr_text(&o).contains("--manage-cgroups"),
        "{}",
        stderr_text(&o)
    );
}
