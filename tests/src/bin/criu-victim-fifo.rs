//! criu test victim: named pipes (FIFOs).
//!
//! `criu-victim-fifo OUT READY DIR [unlink]` makes FIFOs DIR/a and DIR/b. DIR/a is opened
//! read-write, read-only non-blocking and write-only, and `fifo-data` is written into it; DIR/b
//! is opened read-write and left empty. With `unlink`, `ghost-data` is written into DIR/b,
//! which is then removed while open. Writes `ready PID` into READY. On SIGUSR1 it checks the
//! paths, access modes, that the three descriptors of DIR/a are one FIFO whose bytes arrive
//! once, and that DIR/b is empty (with `unlink`: that its descriptor reads `DIR/b (deleted)`,
//! no DIR/b exists, DIR holds nothing but `a`, and its bytes arrive once), and writes `ok` or
//! `bad: WHY` into OUT.

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, Ordering};

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

const DATA: &[u8] = b"fifo-data";

fn open(path: &str, flags: i32) -> i32 {
    let c = CString::new(path).unwrap();
    // SAFETY: open with a NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), flags) };
    assert!(fd >= 0, "open {path}");
    fd
}

fn read_nb(fd: i32) -> Result<Vec<u8>, i32> {
    let mut buf = [0u8; 256];
    // SAFETY: recv-style read into a live buffer; the descriptor is ours.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    Ok(buf[..n as usize].to_vec())
}

const GHOST: &[u8] = b"ghost-data";

fn check(dir: &str, rw: i32, rd: i32, wr: i32, b: i32, unlinked: bool) -> Result<(), String> {
    let link = |fd: i32| {
        std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    let a_path = format!("{dir}/a");
    for fd in [rw, rd, wr] {
        if link(fd) != a_path {
            return Err(format!("fd {fd} links to {:?}", link(fd)));
        }
    }
    let b_name = if unlinked {
        format!("{dir}/b (deleted)")
    } else {
        format!("{dir}/b")
    };
    if link(b) != b_name {
        return Err(format!("fd {b} links to {:?}", link(b)));
    }
    if unlinked {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map_err(|e| format!("read_dir: {e}"))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        if names != ["a"] {
            return Err(format!("{dir} holds {names:?}"));
        }
    }
    // SAFETY: fcntl queries on our own descriptors.
    let fl = |fd: i32| unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if fl(rw) & libc::O_ACCMODE != libc::O_RDWR
        || fl(rd) & libc::O_ACCMODE != libc::O_RDONLY
        || fl(rd) & libc::O_NONBLOCK == 0
        || fl(wr) & libc::O_ACCMODE != libc::O_WRONLY
    {
        return Err(format!("flags {:#o} {:#o} {:#o}", fl(rw), fl(rd), fl(wr)));
    }
    let got = read_nb(rd).map_err(|e| format!("read: errno {e}"))?;
    if got != DATA {
        return Err(format!("read {:?}", String::from_utf8_lossy(&got)));
    }
    if read_nb(rd) != Err(libc::EAGAIN) {
        return Err("the fifo's bytes arrived twice".into());
    }
    // SAFETY: writes a static slice into our own FIFO.
    unsafe { libc::write(wr, b"more".as_ptr().cast(), 4) };
    if read_nb(rd) != Ok(b"more".to_vec()) {
        return Err("the write end is not connected to the read end".into());
    }
    // SAFETY: fcntl on our own descriptor.
    unsafe { libc::fcntl(b, libc::F_SETFL, libc::O_NONBLOCK) };
    if unlinked && read_nb(b) != Ok(GHOST.to_vec()) {
        return Err("the removed fifo's bytes did not arrive".into());
    }
    if read_nb(b) != Err(libc::EAGAIN) {
        return Err("the empty fifo holds bytes".into());
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: criu-victim-fifo OUT READY DIR [unlink]");
        std::process::exit(2);
    }
    let (out, ready, dir) = (&args[1], &args[2], &args[3]);
    for name in ["a", "b"] {
        let c = CString::new(format!("{dir}/{name}")).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    }
    let a = format!("{dir}/a");
    let rw = open(&a, libc::O_RDWR);
    let rd = open(&a, libc::O_RDONLY | libc::O_NONBLOCK);
    let wr = open(&a, libc::O_WRONLY);
    let b = open(&format!("{dir}/b"), libc::O_RDWR);
    // SAFETY: writes a static slice into our own FIFO.
    let n = unsafe { libc::write(wr, DATA.as_ptr().cast(), DATA.len()) };
    assert_eq!(n, DATA.len() as isize);
    let unlinked = args.get(4).map(String::as_str) == Some("unlink");
    if unlinked {
        // SAFETY: writes a static slice into our own FIFO.
        let n = unsafe { libc::write(b, GHOST.as_ptr().cast(), GHOST.len()) };
        assert_eq!(n, GHOST.len() as isize);
        std::fs::remove_file(format!("{dir}/b")).unwrap();
    }
    // SAFETY: installs an async-signal-safe handler that only stores an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let tmp = format!("{ready}.tmp");
    std::fs::write(&tmp, format!("ready {}", std::process::id())).unwrap();
    std::fs::rename(&tmp, ready).unwrap();
    loop {
        if GO.swap(false, Ordering::SeqCst) {
            let verdict = match check(dir, rw, rd, wr, b, unlinked) {
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
