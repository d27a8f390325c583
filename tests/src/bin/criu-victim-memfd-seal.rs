//! criu test victim: a memfd sealed with `F_SEAL_FUTURE_WRITE` while mapped shared and
//! writable.
//!
//! `criu-victim-memfd-seal OUT READY` makes memfd `sealed` (2 pages, a pattern), maps it shared
//! read-write, then seals it with `F_SEAL_FUTURE_WRITE | F_SEAL_SHRINK | F_SEAL_GROW |
//! F_SEAL_SEAL`, keeping the descriptor. Writes `ready PID` into READY. On SIGUSR1 it checks
//! the seals, the mapping's content, that a write through the old mapping reaches the memfd,
//! that `pwrite`, a new writable shared mapping and another seal are refused (`EPERM`) while a
//! read-only mapping is not, and writes `ok` or `bad: WHY` into OUT.

use std::sync::atomic::{AtomicBool, Ordering};

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

const SIZE: usize = 8192;
const SEALS: i32 =
    libc::F_SEAL_FUTURE_WRITE | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;

fn pattern() -> Vec<u8> {
    (0..SIZE).map(|i| (i % 253) as u8 + 1).collect()
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn map(fd: i32, prot: i32) -> *mut u8 {
    // SAFETY: a new shared mapping of our own memfd; the kernel picks the address.
    unsafe { libc::mmap(std::ptr::null_mut(), SIZE, prot, libc::MAP_SHARED, fd, 0) }.cast()
}

fn check(fd: i32, m: *mut u8, round: &mut u8) -> Result<(), String> {
    // SAFETY: fcntl query on our own descriptor.
    let seals = unsafe { libc::fcntl(fd, libc::F_GET_SEALS) };
    if seals != SEALS {
        return Err(format!("seals {seals:#x}, not {SEALS:#x}"));
    }
    let mut want = pattern();
    want[100] = *round;
    // SAFETY: `m` maps SIZE bytes of the memfd, shared and writable, for the victim's life.
    let now = unsafe { std::slice::from_raw_parts_mut(m, SIZE) };
    if now != want.as_slice() {
        return Err("the mapping lost its content".into());
    }
    *round = round.wrapping_add(1);
    now[100] = *round;
    let mut b = [0u8; 1];
    // SAFETY: pread of one byte into a live local buffer.
    let n = unsafe { libc::pread(fd, b.as_mut_ptr().cast(), 1, 100) };
    if n != 1 || b[0] != *round {
        return Err("a write through the mapping did not reach the memfd".into());
    }
    // SAFETY: pwrite of one byte from a live local buffer.
    if unsafe { libc::pwrite(fd, b.as_ptr().cast(), 1, 0) } != -1 || errno() != libc::EPERM {
        return Err("pwrite into a future-write sealed memfd worked".into());
    }
    let w = map(fd, libc::PROT_READ | libc::PROT_WRITE);
    if w != libc::MAP_FAILED.cast() || errno() != libc::EPERM {
        return Err("a new writable shared mapping worked".into());
    }
    let r = map(fd, libc::PROT_READ);
    if r == libc::MAP_FAILED.cast() {
        return Err(format!("a read-only mapping failed: errno {}", errno()));
    }
    // SAFETY: unmaps the mapping just made.
    unsafe { libc::munmap(r.cast(), SIZE) };
    // SAFETY: fcntl on our own descriptor.
    if unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, libc::F_SEAL_WRITE) } != -1 {
        return Err("F_SEAL_SEAL let another seal in".into());
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: criu-victim-memfd-seal OUT READY");
        std::process::exit(2);
    }
    let (out, ready) = (&args[1], &args[2]);
    // SAFETY: memfd_create with a NUL-terminated name.
    let fd = unsafe { libc::memfd_create(c"sealed".as_ptr(), libc::MFD_ALLOW_SEALING) };
    assert!(fd >= 0, "memfd_create");
    // SAFETY: sizing our own memfd.
    assert_eq!(unsafe { libc::ftruncate(fd, SIZE as i64) }, 0);
    let m = map(fd, libc::PROT_READ | libc::PROT_WRITE);
    assert_ne!(m, libc::MAP_FAILED.cast(), "mmap");
    let mut p = pattern();
    p[100] = 0;
    // SAFETY: `m` maps SIZE writable bytes.
    unsafe { std::ptr::copy_nonoverlapping(p.as_ptr(), m, SIZE) };
    // SAFETY: fcntl on our own descriptor.
    let sealed = unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, SEALS) };
    assert_eq!(sealed, 0, "seal");
    let mut round = 0u8;
    // SAFETY: installs an async-signal-safe handler that only stores an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let tmp = format!("{ready}.tmp");
    std::fs::write(&tmp, format!("ready {}", std::process::id())).unwrap();
    std::fs::rename(&tmp, ready).unwrap();
    loop {
        if GO.swap(false, Ordering::SeqCst) {
            let verdict = match check(fd, m, &mut round) {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("bad: {e}"),
            };
            let tmp = format!("{out}.tmp");
            std::fs::write(&tmp, verdict).unwrap();
            std::fs::rename(&tmp, out).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
