//! `--freeze-cgroup`: a tree that never stops forking and starting threads, in a v2 cgroup the
//! test made, is frozen through the cgroup while it is seized. Every dump (leaving it running)
//! succeeds, the cgroup is thawed after each and the tree runs on untraced; a path that is no
//! cgroup fails the dump and leaves the tree running; a full dump and restore brings it back
//! into the cgroup, thawed and churning. The test's cgroup is emptied (its tasks killed and
//! reaped) and removed whatever happens; no other cgroup is touched.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use compel_criu_tests::{
    become_subreaper, comm_of, criu, criu_dump, our_children, proc_state, skip_if_not_root, tail,
    test_lock, tracer_pid, wait_exit_timeout,
};

/// A v2 cgroup of the test's own, below the one the test runs in. On drop its tasks are
/// killed and reaped, and it is removed.
struct OwnCgroup(PathBuf);

impl OwnCgroup {
    fn make() -> Option<OwnCgroup> {
        let Some(parent) = own_v2_cgroup() else {
            eprintln!("skipped: no cgroup v2 hierarchy");
            return None;
        };
        if !parent.join("cgroup.procs").exists() {
            eprintln!("skipped: {} is not a v2 cgroup", parent.display());
            return None;
        }
        let dir = parent.join(format!("crtest-freeze-{}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) if dir.join("cgroup.freeze").exists() => Some(OwnCgroup(dir)),
            Ok(()) => {
                let _ = std::fs::remove_dir(&dir);
                eprintln!("skipped: {} has no cgroup.freeze", dir.display());
                None
            }
            Err(e) => {
                eprintln!("skipped: cannot make {}: {e}", dir.display());
                None
            }
        }
    }

    fn procs(&self) -> Vec<i32> {
        std::fs::read_to_string(self.0.join("cgroup.procs"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect()
    }

    fn frozen(&self) -> bool {
        std::fs::read_to_string(self.0.join("cgroup.events"))
            .unwrap_or_default()
            .lines()
            .any(|l| l.trim() == "frozen 1")
    }

    /// Whether `pid` is in this cgroup (by `/proc/PID/cgroup`).
    fn holds(&self, pid: i32) -> bool {
        let name = self.0.file_name().unwrap().to_string_lossy().to_string();
        std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("0::") && l.ends_with(&format!("/{name}")))
    }
}

impl Drop for OwnCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0.join("cgroup.freeze"), "0");
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let procs = self.procs();
            if procs.is_empty() {
                break;
            }
            for p in &procs {
                // SAFETY: kills only tasks of the cgroup this test made.
                unsafe { libc::kill(*p, libc::SIGKILL) };
            }
            // Ours (the victim or, as subreaper, its orphans and the restored tree): reap them.
            for p in procs {
                let _ = wait_exit_timeout(p, Duration::from_millis(200));
            }
            if Instant::now() > end {
                eprintln!("tasks left in {}", self.0.display());
                break;
            }
        }
        reap_our_victims();
        while std::fs::remove_dir(&self.0).is_err() {
            if Instant::now() > end {
                eprintln!("could not remove {}", self.0.display());
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Reaps the churning victims that came to us as subreaper and have exited (zombies are not
/// listed in cgroup.procs).
fn reap_our_victims() {
    for p in our_children() {
        if comm_of(p).starts_with("criu-victim-ch") && proc_state(p) == Some('Z') {
            let _ = wait_exit_timeout(p, Duration::from_secs(1));
        }
    }
}

/// The directory of the cgroup v2 this process is in: `0::PATH` of `/proc/self/cgroup` below
/// the mount point of the cgroup2 file system.
fn own_v2_cgroup() -> Option<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = own.lines().find_map(|l| l.strip_prefix("0::"))?.to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mnt = mounts.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        (right.split_whitespace().next()? == "cgroup2")
            .then(|| left.split_whitespace().nth(4).map(str::to_string))
            .flatten()
    })?;
    Some(Path::new(&mnt).join(rel.trim_start_matches('/')))
}

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

/// Starts the churning victim inside `cg` (it moves itself there before exec), its output
/// going to `log`.
fn spawn_churn(cg: &OwnCgroup, counter: &Path, log: &Path) -> i32 {
    let procs = std::ffi::CString::new(cg.0.join("cgroup.procs").to_str().unwrap()).unwrap();
    let out = std::fs::File::create(log).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_criu-victim-churning-tree"));
    cmd.arg(counter)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    // SAFETY: the closure only calls open, write and close (async-signal-safe) on a path
    // prepared before the fork; writing "0" to cgroup.procs moves the writer.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let n = libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
            if n != 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    #[allow(clippy::zombie_processes)] // reaped by pid (by the test or the cgroup guard)
    let child = cmd.spawn().expect("spawn the churning victim");
    child.id() as i32
}

