//! criu test victim: memfd mappings.
//!
//! `criu-victim-memfd-map OUT READY` makes three memfds of 4 pages each, filled with a pattern:
//! - `map-fd` keeps its descriptor and is mapped shared (read-write) and private (page 1 of the
//!   private mapping written: `private`);
//! - `map-shared` is mapped shared twice and its descriptor closed; a forked child keeps
//!   the mappings too and copies the 8 bytes at offset 100 to offset 200 every 10 ms;
//! - `map-private` is mapped private, page 2 written (`changed`), its descriptor closed.
//!
//! Writes `ready PID CHILD` into READY. On SIGUSR1 it checks (content of every mapping, the
//! descriptor and the shared mapping on one inode, the two shared mappings and the child's on
//! one object, the private pages kept apart from the memfd) and writes `ok` or `bad: WHY` into
//! OUT. The child exits when its parent goes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

const PAGE: usize = 4096;
const SIZE: usize = 4 * PAGE;

fn pattern(salt: u8) -> Vec<u8> {
    (0..SIZE)
        .map(|i| ((i * 7 + salt as usize) % 251 + 1) as u8)
        .collect()
}

fn memfd(name: &std::ffi::CStr, salt: u8) -> i32 {
    // SAFETY: memfd_create with a NUL-terminated name; ftruncate and pwrite on it from a live
    // buffer.
    unsafe {
        let fd = libc::memfd_create(name.as_ptr(), 0);
        assert!(fd >= 0, "memfd_create");
        assert_eq!(libc::ftruncate(fd, SIZE as libc::off_t), 0);
        let p = pattern(salt);
        assert_eq!(
            libc::pwrite(fd, p.as_ptr().cast(), SIZE, 0),
            SIZE as isize,
            "pwrite"
        );
        fd
    }
}

fn map(fd: i32, prot: i32, flags: i32) -> *mut u8 {
    // SAFETY: a new mapping of our own memfd, never unmapped.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), SIZE, prot, flags, fd, 0) };
    assert_ne!(p, libc::MAP_FAILED, "mmap");
    p.cast()
}

fn slice(p: *mut u8) -> &'static mut [u8] {
    // SAFETY: every mapping here is SIZE bytes, readable and writable, never unmapped.
    unsafe { std::slice::from_raw_parts_mut(p, SIZE) }
}

fn pread(fd: i32, off: usize, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    // SAFETY: reads into a live buffer of `len` bytes.
    let n = unsafe { libc::pread(fd, v.as_mut_ptr().cast(), len, off as libc::off_t) };
    v.truncate(n.max(0) as usize);
    v
}

fn memfd_name(p: *mut u8) -> String {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let start = format!("{:x}-", p as usize);
    maps.lines()
        .find(|l| l.starts_with(&start))
        .and_then(|l| l.split_whitespace().nth(5))
        .unwrap_or("")
        .to_string()
}

struct Maps {
    fd: i32,
    fd_shared: *mut u8,
    fd_private: *mut u8,
    shared1: *mut u8,
    shared2: *mut u8,
    private: *mut u8,
}

