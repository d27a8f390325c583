//! criu test victim: inet socket state beyond `criu-victim-inet-opts`, read back after a
//! restore.
//!
//! `criu-victim-inet-extra OUT READY`:
//! - options: on both ends of a loopback TCP connection `TCP_USER_TIMEOUT`, `TCP_CONGESTION`
//!   `reno`, `SO_RCVTIMEO`, `SO_SNDTIMEO`, `SO_RCVBUF`, `SO_SNDBUF`, `IP_TTL`; on a listener
//!   `SO_REUSEADDR`, `SO_REUSEPORT`, `IP_TRANSPARENT`; on an IPv6 UDP socket
//!   `IPV6_TRANSPARENT`; on an IPv4 UDP socket a classic BPF filter (`SO_ATTACH_FILTER`,
//!   read back with `SO_GET_FILTER`);
//! - UDP sockets shut down: one bound, `SHUT_RD`; one connected, `SHUT_WR`; one connected,
//!   `SHUT_RDWR`; one connected and left open. Each is probed: a read that does not wait
//!   gives the end of stream (0) once reading is shut down, `EAGAIN` otherwise; a send of an
//!   empty datagram fails with `EPIPE` once sending is shut down.
//!
//! - multicast memberships on `lo`: an IPv4 UDP socket joined to 239.1.2.3 (`IP_ADD_MEMBERSHIP`)
//!   and 239.4.5.6 (`MCAST_JOIN_GROUP`), an IPv6 one to ff15::1234 (`IPV6_JOIN_GROUP`); each
//!   socket is asked (`MCAST_MSFILTER`) about those groups and 239.9.9.9 / ff15::9 it did not
//!   join, and a datagram sent to 239.1.2.3 on `lo` must reach the IPv4 one.
//!
//! Every value is read once before `ready PID` goes into READY and again on SIGUSR1: `check
//! ok` when each equals what it was, else `bad: NAME was A, now B` into OUT.
// Unsafe code: raw socket options, recv/send probes, signal handler.
#![allow(unsafe_code)]

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

fn set_bytes(fd: RawFd, level: i32, opt: i32, v: &[u8], name: &str) {
    // SAFETY: setsockopt reads v.len() bytes from a live slice.
    let r = unsafe { libc::setsockopt(fd, level, opt, v.as_ptr().cast(), v.len() as u32) };
    assert_eq!(r, 0, "{name}: {}", std::io::Error::last_os_error());
}

fn set(fd: RawFd, level: i32, opt: i32, v: i32, name: &str) {
    set_bytes(fd, level, opt, &v.to_ne_bytes(), name);
}

/// The option's bytes (up to 64).
fn get(fd: RawFd, level: i32, opt: i32) -> Vec<u8> {
    let mut b = [0u8; 64];
    let mut len = b.len() as libc::socklen_t;
    // SAFETY: getsockopt writes at most len bytes into b.
    let r = unsafe { libc::getsockopt(fd, level, opt, b.as_mut_ptr().cast(), &mut len) };
    if r < 0 {
        return format!("error {}", std::io::Error::last_os_error()).into_bytes();
    }
    b[..len as usize].to_vec()
}

/// The attached filter (`SO_GET_FILTER` counts in instructions).
fn filter(fd: RawFd) -> Vec<u8> {
    let mut prog = [libc::sock_filter {
        code: 0,
        jt: 0,
        jf: 0,
        k: 0,
    }; 8];
    let mut len = prog.len() as libc::socklen_t;
    // SAFETY: the buffer holds `len` instructions, the unit SO_GET_FILTER counts in.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_GET_FILTER,
            prog.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r < 0 {
        return format!("error {}", std::io::Error::last_os_error()).into_bytes();
    }
    format!("{:?}", &prog[..(len as usize).min(8)]).into_bytes()
}

/// How a UDP socket answers: reading (`eof` / `wait` / `data` / error), sending an empty
/// datagram when connected (`sent` / `EPIPE` / error).
fn probe(fd: RawFd, connected: bool) -> Vec<u8> {
    let mut b = [0u8; 16];
    // SAFETY: recv writes at most 16 bytes into b.
    let r = unsafe {
        libc::recv(
            fd,
            b.as_mut_ptr().cast(),
            b.len(),
            libc::MSG_DONTWAIT | libc::MSG_PEEK,
        )
    };
    let e = std::io::Error::last_os_error();
    let rd = match r {
        0 => "eof".to_string(),
        n if n > 0 => "data".to_string(),
        _ if e.raw_os_error() == Some(libc::EAGAIN) => "wait".to_string(),
        _ => format!("{e}"),
    };
    let wr = if connected {
        // SAFETY: send of zero bytes reads nothing.
        let r = unsafe { libc::send(fd, b.as_ptr().cast(), 0, libc::MSG_NOSIGNAL) };
        let e = std::io::Error::last_os_error();
        if r >= 0 {
            "sent".to_string()
        } else if e.raw_os_error() == Some(libc::EPIPE) {
            "EPIPE".to_string()
        } else {
            format!("{e}")
        }
    } else {
        "-".to_string()
    };
    format!("read {rd}, send {wr}").into_bytes()
}

