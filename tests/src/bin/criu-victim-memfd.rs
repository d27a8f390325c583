//! criu test victim: memfd descriptors.
//!
//! `criu-victim-memfd OUT READY [map]` makes memfd `kinds-memfd` (sealing allowed) of
//! 6 pages + 100 bytes: pages 0..3 hold a pattern, page 3 is a hole, page 4 zeros written, page
//! 5 and the tail a second pattern; seals it with `F_SEAL_SHRINK | F_SEAL_GROW`; opens a second
//! description of it read-only through `/proc/self/fd` at position 1234, and dups the first at
//! position 77. A second memfd `kinds-plain` (`MFD_CLOEXEC`, no sealing: `F_SEAL_SEAL`) holds
//! `plain`. With `map`, the first memfd is also mapped shared. Writes
//! `ready PID` into READY. On SIGUSR1 it checks all of that (names, sizes, content, seals,
//! flags, positions, shared inode and description) and writes `ok` or `bad: WHY` into OUT.

use std::sync::atomic::{AtomicBool, Ordering};

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

const PAGE: usize = 4096;
const SIZE: usize = 6 * PAGE + 100;

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 13 + salt as usize) % 251 + 1) as u8)
        .collect()
}

/// What the first memfd holds.
fn expected() -> Vec<u8> {
    let mut v = vec![0u8; SIZE];
    v[..3 * PAGE].copy_from_slice(&pattern(3 * PAGE, 1));
    v[5 * PAGE..].copy_from_slice(&pattern(PAGE + 100, 9));
    v
}

fn pwrite(fd: i32, data: &[u8], off: usize) {
    // SAFETY: writes from a live slice into our own memfd.
    let n = unsafe { libc::pwrite(fd, data.as_ptr().cast(), data.len(), off as libc::off_t) };
    assert_eq!(n, data.len() as isize, "pwrite");
}

fn pread_all(fd: i32, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    // SAFETY: reads into a live buffer of `len` bytes.
    let n = unsafe { libc::pread(fd, v.as_mut_ptr().cast(), len, 0) };
    v.truncate(n.max(0) as usize);
    v
}

