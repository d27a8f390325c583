//! Cgroup directories and properties: a counter put by the test into cgroups of its own (v1
//! cpu, memory, pids, cpuset and the v2 hierarchy, with limits and an empty child) is dumped,
//! killed and restored; each `--manage-cgroups` mode treats existing and missing cgroups as
//! criu(8) says, `--cgroup-root` moves them, `--cgroup-props`/`--cgroup-props-file` and
//! `--cgroup-dump-controller` choose what is saved, `--cgroup-yard` reaches the hierarchies
//! through a directory. Every cgroup the test made is removed also when it fails; no other is
//! touched.

use std::path::Path;
use std::time::Duration;

use compel_criu_tests::cgroups::{TestCgroups, cgroup_of};
use compel_criu_tests::{
    Scratch, Spawned, assert_ok_log, become_subreaper, criu, criu_dump, criu_victim, pid_exists,
    restore_detached, skip_if_not_root, spawn_ready, test_lock, wait_exit_timeout,
};
use criu_images::pb::{CgroupDirEntry, CgroupEntry};

fn counter(d: &Scratch) -> Spawned {
    spawn_ready(&criu_victim("counter"), d.root(), &[])
}

/// Dumps `v` (killing it) with `extra`, or leaves it running with `-R` in `extra`.
fn dump(v: &mut Spawned, img: &Path, extra: &[&str]) {
    std::fs::create_dir_all(img).unwrap();
    let mut args = vec!["-o", "dump.log", "-v4"];
    args.extend_from_slice(extra);
    assert_ok_log(
        &criu_dump(v.pid(), img, &args),
        "criu dump",
        &img.join("dump.log"),
    );
    if !extra.contains(&"-R") {
        assert!(
            wait_exit_timeout(v.pid(), Duration::from_secs(5))
                .unwrap()
                .is_some()
        );
        v.mark_reaped();
    }
}

fn image(img: &Path) -> CgroupEntry {
    criu_images::read_single(img.join("cgroup.img"), criu_images::magic::CGROUP).unwrap()
}

/// The saved directory `path` (`/a/b`) of the hierarchy with controller `ctl` ("" for v2).
fn saved<'a>(e: &'a CgroupEntry, ctl: &str, path: &str) -> Option<&'a CgroupDirEntry> {
    let c = e
        .controllers
        .iter()
        .find(|c| c.cnames.iter().any(|n| n == ctl))?;
    fn find<'a>(ds: &'a [CgroupDirEntry], prefix: &str, want: &str) -> Option<&'a CgroupDirEntry> {
        for d in ds {
            let p = if prefix.is_empty() || prefix == "/" {
                format!("/{}", d.dir_name)
            } else {
                format!("{prefix}/{}", d.dir_name)
            };
            if p == want {
                return Some(d);
            }
            if let Some(x) = find(&d.children, &p, want) {
                return Some(x);
            }
        }
        None
    }
    find(&c.dirs, "", path)
}

fn prop<'a>(d: &'a CgroupDirEntry, name: &str) -> Option<&'a str> {
    d.properties
        .iter()
        .find(|p| p.name == name)
        .map(|p| p.value.as_str())
}

/// Restores (detached) and returns a guard for the restored counter, checking that it counts.
fn restore(img: &Path, pid: i32, extra: &[&str]) -> Spawned {
    let _ = std::fs::remove_file(img.join("restored.pid"));
    let got = restore_detached(img, extra);
    let g = Spawned::guard(got);
    assert_eq!(got, pid);
    assert!(pid_exists(pid));
    g
}

/// The restore fails with `want` in its output and no task of the tree is left.
fn refused(img: &Path, pid: i32, extra: &[&str], want: &str) {
    let mut args = vec!["restore", "-D", img.to_str().unwrap(), "-d"];
    args.extend_from_slice(extra);
    let o = criu(&args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "restore {extra:?} succeeded");
    assert!(err.contains(want), "{extra:?}: {err}");
    assert!(!pid_exists(pid), "{extra:?} left the task");
}

