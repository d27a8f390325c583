//! criu restore of a task that was stopped by a signal it blocks: the restore stops it with
//! SIGSTOP (a blocked stop signal would only pend and leave the task running).
//!
//! Regression test: the check that the stop signal is blocked read the task's signal mask
//! before the mask was read from the images, so it never took effect.
//!
//! Runs as root, under the test lock and as a child subreaper, from the `single` fixture
//! with its core edited; checks the task's state and signals in /proc, then kills and reaps it.

use std::time::Duration;

use compel_criu_tests::{
    SINGLE_PID, Spawned, become_subreaper, detached, hex_field, proc_state, single_fixture_copy,
    skip_if_not_root, test_lock, wait_state,
};
use criu::restore;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

#[test]
fn a_task_stopped_by_a_signal_it_blocks_comes_back_stopped() {
    skip_if_not_root!("a_task_stopped_by_a_signal_it_blocks_comes_back_stopped");
    let _g = test_lock();
    become_subreaper();
    let Some((_bin, t, d)) = single_fixture_copy() else {
        return;
    };
    let mut core = d.read_core(SINGLE_PID as u32).unwrap();
    // Stopped by SIGTSTP, which the task blocks (as a task stopped inside sigsuspend shows).
    let tstp = 1u64 << (libc::SIGTSTP - 1);
    let tc = core.tc.as_mut().unwrap();
    tc.task_state = criu_images::task_state::STOPPED;
    tc.stop_signo = Some(libc::SIGTSTP as u32);
    tc.blk_sigset |= tstp;
    if let Some(th) = core.thread_core.as_mut()
        && let Some(m) = th.blk_sigset.as_mut()
    {
        *m |= tstp;
    }
    d.write_core(SINGLE_PID as u32, &core).unwrap();
    restore(&detached(t.path()), None).unwrap();
    let task = Spawned::guard(SINGLE_PID);
    assert_eq!(
        wait_state(task.pid(), "T", Duration::from_secs(5)),
        Some('T'),
        "the task runs: it was not stopped"
    );
    assert_eq!(
        hex_field(task.pid(), "SigBlk:") & tstp,
        tstp,
        "SIGTSTP unblocked"
    );
    assert_eq!(
        (hex_field(task.pid(), "ShdPnd:") | hex_field(task.pid(), "SigPnd:")) & tstp,
        0,
        "SIGTSTP left pending"
    );
    kill(Pid::from_raw(task.pid()), Signal::SIGCONT).unwrap();
    assert_eq!(
        wait_state(task.pid(), "S", Duration::from_secs(5)),
        Some('S'),
        "it did not continue after SIGCONT"
    );
    assert_ne!(proc_state(task.pid()), Some('T'));
    drop(task);
}
