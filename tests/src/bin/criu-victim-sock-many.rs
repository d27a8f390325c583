//! criu test victim: many unix sockets in two processes, and a netlink and a packet socket.
//!
//! `criu-victim-sock-many OUT READY PAIRS` makes PAIRS stream socketpairs, each with `a<i>`
//! queued one way and `b<i>` the other, two `NETLINK_ROUTE` sockets (one never bound, one
//! that sent a link dump request and left the answer unread), an `AF_PACKET` datagram socket
//! and an obsolete `SOCK_PACKET` one (when allowed), and a child holding 20 pairs of its own (so
//! a dump meets sockets in two tasks). Writes `ready PID` into READY. On SIGUSR1 it checks
//! every pair of its own (the queued bytes, once and in order, then a round trip both ways),
//! the netlink sockets (the first still unbound, the second on its port id and answering a
//! new request) and the `SOCK_PACKET` socket's type, and writes `check ok` or `bad: WHY` into
//! OUT.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The obsolete `SOCK_PACKET` socket type (libc marks its constant deprecated).
const SOCK_PACKET: i32 = 10;

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

fn pairs(n: usize) -> Vec<(i32, i32)> {
    (0..n)
        .map(|i| {
            let mut sv = [0i32; 2];
            // SAFETY: socketpair writes two descriptors into a live array; writes read live
            // byte strings.
            unsafe {
                assert_eq!(
                    libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, sv.as_mut_ptr()),
                    0,
                    "socketpair {i}"
                );
                let (a, b) = (format!("a{i}"), format!("b{i}"));
                libc::write(sv[0], a.as_ptr().cast(), a.len());
                libc::write(sv[1], b.as_ptr().cast(), b.len());
            }
            (sv[0], sv[1])
        })
        .collect()
}

fn read_now(fd: i32) -> Vec<u8> {
    let mut buf = [0u8; 64];
    // SAFETY: a non-blocking read into a live buffer.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    buf[..n.max(0) as usize].to_vec()
}

/// The port id of netlink socket `s` (0: not bound).
fn port_of(s: i32) -> u32 {
    // SAFETY: a zeroed sockaddr_nl is valid; getsockname writes at most `len` bytes into it.
    unsafe {
        let mut a: libc::sockaddr_nl = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        libc::getsockname(s, (&mut a as *mut libc::sockaddr_nl).cast(), &mut len);
        a.nl_pid
    }
}

/// Sends an `RTM_GETLINK` dump request on netlink socket `s` (which binds it).
fn ask_links(s: i32) {
    // nlmsghdr (16 bytes) + rtgenmsg (1 byte, padded to 4).
    let mut m = [0u8; 20];
    m[..4].copy_from_slice(&20u32.to_ne_bytes());
    m[4..6].copy_from_slice(&libc::RTM_GETLINK.to_ne_bytes());
    m[6..8].copy_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    m[8..12].copy_from_slice(&1u32.to_ne_bytes());
    m[16] = libc::AF_UNSPEC as u8;
    // SAFETY: send from a live buffer on our own socket.
    let n = unsafe { libc::send(s, m.as_ptr().cast(), m.len(), 0) };
    assert_eq!(n, 20, "netlink request");
}

struct Others {
    nl_unbound: i32,
    nl_asked: i32,
    port: u32,
    sock_packet: Option<i32>,
}

fn check_others(o: &Others) -> Result<(), String> {
    if port_of(o.nl_unbound) != 0 {
        return Err("the unbound netlink socket has a port id".into());
    }
    if port_of(o.nl_asked) != o.port {
        return Err(format!(
            "netlink port id {} (was {})",
            port_of(o.nl_asked),
            o.port
        ));
    }
    // The unread answer was dropped (as CRIU does): a new request is answered.
    ask_links(o.nl_asked);
    let mut buf = [0u8; 8192];
    // SAFETY: recv into a live buffer with a receive timeout set below.
    let n = unsafe {
        let tv = libc::timeval {
            tv_sec: 2,
            tv_usec: 0,
        };
        libc::setsockopt(
            o.nl_asked,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        );
        libc::recv(o.nl_asked, buf.as_mut_ptr().cast(), buf.len(), 0)
    };
    if n < 16 {
        return Err(format!("no answer on the netlink socket ({n})"));
    }
    if let Some(s) = o.sock_packet {
        let ty = socket_type(s);
        if ty != SOCK_PACKET {
            return Err(format!("the SOCK_PACKET socket has type {ty}"));
        }
    }
    Ok(())
}

fn socket_type(s: i32) -> i32 {
    let mut ty = 0i32;
    let mut len = 4u32;
    // SAFETY: getsockopt writes one int into a live local.
    unsafe {
        libc::getsockopt(
            s,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut ty as *mut i32).cast(),
            &mut len,
        )
    };
    ty
}

fn check(ps: &[(i32, i32)]) -> Result<(), String> {
    for (i, &(a, b)) in ps.iter().enumerate() {
        let (qa, qb) = (format!("a{i}"), format!("b{i}"));
        if read_now(b) != qa.as_bytes() || read_now(a) != qb.as_bytes() {
            return Err(format!("pair {i}: queued bytes"));
        }
        // SAFETY: writes of live byte strings on our own sockets.
        unsafe {
            libc::write(a, b"x".as_ptr().cast(), 1);
            libc::write(b, b"y".as_ptr().cast(), 1);
        }
        if read_now(b) != b"x" || read_now(a) != b"y" {
            return Err(format!("pair {i}: round trip"));
        }
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, out, ready, n] = &args[..] else {
        eprintln!("usage: criu-victim-sock-many OUT READY PAIRS");
        std::process::exit(2);
    };
    let n: usize = n.parse().expect("PAIRS");
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    // SAFETY: fork in a single-threaded program; the child only sleeps holding its sockets.
    match unsafe { libc::fork() } {
        0 => {
            let _mine = pairs(20);
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        k if k < 0 => panic!("fork"),
        _ => {}
    }
    let ps = pairs(n);
    // SAFETY: socket() takes no pointers; the descriptors stay open for the victim's life.
    let others = unsafe {
        let nl_unbound = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE);
        let nl_asked = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE);
        assert!(nl_unbound >= 0 && nl_asked >= 0);
        // Packet sockets need CAP_NET_RAW; without it the victim has none.
        libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, 0);
        let sp = libc::socket(libc::AF_PACKET, SOCK_PACKET, 0);
        Others {
            nl_unbound,
            nl_asked,
            port: 0,
            sock_packet: (sp >= 0).then_some(sp),
        }
    };
    ask_links(others.nl_asked);
    let others = Others {
        port: port_of(others.nl_asked),
        ..others
    };
    let tmp = format!("{ready}.tmp");
    std::fs::write(&tmp, format!("ready {}", std::process::id())).unwrap();
    std::fs::rename(&tmp, ready).unwrap();
    loop {
        if GO.swap(false, Ordering::SeqCst) {
            let verdict = match check(&ps).and_then(|()| check_others(&others)) {
                Ok(()) => "check ok".to_string(),
                Err(e) => format!("bad: {e}"),
            };
            let tmp = format!("{out}.tmp");
            std::fs::write(&tmp, verdict).unwrap();
            std::fs::rename(&tmp, out).unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
