//! criu test victim: memory of every private kind holding known patterns.
//!
//! `criu-victim-memory DATAFILE READY`: fills, with byte `(i * 7 + seed) & 0xff` at offset `i`,
//!
//! - `heap`: 3 MiB from the allocator (seed 1),
//! - `anon`: a 4 MiB anonymous private mapping, every other page touched (seed 2; the untouched
//!   pages stay absent),
//! - `prot_none`: 2 pages written then made `PROT_NONE` (seed 3),
//! - `file_cow`: a private mapping of DATAFILE (2 pages, file bytes `0xee`), whose first page is
//!   overwritten (seed 4) and second left as the file has it,
//! - `shared`: a shared mapping of DATAFILE's third page, written through (seed 5, so the file
//!   holds it),
//! - `shared_anon`: 4 pages of shared anonymous memory, pages 0, 1 and 3 written (seed 6), page
//!   2 never touched,
//! - `zero`: 4 pages of anonymous private memory only ever read (the kernel's zero page),
//! - `reserve`: a 1 TiB `PROT_NONE` reservation (as language runtimes make), never touched,
//!
//! then writes `ready PID` and one `NAME ADDR LEN` line per region into READY, and sleeps. On
//! `SIGUSR1` it checks every pattern and writes `check ok` or `check bad NAME` to READY.2.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static CHECK: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    CHECK.store(true, Ordering::SeqCst);
}

fn fill(p: *mut u8, len: usize, seed: u8, step: usize) {
    for i in (0..len).step_by(step) {
        let end = (i + if step == 1 { 1 } else { 4096 }).min(len);
        for j in i..end {
            // SAFETY: p..p+len is a writable region this program mapped or allocated.
            unsafe { *p.add(j) = (j as u8).wrapping_mul(7).wrapping_add(seed) };
        }
    }
}

fn check(p: *const u8, len: usize, seed: u8, step: usize) -> bool {
    for i in (0..len).step_by(step) {
        let end = (i + if step == 1 { 1 } else { 4096 }).min(len);
        for j in i..end {
            // SAFETY: p..p+len is readable (the caller makes PROT_NONE regions readable first).
            if unsafe { *p.add(j) } != (j as u8).wrapping_mul(7).wrapping_add(seed) {
                return false;
            }
        }
    }
    true
}

