//! Time until a restored process runs: lazy restore (`--lazy-pages` with `criu lazy-pages`)
//! against a full restore, in the same run.
//!
//! `cargo bench -p criu --bench lazy` (7 rounds of each, 1 GiB); run without `--bench` (as
//! `cargo test --benches` does) it makes one quick round with 64 MiB. `CRIU_BENCH_MIB=N`:
//! another size.
//!
//! The victim is a forked child holding 1 GiB of written anonymous memory, dumped once (left
//! running, then killed so that its pid is free) into `/dev/shm`. Each round restores it
//! detached, in this process: **full** (every page read in before the task resumes) and
//! **lazy** (a `criu lazy-pages` daemon started first; the private anonymous memory is left
//! to it). The time that counts is from the call to the task running on its own. For the lazy
//! rounds the time until the daemon has pushed everything (and exited) is printed too. Prints
//! medians and the ratio lazy / full.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use criu::{DumpOptions, FinalState, RestoreOptions, RestoreOutcome};

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A child holding `bytes` of written anonymous memory, stdio on /dev/null, no other fds.
fn big_child(bytes: usize) -> i32 {
    let mut fds = [0i32; 2];
    // SAFETY: pipe writes two descriptors into fds.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the bench is single-threaded here; the child only makes raw syscalls.
    match unsafe { libc::fork() } {
        // SAFETY: raw syscalls on the child's own descriptors, and writes into the mapping it
        // just created.
        0 => unsafe {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            libc::dup2(null, 2);
            let p = libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            ) as *mut u8;
            let mut i = 0;
            while i < bytes {
                *p.add(i) = (i / 4096) as u8 | 1;
                i += 4096;
            }
            libc::write(fds[1], [1u8].as_ptr().cast(), 1);
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            loop {
                libc::pause();
            }
        },
        pid => {
            // SAFETY: closing our copy of the write end, reading one byte, closing the rest.
            unsafe {
                libc::close(fds[1]);
                let mut b = [0u8; 1];
                assert_eq!(
                    libc::read(fds[0], b.as_mut_ptr().cast(), 1),
                    1,
                    "child not ready"
                );
                libc::close(fds[0]);
            }
            pid
        }
    }
}

fn kill_reap(pid: i32) {
    // SAFETY: kill and waitpid on our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}

/// Starts `criu lazy-pages` on `dir` and waits until it listens.
fn daemon(dir: &Path) -> std::process::Child {
    let (r, w) = {
        let mut fds = [0i32; 2];
        // SAFETY: pipe writes two descriptors into fds.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        (fds[0], fds[1])
    };
    let c = Command::new(env!("CARGO_BIN_EXE_criu"))
        .args(["lazy-pages", "-D", dir.to_str().unwrap()])
        .args(["--status-fd", &w.to_string(), "-o", "lazy.log"])
        .stdout(Stdio::null())
        .spawn()
        .expect("criu lazy-pages");
    // SAFETY: closing our write end, reading one byte into a live buffer, closing the read end.
    unsafe {
        libc::close(w);
        let mut b = [1u8; 1];
        assert_eq!(
            libc::read(r, b.as_mut_ptr().cast(), 1),
            1,
            "criu lazy-pages did not start"
        );
        libc::close(r);
    }
    c
}

fn restore(dir: &Path, lazy: bool) -> (i32, Duration) {
    let opts = RestoreOptions {
        detach: true,
        lazy_pages: lazy.then(|| dir.join("lazy-pages.socket")),
        ..RestoreOptions::new(dir)
    };
    let t = Instant::now();
    let out = criu::restore(&opts, None).expect("restore");
    let took = t.elapsed();
    let RestoreOutcome::Detached { pid } = out else {
        panic!("not detached: {out:?}");
    };
    (pid, took)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (rounds, mut bytes) = if full {
        (7, 1usize << 30)
    } else {
        (1, 64usize << 20)
    };
    if let Some(m) = std::env::var("CRIU_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        bytes = m << 20;
    }
    let dir = PathBuf::from("/dev/shm").join(format!("criu-bench-lazy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(dir.clone());
    let pid = big_child(bytes);
    criu::dump(
        &DumpOptions {
            final_state: FinalState::Alive,
            ..DumpOptions::new(pid, &dir)
        },
        None,
    )
    .expect("dump");
    kill_reap(pid);

    let (mut full_t, mut lazy_t, mut all_in) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (p, t) = restore(&dir, false);
        full_t.push(t);
        kill_reap(p);

        let mut d = daemon(&dir);
        let t0 = Instant::now();
        let (p, t) = restore(&dir, true);
        lazy_t.push(t);
        let st = d.wait().expect("criu lazy-pages");
        all_in.push(t0.elapsed());
        assert!(
            st.success(),
            "criu lazy-pages failed: see {}/lazy.log",
            dir.display()
        );
        kill_reap(p);
    }
    let f = median(&mut full_t);
    let l = median(&mut lazy_t);
    let a = median(&mut all_in);
    println!(
        "lazy bench: {} MiB of written anonymous memory, {rounds} rounds, images on /dev/shm",
        bytes >> 20
    );
    println!(
        "  full restore   running after {:>8.1} ms",
        f.as_secs_f64() * 1e3
    );
    println!(
        "  lazy restore   running after {:>8.1} ms  = {:.3} x full  (all memory in after {:.1} ms)",
        l.as_secs_f64() * 1e3,
        l.as_secs_f64() / f.as_secs_f64(),
        a.as_secs_f64() * 1e3
    );
}
