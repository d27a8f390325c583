//! criu test victim: unix sockets in many shapes, checking itself after a restore.
//!
//! `criu-victim-sockets OUT READY DIR [vsock|scm]`: works in DIR (its cwd) and makes
//! - a stream socketpair with "pong" + 3000 pattern bytes queued one way and "ping" the other,
//!   `SO_PASSCRED`, a 2.5 s receive timeout and a 64 KiB send buffer on one end, `O_NONBLOCK`
//!   on the other;
//! - a seqpacket pair with the messages "one" and "two!" queued;
//! - a datagram socketpair with two datagrams queued;
//! - a datagram socket bound to DIR/dgram with three datagrams queued from two connected
//!   senders and one unconnected one;
//! - an abstract stream listener `@criu-sk-PID` with one accepted connection (data queued both
//!   ways) and one connection queued and not accepted yet;
//! - a stream listener bound to the relative name `rel.sock`;
//! - a datagram socket bound to DIR/gone.sock, the file removed after bind, with a sender
//!   connected to it before that;
//! - a stream pair whose other end was closed after sending "bye";
//! - a stream pair with one end shut down for writing;
//! - a child process holding one end of a stream pair, echoing what it reads in upper case;
//!
//! with `vsock`, also an `AF_VSOCK` stream socket (a family criu refuses); with `scm`, a stream pair with a pipe's
//! descriptor in flight (dumped; criu_unix_scm restores such descriptors); with `ext=PATH`, a stream socket connected to the
//! listener at PATH outside the tree, which sends "again" on it when checking. Writes `ready PID` into READY. On
//! SIGUSR1 it checks every socket (queued bytes in order and once, both directions, names,
//! options, nothing left on disk) and writes `check ok` or `bad: WHY` into OUT.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 13 + 1) as u8).collect()
}

fn pair(ty: i32) -> (RawFd, RawFd) {
    let mut sv = [0i32; 2];
    // SAFETY: socketpair writes two descriptors into a live local array.
    let r = unsafe { libc::socketpair(libc::AF_UNIX, ty, 0, sv.as_mut_ptr()) };
    assert_eq!(r, 0, "socketpair");
    (sv[0], sv[1])
}

fn send(fd: RawFd, b: &[u8]) {
    // SAFETY: send from a live slice on our own socket.
    let n = unsafe { libc::send(fd, b.as_ptr().cast(), b.len(), 0) };
    assert_eq!(n, b.len() as isize, "send");
}

fn recv(fd: RawFd) -> Option<Vec<u8>> {
    let mut b = vec![0u8; 65536];
    // SAFETY: recv into a live buffer of its length.
    let n = unsafe { libc::recv(fd, b.as_mut_ptr().cast(), b.len(), libc::MSG_DONTWAIT) };
    if n < 0 {
        return None;
    }
    b.truncate(n as usize);
    Some(b)
}

/// The name a socket is bound to, raw (abstract names start with a NUL).
fn name_of(fd: RawFd) -> Vec<u8> {
    // SAFETY: a zeroed sockaddr_un is valid; getsockname writes at most `len` bytes.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: getsockname writes at most `len` bytes into the live local `a`.
    unsafe { libc::getsockname(fd, (&mut a as *mut libc::sockaddr_un).cast(), &mut len) };
    let n = (len as usize).saturating_sub(2);
    let mut v: Vec<u8> = a.sun_path[..n].iter().map(|&c| c as u8).collect();
    while v.last() == Some(&0) && v.first() != Some(&0) {
        v.pop();
    }
    v
}

fn int_opt(fd: RawFd, opt: i32) -> i32 {
    let mut v: libc::c_int = 0;
    let mut len = 4;
    // SAFETY: getsockopt writes an int into a live local.
    unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&mut v as *mut i32).cast(),
            &mut len,
        )
    };
    v
}

struct Shapes {
    sp: (RawFd, RawFd),
    sq: (RawFd, RawFd),
    dp: (RawFd, RawFd),
    dr: UnixDatagram,
    ds: (UnixDatagram, UnixDatagram),
    abs: (UnixListener, UnixStream, UnixStream, UnixStream, Vec<u8>),
    rel: UnixListener,
    gone: (UnixDatagram, UnixDatagram),
    closed: RawFd,
    shut: (RawFd, RawFd),
    echo: RawFd,
    ext: Option<UnixStream>,
    snd_buf: i32,
    dir: String,
}

