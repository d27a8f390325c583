//! criu restore victim: a process with worker threads that checks them itself.
//!
//! `criu-victim-worker-threads N READY`: starts N workers named `worker-I`; worker I blocks signal
//! `SIGRTMIN + I` in its own mask, keeps `I * 1000 + 7` in a thread-local, and counts rounds of
//! a 1 ms sleep. Writes `ready PID TID...` into READY and polls. On `SIGUSR1` (taken by the main
//! thread, the workers block it) it checks that every worker still counts, still has its
//! thread-local, its name and its own signal mask, and that the tids are the same, then writes
//! `check ok` (or `check bad WHAT`) into READY.2.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};

static CHECK: AtomicBool = AtomicBool::new(false);
static COUNTS: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];
static TIDS: [AtomicI32; 8] = [const { AtomicI32::new(0) }; 8];
static TLS_BAD: AtomicBool = AtomicBool::new(false);

thread_local! {
    static MINE: Cell<u64> = const { Cell::new(0) };
}

extern "C" fn on_usr1(_: libc::c_int) {
    CHECK.store(true, Ordering::SeqCst);
}

fn rtmin() -> i32 {
    libc::SIGRTMIN()
}

fn worker(i: usize) {
    // SAFETY: sigset operations on a local set, then this thread's own mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, rtmin() + i as i32);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    // SAFETY: gettid has no preconditions.
    TIDS[i].store(unsafe { libc::gettid() }, Ordering::SeqCst);
    MINE.with(|m| m.set(i as u64 * 1000 + 7));
    loop {
        std::thread::sleep(std::time::Duration::from_millis(1));
        if MINE.with(Cell::get) != i as u64 * 1000 + 7 {
            TLS_BAD.store(true, Ordering::SeqCst);
        }
        COUNTS[i].fetch_add(1, Ordering::SeqCst);
    }
}

fn check(n: usize, tids: &[i32]) -> Result<(), String> {
    let before: Vec<u64> = (0..n).map(|i| COUNTS[i].load(Ordering::SeqCst)).collect();
    std::thread::sleep(std::time::Duration::from_millis(100));
    for i in 0..n {
        if COUNTS[i].load(Ordering::SeqCst) <= before[i] {
            return Err(format!("worker {i} stopped counting"));
        }
        if TIDS[i].load(Ordering::SeqCst) != tids[i] {
            return Err(format!("worker {i} tid"));
        }
        let comm = std::fs::read_to_string(format!("/proc/self/task/{}/comm", tids[i]))
            .map_err(|e| format!("worker {i}: {e}"))?;
        if comm.trim() != format!("worker-{i}") {
            return Err(format!("worker {i} name {comm:?}"));
        }
        let status = std::fs::read_to_string(format!("/proc/self/task/{}/status", tids[i]))
            .map_err(|e| format!("worker {i}: {e}"))?;
        let blk = status
            .lines()
            .find_map(|l| l.strip_prefix("SigBlk:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .ok_or("SigBlk")?;
        let want = (1u64 << (rtmin() + i as i32 - 1)) | (1u64 << (libc::SIGUSR1 - 1));
        if blk != want {
            return Err(format!("worker {i} mask {blk:#x}, want {want:#x}"));
        }
    }
    if TLS_BAD.load(Ordering::SeqCst) {
        return Err("thread-local".into());
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(n), Some(ready)) = (
        args.get(1).and_then(|s| s.parse::<usize>().ok()),
        args.get(2),
    ) else {
        eprintln!("usage: criu-victim-worker-threads N READY");
        std::process::exit(2);
    };
    let n = n.min(8);
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t);
    }
    for i in 0..n {
        std::thread::Builder::new()
            .name(format!("worker-{i}"))
            .spawn(move || worker(i))
            .expect("spawn");
    }
    while (0..n).any(|i| TIDS[i].load(Ordering::SeqCst) == 0) {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let tids: Vec<i32> = (0..n).map(|i| TIDS[i].load(Ordering::SeqCst)).collect();
    let list: Vec<String> = tids.iter().map(i32::to_string).collect();
    std::fs::write(
        ready,
        format!("ready {} {}", std::process::id(), list.join(" ")),
    )
    .expect("ready");
    loop {
        std::thread::sleep(std::time::Duration::from_millis(2));
        if CHECK.swap(false, Ordering::SeqCst) {
            let verdict = match check(n, &tids) {
                Ok(()) => "check ok".to_string(),
                Err(what) => format!("check bad {what}"),
            };
            std::fs::write(format!("{ready}.2"), verdict).expect("verdict");
        }
    }
}
