//! `criu dump` then `criu restore` of a process holding pidfds of its child and of itself: they
//! name the restored processes, keep `PIDFD_NONBLOCK`, signal the child and report its exit. A
//! pidfd of a process outside the tree is refused by name, and the tree runs on.

use std::path::Path;
use std::time::Duration;

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, children_of, criu_dump, dump_and_reap, pid_exists,
    restore_detached, test_lock, wait_file,
};

fn spawn_victim(d: &Path, extra: &[&str]) -> Spawned {
    let (out, ready) = (d.join("out"), d.join("ready"));
    let mut args = vec![out.to_str().unwrap(), ready.to_str().unwrap()];
    args.extend_from_slice(extra);
    let v = Spawned::spawn(
        env!("CARGO_BIN_EXE_criu-victim-pidfd"),
        &args,
        &d.join("victim.log"),
        None,
    );
    wait_file(&ready, Duration::from_secs(10));
    v
}

/// Without a dump the victim's own check passes (so a `bad` after restore is the restore's).
#[test]
fn pidfd_victim_checks_pass_untouched() {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let v = spawn_victim(d.path(), &[]);
    assert_eq!(ask_check(v.pid(), &d.path().join("out")), "ok");
}

#[test]
fn pidfds_survive_dump_and_restore() {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let mut v = spawn_victim(d.path(), &[]);
    let child = children_of(v.pid());
    assert_eq!(child.len(), 1, "the victim has one child");
    let mut c = Spawned::guard(child[0]);
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    // The child, killed with the tree, was handed to us (the subreaper): reap it, freeing its pid.
    assert!(
        c.wait(Duration::from_secs(5)).is_some(),
        "the child outlived the dump"
    );
    let files = criu_images::ImageDir::new(&img)
        .read_files()
        .expect("read files.img");
    let mut targets: Vec<i32> = files
        .iter()
        .filter_map(|e| e.pidfd.as_ref())
        .map(|p| p.nspid)
        .collect();
    targets.sort();
    let mut want = vec![v.pid(), child[0]];
    want.sort();
    assert_eq!(targets, want);
    let restored = restore_detached(&img, &[]);
    let r = Spawned::guard(restored);
    // The restored child, should the check not end it.
    let _rc = Spawned::guard(child[0]);
    assert_eq!(ask_check(r.pid(), &d.path().join("out")), "ok");
}

#[test]
fn pidfd_outside_the_tree_is_refused_by_name_and_the_tree_runs_on() {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let v = spawn_victim(d.path(), &["parent"]);
    let child = children_of(v.pid());
    let _c = child.first().map(|&c| Spawned::guard(c));
    let img = d.path().join("img");
    std::fs::create_dir_all(&img).unwrap();
    let o = criu_dump(v.pid(), &img, &["-o", "dump.log"]);
    assert!(
        !o.status.success(),
        "a pidfd of an outside process was dumped"
    );
    let log = std::fs::read_to_string(img.join("dump.log")).unwrap_or_default();
    let text = format!("{}{log}", String::from_utf8_lossy(&o.stderr));
    assert!(
        text.contains("(pidfd)") && text.contains(&std::process::id().to_string()),
        "the refusal does not name the pidfd: {text}"
    );
    assert!(pid_exists(v.pid()), "the victim died");
    assert_eq!(ask_check(v.pid(), &d.path().join("out")), "ok");
}
