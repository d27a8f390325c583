//! Issue 15: a pidfd of a thread (`PIDFD_THREAD`) that a child inherited over `fork` is one
//! open file in both processes; it comes back as one open file (kcmp, and `O_NONBLOCK` set by
//! one is seen by the other), naming the thread, and signals sent through it reach that thread
//! alone.
//!
//! Runs as root, under the test lock and as a child subreaper.

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, dump_and_reap, restore_detached, skip_if_not_root,
    spawn_mode_with_pids, test_lock,
};

const BIN: &str = env!("CARGO_BIN_EXE_criu-victim-files15");

/// `KCMP_FILE`.
const KCMP_FILE: libc::c_long = 0;

/// Whether fd `fa` of `a` and fd `fb` of `b` are one open file (kcmp).
fn same_file(a: i32, fa: i32, b: i32, fb: i32) -> bool {
    // SAFETY: kcmp compares kernel objects by pid and number and touches no memory of ours.
    unsafe { libc::syscall(libc::SYS_kcmp, a, b, KCMP_FILE, fa as usize, fb as usize) == 0 }
}

#[test]
fn thread_pidfd_inherited_by_a_child_comes_back_as_one_open_file() {
    skip_if_not_root!("thread_pidfd_inherited_by_a_child_comes_back_as_one_open_file");
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let (mut v, pids) = spawn_mode_with_pids(BIN, d.path(), "pidfd-thread-shared");
    let child = pids[0];
    let out = d.path().join("out");
    {
        let _c = Spawned::guard(child);
        assert!(same_file(v.pid(), 50, child, 50), "not one file before");
        assert_eq!(ask_check(v.pid(), &out), "ok");
        std::fs::remove_file(&out).unwrap();
        dump_and_reap(&mut v, &d.path().join("img"), &[]);
    }
    let restored = restore_detached(&d.path().join("img"), &[]);
    let r = Spawned::guard(restored);
    let _c = Spawned::guard(child);
    assert!(
        std::path::Path::new(&format!("/proc/{child}")).exists(),
        "the child did not come back"
    );
    assert!(
        same_file(restored, 50, child, 50),
        "the thread's pidfd is not one open file after the restore"
    );
    assert_eq!(ask_check(r.pid(), &out), "ok");
}
