//! criu restore victim: a process with a lot of touched memory that checks it itself.
//!
//! `criu-victim-big-memory MIB READY [holes] [nothp]`: maps MIB MiB of anonymous private memory,
//! writes byte `(page * 31 + i) & 0xff` at offset `i` of every page, writes `ready PID ADDR`
//! (the area's start, hex) into READY and sleeps. With `holes`, page 700 of every 1024 (one
//! page in each 4 MiB) is dropped again and must read as zeros; with `nothp` it turns huge
//! pages off for itself first (`PR_SET_THP_DISABLE`). On `SIGUSR1` it checks every byte and
//! writes `check ok` (or `check bad PAGE`) into READY.2.

use std::sync::atomic::{AtomicBool, Ordering};

static CHECK: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    CHECK.store(true, Ordering::SeqCst);
}

fn byte(page: usize, i: usize) -> u8 {
    ((page * 31 + i) & 0xff) as u8
}

/// Whether `page` is a hole (with `holes`).
fn hole(page: usize) -> bool {
    page % 1024 == 700
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(mib), Some(ready)) = (
        args.get(1).and_then(|s| s.parse::<usize>().ok()),
        args.get(2),
    ) else {
        eprintln!("usage: criu-victim-big-memory MIB READY [holes] [nothp]");
        std::process::exit(2);
    };
    let holes = args.iter().skip(3).any(|a| a == "holes");
    if args.iter().skip(3).any(|a| a == "nothp") {
        // SAFETY: a prctl with plain integer arguments.
        let r = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        assert_eq!(r, 0, "PR_SET_THP_DISABLE");
    }
    let len = mib << 20;
    let p = if len == 0 {
        std::ptr::NonNull::<u8>::dangling().as_ptr().cast()
    } else {
        // SAFETY: a fresh anonymous mapping; nothing else refers to it. It has an
        // inaccessible page on each side, so that it stays an area of its own in /proc.
        unsafe {
            let q = libc::mmap(
                std::ptr::null_mut(),
                len + 2 * 4096,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if q == libc::MAP_FAILED
                || libc::mprotect(
                    q.cast::<u8>().add(4096).cast(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                ) != 0
            {
                libc::MAP_FAILED
            } else {
                q.cast::<u8>().add(4096).cast()
            }
        }
    };
    assert_ne!(p, libc::MAP_FAILED, "mmap of {mib} MiB");
    // SAFETY: the mapping above is `len` bytes (or none), readable and writable, ours alone.
    let mem = unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), len) };
    for (page, chunk) in mem.chunks_mut(4096).enumerate() {
        for (i, b) in chunk.iter_mut().enumerate() {
            *b = byte(page, i);
        }
    }
    if holes {
        for page in (0..len / 4096).filter(|p| hole(*p)) {
            // SAFETY: drops one page of our own mapping; it reads as zeros afterwards.
            let r = unsafe {
                libc::madvise(
                    mem.as_mut_ptr().add(page * 4096).cast(),
                    4096,
                    libc::MADV_DONTNEED,
                )
            };
            assert_eq!(r, 0, "madvise");
        }
    }
    let expect = |page: usize, i: usize| {
        if holes && hole(page) {
            0
        } else {
            byte(page, i)
        }
    };
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t);
    }
    std::fs::write(
        ready,
        format!("ready {} {:x}", std::process::id(), p as usize),
    )
    .expect("ready");
    loop {
        // Polling (rather than pause) cannot miss a signal that lands just before the wait.
        std::thread::sleep(std::time::Duration::from_millis(2));
        if CHECK.swap(false, Ordering::SeqCst) {
            let bad = mem.chunks(4096).enumerate().find(|(page, chunk)| {
                chunk
                    .iter()
                    .enumerate()
                    .any(|(i, b)| *b != expect(*page, i))
            });
            let verdict = match bad {
                None => "check ok".to_string(),
                Some((page, _)) => format!("check bad {page}"),
            };
            std::fs::write(format!("{ready}.2"), verdict).expect("verdict");
        }
    }
}
