//! `criu dump` of process trees that change while they are frozen: a victim that keeps forking,
//! exiting and starting threads is dumped many times in a row (leaving it running); every dump
//! either succeeds with a consistent tree or fails with a clear error, and the victim runs on,
//! untraced and still checking its own results.

use std::path::Path;
use std::time::{Duration, Instant};

use compel_criu_tests::{
    Victim, become_subreaper, children_of, comm_of, criu_dump, our_children, proc_state, signal,
    stat_ids, test_lock, tids_of, tracer_pid, wait_exit_timeout,
};
use criu_images::ImageDir;
use nix::sys::signal::Signal;

fn rounds(counter: &Path) -> u64 {
    std::fs::read_to_string(counter)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits until the victim's round counter passes `after`.
fn advances(counter: &Path, after: u64) -> bool {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if rounds(counter) > after {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Our children (orphans re-parented to us as subreaper) that are victims of this file.
fn our_victims() -> Vec<i32> {
    our_children()
        .into_iter()
        .filter(|&p| comm_of(p).starts_with("criu-victim"))
        .collect()
}

// Whatever happens, the victim's last child and grandchild (re-parented to us when it
// dies) are reaped by pid before the test returns.
struct ReapOrphans;
impl Drop for ReapOrphans {
    fn drop(&mut self) {
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            let kids = our_victims();
            if kids.is_empty() {
                return;
            }
            for k in kids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(k),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let _ = wait_exit_timeout(k, Duration::from_secs(5));
            }
        }
    }
}

#[test]
fn churning_tree_dumps_consistently_or_fails_cleanly() {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let counter = d.path().join("rounds");
    let _orphans = ReapOrphans;
    let mut v = Victim::spawn(
        env!("CARGO_BIN_EXE_criu-victim-churning-tree"),
        &[counter.to_str().unwrap()],
    )
    .unwrap();
    let root = v.pid();
    assert!(advances(&counter, 0), "victim never started churning");
    let (mut ok, mut failed) = (0, 0);
    for i in 0..40 {
        let img = d.path().join(format!("img{i}"));
        std::fs::create_dir_all(&img).unwrap();
        let o = criu_dump(
            root,
            &img,
            &[
                // Every other dump leaves the tree stopped, so /proc can be compared with it.
                if i % 2 == 1 { "-s" } else { "-R" },
            ],
        );
        let stderr = String::from_utf8_lossy(&o.stderr);
        let stopped = i % 2 == 1 && o.status.success();
        if stopped {
            // The tree /proc shows while it is stopped is the tree in the images, process for
            // process (zombies included) and thread for thread.
            let tree = ImageDir::new(&img).read_pstree().unwrap();
            let mut seen = Vec::new();
            let mut todo = vec![root];
            while let Some(p) = todo.pop() {
                let end = Instant::now() + Duration::from_secs(5);
                while !matches!(proc_state(p), Some('T' | 'Z') | None) {
                    assert!(Instant::now() < end, "{p} never stopped after dump {i}");
                    std::thread::sleep(Duration::from_millis(2));
                }
                let mut tids = tids_of(p);
                let e = tree
                    .iter()
                    .find(|t| t.pid == p as u32)
                    .unwrap_or_else(|| panic!("{p} in /proc but not in the images: {tree:?}"));
                let mut want: Vec<i32> = e.threads.iter().map(|&t| t as i32).collect();
                want.sort();
                tids.sort();
                if proc_state(p) != Some('Z') {
                    assert_eq!(tids, want, "threads of {p} after dump {i}");
                }
                seen.push(p as u32);
                todo.extend(children_of(p));
            }
            let mut imaged: Vec<u32> = tree.iter().map(|t| t.pid).collect();
            imaged.sort();
            seen.sort();
            assert_eq!(seen, imaged, "processes after dump {i}");
            for p in seen {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p as i32),
                    nix::sys::signal::Signal::SIGCONT,
                );
            }
        }
        if o.status.success() {
            ok += 1;
            let dir = ImageDir::new(&img);
            let tree = dir.read_pstree().unwrap();
            assert_eq!((tree[0].pid, tree[0].ppid), (root as u32, 0), "{tree:?}");
            // At most the root, one child and that child's child at any moment.
            assert!((1..=3).contains(&tree.len()), "{tree:?}");
            let pids: Vec<u32> = tree.iter().map(|t| t.pid).collect();
            for t in &tree[1..] {
                assert!(
                    pids.contains(&t.ppid),
                    "parent of {} not in the tree: {tree:?}",
                    t.pid
                );
                assert_eq!(t.sid, tree[0].sid);
            }
            // The root's threads: main and the spinner, plus at most one short thread of each.
            assert!((2..=4).contains(&tree[0].threads.len()), "{tree:?}");
            assert_eq!(tree[0].threads[0], root as u32);
            for t in &tree {
                for &tid in &t.threads {
                    let core = dir.read_core(tid).unwrap();
                    assert!(
                        core.thread_core.is_some() || core.tc.is_some(),
                        "core of {tid}"
                    );
                }
            }
        } else {
            failed += 1;
            assert!(
                stderr.contains("not stable") || stderr.contains("no process"),
                "dump {i} failed unclearly: {stderr}"
            );
        }
        // Either way the victim runs on, untraced, and its own checks still pass.
        assert_eq!(tracer_pid(root), Some(0), "dump {i} left the victim traced");
        let before = rounds(&counter);
        assert!(
            advances(&counter, before),
            "victim stalled after dump {i}: {stderr}"
        );
        assert_eq!(v.state().map(|c| c != 'Z'), Some(true));
    }
    eprintln!("{ok} dumps succeeded, {failed} failed cleanly");
    assert!(ok > 0, "no dump succeeded ({failed} failed)");
    v.signal(nix::sys::signal::Signal::SIGKILL).unwrap();
    let e = v.wait(Duration::from_secs(10));
    assert!(e.is_some(), "victim not reaped");
    // Its last child (and grandchild) come to us: reap them by pid.
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let kids = our_victims();
        if kids.is_empty() {
            break;
        }
        for k in kids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(k),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = wait_exit_timeout(k, Duration::from_secs(5));
        }
        assert!(Instant::now() < end, "children left behind");
    }
}

