//! criu restore victim: shared anonymous memory that checks itself.
//!
//! `criu-victim-shared-anon READY`: maps 4 pages `MAP_SHARED | MAP_ANONYMOUS`, writes byte
//! `(page * 13 + i) & 0xff` into pages 0, 1 and 3 (page 2 stays untouched) and makes page 1
//! read-only, so that one shared object backs three areas; writes `ready PID ADDR` into READY
//! and polls. On `SIGUSR1` it checks the bytes (page 2 must read as zeros), that the areas are
//! still shared mappings (`rw-s`, `r--s`, `rw-s` in its own maps) of one object: a view of the
//! whole object, opened through the first area's `/proc/self/map_files` entry, sees a write
//! made through the last area. Then it writes `check ok` (or `check bad WHAT`) into READY.2.

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
    for (page, perms) in [(0, " rw-s "), (1, " r--s "), (2, " rw-s ")] {
        let a = start + page * PAGE;
        let e = if page == 2 {
            start + PAGES * PAGE
        } else {
            a + PAGE
        };
        let line = maps
            .lines()
            .find(|l| l.starts_with(&format!("{a:x}-{e:x} ")))
            .ok_or(format!("no area {a:x}-{e:x}"))?;
        if !line.contains(perms) {
            return Err(format!("area is {line}"));
        }
    }
    // A view of the whole object through the first area sees writes through the last one.
    let path = format!("/proc/self/map_files/{start:x}-{:x}", start + PAGE);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| format!("{path}: {e}"))?;
    use std::os::fd::AsRawFd;
    // SAFETY: maps the whole object read-only at a fresh address.
    let view = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PAGES * PAGE,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    if view == libc::MAP_FAILED {
        return Err("second view".into());
    }
    let at = 3 * PAGE + 7;
    mem[at] = 0xa5;
    // SAFETY: `view` is PAGES readable pages.
    let seen = unsafe { *view.cast::<u8>().add(at) };
    mem[at] = byte(3, 7);
    // SAFETY: unmapping the view mapped above.
    unsafe { libc::munmap(view, PAGES * PAGE) };
    if seen != 0xa5 {
        return Err("areas do not share one object".into());
    }
    Ok(())
}

fn main() {
    let Some(ready) = std::env::args().nth(1) else {
        eprintln!("usage: criu-victim-shared-anon READY");
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
    // SAFETY: page 1 of the mapping above; read-only from now on (it is only read).
    let r = unsafe { libc::mprotect(p.cast::<u8>().add(PAGE).cast(), PAGE, libc::PROT_READ) };
    assert_eq!(r, 0);
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
