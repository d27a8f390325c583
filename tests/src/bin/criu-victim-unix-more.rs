//! criu test victim: unix socket shapes and options besides criu-victim-sockets', checking
//! itself after a restore.
//!
//! `criu-victim-unix-more OUT READY DIR` works in DIR and makes
//! - a stream pair with one end shut down for reading, and a seqpacket pair with one end shut
//!   down both ways;
//! - an autobound datagram socket (`bind` with the family alone: the kernel picks an abstract
//!   name);
//! - a datagram socket bound to DIR/occ.sock whose file was then replaced by a regular file
//!   holding "other";
//! - a datagram socket with `SO_PASSSEC` and a classic BPF filter (`SO_ATTACH_FILTER`, two
//!   instructions) and a datagram pair with one message queued;
//! - a `NETLINK_GENERIC` socket bound by the kernel.
//!
//! Writes `ready PID` into READY. On SIGUSR1 it checks every one (the shutdowns as the kernel
//! reports them, the names, the regular file untouched, the options and the filter read back
//! with `SO_GET_FILTER`, the netlink protocol and port id) and writes `check ok` or
//! `bad: WHY` into OUT.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

fn pair(ty: i32) -> (RawFd, RawFd) {
    let mut sv = [0i32; 2];
    // SAFETY: socketpair writes two descriptors into a live local array.
    let r = unsafe { libc::socketpair(libc::AF_UNIX, ty, 0, sv.as_mut_ptr()) };
    assert_eq!(r, 0, "socketpair");
    (sv[0], sv[1])
}

fn sock(family: i32, ty: i32, proto: i32) -> RawFd {
    // SAFETY: socket takes plain values.
    let s = unsafe { libc::socket(family, ty, proto) };
    assert!(s >= 0, "socket: {}", std::io::Error::last_os_error());
    s
}

fn get_int(s: RawFd, level: i32, opt: i32) -> i32 {
    let mut v = 0i32;
    let mut len = 4 as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into a live int.
    unsafe { libc::getsockopt(s, level, opt, (&mut v as *mut i32).cast(), &mut len) };
    v
}

fn set_int(s: RawFd, level: i32, opt: i32, v: i32) {
    // SAFETY: setsockopt reads one live int.
    let r = unsafe { libc::setsockopt(s, level, opt, (&v as *const i32).cast(), 4) };
    assert_eq!(
        r,
        0,
        "setsockopt {opt}: {}",
        std::io::Error::last_os_error()
    );
}

/// The unix name of `s` (`getsockname`), raw bytes after the family.
fn name(s: RawFd) -> Vec<u8> {
    // SAFETY: a zeroed sockaddr_un is valid; getsockname writes at most `len` bytes into it.
    unsafe {
        let mut a: libc::sockaddr_un = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        libc::getsockname(s, (&mut a as *mut libc::sockaddr_un).cast(), &mut len);
        let n = (len as usize).saturating_sub(2);
        a.sun_path[..n].iter().map(|&c| c as u8).collect()
    }
}

fn bind_path(s: RawFd, path: &str) {
    // SAFETY: a zeroed sockaddr_un is valid; the path fits (checked); bind reads it.
    unsafe {
        let mut a: libc::sockaddr_un = std::mem::zeroed();
        a.sun_family = libc::AF_UNIX as u16;
        assert!(path.len() < a.sun_path.len());
        for (i, b) in path.bytes().enumerate() {
            a.sun_path[i] = b as libc::c_char;
        }
        let r = libc::bind(
            s,
            (&a as *const libc::sockaddr_un).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        );
        assert_eq!(r, 0, "bind {path}: {}", std::io::Error::last_os_error());
    }
}

/// The classic BPF program: accept every packet whole.
fn filter() -> [libc::sock_filter; 2] {
    [
        // ld #len
        libc::sock_filter {
            code: 0x80,
            jt: 0,
            jf: 0,
            k: 0,
        },
        // ret a
        libc::sock_filter {
            code: 0x16,
            jt: 0,
            jf: 0,
            k: 0,
        },
    ]
}