#[test]
fn cgroups_and_limits_come_back() {
    skip_if_not_root!("cgroups_and_limits_come_back");
    for h in ["cpu", "memory", "pids", "cpuset"] {
        if !TestCgroups::have(h) {
            eprintln!("skipped: no v1 {h} hierarchy here");
            return;
        }
    }
    let v2 = TestCgroups::have("unified");
    let _g = test_lock();
    become_subreaper();
    let mut cg = TestCgroups::new("cgp-all");
    let d = Scratch::new();
    let mut v = counter(&d);
    let pid = v.pid();
    cg.make("cpu", "");
    cg.make("cpu", "idle");
    cg.set("cpu", "", "cpu.shares", "512");
    cg.set("cpu", "", "cpu.cfs_quota_us", "30000");
    cg.set("cpu", "idle", "cpu.shares", "256");
    cg.make("memory", "");
    cg.set("memory", "", "memory.limit_in_bytes", "268435456");
    cg.make("pids", "");
    cg.set("pids", "", "pids.max", "77");
    cg.make("cpuset", "");
    cg.set("cpuset", "", "cpuset.cpus", "0");
    cg.set("cpuset", "", "cpuset.mems", "0");
    if v2 {
        cg.make("unified", "empty");
        cg.set("unified", "", "cgroup.max.descendants", "5");
    }
    for h in ["cpu", "memory", "pids", "cpuset"] {
        cg.enter(h, "", pid);
    }
    if v2 {
        cg.enter("unified", "", pid);
    }
    dump(&mut v, &d.img, &[]);
    let e = image(&d.img);
    let top = cg.shown("");
    let dir =
        |c: &str, p: &str| saved(&e, c, p).unwrap_or_else(|| panic!("{c}:{p} not saved: {e:?}"));
    assert_eq!(prop(dir("pids", &top), "pids.max"), Some("77"));
    assert_eq!(prop(dir("cpu", &top), "cpu.shares"), Some("512"));
    assert_eq!(prop(dir("cpu", &top), "cpu.cfs_quota_us"), Some("30000"));
    assert_eq!(
        prop(dir("cpu", &cg.shown("idle")), "cpu.shares"),
        Some("256")
    );
    assert_eq!(
        prop(dir("memory", &top), "memory.limit_in_bytes"),
        Some("268435456")
    );
    assert_eq!(prop(dir("cpuset", &top), "cpuset.cpus"), Some("0"));
    if v2 {
        assert_eq!(prop(dir("", &top), "cgroup.max.descendants"), Some("5"));
        dir("", &cg.shown("empty"));
    }
    // Gone before the restore: the default mode (soft) makes them again, with their limits.
    cg.remove_all();
    assert!(!cg.path("pids", "").exists());
    let _r = restore(&d.img, pid, &[]);
    for h in ["cpu", "memory", "pids", "cpuset"] {
        assert_eq!(cgroup_of(pid, h).as_deref(), Some(top.as_str()), "{h}");
    }
    assert_eq!(cg.get("pids", "", "pids.max"), "77");
    assert_eq!(cg.get("cpu", "", "cpu.shares"), "512");
    assert_eq!(cg.get("cpu", "", "cpu.cfs_quota_us"), "30000");
    assert_eq!(cg.get("cpu", "idle", "cpu.shares"), "256");
    assert_eq!(cg.get("memory", "", "memory.limit_in_bytes"), "268435456");
    assert_eq!(cg.get("cpuset", "", "cpuset.cpus"), "0");
    assert_eq!(cg.get("cpuset", "", "cpuset.mems"), "0");
    if v2 {
        assert_eq!(cgroup_of(pid, "").as_deref(), Some(top.as_str()));
        assert_eq!(cg.get("unified", "", "cgroup.max.descendants"), "5");
        assert!(cg.path("unified", "empty").is_dir());
    }
    // It counts on in there.
    let out = d.root().join("out");
    let before = std::fs::metadata(&out).unwrap().len();
    std::thread::sleep(Duration::from_millis(100));
    assert!(std::fs::metadata(&out).unwrap().len() > before);
}

