//! criu test victim: pipes and descriptors whose state lives in the open file (issue 20,
//! items 11 to 17).
//!
//! `criu-victim-defects-pipes MODE OUT READY`: sets up the state MODE names, writes
//! `ready PID` into READY, and on SIGUSR1 checks it from the inside, writing `ok` into OUT or
//! `bad: WHY`. Then it sleeps until killed. Modes:
//! - `flags`: a pipe whose write end is non-blocking and read end blocking, and a pipe whose read
//!   end was reopened through `/proc/self/fd/N` as a second, non-blocking open file;
//! - `size`: an empty pipe grown to 1 MiB and one shrunk to 4 KiB;
//! - `sigio`: a pipe read end set up for a signal on input (`O_ASYNC`, `F_SETOWN_EX`,
//!   `F_SETSIG`): writing into the pipe must raise that signal.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

static GO: AtomicBool = AtomicBool::new(false);
static SIGIO_COUNT: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

extern "C" fn on_io(_: libc::c_int) {
    SIGIO_COUNT.fetch_add(1, Ordering::SeqCst);
}

type Check = Box<dyn FnOnce() -> Result<(), String>>;

fn pipe(flags: i32) -> [i32; 2] {
    let mut p = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into a live local array.
    assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), flags) }, 0, "pipe2");
    p
}

fn getfl(fd: i32) -> i32 {
    // SAFETY: F_GETFL on a descriptor number, no pointers.
    unsafe { libc::fcntl(fd, libc::F_GETFL) }
}

fn nonblock(fd: i32) -> bool {
    getfl(fd) & libc::O_NONBLOCK != 0
}

fn write1(fd: i32, b: u8) -> isize {
    // SAFETY: writes one byte from a live local.
    unsafe { libc::write(fd, (&raw const b).cast(), 1) }
}

fn read1(fd: i32) -> Option<u8> {
    let mut b = 0u8;
    // SAFETY: reads one byte into a live local.
    let n = unsafe { libc::read(fd, (&raw mut b).cast(), 1) };
    (n == 1).then_some(b)
}

fn flags() -> Check {
    let a = pipe(0);
    // SAFETY: F_SETFL on our own descriptor.
    unsafe { libc::fcntl(a[1], libc::F_SETFL, libc::O_NONBLOCK) };
    let b = pipe(0);
    let path = std::ffi::CString::new(format!("/proc/self/fd/{}", b[0])).unwrap();
    // SAFETY: opens a NUL-terminated path.
    let again = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK) };
    assert!(again >= 0, "reopen the pipe");
    Box::new(move || {
        if nonblock(a[0]) {
            return Err("read end of pipe 1 is non-blocking".into());
        }
        if !nonblock(a[1]) {
            return Err("write end of pipe 1 is blocking".into());
        }
        if nonblock(b[0]) {
            return Err("read end of pipe 2 is non-blocking".into());
        }
        if !nonblock(again) {
            return Err("reopened read end of pipe 2 is blocking".into());
        }
        if nonblock(b[1]) {
            return Err("write end of pipe 2 is non-blocking".into());
        }
        if write1(b[1], 7) != 1 || read1(again) != Some(7) {
            return Err("the reopened end is not on pipe 2".into());
        }
        if read1(again).is_some() {
            return Err("pipe 2 holds more than was written".into());
        }
        if write1(a[1], 9) != 1 || read1(a[0]) != Some(9) {
            return Err("pipe 1 does not carry a byte".into());
        }
        Ok(())
    })
}

fn size() -> Check {
    let big = pipe(0);
    let small = pipe(0);
    // SAFETY: fcntl on our own descriptors.
    unsafe {
        assert!(libc::fcntl(big[1], libc::F_SETPIPE_SZ, 1 << 20) >= 1 << 20);
        assert!(libc::fcntl(small[1], libc::F_SETPIPE_SZ, 4096) == 4096);
    }
    Box::new(move || {
        // SAFETY: fcntl on our own descriptors.
        let (b, s) = unsafe {
            (
                libc::fcntl(big[0], libc::F_GETPIPE_SZ),
                libc::fcntl(small[0], libc::F_GETPIPE_SZ),
            )
        };
        if b != 1 << 20 {
            return Err(format!("empty 1 MiB pipe came back with {b} bytes"));
        }
        if s != 4096 {
            return Err(format!("empty 4 KiB pipe came back with {s} bytes"));
        }
        Ok(())
    })
}

/// `struct f_owner_ex`.
#[repr(C)]
struct OwnerEx {
    ty: i32,
    pid: i32,
}

fn sigio() -> Check {
    let sig = libc::SIGRTMIN() + 3;
    // SAFETY: installs a handler that only updates an atomic.
    unsafe { libc::signal(sig, on_io as *const () as libc::sighandler_t) };
    let p = pipe(libc::O_NONBLOCK);
    let me = std::process::id() as i32;
    // SAFETY: fcntl on our own descriptor with a live f_owner_ex.
    unsafe {
        let ex = OwnerEx { ty: 1, pid: me };
        assert_eq!(
            libc::fcntl(p[0], 15, &ex as *const OwnerEx),
            0,
            "F_SETOWN_EX"
        );
        assert_eq!(libc::fcntl(p[0], 10, sig), 0, "F_SETSIG");
        let fl = libc::fcntl(p[0], libc::F_GETFL);
        assert_eq!(libc::fcntl(p[0], libc::F_SETFL, fl | libc::O_ASYNC), 0);
    }
    Box::new(move || {
        if getfl(p[0]) & libc::O_ASYNC == 0 {
            return Err("O_ASYNC was dropped".into());
        }
        let mut ex = OwnerEx { ty: 0, pid: 0 };
        // SAFETY: F_GETOWN_EX writes a live f_owner_ex; F_GETSIG takes no pointer.
        let (r, s) = unsafe {
            (
                libc::fcntl(p[0], 16, &mut ex as *mut OwnerEx),
                libc::fcntl(p[0], 11),
            )
        };
        if r != 0 || ex.pid != me || ex.ty != 1 {
            return Err(format!("owner is {} (type {}), not {me}", ex.pid, ex.ty));
        }
        if s != sig {
            return Err(format!("F_GETSIG is {s}, not {sig}"));
        }
        let before = SIGIO_COUNT.load(Ordering::SeqCst);
        write1(p[1], 1);
        for _ in 0..200 {
            if SIGIO_COUNT.load(Ordering::SeqCst) > before {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Err("no signal on input".into())
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(mode), Some(out), Some(ready)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("usage: criu-victim-defects-pipes MODE OUT READY");
        std::process::exit(2);
    };
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let check = match mode.as_str() {
        "flags" => flags(),
        "size" => size(),
        "sigio" => sigio(),
        other => {
            eprintln!("unknown mode {other}");
            std::process::exit(2);
        }
    };
    std::fs::write(ready, format!("ready {}", std::process::id())).expect("ready");
    while !GO.load(Ordering::SeqCst) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let verdict = match check() {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("bad: {e}"),
    };
    std::fs::write(out, verdict).expect("out");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}
