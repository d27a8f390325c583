//! runc containers for the tests and the bench: a bundle with a busybox root whose process
//! counts into `/count`, run, checkpointed and restored with this criu (`runc --criu PATH`).
//! runc's state lives under the container's temporary directory; the container (its processes,
//! cgroups and mounts) is deleted on drop, whatever happened.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::{criu_bin, is_root, wait_exit_timeout};

/// Whether `tool` is on the PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether runc tests can run here (root, runc, busybox-static); says why not on stderr.
pub fn runc_usable() -> bool {
    let ok = is_root() && have("runc") && Path::new("/bin/busybox").exists();
    if !ok {
        eprintln!("skipped: needs root, runc and busybox-static (.ci/test installs them)");
    }
    ok
}

/// The criu runc runs: `CRIU_BENCH_BIN` if set (a release build, for the bench), else the
/// workspace's.
pub fn runc_criu() -> PathBuf {
    std::env::var_os("CRIU_BENCH_BIN").map_or_else(criu_bin, PathBuf::from)
}

/// The counter every container runs by default.
pub const COUNTER: &str = "i=0; while :; do i=$((i+1)); echo $i >> /count; sleep 0.02; done";

/// A container of the test's own: `runc --root STATE ... ID`, removed on drop.
pub struct Container {
    dir: tempfile::TempDir,
    /// The container's id.
    pub id: String,
    /// Whether it has a pid namespace of its own (its init is pid 1 inside).
    pub pid_ns: bool,
}

