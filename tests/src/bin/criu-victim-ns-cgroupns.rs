//! criu test victim: a tree in a cgroup namespace of its own.
//!
//! `criu-victim-ns-cgroupns READY ROOT OUTER` writes itself into ROOT (a v2 cgroup directory
//! the test made, with a `sub` directory), unshares its cgroup namespace there (the
//! namespace's root is ROOT), moves into ROOT/sub, forks a child (which starts there too) and
//! writes `ready PID CHILD` into READY. On SIGUSR1 it checks that its cgroup namespace is not
//! OUTER (the inode of the test's), that `/proc/self/cgroup` and the child's read as they did
//! before (the v2 line `0::/sub`), and writes `check ok` or `check bad: WHY` into READY.2.
//!
//! Exits 3 if the namespace cannot be made.

use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

fn read(pid: i32) -> Result<String, String> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).map_err(|e| e.to_string())
}

fn check(outer: u64, child: i32, before: &str) -> Result<(), String> {
    let ino = std::fs::metadata("/proc/self/ns/cgroup")
        .map_err(|e| e.to_string())?
        .ino();
    if ino == outer {
        return Err("in the test's cgroup namespace".into());
    }
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    for p in [me, child] {
        let now = read(p)?;
        if now != before {
            return Err(format!(
                "{p}: /proc/PID/cgroup reads {now:?}, was {before:?}"
            ));
        }
    }
    if !before.lines().any(|l| l == "0::/sub") {
        return Err(format!("no 0::/sub line in {before:?}"));
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: criu-victim-ns-cgroupns READY ROOT OUTER");
        std::process::exit(2);
    }
    let (ready, root) = (&args[1], std::path::Path::new(&args[2]));
    let outer: u64 = args[3].parse().expect("OUTER");
    std::fs::write(root.join("cgroup.procs"), "0").expect("join the cgroup");
    // SAFETY: unshare of this single-threaded process's own cgroup namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWCGROUP) } != 0 {
        eprintln!(
            "unshare(CLONE_NEWCGROUP): {}",
            std::io::Error::last_os_error()
        );
        std::process::exit(3);
    }
    std::fs::write(root.join("sub/cgroup.procs"), "0").expect("join sub");
    // SAFETY: getpid has no preconditions.
    let before = read(unsafe { libc::getpid() }).unwrap();
    // SAFETY: the child only sleeps until it is killed.
    let child = unsafe { libc::fork() };
    if child == 0 {
        loop {
            // SAFETY: pause has no arguments.
            unsafe { libc::pause() };
        }
    }
    // SAFETY: installing a handler that only stores into an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let t = format!("{ready}.tmp");
    std::fs::write(&t, format!("ready {} {child}", std::process::id())).unwrap();
    std::fs::rename(&t, ready).unwrap();
    loop {
        if GO.swap(false, Ordering::SeqCst) {
            let verdict = match check(outer, child, &before) {
                Ok(()) => "check ok".to_string(),
                Err(e) => format!("check bad: {e}"),
            };
            let out = format!("{ready}.2");
            let t = format!("{out}.tmp");
            std::fs::write(&t, verdict).unwrap();
            std::fs::rename(&t, out).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
