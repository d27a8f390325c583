//! criu test victim: a pseudo-terminal pair.
//!
//! `criu-victim-tty OUT READY [ctty]` opens a pty (master and slave), puts the slave in raw
//! mode with `VMIN` 3, sets the window size to 33x77 and packet mode on the master, and leaves
//! `to-slave` waiting to be read from the slave and `to-master` from the master. With `ctty` a
//! child starts a session whose controlling terminal is the slave, makes the group of a
//! grandchild of its own the foreground one, and both sleep. Writes `ready PID` into READY. On SIGUSR1 it checks that the
//! pty index, termios, window size and packet mode are unchanged, that each waiting message
//! arrives once, that the pair is still connected both ways and (with `ctty`) that the child's
//! session, terminal and foreground group are right, and writes `ok` or `bad: WHY` into OUT.

use std::sync::atomic::{AtomicBool, Ordering};

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

fn read_nb(fd: i32) -> Result<Vec<u8>, i32> {
    let mut buf = [0u8; 256];
    // SAFETY: reads into a live buffer; the descriptor is ours (non-blocking).
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    Ok(buf[..n as usize].to_vec())
}

fn write_all(fd: i32, b: &[u8]) {
    // SAFETY: writes a live slice to our own descriptor.
    let n = unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) };
    assert_eq!(n, b.len() as isize, "write");
}

/// Reads from `fd` until something arrives (the line discipline hands bytes over
/// asynchronously), at most a second.
fn read_wait(fd: i32) -> Result<Vec<u8>, i32> {
    for _ in 0..100 {
        match read_nb(fd) {
            Err(libc::EAGAIN) => std::thread::sleep(std::time::Duration::from_millis(10)),
            r => return r,
        }
    }
    Err(libc::EAGAIN)
}

struct State {
    m: i32,
    s: i32,
    index: i32,
    termios: libc::termios,
    child: i32,
}

fn index(m: i32) -> i32 {
    let mut n: libc::c_int = -1;
    // SAFETY: TIOCGPTN writes one int into a live local.
    unsafe { libc::ioctl(m, libc::TIOCGPTN, &mut n) };
    n
}

fn check(st: &State) -> Result<(), String> {
    if index(st.m) != st.index {
        return Err(format!("pty index {} (was {})", index(st.m), st.index));
    }
    // SAFETY: a zeroed termios is a valid value to be overwritten.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: tcgetattr writes into a live local.
    if unsafe { libc::tcgetattr(st.s, &mut t) } != 0 {
        return Err("tcgetattr".into());
    }
    let a = &st.termios;
    if (t.c_iflag, t.c_oflag, t.c_cflag, t.c_lflag) != (a.c_iflag, a.c_oflag, a.c_cflag, a.c_lflag)
        || t.c_cc[..19] != a.c_cc[..19]
    {
        return Err(format!(
            "termios {:#x} {:#x} {:#x} {:#x} {:?}",
            t.c_iflag,
            t.c_oflag,
            t.c_cflag,
            t.c_lflag,
            &t.c_cc[..19]
        ));
    }
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes into a live local.
    unsafe { libc::ioctl(st.s, libc::TIOCGWINSZ, &mut ws) };
    if (ws.ws_row, ws.ws_col) != (33, 77) {
        return Err(format!("window {}x{}", ws.ws_row, ws.ws_col));
    }
    let mut pkt: libc::c_int = 0;
    // SAFETY: TIOCGPKT writes one int into a live local.
    unsafe { libc::ioctl(st.m, libc::TIOCGPKT, &mut pkt) };
    if pkt == 0 {
        return Err("packet mode is off".into());
    }
    let got = read_wait(st.m).map_err(|e| format!("read master: errno {e}"))?;
    if got != b"\0to-master" {
        return Err(format!("master read {:?}", String::from_utf8_lossy(&got)));
    }
    let got = read_wait(st.s).map_err(|e| format!("read slave: errno {e}"))?;
    if got != b"to-slave" {
        return Err(format!("slave read {:?}", String::from_utf8_lossy(&got)));
    }
    if read_nb(st.m) != Err(libc::EAGAIN) || read_nb(st.s) != Err(libc::EAGAIN) {
        return Err("waiting bytes arrived twice".into());
    }
    write_all(st.m, b"ping");
    if read_wait(st.s) != Ok(b"ping".to_vec()) {
        return Err("master to slave is not connected".into());
    }
    write_all(st.s, b"pong");
    if read_wait(st.m) != Ok(b"\0pong".to_vec()) {
        return Err("slave to master is not connected".into());
    }
    if st.child > 0 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", st.child))
            .map_err(|e| format!("child stat: {e}"))?;
        let rest = stat.rsplit_once(") ").map(|x| x.1).unwrap_or("");
        let f: Vec<&str> = rest.split(' ').collect();
        // state ppid pgrp session tty_nr tpgid
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<i64>().ok()).unwrap_or(-1);
        let mut sb: libc::stat = unsafe_zeroed_stat();
        // SAFETY: fstat writes into a live local.
        unsafe { libc::fstat(st.s, &mut sb) };
        // The foreground group is the grandchild's own.
        let gc = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", st.child))
            .unwrap_or_default()
            .trim()
            .parse::<i64>()
            .unwrap_or(-2);
        let want = (st.child as i64, st.child as i64, sb.st_rdev as i64, gc);
        let got = (num(2), num(3), num(4), num(5));
        if got != want {
            return Err(format!(
                "child (pgrp, session, tty, tpgid) {got:?}, want {want:?}"
            ));
        }
    }
    Ok(())
}