fn map(len: usize, prot: i32, flags: i32, fd: i32, off: i64) -> *mut u8 {
    // SAFETY: a fresh mapping chosen by the kernel; nothing else is affected.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, off) };
    assert!(
        p != libc::MAP_FAILED,
        "mmap: {}",
        std::io::Error::last_os_error()
    );
    p as *mut u8
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(data), Some(ready)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: criu-victim-memory DATAFILE READY");
        std::process::exit(2);
    };
    const PAGE: usize = 4096;
    std::fs::write(data, vec![0xeeu8; 3 * PAGE]).expect("datafile");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(data)
        .expect("open datafile");
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);

    let mut heap = vec![0u8; 3 << 20];
    fill(heap.as_mut_ptr(), heap.len(), 1, 1);
    let anon_len = 4 << 20;
    let anon = map(
        anon_len,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
        0,
    );
    fill(anon, anon_len, 2, 2 * PAGE);
    let pn = map(
        2 * PAGE,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
        0,
    );
    fill(pn, 2 * PAGE, 3, 1);
    // SAFETY: pn is our 2-page mapping.
    unsafe { libc::mprotect(pn as *mut libc::c_void, 2 * PAGE, libc::PROT_NONE) };
    let cow = map(
        2 * PAGE,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE,
        fd,
        0,
    );
    fill(cow, PAGE, 4, 1);
    let shared = map(
        PAGE,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_SHARED,
        fd,
        2 * PAGE as i64,
    );
    fill(shared, PAGE, 5, 1);
    let sha = map(
        4 * PAGE,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_SHARED | libc::MAP_ANONYMOUS,
        -1,
        0,
    );
    fill(sha, 2 * PAGE, 6, 1);
    // SAFETY: page 3 of our 4-page mapping.
    fill(unsafe { sha.add(3 * PAGE) }, PAGE, 6 + (3 * PAGE as u8), 1);

    let zero = map(
        4 * PAGE,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
        0,
    );
    let mut sum = 0u64;
    for i in 0..4 {
        // SAFETY: reading our own mapping (faults in the zero page).
        sum += u64::from(unsafe { std::ptr::read_volatile(zero.add(i * PAGE)) });
    }
    assert_eq!(sum, 0);
    const RESERVE: usize = 1 << 40;
    let reserve = map(
        RESERVE,
        libc::PROT_NONE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
        -1,
        0,
    );
    // SAFETY: installing a handler that only stores into an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let mut r = std::fs::File::create(format!("{ready}.tmp")).expect("ready");
    writeln!(r, "ready {}", std::process::id()).unwrap();
    writeln!(r, "heap {:#x} {}", heap.as_ptr() as usize, heap.len()).unwrap();
    writeln!(r, "anon {:#x} {}", anon as usize, anon_len).unwrap();
    writeln!(r, "prot_none {:#x} {}", pn as usize, 2 * PAGE).unwrap();
    writeln!(r, "file_cow {:#x} {}", cow as usize, 2 * PAGE).unwrap();
    writeln!(r, "shared {:#x} {}", shared as usize, PAGE).unwrap();
    writeln!(r, "shared_anon {:#x} {}", sha as usize, 4 * PAGE).unwrap();
    writeln!(r, "zero {:#x} {}", zero as usize, 4 * PAGE).unwrap();
    writeln!(r, "reserve {:#x} {}", reserve as usize, RESERVE).unwrap();
    drop(r);
    std::fs::rename(format!("{ready}.tmp"), ready).expect("rename ready");
    loop {
        // Poll the flag (a pause() loop could miss a signal that lands just before it).
        std::thread::sleep(std::time::Duration::from_millis(10));
        if CHECK.swap(false, Ordering::SeqCst) {
            // SAFETY: pn is our mapping; make it readable to check it.
            unsafe { libc::mprotect(pn as *mut libc::c_void, 2 * PAGE, libc::PROT_READ) };
            let mut bad = Vec::new();
            if !check(heap.as_ptr(), heap.len(), 1, 1) {
                bad.push("heap");
            }
            if !check(anon, anon_len, 2, 2 * PAGE) {
                bad.push("anon");
            }
            if !check(pn, 2 * PAGE, 3, 1) {
                bad.push("prot_none");
            }
            if !check(cow, PAGE, 4, 1) {
                bad.push("file_cow");
            }
            // SAFETY: the second page of cow is mapped and readable.
            if unsafe { *cow.add(PAGE) } != 0xee {
                bad.push("file_cow_clean");
            }
            if !check(shared, PAGE, 5, 1) {
                bad.push("shared");
            }
            // SAFETY: our 4-page mapping, read only.
            if (0..4 * PAGE).any(|i| unsafe { *zero.add(i) } != 0) {
                bad.push("zero");
            }
            // SAFETY: pages of our 4-page shared anonymous mapping.
            let (p2, p3) = unsafe { (sha.add(2 * PAGE), sha.add(3 * PAGE)) };
            // SAFETY: p2 is page 2 of our 4-page shared anonymous mapping, mapped and readable
            // (it must read as zeros); i stays within the page.
            let p2_zero = (0..PAGE).all(|i| unsafe { *p2.add(i) } == 0);
            if !check(sha, 2 * PAGE, 6, 1) || !check(p3, PAGE, 6 + (3 * PAGE as u8), 1) || !p2_zero
            {
                bad.push("shared_anon");
            }
            // SAFETY: pn is the start of our own 2-page mapping; nothing here reads it afterwards.
            unsafe { libc::mprotect(pn as *mut libc::c_void, 2 * PAGE, libc::PROT_NONE) };
            let msg = if bad.is_empty() {
                "check ok".to_string()
            } else {
                format!("check bad {}", bad.join(" "))
            };
            std::fs::write(format!("{ready}.2"), msg).expect("check result");
        }
    }
}
