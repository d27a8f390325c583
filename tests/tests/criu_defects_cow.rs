//! Issue 20, item 28: memory a parent and its child share copy-on-write after `fork` comes
//! back shared: the child takes over the parent's premapped, filled copy of the same area at
//! the fork, and only the pages that differ are written into it (as CRIU does). The images
//! keep a copy per process (CRIU's format has no way for a child's pagemap to point at its
//! parent process's pages; `in_parent` means the previous dump).
//!
//! Runs as root (the victim compares page frame numbers in `/proc/PID/pagemap`), under the
//! test lock and as a child subreaper.

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

/// Without a dump the victim's own check passes (the pages are shared after a plain fork).
#[test]
fn cow_victim_passes_untouched() {
    skip_if_not_root!("cow_victim_passes_untouched");
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let (v, pids) = spawn("cow", d.path());
    let _children = guards(&pids);
    assert_eq!(ask_check(v.pid(), &d.path().join("out")), "ok");
    drop(v);
}

/// After the restore the 32 MiB the victim and its child share are the same page frames
/// again (except the page the child changed and the page it emptied), each sees its own
/// contents, and a write by the child afterwards is the child's alone.
#[test]
fn memory_shared_copy_on_write_comes_back_shared() {
    skip_if_not_root!("memory_shared_copy_on_write_comes_back_shared");
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let (mut v, pids) = spawn("cow", d.path());
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
}
