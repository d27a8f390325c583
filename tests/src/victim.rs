//! The parts test victims share: the SIGUSR1 "check yourself now" signal, publishing a file
//! atomically (`ready PID`, the verdict), and a session whose terminal is a pty of its own with
//! the ping/pong exchange that shows the terminal still works. A victim binary that waits for
//! its check calls [`serve_checks`] with its own check.

// Unsafe code: signal handlers, pty and session calls, poll/read/write on the victim's own fds.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

/// Makes SIGUSR1 ask for a check (see [`serve_checks`]).
pub fn take_check_signal() {
    // SAFETY: installs a handler that only stores an atomic (async-signal-safe).
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
}

/// Writes `text` into `path` through a temporary file renamed over it, so a reader never sees
/// half of it.
pub fn publish(path: &str, text: &str) {
    let tmp = format!("{path}.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Runs `check` each time SIGUSR1 arrives and publishes `ok` or `bad: WHY` into `out`; never
/// returns. [`take_check_signal`] must have been called before the victim said it was ready.
pub fn serve_checks(out: &str, mut check: impl FnMut() -> Result<(), String>) -> ! {
    loop {
        if GO.swap(false, Ordering::SeqCst) {
            let verdict = match check() {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("bad: {e}"),
            };
            publish(out, &verdict);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What can be read from `fd` within 2 s (empty if nothing came).
pub fn read_some(fd: i32) -> Vec<u8> {
    let mut buf = [0u8; 256];
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one live pollfd; read into a live local buffer of its length.
    unsafe {
        if libc::poll(&mut pfd, 1, 2000) != 1 {
            return Vec::new();
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        buf[..n.max(0) as usize].to_vec()
    }
}

/// Writes `b` to `fd` (one call: the test's messages are short).
pub fn write_fd(fd: i32, b: &[u8]) {
    // SAFETY: write reads b.len() bytes from a live slice.
    unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) };
}

/// Starts a session whose controlling terminal is a new pty; returns (master, slave).
///
/// # Panics
/// If any step fails (a victim's set-up, before it says it is ready).
pub fn session_with_pty() -> (i32, i32) {
    // SAFETY: session and pty calls with plain values; ptsname's string is copied at once.
    unsafe {
        assert!(libc::setsid() > 0, "setsid");
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(
            m >= 0 && libc::grantpt(m) == 0 && libc::unlockpt(m) == 0,
            "openpt"
        );
        let name = std::ffi::CStr::from_ptr(libc::ptsname(m)).to_owned();
        let s = libc::open(name.as_ptr(), libc::O_RDWR);
        assert!(s >= 0, "open the slave");
        assert_eq!(libc::ioctl(s, libc::TIOCSCTTY, 0), 0, "TIOCSCTTY");
        (m, s)
    }
}

/// Shows the terminal works both ways: a line written to `master` is read from `tty`, and
/// "pong" written to `tty_out` comes out of the master (after the echo of the line).
pub fn ping_pong(master: i32, tty: i32, tty_out: i32) -> Result<(), String> {
    write_fd(master, b"ping\n");
    let got = read_some(tty);
    if got != b"ping\n" {
        return Err(format!("read {got:?} from the terminal"));
    }
    let mut seen = Vec::new();
    write_fd(tty_out, b"pong");
    while !seen.windows(4).any(|w| w == b"pong") {
        let more = read_some(master);
        if more.is_empty() {
            return Err(format!("the master read {seen:?}"));
        }
        seen.extend(more);
    }
    Ok(())
}