fn check(m: &Maps, round: u8) -> Result<(), String> {
    for (p, want) in [
        (m.fd_shared, "/memfd:map-fd"),
        (m.fd_private, "/memfd:map-fd"),
        (m.shared1, "/memfd:map-shared"),
        (m.shared2, "/memfd:map-shared"),
        (m.private, "/memfd:map-private"),
    ] {
        if memfd_name(p) != want {
            return Err(format!("area {p:?} maps {:?}", memfd_name(p)));
        }
    }
    let (a, fdp, fdv) = (pattern(1), slice(m.fd_shared), slice(m.fd_private));
    // Only page 0 of each may have changed in earlier rounds (offsets 0..16).
    if fdp[16..] != a[16..] {
        return Err("the shared mapping of map-fd lost its content".into());
    }
    // Page 0 of the private mapping may still show the memfd (not copied yet): past 16 only.
    if fdv[16..PAGE] != a[16..PAGE] || fdv[2 * PAGE..] != a[2 * PAGE..] {
        return Err("the private mapping of map-fd lost the memfd's content".into());
    }
    if &fdv[PAGE..PAGE + 7] != b"private" || fdv[PAGE + 7..2 * PAGE] != a[PAGE + 7..2 * PAGE] {
        return Err("the private page of map-fd is not as written".into());
    }
    if pread(m.fd, PAGE, 7) != a[PAGE..PAGE + 7] {
        return Err("the private write reached the memfd".into());
    }
    // The descriptor and the shared mapping are one inode, both ways.
    fdp[0] = round;
    if pread(m.fd, 0, 1) != [round] {
        return Err("a write to the shared mapping is not seen through the fd".into());
    }
    // SAFETY: pwrite from a live two-byte buffer into our own memfd.
    unsafe { libc::pwrite(m.fd, [round, round].as_ptr().cast(), 2, 8) };
    if fdp[8..10] != [round, round] {
        return Err("a write through the fd is not seen in the shared mapping".into());
    }
    let (b, s1, s2) = (pattern(2), slice(m.shared1), slice(m.shared2));
    if s1[PAGE..] != b[PAGE..] {
        return Err("map-shared lost its content".into());
    }
    s1[50] = round;
    if s2[50] != round {
        return Err("the two mappings of map-shared are not one object".into());
    }
    // The child copies offset 100 to 200: it maps the same object.
    let token = [round, 0xa5, 0x5a, round, 1, 2, 3, round];
    s1[100..108].copy_from_slice(&token);
    let end = Instant::now() + Duration::from_secs(5);
    while s2[200..208] != token {
        if Instant::now() > end {
            return Err("the child does not share map-shared".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let (c, p) = (pattern(3), slice(m.private));
    if p[..2 * PAGE] != c[..2 * PAGE] || p[3 * PAGE..] != c[3 * PAGE..] {
        return Err("map-private lost its content".into());
    }
    if &p[2 * PAGE..2 * PAGE + 7] != b"changed" {
        return Err("the changed page of map-private is not as written".into());
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: criu-victim-memfd-map OUT READY");
        std::process::exit(2);
    }
    let (out, ready) = (&args[1], &args[2]);
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let fd = memfd(c"map-fd", 1);
    let fd_shared = map(fd, rw, libc::MAP_SHARED);
    let fd_private = map(fd, rw, libc::MAP_PRIVATE);
    slice(fd_private)[PAGE..PAGE + 7].copy_from_slice(b"private");
    let b = memfd(c"map-shared", 2);
    let (shared1, shared2) = (map(b, rw, libc::MAP_SHARED), map(b, rw, libc::MAP_SHARED));
    let c = memfd(c"map-private", 3);
    let private = map(c, rw, libc::MAP_PRIVATE);
    slice(private)[2 * PAGE..2 * PAGE + 7].copy_from_slice(b"changed");
    // SAFETY: closing our own descriptors; the mappings keep the memfds.
    unsafe {
        libc::close(b);
        libc::close(c);
    }
    let me = std::process::id() as i32;
    // SAFETY: the child only reads and writes the shared mapping and sleeps.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork");
    if child == 0 {
        let (s1, s2) = (slice(shared1), slice(shared2));
        // SAFETY: getppid takes no arguments.
        while unsafe { libc::getppid() } == me {
            let v: [u8; 8] = s1[100..108].try_into().unwrap_or([0; 8]);
            s2[200..208].copy_from_slice(&v);
            std::thread::sleep(Duration::from_millis(10));
        }
        std::process::exit(0);
    }
    let maps = Maps {
        fd,
        fd_shared,
        fd_private,
        shared1,
        shared2,
        private,
    };
    // SAFETY: installs an async-signal-safe handler that only stores an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let tmp = format!("{ready}.tmp");
    std::fs::write(&tmp, format!("ready {me} {child}")).unwrap();
    std::fs::rename(&tmp, ready).unwrap();
    let mut round = 0u8;
    loop {
        if GO.swap(false, Ordering::SeqCst) {
            round = round.wrapping_add(1);
            let verdict = match check(&maps, round) {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("bad: {e}"),
            };
            let tmp = format!("{out}.tmp");
            std::fs::write(&tmp, verdict).unwrap();
            std::fs::rename(&tmp, out).unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
