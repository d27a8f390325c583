//! criu test victim: unix socket states at the edges, checking itself after a restore.
//!
//! `criu-victim-unix-edge OUT READY DIR` makes
//! - a datagram pair whose first end has a classic BPF filter locked with `SO_LOCK_FILTER`;
//! - a datagram socket connected to an abstract-named receiver that was then closed.
//!
//! Writes `ready PID` into READY. On SIGUSR1 (once: the second check consumes the refusal) it
//! checks that the filter is still there and locked (`SO_DETACH_FILTER` fails with EPERM), and
//! that the sender's first send fails with ECONNREFUSED and the next with ENOTCONN, as the
//! kernel does for a receiver that went away; writes `check ok` or `bad: WHY` into OUT.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

fn get_int(s: RawFd, opt: i32) -> i32 {
    let mut v = -1i32;
    let mut len = 4 as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into a live int.
    unsafe {
        libc::getsockopt(
            s,
            libc::SOL_SOCKET,
            opt,
            (&mut v as *mut i32).cast(),
            &mut len,
        )
    };
    v
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// A sockaddr_un for the abstract name `\0name`.
fn abstract_addr(name: &str) -> (libc::sockaddr_un, libc::socklen_t) {
    // SAFETY: a zeroed sockaddr_un is valid.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as u16;
    for (d, s) in a.sun_path[1..].iter_mut().zip(name.as_bytes()) {
        *d = *s as libc::c_char;
    }
    (a, (2 + 1 + name.len()) as libc::socklen_t)
}

struct Socks {
    locked: RawFd,
    sender: RawFd,
}

fn setup() -> Socks {
    let mut sv = [0i32; 2];
    // SAFETY: socketpair writes two descriptors into a live array.
    let r = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_DGRAM, 0, sv.as_mut_ptr()) };
    assert_eq!(r, 0);
    let locked = sv[0];
    // One instruction: accept the whole packet.
    let mut f = [libc::sock_filter {
        code: 0x06,
        jt: 0,
        jf: 0,
        k: 0xffff,
    }];
    let prog = libc::sock_fprog {
        len: 1,
        filter: f.as_mut_ptr(),
    };
    let one = 1i32;
    // SAFETY: setsockopt reads a live sock_fprog pointing at a live program, then a live int.
    unsafe {
        let r = libc::setsockopt(
            locked,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&prog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        );
        assert_eq!(r, 0, "SO_ATTACH_FILTER");
        let r = libc::setsockopt(
            locked,
            libc::SOL_SOCKET,
            libc::SO_LOCK_FILTER,
            (&one as *const i32).cast(),
            4,
        );
        assert_eq!(r, 0, "SO_LOCK_FILTER");
    }
    let (a, len) = abstract_addr(&format!("unix-edge-gone-{}", std::process::id()));
    // SAFETY: socket/bind/connect/close on our own descriptors with a live sockaddr.
    let sender = unsafe {
        let recv = libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0);
        let sender = libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0);
        assert!(recv >= 0 && sender >= 0);
        assert_eq!(
            libc::bind(recv, (&a as *const libc::sockaddr_un).cast(), len),
            0
        );
        assert_eq!(
            libc::connect(sender, (&a as *const libc::sockaddr_un).cast(), len),
            0
        );
        libc::close(recv);
        sender
    };
    Socks { locked, sender }
}

fn check(s: &Socks) -> Result<(), String> {
    if get_int(s.locked, libc::SO_LOCK_FILTER) != 1 {
        return Err(format!(
            "SO_LOCK_FILTER {}",
            get_int(s.locked, libc::SO_LOCK_FILTER)
        ));
    }
    let zero = 0i32;
    // SAFETY: setsockopt reads a live int.
    let r = unsafe {
        libc::setsockopt(
            s.locked,
            libc::SOL_SOCKET,
            libc::SO_DETACH_FILTER,
            (&zero as *const i32).cast(),
            4,
        )
    };
    if r != -1 || errno() != libc::EPERM {
        return Err(format!(
            "SO_DETACH_FILTER on the locked filter: {r} errno {}",
            errno()
        ));
    }
    // SAFETY: send from a live literal.
    let r = unsafe { libc::send(s.sender, b"x".as_ptr().cast(), 1, libc::MSG_DONTWAIT) };
    if r != -1 || errno() != libc::ECONNREFUSED {
        return Err(format!(
            "first send to the closed receiver: {r} errno {}",
            errno()
        ));
    }
    // SAFETY: send of one byte from a live literal.
    let r = unsafe { libc::send(s.sender, b"x".as_ptr().cast(), 1, libc::MSG_DONTWAIT) };
    if r != -1 || errno() != libc::ENOTCONN {
        return Err(format!(
            "second send to the closed receiver: {r} errno {}",
            errno()
        ));
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: criu-victim-unix-edge OUT READY DIR");
        std::process::exit(2);
    }
    let (out, ready) = (&args[1], &args[2]);
    let s = setup();
    // SAFETY: installs an async-signal-safe handler that only stores an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let t = format!("{ready}.tmp");
    std::fs::write(&t, format!("ready {}", std::process::id())).unwrap();
    std::fs::rename(&t, ready).unwrap();
    loop {
        if GO.swap(false, Ordering::SeqCst) {
            let verdict = match check(&s) {
                Ok(()) => "check ok".to_string(),
                Err(e) => format!("bad: {e}"),
            };
            let t = format!("{out}.tmp");
            std::fs::write(&t, verdict).unwrap();
            std::fs::rename(&t, out).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
