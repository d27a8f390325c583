//! Live connections moved from one socket to another with soccr, inside a network namespace
//! each test makes for its own thread (loopback only; the host's network is never touched).

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use soccr::{Repair, Saved, state};

/// Runs `f` on a thread of its own in a new network namespace whose `lo` is up.
fn in_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        // SAFETY: unshare only changes this thread's namespaces.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
        lo_up();
        f()
    })
    .join()
    .unwrap()
}

fn lo_up() {
    // SAFETY: a plain socket(2); checked below.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    assert!(s >= 0);
    // SAFETY: s is a fresh fd we own.
    let s = unsafe { OwnedFd::from_raw_fd(s) };
    // SAFETY: all-zero is a valid ifreq.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, c) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *c as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as i16;
    // SAFETY: SIOCSIFFLAGS reads the ifreq we pass.
    let r = unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) };
    assert_eq!(r, 0, "lo up");
}

fn tcp_socket(v6: bool) -> OwnedFd {
    let fam = if v6 { libc::AF_INET6 } else { libc::AF_INET };
    // SAFETY: a plain socket(2); checked below.
    let s = unsafe { libc::socket(fam, libc::SOCK_STREAM, libc::IPPROTO_TCP) };
    assert!(s >= 0);
    // SAFETY: s is a fresh fd we own.
    unsafe { OwnedFd::from_raw_fd(s) }
}

fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

/// Saves `sk` (closing it silently in repair mode), passes the state through JSON as a caller
/// would through any transport, and restores it into a fresh socket.
fn migrate(sk: TcpStream, v6: bool) -> (TcpStream, Saved) {
    let saved = {
        let r = Repair::pause(sk.as_fd()).unwrap();
        let s = r.save().unwrap();
        r.release();
        s
    };
    drop(sk); // closed in repair mode: the peer sees nothing
    let wire = serde_json::to_string(&saved).unwrap();
    let back: Saved = serde_json::from_str(&wire).unwrap();
    assert_eq!(back, saved);
    let fresh = tcp_socket(v6);
    let r = Repair::pause(fresh.as_fd()).unwrap();
    r.restore(&back).unwrap();
    r.resume().unwrap();
    (TcpStream::from(fresh), saved)
}

fn connection(v6: bool) -> (TcpStream, TcpStream) {
    let l = TcpListener::bind(if v6 { "[::1]:0" } else { "127.0.0.1:0" }).unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    for x in [&c, &s] {
        x.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    (c, s)
}

fn queued_both_ways(v6: bool) {
    let (c, mut s) = connection(v6);
    // Unread by the client: lands in its receive queue.
    s.write_all(b"from server").unwrap();
    // Unread by the server.
    (&c).write_all(b"from client;").unwrap();
    std::thread::sleep(Duration::from_millis(100));

    let (mut c, saved) = migrate(c, v6);
    assert_eq!(saved.data.state, state::ESTABLISHED);
    assert_eq!(saved.recv_queue, b"from server");
    assert_eq!(saved.data.inq_len, 11);
    assert!(saved.data.mss_clamp > 0);

    let mut buf = [0u8; 11];
    c.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"from server");
    c.write_all(b"after").unwrap();
    let mut got = [0u8; 17];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"from client;after");
    s.write_all(b"again").unwrap();
    let mut buf = [0u8; 5];
    c.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"again");
    // Nothing more in either direction: each byte arrived once.
    c.set_nonblocking(true).unwrap();
    assert_eq!(
        c.read(&mut [0u8; 1]).unwrap_err().kind(),
        ErrorKind::WouldBlock
    );
    // Orderly close reaches the peer as EOF, not a reset.
    drop(c);
    assert_eq!(s.read(&mut [0u8; 1]).unwrap(), 0);
}

#[test]
fn established_ipv4_connection_with_data_queued_both_ways_survives() {
    in_netns(|| queued_both_ways(false));
}

#[test]
fn established_ipv6_connection_with_data_queued_both_ways_survives() {
    in_netns(|| queued_both_ways(true));
}

#[test]
fn unsent_send_queue_is_sent_after_restore() {
    in_netns(|| {
        let (c, mut s) = connection(false);
        // The server reads nothing, so the client's send queue fills with unsent data.
        c.set_nonblocking(true).unwrap();
        let mut total = 0usize;
        loop {
            let chunk: Vec<u8> = (total..total + 4096).map(pattern).collect();
            match (&c).write(&chunk) {
                Ok(n) => total += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        c.set_nonblocking(false).unwrap();
        let (mut c, saved) = migrate(c, false);
        assert!(saved.data.outq_len > 0, "{:?}", saved.data);
        assert_eq!(saved.send_queue.len(), saved.data.outq_len as usize);
        let mut got = vec![0u8; total];
        s.read_exact(&mut got).unwrap();
        assert!(got.iter().enumerate().all(|(i, b)| *b == pattern(i)));
        c.write_all(b"x").unwrap();
        let mut one = [0u8; 1];
        s.read_exact(&mut one).unwrap();
        assert_eq!(&one, b"x");
    });
}

#[test]
fn a_listener_is_refused_by_state_name() {
    in_netns(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        // The kernel refuses repair on a listener, or save names the state.
        let e = match Repair::pause(l.as_fd()) {
            Ok(r) => r.save().unwrap_err().to_string(),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("LISTEN") || e.contains("tcp repair on"), "{e}");
    });
}