/// `(state, ppid, pgid, sid)` from `/proc/PID/stat`, the ids typed as the images hold them.
fn stat_of(pid: i32) -> (char, u32, u32, u32) {
    let (state, ppid, pgid, sid) = stat_ids(pid).unwrap_or_else(|| panic!("no stat of {pid}"));
    (state, ppid as u32, pgid as u32, sid as u32)
}

fn signos(q: Option<&criu_images::pb::SignalQueueEntry>) -> Vec<i32> {
    q.map(|q| {
        q.signals
            .iter()
            .map(|s| i32::from_ne_bytes(s.siginfo[..4].try_into().unwrap()))
            .collect()
    })
    .unwrap_or_default()
}

#[test]
fn parent_in_waitpid_and_zombie_child_match_proc() {
    let _g = test_lock();
    become_subreaper();
    let _orphans = ReapOrphans;
    let d = tempfile::tempdir().unwrap();
    let ready = d.path().join("ready");
    let mut v = Victim::spawn(
        env!("CARGO_BIN_EXE_criu-victim-wait-signals-timers"),
        &[ready.to_str().unwrap()],
    )
    .unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let t = std::fs::read_to_string(&ready).unwrap_or_default();
        if let Some(l) = t.lines().next() {
            break l.to_string();
        }
        assert!(Instant::now() < end, "victim never got ready");
        std::thread::sleep(Duration::from_millis(5));
    };
    let p: Vec<i32> = line
        .split(' ')
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    let (root, a, b) = (p[0], p[1], p[2]);
    assert_eq!(root, v.pid());
    // Let the root reach its waitpid sleep and A its pause.
    let end = Instant::now() + Duration::from_secs(10);
    while stat_of(root).0 != 'S' || stat_of(a).0 != 'S' {
        assert!(Instant::now() < end, "victim never blocked");
        std::thread::sleep(Duration::from_millis(5));
    }
    let before: Vec<_> = [root, a, b].iter().map(|&p| (p, stat_of(p))).collect();
    assert_eq!(before[2].1.0, 'Z');

    let img = d.path().join("img");
    std::fs::create_dir_all(&img).unwrap();
    let o = criu_dump(root, &img, &["-R"]);
    assert!(
        o.status.success(),
        "dump: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let dir = ImageDir::new(&img);
    let tree = dir.read_pstree().unwrap();
    assert_eq!(tree.len(), 3, "{tree:?}");
    assert_eq!(tree[0].pid, root as u32);
    for (pid, (_, ppid, pgid, sid)) in &before {
        let e = tree.iter().find(|t| t.pid == *pid as u32).unwrap();
        let want_ppid = if *pid == root { 0 } else { *ppid };
        assert_eq!(
            (e.ppid, e.pgid, e.sid),
            (want_ppid, *pgid, *sid),
            "pid {pid}"
        );
    }
    assert_eq!(before[0].1.3, root as u32, "the root leads its session");
    assert_eq!(before[2].1.2, b as u32, "B leads its own group");

    // The root: alive, SIGUSR1 pending on the process, its 1000 s real timer.
    let rc = dir.read_core(root as u32).unwrap();
    let rtc = rc.tc.as_ref().unwrap();
    assert_eq!(rtc.task_state, 1, "TASK_ALIVE");
    assert!(signos(rtc.signals_s.as_ref()).contains(&libc::SIGUSR1));
    let rt = &rtc.timers.as_ref().unwrap().real;
    assert_eq!(rt.isec, 1000);
    assert!((900..=1000).contains(&rt.vsec), "{rt:?}");
    // A: alive, SIGUSR2 pending on its thread, its 500 s timer.
    let ac = dir.read_core(a as u32).unwrap();
    let atc = ac.tc.as_ref().unwrap();
    assert_eq!(atc.task_state, 1);
    let ath = ac.thread_core.as_ref().unwrap();
    assert!(signos(ath.signals_p.as_ref()).contains(&libc::SIGUSR2));
    assert!(!signos(atc.signals_s.as_ref()).contains(&libc::SIGUSR2));
    assert_eq!(atc.timers.as_ref().unwrap().real.isec, 500);
    // B: dead, with the wait status of exit(5).
    let bc = dir.read_core(b as u32).unwrap();
    let btc = bc.tc.as_ref().unwrap();
    assert_eq!((btc.task_state, btc.exit_code), (2, 5 << 8));

    // The dump left everything running: the root's waitpid still gets A's end.
    for &p in &[root, a] {
        assert_eq!(tracer_pid(p), Some(0));
    }
    assert_eq!(stat_of(b).0, 'Z', "the zombie is still unreaped");
    signal(a, Signal::SIGKILL);
    let e = v.wait(Duration::from_secs(10));
    assert!(e.is_some(), "root did not return from waitpid");
    let t = std::fs::read_to_string(&ready).unwrap();
    assert!(t.contains(&format!("reaped {a} 9")), "{t}");
}

