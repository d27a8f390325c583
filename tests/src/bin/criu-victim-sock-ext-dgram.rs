//! criu test victim: a datagram socket connected to a receiver outside the tree.
//!
//! `criu-victim-sock-ext-dgram OUT READY PATH` connects a `SOCK_DGRAM` unix socket to the
//! receiver bound at PATH (the test's, outside the dumped tree), sends `before` on it and
//! writes `ready PID` into READY. On SIGUSR1 it checks that the socket is still connected to
//! PATH (`getpeername`) and sends `after` on it with plain `send` (no address: it must still be
//! connected), then writes `ok` or `bad: WHY` into OUT.

use std::os::unix::net::UnixDatagram;

use compel_criu_tests::victim::{publish, serve_checks, take_check_signal};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (out, ready, path) = (&a[1], &a[2], a[3].clone());
    let s = UnixDatagram::unbound().unwrap();
    s.connect(&path).unwrap();
    s.send(b"before").unwrap();
    take_check_signal();
    publish(ready, &format!("ready {}", std::process::id()));
    serve_checks(out, || {
        let peer = s.peer_addr().map_err(|e| format!("getpeername: {e}"))?;
        match peer.as_pathname() {
            Some(p) if p == std::path::Path::new(&path) => {}
            other => return Err(format!("connected to {other:?}, not {path}")),
        }
        s.send(b"after").map_err(|e| format!("send: {e}"))?;
        Ok(())
    });
}
