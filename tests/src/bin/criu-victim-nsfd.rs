//! criu test victim: namespace descriptors.
//!
//! `criu-victim-nsfd OUT READY [other]` opens `/proc/self/ns/net` and `/proc/self/ns/uts`;
//! with `other`, also a descriptor of a new network namespace it made and left again (which
//! the dump refuses). Writes `ready PID` into READY. On SIGUSR1 it checks that each descriptor
//! is the namespace the process is in (same inode, and `setns` into it works) and writes `ok`
//! or `bad: WHY` into OUT.

use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

fn open(path: &str) -> i32 {
    let c = CString::new(path).unwrap();
    // SAFETY: open with a NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY) };
    assert!(fd >= 0, "open {path}");
    fd
}

fn check(net: i32, uts: i32) -> Result<(), String> {
    for (fd, kind, flag) in [
        (net, "net", libc::CLONE_NEWNET),
        (uts, "uts", libc::CLONE_NEWUTS),
    ] {
        let own = std::fs::metadata(format!("/proc/self/ns/{kind}"))
            .map_err(|e| e.to_string())?
            .ino();
        let got = std::fs::metadata(format!("/proc/self/fd/{fd}"))
            .map_err(|e| e.to_string())?
            .ino();
        if own != got {
            return Err(format!("{kind} fd {fd} is namespace {got}, not {own}"));
        }
        // SAFETY: setns into the namespace we are in already.
        if unsafe { libc::setns(fd, flag) } != 0 {
            return Err(format!("setns {kind}: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: criu-victim-nsfd OUT READY [other]");
        std::process::exit(2);
    }
    let (out, ready) = (&args[1], &args[2]);
    let net = open("/proc/self/ns/net");
    let uts = open("/proc/self/ns/uts");
    if args.get(3).map(String::as_str) == Some("other") {
        // SAFETY: unshare/setns with flags and our own namespace descriptor.
        unsafe {
            assert_eq!(libc::unshare(libc::CLONE_NEWNET), 0, "unshare");
            open("/proc/self/ns/net");
            assert_eq!(libc::setns(net, libc::CLONE_NEWNET), 0, "setns back");
        }
    }
    // SAFETY: installs an async-signal-safe handler that only stores an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let t = format!("{ready}.tmp");
    std::fs::write(&t, format!("ready {}", std::process::id())).unwrap();
    std::fs::rename(&t, ready).unwrap();
    loop {
        if GO.swap(false, Ordering::SeqCst) {
            let verdict = match check(net, uts) {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("bad: {e}"),
            };
            let t = format!("{out}.tmp");
            std::fs::write(&t, verdict).unwrap();
            std::fs::rename(&t, out).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
