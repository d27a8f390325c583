//! How long established connections are unreachable across a dump and restore, and what soccr
//! costs per connection.
//!
//! - **Unreachable time**: a child holds 100 established connections whose other ends the bench
//!   keeps (peers outside the tree); criu dumps it with `--tcp-established` (killing it) and
//!   restores it at once. The connections are locked (one rule pair each, in criu's network
//!   namespace) during the dump, before they go into repair mode, and unlocked at the end of the
//!   restore: the time from the start of the dump to the end of the restore bounds the time a
//!   peer's packets are dropped. Medians for `--network-lock iptables` and `nftables`, with the
//!   dump and restore parts.
//! - **soccr per connection**: pause + save + resume, and restore (into a fresh socket) + resume,
//!   of one connection with a few bytes queued each way; medians over 100 connections.
//!
//! `cargo bench -p criu --bench tcp` (5 rounds); run without `--bench` (as `cargo test
//! --benches` does) one quick round. Needs root; runs in a network namespace of its own
//! (loopback only) and leaves no rule behind (the namespace ends with the bench).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, FromRawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use criu::{DumpOptions, FinalState, NetLockMethod, RestoreOptions, RestoreOutcome, restore};

const CONNS: usize = 100;

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Moves the bench into a network namespace of its own with loopback up.
fn own_netns() {
    // SAFETY: unshare and ioctl with a live ifreq; the bench is single-threaded here.
    unsafe {
        assert_eq!(libc::unshare(libc::CLONE_NEWNET), 0, "unshare");
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        assert!(s >= 0);
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, c) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *c as libc::c_char;
        }
        ifr.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as i16;
        assert_eq!(libc::ioctl(s, libc::SIOCSIFFLAGS, &ifr), 0, "lo up");
        libc::close(s);
    }
}

/// A forked child holding `n` connections to `port` (each with "hi" written), stdio on
/// /dev/null, asleep.
fn child(l: &TcpListener, n: usize) -> (i32, Vec<TcpStream>) {
    let port = l.local_addr().unwrap().port();
    let mut ready = [0i32; 2];
    // SAFETY: pipe writes two descriptors into a live array.
    assert_eq!(unsafe { libc::pipe(ready.as_mut_ptr()) }, 0);
    // SAFETY: the bench is single-threaded here; the child only makes raw syscalls.
    let pid = match unsafe { libc::fork() } {
        // SAFETY: raw syscalls on the child's own descriptors and live locals.
        0 => unsafe {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            libc::dup2(null, 2);
            libc::close(null);
            libc::dup2(ready[1], 3);
            libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32);
            let sa = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: port.to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
                },
                sin_zero: [0; 8],
            };
            for _ in 0..n {
                let s = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
                if s < 0
                    || libc::connect(
                        s,
                        (&sa as *const libc::sockaddr_in).cast(),
                        std::mem::size_of::<libc::sockaddr_in>() as u32,
                    ) != 0
                {
                    libc::_exit(1);
                }
                libc::write(s, b"hi".as_ptr().cast(), 2);
            }
            libc::write(3, b"r".as_ptr().cast(), 1);
            libc::close(3);
            loop {
                libc::pause();
            }
        },
        pid => pid,
    };
    let peers: Vec<TcpStream> = (0..n).map(|_| l.accept().unwrap().0).collect();
    // SAFETY: closing our copy of the write end, reading one byte into a live local.
    unsafe {
        libc::close(ready[1]);
        let mut b = 0u8;
        libc::read(ready[0], (&mut b as *mut u8).cast(), 1);
        libc::close(ready[0]);
    }
    (pid, peers)
}

fn kill(pid: i32) {
    // SAFETY: kill and waitpid on a child of ours.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}

/// One dump (killing the child) and restore: (dump, restore, whole) times.
fn round(method: NetLockMethod, dir: &Path) -> (Duration, Duration, Duration) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let (pid, mut peers) = child(&l, CONNS);
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let mut d = DumpOptions::new(pid, dir);
    d.final_state = FinalState::Dead;
    d.tcp_established = true;
    d.network_lock = method;
    let t0 = Instant::now();
    criu::dump(&d, None).expect("dump");
    let t1 = Instant::now();
    // SAFETY: waitpid on the child the dump killed.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    let mut r = RestoreOptions::new(dir);
    r.detach = true;
    r.tcp_established = true;
    r.network_lock = method;
    let t2 = Instant::now();
    let out = restore(&r, None).expect("restore");
    let t3 = Instant::now();
    // Every connection works again: the bytes written before the dump arrive.
    for p in &mut peers {
        p.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 2];
        p.read_exact(&mut b)
            .expect("a connection after the restore");
    }
    match out {
        RestoreOutcome::Detached { pid: p } => kill(p),
        other => panic!("restore: {other:?}"),
    }
    (t1 - t0, t3 - t2, (t1 - t0) + (t3 - t2))
}

/// soccr's per-connection save (pause, save, resume) and restore (fresh socket, pause, restore,
/// resume) medians over `n` connections.
fn soccr_costs(n: usize) -> (Duration, Duration) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut saves = Vec::with_capacity(n);
    let mut restores = Vec::with_capacity(n);
    for _ in 0..n {
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        (&c).write_all(b"to-server").unwrap();
        s.write_all(b"to-client").unwrap();
        std::thread::sleep(Duration::from_millis(1));
        let t = Instant::now();
        let r = soccr::Repair::pause(c.as_fd()).expect("pause");
        let saved = r.save().expect("save");
        r.release();
        saves.push(t.elapsed());
        // The old socket goes (in repair mode: nothing is sent); the new one takes its place.
        drop(c);
        // SAFETY: plain socket(2); owned below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        assert!(fd >= 0);
        // SAFETY: fd is fresh and ours.
        let c2 = unsafe { TcpStream::from_raw_fd(fd) };
        let t = Instant::now();
        let r = soccr::Repair::pause(c2.as_fd()).expect("pause new");
        r.restore(&saved).expect("restore");
        r.resume().expect("resume");
        restores.push(t.elapsed());
        let mut b = [0u8; 9];
        (&c2).read_exact(&mut b).unwrap();
        assert_eq!(&b, b"to-client");
        let _ = c2.as_raw_fd();
    }
    (median(&mut saves), median(&mut restores))
}

fn main() {
    // SAFETY: geteuid takes no arguments.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: the tcp bench needs root");
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let rounds = if full { 5 } else { 1 };
    own_netns();
    // SAFETY: prctl with plain values.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let img = dir.path().join("img");
    println!(
        "tcp bench ({rounds} rounds, {CONNS} established connections, peers outside the tree):"
    );
    for name in ["iptables", "nftables"] {
        let method = NetLockMethod::parse(name).expect("method");
        let (mut ds, mut rs, mut ws) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let (d, r, w) = round(method, &img);
            ds.push(d);
            rs.push(r);
            ws.push(w);
        }
        println!(
            "  {name:<8}  unreachable (dump + restore) median {:>8.1} ms  (dump {:>7.1} ms, restore {:>7.1} ms)",
            ms(median(&mut ws)),
            ms(median(&mut ds)),
            ms(median(&mut rs))
        );
    }
    let (s, r) = soccr_costs(CONNS);
    println!(
        "  soccr per connection: save {:>6.1} us, restore {:>6.1} us (medians over {CONNS})",
        s.as_secs_f64() * 1e6,
        r.as_secs_f64() * 1e6
    );
}