impl Container {
    /// A bundle with a busybox root (`sh`, `sleep`, and `extra` applets) whose process runs
    /// `sh -c SCRIPT`, in namespaces `namespaces` (`None`: runc's defaults, which include a pid
    /// namespace). `edit` changes the spec further.
    pub fn new(
        namespaces: Option<&[&str]>,
        script: &str,
        extra: &[&str],
        edit: impl FnOnce(&mut serde_json::Value),
    ) -> Container {
        let dir = tempfile::tempdir().expect("container dir");
        let mut c = Container {
            id: format!(
                "criu-test-{}-{}",
                std::process::id(),
                dir.path()
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default()
                    .trim_start_matches(".tmp")
            ),
            dir,
            pid_ns: false,
        };
        let bin = c.bundle().join("rootfs/bin");
        std::fs::create_dir_all(&bin).expect("rootfs");
        std::fs::create_dir_all(c.state_dir()).expect("state dir");
        std::fs::copy("/bin/busybox", bin.join("busybox")).expect("copy busybox");
        for a in ["sh", "sleep"].iter().chain(extra) {
            std::os::unix::fs::symlink("busybox", bin.join(a)).expect("applet link");
        }
        c.ok(&["spec"], None);
        let path = c.bundle().join("config.json");
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("config.json")).expect("spec");
        v["process"]["terminal"] = false.into();
        v["process"]["args"] = serde_json::json!(["/bin/sh", "-c", script]);
        v["root"]["readonly"] = false.into();
        if let (Some(keep), Some(ns)) = (namespaces, v["linux"]["namespaces"].as_array_mut()) {
            ns.retain(|n| n["type"].as_str().is_some_and(|t| keep.contains(&t)));
        }
        edit(&mut v);
        c.pid_ns = v["linux"]["namespaces"]
            .as_array()
            .is_some_and(|a| a.iter().any(|n| n["type"] == "pid" && n["path"].is_null()));
        std::fs::write(&path, serde_json::to_vec_pretty(&v).expect("spec json")).expect("write");
        c
    }

    /// The busybox counter in `namespaces` (`None`: runc's defaults).
    pub fn counter(namespaces: Option<&[&str]>) -> Container {
        Container::new(namespaces, COUNTER, &[], |_| {})
    }

    /// The container's temporary directory (bundle, state, images).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// runc's state directory (`--root`).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The bundle.
    pub fn bundle(&self) -> PathBuf {
        self.dir.path().join("bundle")
    }

    /// `runc --root STATE --log LOG --criu CRIU ARGS` in the bundle, stdin on /dev/null,
    /// stdout to a file (returned in `stdout`), runc's log returned in `stderr`; killed after
    /// 60 s.
    pub fn runc(&self, args: &[&str]) -> Output {
        self.runc_with(args, |_| {})
    }

    /// [`Container::runc`] with a last change to the command (extra descriptors, stdio).
    pub fn runc_with(&self, args: &[&str], cmd: impl FnOnce(&mut Command)) -> Output {
        let log = self.dir.path().join("runc.log");
        let out = self.dir.path().join("runc.out");
        let _ = std::fs::remove_file(&log);
        let mut c = Command::new("runc");
        c.arg("--root")
            .arg(self.state_dir())
            .arg("--log")
            .arg(&log)
            .arg("--criu")
            .arg(runc_criu())
            .args(args)
            .current_dir(self.bundle())
            .stdin(Stdio::null())
            // A file, not a pipe: `run -d` and `restore -d` hand runc's stdio to the container,
            // which would hold a pipe open for good. The container's own stdout is /dev/null,
            // which it finds again after a restore.
            .stdout(if matches!(args.first(), Some(&"run" | &"restore")) {
                Stdio::null()
            } else {
                Stdio::from(std::fs::File::create(&out).expect("runc output file"))
            })
            .stderr(Stdio::null());
        cmd(&mut c);
        let child = c.spawn().expect("run runc");
        // A runc that hangs fails the test (and is killed) instead of hanging it.
        let pid = child.id() as i32;
        let _watchdog = std::thread::spawn(move || {
            for _ in 0..600 {
                std::thread::sleep(Duration::from_millis(100));
                if std::fs::metadata(format!("/proc/{pid}")).is_err() {
                    return;
                }
            }
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        });
        let mut o = child.wait_with_output().expect("wait for runc");
        o.stdout = std::fs::read(&out).unwrap_or_default();
        let _ = std::fs::remove_file(&out);
        o.stderr = std::fs::read(&log).unwrap_or_default();
        o
    }

    /// The last lines of criu's logs in work dir `work` (under the container's directory).
    pub fn criu_logs(&self, work: &str) -> String {
        let w = self.dir.path().join(work);
        ["restore.log", "dump.log"]
            .iter()
            .map(|f| std::fs::read_to_string(w.join(f)).unwrap_or_default())
            .map(|l| l.lines().rev().take(15).collect::<Vec<_>>().join("\n"))
            .collect::<Vec<_>>()
            .join("\n---\n")
    }

    /// [`Container::runc`] that must succeed; on failure panics with runc's log and the last
    /// lines of criu's logs in work dir `work`.
    pub fn ok(&self, args: &[&str], work: Option<&str>) -> Output {
        self.ok_with(args, work, |_| {})
    }

    /// [`Container::ok`] with a last change to the command.
    pub fn ok_with(
        &self,
        args: &[&str],
        work: Option<&str>,
        cmd: impl FnOnce(&mut Command),
    ) -> Output {
        let o = self.runc_with(args, cmd);
        if !o.status.success() {
            let log = work.map(|w| self.criu_logs(w)).unwrap_or_default();
            panic!(
                "runc {args:?}: {}\n{}\ncriu log (last lines, reversed):\n{log}",
                o.status,
                String::from_utf8_lossy(&o.stderr)
            );
        }
        o
    }

    /// `runc run -d`, then waits for the count to start.
    pub fn run(&self) {
        self.ok(&["run", "-d", &self.id], None);
        let (status, _) = self.state();
        assert_eq!(status, "running");
        wait_counting(self, 0);
    }

    /// runc's status and the container's init pid (as this process sees it).
    pub fn state(&self) -> (String, i32) {
        let o = self.ok(&["state", &self.id], None);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("runc state json");
        (
            v["status"].as_str().unwrap_or("").to_string(),
            v["pid"].as_i64().unwrap_or(0) as i32,
        )
    }

    /// The numbers counted into `/count` so far.
    pub fn counts(&self) -> Vec<u64> {
        std::fs::read_to_string(self.bundle().join("rootfs/count"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect()
    }

    /// Paths of round `round`'s images and criu work dir, and the work dir's name.
    pub fn round_dirs(&self, round: usize) -> (PathBuf, PathBuf, String) {
        let work = format!("work{round}");
        (
            self.dir.path().join(format!("img{round}")),
            self.dir.path().join(&work),
            work,
        )
    }

    /// `runc checkpoint --image-path IMG --work-path WORK EXTRA ID` for round `round`. Unless
    /// `--leave-running` is in `extra`, the container's processes (ours: the test is a
    /// subreaper and runc has exited) are reaped while it runs: runc waits for the container's
    /// cgroup to empty, and a zombie stays in it. Returns how long runc took.
    pub fn checkpoint(&self, round: usize, extra: &[&str]) -> Duration {
        let (img, work, wname) = self.round_dirs(round);
        let (_, pid) = self.state();
        let leave = extra.contains(&"--leave-running");
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let reaper = (!leave).then(|| std::thread::spawn(move || reap_until(pid, &flag)));
        let mut args = vec![
            "checkpoint",
            "--image-path",
            img.to_str().expect("utf-8 path"),
            "--work-path",
            work.to_str().expect("utf-8 path"),
        ];
        args.extend_from_slice(extra);
        args.push(&self.id);
        let t0 = Instant::now();
        let o = self.runc(&args);
        let took = t0.elapsed();
        done.store(true, Ordering::SeqCst);
        if let Some(r) = reaper {
            let _ = r.join();
        }
        if !o.status.success() {
            panic!(
                "runc checkpoint: {}\n{}\ncriu log (last lines, reversed):\n{}",
                o.status,
                String::from_utf8_lossy(&o.stderr),
                self.criu_logs(&wname)
            );
        }
        assert!(
            img.join("inventory.img").exists(),
            "no images after runc checkpoint"
        );
        took
    }

    /// `runc restore -d --image-path IMG --work-path WORK --bundle B EXTRA ID` for round
    /// `round`; checks that runc says running and that the init is the same task (the same pid
    /// when the container shares our pid namespace, pid 1 of a new one otherwise). Returns how
    /// long runc took.
    pub fn restore(&self, round: usize, old_pid: i32, extra: &[&str]) -> Duration {
        self.restore_with(round, old_pid, extra, |_| {})
    }

    /// [`Container::restore`] with a last change to the runc command.
    pub fn restore_with(
        &self,
        round: usize,
        old_pid: i32,
        extra: &[&str],
        cmd: impl FnOnce(&mut Command),
    ) -> Duration {
        let (img, work, wname) = self.round_dirs(round);
        let bundle = self.bundle();
        let mut args = vec![
            "restore",
            "-d",
            "--image-path",
            img.to_str().expect("utf-8 path"),
            "--work-path",
            work.to_str().expect("utf-8 path"),
            "--bundle",
            bundle.to_str().expect("utf-8 path"),
        ];
        args.extend_from_slice(extra);
        args.push(&self.id);
        let t0 = Instant::now();
        self.ok_with(&args, Some(&wname), cmd);
        let took = t0.elapsed();
        let (status, restored) = self.state();
        assert_eq!(status, "running", "round {round}");
        if self.pid_ns {
            let status =
                std::fs::read_to_string(format!("/proc/{restored}/status")).unwrap_or_default();
            let nspid = status
                .lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .unwrap_or("");
            assert_eq!(
                nspid.split_whitespace().last(),
                Some("1"),
                "round {round}: the restored init is not pid 1 of its namespace ({nspid})"
            );
        } else {
            assert_eq!(
                restored, old_pid,
                "round {round}: the container's pid changed"
            );
        }
        took
    }

    /// `runc kill --all ID KILL`, reaps what dies (ours: this process is the subreaper), then
    /// `runc delete ID`.
    pub fn kill_and_delete(&self) {
        let (_, pid) = self.state();
        self.ok(&["kill", "--all", &self.id, "KILL"], None);
        reap_until(pid, &AtomicBool::new(true));
        self.ok(&["delete", &self.id], None);
    }

    /// One checkpoint (killing the container) and restore of a counting container: the count
    /// carries on from where it was, unbroken.
    /// Returns how long runc took to checkpoint and to restore.
    pub fn round_trip(
        &self,
        round: usize,
        ckpt_extra: &[&str],
        restore_extra: &[&str],
    ) -> (Duration, Duration) {
        let (_, pid) = self.state();
        let ckpt = self.checkpoint(round, ckpt_extra);
        let at_dump = self.counts().len();
        assert!(at_dump > 0);
        let rst = self.restore(round, pid, restore_extra);
        wait_counting(self, at_dump);
        assert_unbroken(self);
        (ckpt, rst)
    }
}

/// Reaps every zombie child of ours (the container's init and its children, reparented to this
/// subreaper) until `done`, then waits for `pid` (5 s at most) and for the late ones (until this
/// process has no children left, 5 s at most).
pub fn reap_until(pid: i32, done: &AtomicBool) {
    let me = std::process::id().to_string();
    // Reaps the zombie children of ours; says how many children (alive or not) there were.
    let sweep = || {
        let mut children = 0;
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let rest = stat.rsplit_once(") ").map(|x| x.1).unwrap_or("");
            let f: Vec<&str> = rest.split(' ').collect();
            if f.get(1) != Some(&me.as_str()) {
                continue;
            }
            children += 1;
            if f.first() == Some(&"Z")
                && let Ok(z) = e.file_name().to_string_lossy().parse::<i32>()
            {
                let _ = wait_exit_timeout(z, Duration::from_millis(10));
            }
        }
        children
    };
    while !done.load(Ordering::SeqCst) {
        sweep();
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = wait_exit_timeout(pid, Duration::from_secs(5));
    // The container's other processes, killed by the dump, reach us (the subreaper) as zombies
    // a little later: their pids must be free before the restore asks for them.
    for _ in 0..250 {
        if sweep() == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let pid = self.runc(&["state", &self.id]).stdout;
        let pid = serde_json::from_slice::<serde_json::Value>(&pid)
            .ok()
            .and_then(|v| v["pid"].as_i64())
            .unwrap_or(0) as i32;
        let reaper = (pid > 0)
            .then(|| std::thread::spawn(move || wait_exit_timeout(pid, Duration::from_secs(10))));
        let _ = self.runc(&["kill", &self.id, "KILL"]);
        let _ = self.runc(&["delete", "-f", &self.id]);
        if let Some(r) = reaper {
            let _ = r.join();
        }
    }
}

/// The mount yards criu leaves in /tmp (none, when all is well).
pub fn yards() -> usize {
    std::fs::read_dir("/tmp")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with(".criu.mntns."))
                .count()
        })
        .unwrap_or(0)
}

/// Runs container `c`, checkpoints and restores it twice, and checks that criu left nothing
/// behind.
pub fn twice(c: Container) {
    let before = yards();
    let ours = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    c.run();
    c.round_trip(0, &[], &[]);
    c.round_trip(1, &[], &[]);
    assert_eq!(yards(), before, "a mount yard was left in /tmp");
    assert_eq!(
        std::fs::read_to_string("/proc/self/mountinfo").unwrap(),
        ours,
        "criu's mount namespace changed"
    );
    drop(c);
}

/// Waits until the count has gone 10 past `past`; panics after 2 s.
pub fn wait_counting(c: &Container, past: usize) {
    for _ in 0..100 {
        if c.counts().len() > past + 10 {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the count did not go on past {past}");
}

/// Asserts the count is 1, 2, 3, ... with nothing missing or repeated.
pub fn assert_unbroken(c: &Container) {
    let n = c.counts();
    for (i, v) in n.iter().enumerate() {
        assert_eq!(*v, i as u64 + 1, "the count is broken at line {}", i + 1);
    }
}
