//! Issue 20, items 1, 6, 16 and 19 (and `criu check --feature`; item 10's hugetlb memory is in
//! `criu_defects_hugetlb`): what several processes of a tree share comes back shared
//! after `criu dump` and `criu restore`. Each victim checks itself from the inside after the
//! restore; the test checks what is seen from outside.
//!
//! Every test runs as root, under the test lock and as a child subreaper.

use std::path::Path;

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, dump_and_reap, guards, restore_detached,
    skip_if_not_root, spawn_mode_with_pids, test_lock,
};

const BIN: &str = env!("CARGO_BIN_EXE_criu-victim-defects-more");

/// The victim of `mode` in `d`, ready, and the pids it made.
fn spawn(mode: &str, d: &Path) -> (Spawned, Vec<i32>) {
    spawn_mode_with_pids(BIN, d, mode)
}

/// Dumps the victim of `mode`, restores it and asks it to check itself; `outside` then checks
/// the restored tree from outside (given the victim's pids).
fn dump_restore_check(mode: &str, outside: impl FnOnce(&[i32])) {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let (mut v, pids) = spawn(mode, d.path());
    let img = d.path().join("img");
    {
        // The dump kills the tree: the victim's children come to this subreaper.
        let _children = guards(&pids);
        dump_and_reap(&mut v, &img, &[]);
    }
    let restored = restore_detached(&img, &[]);
    // Dropped after the root: killed once they came to this subreaper.
    let _children = guards(&pids);
    let r = Spawned::guard(restored);
    assert_eq!(restored, v.pid());
    assert_eq!(
        ask_check(r.pid(), &d.path().join("out")),
        "ok",
        "mode {mode}"
    );
    let left: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("criu-ghost"))
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "the restore left {left:?}");
    outside(&pids);
}

/// Without a dump every victim's own check passes (so a `bad` after restore is the restore's).
#[test]
fn more_defect_victims_pass_untouched() {
    skip_if_not_root!("more_defect_victims_pass_untouched");
    let _g = test_lock();
    become_subreaper();
    for mode in ["epoll-shared", "pgrp-helper", "proc-shared", "mapdel-fd"] {
        let d = tempfile::tempdir().unwrap();
        let (v, pids) = spawn(mode, d.path());
        let _children = guards(&pids);
        assert_eq!(
            ask_check(v.pid(), &d.path().join("out")),
            "ok",
            "mode {mode}"
        );
        drop(v);
    }
}

/// Item 16: an epoll instance a parent and its child hold, watching files both hold and a
/// file only the parent holds, comes back as one instance with its targets.
#[test]
fn epoll_with_targets_shared_by_parent_and_child() {
    skip_if_not_root!("epoll_with_targets_shared_by_parent_and_child");
    dump_restore_check("epoll-shared", |_| {});
}

/// One letter of `/proc/PID/stat`'s state and the pgid and sid.
fn state_pgid_sid(pid: i32) -> (char, i32, i32) {
    let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest: Vec<&str> = st
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let num = |i: usize| rest.get(i).and_then(|s| s.parse().ok()).unwrap_or(-1);
    (
        rest.first().and_then(|s| s.chars().next()).unwrap_or('?'),
        num(2),
        num(3),
    )
}

/// Item 19: processes in a group whose leader exited and was reaped come back in that group
/// (a helper task with the leader's pid makes it and goes away), the leader still gone.
#[test]
fn group_whose_leader_is_gone_comes_back_through_a_helper() {
    skip_if_not_root!("group_whose_leader_is_gone_comes_back_through_a_helper");
    dump_restore_check("pgrp-helper", |pids| {
        let (l, m, n) = (pids[0], pids[1], pids[2]);
        assert!(
            !Path::new(&format!("/proc/{l}")).exists(),
            "the helper {l} is left"
        );
        assert_eq!(state_pgid_sid(m).1, l, "M's group");
        assert_eq!(state_pgid_sid(n).1, l, "N's group");
    });
}

/// Item 1: a descriptor on `/proc/C/status` of a child C held by the victim and another child
/// D, D's own `/proc/D/status`, and a cwd in `/proc/Z` of a zombie child Z: each is opened
/// once the process it names exists, and the shared one stays one open file.
#[test]
fn proc_files_of_the_tree_shared_and_zombie_cwd() {
    skip_if_not_root!("proc_files_of_the_tree_shared_and_zombie_cwd");
    dump_restore_check("proc-shared", |pids| {
        assert_eq!(state_pgid_sid(pids[2]).0, 'Z', "Z is a zombie again");
    });
}

/// Item 6: a file mapped shared and private, then deleted while a descriptor on it stays
/// open: the mappings and the descriptor come back as one deleted file (a write through the
/// descriptor shows in the shared mapping), and nothing is left in its directory.
#[test]
fn mapped_deleted_file_with_an_open_descriptor() {
    skip_if_not_root!("mapped_deleted_file_with_an_open_descriptor");
    dump_restore_check("mapdel-fd", |_| {});
}

/// `criu check --feature`: epoll targets found by kcmp and `SO_BUF_LOCK` are handled here,
/// so both answer supported on this kernel.
#[test]
fn check_features_now_handled_are_supported() {
    for name in ["kcmp_epoll", "sockopt_buf_lock"] {
        let o = compel_criu_tests::criu(&["check", "--feature", name]);
        assert!(
            o.status.success(),
            "{name}: {}",
            compel_criu_tests::stderr_text(&o)
        );
        assert_eq!(
            compel_criu_tests::stdout_text(&o),
            format!("{name} is supported\n")
        );
    }
}
