//! criu test victim for `--tcp-close` and `--skip-in-flight`.
//!
//! `criu-victim-tcp-close OUT READY MODE`:
//! - MODE `close`: an established loopback connection inside itself, with bytes unread on both
//!   ends; on SIGUSR1 checks that each end reads the end of the stream (no bytes), cannot
//!   write (EPIPE) and is in TCP state CLOSE: what a connection restored closed looks like.
//! - MODE `listen`: a listener; writes its port into READY (`ready PID PORT`), so that a peer
//!   outside the tree connects to it without the victim accepting; on SIGUSR1 checks that the
//!   accept queue is empty, then accepts one connection (the test makes it after the check)
//!   and reads "late" from it.
//!
//! Writes `ready PID [PORT]` into READY, then on SIGUSR1 `check ok` or `bad: WHY` into OUT.
// Unsafe code: signal handler, TCP_INFO, send with MSG_NOSIGNAL.
#![allow(unsafe_code)]

use std::io::{ErrorKind, Read};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
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

fn closed(s: &mut TcpStream, what: &str) -> Result<(), String> {
    let st = state(s);
    if st != 7 {
        return Err(format!("{what}: tcp state {st}, want 7 (closed)"));
    }
    match s.read(&mut [0u8; 64]) {
        Ok(0) => {}
        Ok(n) => return Err(format!("{what}: read {n} bytes instead of EOF")),
        Err(e) => return Err(format!("{what}: read: {e} instead of EOF")),
    }
    // SAFETY: send reads 1 byte from a live buffer.
    let r = unsafe { libc::send(s.as_raw_fd(), b"x".as_ptr().cast(), 1, libc::MSG_NOSIGNAL) };
    let e = std::io::Error::last_os_error();
    if r >= 0 || e.raw_os_error() != Some(libc::EPIPE) {
        return Err(format!("{what}: send gave {r} ({e}), want EPIPE"));
    }
    Ok(())
}

fn check_close(c: &mut TcpStream, s: &mut TcpStream) -> Result<(), String> {
    closed(c, "client")?;
    closed(s, "server")
}

fn check_listen(l: &TcpListener) -> Result<(), String> {
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    match l.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Ok((_, a)) => return Err(format!("a connection from {a} was still queued")),
        Err(e) => return Err(format!("accept: {e}")),
    }
    l.set_nonblocking(false).map_err(|e| e.to_string())?;
    Ok(())
}

fn finish(out: &str, r: Result<(), String>) {
    let verdict = match r {
        Ok(()) => "check ok".to_string(),
        Err(e) => format!("bad: {e}"),
    };
    let tmp = format!("{out}.tmp");
    std::fs::write(&tmp, verdict).unwrap();
    std::fs::rename(&tmp, out).unwrap();
}

fn ready(path: &str, extra: &str) {
    let tmp = format!("{path}.tmp");
    std::fs::write(&tmp, format!("ready {}{extra}", std::process::id())).unwrap();
    std::fs::rename(&tmp, path).unwrap();
    while !GO.swap(false, Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, out, rdy, mode] = &args[..] else {
        eprintln!("usage: criu-victim-tcp-close OUT READY close|listen");
        std::process::exit(2);
    };
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    if mode == "close" {
        let mut c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        std::io::Write::write_all(&mut c, b"to-server").unwrap();
        std::io::Write::write_all(&mut s, b"to-client").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        ready(rdy, "");
        finish(out, check_close(&mut c, &mut s));
    } else {
        let port = l.local_addr().unwrap().port();
        ready(rdy, &format!(" {port}"));
        let r = check_listen(&l);
        let ok = r.is_ok();
        finish(out, r);
        if ok {
            let (mut s, _) = l.accept().unwrap();
            let mut got = String::new();
            s.read_to_string(&mut got).unwrap();
            std::fs::write(format!("{out}.late.tmp"), got).unwrap();
            std::fs::rename(format!("{out}.late.tmp"), format!("{out}.late")).unwrap();
        }
    }
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}
