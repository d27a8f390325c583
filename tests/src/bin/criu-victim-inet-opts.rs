//! criu test victim: options set on inet sockets, read back after a restore.
//!
//! `criu-victim-inet-opts OUT READY`: sets, on a UDP socket (IPv4): `IP_TOS`, `IP_TTL`,
//! `IP_FREEBIND`, `IP_PKTINFO`, `SO_PRIORITY`, `SO_MARK`, `SO_BINDTODEVICE` lo, `SO_RCVBUF`
//! and `SO_SNDBUF` (locked sizes); on both ends of a loopback TCP connection: `TCP_NODELAY`,
//! `TCP_CORK`, `SO_KEEPALIVE` with `TCP_KEEPIDLE/INTVL/CNT`, `SO_LINGER`, `IP_TOS`; on an IPv6
//! UDP socket: `IPV6_V6ONLY`, `IPV6_FREEBIND`, `IPV6_RECVPKTINFO`, `IPV6_TCLASS`,
//! `IPV6_UNICAST_HOPS`, `IPV6_MULTICAST_IF` (lo), `IPV6_MULTICAST_HOPS`, `IPV6_MULTICAST_LOOP`
//! off; on the IPv4 UDP socket also `IP_MULTICAST_IF` (127.0.0.1), `IP_MULTICAST_TTL`,
//! `IP_MULTICAST_LOOP` off. It reads every one back
//! (getsockopt), writes `ready PID` into READY, and on SIGUSR1 reads them again: `check ok`
//! when each equals what it was, else `bad: NAME was A, now B` into OUT.

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

fn set(fd: RawFd, level: i32, opt: i32, v: i32) {
    // SAFETY: setsockopt reads an int from a live local.
    let r = unsafe { libc::setsockopt(fd, level, opt, (&v as *const i32).cast(), 4) };
    assert_eq!(
        r,
        0,
        "setsockopt {level}/{opt}: {}",
        std::io::Error::last_os_error()
    );
}

/// The option's bytes (an int, a linger, a device name).
fn get(fd: RawFd, level: i32, opt: i32) -> Vec<u8> {
    let mut b = [0u8; 32];
    let mut len = b.len() as libc::socklen_t;
    // SAFETY: getsockopt writes at most len bytes into b.
    let r = unsafe { libc::getsockopt(fd, level, opt, b.as_mut_ptr().cast(), &mut len) };
    if r < 0 {
        return format!("error {}", std::io::Error::last_os_error()).into_bytes();
    }
    b[..len as usize].to_vec()
}

