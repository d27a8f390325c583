//! criu test victim: half-closed TCP connections on loopback, checking itself after a restore.
//!
//! `criu-victim-tcp-half OUT READY [PORT]`: makes, inside itself,
//! - connection 1: the client wrote "c-data" and shut its write side down (client FIN_WAIT2,
//!   server CLOSE_WAIT with "c-data" and the EOF unread), the server wrote "s-data" (unread);
//! - connection 2: the server's receive buffer is small and full, the client wrote until its
//!   own send buffer filled too, then shut down (client FIN_WAIT1: its FIN waits behind unsent
//!   bytes);
//! - with PORT, two connections to 127.0.0.1:PORT (a peer outside the tree): on "A" the victim
//!   wrote "a-bye" and shut down writing (FIN_WAIT2); on "B" the peer wrote "b-data" and shut
//!   down (the victim in CLOSE_WAIT).
//!
//! writes `ready PID` into READY, and on SIGUSR1 checks the TCP state of each end, that each
//! byte and each EOF arrives once, in order, that a shut-down side cannot write and the open
//! one can, then writes `check ok` or `bad: WHY` into OUT. With PORT it reads "a-late" on A
//! and writes "b-reply" on B, then closes both.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

/// The pattern byte at offset `i` of connection 2's stream.
fn pat(i: usize) -> u8 {
    (i % 251) as u8
}

fn state(s: &TcpStream) -> u8 {
    let mut b = [0u8; 8];
    let mut len = b.len() as libc::socklen_t;
    // SAFETY: getsockopt writes at most len bytes into b.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_TCP,
            libc::TCP_INFO,
            b.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r < 0 { 0 } else { b[0] }
}

fn want_state(s: &TcpStream, want: u8, what: &str) -> Result<(), String> {
    let got = state(s);
    if got != want {
        return Err(format!("{what}: tcp state {got}, want {want}"));
    }
    Ok(())
}

fn expect(s: &mut TcpStream, want: &[u8], what: &str) -> Result<(), String> {
    let mut got = vec![0u8; want.len()];
    s.read_exact(&mut got).map_err(|e| format!("{what}: {e}"))?;
    if got != want {
        return Err(format!(
            "{what}: read {:?}, want {:?}",
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(want)
        ));
    }
    Ok(())
}

fn expect_eof(s: &mut TcpStream, what: &str) -> Result<(), String> {
    match s.read(&mut [0u8; 16]) {
        Ok(0) => Ok(()),
        Ok(n) => Err(format!("{what}: {n} more bytes instead of EOF")),
        Err(e) => Err(format!("{what}: {e} instead of EOF")),
    }
}

fn cannot_write(s: &mut TcpStream, what: &str) -> Result<(), String> {
    match s.write(b"x") {
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(()),
        r => Err(format!("{what}: a write after shutdown gave {r:?}")),
    }
}

struct Socks {
    c1: TcpStream,
    s1: TcpStream,
    c2: TcpStream,
    s2: TcpStream,
    sent2: usize,
    outside: Option<(TcpStream, TcpStream)>,
    _l: TcpListener,
}

