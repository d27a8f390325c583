//! criu test victim: connections waiting in its own listeners' accept queues, never accepted
//! before the dump, their clients in the same process.
//!
//! `criu-victim-inet-queued OUT READY`: an IPv4 listener with two queued connections (`a`
//! wrote as much as its socket took without blocking, so bytes wait both in the queued end
//! and unacknowledged or unsent in the client; `b` wrote "beta" and shut its side down) and a
//! dual-stack IPv6 listener with two (`c` from IPv4, which the listener sees v4-mapped, wrote
//! "gamma"; `d` from `::1` wrote nothing). Writes `ready PID` into READY; on SIGUSR1 accepts
//! without blocking and checks that each listener gives its connections in order, from the
//! clients' addresses, with exactly their bytes (and `b`'s end of stream), and that each
//! connection carries a reply back; writes `check ok` or `bad: WHY` into OUT, then
//! `marks A B C D` (the accepted sockets' SO_MARK) into OUT.marks.
// Unsafe code: signal handler, shutdown and SO_MARK.
#![allow(unsafe_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

fn mark(s: &TcpStream) -> i32 {
    let mut v: i32 = -1;
    let mut len = 4 as libc::socklen_t;
    // SAFETY: getsockopt writes at most 4 bytes into a live int.
    unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&mut v as *mut i32).cast(),
            &mut len,
        )
    };
    v
}

/// Accepts without blocking: the connection must be there already.
fn take(l: &TcpListener, from: &TcpStream, what: &str) -> Result<TcpStream, String> {
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    let (s, peer) = match l.accept() {
        Ok(x) => x,
        Err(e) if e.kind() == ErrorKind::WouldBlock => {
            return Err(format!("{what}: nothing queued"));
        }
        Err(e) => return Err(format!("{what}: accept: {e}")),
    };
    let want = from.local_addr().map_err(|e| e.to_string())?;
    let canon = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    if canon(peer) != canon(want) {
        return Err(format!("{what}: accepted from {peer}, want {want}"));
    }
    s.set_nonblocking(false).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    Ok(s)
}

fn read_n(s: &mut TcpStream, n: usize, what: &str) -> Result<Vec<u8>, String> {
    let mut got = vec![0u8; n];
    s.read_exact(&mut got)
        .map_err(|e| format!("{what}: reading {n} bytes: {e}"))?;
    Ok(got)
}

/// The accepted end `s` and the client `c` talk both ways.
fn reply(s: &mut TcpStream, c: &mut TcpStream, what: &str) -> Result<(), String> {
    s.write_all(b"reply").map_err(|e| format!("{what}: {e}"))?;
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let got = read_n(c, 5, what)?;
    if got != b"reply" {
        return Err(format!("{what}: client read {got:?}"));
    }
    Ok(())
}

struct Tree {
    l4: TcpListener,
    l6: TcpListener,
    a: TcpStream,
    a_len: usize,
    b: TcpStream,
    c: TcpStream,
    d: TcpStream,
}

fn check(t: &mut Tree, marks: &mut Vec<i32>) -> Result<(), String> {
    let mut sa = take(&t.l4, &t.a, "a")?;
    let mut sb = take(&t.l4, &t.b, "b")?;
    let mut sc = take(&t.l6, &t.c, "c")?;
    let mut sd = take(&t.l6, &t.d, "d")?;
    for s in [&sa, &sb, &sc, &sd] {
        marks.push(mark(s));
    }
    if read_n(&mut sa, t.a_len, "a")? != pattern(t.a_len) {
        return Err("a: bytes differ".into());
    }
    let mut rest = Vec::new();
    sb.read_to_end(&mut rest)
        .map_err(|e| format!("b: reading to the end: {e}"))?;
    if rest != b"beta" {
        return Err(format!(
            "b: read {:?} before the end",
            String::from_utf8_lossy(&rest)
        ));
    }
    if read_n(&mut sc, 5, "c")? != b"gamma" {
        return Err("c: bytes differ".into());
    }
    reply(&mut sa, &mut t.a, "a")?;
    reply(&mut sb, &mut t.b, "b")?;
    reply(&mut sc, &mut t.c, "c")?;
    reply(&mut sd, &mut t.d, "d")?;
    // Nothing more in either queue.
    for (l, what) in [(&t.l4, "l4"), (&t.l6, "l6")] {
        match l.accept() {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Ok((_, p)) => return Err(format!("{what}: one more connection, from {p}")),
            Err(e) => return Err(format!("{what}: accept: {e}")),
        }
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, out, ready] = &args[..] else {
        eprintln!("usage: criu-victim-inet-queued OUT READY");
        std::process::exit(2);
    };
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let l4 = TcpListener::bind("127.0.0.1:0").unwrap();
    let l6 = TcpListener::bind("[::]:0").unwrap();
    let p4 = l4.local_addr().unwrap().port();
    let p6 = l6.local_addr().unwrap().port();
    let a = TcpStream::connect(("127.0.0.1", p4)).unwrap();
    a.set_nonblocking(true).unwrap();
    let big = pattern(4 << 20);
    let mut a_len = 0;
    loop {
        match (&a).write(&big[a_len..]) {
            Ok(n) => a_len += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("a: {e}"),
        }
    }
    a.set_nonblocking(false).unwrap();
    let mut b = TcpStream::connect(("127.0.0.1", p4)).unwrap();
    b.write_all(b"beta").unwrap();
    b.shutdown(Shutdown::Write).unwrap();
    let mut c = TcpStream::connect(("127.0.0.1", p6)).unwrap();
    c.write_all(b"gamma").unwrap();
    let d = TcpStream::connect(("::1", p6)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let mut t = Tree {
        l4,
        l6,
        a,
        a_len,
        b,
        c,
        d,
    };
    let pid = std::process::id();
    let tmp = format!("{ready}.tmp");
    std::fs::write(&tmp, format!("ready {pid}")).unwrap();
    std::fs::rename(&tmp, ready).unwrap();
    while !GO.swap(false, Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut marks = Vec::new();
    let verdict = match check(&mut t, &mut marks) {
        Ok(()) => "check ok".to_string(),
        Err(e) => format!("bad: {e}"),
    };
    let m: Vec<String> = marks.iter().map(|m| m.to_string()).collect();
    std::fs::write(format!("{out}.marks"), format!("marks {}", m.join(" "))).unwrap();
    let tmp = format!("{out}.tmp");
    std::fs::write(&tmp, verdict).unwrap();
    std::fs::rename(&tmp, out).unwrap();
    let _ = &t;
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}