/// The filter attached to `s`, read back with `SO_GET_FILTER` (instructions).
fn get_filter(s: RawFd) -> Vec<(u16, u32)> {
    let mut f = [libc::sock_filter {
        code: 0,
        jt: 0,
        jf: 0,
        k: 0,
    }; 16];
    // SO_GET_FILTER takes the room in instructions as its length.
    let mut len = f.len() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` instructions into a live array of that many.
    let r = unsafe {
        libc::getsockopt(
            s,
            libc::SOL_SOCKET,
            libc::SO_GET_FILTER,
            f.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Vec::new();
    }
    f[..(len as usize).min(16)]
        .iter()
        .map(|i| (i.code, i.k))
        .collect()
}

struct Socks {
    rd_shut: RawFd,
    rd_peer: RawFd,
    both_shut: RawFd,
    auto: RawFd,
    auto_name: Vec<u8>,
    occ: RawFd,
    occ_name: Vec<u8>,
    opts: RawFd,
    nl: RawFd,
    nl_port: u32,
}

fn nl_port(s: RawFd) -> u32 {
    // SAFETY: a zeroed sockaddr_nl is valid; getsockname writes at most `len` bytes.
    unsafe {
        let mut a: libc::sockaddr_nl = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        libc::getsockname(s, (&mut a as *mut libc::sockaddr_nl).cast(), &mut len);
        a.nl_pid
    }
}

fn setup(dir: &str) -> Socks {
    std::env::set_current_dir(dir).unwrap();
    let (rd_shut, rd_peer) = pair(libc::SOCK_STREAM);
    let (both_shut, _both_peer) = pair(libc::SOCK_SEQPACKET);
    // SAFETY: shutdown on our own sockets.
    unsafe {
        assert_eq!(libc::shutdown(rd_shut, libc::SHUT_RD), 0);
        assert_eq!(libc::shutdown(both_shut, libc::SHUT_RDWR), 0);
    }
    let auto = sock(libc::AF_UNIX, libc::SOCK_DGRAM, 0);
    // SAFETY: bind with the family alone (autobind) from a live sockaddr.
    unsafe {
        let a = libc::sa_family_t::try_from(libc::AF_UNIX).unwrap();
        let r = libc::bind(auto, (&a as *const libc::sa_family_t).cast(), 2);
        assert_eq!(r, 0, "autobind");
    }
    let auto_name = name(auto);
    assert_eq!(auto_name.first(), Some(&0), "an abstract name");
    let occ = sock(libc::AF_UNIX, libc::SOCK_DGRAM, 0);
    let occ_path = format!("{dir}/occ.sock");
    bind_path(occ, &occ_path);
    std::fs::remove_file(&occ_path).unwrap();
    std::fs::write(&occ_path, "other").unwrap();
    let occ_name = name(occ);
    let (opts, opts_peer) = pair(libc::SOCK_DGRAM);
    set_int(opts, libc::SOL_SOCKET, libc::SO_PASSSEC, 1);
    let f = filter();
    let prog = libc::sock_fprog {
        len: f.len() as u16,
        filter: f.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: setsockopt reads one live sock_fprog pointing at a live program.
    let r = unsafe {
        libc::setsockopt(
            opts,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&prog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "SO_ATTACH_FILTER");
    // SAFETY: send from a live literal.
    let n = unsafe { libc::send(opts_peer, b"filtered".as_ptr().cast(), 8, 0) };
    assert_eq!(n, 8);
    let nl = sock(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_GENERIC);
    // SAFETY: a zeroed sockaddr_nl (port 0: the kernel picks) is valid; bind reads it.
    unsafe {
        let mut a: libc::sockaddr_nl = std::mem::zeroed();
        a.nl_family = libc::AF_NETLINK as u16;
        let r = libc::bind(
            nl,
            (&a as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        );
        assert_eq!(r, 0, "bind netlink");
    }
    let nl_port = nl_port(nl);
    Socks {
        rd_shut,
        rd_peer,
        both_shut,
        auto,
        auto_name,
        occ,
        occ_name,
        opts,
        nl,
        nl_port,
    }
}

fn check(s: &Socks, dir: &str) -> Result<(), String> {
    let mut b = [0u8; 64];
    // Shut down for reading: reads see the end at once; the peer's writes fail.
    // SAFETY: recv into a live buffer; send from a live literal.
    unsafe {
        if libc::recv(s.rd_shut, b.as_mut_ptr().cast(), 64, libc::MSG_DONTWAIT) != 0 {
            return Err("SHUT_RD: no end of file".into());
        }
        if libc::send(s.rd_peer, b"x".as_ptr().cast(), 1, libc::MSG_NOSIGNAL) != -1 {
            return Err("SHUT_RD: the peer could still write".into());
        }
        if libc::send(s.rd_shut, b"y".as_ptr().cast(), 1, libc::MSG_NOSIGNAL) != 1 {
            return Err("SHUT_RD: the other way is shut too".into());
        }
        if libc::send(s.both_shut, b"z".as_ptr().cast(), 1, libc::MSG_NOSIGNAL) != -1
            || libc::recv(s.both_shut, b.as_mut_ptr().cast(), 64, libc::MSG_DONTWAIT) != 0
        {
            return Err("SHUT_RDWR: not shut both ways".into());
        }
    }
    if name(s.auto) != s.auto_name {
        return Err(format!(
            "autobound name {:?}, was {:?}",
            name(s.auto),
            s.auto_name
        ));
    }
    if name(s.occ) != s.occ_name {
        return Err(format!("occ.sock name {:?}", name(s.occ)));
    }
    match std::fs::read_to_string(format!("{dir}/occ.sock")) {
        Ok(t) if t == "other" => {}
        r => return Err(format!("the file at occ.sock: {r:?}")),
    }
    if get_int(s.opts, libc::SOL_SOCKET, libc::SO_PASSSEC) != 1 {
        return Err("SO_PASSSEC".into());
    }
    let want: Vec<(u16, u32)> = filter().iter().map(|i| (i.code, i.k)).collect();
    if get_filter(s.opts) != want {
        return Err(format!("filter {:?}", get_filter(s.opts)));
    }
    // SAFETY: recv into a live buffer.
    let n = unsafe { libc::recv(s.opts, b.as_mut_ptr().cast(), 64, libc::MSG_DONTWAIT) };
    if n != 8 || &b[..8] != b"filtered" {
        return Err(format!("the filtered socket's message: {n}"));
    }
    if get_int(s.nl, libc::SOL_SOCKET, libc::SO_PROTOCOL) != libc::NETLINK_GENERIC {
        return Err("netlink protocol".into());
    }
    if nl_port(s.nl) != s.nl_port {
        return Err(format!("netlink port {} was {}", nl_port(s.nl), s.nl_port));
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: criu-victim-unix-more OUT READY DIR");
        std::process::exit(2);
    }
    let (out, ready, dir) = (&args[1], &args[2], &args[3]);
    let s = setup(dir);
    // SAFETY: installs an async-signal-safe handler that only stores an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let t = format!("{ready}.tmp");
    std::fs::write(&t, format!("ready {}", std::process::id())).unwrap();
    std::fs::rename(&t, ready).unwrap();
    loop {
        if GO.swap(false, Ordering::SeqCst) {
            let verdict = match check(&s, dir) {
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
