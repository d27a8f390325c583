//! A tracking userfaultfd left in a task by an earlier pre-dump whose images are not named this
//! time (a new chain started with another `criu pre-dump`, or a plain `criu dump` after a
//! pre-dump, as libcriu's `criu_pre_dump` then `criu_dump_iters` do): criu recognises it as its
//! own (a userfaultfd with write-protect tracking at the descriptors it uses), never dumps it,
//! and closes it instead of adding a second one; the restored counter counts on.

use std::path::Path;
use std::time::Duration;

use compel_criu_tests::{
    Exit, Spawned, assert_ok, become_subreaper, counts_on, criu, open_dir, skip_if_not_root,
    spawn_counter, test_lock, wait_exit_timeout,
};

const COUNTER: &str = env!("CARGO_BIN_EXE_criu-victim-counter");

/// The userfaultfds `pid` holds.
fn uffds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.as_os_str() == "anon_inode:[userfaultfd]")
        .count()
}

fn run(args: &[&str], what: &str) {
    assert_ok(&criu(args), what);
}

#[test]
fn a_tracker_left_by_an_earlier_predump_is_closed_not_dumped() {
    skip_if_not_root!("a_tracker_left_by_an_earlier_predump_is_closed_not_dumped");
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let (p1, p2, img) = (
        d.path().join("p1"),
        d.path().join("p2"),
        d.path().join("img"),
    );
    for p in [&p1, &p2, &img] {
        std::fs::create_dir(p).unwrap();
    }
    let mut v = spawn_counter(COUNTER, d.path(), None);
    let pid = v.pid().to_string();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    run(&["pre-dump", "-t", &pid, "-D", &s(&p1)], "first pre-dump");
    assert_eq!(uffds(v.pid()), 1, "the first pre-dump's tracker");
    // A new chain: the first pre-dump's images are not named.
    run(&["pre-dump", "-t", &pid, "-D", &s(&p2)], "second pre-dump");
    assert_eq!(uffds(v.pid()), 1, "a second tracker was added");
    // A plain dump naming no parent either, leaving the counter running: the tracker is not
    // dumped and is closed.
    run(
        &["dump", "-t", &pid, "-D", &s(&img), "-R", "-o", "dump.log"],
        "dump -R after the pre-dumps",
    );
    assert_eq!(uffds(v.pid()), 0, "the tracker was left in the task");
    // Once more, killing it, and back.
    std::fs::remove_dir_all(&img).unwrap();
    std::fs::create_dir(&img).unwrap();
    run(&["pre-dump", "-t", &pid, "-D", &s(&p1)], "third pre-dump");
    run(
        &["dump", "-t", &pid, "-D", &s(&img), "-o", "dump.log"],
        "dump after a pre-dump, no parent named",
    );
    assert_eq!(
        wait_exit_timeout(v.pid(), Duration::from_secs(5)),
        Ok(Some(Exit::Signal(libc::SIGKILL)))
    );
    v.mark_reaped();
    run(
        &["restore", "-d", "-D", &s(&img), "-o", "restore.log"],
        "restore",
    );
    let restored = Spawned::guard(v.pid());
    assert_eq!(
        uffds(restored.pid()),
        0,
        "a tracker came back with the task"
    );
    assert!(counts_on(d.path()), "the restored counter does not count");
    drop(restored);
}
