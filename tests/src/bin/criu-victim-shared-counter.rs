//! criu restore victim: a parent and a child that count in one shared anonymous page.
//!
//! `criu-victim-shared-counter READY RESULT`: the parent maps one page `MAP_SHARED | MAP_ANONYMOUS`
//! and forks one child. Every 1 ms each of them increments its own slot in the page (parent
//! slot 0, child slot 1) and a private copy of it. Once the child's slot moves the parent
//! writes `ready PARENT CHILD ADDR` into READY. On `SIGUSR1` each checks that its slot still
//! equals its private count (the page's contents came back), that the page is still a shared
//! mapping in its own maps, and that the other's slot keeps advancing as seen through the page
//! (the page is still one object shared by both), then appends `check ok PID` or
//! `check bad PID WHAT` to RESULT. Both run until killed.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

static CHECK: AtomicBool = AtomicBool::new(false);
static MINE: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_usr1(_: libc::c_int) {
    CHECK.store(true, Ordering::SeqCst);
}

/// Slot `i` of the shared page (slots are a cache line apart).
fn slot(page: *mut u8, i: usize) -> &'static AtomicU64 {
    // SAFETY: `page` is a page-aligned, readable and writable mapping of 4096 bytes that lives
    // as long as the process; slot offsets 0 and 64 are inside it and 8-byte aligned.
    unsafe { &*page.add(i * 64).cast::<AtomicU64>() }
}

fn append(path: &str, line: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(format!("{line}\n").as_bytes());
    }
}

fn tick(own: &AtomicU64) {
    std::thread::sleep(Duration::from_millis(1));
    MINE.fetch_add(1, Ordering::SeqCst);
    own.fetch_add(1, Ordering::SeqCst);
}

fn check(page: *mut u8, me: usize) -> Result<(), String> {
    let (own, other) = (slot(page, me), slot(page, 1 - me));
    let (m, o) = (MINE.load(Ordering::SeqCst), own.load(Ordering::SeqCst));
    if m != o {
        return Err(format!("own slot {o}, private count {m}"));
    }
    let start = page as usize;
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(|e| e.to_string())?;
    let line = maps
        .lines()
        .find(|l| l.starts_with(&format!("{start:x}-{:x} ", start + 4096)))
        .ok_or(format!("no area at {start:x}"))?;
    if !line.contains(" rw-s ") {
        return Err(format!("area is {line}"));
    }
    let seen = other.load(Ordering::SeqCst);
    for _ in 0..50 {
        tick(own);
    }
    let now = other.load(Ordering::SeqCst);
    if now <= seen {
        return Err(format!("other slot stuck at {seen} (now {now})"));
    }
    Ok(())
}

fn run(page: *mut u8, me: usize, result: &str) -> ! {
    let own = slot(page, me);
    loop {
        tick(own);
        if CHECK.swap(false, Ordering::SeqCst) {
            // SAFETY: getpid has no preconditions.
            let pid = unsafe { libc::getpid() };
            let line = match check(page, me) {
                Ok(()) => format!("check ok {pid}"),
                Err(what) => format!("check bad {pid} {what}"),
            };
            append(result, &line);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(ready), Some(result)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: criu-victim-shared-counter READY RESULT");
        std::process::exit(2);
    };
    // SAFETY: a fresh shared anonymous mapping of one page; nothing else refers to it.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    let page = p.cast::<u8>();
    // SAFETY: installs a handler that only stores to an atomic; the child inherits it.
    unsafe {
        libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t);
    }
    // SAFETY: the process is single-threaded, so the child may run Rust code freely.
    let child = unsafe { libc::fork() };
    if child < 0 {
        eprintln!("fork: {}", std::io::Error::last_os_error());
        std::process::exit(4);
    }
    if child == 0 {
        run(page, 1, result);
    }
    let own = slot(page, 0);
    while slot(page, 1).load(Ordering::SeqCst) < 5 {
        tick(own);
    }
    let tmp = format!("{ready}.tmp");
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    std::fs::write(&tmp, format!("ready {me} {child} {:#x}", p as usize)).expect("ready");
    std::fs::rename(&tmp, ready).expect("ready");
    run(page, 0, result);
}
