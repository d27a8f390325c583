//! Pseudo-terminals for tests: a pty of the test's own, and a ping/pong exchange with a victim
//! that holds the slave.

// Unsafe code: pty calls, poll, read and write on descriptors the test holds.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::{Spawned, criu_dump, dump_and_reap, signal, wait_file};

/// A pty of the test's own: (master, slave path).
///
/// # Panics
/// If no pty can be made.
pub fn pty() -> (OwnedFd, String) {
    // SAFETY: pty calls with plain values; ptsname's string is copied at once.
    unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(
            m >= 0 && libc::grantpt(m) == 0 && libc::unlockpt(m) == 0,
            "openpt"
        );
        let name = std::ffi::CStr::from_ptr(libc::ptsname(m))
            .to_string_lossy()
            .into_owned();
        (OwnedFd::from_raw_fd(m), name)
    }
}

/// Asks the victim `pid` to check itself (SIGUSR1: it reads a line from its slave and answers
/// "pong") while we say "ping" on `master`; returns its verdict (from `out`) and what came
/// out of the master.
///
/// # Panics
/// If the victim gives no verdict within 10 s.
pub fn talk(pid: i32, master: &OwnedFd, out: &Path) -> (String, String) {
    let _ = std::fs::remove_file(out);
    signal(pid, Signal::SIGUSR1);
    std::thread::sleep(Duration::from_millis(100));
    // SAFETY: writes a live literal to our master.
    unsafe { libc::write(master.as_raw_fd(), b"ping\n".as_ptr().cast(), 5) };
    let verdict = wait_file(out, Duration::from_secs(10));
    let mut seen = Vec::new();
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&seen).contains("pong") && std::time::Instant::now() < end {
        let mut pfd = libc::pollfd {
            fd: master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let mut b = [0u8; 256];
        // SAFETY: poll on one live pollfd; read into a live local buffer.
        unsafe {
            if libc::poll(&mut pfd, 1, 500) == 1 {
                let n = libc::read(master.as_raw_fd(), b.as_mut_ptr().cast(), b.len());
                seen.extend_from_slice(&b[..n.max(0) as usize]);
            }
        }
    }
    (verdict, String::from_utf8_lossy(&seen).into_owned())
}

/// Starts `criu-victim-orphan-pts` on the pty slave `slave` and waits for it to be ready.
pub fn spawn_orphan_pts_victim(d: &Path, slave: &str) -> Spawned {
    let (out, ready) = (d.join("out"), d.join("ready"));
    let v = Spawned::spawn(
        crate::bin_dir().join("criu-victim-orphan-pts"),
        &[out.to_str().unwrap(), ready.to_str().unwrap(), slave],
        &d.join("victim.log"),
        None,
    );
    wait_file(&ready, Duration::from_secs(10));
    v
}

/// Dumps an orphan-pts victim (a pty slave whose master is outside its tree) into `D/img`:
/// refused without `--orphan-pts-master`, done with it; its master is closed after. Returns
/// its pid (reaped) and the images directory.
///
/// # Panics
/// If a step fails.
pub fn dump_orphan_pts_victim(d: &Path) -> (i32, std::path::PathBuf) {
    let (master, slave) = pty();
    let mut v = spawn_orphan_pts_victim(d, &slave);
    let (verdict, seen) = talk(v.pid(), &master, &d.join("out"));
    assert!(verdict.starts_with("ok"), "before the dump: {verdict}");
    assert!(seen.contains("pong"), "the master read {seen:?}");
    let img = d.join("img");
    std::fs::create_dir_all(&img).unwrap();
    let o = criu_dump(v.pid(), &img, &["-o", "dump.log"]);
    assert!(
        !o.status.success(),
        "an orphan slave was dumped without the option"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--orphan-pts-master"), "stderr: {err}");
    dump_and_reap(&mut v, &img, &["--orphan-pts-master"]);
    drop(master);
    (v.pid(), img)
}
