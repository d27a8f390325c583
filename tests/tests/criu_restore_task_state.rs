//! criu dump and restore of per-task state: handlers, timers, limits and credentials (also of
//! another uid), the nice value, a counter that keeps counting.
//!
//! Every test runs as root, under the test lock and as a child subreaper, checks what a user
//! would check in /proc and in the task's memory, then kills and reaps what it started. The
//! shared helpers (fixtures, [`Scratch`](compel_criu_tests::Scratch), `restore_and_check`, ...)
//! are the tests crate's.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use compel_criu_tests::{
    Scratch, Spawned, assert_ok, become_subreaper, criu as run_criu, dump_and_reap, hex_field,
    restore_d, restore_in_background, skip_if_not_root, status_field, test_lock, wait_file,
    wait_resumed,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

#[test]
fn dump_then_restore_state_victim() {
    skip_if_not_root!("dump_then_restore_state_victim");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    dir.round_trip(
        env!("CARGO_BIN_EXE_criu-victim-state"),
        &[dir.ready.to_str().unwrap()],
        Duration::from_secs(10),
        Duration::from_millis(50),
    );
}

#[test]
fn dump_then_restore_state_victim_of_another_uid() {
    skip_if_not_root!("dump_then_restore_state_victim_of_another_uid");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    fs::set_permissions(dir.root(), fs::Permissions::from_mode(0o777)).unwrap();
    let uid = compel_criu_tests::UNPRIVILEGED_ID;
    let (mut v, _) = dir.spawn_victim(
        env!("CARGO_BIN_EXE_criu-victim-state"),
        &[dir.ready.to_str().unwrap()],
        Some(uid),
        Duration::from_secs(10),
    );
    std::thread::sleep(Duration::from_millis(50));
    dump_and_reap(&mut v, &dir.img, &[]);
    let mut criu = restore_in_background(&dir.img);
    wait_resumed(v.pid(), &dir.img, &mut criu);
    // Its credentials are the victim's, not criu's.
    let uids = status_field(v.pid(), "Uid:");
    assert_eq!(uids, format!("{uid}\t{uid}\t{uid}\t{uid}"));
    assert_eq!(hex_field(v.pid(), "CapEff:"), 0);
    assert_eq!(status_field(v.pid(), "NoNewPrivs:"), "1");
    kill(Pid::from_raw(v.pid()), Signal::SIGUSR1).unwrap();
    let verdict = wait_file(&dir.ready.with_extension("2"), Duration::from_secs(10));
    kill(Pid::from_raw(v.pid()), Signal::SIGKILL).unwrap();
    criu.wait().unwrap();
    assert_eq!(verdict.trim(), "check ok");
}

#[test]
fn dump_then_detached_restore_counter_keeps_counting() {
    skip_if_not_root!("dump_then_detached_restore_counter_keeps_counting");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let out = dir.path("out");
    let (mut v, _) = dir.spawn_victim(
        env!("CARGO_BIN_EXE_criu-victim-counter"),
        &[out.to_str().unwrap(), dir.ready.to_str().unwrap()],
        None,
        Duration::from_secs(10),
    );
    std::thread::sleep(Duration::from_millis(100));
    dump_and_reap(&mut v, &dir.img, &[]);
    let at_dump = fs::read_to_string(&out).unwrap().lines().count();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(fs::read_to_string(&out).unwrap().lines().count(), at_dump);
    let pidfile = dir.path("pidfile");
    let o = run_criu(&[
        "restore",
        "-d",
        "-D",
        dir.img.to_str().unwrap(),
        "--pidfile",
        pidfile.to_str().unwrap(),
        "-o",
        "restore.log",
    ]);
    assert_ok(&o, "criu restore -d");
    let task = Spawned::guard(v.pid());
    assert_eq!(fs::read_to_string(&pidfile).unwrap(), v.pid().to_string());
    std::thread::sleep(Duration::from_millis(200));
    let text = fs::read_to_string(&out).unwrap();
    let nums: Vec<u64> = text.lines().map(|l| l.parse().unwrap()).collect();
    assert!(
        nums.len() > at_dump + 5,
        "it did not keep counting: {} -> {}",
        at_dump,
        nums.len()
    );
    for (i, n) in nums.iter().enumerate() {
        assert_eq!(*n, i as u64 + 1, "the sequence broke at line {}", i + 1);
    }
    drop(task);
}

#[test]
fn the_nice_value_comes_back() {
    skip_if_not_root!("the_nice_value_comes_back");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let out = dir.path("out");
    let (mut v, _) = dir.spawn_victim(
        env!("CARGO_BIN_EXE_criu-victim-counter"),
        &[out.to_str().unwrap(), dir.ready.to_str().unwrap()],
        None,
        Duration::from_secs(10),
    );
    // SAFETY: setpriority on our own child.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, v.pid() as u32, 7) };
    assert_eq!(r, 0);
    let nice = |pid: i32| -> i64 {
        let s = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let rest = &s[s.rfind(')').unwrap() + 2..];
        rest.split(' ').nth(16).unwrap().parse().unwrap()
    };
    assert_eq!(nice(v.pid()), 7);
    dump_and_reap(&mut v, &dir.img, &[]);
    let task = restore_d(&dir.img, v.pid());
    assert_eq!(nice(task.pid()), 7);
    drop(task);
}
