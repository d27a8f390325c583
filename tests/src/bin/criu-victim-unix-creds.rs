//! criu test victim: queued unix messages that carry their sender's credentials, and a socket
//! whose peek offset was moved, checking itself after a restore.
//!
//! `criu-victim-unix-creds OUT READY` (run as root: it sends credentials with other uids):
//! - a datagram pair and a stream pair whose receiving ends have `SO_PASSCRED`; queued on each:
//!   a message from this process (its own credentials), one from a child of the tree (which
//!   names uid 1234 and gid 5678) and one from a grandchild that exited since (its pid then
//!   belongs to nobody);
//! - a stream pair and a seqpacket pair with "0123456789" queued, `SO_PEEK_OFF` set to 0 and 4
//!   bytes peeked, so the next peek starts at byte 4.
//!
//! With a third argument `gone-reads-0`, the messages of the exited grandchild are expected
//! with pid 0 (uid and gid as sent). The child stays (sleeping, gone once its parent is). Writes `ready PID` into READY and the
//! pids of the child and the exited grandchild into `OUT.pids`. On SIGUSR1 it reads every
//! message with its credentials and peeks the two sockets, and writes `check ok` or
//! `bad: WHY` into OUT.

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

fn set_int(fd: RawFd, opt: i32, v: i32) {
    // SAFETY: setsockopt reads one live int.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&v as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "setsockopt {opt}");
}

/// Sends `data` on `sk` with the credentials `cred` (a pid, uid and gid the caller may name).
fn send_cred(sk: RawFd, data: &[u8], cred: libc::ucred) -> isize {
    let mut ctl = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: every pointer is a live local; the control buffer holds one ucred header.
    unsafe {
        let mut mh: libc::msghdr = std::mem::zeroed();
        mh.msg_iov = &mut iov;
        mh.msg_iovlen = 1;
        mh.msg_control = ctl.as_mut_ptr().cast();
        let len = std::mem::size_of::<libc::ucred>() as u32;
        mh.msg_controllen = libc::CMSG_SPACE(len) as usize;
        let c = libc::CMSG_FIRSTHDR(&mh);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_CREDENTIALS;
        (*c).cmsg_len = libc::CMSG_LEN(len) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut libc::ucred, cred);
        libc::sendmsg(sk, &mh, 0)
    }
}

/// Receives one message of at most `max` bytes from `sk` (not waiting) with its credentials.
fn recv_cred(sk: RawFd, max: usize) -> Result<(Vec<u8>, Option<libc::ucred>), String> {
    let mut buf = vec![0u8; max];
    let mut ctl = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: every pointer is a live local sized as declared; the control messages are
    // walked within msg_controllen.
    unsafe {
        let mut mh: libc::msghdr = std::mem::zeroed();
        mh.msg_iov = &mut iov;
        mh.msg_iovlen = 1;
        mh.msg_control = ctl.as_mut_ptr().cast();
        mh.msg_controllen = std::mem::size_of_val(&ctl);
        let n = libc::recvmsg(sk, &mut mh, libc::MSG_DONTWAIT);
        if n < 0 {
            return Err(format!("recvmsg: {}", std::io::Error::last_os_error()));
        }
        let mut cred = None;
        let mut c = libc::CMSG_FIRSTHDR(&mh);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_CREDENTIALS {
                cred = Some(std::ptr::read_unaligned(
                    libc::CMSG_DATA(c) as *const libc::ucred
                ));
            }
            c = libc::CMSG_NXTHDR(&mh, c);
        }
        buf.truncate(n as usize);
        Ok((buf, cred))
    }
}

