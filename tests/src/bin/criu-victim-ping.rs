//! criu test victim: ICMP "ping" sockets (`socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)`), which
//! need the netns's `net.ipv4.ping_group_range` to hold the victim's group.
//!
//! `criu-victim-ping OUT READY`: a ping socket bound to 127.0.0.1 (its echo id picked by the
//! kernel) and one connected to 127.0.0.1; writes `ready PID ID` into READY, then on SIGUSR1
//! checks that the first still has its id and the second is connected, and that echo
//! requests sent on each come back (with the id, and the payload sent), then writes `check ok` or
//! `bad: WHY` into OUT.
#![allow(unsafe_code)]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

fn sin(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn name(fd: &OwnedFd) -> Option<SocketAddrV4> {
    // SAFETY: all-zero is a valid sockaddr_in.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let p = (&mut sa as *mut libc::sockaddr_in).cast();
    // SAFETY: the call writes at most len bytes into sa.
    let r = unsafe { libc::getsockname(fd.as_raw_fd(), p, &mut len) };
    (r == 0).then(|| {
        SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)),
            u16::from_be(sa.sin_port),
        )
    })
}

fn ping_socket() -> OwnedFd {
    // SAFETY: socket() takes no pointers; the result is checked.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP) };
    assert!(s >= 0, "ping socket: {}", std::io::Error::last_os_error());
    // SAFETY: s is a fresh fd we own.
    unsafe { OwnedFd::from_raw_fd(s) }
}

/// Sends an echo request with `payload` (to 127.0.0.1 unless connected) and reads the reply.
fn echo(fd: &OwnedFd, connected: bool, payload: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let mut pkt = vec![8u8, 0, 0, 0, 0, 0, 0, 1];
    pkt.extend_from_slice(payload);
    let to = sin(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0));
    // SAFETY: sendto reads pkt and, when given, the live sockaddr `to`.
    let r = unsafe {
        if connected {
            libc::send(fd.as_raw_fd(), pkt.as_ptr().cast(), pkt.len(), 0)
        } else {
            libc::sendto(
                fd.as_raw_fd(),
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (&to as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        }
    };
    if r < 0 {
        return Err(format!("send: {}", std::io::Error::last_os_error()));
    }
    let tv = libc::timeval {
        tv_sec: 5,
        tv_usec: 0,
    };
    // SAFETY: setsockopt reads a live timeval.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    let mut b = [0u8; 256];
    // SAFETY: recv writes at most b.len() bytes into b.
    let n = unsafe { libc::recv(fd.as_raw_fd(), b.as_mut_ptr().cast(), b.len(), 0) };
    if n < 8 {
        return Err(format!("recv: {n} ({})", std::io::Error::last_os_error()));
    }
    if b[0] != 0 {
        return Err(format!("icmp type {} instead of an echo reply", b[0]));
    }
    Ok((u16::from_be_bytes([b[4], b[5]]), b[8..n as usize].to_vec()))
}

fn check(bound: &OwnedFd, id: u16, conn: &OwnedFd) -> Result<(), String> {
    let got = name(bound).map(|a| a.port());
    if got != Some(id) {
        return Err(format!("bound socket: id {got:?}, want {id}"));
    }
    let (rid, p) = echo(bound, false, b"after-1")?;
    if rid != id || p != b"after-1" {
        return Err(format!("bound socket: reply id {rid} payload {p:?}"));
    }
    // send(2) without an address fails (EDESTADDRREQ) unless the socket is connected (its
    // peer cannot be read back: getpeername fails on ping sockets, which have no port).
    let (_, p) = echo(conn, true, b"after-2")?;
    if p != b"after-2" {
        return Err(format!("connected socket: reply payload {p:?}"));
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, out, ready] = &args[..] else {
        eprintln!("usage: criu-victim-ping OUT READY");
        std::process::exit(2);
    };
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let bound = ping_socket();
    let a = sin(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0));
    // SAFETY: bind reads the live sockaddr a.
    let r = unsafe {
        libc::bind(
            bound.as_raw_fd(),
            (&a as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
    let (id, _) = echo(&bound, false, b"before").unwrap();
    let conn = ping_socket();
    // SAFETY: connect reads the live sockaddr a.
    let r = unsafe {
        libc::connect(
            conn.as_raw_fd(),
            (&a as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "connect: {}", std::io::Error::last_os_error());
    let tmp = format!("{ready}.tmp");
    std::fs::write(&tmp, format!("ready {} {id}", std::process::id())).unwrap();
    std::fs::rename(&tmp, ready).unwrap();
    while !GO.swap(false, Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let verdict = match check(&bound, id, &conn) {
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
