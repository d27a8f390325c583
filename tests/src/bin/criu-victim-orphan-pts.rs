//! criu test victim: a pty slave whose master is outside the tree.
//!
//! `criu-victim-orphan-pts OUT READY SLAVE` opens the pty slave SLAVE (`/dev/pts/N`, whose
//! master the caller holds). Writes `ready PID` into READY. On SIGUSR1 it checks that its
//! descriptor is a pty slave, reads a line from it (waiting up to 5 s), answers "pong" on it
//! and writes `ok PATH` (the slave it holds now) or `bad: WHY` into OUT.

use std::sync::atomic::{AtomicBool, Ordering};

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

fn check(fd: i32) -> Result<String, String> {
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    if !link.starts_with("/dev/pts/") {
        return Err(format!("fd {fd} links to {link:?}"));
    }
    let mut buf = [0u8; 64];
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one live pollfd; read into a live local buffer.
    let n = unsafe {
        if libc::poll(&mut pfd, 1, 5000) != 1 {
            return Err("nothing to read from the slave".into());
        }
        libc::read(fd, buf.as_mut_ptr().cast(), buf.len())
    };
    let got = &buf[..n.max(0) as usize];
    if got != b"ping\n" {
        return Err(format!("read {:?}", String::from_utf8_lossy(got)));
    }
    // SAFETY: writes from a live literal.
    unsafe { libc::write(fd, b"pong\n".as_ptr().cast(), 5) };
    Ok(link)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: criu-victim-orphan-pts OUT READY SLAVE");
        std::process::exit(2);
    }
    let (out, ready) = (&args[1], &args[2]);
    let c = std::ffi::CString::new(args[3].as_str()).unwrap();
    // SAFETY: open with a NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_NOCTTY) };
    assert!(
        fd >= 0,
        "open {}: {}",
        args[3],
        std::io::Error::last_os_error()
    );
    // SAFETY: installs an async-signal-safe handler that only stores an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let tmp = format!("{ready}.tmp");
    std::fs::write(&tmp, format!("ready {}", std::process::id())).unwrap();
    std::fs::rename(&tmp, ready).unwrap();
    loop {
        if GO.swap(false, Ordering::SeqCst) {
            let verdict = match check(fd) {
                Ok(p) => format!("ok {p}"),
                Err(e) => format!("bad: {e}"),
            };
            let tmp = format!("{out}.tmp");
            std::fs::write(&tmp, verdict).unwrap();
            std::fs::rename(&tmp, out).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
