//! criu test victim: the inet cases beyond plain connections, checking itself after a restore.
//!
//! `criu-victim-inet-more OUT READY MODE [PORT]`, MODE one of
//! - `closing`: two connections inside itself whose FINs wait behind bytes the peer has no
//!   room for: one end in LAST_ACK (it got the peer's FIN, then shut down), one in CLOSING (it
//!   shut down, then got the peer's FIN); the check reads every byte and each EOF once, in
//!   order, and sees both ends reach CLOSE once the peers drained them.
//! - `syn-sent PORT`: a non-blocking connect to 127.0.0.1:PORT whose SYNs the test drops; the
//!   check waits for the connection (the test lets it through after the restore) and sends
//!   "syn-ok" on it.
//! - `reset`: a connection the peer reset (SO_LINGER 0, close), its error unread; the check
//!   sees a dead socket: state CLOSE, a write fails, a read gives nothing.
//! - `dgram`: UDP-Lite over IPv4 and IPv6 (bound and connected), a raw ICMP socket with an
//!   ICMP filter connected to 127.0.0.1, a raw ICMPv6 socket with a filter, a raw UDP socket
//!   with IP_HDRINCL and IP_NODEFRAG, a UDP socket with SO_BROADCAST, an empty corked UDP
//!   socket; the check reads each option back and sends through each socket.
//! - `corked`: a corked UDP socket with a datagram being built (its dump is refused).
//!
//! Writes `ready PID` into READY; on SIGUSR1 writes `check ok` or `bad: WHY` into OUT.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

const LAST_ACK: u8 = 9;
const CLOSING: u8 = 11;
const FIN_WAIT2: u8 = 5;
const SYN_SENT: u8 = 2;
const CLOSE: u8 = 7;

fn state(fd: RawFd) -> u8 {
    let mut b = [0u8; 8];
    let mut len = b.len() as libc::socklen_t;
    // SAFETY: getsockopt writes at most len bytes into b.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_TCP,
            libc::TCP_INFO,
            b.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r < 0 { 0 } else { b[0] }
}

fn want_state(s: &TcpStream, want: u8, what: &str) -> Result<(), String> {
    let got = state(s.as_raw_fd());
    if got != want {
        return Err(format!("{what}: tcp state {got}, want {want}"));
    }
    Ok(())
}

