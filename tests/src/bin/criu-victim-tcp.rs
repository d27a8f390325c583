//! criu test victim: TCP and UDP sockets on loopback, checking itself after a restore.
//!
//! `criu-victim-tcp OUT READY`: listens on 127.0.0.1 (and on ::1, with a connection whose
//! client has "over v6" unread), connects to itself and accepts, then
//! writes bytes both ways that nobody reads yet ("to client" into the client's receive queue,
//! "to server;" into the server's); binds a UDP socket and connects a second one to it; writes
//! `ready PID` into READY. On SIGUSR1 it checks that each queued byte arrives once and in
//! order, that the connection goes on both ways, that the listener still accepts on its port
//! and that a datagram still goes from the connected UDP socket to the bound one, and writes
//! `check ok` or `bad: WHY` into OUT.
//!
//! `criu-victim-tcp OUT READY PORT`: also connects to 127.0.0.1:PORT (a peer outside the
//! tree) and writes "outside;" to it; the check then reads "from outside" there (sent by the
//! peer before the dump) and answers "back".

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

struct Socks {
    listener: TcpListener,
    port: u16,
    client: TcpStream,
    server: TcpStream,
    recv: UdpSocket,
    recv_addr: SocketAddr,
    send: UdpSocket,
    outside: Option<TcpStream>,
    /// An IPv6 listener and connection ("over v6" unread by its client).
    v6: (TcpListener, TcpStream, TcpStream),
}

fn read_n(s: &mut TcpStream, n: usize, what: &str) -> Result<Vec<u8>, String> {
    let mut b = vec![0u8; n];
    s.read_exact(&mut b).map_err(|e| format!("{what}: {e}"))?;
    Ok(b)
}

fn expect(s: &mut TcpStream, want: &[u8], what: &str) -> Result<(), String> {
    let got = read_n(s, want.len(), what)?;
    if got != want {
        return Err(format!(
            "{what}: read {:?}, want {:?}",
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(want)
        ));
    }
    Ok(())
}

fn nothing_more(s: &TcpStream, what: &str) -> Result<(), String> {
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    let r = (&*s).read(&mut [0u8; 16]);
    s.set_nonblocking(false).map_err(|e| e.to_string())?;
    match r {
        Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(()),
        Ok(n) => Err(format!("{what}: {n} more bytes (or EOF)")),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

fn check(s: &mut Socks) -> Result<(), String> {
    expect(&mut s.client, b"to client", "client's queued bytes")?;
    nothing_more(&s.client, "client after its queue")?;
    expect(&mut s.server, b"to server;", "server's queued bytes")?;
    nothing_more(&s.server, "server after its queue")?;
    s.client
        .write_all(b"after")
        .map_err(|e| format!("client write: {e}"))?;
    expect(&mut s.server, b"after", "server, data written after")?;
    s.server
        .write_all(b"again")
        .map_err(|e| format!("server write: {e}"))?;
    expect(&mut s.client, b"again", "client, data written after")?;

    let la = s.listener.local_addr().map_err(|e| e.to_string())?;
    if la.port() != s.port {
        return Err(format!("listener on port {}, was {}", la.port(), s.port));
    }
    let c2 = TcpStream::connect(la).map_err(|e| format!("connect to the listener: {e}"))?;
    let (mut s2, _) = s.listener.accept().map_err(|e| format!("accept: {e}"))?;
    (&c2).write_all(b"new").map_err(|e| e.to_string())?;
    s2.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    expect(&mut s2, b"new", "a new connection")?;

    if s.recv.local_addr().map_err(|e| e.to_string())? != s.recv_addr {
        return Err("the UDP socket moved".into());
    }
    s.send
        .send(b"dgram")
        .map_err(|e| format!("udp send: {e}"))?;
    let mut b = [0u8; 16];
    let (n, from) = s
        .recv
        .recv_from(&mut b)
        .map_err(|e| format!("udp recv: {e}"))?;
    if &b[..n] != b"dgram" || Some(from) != s.send.local_addr().ok() {
        return Err(format!("udp got {:?} from {from}", &b[..n]));
    }
    let (l6, c6, s6) = &mut s.v6;
    expect(c6, b"over v6", "IPv6 client's queued bytes")?;
    c6.write_all(b"ack6")
        .map_err(|e| format!("v6 write: {e}"))?;
    expect(s6, b"ack6", "IPv6 server, data written after")?;
    let n6 = TcpStream::connect(l6.local_addr().map_err(|e| e.to_string())?)
        .map_err(|e| format!("connect to the IPv6 listener: {e}"))?;
    l6.accept().map_err(|e| format!("IPv6 accept: {e}"))?;
    drop(n6);
    if let Some(o) = s.outside.as_mut() {
        expect(o, b"from outside", "bytes from the outside peer")?;
        o.write_all(b"back")
            .map_err(|e| format!("write to the outside peer: {e}"))?;
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (out, ready, peer_port) = match &args[..] {
        [_, out, ready] => (out, ready, None),
        [_, out, ready, port] => (out, ready, Some(port.parse::<u16>().unwrap())),
        _ => {
            eprintln!("usage: criu-victim-tcp OUT READY [PORT]");
            std::process::exit(2);
        }
    };
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    for s in [&client, &server] {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    (&server).write_all(b"to client").unwrap();
    (&client).write_all(b"to server;").unwrap();
    let recv = UdpSocket::bind("127.0.0.1:0").unwrap();
    recv.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let recv_addr = recv.local_addr().unwrap();
    let send = UdpSocket::bind("127.0.0.1:0").unwrap();
    send.connect(recv_addr).unwrap();
    let l6 = TcpListener::bind("[::1]:0").unwrap();
    let c6 = TcpStream::connect(l6.local_addr().unwrap()).unwrap();
    let (s6, _) = l6.accept().unwrap();
    for s in [&c6, &s6] {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    (&s6).write_all(b"over v6").unwrap();
    let outside = peer_port.map(|p| {
        let o = TcpStream::connect(("127.0.0.1", p)).unwrap();
        o.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (&o).write_all(b"outside;").unwrap();
        o
    });
    std::thread::sleep(Duration::from_millis(100));
    let mut socks = Socks {
        listener,
        port,
        client,
        server,
        recv,
        recv_addr,
        send,
        outside,
        v6: (l6, c6, s6),
    };
    let pid = std::process::id();
    let tmp = format!("{ready}.tmp");
    std::fs::write(&tmp, format!("ready {pid}")).unwrap();
    std::fs::rename(&tmp, ready).unwrap();
    loop {
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
    }
}
