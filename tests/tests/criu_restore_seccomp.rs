//! criu dump and restore of seccomp: threads in filter and strict mode come back under the same
//! filters.
//!
//! Every test runs as root, under the test lock and as a child subreaper, checks what a user
//! would check in /proc and in the task's memory, then kills and reaps what it started. The
//! shared helpers (fixtures, [`Scratch`](compel_criu_tests::Scratch), `restore_and_check`, ...)
//! are the tests crate's.

use std::fs;
use std::time::Duration;

use compel_criu_tests::{
    Scratch, Spawned, ask_check, become_subreaper, copy_dir, criu as run_criu, dump_and_reap,
    pid_exists, ready_numbers, restore_d, skip_if_not_root, test_lock,
};

/// `Seccomp` and `Seccomp_filters` of thread `tid` of `pid`, as /proc shows them.
fn seccomp_of(pid: i32, tid: i32) -> (String, String) {
    let st = fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
    let field = |k: &str| {
        st.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    (field("Seccomp:"), field("Seccomp_filters:"))
}

/// Threads under seccomp come back under it: filter mode with the same two filters (the
/// second with its LOG flag) for the main thread, a thread started after them and a child
/// forked after them, strict mode for a thread blocked in read, none for a thread started
/// before; the victim checks that the filters still bind it.
#[test]
fn threads_under_seccomp_come_back_under_the_same_filters() {
    skip_if_not_root!("threads_under_seccomp_come_back_under_the_same_filters");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let (mut v, said) = dir.spawn_victim(
        env!("CARGO_BIN_EXE_criu-victim-seccomp-threads"),
        &[dir.ready.to_str().unwrap()],
        None,
        Duration::from_secs(30),
    );
    let ids = ready_numbers(&said, 1);
    let (pid, child) = (ids[0], ids[4]);
    // Killed and reaped whatever happens (after the parent, whose death hands it to us).
    let _child_guard = Spawned::guard(child);
    let threads = &ids[..4];
    let before: Vec<_> = threads.iter().map(|&t| seccomp_of(pid, t)).collect();
    let s = |m: &str, n: &str| (m.to_string(), n.to_string());
    // main, early, late, strict
    assert_eq!(
        before,
        [s("2", "2"), s("0", "0"), s("2", "2"), s("1", "0")],
        "{said}"
    );
    assert_eq!(seccomp_of(child, child), s("2", "2"));
    dump_and_reap(&mut v, &dir.img, &[]);
    let _ = compel_criu_tests::wait_exit(child);
    let table = criu_images::ImageDir::new(&dir.img)
        .read_seccomp()
        .unwrap()
        .seccomp_filters;
    // Main thread, late thread and child share one chain: one entry per filter.
    assert_eq!(table.len(), 2, "{table:?}");
    assert_eq!((table[0].prev, table[0].flags), (None, None));
    assert_eq!((table[1].prev, table[1].flags), (Some(0), Some(2)));
    // A damaged seccomp.img (two filters naming each other) is refused before anything runs.
    let bad = dir.path("bad");
    fs::create_dir(&bad).unwrap();
    copy_dir(&dir.img, &bad);
    let mut looped = table.clone();
    looped[0].prev = Some(1);
    criu_images::ImageDir::new(&bad)
        .write_seccomp(&criu_images::pb::SeccompEntry {
            seccomp_filters: looped,
        })
        .unwrap();
    let o = run_criu(&["restore", "-d", "-D", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("seccomp.img") && err.contains("loops"),
        "{err}"
    );
    assert!(!pid_exists(pid));
    let task = restore_d(&dir.img, pid);
    let after: Vec<_> = threads.iter().map(|&t| seccomp_of(pid, t)).collect();
    assert_eq!(after, before);
    assert_eq!(seccomp_of(child, child), s("2", "2"));
    let check = dir.ready.with_extension("2");
    assert_eq!(ask_check(task.pid(), &check).trim(), "check ok");
    drop(task);
}