fn wait_state(s: &TcpStream, want: u8, what: &str) -> Result<(), String> {
    let end = Instant::now() + Duration::from_secs(8);
    while state(s.as_raw_fd()) != want {
        if Instant::now() > end {
            return want_state(s, want, what);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn set_int(fd: RawFd, level: i32, opt: i32, v: i32) {
    // SAFETY: setsockopt reads an int from a live local.
    let r = unsafe { libc::setsockopt(fd, level, opt, (&v as *const i32).cast(), 4) };
    assert_eq!(r, 0, "setsockopt {level}/{opt}");
}

fn get_int(fd: RawFd, level: i32, opt: i32) -> i32 {
    let mut v = 0i32;
    let mut len = 4 as libc::socklen_t;
    // SAFETY: getsockopt writes at most 4 bytes into v.
    let r = unsafe { libc::getsockopt(fd, level, opt, (&mut v as *mut i32).cast(), &mut len) };
    if r < 0 { -1 } else { v }
}

fn pat(i: usize) -> u8 {
    (i % 241) as u8
}

/// Fills `w` (non-blocking) until neither its send buffer nor the peer's receive buffer has
/// room; returns the bytes written.
fn fill(w: &TcpStream) -> usize {
    w.set_nonblocking(true).unwrap();
    let (mut sent, mut idle) = (0, 0);
    while idle < 20 {
        let chunk: Vec<u8> = (sent..sent + 1000).map(pat).collect();
        match (&*w).write(&chunk) {
            Ok(n) => {
                sent += n;
                idle = 0;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                idle += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("fill: {e}"),
        }
    }
    w.set_nonblocking(false).unwrap();
    sent
}

/// A connection whose client has a small receive buffer and whose server a small send buffer.
fn pair(l: &TcpListener) -> (TcpStream, TcpStream) {
    // SAFETY: plain socket(2); owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    assert!(fd >= 0);
    // SAFETY: fd is fresh and ours.
    let c = unsafe { TcpStream::from_raw_fd(fd) };
    set_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, 4096);
    let a = l.local_addr().unwrap();
    let SocketAddr::V4(a4) = a else { panic!() };
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: a4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a4.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sa is a live sockaddr_in.
    let r = unsafe {
        libc::connect(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        )
    };
    assert_eq!(r, 0, "connect");
    let (s, _) = l.accept().unwrap();
    set_int(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, 4096);
    (c, s)
}

fn read_all_then_eof(s: &mut TcpStream, n: usize, what: &str) -> Result<(), String> {
    s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let mut got = vec![0u8; n];
    s.read_exact(&mut got)
        .map_err(|e| format!("{what}: reading {n} bytes: {e}"))?;
    if got.iter().enumerate().any(|(i, &b)| b != pat(i)) {
        return Err(format!("{what}: bytes out of order"));
    }
    match s.read(&mut [0u8; 16]) {
        Ok(0) => Ok(()),
        Ok(k) => Err(format!("{what}: {k} more bytes instead of EOF")),
        Err(e) => Err(format!("{what}: {e} instead of EOF")),
    }
}

enum State {
    Closing {
        cl: TcpStream,
        sl: TcpStream,
        nl: usize,
        cc: TcpStream,
        sc: TcpStream,
        nc: usize,
        _l: TcpListener,
    },
    SynSent(TcpStream),
    Reset(TcpStream, #[allow(dead_code)] TcpListener),
    Dgram(Vec<OwnedFd>, Vec<UdpSocket>),
    Corked(#[allow(dead_code)] UdpSocket),
}

fn closing() -> State {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    // LAST_ACK: the client shuts down; the server fills the client, then shuts down.
    let (cl, sl) = pair(&l);
    cl.shutdown(Shutdown::Write).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let nl = fill(&sl);
    sl.shutdown(Shutdown::Write).unwrap();
    // CLOSING: the server fills the client and shuts down (its FIN waits behind the bytes),
    // then the client shuts down.
    let (cc, sc) = pair(&l);
    let nc = fill(&sc);
    sc.shutdown(Shutdown::Write).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    cc.shutdown(Shutdown::Write).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    State::Closing {
        cl,
        sl,
        nl,
        cc,
        sc,
        nc,
        _l: l,
    }
}

fn raw_socket(family: i32, proto: i32) -> OwnedFd {
    // SAFETY: plain socket(2); owned below.
    let fd = unsafe { libc::socket(family, libc::SOCK_RAW, proto) };
    assert!(fd >= 0, "raw socket {family}/{proto}");
    // SAFETY: fd is fresh and ours.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn udplite(addr: &str) -> UdpSocket {
    let v6 = addr.starts_with('[');
    let fam = if v6 { libc::AF_INET6 } else { libc::AF_INET };
    // SAFETY: plain socket(2); owned below.
    let fd = unsafe { libc::socket(fam, libc::SOCK_DGRAM, libc::IPPROTO_UDPLITE) };
    assert!(fd >= 0, "udplite socket");
    // SAFETY: fd is fresh and ours.
    let u = unsafe { UdpSocket::from_raw_fd(fd) };
    let a: SocketAddr = addr.parse().unwrap();
    let s2 = socket2_bind(fd, a);
    assert!(s2, "bind udplite");
    u
}

/// bind(2) of `a` (v4 or v6) on `fd`.
fn socket2_bind(fd: RawFd, a: SocketAddr) -> bool {
    match a {
        SocketAddr::V4(a4) => {
            let sa = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: a4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sa is a live sockaddr_in.
            unsafe {
                libc::bind(
                    fd,
                    (&sa as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as u32,
                ) == 0
            }
        }
        SocketAddr::V6(a6) => {
            // SAFETY: all-zero is a valid sockaddr_in6.
            let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sa.sin6_family = libc::AF_INET6 as u16;
            sa.sin6_port = a6.port().to_be();
            sa.sin6_addr.s6_addr = a6.ip().octets();
            // SAFETY: sa is a live sockaddr_in6.
            unsafe {
                libc::bind(
                    fd,
                    (&sa as *const libc::sockaddr_in6).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as u32,
                ) == 0
            }
        }
    }
}

fn connect_v4(fd: RawFd, ip: [u8; 4], port: u16) -> i32 {
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sa is a live sockaddr_in.
    unsafe {
        libc::connect(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        )
    }
}

/// ICMP filter words: everything blocked but echo replies (type 0 / ICMPv6 129).
const ICMP_FILTER4: u32 = !1u32;
const ICMP6_FILTER_WORD4: u32 = !(1u32 << 1);

fn dgram() -> State {
    let mut raws = Vec::new();
    let mut udps = Vec::new();
    for a in ["127.0.0.1:0", "[::1]:0"] {
        let r = udplite(a);
        let c = udplite(a);
        c.connect(r.local_addr().unwrap()).unwrap();
        udps.push(r);
        udps.push(c);
    }
    // Raw ICMP with a filter, connected to 127.0.0.1.
    let icmp = raw_socket(libc::AF_INET, libc::IPPROTO_ICMP);
    let f = ICMP_FILTER4;
    // SAFETY: setsockopt reads one u32 (struct icmp_filter).
    let r = unsafe { libc::setsockopt(icmp.as_raw_fd(), 255, 1, (&f as *const u32).cast(), 4) };
    assert_eq!(r, 0, "ICMP_FILTER");
    assert_eq!(connect_v4(icmp.as_raw_fd(), [127, 0, 0, 1], 0), 0);
    raws.push(icmp);
    // Raw ICMPv6 with a filter.
    let icmp6 = raw_socket(libc::AF_INET6, libc::IPPROTO_ICMPV6);
    let mut f6 = [u32::MAX; 8];
    f6[4] = ICMP6_FILTER_WORD4;
    // SAFETY: setsockopt reads eight u32s (struct icmp6_filter).
    let r = unsafe {
        libc::setsockopt(
            icmp6.as_raw_fd(),
            libc::IPPROTO_ICMPV6,
            1,
            f6.as_ptr().cast(),
            32,
        )
    };
    assert_eq!(r, 0, "ICMPV6_FILTER");
    raws.push(icmp6);
    // Raw UDP with IP_HDRINCL and IP_NODEFRAG.
    let ru = raw_socket(libc::AF_INET, libc::IPPROTO_UDP);
    set_int(ru.as_raw_fd(), libc::SOL_IP, libc::IP_HDRINCL, 1);
    set_int(ru.as_raw_fd(), libc::SOL_IP, 22, 1);
    raws.push(ru);
    // UDP with SO_BROADCAST; an empty corked UDP socket connected to the first.
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    b.set_broadcast(true).unwrap();
    let ck = UdpSocket::bind("127.0.0.1:0").unwrap();
    ck.connect(b.local_addr().unwrap()).unwrap();
    set_int(ck.as_raw_fd(), libc::SOL_UDP, libc::UDP_CORK, 1);
    udps.push(b);
    udps.push(ck);
    State::Dgram(raws, udps)
}

fn check_dgram(raws: &[OwnedFd], udps: &[UdpSocket]) -> Result<(), String> {
    for (i, pair) in udps[..4].chunks(2).enumerate() {
        let (r, c) = (&pair[0], &pair[1]);
        if get_int(r.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PROTOCOL) != libc::IPPROTO_UDPLITE {
            return Err(format!("udplite {i}: protocol lost"));
        }
        r.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.send(b"lite")
            .map_err(|e| format!("udplite {i} send: {e}"))?;
        let mut b = [0u8; 8];
        let (n, from) = r
            .recv_from(&mut b)
            .map_err(|e| format!("udplite {i} recv: {e}"))?;
        if &b[..n] != b"lite" || from != c.local_addr().unwrap() {
            return Err(format!("udplite {i}: got {n} bytes from {from}"));
        }
    }
    // The raw ICMP socket: filter and connection kept (send without an address).
    let icmp = raws[0].as_raw_fd();
    let mut f = 0u32;
    let mut len = 4 as libc::socklen_t;
    // SAFETY: getsockopt writes at most 4 bytes into f.
    unsafe { libc::getsockopt(icmp, 255, 1, (&mut f as *mut u32).cast(), &mut len) };
    if f != ICMP_FILTER4 {
        return Err(format!("ICMP_FILTER {f:#x}"));
    }
    // An echo request (type 8), checksum filled in.
    let mut req = [8u8, 0, 0, 0, 0x12, 0x34, 0, 1, b'p', b'i'];
    let sum = {
        let mut s: u32 = 0;
        for c in req.chunks(2) {
            s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    };
    req[2..4].copy_from_slice(&sum.to_be_bytes());
    // SAFETY: send reads req.len() bytes from req.
    if unsafe { libc::send(icmp, req.as_ptr().cast(), req.len(), 0) } < 0 {
        return Err(format!(
            "raw icmp send (connected): {}",
            std::io::Error::last_os_error()
        ));
    }
    // The reply passes the filter: an IP header, then type 0 and our id.
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let mut b = [0u8; 128];
        // SAFETY: recv writes at most b.len() bytes.
        let n = unsafe { libc::recv(icmp, b.as_mut_ptr().cast(), b.len(), libc::MSG_DONTWAIT) };
        if n > 24 {
            let h = usize::from(b[0] & 0xf) * 4;
            if b[h] == 0 && b[h + 4..h + 6] == [0x12, 0x34] {
                break;
            }
            return Err(format!("raw icmp: type {} passed the filter", b[h]));
        }
        if Instant::now() > end {
            return Err("raw icmp: no echo reply".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut f6 = [0u32; 8];
    let mut len = 32 as libc::socklen_t;
    // SAFETY: getsockopt writes at most 32 bytes into f6.
    unsafe {
        libc::getsockopt(
            raws[1].as_raw_fd(),
            libc::IPPROTO_ICMPV6,
            1,
            f6.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if f6[4] != ICMP6_FILTER_WORD4 || f6[0] != u32::MAX {
        return Err(format!("ICMPV6_FILTER {f6:x?}"));
    }
    let ru = raws[2].as_raw_fd();
    if get_int(ru, libc::SOL_SOCKET, libc::SO_PROTOCOL) != libc::IPPROTO_UDP
        || get_int(ru, libc::SOL_IP, libc::IP_HDRINCL) != 1
        || get_int(ru, libc::SOL_IP, 22) != 1
    {
        return Err("raw udp: protocol, IP_HDRINCL or IP_NODEFRAG lost".into());
    }
    let (b, ck) = (&udps[4], &udps[5]);
    if !b.broadcast().unwrap_or(false) {
        return Err("SO_BROADCAST lost".into());
    }
    if get_int(ck.as_raw_fd(), libc::SOL_UDP, libc::UDP_CORK) != 1 {
        return Err("UDP_CORK lost".into());
    }
    ck.send(b"cor").map_err(|e| format!("corked send: {e}"))?;
    ck.send(b"ked").map_err(|e| format!("corked send: {e}"))?;
    set_int(ck.as_raw_fd(), libc::SOL_UDP, libc::UDP_CORK, 0);
    b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    let n = b
        .recv(&mut buf)
        .map_err(|e| format!("uncorked recv: {e}"))?;
    if &buf[..n] != b"corked" {
        return Err(format!("uncorked datagram {:?}", &buf[..n]));
    }
    Ok(())
}

fn check(st: &mut State) -> Result<(), String> {
    match st {
        State::Closing {
            cl,
            sl,
            nl,
            cc,
            sc,
            nc,
            ..
        } => {
            want_state(sl, LAST_ACK, "LAST_ACK end")?;
            want_state(cl, FIN_WAIT2, "its peer")?;
            want_state(sc, CLOSING, "CLOSING end")?;
            want_state(cc, FIN_WAIT2, "its peer")?;
            if (&*sl).write(b"x").is_ok() || (&*sc).write(b"x").is_ok() {
                return Err("a shut-down end could write".into());
            }
            read_all_then_eof(cl, *nl, "LAST_ACK's peer")?;
            read_all_then_eof(cc, *nc, "CLOSING's peer")?;
            wait_state(sl, CLOSE, "LAST_ACK end once acknowledged")?;
            wait_state(sc, CLOSE, "CLOSING end once acknowledged")?;
            Ok(())
        }
        State::SynSent(s) => {
            let end = Instant::now() + Duration::from_secs(8);
            while state(s.as_raw_fd()) == SYN_SENT {
                if Instant::now() > end {
                    return Err("still in SYN_SENT".into());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            want_state(s, 1, "the connection")?;
            s.set_nonblocking(false).unwrap();
            (&*s)
                .write_all(b"syn-ok")
                .map_err(|e| format!("write: {e}"))
        }
        State::Reset(s, _) => {
            want_state(s, CLOSE, "the reset end")?;
            if (&*s).write(b"x").is_ok() {
                return Err("a reset socket could write".into());
            }
            s.set_nonblocking(true).unwrap();
            match (&*s).read(&mut [0u8; 4]) {
                Ok(0) | Err(_) => Ok(()),
                Ok(n) => Err(format!("a reset socket read {n} bytes")),
            }
        }
        State::Dgram(raws, udps) => check_dgram(raws, udps),
        State::Corked(_) => Ok(()),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (out, ready, mode, port) = match &args[..] {
        [_, out, ready, mode] => (out, ready, mode.as_str(), None),
        [_, out, ready, mode, p] => (out, ready, mode.as_str(), p.parse::<u16>().ok()),
        _ => {
            eprintln!("usage: criu-victim-inet-more OUT READY MODE [PORT]");
            std::process::exit(2);
        }
    };
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let mut st = match mode {
        "closing" => closing(),
        "syn-sent" => {
            // SAFETY: plain socket(2); owned below.
            let fd =
                unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0) };
            assert!(fd >= 0);
            // SAFETY: fd is fresh and ours.
            let s = unsafe { TcpStream::from_raw_fd(fd) };
            let r = connect_v4(fd, [127, 0, 0, 1], port.expect("PORT"));
            assert!(
                r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINPROGRESS)
            );
            std::thread::sleep(Duration::from_millis(100));
            assert_eq!(state(fd), SYN_SENT);
            State::SynSent(s)
        }
        "reset" => {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let (s, _) = l.accept().unwrap();
            let lg = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: setsockopt reads a struct linger from a live local.
            let r = unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&lg as *const libc::linger).cast(),
                    std::mem::size_of::<libc::linger>() as u32,
                )
            };
            assert_eq!(r, 0, "SO_LINGER");
            drop(s);
            let end = Instant::now() + Duration::from_secs(5);
            while state(c.as_raw_fd()) != CLOSE {
                assert!(Instant::now() < end, "not reset");
                std::thread::sleep(Duration::from_millis(10));
            }
            State::Reset(c, l)
        }
        "dgram" => dgram(),
        "corked" => {
            let r = UdpSocket::bind("127.0.0.1:0").unwrap();
            let ck = UdpSocket::bind("127.0.0.1:0").unwrap();
            set_int(ck.as_raw_fd(), libc::SOL_UDP, libc::UDP_CORK, 1);
            ck.send_to(b"pending", r.local_addr().unwrap()).unwrap();
            State::Corked(ck)
        }
        m => panic!("mode {m}"),
    };
    let pid = std::process::id();
    let tmp = format!("{ready}.tmp");
    std::fs::write(&tmp, format!("ready {pid}")).unwrap();
    std::fs::rename(&tmp, ready).unwrap();
    while !GO.swap(false, Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let verdict = match check(&mut st) {
        Ok(()) => "check ok".to_string(),
        Err(e) => format!("bad: {e}"),
    };
    let tmp = format!("{out}.tmp");
    std::fs::write(&tmp, verdict).unwrap();
    std::fs::rename(&tmp, out).unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}
