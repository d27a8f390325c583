//! criu test victim: files mapped shared by two processes.
//!
//! `criu-victim-shm-shared OUT READY DIR` makes DIR/kept and DIR/gone (2 pages each, a
//! pattern), maps each shared read-write, removes DIR/gone (a deleted file still mapped), and
//! forks a child that keeps both mappings and, every 5 ms, copies the byte at offset 100 of
//! each to offset 200. Writes `ready PID CHILD` into READY. On SIGUSR1 it checks that each
//! mapping kept its pattern, writes a new byte at offset 100 of each and waits (2 s at most)
//! for the child's copy at offset 200 (the mapping is one object in both processes), checks
//! that a `pwrite` into DIR/kept shows in its mapping (the mapping is the file's), and writes
//! `ok` or `bad: WHY` into OUT. The child exits once its parent is gone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

const SIZE: usize = 8192;

fn pattern(salt: usize) -> Vec<u8> {
    (0..SIZE)
        .map(|i| ((i * 5 + salt) % 251) as u8 + 1)
        .collect()
}

fn map_file(path: &str, salt: usize) -> *mut u8 {
    std::fs::write(path, pattern(salt)).unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: a new shared mapping of a file we just wrote; the kernel picks the address.
    let m = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(m, libc::MAP_FAILED, "mmap {path}");
    m.cast()
}

/// The bytes of a mapping made by [`map_file`].
fn bytes(m: usize) -> &'static mut [u8] {
    // SAFETY: `m` maps SIZE shared bytes for the life of the process; the other process
    // writes only offset 200, read and written here as single bytes.
    unsafe { std::slice::from_raw_parts_mut(m as *mut u8, SIZE) }
}

fn check(dir: &str, maps: [usize; 2], round: &mut u8) -> Result<(), String> {
    for (k, &m) in maps.iter().enumerate() {
        let mut want = pattern(k);
        let got = bytes(m);
        want[100] = got[100];
        want[200] = got[200];
        want[300] = got[300];
        if got != want.as_slice() {
            return Err(format!("mapping {k} lost its content"));
        }
    }
    *round = round.wrapping_add(1).max(1);
    for &m in &maps {
        bytes(m)[100] = *round;
    }
    let until = Instant::now() + Duration::from_secs(2);
    for (k, &m) in maps.iter().enumerate() {
        // SAFETY: a volatile read of one byte of the live shared mapping.
        while unsafe { std::ptr::read_volatile((m as *const u8).add(200)) } != *round {
            if Instant::now() > until {
                return Err(format!("the child never copied into mapping {k}"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("{dir}/kept"))
        .map_err(|e| format!("open kept: {e}"))?;
    f.write_all_at(&[*round], 300)
        .map_err(|e| format!("pwrite: {e}"))?;
    // SAFETY: a volatile read of one byte of the live shared mapping.
    if unsafe { std::ptr::read_volatile((maps[0] as *const u8).add(300)) } != *round {
        return Err("a write into DIR/kept does not show in its mapping".into());
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: criu-victim-shm-shared OUT READY DIR");
        std::process::exit(2);
    }
    let (out, ready, dir) = (&args[1], &args[2], &args[3]);
    let kept = map_file(&format!("{dir}/kept"), 0) as usize;
    let gone = map_file(&format!("{dir}/gone"), 1) as usize;
    std::fs::remove_file(format!("{dir}/gone")).unwrap();
    let me = std::process::id() as i32;
    // SAFETY: the child only copies bytes between its mappings and sleeps.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork");
    if child == 0 {
        // SAFETY: getppid takes no arguments.
        while unsafe { libc::getppid() } == me {
            for m in [kept, gone] {
                // SAFETY: volatile one-byte accesses of the live shared mapping.
                unsafe {
                    let b = std::ptr::read_volatile((m as *const u8).add(100));
                    std::ptr::write_volatile((m as *mut u8).add(200), b);
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        std::process::exit(0);
    }
    let mut round = 0u8;
    // SAFETY: installs an async-signal-safe handler that only stores an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let tmp = format!("{ready}.tmp");
    std::fs::write(&tmp, format!("ready {me} {child}")).unwrap();
    std::fs::rename(&tmp, ready).unwrap();
    loop {
        if GO.swap(false, Ordering::SeqCst) {
            let verdict = match check(dir, [kept, gone], &mut round) {
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