fn check(s: &Shapes) -> Result<(), String> {
    let big = pattern(3000);
    // Stream pair: bytes in order, once; options.
    let mut want = b"pong".to_vec();
    want.extend_from_slice(&big);
    let mut got = Vec::new();
    while let Some(b) = recv(s.sp.0) {
        if b.is_empty() {
            break;
        }
        got.extend(b);
    }
    if got != want {
        return Err(format!(
            "stream pair: {} bytes, {} expected",
            got.len(),
            want.len()
        ));
    }
    if recv(s.sp.1).as_deref() != Some(b"ping") {
        return Err("stream pair: ping".into());
    }
    send(s.sp.0, b"back");
    if recv(s.sp.1).as_deref() != Some(b"back") {
        return Err("stream pair: new data".into());
    }
    if int_opt(s.sp.0, libc::SO_PASSCRED) != 1 {
        return Err("SO_PASSCRED".into());
    }
    if int_opt(s.sp.0, libc::SO_SNDBUF) != s.snd_buf {
        return Err(format!(
            "SO_SNDBUF {} != {}",
            int_opt(s.sp.0, libc::SO_SNDBUF),
            s.snd_buf
        ));
    }
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    let mut len = std::mem::size_of::<libc::timeval>() as u32;
    // SAFETY: getsockopt writes a timeval into a live local.
    unsafe {
        libc::getsockopt(
            s.sp.0,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&mut tv as *mut libc::timeval).cast(),
            &mut len,
        )
    };
    if (tv.tv_sec, tv.tv_usec) != (2, 500_000) {
        return Err(format!("SO_RCVTIMEO {}.{}", tv.tv_sec, tv.tv_usec));
    }
    // SAFETY: fcntl on our own descriptor.
    if unsafe { libc::fcntl(s.sp.1, libc::F_GETFL) } & libc::O_NONBLOCK == 0 {
        return Err("O_NONBLOCK".into());
    }
    // Seqpacket: boundaries.
    if recv(s.sq.1).as_deref() != Some(b"one") || recv(s.sq.1).as_deref() != Some(b"two!") {
        return Err("seqpacket messages".into());
    }
    if recv(s.sq.1).is_some() {
        return Err("seqpacket: a message too many".into());
    }
    // Datagram pair.
    if recv(s.dp.1).as_deref() != Some(b"d1") || recv(s.dp.1).as_deref() != Some(&b"d22"[..]) {
        return Err("datagram pair".into());
    }
    send(s.dp.1, b"rev");
    if recv(s.dp.0).as_deref() != Some(b"rev") {
        return Err("datagram pair, other way".into());
    }
    // Bound datagram receiver: three senders' datagrams in order.
    let mut b = [0u8; 64];
    for w in [&b"from-a"[..], b"from-b", b"from-c"] {
        s.dr.set_nonblocking(true).map_err(|e| e.to_string())?;
        let n =
            s.dr.recv(&mut b)
                .map_err(|e| format!("dgram receiver: {e}"))?;
        if &b[..n] != w {
            return Err(format!(
                "dgram receiver got {:?}",
                String::from_utf8_lossy(&b[..n])
            ));
        }
    }
    s.ds.0
        .send(b"again")
        .map_err(|e| format!("dgram sender: {e}"))?;
    let n = s.dr.recv(&mut b).map_err(|e| e.to_string())?;
    if &b[..n] != b"again" || name_of(s.dr.as_raw_fd()) != format!("{}/dgram", s.dir).into_bytes() {
        return Err("dgram receiver after restore".into());
    }
    // Abstract listener: accepted connection, queued one, name.
    let (l, c1, a1, c2, name) = &s.abs;
    let mut a1r = a1;
    let mut c1r = c1;
    a1r.set_nonblocking(true).ok();
    let mut buf = [0u8; 16];
    let n = a1r.read(&mut buf).map_err(|e| format!("accepted: {e}"))?;
    if &buf[..n] != b"to-server" {
        return Err("accepted connection data".into());
    }
    c1r.set_nonblocking(true).ok();
    let n = c1r.read(&mut buf).map_err(|e| format!("client: {e}"))?;
    if &buf[..n] != b"to-client" {
        return Err("client data".into());
    }
    if name_of(l.as_raw_fd()) != *name {
        return Err("abstract name".into());
    }
    l.set_nonblocking(true).ok();
    let (mut a2, _) = l.accept().map_err(|e| format!("queued connection: {e}"))?;
    let mut c2w = c2;
    c2w.write_all(b"late").map_err(|e| e.to_string())?;
    a2.set_nonblocking(false).ok();
    a2.set_read_timeout(Some(Duration::from_secs(2))).ok();
    let n = a2
        .read(&mut buf)
        .map_err(|e| format!("queued connection read: {e}"))?;
    if &buf[..n] != b"late" {
        return Err("queued connection data".into());
    }
    if l.accept().is_ok() {
        return Err("a connection too many in the backlog".into());
    }
    // Relative name.
    if name_of(s.rel.as_raw_fd()) != b"rel.sock" {
        return Err(format!(
            "relative name {:?}",
            String::from_utf8_lossy(&name_of(s.rel.as_raw_fd()))
        ));
    }
    let c = UnixStream::connect(format!("{}/rel.sock", s.dir))
        .map_err(|e| format!("connect rel: {e}"))?;
    drop(c);
    // Removed after bind: same name, nothing on disk, still reachable from its sender.
    let gone = format!("{}/gone.sock", s.dir);
    if name_of(s.gone.0.as_raw_fd()) != gone.as_bytes() {
        return Err("name of the removed socket".into());
    }
    if std::path::Path::new(&gone).exists() {
        return Err("the removed name is on disk again".into());
    }
    s.gone
        .1
        .send(b"g")
        .map_err(|e| format!("send to removed name: {e}"))?;
    s.gone.0.set_nonblocking(true).ok();
    if s.gone.0.recv(&mut b).map_err(|e| e.to_string())? != 1 {
        return Err("removed-name socket data".into());
    }
    // Peer closed: the data, then end of file.
    if recv(s.closed).as_deref() != Some(b"bye") || recv(s.closed).as_deref() != Some(&[][..]) {
        return Err("closed peer".into());
    }
    // Shut down for writing: the other end sees end of file, and can still send.
    if recv(s.shut.1).as_deref() != Some(&[][..]) {
        return Err("shutdown: no end of file".into());
    }
    send(s.shut.1, b"s");
    if recv(s.shut.0).as_deref() != Some(b"s") {
        return Err("shutdown: other way".into());
    }
    // The child echoes in upper case.
    send(s.echo, b"hello");
    let mut tv = libc::timeval {
        tv_sec: 2,
        tv_usec: 0,
    };
    // SAFETY: setsockopt reads a live timeval.
    unsafe {
        libc::setsockopt(
            s.echo,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&mut tv as *mut libc::timeval).cast(),
            16,
        )
    };
    let mut e = [0u8; 16];
    // SAFETY: recv into a live buffer.
    let n = unsafe { libc::recv(s.echo, e.as_mut_ptr().cast(), e.len(), 0) };
    if n != 5 || &e[..5] != b"HELLO" {
        return Err("child echo".into());
    }
    if let Some(mut e) = s.ext.as_ref() {
        e.write_all(b"again")
            .map_err(|e| format!("outside peer: {e}"))?;
    }
    // Nothing left on disk but the names that were there.
    let mut left: Vec<String> = std::fs::read_dir(&s.dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    left.sort();
    if left != ["dgram", "rel.sock"] {
        return Err(format!("files in the directory: {left:?}"));
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, out, ready, dir, rest @ ..] = &args[..] else {
        eprintln!("usage: criu-victim-sockets OUT READY DIR [vsock|scm]");
        std::process::exit(2);
    };
    std::env::set_current_dir(dir).unwrap();
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let big = pattern(3000);

    let sp = pair(libc::SOCK_STREAM);
    send(sp.1, b"pong");
    send(sp.1, &big);
    send(sp.0, b"ping");
    let on = 1i32;
    let tv = libc::timeval {
        tv_sec: 2,
        tv_usec: 500_000,
    };
    let sz = 65536i32;
    // SAFETY: setsockopt/fcntl on our own sockets with live arguments.
    unsafe {
        libc::setsockopt(
            sp.0,
            libc::SOL_SOCKET,
            libc::SO_PASSCRED,
            (&on as *const i32).cast(),
            4,
        );
        libc::setsockopt(
            sp.0,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            16,
        );
        libc::setsockopt(
            sp.0,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&sz as *const i32).cast(),
            4,
        );
        libc::fcntl(sp.1, libc::F_SETFL, libc::O_NONBLOCK);
    }
    let snd_buf = int_opt(sp.0, libc::SO_SNDBUF);

    let sq = pair(libc::SOCK_SEQPACKET);
    send(sq.0, b"one");
    send(sq.0, b"two!");
    let dp = pair(libc::SOCK_DGRAM);
    send(dp.0, b"d1");
    send(dp.0, b"d22");

    let dpath = format!("{dir}/dgram");
    let dr = UnixDatagram::bind(&dpath).unwrap();
    let sa = UnixDatagram::unbound().unwrap();
    sa.connect(&dpath).unwrap();
    let sb = UnixDatagram::unbound().unwrap();
    sb.connect(&dpath).unwrap();
    sa.send(b"from-a").unwrap();
    sb.send(b"from-b").unwrap();
    UnixDatagram::unbound()
        .unwrap()
        .send_to(b"from-c", &dpath)
        .unwrap();

    use std::os::linux::net::SocketAddrExt;
    let aname = format!("criu-sk-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(aname.as_bytes()).unwrap();
    let l = UnixListener::bind_addr(&addr).unwrap();
    let mut c1 = UnixStream::connect_addr(&addr).unwrap();
    let (mut a1, _) = l.accept().unwrap();
    let c2 = UnixStream::connect_addr(&addr).unwrap();
    c1.write_all(b"to-server").unwrap();
    a1.write_all(b"to-client").unwrap();
    let mut abs_name = vec![0u8];
    abs_name.extend_from_slice(aname.as_bytes());

    let rel = UnixListener::bind("rel.sock").unwrap();

    let gpath = format!("{dir}/gone.sock");
    let g = UnixDatagram::bind(&gpath).unwrap();
    let gs = UnixDatagram::unbound().unwrap();
    gs.connect(&gpath).unwrap();
    std::fs::remove_file(&gpath).unwrap();

    let cl = pair(libc::SOCK_STREAM);
    send(cl.1, b"bye");
    // SAFETY: closing our own descriptor.
    unsafe { libc::close(cl.1) };

    let shut = pair(libc::SOCK_STREAM);
    // SAFETY: shutdown on our own socket.
    unsafe { libc::shutdown(shut.0, libc::SHUT_WR) };

    let echo = pair(libc::SOCK_STREAM);
    // SAFETY: the child only reads, writes and exits.
    let kid = unsafe { libc::fork() };
    if kid == 0 {
        // SAFETY: the child's own socket.
        let mut s = unsafe { UnixStream::from_raw_fd(echo.1) };
        let mut b = [0u8; 64];
        loop {
            match s.read(&mut b) {
                Ok(0) | Err(_) => std::process::exit(0),
                Ok(n) => {
                    let up: Vec<u8> = b[..n].to_ascii_uppercase();
                    let _ = s.write_all(&up);
                }
            }
        }
    }
    // SAFETY: the parent does not use the child's end.
    unsafe { libc::close(echo.1) };

    let _vsock = rest.iter().any(|a| a == "vsock").then(|| {
        // SAFETY: socket() takes no pointers; the result is checked.
        let s = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0) };
        assert!(s >= 0, "vsock socket: {}", std::io::Error::last_os_error());
        s
    });

    if rest.iter().any(|a| a == "scm") {
        let (a, b) = pair(libc::SOCK_STREAM);
        let mut p = [0i32; 2];
        // SAFETY: pipe/sendmsg with live local buffers; the control buffer holds one fd.
        unsafe {
            libc::pipe(p.as_mut_ptr());
            let mut ctl = [0u64; 4];
            let mut iov = libc::iovec {
                iov_base: b"f".as_ptr() as *mut libc::c_void,
                iov_len: 1,
            };
            let mut mh: libc::msghdr = std::mem::zeroed();
            mh.msg_iov = &mut iov;
            mh.msg_iovlen = 1;
            mh.msg_control = ctl.as_mut_ptr().cast();
            mh.msg_controllen = libc::CMSG_SPACE(4) as usize;
            let c = libc::CMSG_FIRSTHDR(&mh);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(4) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut i32, p[0]);
            assert_eq!(libc::sendmsg(a, &mh, 0), 1, "sendmsg");
        }
        let _ = b;
    }
    let ext = rest
        .iter()
        .find_map(|a| a.strip_prefix("ext="))
        .map(|p| UnixStream::connect(p).unwrap());

    let shapes = Shapes {
        sp,
        sq,
        dp,
        dr,
        ds: (sa, sb),
        abs: (l, c1, a1, c2, abs_name),
        rel,
        gone: (g, gs),
        closed: cl.0,
        shut,
        echo: echo.0,
        ext,
        snd_buf,
        dir: dir.clone(),
    };
    let tmp = format!("{ready}.tmp");
    std::fs::write(&tmp, format!("ready {}", std::process::id())).unwrap();
    std::fs::rename(&tmp, ready).unwrap();
    while !GO.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let verdict = match check(&shapes) {
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
