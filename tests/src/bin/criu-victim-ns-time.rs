//! criu test victim: a tree in a time namespace of its own.
//!
//! `criu-victim-ns-time READY OUTER` makes a time namespace for its children
//! (`unshare(CLONE_NEWTIME)`) with the monotonic and boot-time clocks ten days ahead, and forks
//! the victim proper into it, then exits (the victim is handed to the test, a subreaper). The
//! victim forks a child sharing the namespace and writes `ready PID CHILD MONO_S` into READY
//! (its monotonic clock in seconds). On SIGUSR1 it checks that both clocks are still at least
//! ten days and that the monotonic clock went on from where it was (not back, and not more
//! than ten minutes ahead), that its namespace is not OUTER (the inode of the test's) and that
//! the child is in it, and writes `check ok` or `check bad: WHY` into READY.2.
//!
//! Exits 3 if the namespace cannot be made.

use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

const AHEAD: i64 = 10 * 86_400;

fn clock(id: libc::clockid_t) -> i64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `t`, which we own.
    unsafe { libc::clock_gettime(id, &mut t) };
    t.tv_sec
}

fn ino(path: &str) -> Result<u64, String> {
    std::fs::metadata(path)
        .map(|m| m.ino())
        .map_err(|e| format!("{path}: {e}"))
}

fn check(start: i64, child: i32, outer: u64) -> Result<(), String> {
    let (mono, boot) = (clock(libc::CLOCK_MONOTONIC), clock(libc::CLOCK_BOOTTIME));
    if mono < AHEAD || boot < AHEAD {
        return Err(format!("clocks {mono} s and {boot} s, not ten days ahead"));
    }
    if mono < start || mono > start + 600 {
        return Err(format!("monotonic clock {mono} s, was {start} s"));
    }
    let mine = ino("/proc/self/ns/time")?;
    if mine == outer {
        return Err("back in the test's time namespace".into());
    }
    let theirs = ino(&format!("/proc/{child}/ns/time"))?;
    if theirs != mine {
        return Err(format!(
            "child {child} is in time namespace {theirs}, not {mine}"
        ));
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: criu-victim-ns-time READY OUTER");
        std::process::exit(2);
    }
    let ready = args[1].clone();
    let outer: u64 = args[2].parse().expect("OUTER");
    // SAFETY: unshare changes only which time namespace our future children enter.
    if unsafe { libc::unshare(libc::CLONE_NEWTIME) } != 0 {
        eprintln!(
            "unshare(CLONE_NEWTIME): {}",
            std::io::Error::last_os_error()
        );
        std::process::exit(3);
    }
    let offsets = format!("monotonic {AHEAD} 0\nboottime {AHEAD} 0\n");
    if let Err(e) = std::fs::write("/proc/self/timens_offsets", offsets) {
        eprintln!("timens_offsets: {e}");
        std::process::exit(3);
    }
    // SAFETY: single-threaded; the child runs only its own code below.
    let victim = unsafe { libc::fork() };
    if victim != 0 {
        std::process::exit(i32::from(victim < 0));
    }
    // SAFETY: the child only sleeps until it is killed.
    let child = unsafe { libc::fork() };
    if child == 0 {
        loop {
            // SAFETY: pause has no arguments.
            unsafe { libc::pause() };
        }
    }
    let start = clock(libc::CLOCK_MONOTONIC);
    // SAFETY: installs an async-signal-safe handler that only stores an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let t = format!("{ready}.tmp");
    std::fs::write(&t, format!("ready {} {child} {start}", std::process::id())).unwrap();
    std::fs::rename(&t, &ready).unwrap();
    loop {
        if GO.swap(false, Ordering::SeqCst) {
            let verdict = match check(start, child, outer) {
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