type Opt = (RawFd, i32, i32, &'static str);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, out, ready] = &args[..] else {
        eprintln!("usage: criu-victim-inet-opts OUT READY");
        std::process::exit(2);
    };
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    let uf = u.as_raw_fd();
    set(uf, libc::SOL_IP, libc::IP_TOS, 0x10);
    set(uf, libc::SOL_IP, libc::IP_TTL, 33);
    set(uf, libc::SOL_IP, libc::IP_FREEBIND, 1);
    set(uf, libc::SOL_IP, libc::IP_PKTINFO, 1);
    set(uf, libc::SOL_SOCKET, libc::SO_PRIORITY, 5);
    set(uf, libc::SOL_SOCKET, libc::SO_MARK, 77);
    set(uf, libc::SOL_SOCKET, libc::SO_RCVBUF, 50000);
    set(uf, libc::SOL_SOCKET, libc::SO_SNDBUF, 30000);
    set(uf, libc::SOL_IP, libc::IP_MULTICAST_TTL, 7);
    set(uf, libc::SOL_IP, libc::IP_MULTICAST_LOOP, 0);
    // An in_addr: 127.0.0.1, network order.
    set(
        uf,
        libc::SOL_IP,
        libc::IP_MULTICAST_IF,
        i32::from_ne_bytes([127, 0, 0, 1]),
    );
    // SAFETY: setsockopt reads the 3 bytes of a live string.
    let r = unsafe {
        libc::setsockopt(
            uf,
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            c"lo".as_ptr().cast(),
            3,
        )
    };
    assert_eq!(r, 0, "SO_BINDTODEVICE");

    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 3,
    };
    for f in [c.as_raw_fd(), s.as_raw_fd()] {
        set(f, libc::SOL_TCP, libc::TCP_NODELAY, 1);
        set(f, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
        set(f, libc::SOL_TCP, libc::TCP_KEEPIDLE, 77);
        set(f, libc::SOL_TCP, libc::TCP_KEEPINTVL, 11);
        set(f, libc::SOL_TCP, libc::TCP_KEEPCNT, 4);
        set(f, libc::SOL_IP, libc::IP_TOS, 0x20);
        // SAFETY: setsockopt reads a live linger.
        let r = unsafe {
            libc::setsockopt(
                f,
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0, "SO_LINGER");
    }
    set(c.as_raw_fd(), libc::SOL_TCP, libc::TCP_CORK, 1);

    // IPV6_V6ONLY only before bind: an unbound socket.
    // SAFETY: socket() takes no pointers; the result is checked and owned below.
    let u6f = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_DGRAM, 0) };
    assert!(u6f >= 0);
    // SAFETY: u6f is a new descriptor owned by nothing else.
    let u6 = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(u6f) };
    set(u6f, libc::SOL_IPV6, libc::IPV6_V6ONLY, 1);
    set(u6f, libc::SOL_IPV6, libc::IPV6_FREEBIND, 1);
    set(u6f, libc::SOL_IPV6, libc::IPV6_RECVPKTINFO, 1);
    set(u6f, libc::SOL_IPV6, libc::IPV6_TCLASS, 0x28);
    set(u6f, libc::SOL_IPV6, libc::IPV6_UNICAST_HOPS, 17);
    set(u6f, libc::SOL_IPV6, libc::IPV6_MULTICAST_HOPS, 9);
    set(u6f, libc::SOL_IPV6, libc::IPV6_MULTICAST_LOOP, 0);
    // SAFETY: if_nametoindex reads a NUL-terminated literal.
    let lo = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
    set(u6f, libc::SOL_IPV6, libc::IPV6_MULTICAST_IF, lo as i32);

    let mut opts: Vec<Opt> = vec![
        (uf, libc::SOL_IP, libc::IP_TOS, "udp IP_TOS"),
        (uf, libc::SOL_IP, libc::IP_TTL, "udp IP_TTL"),
        (uf, libc::SOL_IP, libc::IP_FREEBIND, "udp IP_FREEBIND"),
        (uf, libc::SOL_IP, libc::IP_PKTINFO, "udp IP_PKTINFO"),
        (uf, libc::SOL_SOCKET, libc::SO_PRIORITY, "udp SO_PRIORITY"),
        (uf, libc::SOL_SOCKET, libc::SO_MARK, "udp SO_MARK"),
        (uf, libc::SOL_SOCKET, libc::SO_RCVBUF, "udp SO_RCVBUF"),
        (uf, libc::SOL_SOCKET, libc::SO_SNDBUF, "udp SO_SNDBUF"),
        (uf, libc::SOL_SOCKET, 72, "udp SO_BUF_LOCK"),
        (
            uf,
            libc::SOL_IP,
            libc::IP_MULTICAST_TTL,
            "udp IP_MULTICAST_TTL",
        ),
        (
            uf,
            libc::SOL_IP,
            libc::IP_MULTICAST_LOOP,
            "udp IP_MULTICAST_LOOP",
        ),
        (
            uf,
            libc::SOL_IP,
            libc::IP_MULTICAST_IF,
            "udp IP_MULTICAST_IF",
        ),
        (u6f, libc::SOL_IPV6, libc::IPV6_TCLASS, "udp6 IPV6_TCLASS"),
        (
            u6f,
            libc::SOL_IPV6,
            libc::IPV6_UNICAST_HOPS,
            "udp6 IPV6_UNICAST_HOPS",
        ),
        (
            u6f,
            libc::SOL_IPV6,
            libc::IPV6_MULTICAST_HOPS,
            "udp6 IPV6_MULTICAST_HOPS",
        ),
        (
            u6f,
            libc::SOL_IPV6,
            libc::IPV6_MULTICAST_LOOP,
            "udp6 IPV6_MULTICAST_LOOP",
        ),
        (
            u6f,
            libc::SOL_IPV6,
            libc::IPV6_MULTICAST_IF,
            "udp6 IPV6_MULTICAST_IF",
        ),
        (
            uf,
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            "udp SO_BINDTODEVICE",
        ),
        (u6f, libc::SOL_IPV6, libc::IPV6_V6ONLY, "udp6 IPV6_V6ONLY"),
        (
            u6f,
            libc::SOL_IPV6,
            libc::IPV6_FREEBIND,
            "udp6 IPV6_FREEBIND",
        ),
        (
            u6f,
            libc::SOL_IPV6,
            libc::IPV6_RECVPKTINFO,
            "udp6 IPV6_RECVPKTINFO",
        ),
        (
            c.as_raw_fd(),
            libc::SOL_TCP,
            libc::TCP_CORK,
            "client TCP_CORK",
        ),
    ];
    for (f, who) in [(c.as_raw_fd(), "client"), (s.as_raw_fd(), "server")] {
        let names: [(i32, i32, &'static str); 7] = [
            (libc::SOL_TCP, libc::TCP_NODELAY, "TCP_NODELAY"),
            (libc::SOL_SOCKET, libc::SO_KEEPALIVE, "SO_KEEPALIVE"),
            (libc::SOL_TCP, libc::TCP_KEEPIDLE, "TCP_KEEPIDLE"),
            (libc::SOL_TCP, libc::TCP_KEEPINTVL, "TCP_KEEPINTVL"),
            (libc::SOL_TCP, libc::TCP_KEEPCNT, "TCP_KEEPCNT"),
            (libc::SOL_IP, libc::IP_TOS, "IP_TOS"),
            (libc::SOL_SOCKET, libc::SO_LINGER, "SO_LINGER"),
        ];
        for (level, opt, name) in names {
            let n: &'static str = Box::leak(format!("{who} {name}").into_boxed_str());
            opts.push((f, level, opt, n));
        }
    }
    let before: Vec<Vec<u8>> = opts.iter().map(|&(f, l, o, _)| get(f, l, o)).collect();
    let pid = std::process::id();
    let tmp = format!("{ready}.tmp");
    std::fs::write(&tmp, format!("ready {pid}")).unwrap();
    std::fs::rename(&tmp, ready).unwrap();
    loop {
        while !GO.swap(false, Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut bad = Vec::new();
        for (i, &(f, l, o, name)) in opts.iter().enumerate() {
            let now = get(f, l, o);
            if now != before[i] {
                bad.push(format!("{name} was {:?}, now {:?}", before[i], now));
            }
        }
        let verdict = if bad.is_empty() {
            "check ok".to_string()
        } else {
            format!("bad: {}", bad.join("; "))
        };
        let tmp = format!("{out}.tmp");
        std::fs::write(&tmp, verdict).unwrap();
        std::fs::rename(&tmp, out).unwrap();
        let _ = (&u, &u6, &c, &s, &l);
    }
}
