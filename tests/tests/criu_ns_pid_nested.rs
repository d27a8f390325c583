//! Nested pid namespaces: a tree in a pid namespace of its own with a task in a further pid
//! namespace below it is refused by name (its pids at every level are not restored yet), and
//! the tree runs on, untraced.

use std::time::Duration;

use compel_criu_tests::{
    Scratch, Spawned, become_subreaper, criu, skip_if_not_root, test_lock, tracer_pid,
};

/// The children of `pid` (pids as we see them).
fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect()
}

/// How many pid namespaces deep `pid` is (the fields of its `NSpid`).
fn depth(pid: i32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .map(|l| l.split_whitespace().count())
        .unwrap_or(0)
}

#[test]
fn nested_pid_namespace_is_refused_and_the_tree_runs_on() {
    skip_if_not_root!("nested_pid_namespace_is_refused_and_the_tree_runs_on");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    // unshare (outside) → sh, init of namespace 1 → unshare → sleep, init of namespace 2.
    let outer = Spawned::spawn(
        "unshare",
        &[
            "--pid",
            "--fork",
            "sh",
            "-c",
            "unshare --pid --fork sleep 600; true",
        ],
        &dir.path("unshare.log"),
        None,
    );
    let end = std::time::Instant::now() + Duration::from_secs(10);
    let (init, sleeper) = loop {
        let init = children(outer.pid()).first().copied();
        let inner = init.and_then(|i| children(i).first().copied());
        let sleeper = inner.and_then(|u| children(u).first().copied());
        if let (Some(i), Some(s)) = (init, sleeper)
            && depth(s) == 3
        {
            break (i, s);
        }
        if std::time::Instant::now() > end {
            eprintln!(
                "skipped: the nested pid namespaces did not start: {}",
                std::fs::read_to_string(dir.path("unshare.log")).unwrap_or_default()
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // Killing the outer namespace's init ends every task of both.
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
        log.contains(&format!(
            "{sleeper} is in a pid namespace other than the root's (nested pid namespaces"
        )),
        "{log}"
    );
    assert!(!dir.img.join("inventory.img").exists());
    for p in [init, sleeper] {
        assert_eq!(tracer_pid(p), Some(0), "{p} is still traced");
        let st = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap();
        let state = st.lines().find(|l| l.starts_with("State:")).unwrap();
        assert!(state.contains("S (sleeping)"), "{p}: {state}");
    }
    drop(outer);
}
