//! criu test victim: datagrams queued from several named senders.
//!
//! `criu-victim-sock-senders OUT READY DIR` works in DIR (its cwd) and makes a datagram
//! receiver bound to DIR/recv with these datagrams queued, in order: `1` from a sender bound
//! to the abstract name `@criu-snd-a-PID`, `2` from one bound to DIR/sndb and connected to the
//! receiver, `3` from an unnamed socket, `4` from a sender bound to `@criu-snd-d-PID` and
//! closed since, `5` from one bound to DIR/snde, closed and its file removed since, `6` from
//! the first sender again, `7` from an autobound sender; and a second receiver bound to the
//! relative name `rel-recv` with `8` from the first sender. Writes `ready PID` into READY. On
//! SIGUSR1 it reads every datagram with its sender's name (recvfrom: the same names, in
//! order), checks that the directory holds only its names and that the senders still reach
//! the receiver under their names, and writes `check ok` or `bad: WHY` into OUT.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

fn addr(name: &[u8]) -> (libc::sockaddr_un, libc::socklen_t) {
    // SAFETY: a zeroed sockaddr_un is a valid value.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as u16;
    for (d, s) in a.sun_path.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    (a, (2 + name.len()) as libc::socklen_t)
}

/// A datagram socket bound to `name` (autobound when empty).
fn dgram(name: &[u8]) -> i32 {
    // SAFETY: socket/bind with a live sockaddr_un of the length given.
    unsafe {
        let s = libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0);
        assert!(s >= 0);
        let (a, len) = addr(name);
        assert_eq!(
            libc::bind(s, (&a as *const libc::sockaddr_un).cast(), len),
            0,
            "bind {}",
            String::from_utf8_lossy(name)
        );
        s
    }
}

fn unnamed() -> i32 {
    // SAFETY: socket() takes no pointers.
    unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0) }
}

fn send_to(s: i32, to: &[u8], m: &[u8]) -> bool {
    let (a, len) = addr(to);
    // SAFETY: sendto reads a live buffer and a live sockaddr_un.
    unsafe {
        libc::sendto(
            s,
            m.as_ptr().cast(),
            m.len(),
            0,
            (&a as *const libc::sockaddr_un).cast(),
            len,
        ) == m.len() as isize
    }
}

/// A name as the kernel gives it, without the NUL it may add after a path.
fn norm(mut n: Vec<u8>) -> Vec<u8> {
    if n.first().is_some_and(|&c| c != 0) {
        while n.last() == Some(&0) {
            n.pop();
        }
    }
    n
}

/// The name `s` is bound to (getsockname), raw.
fn name_of(s: i32) -> Vec<u8> {
    // SAFETY: a zeroed sockaddr_un is a valid value; getsockname writes at most `len` bytes.
    unsafe {
        let mut a: libc::sockaddr_un = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        libc::getsockname(s, (&mut a as *mut libc::sockaddr_un).cast(), &mut len);
        let n = (len as usize).saturating_sub(2);
        norm(a.sun_path[..n].iter().map(|&c| c as u8).collect())
    }
}

/// The next datagram of `s` (not waiting) and its sender's name.
fn recv_from(s: i32) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut buf = [0u8; 64];
    // SAFETY: recvfrom writes into live buffers of the sizes given.
    unsafe {
        let mut a: libc::sockaddr_un = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        let n = libc::recvfrom(
            s,
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
            (&mut a as *mut libc::sockaddr_un).cast(),
            &mut len,
        );
        if n < 0 {
            return None;
        }
        let k = (len as usize).saturating_sub(2);
        let name = norm(a.sun_path[..k].iter().map(|&c| c as u8).collect());
        Some((buf[..n as usize].to_vec(), name))
    }
}

fn shown(n: &[u8]) -> String {
    match n.split_first() {
        None => "(unnamed)".into(),
        Some((0, r)) => format!("@{}", String::from_utf8_lossy(r)),
        Some(_) => String::from_utf8_lossy(n).into_owned(),
    }
}

struct State {
    dir: String,
    recv: i32,
    rel: i32,
    a: i32,
    b: i32,
    f: i32,
    want: Vec<(Vec<u8>, Vec<u8>)>,
    want_rel: Vec<(Vec<u8>, Vec<u8>)>,
}