#[test]
fn frozen_cgroup_dumps_a_churning_tree_and_thaws_it() {
    skip_if_not_root!("frozen_cgroup_dumps_a_churning_tree_and_thaws_it");
    let _g = test_lock();
    become_subreaper();
    let Some(cg) = OwnCgroup::make() else { return };
    let d = tempfile::tempdir().unwrap();
    let counter = d.path().join("rounds");
    let log = d.path().join("victim.log");
    let root = spawn_churn(&cg, &counter, &log);
    assert!(advances(&counter, 0), "victim never started churning");
    assert!(cg.holds(root), "victim not in {}", cg.0.display());
    let cg_arg = cg.0.to_str().unwrap();

    // Leaving it running: with the cgroup frozen the tree cannot change while it is seized,
    // so every dump succeeds (without it some fail as "not stable").
    for i in 0..8 {
        let img = d.path().join(format!("img{i}"));
        std::fs::create_dir(&img).unwrap();
        let o = criu_dump(
            root,
            &img,
            &["-R", "--freeze-cgroup", cg_arg, "-v4", "-o", "dump.log"],
        );
        let dlog = std::fs::read_to_string(img.join("dump.log")).unwrap_or_default();
        assert!(
            o.status.success(),
            "dump {i}: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            tail(&img.join("dump.log"), 30)
        );
        assert!(dlog.contains("cgroup frozen"), "dump {i} did not freeze");
        assert!(dlog.contains("cgroup thawed"), "dump {i} did not thaw");
        assert!(!cg.frozen(), "cgroup left frozen after dump {i}");
        assert_eq!(tracer_pid(root), Some(0), "dump {i} left the victim traced");
        let before = rounds(&counter);
        assert!(advances(&counter, before), "victim stalled after dump {i}");
    }

    // A path that is not a cgroup: the dump fails before seizing, the tree runs on.
    let img = d.path().join("img-bad");
    std::fs::create_dir(&img).unwrap();
    let o = criu_dump(
        root,
        &img,
        &["-R", "--freeze-cgroup", d.path().to_str().unwrap()],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "dump with a non-cgroup path succeeded");
    assert!(err.contains("cgroup.freeze"), "{err}");
    assert_eq!(tracer_pid(root), Some(0));
    let before = rounds(&counter);
    assert!(
        advances(&counter, before),
        "victim stalled after the failed dump"
    );

    // A full dump (the tree is killed) and a restore: back in the cgroup, thawed, churning.
    // The churn wraps pids around quickly, so another process may take one of the dumped
    // pids before the restore; that attempt is repeated with a fresh tree.
    let mut root = root;
    for attempt in 0.. {
        match full_dump_and_restore(&cg, root, d.path(), &counter, &log) {
            Ok(()) => break,
            Err(e) if attempt < 4 && e.contains("is in use") => {
                eprintln!("attempt {attempt}: {e}; again");
                root = spawn_churn(&cg, &counter, &log);
                assert!(advances(&counter, 0), "victim never started churning");
            }
            Err(e) => panic!("attempt {attempt}: {e}"),
        }
    }
    // `cg` drops: the restored tree is killed and reaped, the cgroup removed.
}

/// Dumps (killing) the churning tree of `root` with `--freeze-cgroup`, waits until the
/// cgroup is empty, restores it and checks it churns on in the cgroup, thawed. A failed
/// restore is returned (with its log), everything else asserted.
fn full_dump_and_restore(
    cg: &OwnCgroup,
    root: i32,
    dir: &Path,
    counter: &Path,
    log: &Path,
) -> Result<(), String> {
    let img = tempfile::tempdir_in(dir).unwrap();
    let img = img.path();
    let o = criu_dump(
        root,
        img,
        &[
            "--freeze-cgroup",
            cg.0.to_str().unwrap(),
            "-v4",
            "-o",
            "dump.log",
        ],
    );
    assert!(
        o.status.success(),
        "full dump: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        tail(&img.join("dump.log"), 30)
    );
    assert!(
        wait_exit_timeout(root, Duration::from_secs(10))
            .ok()
            .flatten()
            .is_some(),
        "dumped root not reaped"
    );
    // Its children come to us (subreaper) and die: reap them (a zombie is no longer listed
    // in cgroup.procs, but its pid is still taken) and wait until the cgroup is empty.
    let tree = criu_images::ImageDir::new(img).read_pstree().unwrap();
    for t in &tree[1..] {
        let _ = wait_exit_timeout(t.pid as i32, Duration::from_secs(5));
    }
    reap_our_victims();
    let end = Instant::now() + Duration::from_secs(10);
    while !cg.procs().is_empty() {
        for p in cg.procs() {
            let _ = wait_exit_timeout(p, Duration::from_millis(100));
        }
        assert!(Instant::now() < end, "dumped tree left {:?}", cg.procs());
    }
    assert!(!cg.frozen(), "cgroup left frozen by the full dump");
    let dumped = rounds(counter);
    let o = criu(&[
        "restore",
        "-D",
        img.to_str().unwrap(),
        "-o",
        "restore.log",
        "-v4",
        "-d",
    ]);
    if !o.status.success() {
        return Err(format!(
            "restore: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            tail(&img.join("restore.log"), 20)
        ));
    }
    assert!(cg.holds(root), "restored root not in {}", cg.0.display());
    assert!(
        advances(counter, dumped + 20),
        "restored tree does not churn; log:\n{}",
        tail(log, 30)
    );
    assert!(!cg.frozen());
    assert_eq!(tracer_pid(root), Some(0));
    Ok(())
}
