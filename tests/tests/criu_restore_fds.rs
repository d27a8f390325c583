//! criu dump and restore of open files: regular files at their offsets, eventfd, epoll, timerfd
//! and signalfd come back at their numbers with their state.
//!
//! Every test runs as root, under the test lock and as a child subreaper, checks what a user
//! would check in /proc and in the task's memory, then kills and reaps what it started. The
//! shared helpers (fixtures, [`Scratch`](compel_criu_tests::Scratch), `restore_and_check`, ...)
//! are the tests crate's.

use std::fs;
use std::time::Duration;

use compel_criu_tests::{
    Scratch, Spawned, assert_ok, become_subreaper, criu as run_criu, dump_and_reap, fdinfo,
    ready_numbers, skip_if_not_root, test_lock,
};

#[test]
fn dump_then_restore_files_victim() {
    skip_if_not_root!("dump_then_restore_files_victim");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let work = dir.path("w");
    fs::create_dir(&work).unwrap();
    dir.round_trip(
        env!("CARGO_BIN_EXE_criu-victim-files"),
        &[work.to_str().unwrap(), dir.ready.to_str().unwrap()],
        Duration::from_secs(10),
        Duration::from_millis(50),
    );
    // The deleted file's stand-in is gone again.
    let left: Vec<_> = fs::read_dir(&work)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("ghost"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// An eventfd (counter 5, non-blocking), an epoll watching it (EPOLLIN, data 0xabc), a
/// monotonic timerfd (100 s, interval 3 s) and a signalfd for SIGUSR2 come back at their
/// numbers with their counter, targets, clock and setting, and mask.
#[test]
fn eventfd_epoll_timerfd_and_signalfd_come_back() {
    skip_if_not_root!("eventfd_epoll_timerfd_and_signalfd_come_back");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let (mut v, r) = dir.spawn_victim(
        env!("CARGO_BIN_EXE_criu-victim-anonfd"),
        &[dir.ready.to_str().unwrap()],
        None,
        Duration::from_secs(10),
    );
    let fds = ready_numbers(&r, 2);
    let [efd, epfd, tfd, sfd] = fds[..] else {
        panic!("ready line {r}");
    };
    dump_and_reap(&mut v, &dir.img, &[]);
    let o = run_criu(&[
        "restore",
        "-d",
        "-D",
        dir.img.to_str().unwrap(),
        "-o",
        "restore.log",
    ]);
    assert_ok(&o, "criu restore -d");
    let task = Spawned::guard(v.pid());
    let pid = task.pid();
    for (fd, what) in [
        (efd, "anon_inode:[eventfd]"),
        (epfd, "anon_inode:[eventpoll]"),
        (tfd, "anon_inode:[timerfd]"),
        (sfd, "anon_inode:[signalfd]"),
    ] {
        let link = fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
        assert_eq!(link.to_string_lossy(), what, "fd {fd}");
    }
    let e = fdinfo(pid, efd);
    assert!(
        e.contains("eventfd-count:                5\n") || e.contains("eventfd-count: 5"),
        "{e}"
    );
    let flags = e
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .map(|f| u32::from_str_radix(f.trim(), 8).unwrap())
        .unwrap();
    assert_ne!(
        flags & libc::O_NONBLOCK as u32,
        0,
        "eventfd flags {flags:o}"
    );
    let ep = fdinfo(pid, epfd);
    let target = ep
        .lines()
        .find(|l| l.starts_with("tfd:"))
        .unwrap_or_else(|| panic!("no epoll target: {ep}"));
    let w: Vec<&str> = target.split_whitespace().collect();
    assert_eq!(w[1], efd.to_string(), "{target}");
    // The kernel always adds EPOLLERR and EPOLLHUP to what was asked.
    let events = (libc::EPOLLIN | libc::EPOLLERR | libc::EPOLLHUP) as u32;
    assert_eq!(u32::from_str_radix(w[3], 16).unwrap(), events, "{target}");
    assert_eq!(u64::from_str_radix(w[5], 16).unwrap(), 0xabc, "{target}");
    let t = fdinfo(pid, tfd);
    assert!(t.contains("clockid: 1\n"), "{t}");
    assert!(t.contains("it_interval: (3, 0)"), "{t}");
    let secs: i64 = t
        .lines()
        .find_map(|l| l.strip_prefix("it_value: ("))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{t}"));
    assert!((80..=100).contains(&secs), "timer left {secs} s: {t}");
    let s = fdinfo(pid, sfd);
    let mask = s
        .lines()
        .find_map(|l| l.strip_prefix("sigmask:"))
        .map(|m| u64::from_str_radix(m.trim(), 16).unwrap())
        .unwrap_or_else(|| panic!("{s}"));
    assert_eq!(mask, 1 << (libc::SIGUSR2 - 1), "{s}");
    drop(task);
}

/// A timerfd set with an absolute time and `TFD_TIMER_CANCEL_ON_SET` comes back set the same
/// way, with the time it had left.
#[test]
fn an_absolute_timerfd_comes_back_absolute() {
    skip_if_not_root!("an_absolute_timerfd_comes_back_absolute");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let (mut v, r) = dir.spawn_victim(
        env!("CARGO_BIN_EXE_criu-victim-abs-timerfd"),
        &[dir.ready.to_str().unwrap()],
        None,
        Duration::from_secs(10),
    );
    let tfd: i32 = r
        .split_whitespace()
        .nth(2)
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("ready line {r}"));
    dump_and_reap(&mut v, &dir.img, &[]);
    let o = run_criu(&[
        "restore",
        "-d",
        "-D",
        dir.img.to_str().unwrap(),
        "-o",
        "restore.log",
    ]);
    assert_ok(&o, "criu restore -d");
    let task = Spawned::guard(v.pid());
    let t = fdinfo(task.pid(), tfd);
    assert!(t.contains("clockid: 0\n"), "{t}");
    let flags = t
        .lines()
        .find_map(|l| l.strip_prefix("settime flags:"))
        .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
        .unwrap_or_else(|| panic!("{t}"));
    let want = (libc::TFD_TIMER_ABSTIME | libc::TFD_TIMER_CANCEL_ON_SET) as u32;
    assert_eq!(flags, want, "{t}");
    let secs: i64 = t
        .lines()
        .find_map(|l| l.strip_prefix("it_value: ("))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{t}"));
    assert!((80..=100).contains(&secs), "timer left {secs} s: {t}");
    drop(task);
}
