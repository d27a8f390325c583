//! criu dump + restore of processes that share one descriptor table (`CLONE_FILES`) or fs
//! info (`CLONE_FS`) (issue 20, item 14): they must share them again after a restore, and a
//! sharing the restore cannot recreate (not along parent and child) is refused at dump.
//!
//! Every test runs as root, under the test lock and as a child subreaper.

use std::time::Duration;

use compel_criu_tests::{
    Scratch, Spawned, ask_check, become_subreaper, criu_dump, dump_and_reap, restore_detached,
    skip_if_not_root, test_lock,
};

const VICTIM: &str = env!("CARGO_BIN_EXE_criu-victim-defects-sharing");

/// kcmp(2) of `kind` between two processes: 0 when they share the object.
fn kcmp(a: i32, b: i32, kind: libc::c_long) -> libc::c_long {
    // SAFETY: kcmp compares kernel objects by pid and touches no memory of ours.
    unsafe { libc::syscall(libc::SYS_kcmp, a, b, kind, 0usize, 0usize) }
}

const KCMP_FILES: libc::c_long = 2;
const KCMP_FS: libc::c_long = 3;

/// A child made with `CLONE_FILES | CLONE_FS` shares both again after a restore: an fd the
/// parent opens is seen by the child, a chdir of the child moves the parent.
#[test]
fn clone_files_and_clone_fs_are_shared_again_after_restore() {
    skip_if_not_root!("clone_files_and_clone_fs_are_shared_again_after_restore");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let (mut v, _) = dir.spawn_victim(
        VICTIM,
        &[dir.ready.to_str().unwrap(), "files-fs"],
        None,
        Duration::from_secs(10),
    );
    let pids = dir.pids();
    assert_eq!(kcmp(pids[0], pids[1], KCMP_FILES), 0, "not shared before");
    let child = Spawned::guard(pids[1]);
    dump_and_reap(&mut v, &dir.img, &[]);
    drop(child);
    let pid = restore_detached(&dir.img, &[]);
    let _task = Spawned::guard(pid);
    let _child = Spawned::guard(pids[1]);
    assert_eq!(pid, pids[0]);
    assert_eq!(kcmp(pids[0], pids[1], KCMP_FILES), 0, "fd table not shared");
    assert_eq!(kcmp(pids[0], pids[1], KCMP_FS), 0, "fs info not shared");
    assert_eq!(
        ask_check(pid, &dir.ready.with_extension("2")).trim(),
        "check ok"
    );
}

/// A process sharing the descriptor table of its sibling (made with `CLONE_PARENT |
/// CLONE_FILES`) cannot be recreated so: the dump refuses it by name and the tree runs on.
#[test]
fn table_shared_with_a_sibling_is_refused_at_dump() {
    skip_if_not_root!("table_shared_with_a_sibling_is_refused_at_dump");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let (v, _) = dir.spawn_victim(
        VICTIM,
        &[dir.ready.to_str().unwrap(), "sibling"],
        None,
        Duration::from_secs(10),
    );
    let pids = dir.pids();
    let _children: Vec<Spawned> = pids.iter().map(|&p| Spawned::guard(p)).collect();
    let o = criu_dump(v.pid(), &dir.img, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "the dump succeeded");
    assert!(err.contains("descriptor table (CLONE_FILES)"), "{err}");
    assert!(err.contains("not its parent or child"), "{err}");
    // The tree is left running.
    assert_eq!(kcmp(pids[0], pids[1], KCMP_FILES), 0);
    drop(v);
}

/// Item 1: a cwd that is `/proc/C` of a process that has exited cannot be entered again: the
/// dump refuses it by name and the process runs on.
#[test]
fn cwd_in_proc_of_an_exited_process_is_refused_at_dump() {
    skip_if_not_root!("cwd_in_proc_of_an_exited_process_is_refused_at_dump");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let (v, _) = dir.spawn_victim(
        VICTIM,
        &[dir.ready.to_str().unwrap(), "cwd-dead-proc"],
        None,
        Duration::from_secs(10),
    );
    let c = dir.pids()[0];
    let o = criu_dump(v.pid(), &dir.img, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "the dump succeeded");
    let name = format!(
        "/proc/{}/cwd is /proc/{c} of a process that has exited",
        v.pid()
    );
    assert!(err.contains(&name), "{err}");
    assert!(std::path::Path::new(&format!("/proc/{}", v.pid())).exists());
    drop(v);
}

const TASKS_VICTIM: &str = env!("CARGO_BIN_EXE_criu-victim-defects-tasks");

/// One letter of `/proc/PID/stat`'s state and its pgid.
fn state_and_pgid(pid: i32) -> (char, i32) {
    let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest: Vec<&str> = st
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    (
        rest.first().and_then(|s| s.chars().next()).unwrap_or('?'),
        rest.get(2).and_then(|s| s.parse().ok()).unwrap_or(-1),
    )
}

/// Item 19: a process M in the group of a leader L that is a zombie of the tree comes back in
/// L's group, with L a zombie again.
#[test]
fn group_whose_leader_is_a_zombie_comes_back() {
    skip_if_not_root!("group_whose_leader_is_a_zombie_comes_back");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let (mut v, _) = dir.spawn_victim(
        TASKS_VICTIM,
        &[dir.ready.to_str().unwrap(), "pgrp-zombie-leader"],
        None,
        Duration::from_secs(10),
    );
    let pids = dir.pids();
    let (l, m) = (pids[0], pids[1]);
    let children: Vec<Spawned> = pids.iter().map(|&p| Spawned::guard(p)).collect();
    dump_and_reap(&mut v, &dir.img, &[]);
    drop(children);
    let pid = restore_detached(&dir.img, &[]);
    let _task = Spawned::guard(pid);
    let _children: Vec<Spawned> = pids.iter().map(|&p| Spawned::guard(p)).collect();
    assert_eq!(state_and_pgid(l), ('Z', l), "the leader");
    assert_eq!(state_and_pgid(m).1, l, "the member's group");
    assert_eq!(
        ask_check(pid, &dir.ready.with_extension("2")).trim(),
        "check ok"
    );
}