fn peek(sk: RawFd, n: usize) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; n];
    // SAFETY: recv into a live buffer of its length.
    let r = unsafe {
        libc::recv(
            sk,
            buf.as_mut_ptr().cast(),
            n,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if r < 0 {
        return Err(format!("peek: {}", std::io::Error::last_os_error()));
    }
    buf.truncate(r as usize);
    Ok(buf)
}

struct Setup {
    dgram_rx: RawFd,
    stream_rx: RawFd,
    peek_stream: RawFd,
    peek_seq: RawFd,
    /// The senders, in order: (data, pid, uid, gid).
    expect: Vec<(Vec<u8>, i32, u32, u32)>,
}

fn fork_or_die() -> i32 {
    // SAFETY: fork in a process with one thread; the child only makes system calls.
    let c = unsafe { libc::fork() };
    assert!(c >= 0, "fork");
    c
}

fn setup() -> Setup {
    let (dtx, drx) = pair(libc::SOCK_DGRAM);
    let (stx, srx) = pair(libc::SOCK_STREAM);
    set_int(drx, libc::SO_PASSCRED, 1);
    set_int(srx, libc::SO_PASSCRED, 1);
    // SAFETY: getpid/getuid/getgid have no preconditions.
    let (me, uid, gid) = unsafe { (libc::getpid(), libc::getuid(), libc::getgid()) };
    let mut expect = Vec::new();
    let send_both = |data: &[u8], pid: i32, uid: u32, gid: u32| {
        let c = libc::ucred { pid, uid, gid };
        assert_eq!(send_cred(dtx, data, c), data.len() as isize, "send dgram");
        assert_eq!(send_cred(stx, data, c), data.len() as isize, "send stream");
    };
    send_both(b"from-parent", me, uid, gid);
    expect.push((b"from-parent".to_vec(), me, uid, gid));

    // A grandchild that sends and exits (reaped by its parent, the child below... here by us:
    // it is our child, made and reaped before the tree's child).
    let g = fork_or_die();
    if g == 0 {
        // SAFETY: getpid has no preconditions.
        let p = unsafe { libc::getpid() };
        send_both(b"from-gone", p, 4321, 8765);
        // SAFETY: ends the child at once.
        unsafe { libc::_exit(0) };
    }
    let mut st = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(g, &mut st, 0) };
    assert!(
        libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
        "the gone sender"
    );
    expect.push((b"from-gone".to_vec(), g, 4321, 8765));

    // The child of the tree: sends, tells us, then stays while we live.
    let (tell_r, tell_w) = pair(libc::SOCK_STREAM);
    let c = fork_or_die();
    if c == 0 {
        // SAFETY: getpid/getppid have no preconditions; writes from a live byte.
        unsafe {
            let p = libc::getpid();
            let parent = libc::getppid();
            send_both(b"from-child", p, 1234, 5678);
            libc::write(tell_w, b"x".as_ptr().cast(), 1);
            loop {
                libc::usleep(20_000);
                if libc::getppid() != parent {
                    libc::_exit(0);
                }
            }
        }
    }
    let mut b = [0u8; 1];
    // SAFETY: reads one byte into a live local.
    assert_eq!(unsafe { libc::read(tell_r, b.as_mut_ptr().cast(), 1) }, 1);
    expect.push((b"from-child".to_vec(), c, 1234, 5678));

    // Peek offsets.
    let mut peeks = Vec::new();
    for ty in [libc::SOCK_STREAM, libc::SOCK_SEQPACKET] {
        let (tx, rx) = pair(ty);
        // SAFETY: write from a live slice.
        let n = unsafe { libc::write(tx, b"0123456789".as_ptr().cast(), 10) };
        assert_eq!(n, 10);
        set_int(rx, libc::SO_PEEK_OFF, 0);
        assert_eq!(peek(rx, 4).unwrap(), b"0123");
        peeks.push(rx);
    }
    Setup {
        dgram_rx: drx,
        stream_rx: srx,
        peek_stream: peeks[0],
        peek_seq: peeks[1],
        expect,
    }
}

fn check(s: &Setup) -> Result<(), String> {
    for (name, sk) in [("dgram", s.dgram_rx), ("stream", s.stream_rx)] {
        for (data, pid, uid, gid) in &s.expect {
            let (got, cred) = recv_cred(sk, data.len())?;
            if &got != data {
                return Err(format!(
                    "{name}: read {:?}, expected {:?}",
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(data)
                ));
            }
            let Some(c) = cred else {
                return Err(format!("{name}: no credentials with {got:?}"));
            };
            if (c.pid, c.uid, c.gid) != (*pid, *uid, *gid) {
                return Err(format!(
                    "{name}: {:?} came with pid {} uid {} gid {}, expected {pid} {uid} {gid}",
                    String::from_utf8_lossy(data),
                    c.pid,
                    c.uid,
                    c.gid
                ));
            }
        }
    }
    for (name, sk) in [("stream", s.peek_stream), ("seqpacket", s.peek_seq)] {
        let got = peek(sk, 4)?;
        if got != b"4567" {
            return Err(format!(
                "{name}: peek after the offset read {:?}, expected \"4567\"",
                String::from_utf8_lossy(&got)
            ));
        }
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: criu-victim-unix-creds OUT READY");
        std::process::exit(2);
    }
    let (out, ready) = (&args[1], &args[2]);
    let mut s = setup();
    let pids: Vec<String> = s.expect[1..].iter().map(|e| e.1.to_string()).collect();
    std::fs::write(format!("{out}.pids"), pids.join(" ")).unwrap();
    // `gone-reads-0`: from now on the exited sender's messages are expected with pid 0 (in a
    // pid namespace of its own nothing can name it again once it exited; see the test).
    if args.get(3).map(String::as_str) == Some("gone-reads-0") {
        for e in s.expect.iter_mut().filter(|e| e.0 == b"from-gone") {
            e.1 = 0;
        }
    }
    // SAFETY: installs an async-signal-safe handler that only stores an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let t = format!("{ready}.tmp");
    std::fs::write(&t, format!("ready {}", std::process::id())).unwrap();
    std::fs::rename(&t, ready).unwrap();
    loop {
        if GO.swap(false, Ordering::SeqCst) {
            let verdict = match check(&s) {
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
