//! criu test victim: what waits in unix socket queues besides bytes, checking itself after a
//! restore.
//!
//! `criu-victim-unix-inflight OUT READY DIR scm` works in DIR and sends, each to itself:
//! - over a stream pair, a pipe's read end (the pipe holding "before|", its write end kept),
//!   then the other end of a stream pair holding "inner" (that end closed, the first kept);
//! - over a datagram pair, a file of DIR read up to offset 4 (then closed);
//! - over a seqpacket pair, the receiving end itself.
//!
//! `criu-victim-unix-inflight OUT READY DIR backlog` listens on DIR/l.sock and connects three
//! clients that are not accepted: the first sent "queued-1", the second nothing, the third
//! "queued-3".
//!
//! Writes `ready PID` into READY. On SIGUSR1 it receives and checks everything (the files
//! received read what they should, from where they should, and are the same files it holds;
//! the connections are accepted in order with their data and work both ways) and writes
//! `check ok` or `bad: WHY` into OUT.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

fn pair(ty: i32) -> (RawFd, RawFd) {
    let mut sv = [0i32; 2];
    // SAFETY: socketpair writes two descriptors into a live local array.
    let r = unsafe { libc::socketpair(libc::AF_UNIX, ty, 0, sv.as_mut_ptr()) };
    assert_eq!(r, 0, "socketpair");
    (sv[0], sv[1])
}

fn write_all(fd: RawFd, b: &[u8]) {
    // SAFETY: write from a live slice.
    let n = unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) };
    assert_eq!(n, b.len() as isize, "write");
}

fn close(fd: RawFd) {
    // SAFETY: closes a descriptor of ours that nothing uses any more.
    unsafe { libc::close(fd) };
}

/// Sends `data` on `sk` with `fds` in flight.
fn send_fds(sk: RawFd, data: &[u8], fds: &[RawFd]) {
    let mut ctl = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: every pointer is a live local; the control buffer holds one header and up to 8
    // descriptors.
    unsafe {
        let mut mh: libc::msghdr = std::mem::zeroed();
        mh.msg_iov = &mut iov;
        mh.msg_iovlen = 1;
        mh.msg_control = ctl.as_mut_ptr().cast();
        mh.msg_controllen = libc::CMSG_SPACE(4 * fds.len() as u32) as usize;
        let c = libc::CMSG_FIRSTHDR(&mh);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(4 * fds.len() as u32) as usize;
        for (k, &f) in fds.iter().enumerate() {
            std::ptr::write_unaligned((libc::CMSG_DATA(c) as *mut i32).add(k), f);
        }
        assert_eq!(libc::sendmsg(sk, &mh, 0), data.len() as isize, "sendmsg");
    }
}

/// Receives one message from `sk` (not waiting) and the descriptors that came with it.
fn recv_fds(sk: RawFd) -> Result<(Vec<u8>, Vec<RawFd>), String> {
    let mut buf = [0u8; 256];
    let mut ctl = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut fds = Vec::new();
    // SAFETY: every pointer is a live local of the given size; the CMSG walk stays within
    // what the kernel filled.
    let n = unsafe {
        let mut mh: libc::msghdr = std::mem::zeroed();
        mh.msg_iov = &mut iov;
        mh.msg_iovlen = 1;
        mh.msg_control = ctl.as_mut_ptr().cast();
        mh.msg_controllen = std::mem::size_of_val(&ctl);
        let n = libc::recvmsg(sk, &mut mh, libc::MSG_DONTWAIT);
        if n >= 0 {
            let mut c = libc::CMSG_FIRSTHDR(&mh);
            while !c.is_null() {
                if (*c).cmsg_type == libc::SCM_RIGHTS {
                    let k = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / 4;
                    for i in 0..k {
                        fds.push(std::ptr::read_unaligned(
                            (libc::CMSG_DATA(c) as *const i32).add(i),
                        ));
                    }
                }
                c = libc::CMSG_NXTHDR(&mh, c);
            }
        }
        n
    };
    if n < 0 {
        return Err(format!(
            "recvmsg on fd {sk}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok((buf[..n as usize].to_vec(), fds))
}

/// Reads what is there on `fd` now (not waiting).
fn read_now(fd: RawFd) -> Vec<u8> {
    let mut b = [0u8; 256];
    // SAFETY: recv/read into a live buffer of its length.
    let mut n = unsafe { libc::recv(fd, b.as_mut_ptr().cast(), b.len(), libc::MSG_DONTWAIT) };
    if n < 0 {
        // SAFETY: read into a live buffer of its length (not a socket).
        n = unsafe { libc::read(fd, b.as_mut_ptr().cast(), b.len()) };
    }
    b[..n.max(0) as usize].to_vec()
}

fn ino(fd: RawFd) -> u64 {
    // SAFETY: fstat into a zeroed local.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat fills the live local `st`.
    unsafe { libc::fstat(fd, &mut st) };
    st.st_ino
}

fn expect(what: &str, got: &[u8], want: &[u8]) -> Result<(), String> {
    if got != want {
        return Err(format!(
            "{what}: {:?}, not {:?}",
            String::from_utf8_lossy(got),
            String::from_utf8_lossy(want)
        ));
    }
    Ok(())
}

/// One received message: its bytes and exactly `n` descriptors.
fn one(sk: RawFd, want: &[u8], n: usize) -> Result<Vec<RawFd>, String> {
    let (data, fds) = recv_fds(sk)?;
    expect("a message", &data, want)?;
    if fds.len() != n {
        return Err(format!(
            "{:?} came with {} descriptors, not {n}",
            String::from_utf8_lossy(want),
            fds.len()
        ));
    }
    Ok(fds)
}

struct Scm {
    s1: RawFd,
    p1: RawFd,
    x0: RawFd,
    d1: RawFd,
    q1: RawFd,
}

fn setup_scm(dir: &str) -> Scm {
    let mut p = [0i32; 2];
    // SAFETY: pipe writes two descriptors into a live local array.
    assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0, "pipe");
    write_all(p[1], b"before|");
    let (s0, s1) = pair(libc::SOCK_STREAM);
    send_fds(s0, b"pipe-fd", &[p[0]]);
    close(p[0]);
    let (x0, x1) = pair(libc::SOCK_STREAM);
    write_all(x0, b"inner");
    send_fds(s0, b"sock-fd", &[x1]);
    close(x1);

    let path = format!("{dir}/file");
    std::fs::write(&path, b"0123456789").unwrap();
    let c = std::ffi::CString::new(path).unwrap();
    // SAFETY: open with a NUL-terminated path.
    let f = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY) };
    assert!(f >= 0, "open");
    let mut b = [0u8; 4];
    // SAFETY: read into a live local buffer.
    assert_eq!(unsafe { libc::read(f, b.as_mut_ptr().cast(), 4) }, 4);
    let (d0, d1) = pair(libc::SOCK_DGRAM);
    send_fds(d0, b"file-fd", &[f]);
    close(f);

    let (q0, q1) = pair(libc::SOCK_SEQPACKET);
    send_fds(q0, b"self", &[q1]);
    let _ = (s0, d0, q0);
    Scm {
        s1,
        p1: p[1],
        x0,
        d1,
        q1,
    }
}

