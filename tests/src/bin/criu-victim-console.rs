//! criu test victim: console terminals held open.
//!
//! `criu-victim-console OUT READY PATH...` opens each PATH (`/dev/console`, `/dev/ttyN`,
//! `/dev/ttySN`) read-write without making it its terminal. Writes `ready PID` into READY. On
//! SIGUSR1 it checks that each descriptor still names its PATH, is the same device and is a
//! terminal, and writes `ok` or `bad: WHY` into OUT.

use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

fn check(open: &[(String, i32, u64)]) -> Result<(), String> {
    for (path, fd, rdev) in open {
        let link = std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if link != *path {
            return Err(format!("fd {fd} links to {link:?}, not {path}"));
        }
        let now = std::fs::metadata(format!("/proc/self/fd/{fd}"))
            .map(|m| m.rdev())
            .unwrap_or(0);
        // SAFETY: isatty on our own descriptor.
        if now != *rdev || unsafe { libc::isatty(*fd) } != 1 {
            return Err(format!(
                "fd {fd} ({path}) is device {now:#x}, or no terminal"
            ));
        }
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: criu-victim-console OUT READY PATH...");
        std::process::exit(2);
    }
    let (out, ready) = (&args[1], &args[2]);
    let mut open = Vec::new();
    for path in &args[3..] {
        let c = std::ffi::CString::new(path.as_str()).unwrap();
        // SAFETY: open with a NUL-terminated path.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_NOCTTY) };
        assert!(fd >= 0, "open {path}: {}", std::io::Error::last_os_error());
        let rdev = std::fs::metadata(path).unwrap().rdev();
        open.push((path.clone(), fd, rdev));
    }
    // SAFETY: installs an async-signal-safe handler that only stores an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let tmp = format!("{ready}.tmp");
    std::fs::write(&tmp, format!("ready {}", std::process::id())).unwrap();
    std::fs::rename(&tmp, ready).unwrap();
    loop {
        if GO.swap(false, Ordering::SeqCst) {
            let verdict = match check(&open) {
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
