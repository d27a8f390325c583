//! criu restore victim: a process with a lot of touched memory that checks it itself.
//!
//! `criu-rvictim-big MIB READY`: maps MIB MiB of anonymous private memory, writes byte
//! `(page * 31 + i) & 0xff` at offset `i` of every page, writes `ready PID` into READY and
//! sleeps. On `SIGUSR1` it checks every byte and writes `check ok` (or `check bad PAGE`) into
//! READY.2.

use std::sync::atomic::{AtomicBool, Ordering};

static CHECK: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    CHECK.store(true, Ordering::SeqCst);
}

fn byte(page: usize, i: usize) -> u8 {
    ((page * 31 + i) & 0xff) as u8
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(mib), Some(ready)) = (
        args.get(1).and_then(|s| s.parse::<usize>().ok()),
        args.get(2),
    ) else {
        eprintln!("usage: criu-rvictim-big MIB READY");
        std::process::exit(2);
    };
    let len = mib << 20;
    let p = if len == 0 {
        std::ptr::NonNull::<u8>::dangling().as_ptr().cast()
    } else {
        // SAFETY: a fresh anonymous mapping; nothing else refers to it.
        unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
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
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t);
    }
    std::fs::write(ready, format!("ready {}", std::process::id())).expect("ready");
    loop {
        // Polling (rather than pause) cannot miss a signal that lands just before the wait.
        std::thread::sleep(std::time::Duration::from_millis(2));
        if CHECK.swap(false, Ordering::SeqCst) {
            let bad = mem
                .chunks(4096)
                .enumerate()
                .find(|(page, chunk)| chunk.iter().enumerate().any(|(i, b)| *b != byte(*page, i)));
            let verdict = match bad {
                None => "check ok".to_string(),
                Some((page, _)) => format!("check bad {page}"),
            };
            std::fs::write(format!("{ready}.2"), verdict).expect("verdict");
        }
    }
}
