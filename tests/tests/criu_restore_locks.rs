//! criu dump and restore of file locks: flock, POSIX and OFD locks come back held by the same
//! descriptors with `--file-locks`.
//!
//! Every test runs as root, under the test lock and as a child subreaper, checks what a user
//! would check in /proc and in the task's memory, then kills and reaps what it started. The
//! shared helpers (fixtures, [`Scratch`](compel_criu_tests::Scratch), `restore_and_check`, ...)
//! are the tests crate's.

use std::fs;
use std::os::fd::AsRawFd;
use std::time::Duration;

use compel_criu_tests::{
    Scratch, Spawned, become_subreaper, criu as run_criu, criu_dump, dump_and_reap, fd_locks,
    pid_exists, restore_d, skip_if_not_root, test_lock,
};

/// A flock, a POSIX record lock (its file open twice) and an OFD lock, the flock and the OFD
/// lock shared with a child through inherited open files: a dump without --file-locks refuses
/// and leaves the processes running; with it the locks are saved once each and come back held
/// by the same descriptors in both processes; a lock taken by someone else meanwhile fails the
/// restore cleanly.
#[test]
fn file_locks_come_back_with_file_locks() {
    skip_if_not_root!("file_locks_come_back_with_file_locks");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let files = dir.path("files");
    fs::create_dir(&files).unwrap();
    let (mut v, said) = dir.spawn_victim(
        env!("CARGO_BIN_EXE_criu-victim-locks"),
        &[files.to_str().unwrap(), dir.ready.to_str().unwrap()],
        None,
        Duration::from_secs(30),
    );
    let pid = v.pid();
    let child: i32 = said.split_whitespace().nth(2).unwrap().parse().unwrap();
    // Killed and reaped whatever happens (after the parent, whose death hands it to us).
    let _child_guard = Spawned::guard(child);
    let before: Vec<Vec<String>> = (3..=6).map(|fd| fd_locks(pid, fd)).collect();
    // The child shares the open files, so their flock and OFD lock, not the POSIX lock.
    let child_before: Vec<Vec<String>> = (3..=6).map(|fd| fd_locks(child, fd)).collect();
    assert_eq!(
        child_before,
        [before[0].clone(), vec![], vec![], before[3].clone()]
    );
    // fdinfo shows a lock on the descriptor it was taken through (not on fd 5, on `b` too).
    let counts: Vec<usize> = before.iter().map(|l| l.len()).collect();
    assert_eq!(counts, [1, 1, 0, 1], "{before:?}");
    assert!(
        before[0][0].starts_with("FLOCK ADVISORY WRITE"),
        "{before:?}"
    );
    assert!(
        before[1][0].starts_with("POSIX ADVISORY WRITE"),
        "{before:?}"
    );
    assert!(
        before[3][0].starts_with("OFDLCK ADVISORY READ"),
        "{before:?}"
    );

    let o = criu_dump(pid, &dir.img, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--file-locks"), "{err}");
    assert_eq!(compel_criu_tests::tracer_pid(pid), Some(0));
    assert_eq!(
        (3..=6).map(|fd| fd_locks(pid, fd)).collect::<Vec<_>>(),
        before
    );

    dump_and_reap(&mut v, &dir.img, &["--file-locks"]);
    let _ = compel_criu_tests::wait_exit(child);
    let saved: Vec<criu_images::pb::FileLockEntry> = criu_images::read_all(
        dir.img.join("filelocks.img"),
        criu_images::magic::FILE_LOCKS,
    )
    .unwrap();
    let mut got: Vec<_> = saved
        .iter()
        .map(|l| (l.flag, l.r#type, l.pid, l.fd, l.start, l.len))
        .collect();
    got.sort();
    let (rd, wr) = (libc::F_RDLCK as u32, libc::F_WRLCK as u32);
    assert_eq!(
        got,
        [
            (1, wr, pid, 4, 10, 20),
            (2, wr, pid, 3, 0, 0),
            (4, rd, pid, 6, 0, 0)
        ]
    );

    // Someone else holds the flock now: the restore fails at that step and leaves nothing.
    let other = fs::File::open(files.join("a")).unwrap();
    // SAFETY: flock on our own descriptor.
    let r = unsafe { libc::flock(other.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    assert_eq!(r, 0);
    let o = run_criu(&["restore", "-d", "-D", dir.img.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("file locks"), "{err}");
    assert!(!pid_exists(pid));
    drop(other);

    let task = restore_d(&dir.img, pid);
    let after: Vec<Vec<String>> = (3..=6).map(|fd| fd_locks(pid, fd)).collect();
    assert_eq!(after, before);
    let child_after: Vec<Vec<String>> = (3..=6).map(|fd| fd_locks(child, fd)).collect();
    assert_eq!(child_after, child_before);
    // And they bind: another open file of `a` cannot take the flock.
    let probe = fs::File::open(files.join("a")).unwrap();
    // SAFETY: flock on our own descriptor.
    let r = unsafe { libc::flock(probe.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    assert_eq!(r, -1);
    drop(task);
}
