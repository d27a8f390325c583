//! Victim: a program with its own `SIGTRAP` handler (debuggers' breakpoints, JITs and sanitizers
//! install one) that raises `SIGTRAP` on request.
//!
//! Prints `ready PID`, then reads lines from stdin: for each `trap` it calls `raise(SIGTRAP)`
//! and prints `trapped N` (N = how often its handler has run so far). If the handler was reset
//! to `SIG_DFL` meanwhile, `raise` kills it with `SIGTRAP` instead. Exits 0 at end of input.

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicU32, Ordering};

static RAN: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_trap(_sig: libc::c_int) {
    RAN.fetch_add(1, Ordering::SeqCst);
}

fn main() {
    // SAFETY: a zeroed sigaction with a valid handler and an empty mask is a valid argument;
    // the handler only touches an atomic.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_trap as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGTRAP, &sa, std::ptr::null_mut()), 0);
    }
    let mut out = std::io::stdout();
    writeln!(out, "ready {}", std::process::id()).unwrap();
    out.flush().unwrap();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line == "trap" {
            // SAFETY: raise only sends a signal to this thread.
            unsafe { libc::raise(libc::SIGTRAP) };
            writeln!(out, "trapped {}", RAN.load(Ordering::SeqCst)).unwrap();
            out.flush().unwrap();
        }
    }
}
