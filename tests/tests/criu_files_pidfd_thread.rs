//! `criu dump` then `criu restore` of a process holding pidfds of threads (`PIDFD_THREAD`): of
//! a thread of its own (with a duplicate), of its own leader, and of a thread of its child.
//! After the restore each names its thread, keeps its flags, sends thread-directed signals,
//! and reports the thread's exit.

use std::time::Duration;

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, dump_and_reap, guards, restore_detached, spawn_ready,
    test_lock,
};

fn victim() -> &'static str {
    env!("CARGO_BIN_EXE_criu-victim-pidfd-thread")
}

/// The victim, and the pids it wrote (its child, the child's thread).
fn spawn(d: &std::path::Path) -> (Spawned, i32, i32) {
    let v = spawn_ready(victim(), d, &[]);
    let pids: Vec<i32> = std::fs::read_to_string(d.join("out.pids"))
        .expect("out.pids")
        .split_whitespace()
        .map(|w| w.parse().expect("a pid"))
        .collect();
    (v, pids[0], pids[1])
}

/// Without a dump the victim's own check passes (so a `bad` after restore is the restore's).
#[test]
fn thread_pidfd_victim_checks_pass_untouched() {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let (v, child, _) = spawn(d.path());
    let _c = guards(&[child]);
    assert_eq!(ask_check(v.pid(), &d.path().join("out")), "ok");
}

#[test]
fn pidfds_of_threads_survive_dump_and_restore() {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let (mut v, child, child_tid) = spawn(d.path());
    let mut c = Spawned::guard(child);
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    assert!(
        c.wait(Duration::from_secs(5)).is_some(),
        "the child outlived the dump"
    );
    let files = criu_images::ImageDir::new(&img)
        .read_files()
        .expect("read files.img");
    let pidfds: Vec<(i32, u32)> = files
        .iter()
        .filter_map(|e| e.pidfd.as_ref())
        .map(|p| (p.nspid, p.flags))
        .collect();
    assert_eq!(pidfds.len(), 3, "one entry per open pidfd: {pidfds:?}");
    assert!(
        pidfds.iter().all(|&(_, f)| f & libc::O_EXCL as u32 != 0),
        "PIDFD_THREAD kept in the flags: {pidfds:?}"
    );
    assert!(pidfds.iter().any(|&(p, _)| p == v.pid()));
    assert!(pidfds.iter().any(|&(p, _)| p == child_tid));
    let restored = restore_detached(&img, &[]);
    let r = Spawned::guard(restored);
    let _rc = Spawned::guard(child);
    assert_eq!(ask_check(r.pid(), &d.path().join("out")), "ok");
}
