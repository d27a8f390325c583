//! criu test victim: `/dev/tty`.
//!
//! `criu-victim-devtty OUT READY` starts a session, opens a pty (master and slave; the slave
//! becomes the session's terminal), opens `/dev/tty` and dups it to a second descriptor.
//! Writes `ready PID` into READY. On SIGUSR1 it checks that both descriptors name `/dev/tty`
//! and share one open file, that `/dev/tty` is the pty (its session is ours, a line written
//! to the master is read from it, bytes written to it come out of the master) and writes `ok`
//! or `bad: WHY` into OUT.

use std::sync::atomic::{AtomicBool, Ordering};

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

fn link(fd: i32) -> String {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

fn read_some(fd: i32) -> Vec<u8> {
    let mut buf = [0u8; 256];
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one live pollfd; read into a live local buffer.
    unsafe {
        if libc::poll(&mut pfd, 1, 2000) != 1 {
            return Vec::new();
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        buf[..n.max(0) as usize].to_vec()
    }
}

fn write(fd: i32, b: &[u8]) {
    // SAFETY: writes from a live slice.
    unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) };
}

fn check(master: i32, tty: i32, dup: i32) -> Result<(), String> {
    for fd in [tty, dup] {
        if link(fd) != "/dev/tty" {
            return Err(format!("fd {fd} links to {:?}", link(fd)));
        }
    }
    // SAFETY: fcntl/tcgetsid on our own descriptors.
    unsafe {
        let fl = libc::fcntl(tty, libc::F_GETFL);
        libc::fcntl(tty, libc::F_SETFL, fl | libc::O_NONBLOCK);
        let shared = libc::fcntl(dup, libc::F_GETFL) & libc::O_NONBLOCK != 0;
        libc::fcntl(tty, libc::F_SETFL, fl);
        if !shared {
            return Err("the dup is another open file".into());
        }
        if libc::tcgetsid(tty) != libc::getpid() {
            return Err(format!(
                "/dev/tty belongs to session {}",
                libc::tcgetsid(tty)
            ));
        }
    }
    write(master, b"ping\n");
    let got = read_some(tty);
    if got != b"ping\n" {
        return Err(format!("read {got:?} from /dev/tty"));
    }
    // The master also gets the echo of ping: take it first.
    let mut seen = Vec::new();
    write(dup, b"pong");
    while !seen.windows(4).any(|w| w == b"pong") {
        let more = read_some(master);
        if more.is_empty() {
            return Err(format!("the master read {seen:?}"));
        }
        seen.extend(more);
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: criu-victim-devtty OUT READY");
        std::process::exit(2);
    }
    let (out, ready) = (&args[1], &args[2]);
    // SAFETY: session and pty calls with plain values; ptsname's string is copied at once.
    let (master, tty, dup) = unsafe {
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
        let t = libc::open(c"/dev/tty".as_ptr(), libc::O_RDWR);
        assert!(t >= 0, "open /dev/tty: {}", std::io::Error::last_os_error());
        (m, t, libc::dup(t))
    };
    // SAFETY: installs an async-signal-safe handler that only stores an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let tmp = format!("{ready}.tmp");
    std::fs::write(&tmp, format!("ready {}", std::process::id())).unwrap();
    std::fs::rename(&tmp, ready).unwrap();
    loop {
        if GO.swap(false, Ordering::SeqCst) {
            let verdict = match check(master, tty, dup) {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("bad: {e}"),
            };
            let tmp = format!("{out}.tmp");
            std::fs::write(&tmp, verdict).unwrap();
            std::fs::rename(&tmp, out).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
