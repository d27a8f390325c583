//! criu test victim: `/dev/tty` held by a member of a session who is not its leader.
//!
//! `criu-victim-ctty-member OUT READY` starts a session whose terminal is a pty of its own
//! (master and slave held by the leader), then forks a child (a member of the session, not its
//! leader) that opens `/dev/tty`. Writes `ready LEADER CHILD` into READY. On SIGUSR1 the child
//! checks that its descriptor names `/dev/tty`, that it is not the session leader, and that
//! `/dev/tty` is the pty (a line written to the master is read from it, bytes written to it
//! come out of the master), and writes `ok` or `bad: WHY` into OUT.

use std::sync::atomic::{AtomicBool, Ordering};

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
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

fn check(master: i32, tty: i32) -> Result<(), String> {
    let link = std::fs::read_link(format!("/proc/self/fd/{tty}"))
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    if link != "/dev/tty" {
        return Err(format!("fd {tty} links to {link:?}"));
    }
    // SAFETY: plain queries of this process and its descriptor.
    let (sid, me, tsid) = unsafe { (libc::getsid(0), libc::getpid(), libc::tcgetsid(tty)) };
    if sid == me || tsid != sid {
        return Err(format!(
            "session {sid}, pid {me}, the terminal's session {tsid}"
        ));
    }
    write(master, b"ping\n");
    let got = read_some(tty);
    if got != b"ping\n" {
        return Err(format!("read {got:?} from /dev/tty"));
    }
    let mut seen = Vec::new();
    write(tty, b"pong");
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
        eprintln!("usage: criu-victim-ctty-member OUT READY");
        std::process::exit(2);
    }
    let (out, ready) = (&args[1], &args[2]);
    // SAFETY: session and pty calls with plain values; ptsname's string is copied at once.
    let master = unsafe {
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
        m
    };
    // SAFETY: the child only opens a file, installs a handler and loops.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork");
    if child > 0 {
        let tmp = format!("{ready}.tmp");
        std::fs::write(&tmp, format!("ready {} {child}", std::process::id())).unwrap();
        std::fs::rename(&tmp, ready).unwrap();
        loop {
            // SAFETY: pause is async-signal-safe.
            unsafe { libc::pause() };
        }
    }
    // SAFETY: open with a NUL-terminated literal path.
    let tty = unsafe { libc::open(c"/dev/tty".as_ptr(), libc::O_RDWR) };
    assert!(
        tty >= 0,
        "open /dev/tty: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: installs an async-signal-safe handler that only stores an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    loop {
        if GO.swap(false, Ordering::SeqCst) {
            let verdict = match check(master, tty) {
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