fn link(fd: i32) -> String {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

fn ino(fd: i32) -> u64 {
    // SAFETY: fstat fills a zeroed local struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat fills the live local `st`.
    unsafe { libc::fstat(fd, &mut st) };
    st.st_ino
}

fn pos(fd: i32) -> i64 {
    // SAFETY: lseek query on our own descriptor.
    unsafe { libc::lseek(fd, 0, libc::SEEK_CUR) }
}

fn check(a: i32, ro: i32, dup: i32, plain: i32) -> Result<(), String> {
    for (fd, want) in [
        (a, "/memfd:kinds-memfd (deleted)"),
        (ro, "/memfd:kinds-memfd (deleted)"),
        (plain, "/memfd:kinds-plain (deleted)"),
    ] {
        if link(fd) != want {
            return Err(format!("fd {fd} links to {:?}", link(fd)));
        }
    }
    if ino(a) != ino(ro) || ino(a) != ino(dup) {
        return Err("the descriptors are on different inodes".into());
    }
    let got = pread_all(ro, SIZE + 10);
    if got.len() != SIZE {
        return Err(format!("memfd holds {} bytes", got.len()));
    }
    if got != expected() {
        return Err("memfd content differs".into());
    }
    // SAFETY: fcntl queries on our own descriptors.
    let (seals, pseals, rofl, afl, cloexec) = unsafe {
        (
            libc::fcntl(a, libc::F_GET_SEALS),
            libc::fcntl(plain, libc::F_GET_SEALS),
            libc::fcntl(ro, libc::F_GETFL),
            libc::fcntl(a, libc::F_GETFL),
            libc::fcntl(plain, libc::F_GETFD),
        )
    };
    if seals != libc::F_SEAL_SHRINK | libc::F_SEAL_GROW {
        return Err(format!("seals {seals:#x}"));
    }
    if pseals != libc::F_SEAL_SEAL {
        return Err(format!("plain memfd seals {pseals:#x}"));
    }
    if rofl & libc::O_ACCMODE != libc::O_RDONLY || afl & libc::O_ACCMODE != libc::O_RDWR {
        return Err(format!("access modes {rofl:#o} {afl:#o}"));
    }
    if cloexec & libc::FD_CLOEXEC == 0 {
        return Err("plain memfd lost close-on-exec".into());
    }
    if pos(ro) != 1234 || pos(a) != 77 || pos(dup) != 77 {
        return Err(format!("positions {} {} {}", pos(ro), pos(a), pos(dup)));
    }
    // One description behind a and dup: moving one moves the other.
    // SAFETY: lseek on our own descriptor.
    unsafe { libc::lseek(a, 500, libc::SEEK_SET) };
    if pos(dup) != 500 {
        return Err("the dup has its own position".into());
    }
    // The seals still work, and a write through one fd is seen through the other.
    // SAFETY: ftruncate on our own memfd (must fail: sealed).
    if unsafe { libc::ftruncate(a, 0) } == 0 {
        return Err("F_SEAL_SHRINK does not hold".into());
    }
    pwrite(a, b"XY", 10);
    if pread_all(ro, 12)[10..] != *b"XY" {
        return Err("a write is not seen through the second fd".into());
    }
    if pread_all(plain, 100) != b"plain" {
        return Err("plain memfd content differs".into());
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: criu-victim-memfd OUT READY [map]");
        std::process::exit(2);
    }
    let (out, ready) = (&args[1], &args[2]);
    // SAFETY: memfd_create with NUL-terminated names; the descriptors are ours.
    let (a, plain) = unsafe {
        (
            libc::memfd_create(c"kinds-memfd".as_ptr(), libc::MFD_ALLOW_SEALING),
            libc::memfd_create(c"kinds-plain".as_ptr(), libc::MFD_CLOEXEC),
        )
    };
    assert!(a >= 0 && plain >= 0, "memfd_create");
    // SAFETY: ftruncate on our own memfd.
    assert_eq!(unsafe { libc::ftruncate(a, SIZE as libc::off_t) }, 0);
    let want = expected();
    pwrite(a, &want[..3 * PAGE], 0);
    pwrite(a, &vec![0u8; PAGE], 4 * PAGE);
    pwrite(a, &want[5 * PAGE..], 5 * PAGE);
    pwrite(plain, b"plain", 0);
    // SAFETY: fcntl/open/dup/lseek on our own descriptors and a NUL-terminated path.
    let (ro, dup) = unsafe {
        assert_eq!(
            libc::fcntl(
                a,
                libc::F_ADD_SEALS,
                libc::F_SEAL_SHRINK | libc::F_SEAL_GROW
            ),
            0
        );
        let path = std::ffi::CString::new(format!("/proc/self/fd/{a}")).unwrap();
        let ro = libc::open(path.as_ptr(), libc::O_RDONLY);
        libc::lseek(ro, 1234, libc::SEEK_SET);
        libc::lseek(a, 77, libc::SEEK_SET);
        (ro, libc::dup(a))
    };
    assert!(ro >= 0 && dup >= 0, "open/dup");
    if args.get(3).map(String::as_str) == Some("map") {
        // SAFETY: a new shared mapping of our own memfd, never unmapped.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE,
                libc::PROT_READ,
                libc::MAP_SHARED,
                a,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "mmap");
    }
    // SAFETY: installs an async-signal-safe handler that only stores an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let tmp = format!("{ready}.tmp");
    std::fs::write(&tmp, format!("ready {}", std::process::id())).unwrap();
    std::fs::rename(&tmp, ready).unwrap();
    loop {
        if GO.swap(false, Ordering::SeqCst) {
            let verdict = match check(a, ro, dup, plain) {
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