fn unsafe_zeroed_stat() -> libc::stat {
    // SAFETY: stat is plain data; all zeroes is a valid value.
    unsafe { std::mem::zeroed() }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: criu-victim-tty OUT READY [ctty]");
        std::process::exit(2);
    }
    let (out, ready) = (&args[1], &args[2]);
    // SAFETY: posix_openpt returns a new descriptor (checked); unlockpt on it.
    let m = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_NONBLOCK) };
    assert!(m >= 0, "posix_openpt");
    // SAFETY: unlockpt on the descriptor posix_openpt just returned.
    assert_eq!(unsafe { libc::unlockpt(m) }, 0);
    let idx = index(m);
    let path = std::ffi::CString::new(format!("/dev/pts/{idx}")).unwrap();
    // SAFETY: open with a NUL-terminated path.
    let s = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_NONBLOCK,
        )
    };
    assert!(s >= 0, "open slave");
    // SAFETY: a zeroed termios is a valid value to be overwritten.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: tcgetattr/cfmakeraw/tcsetattr on live locals and our slave.
    unsafe {
        libc::tcgetattr(s, &mut t);
        libc::cfmakeraw(&mut t);
        t.c_cc[libc::VMIN] = 3;
        assert_eq!(libc::tcsetattr(s, libc::TCSANOW, &t), 0);
        libc::tcgetattr(s, &mut t);
    }
    let ws = libc::winsize {
        ws_row: 33,
        ws_col: 77,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let one: libc::c_int = 1;
    // SAFETY: TIOCSWINSZ and TIOCPKT read live locals.
    unsafe {
        assert_eq!(libc::ioctl(m, libc::TIOCSWINSZ, &ws), 0);
        assert_eq!(libc::ioctl(m, libc::TIOCPKT, &one), 0);
    }
    let mut child = 0;
    if args.get(3).map(String::as_str) == Some("ctty") {
        // SAFETY: the child only makes async-signal-safe calls before it pauses forever.
        child = unsafe { libc::fork() };
        assert!(child >= 0, "fork");
        if child == 0 {
            // SAFETY: a new session whose terminal is the slave, a grandchild in a group of
            // its own made the foreground group; then both sleep (async-signal-safe calls).
            unsafe {
                libc::setsid();
                libc::ioctl(s, libc::TIOCSCTTY, 0);
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                let gc = libc::fork();
                if gc == 0 {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    libc::setpgid(0, 0);
                    loop {
                        libc::pause();
                    }
                }
                libc::setpgid(gc, gc);
                libc::tcsetpgrp(s, gc);
                loop {
                    libc::pause();
                }
            }
        }
        // The child's session owns the terminal once it has taken it.
        for _ in 0..200 {
            let (mut sid, mut pg): (libc::pid_t, libc::pid_t) = (0, 0);
            // SAFETY: TIOCGSID/TIOCGPGRP on the master write one pid into a live local each.
            let ok = unsafe {
                libc::ioctl(m, libc::TIOCGSID, &mut sid) == 0
                    && libc::ioctl(m, libc::TIOCGPGRP, &mut pg) == 0
            };
            if ok && sid == child && pg != child {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    write_all(m, b"to-slave");
    write_all(s, b"to-master");
    std::thread::sleep(std::time::Duration::from_millis(50));
    let st = State {
        m,
        s,
        index: idx,
        termios: t,
        child,
    };
    // SAFETY: installs an async-signal-safe handler that only stores an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let tmp = format!("{ready}.tmp");
    std::fs::write(&tmp, format!("ready {}", std::process::id())).unwrap();
    std::fs::rename(&tmp, ready).unwrap();
    loop {
        if GO.swap(false, Ordering::SeqCst) {
            let verdict = match check(&st) {
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