type Read = Box<dyn Fn() -> Vec<u8>>;

/// `struct group_filter` with room for one source.
#[repr(C)]
struct GroupFilter {
    interface: u32,
    group: libc::sockaddr_storage,
    fmode: u32,
    numsrc: u32,
    slist: [libc::sockaddr_storage; 1],
}

/// `struct group_req`.
#[repr(C)]
struct GroupReq {
    interface: u32,
    group: libc::sockaddr_storage,
}

fn storage(group: std::net::IpAddr) -> libc::sockaddr_storage {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match group {
        std::net::IpAddr::V4(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            let sin = unsafe {
                &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            sin.sin_family = libc::AF_INET as u16;
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.octets());
        }
        std::net::IpAddr::V6(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            let sin6 = unsafe {
                &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            sin6.sin6_family = libc::AF_INET6 as u16;
            sin6.sin6_addr.s6_addr = a.octets();
        }
    }
    ss
}

/// What the socket says of its membership of `group` on `ifindex`.
fn member(fd: RawFd, level: i32, ifindex: u32, group: &str) -> Vec<u8> {
    // SAFETY: all-zero is a valid group_filter.
    let mut gf: GroupFilter = unsafe { std::mem::zeroed() };
    gf.interface = ifindex;
    gf.group = storage(group.parse().unwrap());
    let mut len = size_of::<GroupFilter>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most len bytes into gf.
    let r = unsafe {
        libc::getsockopt(
            fd,
            level,
            48,
            (&mut gf as *mut GroupFilter).cast(),
            &mut len,
        )
    };
    let e = std::io::Error::last_os_error();
    if r == 0 {
        format!("member, mode {} sources {}", gf.fmode, gf.numsrc).into_bytes()
    } else {
        format!("{e}").into_bytes()
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, out, ready] = &args[..] else {
        eprintln!("usage: criu-victim-inet-extra OUT READY");
        std::process::exit(2);
    };
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let mut reads: Vec<(String, Read)> = Vec::new();

    // A listener with its reuse options and IP_TRANSPARENT (before bind).
    // SAFETY: socket() takes no pointers; the result is checked and owned below.
    let lf = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    assert!(lf >= 0);
    // SAFETY: lf is a new descriptor owned by nothing else.
    let l = unsafe { TcpListener::from_raw_fd(lf) };
    set(lf, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1, "SO_REUSEADDR");
    set(lf, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1, "SO_REUSEPORT");
    set(lf, libc::SOL_IP, libc::IP_TRANSPARENT, 1, "IP_TRANSPARENT");
    // SAFETY: all-zero is a valid sockaddr_in; bind reads it.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as u16;
    sa.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
    // SAFETY: bind and listen read a live sockaddr_in.
    unsafe {
        assert_eq!(
            libc::bind(
                lf,
                (&sa as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as u32
            ),
            0
        );
        assert_eq!(libc::listen(lf, 8), 0);
    }
    for (o, lv, n) in [
        (libc::SO_REUSEADDR, libc::SOL_SOCKET, "SO_REUSEADDR"),
        (libc::SO_REUSEPORT, libc::SOL_SOCKET, "SO_REUSEPORT"),
        (libc::IP_TRANSPARENT, libc::SOL_IP, "IP_TRANSPARENT"),
    ] {
        reads.push((format!("listener {n}"), Box::new(move || get(lf, lv, o))));
    }

    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    let tv = libc::timeval {
        tv_sec: 3,
        tv_usec: 250_000,
    };
    // SAFETY: a timeval is plain bytes.
    let tvb = unsafe {
        std::slice::from_raw_parts(
            (&tv as *const libc::timeval).cast::<u8>(),
            size_of::<libc::timeval>(),
        )
    };
    for (f, who) in [(c.as_raw_fd(), "client"), (s.as_raw_fd(), "server")] {
        set(
            f,
            libc::SOL_TCP,
            libc::TCP_USER_TIMEOUT,
            12345,
            "TCP_USER_TIMEOUT",
        );
        set_bytes(
            f,
            libc::SOL_TCP,
            libc::TCP_CONGESTION,
            b"reno",
            "TCP_CONGESTION",
        );
        set_bytes(f, libc::SOL_SOCKET, libc::SO_RCVTIMEO, tvb, "SO_RCVTIMEO");
        set_bytes(f, libc::SOL_SOCKET, libc::SO_SNDTIMEO, tvb, "SO_SNDTIMEO");
        set(f, libc::SOL_SOCKET, libc::SO_RCVBUF, 60000, "SO_RCVBUF");
        set(f, libc::SOL_SOCKET, libc::SO_SNDBUF, 40000, "SO_SNDBUF");
        set(f, libc::SOL_IP, libc::IP_TTL, 17, "IP_TTL");
        for (lv, o, n) in [
            (libc::SOL_TCP, libc::TCP_USER_TIMEOUT, "TCP_USER_TIMEOUT"),
            (libc::SOL_TCP, libc::TCP_CONGESTION, "TCP_CONGESTION"),
            (libc::SOL_SOCKET, libc::SO_RCVTIMEO, "SO_RCVTIMEO"),
            (libc::SOL_SOCKET, libc::SO_SNDTIMEO, "SO_SNDTIMEO"),
            (libc::SOL_SOCKET, libc::SO_RCVBUF, "SO_RCVBUF"),
            (libc::SOL_SOCKET, libc::SO_SNDBUF, "SO_SNDBUF"),
            (libc::SOL_IP, libc::IP_TTL, "IP_TTL"),
        ] {
            reads.push((format!("{who} {n}"), Box::new(move || get(f, lv, o))));
        }
    }

    // IPV6_TRANSPARENT on an IPv6 UDP socket.
    // SAFETY: socket() takes no pointers; the result is checked and owned below.
    let u6f = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_DGRAM, 0) };
    assert!(u6f >= 0);
    // SAFETY: u6f is a new descriptor owned by nothing else.
    let u6 = unsafe { OwnedFd::from_raw_fd(u6f) };
    set(
        u6f,
        libc::SOL_IPV6,
        libc::IPV6_TRANSPARENT,
        1,
        "IPV6_TRANSPARENT",
    );
    reads.push((
        "udp6 IPV6_TRANSPARENT".into(),
        Box::new(move || get(u6f, libc::SOL_IPV6, libc::IPV6_TRANSPARENT)),
    ));

    // A filter: accept datagrams of up to 0x123 bytes.
    let uf = UdpSocket::bind("127.0.0.1:0").unwrap();
    let ufd = uf.as_raw_fd();
    let prog = [libc::sock_filter {
        code: 0x06, // BPF_RET | BPF_K
        jt: 0,
        jf: 0,
        k: 0x123,
    }];
    let fprog = libc::sock_fprog {
        len: 1,
        filter: prog.as_ptr().cast_mut(),
    };
    // SAFETY: setsockopt reads a live sock_fprog pointing at a live program.
    let r = unsafe {
        libc::setsockopt(
            ufd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast(),
            size_of::<libc::sock_fprog>() as u32,
        )
    };
    assert_eq!(r, 0, "SO_ATTACH_FILTER");
    reads.push(("udp filter".into(), Box::new(move || filter(ufd))));

    // UDP sockets shut down.
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let pa = peer.local_addr().unwrap();
    let rd = UdpSocket::bind("127.0.0.1:0").unwrap();
    // SAFETY: shutdown takes no pointers; an unconnected socket says ENOTCONN but keeps it.
    unsafe { libc::shutdown(rd.as_raw_fd(), libc::SHUT_RD) };
    let mut shut = vec![(rd, false, "bound SHUT_RD")];
    for (how, name) in [
        (libc::SHUT_WR, "connected SHUT_WR"),
        (libc::SHUT_RDWR, "connected SHUT_RDWR"),
        (-1, "connected open"),
    ] {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        u.connect(pa).unwrap();
        if how >= 0 {
            // SAFETY: shutdown takes no pointers.
            assert_eq!(unsafe { libc::shutdown(u.as_raw_fd(), how) }, 0, "{name}");
        }
        shut.push((u, true, name));
    }
    for (u, connected, name) in &shut {
        let (f, connected) = (u.as_raw_fd(), *connected);
        reads.push((format!("udp {name}"), Box::new(move || probe(f, connected))));
    }

    // Multicast memberships on lo.
    // SAFETY: if_nametoindex reads a live C string.
    let lo = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
    let m4 = UdpSocket::bind("0.0.0.0:0").unwrap();
    let m4f = m4.as_raw_fd();
    let mreq = libc::ip_mreqn {
        imr_multiaddr: libc::in_addr {
            s_addr: u32::from_ne_bytes([239, 1, 2, 3]),
        },
        imr_address: libc::in_addr { s_addr: 0 },
        imr_ifindex: lo as i32,
    };
    // SAFETY: a ip_mreqn is plain bytes.
    let mb = unsafe {
        std::slice::from_raw_parts(
            (&mreq as *const libc::ip_mreqn).cast::<u8>(),
            size_of::<libc::ip_mreqn>(),
        )
    };
    set_bytes(
        m4f,
        libc::IPPROTO_IP,
        libc::IP_ADD_MEMBERSHIP,
        mb,
        "IP_ADD_MEMBERSHIP",
    );
    let gr = GroupReq {
        interface: lo,
        group: storage("239.4.5.6".parse().unwrap()),
    };
    // SAFETY: a group_req is plain bytes.
    let gb = unsafe {
        std::slice::from_raw_parts((&gr as *const GroupReq).cast::<u8>(), size_of::<GroupReq>())
    };
    set_bytes(m4f, libc::IPPROTO_IP, 42, gb, "MCAST_JOIN_GROUP");
    let m6 = UdpSocket::bind("[::]:0").unwrap();
    let m6f = m6.as_raw_fd();
    let mreq6 = libc::ipv6_mreq {
        ipv6mr_multiaddr: libc::in6_addr {
            s6_addr: "ff15::1234".parse::<std::net::Ipv6Addr>().unwrap().octets(),
        },
        ipv6mr_interface: lo,
    };
    // SAFETY: a ipv6_mreq is plain bytes.
    let mb6 = unsafe {
        std::slice::from_raw_parts(
            (&mreq6 as *const libc::ipv6_mreq).cast::<u8>(),
            size_of::<libc::ipv6_mreq>(),
        )
    };
    set_bytes(
        m6f,
        libc::IPPROTO_IPV6,
        libc::IPV6_ADD_MEMBERSHIP,
        mb6,
        "IPV6_JOIN_GROUP",
    );
    for g in ["239.1.2.3", "239.4.5.6", "239.9.9.9"] {
        reads.push((
            format!("udp {g} membership"),
            Box::new(move || member(m4f, libc::IPPROTO_IP, lo, g)),
        ));
    }
    for g in ["ff15::1234", "ff15::9"] {
        reads.push((
            format!("udp6 {g} membership"),
            Box::new(move || member(m6f, libc::IPPROTO_IPV6, lo, g)),
        ));
    }
    // A datagram to 239.1.2.3 on lo reaches m4.
    let port = m4.local_addr().unwrap().port();
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let ifreq = libc::ip_mreqn {
        imr_multiaddr: libc::in_addr { s_addr: 0 },
        imr_address: libc::in_addr { s_addr: 0 },
        imr_ifindex: lo as i32,
    };
    // SAFETY: a ip_mreqn is plain bytes.
    let ib = unsafe {
        std::slice::from_raw_parts(
            (&ifreq as *const libc::ip_mreqn).cast::<u8>(),
            size_of::<libc::ip_mreqn>(),
        )
    };
    set_bytes(
        sender.as_raw_fd(),
        libc::IPPROTO_IP,
        libc::IP_MULTICAST_IF,
        ib,
        "IP_MULTICAST_IF",
    );
    let m4c = m4.try_clone().unwrap();
    reads.push((
        "udp 239.1.2.3 delivery".into(),
        Box::new(move || {
            m4c.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            if let Err(e) = sender.send_to(b"mc", ("239.1.2.3", port)) {
                return format!("send: {e}").into_bytes();
            }
            let mut b = [0u8; 8];
            let got = match m4c.recv(&mut b) {
                Ok(n) => format!("got {:?}", String::from_utf8_lossy(&b[..n])),
                Err(e) => format!("recv: {e}"),
            };
            m4c.set_nonblocking(true).unwrap();
            while m4c.recv(&mut b).is_ok() {}
            m4c.set_nonblocking(false).unwrap();
            got.into_bytes()
        }),
    ));

    let before: Vec<Vec<u8>> = reads.iter().map(|(_, r)| r()).collect();
    for (i, (name, _)) in reads.iter().enumerate() {
        eprintln!("{name}: {}", String::from_utf8_lossy(&before[i]));
    }
    let pid = std::process::id();
    let tmp = format!("{ready}.tmp");
    std::fs::write(&tmp, format!("ready {pid}")).unwrap();
    std::fs::rename(&tmp, ready).unwrap();
    loop {
        while !GO.swap(false, Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut bad = Vec::new();
        for (i, (name, r)) in reads.iter().enumerate() {
            let now = r();
            if now != before[i] {
                bad.push(format!(
                    "{name} was {:?}, now {:?}",
                    String::from_utf8_lossy(&before[i]),
                    String::from_utf8_lossy(&now)
                ));
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
        // Empty datagrams the probes sent: drained, so that the peer's queue stays small.
        peer.set_nonblocking(true).unwrap();
        while peer.recv(&mut [0u8; 4]).is_ok() {}
        let _ = (&l, &c, &s, &u6, &uf, &shut, &m4, &m6);
    }
}
