//! criu pre-dump victim: a process that keeps changing its memory between dumps and checks it.
//!
//! `criu-victim-dirtier MIB READY`: maps MIB MiB of anonymous private memory (an area of its
//! own between two inaccessible pages) and writes every page; writes `ready PID ADDR` into
//! READY. On `SIGUSR2` it makes round K (K = 1, 2, ...) of changes: rewrites 10 % of the pages
//! (blocks of 16 pages whose block number is K mod 10), drops page `K * 37` (it must then read
//! as zeros until it is written again), maps a new 64 KiB area and fills it, then writes
//! `round K` into READY.rK. On `SIGUSR1` it checks every byte of everything and writes
//! `check ok` (or `check bad WHAT`) into READY.2.

use compel_criu_tests::victim::publish;

use std::sync::atomic::{AtomicBool, Ordering};

static CHECK: AtomicBool = AtomicBool::new(false);
static DIRTY: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    CHECK.store(true, Ordering::SeqCst);
}

extern "C" fn on_usr2(_: libc::c_int) {
    DIRTY.store(true, Ordering::SeqCst);
}

const PAGE: usize = 4096;

/// The byte at offset `i` of `page` written in round `version` (0 never for a written page).
fn byte(page: usize, version: u32, i: usize) -> u8 {
    ((page * 31 + i + version as usize * 97) % 255 + 1) as u8
}

fn map(len: usize) -> &'static mut [u8] {
    // SAFETY: a fresh anonymous mapping with an inaccessible page on each side (so it stays an
    // area of its own); nothing else refers to it and it is never unmapped.
    unsafe {
        let q = libc::mmap(
            std::ptr::null_mut(),
            len + 2 * PAGE,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(q, libc::MAP_FAILED, "mmap");
        let p = q.cast::<u8>().add(PAGE);
        assert_eq!(
            libc::mprotect(p.cast(), len, libc::PROT_READ | libc::PROT_WRITE),
            0,
            "mprotect"
        );
        std::slice::from_raw_parts_mut(p, len)
    }
}

fn fill(mem: &mut [u8], page: usize, version: u32) {
    for (i, b) in mem[page * PAGE..(page + 1) * PAGE].iter_mut().enumerate() {
        *b = byte(page, version, i);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(mib), Some(ready)) = (
        args.get(1).and_then(|s| s.parse::<usize>().ok()),
        args.get(2),
    ) else {
        eprintln!("usage: criu-victim-dirtier MIB READY");
        std::process::exit(2);
    };
    let pages = (mib << 20) / PAGE;
    let mem = map(pages * PAGE);
    // Each page's round, or None for a dropped page.
    let mut version: Vec<Option<u32>> = vec![Some(0); pages];
    for page in 0..pages {
        fill(mem, page, 0);
    }
    let mut extra: Vec<(&'static mut [u8], u8)> = Vec::new();
    // SAFETY: installs handlers that only store to atomics.
    unsafe {
        libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t);
        libc::signal(libc::SIGUSR2, on_usr2 as *const () as libc::sighandler_t);
    }
    publish(
        ready,
        &format!("ready {} {:x}", std::process::id(), mem.as_ptr() as usize),
    );
    let mut round = 0u32;
    loop {
        // Polling (rather than pause) cannot miss a signal that lands just before the wait.
        std::thread::sleep(std::time::Duration::from_millis(2));
        if DIRTY.swap(false, Ordering::SeqCst) {
            round += 1;
            for page in (0..pages).filter(|p| (p / 16) % 10 == round as usize % 10) {
                fill(mem, page, round);
                version[page] = Some(round);
            }
            let drop = (round as usize * 37) % pages;
            // SAFETY: drops one page of our own mapping; it reads as zeros afterwards.
            let r = unsafe {
                libc::madvise(
                    mem.as_mut_ptr().add(drop * PAGE).cast(),
                    PAGE,
                    libc::MADV_DONTNEED,
                )
            };
            assert_eq!(r, 0, "madvise");
            version[drop] = None;
            let area = map(64 << 10);
            area.fill(round as u8);
            extra.push((area, round as u8));
            publish(&format!("{ready}.r{round}"), &format!("round {round}"));
        }
        if CHECK.swap(false, Ordering::SeqCst) {
            let mut bad = None;
            for (page, v) in version.iter().enumerate() {
                let chunk = &mem[page * PAGE..(page + 1) * PAGE];
                let ok = match v {
                    Some(v) => chunk
                        .iter()
                        .enumerate()
                        .all(|(i, b)| *b == byte(page, *v, i)),
                    None => chunk.iter().all(|b| *b == 0),
                };
                if !ok {
                    bad = Some(format!("page {page} (round {v:?})"));
                    break;
                }
            }
            if bad.is_none()
                && let Some((k, _)) = extra
                    .iter()
                    .enumerate()
                    .find(|(_, (a, v))| a.iter().any(|b| b != v))
            {
                bad = Some(format!("extra area {k}"));
            }
            let verdict = match bad {
                None => "check ok".to_string(),
                Some(what) => format!("check bad {what}"),
            };
            publish(&format!("{ready}.2"), &verdict);
        }
    }
}
