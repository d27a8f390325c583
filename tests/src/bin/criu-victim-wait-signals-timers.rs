//! Dump victim: a session leader blocked in `waitpid` for one child, with a zombie child next
//! to it and signals and timers on both processes.
//!
//! The root becomes a session leader, arms `ITIMER_REAL` (1000 s, interval 1000 s), and leaves a
//! blocked `SIGUSR1` pending on the process. Child B leads its own process group and exits 5
//! (a zombie: nobody waits for it). Child A arms `ITIMER_REAL` (500 s) and leaves a blocked
//! `SIGUSR2` pending on its thread, then sleeps. Once B is a zombie the root writes
//! `ready ROOT A B` to the file given as the first argument and blocks in `waitpid(A)`; when that
//! returns it appends `reaped A STATUS` and exits 0.

use std::io::Write;

fn block(sig: i32) {
    // SAFETY: a zeroed sigset_t is a valid value for sigemptyset/sigaddset to fill in.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a valid sigset_t owned by this frame.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

fn itimer(secs: i64) {
    let t = libc::itimerval {
        it_interval: libc::timeval {
            tv_sec: secs,
            tv_usec: 0,
        },
        it_value: libc::timeval {
            tv_sec: secs,
            tv_usec: 0,
        },
    };
    // SAFETY: t is a valid itimerval; the old value is not asked for.
    unsafe { libc::setitimer(libc::ITIMER_REAL, &t, std::ptr::null_mut()) };
}

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: criu-victim-wait-signals-timers READY_FILE");
        std::process::exit(2);
    };
    // SAFETY: setsid has no memory-safety preconditions.
    unsafe { libc::setsid() };
    // SAFETY: fork in a single-threaded process.
    let b = unsafe { libc::fork() };
    if b == 0 {
        // SAFETY: the child makes only async-signal-safe calls.
        unsafe {
            libc::setpgid(0, 0);
            libc::_exit(5);
        }
    }
    // SAFETY: fork in a single-threaded process.
    let a = unsafe { libc::fork() };
    if a == 0 {
        itimer(500);
        block(libc::SIGUSR2);
        // SAFETY: signals this very thread.
        unsafe {
            libc::syscall(
                libc::SYS_tgkill,
                libc::getpid(),
                libc::gettid(),
                libc::SIGUSR2,
            )
        };
        loop {
            // SAFETY: pause only sleeps.
            unsafe { libc::pause() };
        }
    }
    if a < 0 || b < 0 {
        std::process::exit(4);
    }
    itimer(1000);
    block(libc::SIGUSR1);
    // SAFETY: signals this process.
    unsafe { libc::kill(libc::getpid(), libc::SIGUSR1) };
    // B is a zombie once waitid with WNOWAIT sees it exit (it stays unreaped).
    // SAFETY: a zeroed siginfo_t is valid for waitid to fill in.
    let mut si: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waits for B only, without reaping it.
    if unsafe {
        libc::waitid(
            libc::P_PID,
            b as u32,
            &mut si,
            libc::WEXITED | libc::WNOWAIT,
        )
    } != 0
    {
        std::process::exit(4);
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("ready file");
    let _ = writeln!(f, "ready {} {a} {b}", std::process::id());
    let mut st = 0;
    // SAFETY: waits for A only.
    let w = unsafe { libc::waitpid(a, &mut st, 0) };
    let _ = writeln!(f, "reaped {w} {st}");
    std::process::exit(0);
}
