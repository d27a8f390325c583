//! Nested pid namespaces: a tree in a pid namespace of its own with a task that made a further
//! pid namespace below it comes back with the same pids at every level; the inner init is still
//! its namespace's init (it reaps its children). The same shape under a root in the test's own
//! pid namespace (`unshare --pid --fork`). A task that entered a pid namespace made by another
//! is refused by name, and its tree runs on.

use std::collections::BTreeMap;
use std::time::Duration;

use compel_criu_tests::{
    Exit, Scratch, Spawned, become_subreaper, children_of, criu, criu_victim, dump_and_reap,
    guards, ns_ino, pid_exists, proc_state, ready_numbers, restore_detached, skip_if_not_root,
    test_lock, tracer_pid, wait_exit_timeout, wait_file,
};

/// The `NSpid` of `pid` (as we see it first).
fn nspid(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Every task of the tree under `root` (ours included), by its `NSpid` without our level →
/// our pid.
fn tree_levels(root: i32) -> BTreeMap<Vec<i32>, i32> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        let v = nspid(p);
        if v.len() > 1 {
            out.insert(v[1..].to_vec(), p);
        }
        todo.extend(children_of(p));
    }
    out
}

/// Waits until the tree under `root` has `n` tasks.
fn wait_tasks(root: i32, n: usize) -> BTreeMap<Vec<i32>, i32> {
    let end = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let t = tree_levels(root);
        if t.len() >= n || std::time::Instant::now() > end {
            return t;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn nested_pid_namespaces_come_back_with_their_pids_at_every_level() {
    skip_if_not_root!("nested_pid_namespaces_come_back_with_their_pids_at_every_level");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let mut starter = Spawned::spawn(
        criu_victim("ns-pid-nested"),
        &[dir.ready.to_str().unwrap()],
        &dir.path("victim.log"),
        None,
    );
    assert_eq!(
        starter.wait(Duration::from_secs(10)),
        Some(Exit::Code(0)),
        "{}",
        std::fs::read_to_string(dir.path("victim.log")).unwrap_or_default()
    );
    let said = wait_file(&dir.ready, Duration::from_secs(10));
    let init = ready_numbers(&said, 1)[0];
    // Killing the outer init ends every task of both namespaces.
    let mut v = Spawned::guard(init);
    let before = wait_tasks(init, 5);
    let want: Vec<Vec<i32>> = vec![vec![1], vec![2], vec![3, 1], vec![4, 2], vec![5, 3]];
    assert_eq!(before.keys().cloned().collect::<Vec<_>>(), want);
    dump_and_reap(&mut v, &dir.img, &[]);
    let d = criu_images::ImageDir::new(&dir.img);
    let mut pids: Vec<u32> = d.read_pstree().unwrap().iter().map(|t| t.pid).collect();
    pids.sort();
    assert_eq!(pids, [1, 2, 3, 4, 5], "pids in the root's namespace");
    let listed = std::fs::read_to_string(dir.img.join("pstree-nspid.json")).unwrap();
    assert!(listed.contains("\"nspid\""), "{listed}");

    let root = restore_detached(&dir.img, &[]);
    let _r = Spawned::guard(root);
    let after = wait_tasks(root, 5);
    assert_eq!(
        after.keys().cloned().collect::<Vec<_>>(),
        want,
        "pids at every level"
    );
    // Parents as before: the inner init's children are 2 and 3 of its namespace.
    let inner = after[&vec![3, 1]];
    let mut kids: Vec<Vec<i32>> = children_of(inner)
        .iter()
        .map(|&c| nspid(c)[1..].to_vec())
        .collect();
    kids.sort();
    assert_eq!(kids, [vec![4, 2], vec![5, 3]]);
    // Each init checks itself from inside (getpid, the pids it can and cannot see).
    for f in ["2", "3"] {
        let _ = std::fs::remove_file(dir.ready.with_extension(f));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(root),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    for f in ["2", "3"] {
        let verdict = wait_file(&dir.ready.with_extension(f), Duration::from_secs(20));
        assert_eq!(verdict.trim(), "check ok", "init {f}");
    }
    // The inner init reaps a child that ends (it is not left a zombie, nor handed to us).
    let last = after[&vec![5, 3]];
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(last),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while pid_exists(last) && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !pid_exists(last),
        "pid 3 of the inner namespace was not reaped (state {:?})",
        proc_state(last)
    );
    drop(_r);
    let _ = wait_exit_timeout(root, Duration::from_secs(1));
}

/// `unshare --pid --fork` under a root in the test's pid namespace: the tree's root keeps its
/// pid, its child is the init of a namespace of its own again (with the same pids inside).
#[test]
fn a_pid_namespace_below_a_root_in_ours_comes_back() {
    skip_if_not_root!("a_pid_namespace_below_a_root_in_ours_comes_back");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    // sh (ours, a session of its own) → unshare → sh, init of the new namespace → sleep (pid
    // 2 there).
    let outer = Spawned::spawn(
        "setsid",
        &[
            "sh",
            "-c",
            "unshare --pid --fork sh -c 'sleep 600 & wait'; true",
        ],
        &dir.path("sh.log"),
        None,
    );
    let root = outer.pid();
    let mut v = outer;
    let end = std::time::Instant::now() + Duration::from_secs(10);
    let before = loop {
        let t = tree_levels_all(root);
        if t.values().any(|l| l.len() == 2 && l[1] == 2) {
            break t;
        }
        assert!(
            std::time::Instant::now() < end,
            "the namespace did not start: {t:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    // Every task is killed on the way out (the restored ones have the same pids).
    let _all = guards(&before.keys().copied().collect::<Vec<_>>());
    dump_and_reap(&mut v, &dir.img, &[]);
    // The killed tasks came to us (a subreaper) as their parents died: reaped here.
    for &p in before.keys() {
        let _ = wait_exit_timeout(p, Duration::from_secs(5));
    }
    let got = restore_detached(&dir.img, &[]);
    assert_eq!(got, root, "the root keeps its pid");
    let _r = Spawned::guard(root);
    let after = tree_levels_all(root);
    assert_eq!(after, before, "pids at every level");
    // unshare's pid namespace for children is its child's again (it made it for that child).
    let unshare = children_of(root)[0];
    let init = children_of(unshare)[0];
    assert_eq!(
        ns_ino(unshare, "pid_for_children"),
        ns_ino(init, "pid"),
        "unshare's pid namespace for children"
    );
    assert_ne!(ns_ino(unshare, "pid"), ns_ino(init, "pid"));
    drop(_r);
    let _ = wait_exit_timeout(root, Duration::from_secs(1));
}

/// Every task under `root` (pid as we see it → its whole `NSpid`).
fn tree_levels_all(root: i32) -> BTreeMap<i32, Vec<i32>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        out.insert(p, nspid(p));
        todo.extend(children_of(p));
    }
    out
}

/// A task that entered (setns) a pid namespace made by another one is refused by name; the
/// tree runs on, untraced.
#[test]
fn a_task_that_entered_another_pid_namespace_is_refused() {
    skip_if_not_root!("a_task_that_entered_another_pid_namespace_is_refused");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    // unshare (ours) → sh, init of namespace 1 → sh that unshared a pid namespace for its
    // children → its first sleep, init of namespace 2, and its second one, pid 2 there whose
    // parent is in namespace 1.
    let outer = Spawned::spawn(
        "unshare",
        &[
            "--pid",
            "--fork",
            "sh",
            "-c",
            "unshare --pid sh -c 'sleep 600 & sleep 600 & wait'; true",
        ],
        &dir.path("unshare.log"),
        None,
    );
    let end = std::time::Instant::now() + Duration::from_secs(10);
    let (init, joined) = loop {
        let init = children_of(outer.pid()).first().copied();
        let joined = init.and_then(|i| {
            tree_levels_all(i)
                .into_iter()
                .find(|(_, l)| l.len() == 3 && l[2] != 1)
                .map(|(p, _)| p)
        });
        if let (Some(i), Some(j)) = (init, joined) {
            break (i, j);
        }
        if std::time::Instant::now() > end {
            eprintln!(
                "skipped: the pid namespaces did not start: {}",
                std::fs::read_to_string(dir.path("unshare.log")).unwrap_or_default()
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _init = Spawned::guard(init);
    let o = criu(&[
        "dump",
        "-t",
        &init.to_string(),
        "-D",
        dir.img.to_str().unwrap(),
        "-o",
        "dump.log",
    ]);
    assert!(!o.status.success(), "the dump succeeded");
    let log = std::fs::read_to_string(dir.img.join("dump.log")).unwrap_or_default();
    assert!(
        log.contains("a task that entered a pid namespace made by another is not restored"),
        "{log}"
    );
    assert!(!dir.img.join("inventory.img").exists());
    for p in [init, joined] {
        assert_eq!(tracer_pid(p), Some(0), "{p} is still traced");
    }
    drop(outer);
}
