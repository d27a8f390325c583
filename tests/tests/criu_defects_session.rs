//! Issue 20, item 3: processes in a session whose leader is gone (it exited and was reaped)
//! come back in that session: a helper task with the leader's pid calls `setsid`, creates
//! them and goes away again, and their parent, a child subreaper, adopts them as before.
//!
//! Runs as root, under the test lock and as a child subreaper.

use std::path::Path;

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, dump_and_reap, guards, restore_detached,
    skip_if_not_root, spawn_mode_with_pids, test_lock,
};

const BIN: &str = env!("CARGO_BIN_EXE_criu-victim-defects-left");

/// The victim of `mode` in `d`, ready, and the pids it made.
fn spawn(mode: &str, d: &Path) -> (Spawned, Vec<i32>) {
    spawn_mode_with_pids(BIN, d, mode)
}

/// Without a dump the victim's own check passes (so a `bad` after restore is the restore's).
#[test]
fn session_victim_passes_untouched() {
    skip_if_not_root!("session_victim_passes_untouched");
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let (v, pids) = spawn("session", d.path());
    let _children = guards(&pids);
    assert_eq!(ask_check(v.pid(), &d.path().join("out")), "ok");
    drop(v);
}

/// The victim checks the parents, groups and sessions of B, C and D and that A is gone; the
/// test checks that the helper is gone from outside too.
#[test]
fn session_whose_leader_is_gone_comes_back_through_a_helper() {
    skip_if_not_root!("session_whose_leader_is_gone_comes_back_through_a_helper");
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let (mut v, pids) = spawn("session", d.path());
    let img = d.path().join("img");
    {
        let _children = guards(&pids);
        dump_and_reap(&mut v, &img, &[]);
    }
    let restored = restore_detached(&img, &[]);
    let _children = guards(&pids);
    let r = Spawned::guard(restored);
    assert_eq!(restored, v.pid());
    assert_eq!(ask_check(r.pid(), &d.path().join("out")), "ok");
    assert!(
        !Path::new(&format!("/proc/{}", pids[0])).exists(),
        "the helper {} is left",
        pids[0]
    );
}