fn check(s: &mut Socks) -> Result<(), String> {
    want_state(&s.c1, 5, "client 1 (FIN_WAIT2)")?;
    want_state(&s.s1, 8, "server 1 (CLOSE_WAIT)")?;
    want_state(&s.c2, 4, "client 2 (FIN_WAIT1)")?;
    want_state(&s.s2, 1, "server 2 (ESTABLISHED)")?;
    if let Some((a, b)) = &s.outside {
        want_state(a, 5, "outside A (FIN_WAIT2)")?;
        want_state(b, 8, "outside B (CLOSE_WAIT)")?;
    }

    expect(&mut s.s1, b"c-data", "server 1's queued bytes")?;
    expect_eof(&mut s.s1, "server 1 after the client's FIN")?;
    cannot_write(&mut s.c1, "client 1")?;
    s.s1.write_all(b"more")
        .map_err(|e| format!("server 1 write: {e}"))?;
    expect(&mut s.c1, b"s-datamore", "client 1's bytes")?;
    s.s1.shutdown(Shutdown::Write)
        .map_err(|e| format!("server 1 shutdown: {e}"))?;
    expect_eof(&mut s.c1, "client 1 after the server's FIN")?;

    let mut got = vec![0u8; s.sent2];
    s.s2.read_exact(&mut got)
        .map_err(|e| format!("server 2, {} bytes: {e}", s.sent2))?;
    if let Some(i) = (0..got.len()).find(|&i| got[i] != pat(i)) {
        return Err(format!("server 2: byte {i} is {}", got[i]));
    }
    expect_eof(&mut s.s2, "server 2 after its bytes")?;
    cannot_write(&mut s.c2, "client 2")?;
    s.s2.write_all(b"to c2")
        .map_err(|e| format!("server 2 write: {e}"))?;
    expect(&mut s.c2, b"to c2", "client 2")?;

    if let Some((a, b)) = s.outside.as_mut() {
        expect(a, b"a-late", "outside A, bytes sent after the restore")?;
        cannot_write(a, "outside A")?;
        expect(b, b"b-data", "outside B's queued bytes")?;
        expect_eof(b, "outside B after the peer's FIN")?;
        b.write_all(b"b-reply")
            .map_err(|e| format!("outside B write: {e}"))?;
        b.shutdown(Shutdown::Write)
            .map_err(|e| format!("outside B shutdown: {e}"))?;
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (out, ready, peer_port) = match &args[..] {
        [_, out, ready] => (out, ready, None),
        [_, out, ready, port] => (out, ready, Some(port.parse::<u16>().unwrap())),
        _ => {
            eprintln!("usage: criu-victim-tcp-half OUT READY [PORT]");
            std::process::exit(2);
        }
    };
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();

    let c1 = TcpStream::connect(addr).unwrap();
    let (s1, _) = l.accept().unwrap();
    (&c1).write_all(b"c-data").unwrap();
    c1.shutdown(Shutdown::Write).unwrap();
    (&s1).write_all(b"s-data").unwrap();

    let c2 = TcpStream::connect(addr).unwrap();
    let (s2, _) = l.accept().unwrap();
    let small: libc::c_int = 4096;
    for (s, opt) in [(&s2, libc::SO_RCVBUF), (&c2, libc::SO_SNDBUF)] {
        // SAFETY: setsockopt reads an int from a live local.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&small as *const libc::c_int).cast(),
                4,
            )
        };
    }
    c2.set_nonblocking(true).unwrap();
    let mut sent2 = 0;
    let mut idle = 0;
    while idle < 20 {
        let chunk: Vec<u8> = (sent2..sent2 + 1000).map(pat).collect();
        match (&c2).write(&chunk) {
            Ok(n) => {
                sent2 += n;
                idle = 0;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                idle += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("client 2 write: {e}"),
        }
    }
    c2.set_nonblocking(false).unwrap();
    c2.shutdown(Shutdown::Write).unwrap();

    let outside = peer_port.map(|p| {
        let a = TcpStream::connect(("127.0.0.1", p)).unwrap();
        (&a).write_all(b"a-bye").unwrap();
        a.shutdown(Shutdown::Write).unwrap();
        let b = TcpStream::connect(("127.0.0.1", p)).unwrap();
        (a, b)
    });
    for s in [&c1, &s1, &c2, &s2] {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    if let Some((a, b)) = &outside {
        a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    let mut socks = Socks {
        c1,
        s1,
        c2,
        s2,
        sent2,
        outside,
        _l: l,
    };
    let pid = std::process::id();
    let tmp = format!("{ready}.tmp");
    std::fs::write(&tmp, format!("ready {pid} {sent2}")).unwrap();
    std::fs::rename(&tmp, ready).unwrap();
    while !GO.swap(false, Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let verdict = match check(&mut socks) {
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