#[test]
fn each_mode_treats_existing_and_missing_cgroups_as_documented() {
    skip_if_not_root!("each_mode_treats_existing_and_missing_cgroups_as_documented");
    if !TestCgroups::have("pids") || !TestCgroups::have("cpu") {
        eprintln!("skipped: no v1 pids and cpu hierarchies here");
        return;
    }
    let _g = test_lock();
    become_subreaper();
    let mut cg = TestCgroups::new("cgp-modes");
    let d = Scratch::new();
    let mut v = counter(&d);
    let pid = v.pid();
    cg.make("pids", "");
    cg.set("pids", "", "pids.max", "77");
    cg.make("cpu", "");
    cg.set("cpu", "", "cpu.shares", "600");
    cg.enter("pids", "", pid);
    cg.enter("cpu", "", pid);
    dump(&mut v, &d.img, &[]);
    let top = cg.shown("");
    let in_ours = |pid: i32| {
        assert_eq!(cgroup_of(pid, "pids").as_deref(), Some(top.as_str()));
        assert_eq!(cgroup_of(pid, "cpu").as_deref(), Some(top.as_str()));
    };
    // Existing cgroups whose limits changed since the dump.
    let changed = || {
        cg.set("pids", "", "pids.max", "99");
        cg.set("cpu", "", "cpu.shares", "700");
    };
    for (mode, restored) in [
        ("soft", false),
        ("none", false),
        ("props", true),
        ("full", true),
    ] {
        changed();
        let r = restore(&d.img, pid, &[&format!("--manage-cgroups={mode}")]);
        in_ours(pid);
        let (p, s) = if restored {
            ("77", "600")
        } else {
            ("99", "700")
        };
        assert_eq!(cg.get("pids", "", "pids.max"), p, "{mode}");
        assert_eq!(cg.get("cpu", "", "cpu.shares"), s, "{mode}");
        drop(r);
    }
    // strict refuses an existing one, and leaves it.
    refused(&d.img, pid, &["--manage-cgroups=strict"], "exists already");
    assert!(cg.path("pids", "").is_dir());
    // ignore: the tree stays in criu's cgroups, nothing is made.
    cg.remove_all();
    let r = restore(&d.img, pid, &["--manage-cgroups=ignore"]);
    assert_eq!(cgroup_of(pid, "pids"), cgroup_of("self", "pids"));
    assert!(!cg.path("pids", "").exists());
    drop(r);
    // none and props need them.
    refused(&d.img, pid, &["--manage-cgroups=none"], "does not exist");
    refused(&d.img, pid, &["--manage-cgroups=props"], "does not exist");
    assert!(!cg.path("pids", "").exists());
    // strict makes them all, with the saved limits.
    let r = restore(&d.img, pid, &["--manage-cgroups=strict"]);
    in_ours(pid);
    assert_eq!(cg.get("pids", "", "pids.max"), "77");
    assert_eq!(cg.get("cpu", "", "cpu.shares"), "600");
    drop(r);
    // A failed restore removes what it made: the cpu cgroup is made, then the pids
    // hierarchy is unreachable (a yard without it).
    cg.remove_all();
    let yard = d.root().join("yard");
    std::fs::create_dir(&yard).unwrap();
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        if h.file_name() != "pids" {
            std::os::unix::fs::symlink(h.path(), yard.join(h.file_name())).unwrap();
        }
    }
    refused(
        &d.img,
        pid,
        &["--cgroup-yard", yard.to_str().unwrap()],
        "hierarchy \"pids\" is not in the yard",
    );
    assert!(
        !cg.path("pids", "").exists(),
        "the failed restore left its cgroup"
    );
    // Through a complete yard it works.
    std::os::unix::fs::symlink("/sys/fs/cgroup/pids", yard.join("pids")).unwrap();
    let r = restore(&d.img, pid, &["--cgroup-yard", yard.to_str().unwrap()]);
    in_ours(pid);
    assert_eq!(cg.get("pids", "", "pids.max"), "77");
    drop(r);
}

