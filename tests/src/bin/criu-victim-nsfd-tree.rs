//! criu test victim: descriptors of the tree's own namespace and of criu's.
//!
//! `criu-victim-nsfd-tree OUT READY` opens `/proc/self/ns/uts` (criu's UTS namespace), then
//! moves into a new UTS namespace named `nsfd-tree` and opens `/proc/self/ns/uts` again (the
//! tree's). Writes `ready PID` into READY. On SIGUSR1 it checks that the second descriptor is
//! the namespace it lives in (same inode, `setns` into it keeps the name `nsfd-tree`) and the
//! first is still the namespace it came from (its inode then) and not the tree's, and writes
//! `ok` or `bad: WHY` into OUT.

use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

fn open_uts() -> i32 {
    // SAFETY: open with a NUL-terminated path.
    let fd = unsafe { libc::open(c"/proc/self/ns/uts".as_ptr(), libc::O_RDONLY) };
    assert!(fd >= 0, "open /proc/self/ns/uts");
    fd
}

fn ino(path: &str) -> u64 {
    std::fs::metadata(path).map(|m| m.ino()).unwrap_or(0)
}

fn check(host: i32, host_ino: u64, tree: i32) -> Result<(), String> {
    let own = ino("/proc/self/ns/uts");
    let (h, t) = (
        ino(&format!("/proc/self/fd/{host}")),
        ino(&format!("/proc/self/fd/{tree}")),
    );
    if t != own {
        return Err(format!("the tree's fd is namespace {t}, not {own}"));
    }
    if h != host_ino || h == own {
        return Err(format!(
            "criu's fd is namespace {h}, not {host_ino} (own {own})"
        ));
    }
    // SAFETY: setns into the namespace we are in already.
    if unsafe { libc::setns(tree, libc::CLONE_NEWUTS) } != 0 {
        return Err(format!("setns: {}", std::io::Error::last_os_error()));
    }
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    if name.trim() != "nsfd-tree" {
        return Err(format!("hostname {name:?}"));
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: criu-victim-nsfd-tree OUT READY");
        std::process::exit(2);
    }
    let (out, ready) = (&args[1], &args[2]);
    let host = open_uts();
    let host_ino = ino(&format!("/proc/self/fd/{host}"));
    // SAFETY: unshare with a flag; sethostname reads the live local name.
    unsafe {
        assert_eq!(libc::unshare(libc::CLONE_NEWUTS), 0, "unshare");
        let name = b"nsfd-tree";
        assert_eq!(libc::sethostname(name.as_ptr().cast(), name.len()), 0);
    }
    let tree = open_uts();
    // SAFETY: installs an async-signal-safe handler that only stores an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let t = format!("{ready}.tmp");
    std::fs::write(&t, format!("ready {}", std::process::id())).unwrap();
    std::fs::rename(&t, ready).unwrap();
    loop {
        if GO.swap(false, Ordering::SeqCst) {
            let verdict = match check(host, host_ino, tree) {
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
