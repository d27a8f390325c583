//! criu restore and signals: pending signals stay pending, a signal sent during the restore
//! reaches the task's own handler, a stopped task comes back stopped.
//!
//! Every test runs as root, under the test lock and as a child subreaper, checks what a user
//! would check in /proc and in the task's memory, then kills and reaps what it started. The
//! shared helpers (fixtures, [`Scratch`](compel_criu_tests::Scratch), `restore_and_check`, ...)
//! are the tests crate's.

use std::fs;
use std::time::Duration;

use compel_criu_tests::{
    SINGLE_PID, Scratch, Spawned, become_subreaper, copy_dir, detached, dump_and_reap,
    fixture_usable, fixtures_dir, hex_field, pid_exists, restore_d, restore_in_background,
    skip_if_not_root, status_field, test_lock, wait_file, wait_state,
};
use criu::{RestoreError, restore};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A `siginfo_t` for a signal sent by `kill` from pid `from`.
fn siginfo_user(sig: i32, from: u32) -> Vec<u8> {
    let mut b = vec![0u8; 128];
    b[0..4].copy_from_slice(&sig.to_le_bytes());
    // si_errno = 0, si_code = SI_USER (0), then si_pid and si_uid.
    b[16..20].copy_from_slice(&from.to_le_bytes());
    b
}

#[test]
fn pending_signals_in_the_images_are_pending_again() {
    skip_if_not_root!("pending_signals_in_the_images_are_pending_again");
    let _g = test_lock();
    become_subreaper();
    let Some(_bin) = fixture_usable() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    copy_dir(&fixtures_dir().join("single"), t.path());
    let d = criu_images::ImageDir::new(t.path());
    let mut core = d.read_core(SINGLE_PID as u32).unwrap();
    // SIGHUP is blocked in the fixture: one process-wide and one thread-directed instance.
    let q = |sig| criu_images::pb::SignalQueueEntry {
        signals: vec![criu_images::pb::SiginfoEntry {
            siginfo: siginfo_user(sig, 1),
        }],
    };
    core.tc.as_mut().unwrap().signals_s = Some(q(libc::SIGHUP));
    core.thread_core.as_mut().unwrap().signals_p = Some(q(libc::SIGHUP));
    d.write_core(SINGLE_PID as u32, &core).unwrap();
    restore(&detached(t.path()), None).unwrap();
    let task = Spawned::guard(SINGLE_PID);
    assert_eq!(
        wait_state(task.pid(), "S", Duration::from_secs(5)),
        Some('S')
    );
    assert_eq!(hex_field(task.pid(), "ShdPnd:"), 1 << (libc::SIGHUP - 1));
    assert_eq!(hex_field(task.pid(), "SigPnd:"), 1 << (libc::SIGHUP - 1));
    drop(task);

    // Seccomp filter mode naming no filter, or a filter seccomp.img does not have: refused
    // before anything runs.
    for filter in [None, Some(5)] {
        let th = core.thread_core.as_mut().unwrap();
        (th.seccomp_mode, th.seccomp_filter) = (Some(2), filter);
        d.write_core(SINGLE_PID as u32, &core).unwrap();
        let err = restore(&detached(t.path()), None).unwrap_err();
        assert!(matches!(err, RestoreError::BadImage { .. }), "{err:?}");
        assert!(err.to_string().contains("seccomp"), "{err}");
        assert!(!pid_exists(SINGLE_PID));
    }
    assert!(!pid_exists(SINGLE_PID));
}

#[test]
fn a_signal_sent_while_restoring_reaches_the_tasks_own_handler() {
    skip_if_not_root!("a_signal_sent_while_restoring_reaches_the_tasks_own_handler");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    // Enough memory that the restore takes a while.
    let (mut v, _) = dir.spawn_victim(
        env!("CARGO_BIN_EXE_criu-victim-big-memory"),
        &["96", dir.ready.to_str().unwrap()],
        None,
        Duration::from_secs(30),
    );
    dump_and_reap(&mut v, &dir.img, &[]);
    let mut criu = restore_in_background(&dir.img);
    // As soon as the pid exists (still criu's copy, restoring), send SIGUSR1.
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while !pid_exists(v.pid()) {
        assert!(std::time::Instant::now() < end, "the task never appeared");
        std::thread::sleep(Duration::from_micros(200));
    }
    let name = status_field(v.pid(), "Name:");
    kill(Pid::from_raw(v.pid()), Signal::SIGUSR1).unwrap();
    assert_eq!(
        name, "criu",
        "the signal came after the restore: the test proves nothing"
    );
    let verdict = wait_file(&dir.ready.with_extension("2"), Duration::from_secs(30));
    kill(Pid::from_raw(v.pid()), Signal::SIGKILL).unwrap();
    let status = criu.wait().unwrap();
    assert_eq!(
        verdict.trim(),
        "check ok",
        "(signal sent while its name was {name:?})"
    );
    assert_eq!(status.code(), Some(128 + libc::SIGKILL));
}

#[test]
fn a_stopped_task_comes_back_stopped() {
    skip_if_not_root!("a_stopped_task_comes_back_stopped");
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
    kill(Pid::from_raw(v.pid()), Signal::SIGSTOP).unwrap();
    assert_eq!(wait_state(v.pid(), "T", Duration::from_secs(5)), Some('T'));
    dump_and_reap(&mut v, &dir.img, &[]);
    let task = restore_d(&dir.img, v.pid());
    assert_eq!(
        wait_state(task.pid(), "T", Duration::from_secs(5)),
        Some('T')
    );
    let n = fs::read_to_string(&out).unwrap().lines().count();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        fs::read_to_string(&out).unwrap().lines().count(),
        n,
        "it ran while stopped"
    );
    kill(Pid::from_raw(task.pid()), Signal::SIGCONT).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let nums: Vec<u64> = fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert!(nums.len() > n, "it did not continue after SIGCONT");
    for (i, k) in nums.iter().enumerate() {
        assert_eq!(*k, i as u64 + 1);
    }
    drop(task);
}