fn check_scm(s: &Scm) -> Result<(), String> {
    let r = one(s.s1, b"pipe-fd", 1)?[0];
    write_all(s.p1, b"after");
    expect("the pipe in flight", &read_now(r), b"before|after")?;
    let y = one(s.s1, b"sock-fd", 1)?[0];
    expect("the socket in flight", &read_now(y), b"inner")?;
    write_all(s.x0, b"more");
    expect("the socket in flight, then", &read_now(y), b"more")?;
    let g = one(s.d1, b"file-fd", 1)?[0];
    expect("the file in flight", &read_now(g), b"456789")?;
    let me = one(s.q1, b"self", 1)?[0];
    if ino(me) != ino(s.q1) {
        return Err("the socket sent over itself came back as another socket".into());
    }
    for (fd, what) in [(s.s1, "stream"), (s.d1, "datagram"), (s.q1, "seqpacket")] {
        if recv_fds(fd).is_ok() {
            return Err(format!("more in the {what} queue"));
        }
    }
    Ok(())
}

struct Backlog {
    l: RawFd,
    clients: [RawFd; 3],
}

fn setup_backlog(dir: &str) -> Backlog {
    let l = std::os::unix::net::UnixListener::bind(format!("{dir}/l.sock")).unwrap();
    let mut clients = [0; 3];
    for (i, c) in clients.iter_mut().enumerate() {
        let s = std::os::unix::net::UnixStream::connect(format!("{dir}/l.sock")).unwrap();
        let s = std::os::fd::IntoRawFd::into_raw_fd(s);
        match i {
            0 => write_all(s, b"queued-1"),
            2 => write_all(s, b"queued-3"),
            _ => {}
        }
        *c = s;
    }
    Backlog {
        l: std::os::fd::IntoRawFd::into_raw_fd(l),
        clients,
    }
}

fn check_backlog(b: &Backlog) -> Result<(), String> {
    for (i, want) in [&b"queued-1"[..], b"", b"queued-3"].iter().enumerate() {
        // SAFETY: accept4 on our own listener, no address wanted.
        let a = unsafe {
            libc::accept4(
                b.l,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_NONBLOCK,
            )
        };
        if a < 0 {
            return Err(format!(
                "accept of connection {}: {}",
                i + 1,
                std::io::Error::last_os_error()
            ));
        }
        expect(&format!("connection {}", i + 1), &read_now(a), want)?;
        write_all(a, b"reply");
        expect(
            &format!("client {}", i + 1),
            &read_now(b.clients[i]),
            b"reply",
        )?;
        write_all(b.clients[i], b"again");
        expect(
            &format!("connection {} then", i + 1),
            &read_now(a),
            b"again",
        )?;
    }
    // SAFETY: fcntl on our own listener (it blocks otherwise), then accept4 on it with no
    // address wanted.
    let more = unsafe {
        libc::fcntl(b.l, libc::F_SETFL, libc::O_NONBLOCK);
        libc::accept4(
            b.l,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK,
        )
    };
    if more >= 0 {
        return Err("a fourth connection was queued".into());
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: criu-victim-unix-inflight OUT READY DIR scm|backlog");
        std::process::exit(2);
    }
    let (out, ready, dir) = (&args[1], &args[2], &args[3]);
    let scm = (args[4] == "scm").then(|| setup_scm(dir));
    let backlog = (args[4] == "backlog").then(|| setup_backlog(dir));
    // SAFETY: installs an async-signal-safe handler that only stores an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let t = format!("{ready}.tmp");
    std::fs::write(&t, format!("ready {}", std::process::id())).unwrap();
    std::fs::rename(&t, ready).unwrap();
    loop {
        if GO.swap(false, Ordering::SeqCst) {
            let r = match (&scm, &backlog) {
                (Some(s), _) => check_scm(s),
                (_, Some(b)) => check_backlog(b),
                _ => Err(format!("unknown mode {}", args[4])),
            };
            let verdict = match r {
                Ok(()) => "check ok".to_string(),
                Err(e) => format!("bad: {e}"),
            };
            let t = format!("{out}.tmp");
            std::fs::write(&t, verdict).unwrap();
            std::fs::rename(&t, out).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