#[test]
fn cgroup_root_and_property_lists() {
    skip_if_not_root!("cgroup_root_and_property_lists");
    if !TestCgroups::have("pids") || !TestCgroups::have("cpu") {
        eprintln!("skipped: no v1 pids and cpu hierarchies here");
        return;
    }
    let _g = test_lock();
    become_subreaper();
    let mut cg = TestCgroups::new("cgp-root");
    let mut moved = TestCgroups::new("cgp-moved");
    let d = Scratch::new();
    let mut v = counter(&d);
    let pid = v.pid();
    cg.make("pids", "inner");
    cg.set("pids", "inner", "pids.max", "55");
    cg.make("cpu", "");
    cg.set("cpu", "", "cpu.shares", "300");
    cg.set("cpu", "", "cpu.cfs_quota_us", "40000");
    cg.enter("pids", "inner", pid);
    cg.enter("cpu", "", pid);
    // --cgroup-props replaces the cpu list: only cpu.shares is saved.
    let only_shares =
        "\"cpu\":\n - \"strategy\": \"replace\"\n - \"properties\": [\"cpu.shares\"]\n";
    let img1 = d.path("img1");
    dump(&mut v, &img1, &["-R", "--cgroup-props", only_shares]);
    let e = image(&img1);
    let top = cg.shown("");
    let c = saved(&e, "cpu", &top).unwrap();
    assert_eq!(prop(c, "cpu.shares"), Some("300"));
    assert_eq!(prop(c, "cpu.cfs_quota_us"), None);
    // The same from a file, merged into pids; --cgroup-dump-controller keeps only cpu's dirs.
    let f = d.path("props.yaml");
    std::fs::write(&f, only_shares).unwrap();
    let img2 = d.path("img2");
    dump(
        &mut v,
        &img2,
        &[
            "-R",
            "--cgroup-props-file",
            f.to_str().unwrap(),
            "--cgroup-dump-controller",
            "cpu",
        ],
    );
    let e = image(&img2);
    let c = saved(&e, "cpu", &top).unwrap();
    assert_eq!(prop(c, "cpu.cfs_quota_us"), None);
    assert!(saved(&e, "pids", &cg.shown("inner")).is_none());
    // A malformed description is refused by name and the tree runs on.
    let img3 = d.path("img3");
    std::fs::create_dir(&img3).unwrap();
    let o = criu_dump(pid, &img3, &["-R", "--cgroup-props", "\"cpu\": oops"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--cgroup-props"));
    assert!(pid_exists(pid));
    // The full dump, then a restore with the tree's cgroups moved.
    dump(&mut v, &d.img, &[]);
    cg.remove_all();
    moved.make("pids", "");
    moved.make("cpu", "");
    let r = restore(
        &d.img,
        pid,
        &[
            "--cgroup-root",
            &format!("pids:{}", moved.shown("")),
            "--cgroup-root",
            &format!("cpu:{}", moved.shown("")),
            "--manage-cgroups=full",
        ],
    );
    assert_eq!(
        cgroup_of(pid, "pids").as_deref(),
        Some(moved.shown("").as_str())
    );
    assert_eq!(
        cgroup_of(pid, "cpu").as_deref(),
        Some(moved.shown("").as_str())
    );
    assert_eq!(moved.get("pids", "", "pids.max"), "55");
    assert_eq!(moved.get("cpu", "", "cpu.shares"), "300");
    assert_eq!(moved.get("cpu", "", "cpu.cfs_quota_us"), "40000");
    assert!(!cg.path("pids", "").exists());
    drop(r);
}
