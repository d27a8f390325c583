//! criu restore victim: a session leader blocked in `waitpid` for one child, next to a zombie
//! child it reaps afterwards.
//!
//! `criu-victim-zombie-wait READY RESULT`: the root calls `setsid()` and forks child Z, which exits
//! with status 5 at once, and child W, which sleeps until `SIGUSR2` and then exits with status 9.
//! Once Z is a zombie the root writes `ready ROOT Z W` into READY and blocks in `waitpid(W)`.
//! When that returns it reaps Z with `waitpid(Z)`, appends `reaped W STATUS` and
//! `reaped Z STATUS` (raw wait statuses; `reaped X bad RET ERRNO` if a wait returned something
//! else) to RESULT and exits 0.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr2(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

fn reap(label: &str, pid: i32) -> String {
    let mut st = 0;
    // SAFETY: waits for our own child `pid` only; st is a valid int.
    let r = unsafe { libc::waitpid(pid, &mut st, 0) };
    if r == pid {
        format!("reaped {label} {st}")
    } else {
        format!("reaped {label} bad {r} {}", std::io::Error::last_os_error())
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(ready), Some(result)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: criu-victim-zombie-wait READY RESULT");
        std::process::exit(2);
    };
    // SAFETY: setsid has no memory-safety preconditions.
    if unsafe { libc::setsid() } < 0 {
        eprintln!("setsid: {}", std::io::Error::last_os_error());
        std::process::exit(3);
    }
    // SAFETY: fork in a single-threaded process; the child only calls _exit.
    let z = unsafe { libc::fork() };
    if z == 0 {
        // SAFETY: ends the child at once without running the parent's exit handlers.
        unsafe { libc::_exit(5) };
    }
    // W inherits the handler, installed before it exists (the root never gets SIGUSR2).
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGUSR2, on_usr2 as *const () as libc::sighandler_t);
    }
    // SAFETY: fork in a single-threaded process.
    let w = unsafe { libc::fork() };
    if w == 0 {
        while !GO.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(2));
        }
        // SAFETY: ends the child without running the parent's exit handlers.
        unsafe { libc::_exit(9) };
    }
    if z < 0 || w < 0 {
        eprintln!("fork: {}", std::io::Error::last_os_error());
        std::process::exit(4);
    }
    // Z is a zombie once waitid with WNOWAIT sees it exit (it stays unreaped).
    // SAFETY: a zeroed siginfo_t is valid for waitid to fill in.
    let mut si: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waits for Z only, without reaping it; si is a valid siginfo_t.
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            z as libc::id_t,
            &mut si,
            libc::WEXITED | libc::WNOWAIT,
        )
    };
    if r != 0 {
        std::process::exit(4);
    }
    let tmp = format!("{ready}.tmp");
    std::fs::write(&tmp, format!("ready {} {z} {w}", std::process::id())).expect("ready");
    std::fs::rename(&tmp, ready).expect("ready");
    let first = reap("W", w);
    let second = reap("Z", z);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(result)
        .expect("result file");
    let _ = f.write_all(format!("{first}\n{second}\n").as_bytes());
    std::process::exit(0);
}
