//! criu test victim: many unix sockets in two processes, and a netlink and a packet socket.
//!
//! `criu-victim-sock-many OUT READY PAIRS` makes PAIRS stream socketpairs, each with `a<i>`
//! queued one way and `b<i>` the other, a `NETLINK_ROUTE` socket and an `AF_PACKET` datagram
//! socket (when allowed), and a child holding 20 pairs of its own (so a dump meets sockets in
//! two tasks). Writes `ready PID` into READY. On SIGUSR1 it checks every pair of its own (the
//! queued bytes, once and in order, then a round trip both ways) and writes `check ok` or
//! `bad: WHY` into OUT.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

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
    unsafe {
        assert!(libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE) >= 0);
        // A packet socket needs CAP_NET_RAW; without it the victim has none.
        libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, 0);
    }
    let tmp = format!("{ready}.tmp");
    std::fs::write(&tmp, format!("ready {}", std::process::id())).unwrap();
    std::fs::rename(&tmp, ready).unwrap();
    loop {
        if GO.swap(false, Ordering::SeqCst) {
            let verdict = match check(&ps) {
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
