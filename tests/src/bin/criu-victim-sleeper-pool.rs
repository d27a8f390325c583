//! criu bench victim: many tasks that only sleep.
//!
//! - `criu-victim-sleeper-pool threads N READY`: one process that starts N threads besides its main
//!   thread; every thread sleeps in a loop. Writes `ready PID` into READY once all N run.
//! - `criu-victim-sleeper-pool tree N READY`: a tree of N processes: the root forks
//!   `ceil(sqrt(N-1))` children, which between them fork the remaining processes as their own
//!   children (so 50 is a root, 7 children and 6 grandchildren under each). Every process sleeps in
//!   `pause`. Each reports its pid to the root through a pipe (closed again by all, so the tree
//!   holds no pipe); the root then writes `ready ROOT PIDS...` into READY, children before
//!   grandchildren (the order in which to reap them).
//!
//! READY is written as READY.tmp and renamed, so a reader never sees it half written.

use std::time::Duration;

fn write_ready(ready: &str, text: &str) {
    let tmp = format!("{ready}.tmp");
    std::fs::write(&tmp, text).expect("write ready");
    std::fs::rename(&tmp, ready).expect("rename ready");
}

fn threads(n: usize, ready: &str) -> ! {
    let started = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for _ in 0..n {
        let started = started.clone();
        std::thread::Builder::new()
            .stack_size(64 << 10)
            .spawn(move || {
                started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                loop {
                    std::thread::sleep(Duration::from_secs(1000));
                }
            })
            .expect("spawn thread");
    }
    while started.load(std::sync::atomic::Ordering::SeqCst) < n {
        std::thread::sleep(Duration::from_micros(50));
    }
    write_ready(ready, &format!("ready {}", std::process::id()));
    loop {
        std::thread::sleep(Duration::from_secs(1000));
    }
}

/// In a forked process: reports (level, pid) to the root in one 8-byte write, closes the pipe
/// and sleeps for good.
///
/// # Safety
/// Only raw syscalls; fine in a child forked from a single-threaded process.
unsafe fn report_and_sleep(fds: [i32; 2], level: i32) -> ! {
    // SAFETY: writes 8 bytes from a local array; closes this process's own pipe ends.
    unsafe {
        let rec = [level, libc::getpid()];
        libc::write(fds[1], rec.as_ptr() as *const libc::c_void, 8);
        libc::close(fds[0]);
        libc::close(fds[1]);
        loop {
            libc::pause();
        }
    }
}

fn tree(n: usize, ready: &str) -> ! {
    let rest = n.saturating_sub(1);
    let kids = (1..=rest).find(|k| k * k >= rest).unwrap_or(0);
    let mut fds = [0i32; 2];
    // SAFETY: pipe writes two descriptors into fds.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
    let mut left = rest - kids;
    for k in 0..kids {
        // Spread the grandchildren evenly over the children.
        let mine = left.div_ceil(kids - k);
        left -= mine;
        // SAFETY: the root is single-threaded; the children only make raw syscalls.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            for _ in 0..mine {
                // SAFETY: the child is single-threaded; the grandchildren only make raw syscalls.
                if unsafe { libc::fork() } == 0 {
                    // SAFETY: a forked child of a single-threaded process.
                    unsafe { report_and_sleep(fds, 2) };
                }
            }
            // SAFETY: a forked child of a single-threaded process.
            unsafe { report_and_sleep(fds, 1) };
        }
    }
    // SAFETY: the root keeps only the read end.
    unsafe { libc::close(fds[1]) };
    let mut by_level: [Vec<i32>; 3] = Default::default();
    by_level[0].push(std::process::id() as i32);
    for _ in 0..rest {
        let mut rec = [0i32; 2];
        // SAFETY: reads at most 8 bytes into rec.
        let got = unsafe { libc::read(fds[0], rec.as_mut_ptr() as *mut libc::c_void, 8) };
        assert_eq!(got, 8, "a process of the tree died while starting");
        let level = usize::try_from(rec[0]).unwrap_or(2).min(2);
        by_level[level].push(rec[1]);
    }
    // SAFETY: closing the root's last pipe end.
    unsafe { libc::close(fds[0]) };
    let list: Vec<String> = by_level.concat().iter().map(i32::to_string).collect();
    write_ready(ready, &format!("ready {}", list.join(" ")));
    loop {
        // SAFETY: pause has no preconditions.
        unsafe { libc::pause() };
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n = args.get(2).and_then(|s| s.parse::<usize>().ok());
    match (args.get(1).map(String::as_str), n, args.get(3)) {
        (Some("threads"), Some(n), Some(ready)) => threads(n, ready),
        (Some("tree"), Some(n), Some(ready)) if n >= 1 => tree(n, ready),
        _ => {
            eprintln!("usage: criu-victim-sleeper-pool threads|tree N READY");
            std::process::exit(2);
        }
    }
}
