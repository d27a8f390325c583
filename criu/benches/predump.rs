//! Frozen time of an incremental dump against a full one, in the same run.
//!
//! `cargo bench -p criu --bench predump` (7 rounds of each, 1 GiB); run without `--bench` (as
//! `cargo test --benches` does) it makes one quick round with 64 MiB.
//!
//! The victim is a forked child holding 1 GiB of written anonymous memory. First the **full**
//! dumps (`--leave-running`, no tracking): the time the tree is frozen (seize to images
//! written). Then the **incremental** rounds: a `pre-dump` (memory tracking starts, or goes on
//! from the previous round's dump), 10 % of the memory written (102 MiB, in 64 KiB pieces
//! spread over the whole area, written from here with `process_vm_writev`, which the kernel
//! tracks as the task's own writes), then `dump --track-mem --prev-images-dir ../pre`, whose
//! frozen time is the one that counts in a live migration. Images on `/dev/shm`. Prints
//! medians and the ratio incremental / full, and the pages each wrote.

use std::path::{Path, PathBuf};
use std::time::Duration;

use criu::{DumpOptions, FinalState};

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A child holding `bytes` of written anonymous memory at the returned address, stdio on
/// /dev/null, no other fds.
fn big_child(bytes: usize) -> (i32, u64) {
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
            let addr = (p as u64).to_le_bytes();
            libc::write(fds[1], addr.as_ptr() as *const libc::c_void, 8);
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            loop {
                libc::pause();
            }
        },
        pid => {
            // SAFETY: closing our copy of the write end.
            unsafe { libc::close(fds[1]) };
            let mut b = [0u8; 8];
            // SAFETY: reads 8 bytes into b.
            let n = unsafe { libc::read(fds[0], b.as_mut_ptr() as *mut libc::c_void, 8) };
            assert_eq!(n, 8, "child not ready");
            // SAFETY: closing our read end.
            unsafe { libc::close(fds[0]) };
            (pid, u64::from_le_bytes(b))
        }
    }
}

/// Writes 10 % of the child's `bytes` at `addr`: 64 KiB out of every 640 KiB, byte `round`.
fn dirty(pid: i32, addr: u64, bytes: usize, round: u8) {
    const PIECE: usize = 64 << 10;
    let buf = vec![round; PIECE];
    let mut off = 0;
    while off + PIECE <= bytes {
        let local = libc::iovec {
            iov_base: buf.as_ptr() as *mut libc::c_void,
            iov_len: PIECE,
        };
        let remote = libc::iovec {
            iov_base: (addr + off as u64) as *mut libc::c_void,
            iov_len: PIECE,
        };
        // SAFETY: one local buffer of PIECE bytes, alive for the call; the remote range is
        // inside the child's mapping.
        let n = unsafe { libc::process_vm_writev(pid, &local, 1, &remote, 1, 0) };
        assert_eq!(n, PIECE as isize, "process_vm_writev");
        off += 10 * PIECE;
    }
}

fn fresh(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (rounds, bytes) = if full {
        (7, 1usize << 30)
    } else {
        (1, 64usize << 20)
    };
    let base = PathBuf::from("/dev/shm").join(format!("criu-bench-predump-{}", std::process::id()));
    std::fs::create_dir_all(&base).unwrap();
    struct Cleanup(PathBuf, i32);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
            // SAFETY: kill and waitpid on our own child.
            unsafe {
                libc::kill(self.1, libc::SIGKILL);
                libc::waitpid(self.1, std::ptr::null_mut(), 0);
            }
        }
    }
    let (pid, addr) = big_child(bytes);
    let _cleanup = Cleanup(base.clone(), pid);

    let mut full_frozen = Vec::new();
    let mut full_pages = 0;
    for _ in 0..rounds {
        let d = base.join("full");
        fresh(&d);
        let s = criu::dump(
            &DumpOptions {
                final_state: FinalState::Alive,
                ..DumpOptions::new(pid, &d)
            },
            None,
        )
        .expect("full dump");
        full_frozen.push(Duration::from_micros(s.frozen_us));
        full_pages = s.pages_written;
    }
    let _ = std::fs::remove_dir_all(base.join("full"));

    let mut pre_frozen = Vec::new();
    let mut incr_frozen = Vec::new();
    let mut incr_pages = 0;
    let mut last: Option<PathBuf> = None;
    for round in 0..rounds {
        let pre = base.join(format!("pre{round}"));
        let fin = base.join(format!("dump{round}"));
        fresh(&pre);
        fresh(&fin);
        let s = criu::pre_dump(&DumpOptions {
            track_mem: true,
            prev_images_dir: last.as_ref().map(|l| Path::new("..").join(l)),
            ..DumpOptions::new(pid, &pre)
        })
        .expect("pre-dump");
        pre_frozen.push(Duration::from_micros(s.frozen_us));
        dirty(pid, addr, bytes, round as u8 + 2);
        let s = criu::dump(
            &DumpOptions {
                final_state: FinalState::Alive,
                track_mem: true,
                prev_images_dir: Some(Path::new("..").join(format!("pre{round}"))),
                ..DumpOptions::new(pid, &fin)
            },
            None,
        )
        .expect("incremental dump");
        incr_frozen.push(Duration::from_micros(s.frozen_us));
        incr_pages = s.pages_written;
        // The next round's pre-dump goes on from this dump.
        last = Some(PathBuf::from(format!("dump{round}")));
    }
    let f = median(&mut full_frozen);
    let p = median(&mut pre_frozen);
    let i = median(&mut incr_frozen);
    println!(
        "predump bench: {} MiB, 10 % written between pre-dump and dump, {rounds} rounds, images on /dev/shm",
        bytes >> 20
    );
    println!(
        "  full dump          frozen {:>9.1} ms  ({full_pages} pages)",
        f.as_secs_f64() * 1e3
    );
    println!(
        "  pre-dump (splice)  frozen {:>9.1} ms",
        p.as_secs_f64() * 1e3
    );
    println!(
        "  incremental dump   frozen {:>9.1} ms  ({incr_pages} pages)  = {:.3} x full",
        i.as_secs_f64() * 1e3,
        i.as_secs_f64() / f.as_secs_f64()
    );
}
