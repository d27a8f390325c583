//! `criu restore` of process trees, through the command line: a tree is dumped (and killed),
//! every process of it is gone, `criu restore -d` brings it back with the same pids, parents,
//! process groups and sessions (zombies as zombies), and the victims check their own memory,
//! identity and shared pages again. A tree whose pids are still taken is refused with a clear
//! error and nothing created.
//!
//! Every test runs as root, under the test lock and as a child subreaper (the restored root is
//! re-parented to this process when `criu restore -d` exits). A guard kills every process of
//! the victim's session and every victim child of this process and reaps them, whatever the
//! test's outcome.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use compel_criu_tests::{
    Exit, StatIds, become_subreaper, comm_of, criu, criu_victim, our_children, pid_exists,
    proc_state, skip_if_not_root, stat_ids, tail, test_lock, tracer_pid, wait_exit_timeout,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Every process whose session is `sid`.
fn session_members(sid: i32) -> Vec<i32> {
    let mut out: Vec<i32> = fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .filter(|&p| stat_ids(p).is_some_and(|s| s.3 == sid))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Kills a victim tree and reaps it on drop, whatever happened: every recorded pid, every
/// process of the victim's session and every victim child of ours get SIGKILL, then children
/// of ours are reaped with `waitpid(-1, WNOHANG)` until none is left (`ECHILD`) or 10 s pass.
struct Tree {
    pids: Vec<i32>,
    sid: i32,
}

impl Tree {
    fn kill_all(&self) {
        let mut targets = self.pids.clone();
        if self.sid > 0 {
            targets.extend(session_members(self.sid));
        }
        targets.extend(
            our_children()
                .into_iter()
                .filter(|&p| comm_of(p).starts_with("criu-victim")),
        );
        for p in targets {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
    }

    /// Kills and reaps everything; whether nothing of the tree is left.
    fn kill_and_reap(&self) -> bool {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            self.kill_all();
            loop {
                let mut st = 0;
                // SAFETY: reaps any exited child of ours; st is a valid int.
                let r = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG | libc::__WALL) };
                if r <= 0 {
                    break;
                }
            }
            let left = self.pids.iter().any(|&p| pid_exists(p))
                || (self.sid > 0 && !session_members(self.sid).is_empty());
            if !left {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        self.kill_and_reap();
    }
}

/// Starts `bin` with stdin from /dev/null, output into `log` and no descriptor beyond 0..2,
/// recorded in a fresh guard; `own_session` says that the victim calls `setsid()` (then the
/// guard also kills every process of the session named by its pid).
fn spawn(bin: &str, args: &[&str], log: &Path, own_session: bool) -> Tree {
    let out = fs::File::create(log).expect("victim log");
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log fd"))
        .stderr(out);
    // SAFETY: the closure only makes an async-signal-safe syscall in the child.
    unsafe {
        cmd.pre_exec(|| {
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    let pid = cmd.spawn().expect("spawn victim").id() as i32;
    Tree {
        pids: vec![pid],
        sid: if own_session { pid } else { 0 },
    }
}

/// The pids of the `ready PID...` line the victim writes into `ready`.
fn wait_ready(ready: &Path, log: &Path) -> Vec<i32> {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let text = fs::read_to_string(ready).unwrap_or_default();
        if let Some(rest) = text.lines().next().and_then(|l| l.strip_prefix("ready ")) {
            return rest.split(' ').filter_map(|w| w.parse().ok()).collect();
        }
        assert!(
            Instant::now() < end,
            "the victim never got ready; log:\n{}",
            tail(log, 60)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sends SIGUSR1 to every pid and waits for one line per pid in `result`; asserts that each is
/// `check ok PID`. Removes `result` first.
fn expect_checks_ok(pids: &[i32], result: &Path, when: &str) {
    let _ = fs::remove_file(result);
    for &p in pids {
        kill(Pid::from_raw(p), Signal::SIGUSR1)
            .unwrap_or_else(|e| panic!("{when}: SIGUSR1 to {p}: {e}"));
    }
    // Generous: debug-built victims on a loaded machine.
    let end = Instant::now() + Duration::from_secs(30);
    let lines = loop {
        let text = fs::read_to_string(result).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        let answered = pids.iter().all(|p| {
            lines
                .iter()
                .any(|l| l.split(' ').nth(2) == Some(&p.to_string()))
        });
        if answered {
            break lines;
        }
        if Instant::now() >= end {
            let states: Vec<_> = pids.iter().map(|&p| (p, stat_ids(p))).collect();
            panic!("{when}: not every process answered SIGUSR1: {lines:?}; states {states:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    for &p in pids {
        let l = lines
            .iter()
            .find(|l| l.split(' ').nth(2) == Some(&p.to_string()))
            .expect("answered");
        assert_eq!(
            *l,
            format!("check ok {p}"),
            "{when}: the check of {p}: {lines:?}"
        );
    }
}

/// Dumps the tree of `root` into `img` with `criu dump` (which kills it), then reaps the root and
/// every orphan (re-parented to us) and asserts that none of `pids` is left, not even a zombie.
fn dump_and_reap(root: i32, pids: &[i32], img: &Path) {
    fs::create_dir_all(img).expect("image dir");
    let o = criu(&[
        "dump",
        "-t",
        &root.to_string(),
        "-D",
        img.to_str().expect("utf-8 path"),
        "-o",
        "dump.log",
        "-v4",
    ]);
    assert!(
        o.status.success(),
        "criu dump: {:?}\nstderr: {}\nlog:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr),
        tail(&img.join("dump.log"), 60)
    );
    assert_eq!(
        wait_exit_timeout(root, Duration::from_secs(10)),
        Ok(Some(Exit::Signal(libc::SIGKILL))),
        "the dumped root was not killed"
    );
    // The others die after (or before) the root; whatever is left of them is ours to reap.
    let end = Instant::now() + Duration::from_secs(10);
    let mut left: Vec<i32> = pids.iter().copied().filter(|&p| p != root).collect();
    while !left.is_empty() {
        left.retain(|&p| match wait_exit_timeout(p, Duration::ZERO) {
            Ok(Some(_)) => false,
            Ok(None) => true,
            // Not (yet) our child: gone if /proc no longer has it.
            Err(_) => pid_exists(p),
        });
        assert!(
            Instant::now() < end,
            "processes of the dumped tree left: {:?}",
            left.iter().map(|&p| (p, stat_ids(p))).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    for &p in pids {
        assert!(!pid_exists(p), "pid {p} is still there after the dump");
    }
}

/// `criu restore -D img -d --pidfile img/rpid`; asserts it succeeded and that the pidfile names
/// `root`.
fn restore_detached(img: &Path, root: i32) {
    let pidfile = img.join("rpid");
    let o = criu(&[
        "restore",
        "-D",
        img.to_str().expect("utf-8 path"),
        "-d",
        "--pidfile",
        pidfile.to_str().expect("utf-8 path"),
        "-o",
        "restore.log",
        "-v4",
    ]);
    assert!(
        o.status.success(),
        "criu restore -d: {:?}\nstderr: {}\nlog:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr),
        tail(&img.join("restore.log"), 60)
    );
    assert_eq!(
        fs::read_to_string(&pidfile).expect("pidfile").trim(),
        root.to_string(),
        "the pidfile"
    );
}

/// Asserts that every process has the `(ppid, pgid, sid)` it had before the dump and is alive
/// (running or sleeping, untraced), or a zombie again if it was one.
fn assert_same_tree(before: &[(i32, StatIds)]) {
    for &(p, (state, ppid, pgid, sid)) in before {
        let want = if state == 'Z' { "Z" } else { "RS" };
        let end = Instant::now() + Duration::from_secs(10);
        let now = loop {
            let now = stat_ids(p);
            if now.is_some_and(|s| want.contains(s.0)) || Instant::now() >= end {
                break now;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let Some((st, pp, pg, si)) = now else {
            panic!("pid {p} was not restored");
        };
        assert!(
            want.contains(st),
            "pid {p} is in state {st}, want one of {want:?}"
        );
        assert_eq!(
            (pp, pg, si),
            (ppid, pgid, sid),
            "(ppid, pgid, sid) of {p} after restore"
        );
        if state != 'Z' {
            assert_eq!(tracer_pid(p), Some(0), "{p} is still traced");
        }
    }
}

fn record(pids: &[i32]) -> Vec<(i32, StatIds)> {
    pids.iter()
        .map(|&p| (p, stat_ids(p).unwrap_or_else(|| panic!("pid {p} vanished"))))
        .collect()
}

/// Paths of one test: work dir, image dir, ready, result and log files.
struct Files {
    _dir: tempfile::TempDir,
    img: PathBuf,
    ready: PathBuf,
    result: PathBuf,
    log: PathBuf,
}

fn files() -> Files {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().to_path_buf();
    Files {
        img: p.join("img"),
        ready: p.join("ready"),
        result: p.join("result"),
        log: p.join("victim.log"),
        _dir: dir,
    }
}

fn arg(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Starts tree3 and checks its shape in /proc: `[root, a, a1, b, b1, b2]`.
fn start_tree3(f: &Files) -> (Tree, Vec<i32>) {
    let mut tree = spawn(
        &criu_victim("three-level-tree"),
        &[arg(&f.ready), arg(&f.result)],
        &f.log,
        true,
    );
    let pids = wait_ready(&f.ready, &f.log);
    assert_eq!(pids.len(), 6, "ready line {pids:?}");
    assert_eq!(pids[0], tree.pids[0], "the root is the process we started");
    tree.pids = pids.clone();
    let (root, a, a1, b, b1, b2) = (pids[0], pids[1], pids[2], pids[3], pids[4], pids[5]);
    let me = std::process::id() as i32;
    let want = [
        (root, me, root),
        (a, root, root),
        (a1, a, root),
        (b, root, b),
        (b1, b, b),
        (b2, b, b),
    ];
    for (p, ppid, pgid) in want {
        let (st, pp, pg, si) = stat_ids(p).unwrap_or_else(|| panic!("{p} vanished"));
        assert_ne!(st, 'Z', "{p}");
        assert_eq!((pp, pg, si), (ppid, pgid, root), "(ppid, pgid, sid) of {p}");
    }
    (tree, pids)
}

#[test]
fn a_three_level_tree_with_two_groups_comes_back() {
    skip_if_not_root!("a_three_level_tree_with_two_groups_comes_back");
    let _g = test_lock();
    become_subreaper();
    let f = files();
    let (tree, pids) = start_tree3(&f);
    let root = pids[0];
    // The victims' own check works before any dump.
    expect_checks_ok(&pids, &f.result, "before the dump");
    let before = record(&pids);

    dump_and_reap(root, &pids, &f.img);
    restore_detached(&f.img, root);
    assert_same_tree(&before);
    let mut sorted = pids.clone();
    sorted.sort();
    assert_eq!(
        session_members(root),
        sorted,
        "the restored session holds the tree and nothing else"
    );
    expect_checks_ok(&pids, &f.result, "after restore");
    // The engine keeps each task from inheriting the others' restore areas (MADV_DONTFORK);
    // nothing of that may stay on the restored memory, or its next fork would lose it.
    for &p in &pids {
        let smaps = fs::read_to_string(format!("/proc/{p}/smaps")).expect("smaps");
        let marked: Vec<&str> = smaps
            .lines()
            .filter(|l| l.starts_with("VmFlags:") && l.split_whitespace().any(|w| w == "dc"))
            .collect();
        assert!(
            marked.is_empty(),
            "pid {p} has do-not-copy areas: {marked:?}"
        );
    }

    assert!(
        tree.kill_and_reap(),
        "the restored tree could not be killed"
    );
    for &p in &pids {
        assert!(!pid_exists(p), "{p} left behind");
    }
}

#[test]
fn a_page_shared_by_parent_and_child_is_shared_again() {
    skip_if_not_root!("a_page_shared_by_parent_and_child_is_shared_again");
    let _g = test_lock();
    become_subreaper();
    let f = files();
    let mut tree = spawn(
        &criu_victim("shared-counter"),
        &[arg(&f.ready), arg(&f.result)],
        &f.log,
        false,
    );
    let line = wait_ready(&f.ready, &f.log);
    let ready = fs::read_to_string(&f.ready).expect("ready");
    let addr = ready
        .split(' ')
        .nth(3)
        .and_then(|a| u64::from_str_radix(a.trim().trim_start_matches("0x"), 16).ok())
        .expect("address in the ready line");
    let (parent, child) = (line[0], line[1]);
    assert_eq!(parent, tree.pids[0]);
    tree.pids.push(child);
    let pids = [parent, child];
    // Both map one shmem object at `addr`: the same inode behind map_files.
    let object = |p: i32| {
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(format!("/proc/{p}/map_files/{addr:x}-{:x}", addr + 4096))
            .unwrap_or_else(|e| panic!("map_files of {p}: {e}"));
        (m.dev(), m.ino())
    };
    assert_eq!(object(parent), object(child), "one object before the dump");
    expect_checks_ok(&pids, &f.result, "before the dump");
    let before = record(&pids);

    dump_and_reap(parent, &pids, &f.img);
    restore_detached(&f.img, parent);
    assert_same_tree(&before);
    assert_eq!(
        object(parent),
        object(child),
        "parent and child map one object after restore"
    );
    expect_checks_ok(&pids, &f.result, "after restore");

    assert!(
        tree.kill_and_reap(),
        "the restored pair could not be killed"
    );
    for &p in &pids {
        assert!(!pid_exists(p), "{p} left behind");
    }
}

#[test]
fn a_parent_in_waitpid_reaps_its_children_after_restore() {
    skip_if_not_root!("a_parent_in_waitpid_reaps_its_children_after_restore");
    let _g = test_lock();
    become_subreaper();
    let f = files();
    let mut tree = spawn(
        &criu_victim("zombie-wait"),
        &[arg(&f.ready), arg(&f.result)],
        &f.log,
        true,
    );
    let pids = wait_ready(&f.ready, &f.log);
    assert_eq!(pids.len(), 3, "ready line {pids:?}");
    let (root, z, w) = (pids[0], pids[1], pids[2]);
    assert_eq!(root, tree.pids[0]);
    tree.pids = pids.clone();
    // Let the root reach its waitpid sleep.
    assert_eq!(
        compel_criu_tests::wait_state(root, "S", Duration::from_secs(10)),
        Some('S')
    );
    let before = record(&pids);
    assert_eq!(before[1].1.0, 'Z', "Z is a zombie before the dump");
    assert_eq!(before[1].1.1, root);
    assert_eq!(before[2].1.1, root);
    assert_eq!((before[0].1.2, before[0].1.3), (root, root), "root leads");

    dump_and_reap(root, &pids, &f.img);
    restore_detached(&f.img, root);
    assert_same_tree(&before);
    assert_eq!(proc_state(z), Some('Z'), "Z is a zombie again");
    // Nothing ran on yet: the root is still in waitpid.
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        fs::read_to_string(&f.result).unwrap_or_default().is_empty(),
        "the root returned from waitpid before W exited"
    );

    kill(Pid::from_raw(w), Signal::SIGUSR2).expect("SIGUSR2 to W");
    let exit = wait_exit_timeout(root, Duration::from_secs(20));
    let result = fs::read_to_string(&f.result).unwrap_or_default();
    assert_eq!(
        exit,
        Ok(Some(Exit::Code(0))),
        "the root's end; result: {result:?}; states {:?}",
        pids.iter().map(|&p| (p, stat_ids(p))).collect::<Vec<_>>()
    );
    let lines: Vec<&str> = result.lines().collect();
    assert_eq!(
        lines,
        [
            format!("reaped W {}", 9 << 8).as_str(),
            format!("reaped Z {}", 5 << 8).as_str()
        ],
        "what the restored root reaped"
    );
    for &p in &pids {
        assert!(!pid_exists(p), "{p} left behind");
    }
    assert!(tree.kill_and_reap());
}

#[test]
fn restoring_over_a_running_tree_fails_and_creates_nothing() {
    skip_if_not_root!("restoring_over_a_running_tree_fails_and_creates_nothing");
    let _g = test_lock();
    become_subreaper();
    let f = files();
    let (tree, pids) = start_tree3(&f);
    let root = pids[0];
    fs::create_dir_all(&f.img).expect("image dir");
    let o = criu(&["dump", "-t", &root.to_string(), "-D", arg(&f.img), "-R"]);
    assert!(
        o.status.success(),
        "criu dump -R: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let before = record(&pids);
    let children_before = our_children();

    let pidfile = f.img.join("rpid");
    let o = criu(&[
        "restore",
        "-D",
        arg(&f.img),
        "-d",
        "--pidfile",
        arg(&pidfile),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "restore over a running tree succeeded");
    let busy = pids
        .iter()
        .find(|p| stderr.contains(&format!("pid {p} is in use")));
    assert!(busy.is_some(), "no \"pid N is in use\" error: {stderr}");
    assert!(!pidfile.exists(), "a pidfile was written");
    // Nothing new: the same children of ours, the same session, the same running tree.
    assert_eq!(our_children(), children_before, "children of ours");
    let mut sorted = pids.clone();
    sorted.sort();
    assert_eq!(session_members(root), sorted, "the victim's session");
    for (p, (_, ppid, pgid, sid)) in before {
        let (st, pp, pg, si) = stat_ids(p).unwrap_or_else(|| panic!("{p} died"));
        assert!("RS".contains(st), "{p} in state {st}");
        assert_eq!((pp, pg, si), (ppid, pgid, sid), "{p}");
        assert_eq!(tracer_pid(p), Some(0), "{p} traced");
    }
    expect_checks_ok(&pids, &f.result, "after the refused restore");
    assert!(tree.kill_and_reap(), "the tree could not be killed");
}

#[test]
fn a_restored_tree_dumps_and_restores_again() {
    skip_if_not_root!("a_restored_tree_dumps_and_restores_again");
    let _g = test_lock();
    become_subreaper();
    let f = files();
    let (tree, pids) = start_tree3(&f);
    let root = pids[0];
    let before = record(&pids);
    dump_and_reap(root, &pids, &f.img);
    restore_detached(&f.img, root);
    assert_same_tree(&before);
    expect_checks_ok(&pids, &f.result, "after the first restore");

    // The restored tree is an ordinary tree again: dump it, and it comes back once more.
    let img2 = f.img.with_file_name("img2");
    dump_and_reap(root, &pids, &img2);
    restore_detached(&img2, root);
    assert_same_tree(&before);
    expect_checks_ok(&pids, &f.result, "after the second restore");

    assert!(
        tree.kill_and_reap(),
        "the restored tree could not be killed"
    );
    for &p in &pids {
        assert!(!pid_exists(p), "{p} left behind");
    }
}

/// The number the churn victim last wrote into its counter file.
fn churn_rounds(counter: &Path) -> u64 {
    fs::read_to_string(counter)
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or(0)
}

/// A program that never stops forking children (which fork grandchildren) and starting threads
/// is dumped mid-change, three times over: each time the restored tree runs on from the
/// dumped state, its counter keeps growing, and its own checks of every child's exit code and
/// thread's result keep passing (it exits 3 the moment one is wrong).
#[test]
fn a_tree_dumped_while_it_forks_runs_on_after_restore() {
    skip_if_not_root!("a_tree_dumped_while_it_forks_runs_on_after_restore");
    let _g = test_lock();
    become_subreaper();
    for round in 0..3 {
        let f = files();
        let counter = f.result.clone();
        let tree = spawn(
            env!("CARGO_BIN_EXE_criu-victim-churning-tree"),
            &[arg(&counter)],
            &f.log,
            false,
        );
        let root = tree.pids[0];
        let end = Instant::now() + Duration::from_secs(10);
        while churn_rounds(&counter) < 20 {
            assert!(
                Instant::now() < end,
                "churn never counted; log:\n{}",
                tail(&f.log, 60)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        dump_and_reap(root, &[root], &f.img);
        // Children and grandchildren of the killed tree come to us: reap them all.
        assert!(
            tree.kill_and_reap(),
            "round {round}: the dumped tree left processes"
        );
        let dumped = churn_rounds(&counter);
        let tree_img = criu_images::ImageDir::new(&f.img)
            .read_pstree()
            .expect("pstree.img");
        restore_detached(&f.img, root);
        // The root is back with its ids (its children come and go by design).
        let r = &tree_img[0];
        let st = stat_ids(root).expect("restored root");
        assert_eq!(
            (r.pid as i32, st.2, st.3),
            (root, r.pgid as i32, r.sid as i32)
        );
        let end = Instant::now() + Duration::from_secs(10);
        while churn_rounds(&counter) < dumped + 50 {
            assert!(
                Instant::now() < end,
                "round {round}: the restored churn stopped at {} (dumped at {dumped}); log:\n{}",
                churn_rounds(&counter),
                tail(&f.log, 60)
            );
            assert_eq!(
                wait_exit_timeout(root, Duration::ZERO),
                Ok(None),
                "round {round}: the restored churn ended; log:\n{}",
                tail(&f.log, 60)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(proc_state(root).map(|s| s != 'Z'), Some(true));
        assert!(
            tree.kill_and_reap(),
            "round {round}: the restored tree left processes"
        );
    }
}

/// A task deep in the tree fails while restoring itself (its working directory is gone): the
/// restore fails naming that pid and step, and every task already created, the root and its
/// other descendants included, is killed and reaped: none of the pids is left, not even as a
/// zombie, and this process has no children left.
#[test]
fn a_grandchild_failing_takes_the_whole_restore_down_cleanly() {
    skip_if_not_root!("a_grandchild_failing_takes_the_whole_restore_down_cleanly");
    let _g = test_lock();
    become_subreaper();
    let f = files();
    let (tree, pids) = start_tree3(&f);
    let (root, b2) = (pids[0], pids[5]);
    dump_and_reap(root, &pids, &f.img);
    // Give B2 a working directory of its own that does not exist.
    let d = criu_images::ImageDir::new(&f.img);
    let mut files = d.read_files().expect("files.img");
    let fs_entry = d.read_fs(b2 as u32).expect("fs image of b2");
    let mut cwd = files
        .iter()
        .find(|e| e.id == fs_entry.cwd_id)
        .expect("b2's cwd in files.img")
        .clone();
    let new_id = files.iter().map(|e| e.id).max().unwrap_or(0) + 1;
    cwd.id = new_id;
    let reg = cwd.reg.as_mut().expect("cwd is a regular file entry");
    reg.id = new_id;
    reg.name = "/nonexistent-criu-tree-cwd".into();
    files.push(cwd);
    d.write_files(&files).expect("write files.img");
    let mut fs_entry = fs_entry;
    fs_entry.cwd_id = new_id;
    d.write_fs(b2 as u32, &fs_entry).expect("write fs image");

    let o = criu(&[
        "restore",
        "-D",
        arg(&f.img),
        "-d",
        "-o",
        "restore.log",
        "-v4",
    ]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        !o.status.success(),
        "restore succeeded despite a missing cwd"
    );
    assert!(
        err.contains(&format!("pid {b2}")) && err.contains("root, cwd and umask"),
        "the error names the task and the step: {err}"
    );
    // Everything is gone at once: criu reaped what it created before it exited.
    for &p in &pids {
        assert!(!pid_exists(p), "pid {p} left behind: {:?}", stat_ids(p));
    }
    assert!(
        our_children().is_empty(),
        "children left: {:?}",
        our_children()
    );
    assert!(tree.kill_and_reap());
}

/// A child subreaper that adopted an orphan: the orphan comes back as the root's child and the
/// root is still a subreaper: when the orphan forks and exits after the restore, the root
/// reaps it (it was blocked in `waitpid(-1)`) and adopts the new orphan, instead of init.
#[test]
fn a_subreaper_keeps_its_adopted_orphan_and_adopts_again() {
    skip_if_not_root!("a_subreaper_keeps_its_adopted_orphan_and_adopts_again");
    let _g = test_lock();
    become_subreaper();
    let f = files();
    let mut tree = spawn(
        env!("CARGO_BIN_EXE_criu-victim-subreaper-orphan"),
        &[arg(&f.ready), arg(&f.result)],
        &f.log,
        false,
    );
    let pids = wait_ready(&f.ready, &f.log);
    assert_eq!(pids.len(), 2, "ready line {pids:?}");
    tree.pids = pids.clone();
    let (root, b) = (pids[0], pids[1]);
    assert_eq!(
        stat_ids(b).map(|s| s.1),
        Some(root),
        "b is the root's adopted child"
    );
    let before = record(&pids);
    dump_and_reap(root, &pids, &f.img);
    let _ = fs::remove_file(&f.result);
    restore_detached(&f.img, root);
    assert_same_tree(&before);

    kill(Pid::from_raw(b), Signal::SIGUSR1).expect("signal b");
    let end = Instant::now() + Duration::from_secs(10);
    let (reaped, orphan) = loop {
        let text = fs::read_to_string(&f.result).unwrap_or_default();
        let reaped = text
            .lines()
            .find(|l| l.starts_with("reaped "))
            .map(String::from);
        let orphan = text
            .lines()
            .find(|l| l.starts_with("orphan "))
            .map(String::from);
        if let (Some(r), Some(o)) = (&reaped, &orphan) {
            break (r.clone(), o.clone());
        }
        assert!(
            Instant::now() < end,
            "no verdict; result: {text:?}; log:\n{}",
            tail(&f.log, 60)
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(
        reaped,
        format!("reaped {b} {}", 4 << 8),
        "the root reaped b"
    );
    let w: Vec<&str> = orphan.split_whitespace().collect();
    let c: i32 = w[1].parse().expect("c's pid");
    tree.pids.push(c);
    assert_eq!(
        w[2],
        root.to_string(),
        "c was adopted by the restored subreaper: {orphan}"
    );
    assert!(
        tree.kill_and_reap(),
        "the restored tree could not be killed"
    );
}

/// A hex mask field of `/proc/PID/status`.
fn status_mask(pid: i32, key: &str) -> u64 {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or_else(|| panic!("no {key} for {pid}"))
}

/// Signal state per process and per thread group across a tree: the root's process-wide
/// pending SIGUSR1 and the child's thread-pending SIGUSR2 (both blocked) are pending again
/// where they were, with the same masks, next to a zombie; and the root, restored inside
/// `waitpid`, gets the child's status when it dies.
#[test]
fn pending_signals_stay_with_their_process_and_thread() {
    skip_if_not_root!("pending_signals_stay_with_their_process_and_thread");
    let _g = test_lock();
    become_subreaper();
    let f = files();
    let mut tree = spawn(
        env!("CARGO_BIN_EXE_criu-victim-wait-signals-timers"),
        &[arg(&f.ready)],
        &f.log,
        true,
    );
    let pids = wait_ready(&f.ready, &f.log);
    assert_eq!(pids.len(), 3, "ready line {pids:?}");
    tree.pids = pids.clone();
    let (root, a) = (pids[0], pids[1]);
    let usr1 = 1u64 << (libc::SIGUSR1 - 1);
    let usr2 = 1u64 << (libc::SIGUSR2 - 1);
    let masks = |p: i32| {
        (
            status_mask(p, "SigPnd:"),
            status_mask(p, "ShdPnd:"),
            status_mask(p, "SigBlk:"),
        )
    };
    let before = (masks(root), masks(a));
    assert_eq!(before.0, (0, usr1, usr1), "root before the dump");
    assert_eq!(before.1, (usr2, 0, usr2), "a before the dump");
    let ids = record(&pids);
    dump_and_reap(root, &pids, &f.img);
    restore_detached(&f.img, root);
    assert_same_tree(&ids);
    assert_eq!(
        (masks(root), masks(a)),
        before,
        "pending and blocked after restore"
    );
    // A's exit still reaches the root's waitpid.
    kill(Pid::from_raw(a), Signal::SIGKILL).expect("kill a");
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let text = fs::read_to_string(&f.ready).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.starts_with("reaped ")) {
            assert_eq!(l, format!("reaped {a} {}", libc::SIGKILL), "{text}");
            break;
        }
        assert!(Instant::now() < end, "the root never reaped a: {text}");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(tree.kill_and_reap());
}
