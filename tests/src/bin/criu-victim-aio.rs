//! criu test victim: an AIO context (`io_setup`), whose ring is mapped in the task.
//!
//! `criu-victim-aio OUT READY` sets up an AIO context for 8 requests. Writes `ready PID` into
//! READY. On SIGUSR1 it checks that the context still answers (`io_getevents` without
//! waiting finds nothing) and writes `ok` or `bad: WHY` into OUT.

use std::sync::atomic::{AtomicBool, Ordering};

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: criu-victim-aio OUT READY");
        std::process::exit(2);
    }
    let (out, ready) = (&args[1], &args[2]);
    let mut ctx: libc::c_ulong = 0;
    // SAFETY: io_setup writes one aio_context_t into a live local.
    let r = unsafe { libc::syscall(libc::SYS_io_setup, 8, &mut ctx as *mut libc::c_ulong) };
    assert_eq!(r, 0, "io_setup: {}", std::io::Error::last_os_error());
    // SAFETY: installs an async-signal-safe handler that only stores an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let tmp = format!("{ready}.tmp");
    std::fs::write(&tmp, format!("ready {}", std::process::id())).unwrap();
    std::fs::rename(&tmp, ready).unwrap();
    loop {
        if GO.swap(false, Ordering::SeqCst) {
            let zero = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            let mut ev = [0u64; 4 * 8];
            // SAFETY: io_getevents writes at most 8 io_event (32 bytes each) into a live
            // buffer of that size, reading a live timespec.
            let n =
                unsafe { libc::syscall(libc::SYS_io_getevents, ctx, 0, 8, ev.as_mut_ptr(), &zero) };
            let verdict = if n == 0 {
                "ok".to_string()
            } else {
                format!(
                    "bad: io_getevents: {n} ({})",
                    std::io::Error::last_os_error()
                )
            };
            let tmp = format!("{out}.tmp");
            std::fs::write(&tmp, verdict).unwrap();
            std::fs::rename(&tmp, out).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
