//! Issue 20, items 11 to 13 and 15 to 17: what belongs to each open file of a pipe (status flags, owner
//! for signals) and to the pipe (its size, even empty) survives `criu dump` and `criu
//! restore`. Each victim checks itself from the inside after the restore.

use std::path::Path;
use std::time::Duration;

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, dump_and_reap, restore_detached, spawn_ready_with,
    test_lock, wait_exit_timeout,
};

const BIN: &str = env!("CARGO_BIN_EXE_criu-victim-defects-pipes");

fn spawn(mode: &str, d: &Path) -> Spawned {
    spawn_ready_with(BIN, d, &[mode], &[])
}

/// Dumps the victim of `mode`, restores it and asks it to check itself.
fn dump_restore_check(mode: &str) {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let mut v = spawn(mode, d.path());
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    // A child of the victim, killed with it by the dump, is orphaned to us: reap it.
    let child = std::fs::read_to_string(d.path().join("out.child"))
        .ok()
        .and_then(|s| s.parse::<i32>().ok());
    if let Some(c) = child {
        reap(c);
    }
    let restored = restore_detached(&img, &[]);
    let r = Spawned::guard(restored);
    let verdict = ask_check(r.pid(), &d.path().join("out"));
    drop(r);
    if let Some(c) = child {
        reap(c);
    }
    assert_eq!(verdict, "ok", "mode {mode}");
}

/// Kills process `pid` (orphaned to this subreaper) and reaps it.
fn reap(pid: i32) {
    // SAFETY: kill takes no pointers.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let _ = wait_exit_timeout(pid, Duration::from_secs(5));
}

/// Without a dump every victim's own check passes (so a `bad` after restore is the restore's).
#[test]
fn pipe_defect_victims_pass_untouched() {
    let _g = test_lock();
    for mode in ["flags", "size", "sigio", "epoll", "shared", "timerfd"] {
        let d = tempfile::tempdir().unwrap();
        let v = spawn(mode, d.path());
        assert_eq!(
            ask_check(v.pid(), &d.path().join("out")),
            "ok",
            "mode {mode}"
        );
    }
}

/// Item 11: status flags belong to each open file, not to the pipe (and a pipe end reopened
/// through `/proc/self/fd/N` is a second open file of the same pipe).
#[test]
fn pipe_end_flags_are_per_open_file() {
    dump_restore_check("flags");
}

/// Item 12: an empty pipe keeps its size, grown or shrunk.
#[test]
fn empty_pipe_keeps_its_size() {
    dump_restore_check("size");
}

/// Item 13: `O_ASYNC`, the owner and the signal of a pipe end survive: input still signals.
#[test]
fn pipe_sigio_owner_and_signal_survive() {
    dump_restore_check("sigio");
}

/// Item 15: epoll targets are their files, not the numbers they were added under.
#[test]
fn epoll_targets_found_by_file() {
    dump_restore_check("epoll");
}

/// Item 16: eventfd, signalfd, timerfd and epoll held by a parent and its child stay shared.
#[test]
fn anon_files_shared_by_parent_and_child() {
    dump_restore_check("shared");
}

/// Item 17: a periodic timerfd that fired and was not read keeps its interval and ticks.
#[test]
fn fired_periodic_timerfd_keeps_running() {
    dump_restore_check("timerfd");
}