#[test]
fn action_scripts_run_once_for_the_tree_in_order() {
    let _g = test_lock();
    become_subreaper();
    let _orphans = ReapOrphans;
    let d = tempfile::tempdir().unwrap();
    let ready = d.path().join("ready");
    let mut v = Victim::spawn(
        env!("CARGO_BIN_EXE_criu-victim-wait-signals-timers"),
        &[ready.to_str().unwrap()],
    )
    .unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&ready)
        .unwrap_or_default()
        .is_empty()
    {
        assert!(Instant::now() < end, "victim never got ready");
        std::thread::sleep(Duration::from_millis(5));
    }
    let root = v.pid();
    let rec = d.path().join("record");
    let mut scripts = Vec::new();
    for name in ["first", "second"] {
        let s = d.path().join(name);
        std::fs::write(
            &s,
            format!(
                "#!/bin/sh\necho \"{name} $CRTOOLS_SCRIPT_ACTION $CRTOOLS_INIT_PID $(ls $CRTOOLS_IMAGE_DIR | grep -c '^core-')\" >> {}\n",
                rec.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&s, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        scripts.push(s);
    }
    let img = d.path().join("img");
    std::fs::create_dir_all(&img).unwrap();
    let o = criu_dump(
        root,
        &img,
        &[
            "--action-script",
            scripts[0].to_str().unwrap(),
            "--action-script",
            scripts[1].to_str().unwrap(),
        ],
    );
    assert!(
        o.status.success(),
        "dump: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    // One run per script and action, the root as CRTOOLS_INIT_PID, all three cores (root,
    // sleeper, zombie) written before post-dump.
    assert_eq!(
        std::fs::read_to_string(&rec).unwrap(),
        format!(
            "second pre-dump {root} 0\nfirst pre-dump {root} 0\nsecond post-dump {root} 3\nfirst post-dump {root} 3\n"
        )
    );
    // The dump killed the tree.
    assert!(
        v.wait(Duration::from_secs(10)).is_some(),
        "root still running"
    );
}
