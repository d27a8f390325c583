//! criu test victim: file leases.
//!
//! `criu-victim-lease OUT READY DIR` opens `DIR/read` read-only with a read lease, `DIR/write`
//! read-write with a write lease and `DIR/broken` read-only with a read lease (for the test to
//! break: it opens the file for writing without blocking), ignores SIGIO (so a break does not
//! end it), and writes `ready PID` into READY. On SIGUSR1 it checks the leases (`F_GETLEASE`:
//! read, write; the third either still a read lease, or being broken, which fdinfo shows as
//! `BREAKING`, going to none) and writes `ok [broken]` or `bad: WHY` into OUT.

use std::sync::atomic::{AtomicBool, Ordering};

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

fn open(path: &str, flags: i32, lease: i32) -> i32 {
    let c = std::ffi::CString::new(path).unwrap();
    // SAFETY: open with a NUL-terminated path; fcntl on the new descriptor.
    unsafe {
        let fd = libc::open(c.as_ptr(), flags | libc::O_CREAT, 0o644);
        assert!(fd >= 0, "open {path}: {}", std::io::Error::last_os_error());
        assert_eq!(
            libc::fcntl(fd, libc::F_SETLEASE, lease),
            0,
            "F_SETLEASE on {path}: {}",
            std::io::Error::last_os_error()
        );
        fd
    }
}

fn lease(fd: i32) -> i32 {
    // SAFETY: fcntl query on our own descriptor.
    unsafe { libc::fcntl(fd, libc::F_GETLEASE) }
}

fn check(r: i32, w: i32, b: i32) -> Result<&'static str, String> {
    if lease(r) != libc::F_RDLCK {
        return Err(format!("read lease is {}", lease(r)));
    }
    if lease(w) != libc::F_WRLCK {
        return Err(format!("write lease is {}", lease(w)));
    }
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{b}")).unwrap_or_default();
    let line = info.lines().find(|l| l.contains("LEASE")).unwrap_or("");
    match (lease(b), line.contains("BREAKING")) {
        (t, false) if t == libc::F_RDLCK => Ok("ok"),
        (t, true) if t == libc::F_UNLCK => Ok("ok broken"),
        (t, _) => Err(format!("third lease is {t}, fdinfo {line:?}")),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: criu-victim-lease OUT READY DIR");
        std::process::exit(2);
    }
    let (out, ready, dir) = (&args[1], &args[2], &args[3]);
    // SAFETY: ignoring SIGIO (the lease-break signal) and installing an async-signal-safe
    // handler that only stores an atomic.
    unsafe {
        libc::signal(libc::SIGIO, libc::SIG_IGN);
        libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t);
    }
    let r = open(&format!("{dir}/read"), libc::O_RDONLY, libc::F_RDLCK);
    let w = open(&format!("{dir}/write"), libc::O_RDWR, libc::F_WRLCK);
    let b = open(&format!("{dir}/broken"), libc::O_RDONLY, libc::F_RDLCK);
    let tmp = format!("{ready}.tmp");
    std::fs::write(&tmp, format!("ready {}", std::process::id())).unwrap();
    std::fs::rename(&tmp, ready).unwrap();
    loop {
        if GO.swap(false, Ordering::SeqCst) {
            let verdict = match check(r, w, b) {
                Ok(v) => v.to_string(),
                Err(e) => format!("bad: {e}"),
            };
            let tmp = format!("{out}.tmp");
            std::fs::write(&tmp, verdict).unwrap();
            std::fs::rename(&tmp, out).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
