//! criu restore victim: shared anonymous memory that checks itself.
//!
//! `criu-rvictim-shared READY`: maps 4 pages `MAP_SHARED | MAP_ANONYMOUS`, writes byte
//! `(page * 13 + i) & 0xff` into pages 0, 1 and 3 (page 2 stays untouched), writes
//! `ready PID ADDR` into READY and polls. On `SIGUSR1` it checks the bytes (page 2 must read as
//! zeros), that the area is still one shared mapping (`rw-s` in its own maps) and that a write
//! through it is seen through a second view of the same object (`/proc/self/map_files`), then
//! writes `check ok` (or `check bad WHAT`) into READY.2.

use std::sync::atomic::{AtomicBool, Ordering};

static CHECK: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    CHECK.store(true, Ordering::SeqCst);
}

const PAGES: usize = 4;
const PAGE: usize = 4096;

fn byte(page: usize, i: usize) -> u8 {
    if page == 2 {
        0
    } else {
        ((page * 13 + i) & 0xff) as u8
    }
}

fn check(base: *mut u8) -> Result<(), String> {
    // SAFETY: the mapping is PAGES pages, readable and writable, for the life of the process.
    let mem = unsafe { std::slice::from_raw_parts_mut(base, PAGES * PAGE) };
    for (page, chunk) in mem.chunks(PAGE).enumerate() {
        if chunk.iter().enumerate().any(|(i, b)| *b != byte(page, i)) {
            return Err(format!("content of page {page}"));
        }
    }
    let start = base as usize;
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(|e| e.to_string())?;
    let line = maps
        .lines()
        .find(|l| l.starts_with(&format!("{start:x}-{:x} ", start + PAGES * PAGE)))
        .ok_or("mapping")?;
    if !line.contains(" rw-s ") {
        return Err(format!("mapping is {line}"));
    }
    // A second view of the same object sees writes through the first.
    let path = format!("/proc/self/map_files/{start:x}-{:x}", start + PAGES * PAGE);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| format!("{path}: {e}"))?;
    use std::os::fd::AsRawFd;
    // SAFETY: maps one page of the object read-only at a fresh address.
    let view = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PAGE,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    if view == libc::MAP_FAILED {
        return Err("second view".into());
    }
    mem[7] = 0xa5;
    // SAFETY: `view` is one readable page.
    let seen = unsafe { *view.cast::<u8>().add(7) };
    mem[7] = byte(0, 7);
    // SAFETY: unmapping the view mapped above.
    unsafe { libc::munmap(view, PAGE) };
    if seen != 0xa5 {
        return Err("not shared".into());
    }
    Ok(())
}

fn main() {
    let Some(ready) = std::env::args().nth(1) else {
        eprintln!("usage: criu-rvictim-shared READY");
        std::process::exit(2);
    };
    // SAFETY: a fresh shared anonymous mapping; nothing else refers to it.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PAGES * PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    let base = p.cast::<u8>();
    // SAFETY: the mapping above is PAGES pages, readable and writable.
    let mem = unsafe { std::slice::from_raw_parts_mut(base, PAGES * PAGE) };
    for (page, chunk) in mem.chunks_mut(PAGE).enumerate() {
        if page != 2 {
            for (i, b) in chunk.iter_mut().enumerate() {
                *b = byte(page, i);
            }
        }
    }
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t);
    }
    std::fs::write(
        &ready,
        format!("ready {} {:#x}", std::process::id(), p as usize),
    )
    .expect("ready");
    loop {
        std::thread::sleep(std::time::Duration::from_millis(2));
        if CHECK.swap(false, Ordering::SeqCst) {
            let verdict = match check(base) {
                Ok(()) => "check ok".to_string(),
                Err(what) => format!("check bad {what}"),
            };
            std::fs::write(format!("{ready}.2"), verdict).expect("verdict");
        }
    }
}
