//! The real client: runc (Debian's `runc`, a busybox root from `busybox-static`) checkpoints
//! and restores a container with this criu (`runc --criu PATH`). The container counts into a
//! file of its root; after `runc checkpoint` and `runc restore -d` the count carries on, `runc
//! state` says running, and a second checkpoint and restore of the restored container works
//! too. The container has its own mount and network namespaces (runc's default mounts: proc,
//! a tmpfs /dev with devpts, shm and mqueue, a read-only sysfs with the cgroup hierarchies
//! bound in, masked and read-only paths). runc's state lives under the test's temporary
//! directory; the container, its cgroups and mounts are deleted whatever happens.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use compel_criu_tests::{become_subreaper, criu_bin, is_root, test_lock, wait_exit_timeout};

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A container of the test's own: `runc --root STATE ... ID`, removed on drop.
struct Container {
    dir: tempfile::TempDir,
    id: String,
}

impl Container {
    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn bundle(&self) -> PathBuf {
        self.dir.path().join("bundle")
    }

    /// `runc --root STATE --log LOG ARGS`, every stdio on /dev/null (the container inherits
    /// them on `run -d`).
    fn runc(&self, args: &[&str]) -> Output {
        let log = self.dir.path().join("runc.log");
        let out = self.dir.path().join("runc.out");
        let _ = std::fs::remove_file(&log);
        let o = Command::new("runc")
            .arg("--root")
            .arg(self.state_dir())
            .arg("--log")
            .arg(&log)
            .arg("--criu")
            .arg(criu_bin())
            .args(args)
            .current_dir(self.bundle())
            .stdin(Stdio::null())
            // A file, not a pipe: `run -d` hands runc's stdio to the container, which would
            // hold a pipe open for good.
            .stdout(if args.first() == Some(&"run") {
                // The container's own stdout: /dev/null, which it finds again after a restore.
                Stdio::null()
            } else {
                Stdio::from(std::fs::File::create(&out).expect("runc output file"))
            })
            .stderr(Stdio::null())
            .spawn()
            .expect("run runc");
        // A runc that hangs fails the test (and is killed) instead of hanging it.
        let pid = o.id() as i32;
        let watchdog = std::thread::spawn(move || {
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
        let mut o = o.wait_with_output().expect("wait for runc");
        let _ = watchdog;
        o.stdout = std::fs::read(&out).unwrap_or_default();
        o.stderr = std::fs::read(&log).unwrap_or_default();
        o
    }

    fn ok(&self, args: &[&str], work: Option<&str>) -> Output {
        let o = self.runc(args);
        if !o.status.success() {
            let log = work
                .map(|w| {
                    let w = self.dir.path().join(w);
                    let l = ["restore.log", "dump.log"]
                        .iter()
                        .map(|f| std::fs::read_to_string(w.join(f)).unwrap_or_default())
                        .collect::<Vec<_>>();
                    l.iter()
                        .map(|l| l.lines().rev().take(15).collect::<Vec<_>>().join("\n"))
                        .collect::<Vec<_>>()
                        .join("\n---\n")
                })
                .unwrap_or_default();
            panic!(
                "runc {args:?}: {}\n{}\ncriu log (last lines, reversed):\n{log}",
                o.status,
                String::from_utf8_lossy(&o.stderr)
            );
        }
        o
    }

    fn state(&self) -> (String, i32) {
        let o = self.ok(&["state", &self.id], None);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("runc state json");
        (
            v["status"].as_str().unwrap_or("").to_string(),
            v["pid"].as_i64().unwrap_or(0) as i32,
        )
    }

    fn counts(&self) -> Vec<u64> {
        std::fs::read_to_string(self.bundle().join("rootfs/count"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect()
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

/// A bundle with a busybox root whose only process counts into /count.
fn make_container() -> Container {
    let dir = tempfile::tempdir().unwrap();
    let c = Container {
        id: format!("criu-test-{}", std::process::id()),
        dir,
    };
    let bin = c.bundle().join("rootfs/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(c.state_dir()).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    for a in ["sh", "sleep"] {
        std::os::unix::fs::symlink("busybox", bin.join(a)).unwrap();
    }
    c.ok(&["spec"], None);
    let path = c.bundle().join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    v["process"]["terminal"] = false.into();
    v["process"]["args"] = serde_json::json!([
        "/bin/sh",
        "-c",
        "i=0; while :; do i=$((i+1)); echo $i >> /count; sleep 0.02; done"
    ]);
    v["root"]["readonly"] = false.into();
    // The namespaces this criu brings back: all of runc's default ones but pid.
    if let Some(ns) = v["linux"]["namespaces"].as_array_mut() {
        ns.retain(|n| {
            matches!(
                n["type"].as_str(),
                Some("mount" | "network" | "uts" | "ipc")
            )
        });
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    c
}

fn wait_counting(c: &Container, past: usize) {
    for _ in 0..100 {
        if c.counts().len() > past + 10 {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the count did not go on past {past}");
}

fn assert_unbroken(c: &Container) {
    let n = c.counts();
    for (i, v) in n.iter().enumerate() {
        assert_eq!(*v, i as u64 + 1, "the count is broken at line {}", i + 1);
    }
}

fn checkpoint_restore(c: &Container, round: usize) {
    let (_, pid) = c.state();
    let img = format!("img{round}");
    let work = format!("work{round}");
    let (img_p, work_p) = (c.dir.path().join(&img), c.dir.path().join(&work));
    // The container process is ours (the test is a subreaper and runc has exited): reaped
    // while runc checkpoint runs, which waits for the container's cgroup to empty (a zombie
    // stays in it) before it returns.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    let reaper = std::thread::spawn(move || {
        // Every zombie child of ours (the container's init and its children, reparented to
        // this subreaper), until runc is done.
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
        while !flag.load(std::sync::atomic::Ordering::SeqCst) {
            sweep();
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = wait_exit_timeout(pid, Duration::from_secs(5));
        // The container's other processes, killed by the dump, reach us (the subreaper) as
        // zombies a little later: their pids must be free before the restore asks for them.
        for _ in 0..250 {
            if sweep() == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    c.ok(
        &[
            "checkpoint",
            "--image-path",
            img_p.to_str().unwrap(),
            "--work-path",
            work_p.to_str().unwrap(),
            &c.id,
        ],
        Some(&work),
    );
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = reaper.join();
    let at_dump = c.counts().len();
    assert!(at_dump > 0);
    assert!(
        Path::new(&img_p).join("inventory.img").exists(),
        "no images after runc checkpoint"
    );
    let bundle = c.bundle();
    c.ok(
        &[
            "restore",
            "-d",
            "--image-path",
            img_p.to_str().unwrap(),
            "--work-path",
            work_p.to_str().unwrap(),
            "--bundle",
            bundle.to_str().unwrap(),
            &c.id,
        ],
        Some(&work),
    );
    let (status, restored) = c.state();
    assert_eq!(status, "running", "round {round}");
    assert_eq!(restored, pid, "round {round}: the container's pid changed");
    wait_counting(c, at_dump);
    assert_unbroken(c);
}

#[test]
fn runc_checkpoint_and_restore_with_this_criu_twice() {
    if !is_root() || !have("runc") || !Path::new("/bin/busybox").exists() {
        eprintln!("skipped: needs root, runc and busybox-static (.ci/test installs them)");
        return;
    }
    let _g = test_lock();
    become_subreaper();
    let yards = || {
        std::fs::read_dir("/tmp")
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(".criu.mntns."))
            .count()
    };
    let before = yards();
    let ours = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let c = make_container();
    c.ok(&["run", "-d", &c.id], None);
    let (status, _) = c.state();
    assert_eq!(status, "running");
    wait_counting(&c, 0);
    checkpoint_restore(&c, 0);
    checkpoint_restore(&c, 1);
    assert_eq!(yards(), before, "a mount yard was left in /tmp");
    assert_eq!(
        std::fs::read_to_string("/proc/self/mountinfo").unwrap(),
        ours,
        "criu's mount namespace changed"
    );
    drop(c);
}
