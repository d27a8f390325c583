//! criu test victim: a tree in a cgroup the test made.
//!
//! `criu-victim-ns-cgroup READY PROCS CGROUP` writes itself into PROCS (the `cgroup.procs` of
//! the v2 cgroup the test made), forks a child (which starts there too) and writes
//! `ready PID CHILD` into READY. On SIGUSR1 it checks that it and its child are in CGROUP (the
//! v2 line `0::CGROUP` of `/proc/PID/cgroup`) and writes `check ok` or `check bad: WHY` into
//! READY.2.

use std::sync::atomic::{AtomicBool, Ordering};

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

fn v2_cgroup(pid: u32) -> Result<String, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).map_err(|e| e.to_string())?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
        .ok_or_else(|| format!("no v2 line for {pid}"))
}

fn check(cgroup: &str, child: u32) -> Result<(), String> {
    for p in [std::process::id(), child] {
        let got = v2_cgroup(p)?;
        if got != cgroup {
            return Err(format!("{p} is in {got}, not {cgroup}"));
        }
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: criu-victim-ns-cgroup READY PROCS CGROUP");
        std::process::exit(2);
    }
    let (ready, procs, cgroup) = (&args[1], &args[2], &args[3]);
    std::fs::write(procs, "0").expect("join the cgroup");
    // SAFETY: the child only sleeps until it is killed.
    let child = unsafe { libc::fork() };
    if child == 0 {
        loop {
            // SAFETY: pause has no arguments.
            unsafe { libc::pause() };
        }
    }
    // SAFETY: installs an async-signal-safe handler that only stores an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let t = format!("{ready}.tmp");
    std::fs::write(&t, format!("ready {} {child}", std::process::id())).unwrap();
    std::fs::rename(&t, ready).unwrap();
    loop {
        if GO.swap(false, Ordering::SeqCst) {
            let verdict = match check(cgroup, child as u32) {
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
