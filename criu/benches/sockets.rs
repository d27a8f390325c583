//! Dump and restore time of a process holding 1,000 unix sockets (500 socketpairs with 2 KiB
//! queued each way), against a same-run baseline (the same program without sockets): medians
//! and the cost per socket.
//!
//! `cargo bench -p criu --bench sockets` (9 rounds each); run without `--bench` (as
//! `cargo test --benches` does) it makes one quick sanity round. Needs root (the restore).
//!
//! Dumps use the library with `--leave-running` (one victim serves every dump round); restores
//! use the library with `--restore-detached` from one killed dump, the restored process killed
//! and reaped after each round (the bench is a child subreaper).

use std::path::Path;
use std::time::{Duration, Instant};

use criu::{DumpOptions, FinalState, RestoreOptions, RestoreOutcome, restore};

const PAIRS: usize = 500;
const QUEUED: usize = 2048;

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A forked child holding `pairs` socketpairs with `QUEUED` bytes waiting each way, stdio on
/// /dev/null, asleep.
fn child(pairs: usize) -> i32 {
    let mut ready = [0i32; 2];
    // SAFETY: pipe writes two descriptors into a live array.
    assert_eq!(unsafe { libc::pipe(ready.as_mut_ptr()) }, 0);
    // SAFETY: the bench is single-threaded here; the child only makes raw syscalls.
    match unsafe { libc::fork() } {
        // SAFETY: raw syscalls on the child's own descriptors and a live stack buffer.
        0 => unsafe {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            libc::dup2(null, 2);
            libc::close(null);
            // Nothing inherited but the ready pipe (at 3): an inherited descriptor (a lock
            // file of the caller's, say) would be dumped with the child.
            libc::dup2(ready[1], 3);
            libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32);
            let ready = [-1, 3];
            let buf = [0x5au8; QUEUED];
            for _ in 0..pairs {
                let mut sv = [0i32; 2];
                if libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, sv.as_mut_ptr()) != 0 {
                    libc::_exit(1);
                }
                libc::write(sv[0], buf.as_ptr().cast(), QUEUED);
                libc::write(sv[1], buf.as_ptr().cast(), QUEUED);
            }
            libc::write(ready[1], b"r".as_ptr().cast(), 1);
            libc::close(ready[1]);
            loop {
                libc::pause();
            }
        },
        pid => {
            // SAFETY: closing our copy of the write end, reading one byte into a live local.
            unsafe {
                libc::close(ready[1]);
                let mut b = 0u8;
                libc::read(ready[0], (&mut b as *mut u8).cast(), 1);
                libc::close(ready[0]);
            }
            pid
        }
    }
}

fn kill(pid: i32) {
    // SAFETY: kill and waitpid on a child of ours.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}

fn dump(pid: i32, dir: &Path, state: FinalState) -> Duration {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let opts = DumpOptions {
        final_state: state,
        ..DumpOptions::new(pid, dir)
    };
    let t = Instant::now();
    criu::dump(&opts, None).expect("dump");
    t.elapsed()
}

/// Median dump and restore times of a child with `pairs` socketpairs.
fn measure(pairs: usize, rounds: usize, dir: &Path) -> (Duration, Duration) {
    let pid = child(pairs);
    let mut dumps: Vec<Duration> = (0..rounds)
        .map(|_| dump(pid, dir, FinalState::Alive))
        .collect();
    dump(pid, dir, FinalState::Dead);
    // SAFETY: waitpid on the child the dump killed.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    let mut restores = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let opts = RestoreOptions {
            detach: true,
            ..RestoreOptions::new(dir)
        };
        let t = Instant::now();
        let out = restore(&opts, None).expect("restore");
        restores.push(t.elapsed());
        match out {
            RestoreOutcome::Detached { pid: p } => kill(p),
            other => panic!("restore: {other:?}"),
        }
    }
    (median(&mut dumps), median(&mut restores))
}

fn main() {
    // SAFETY: getuid takes no arguments.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: the sockets bench needs root");
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let rounds = if full { 9 } else { 1 };
    // SAFETY: prctl and setrlimit with plain values and a live struct.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        let mut r: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur = r.rlim_max.min(1 << 16);
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
    }
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let img = dir.path().join("img");
    let (bd, br) = measure(0, rounds, &img);
    let (sd, sr) = measure(PAIRS, rounds, &img);
    let n = (2 * PAIRS) as f64;
    let per = |a: Duration, b: Duration| (a.as_secs_f64() - b.as_secs_f64()) / n * 1e6;
    println!(
        "sockets bench ({rounds} rounds, {PAIRS} socketpairs, {QUEUED} bytes queued each way):"
    );
    println!(
        "  dump    median {:>8.2} ms  (baseline {:>6.2} ms)  {:>6.1} us per socket",
        sd.as_secs_f64() * 1e3,
        bd.as_secs_f64() * 1e3,
        per(sd, bd)
    );
    println!(
        "  restore median {:>8.2} ms  (baseline {:>6.2} ms)  {:>6.1} us per socket",
        sr.as_secs_f64() * 1e3,
        br.as_secs_f64() * 1e3,
        per(sr, br)
    );
}