fn expect(s: i32, want: &[(Vec<u8>, Vec<u8>)], what: &str) -> Result<(), String> {
    for (k, (m, n)) in want.iter().enumerate() {
        match recv_from(s) {
            Some((gm, gn)) if &gm == m && &gn == n => {}
            Some((gm, gn)) => {
                return Err(format!(
                    "{what} datagram {k}: {:?} from {}, expected {:?} from {}",
                    String::from_utf8_lossy(&gm),
                    shown(&gn),
                    String::from_utf8_lossy(m),
                    shown(n)
                ));
            }
            None => return Err(format!("{what}: datagram {k} missing")),
        }
    }
    if recv_from(s).is_some() {
        return Err(format!("{what}: more datagrams than queued"));
    }
    Ok(())
}

fn check(s: &State) -> Result<(), String> {
    expect(s.recv, &s.want, "recv")?;
    expect(s.rel, &s.want_rel, "rel-recv")?;
    let mut left: Vec<String> = std::fs::read_dir(&s.dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    left.sort();
    if left != ["recv", "rel-recv", "sndb"] {
        return Err(format!("files in the directory: {left:?}"));
    }
    // The senders still reach the receiver under their names.
    let to = format!("{}/recv", s.dir);
    for (k, &x) in [s.a, s.b, s.f].iter().enumerate() {
        if !send_to(x, to.as_bytes(), b"again") {
            return Err(format!("sender {k} cannot send"));
        }
        let name = name_of(x);
        match recv_from(s.recv) {
            Some((m, n)) if m == b"again" && n == name => {}
            other => return Err(format!("sender {k} again: {other:?}")),
        }
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, out, ready, dir] = &args[..] else {
        eprintln!("usage: criu-victim-sock-senders OUT READY DIR");
        std::process::exit(2);
    };
    std::env::set_current_dir(dir).unwrap();
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let pid = std::process::id();
    let to = format!("{dir}/recv");
    let recv = dgram(to.as_bytes());
    let rel = dgram(b"rel-recv");
    let name_a = format!("\0criu-snd-a-{pid}").into_bytes();
    let name_b = format!("{dir}/sndb").into_bytes();
    let name_d = format!("\0criu-snd-d-{pid}").into_bytes();
    let name_e = format!("{dir}/snde").into_bytes();
    let a = dgram(&name_a);
    let b = dgram(&name_b);
    let (ba, blen) = addr(to.as_bytes());
    // SAFETY: connect reads a live sockaddr_un.
    let r = unsafe { libc::connect(b, (&ba as *const libc::sockaddr_un).cast(), blen) };
    assert_eq!(r, 0);
    let c = unnamed();
    let d = dgram(&name_d);
    let e = dgram(&name_e);
    let f = dgram(b"");
    let name_f = name_of(f);
    let t = to.as_bytes();
    assert!(send_to(a, t, b"1"));
    // SAFETY: send on a connected socket from a live buffer.
    assert_eq!(unsafe { libc::send(b, b"2".as_ptr().cast(), 1, 0) }, 1);
    assert!(send_to(c, t, b"3"));
    assert!(send_to(d, t, b"4"));
    assert!(send_to(e, t, b"5"));
    assert!(send_to(a, t, b"6"));
    assert!(send_to(f, t, b"7"));
    assert!(send_to(a, format!("{dir}/rel-recv").as_bytes(), b"8"));
    // SAFETY: closing sockets of our own that nothing else uses.
    unsafe {
        libc::close(c);
        libc::close(d);
        libc::close(e);
    }
    std::fs::remove_file(format!("{dir}/snde")).unwrap();
    let m = |x: &[u8], n: &[u8]| (x.to_vec(), n.to_vec());
    let st = State {
        dir: dir.clone(),
        recv,
        rel,
        a,
        b,
        f,
        want: vec![
            m(b"1", &name_a),
            m(b"2", &name_b),
            m(b"3", b""),
            m(b"4", &name_d),
            m(b"5", &name_e),
            m(b"6", &name_a),
            m(b"7", &name_f),
        ],
        want_rel: vec![m(b"8", &name_a)],
    };
    let tmp = format!("{ready}.tmp");
    std::fs::write(&tmp, format!("ready {pid}")).unwrap();
    std::fs::rename(&tmp, ready).unwrap();
    loop {
        if GO.swap(false, Ordering::SeqCst) {
            let verdict = match check(&st) {
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
