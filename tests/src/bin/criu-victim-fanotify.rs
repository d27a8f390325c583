//! criu test victim: a fanotify group.
//!
//! `criu-victim-fanotify OUT READY DIR` makes a non-blocking notification group with three
//! marks: `DIR/watched` (inode mark: modify, close-write), the mount holding DIR (mount mark:
//! open) and `DIR/quiet` (inode mark: no events, open ignored, the ignore surviving
//! modification). Writes `ready PID` into READY. On SIGUSR1 it checks that its fdinfo shows
//! the same group and marks as when it made them, and that they work: after it drains the
//! queue, opens `DIR/other` and `DIR/quiet` and writes `DIR/watched`, the group reports the
//! open of `other`, not that of `quiet`, and the change to `watched`; writes `ok` or `bad: WHY`
//! into OUT.

use std::sync::atomic::{AtomicBool, Ordering};

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

fn mark(fd: i32, flags: u32, mask: u64, path: &str) {
    let c = std::ffi::CString::new(path).unwrap();
    // SAFETY: fanotify_mark on our own group with a NUL-terminated path.
    let r = unsafe { libc::fanotify_mark(fd, flags, mask, libc::AT_FDCWD, c.as_ptr()) };
    assert_eq!(
        r,
        0,
        "fanotify_mark {path}: {}",
        std::io::Error::last_os_error()
    );
}

fn fanotify_lines(fd: i32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("fanotify"))
        .map(str::to_string)
        .collect()
}

/// Every queued event as (mask, path of its file), closing the event descriptors.
fn events(fd: i32) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        // SAFETY: reads into a live local buffer from our own non-blocking group.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return out;
        }
        let mut at = 0usize;
        let size = std::mem::size_of::<libc::fanotify_event_metadata>();
        while at + size <= n as usize {
            // SAFETY: the kernel wrote a whole event header at `at` (checked against n).
            let ev: libc::fanotify_event_metadata =
                unsafe { std::ptr::read_unaligned(buf.as_ptr().add(at).cast()) };
            if ev.event_len < size as u32 {
                return out;
            }
            let path = std::fs::read_link(format!("/proc/self/fd/{}", ev.fd))
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            if ev.fd >= 0 {
                // SAFETY: the event's descriptor is ours to close.
                unsafe { libc::close(ev.fd) };
            }
            out.push((ev.mask, path));
            at += ev.event_len as usize;
        }
    }
}

fn check(fd: i32, dir: &str, saved: &[String]) -> Result<(), String> {
    let now = fanotify_lines(fd);
    if now != saved {
        return Err(format!("fdinfo {now:?}, was {saved:?}"));
    }
    events(fd);
    let _ = std::fs::read(format!("{dir}/other"));
    let _ = std::fs::read(format!("{dir}/quiet"));
    std::fs::write(format!("{dir}/watched"), b"changed").map_err(|e| e.to_string())?;
    std::thread::sleep(std::time::Duration::from_millis(50));
    let got = events(fd);
    let has = |mask: u64, name: &str| {
        got.iter()
            .any(|(m, p)| m & mask != 0 && p == &format!("{dir}/{name}"))
    };
    if !has(libc::FAN_OPEN, "other") {
        return Err(format!("no open event for other: {got:?}"));
    }
    if has(libc::FAN_OPEN, "quiet") {
        return Err(format!(
            "an open event for quiet, which is ignored: {got:?}"
        ));
    }
    if !has(libc::FAN_MODIFY, "watched") {
        return Err(format!("no modify event for watched: {got:?}"));
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: criu-victim-fanotify OUT READY DIR");
        std::process::exit(2);
    }
    let (out, ready, dir) = (&args[1], &args[2], &args[3]);
    for f in ["watched", "quiet", "other"] {
        std::fs::write(format!("{dir}/{f}"), f).unwrap();
    }
    // SAFETY: fanotify_init takes flags only.
    let fd = unsafe {
        libc::fanotify_init(
            libc::FAN_CLASS_NOTIF | libc::FAN_NONBLOCK | libc::FAN_CLOEXEC,
            libc::O_RDONLY as u32,
        )
    };
    assert!(
        fd >= 0,
        "fanotify_init: {}",
        std::io::Error::last_os_error()
    );
    mark(
        fd,
        libc::FAN_MARK_ADD,
        libc::FAN_MODIFY | libc::FAN_CLOSE_WRITE,
        &format!("{dir}/watched"),
    );
    mark(
        fd,
        libc::FAN_MARK_ADD | libc::FAN_MARK_MOUNT,
        libc::FAN_OPEN,
        dir,
    );
    mark(
        fd,
        libc::FAN_MARK_ADD | libc::FAN_MARK_IGNORED_MASK | libc::FAN_MARK_IGNORED_SURV_MODIFY,
        libc::FAN_OPEN,
        &format!("{dir}/quiet"),
    );
    let saved = fanotify_lines(fd);
    // SAFETY: installs an async-signal-safe handler that only stores an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let tmp = format!("{ready}.tmp");
    std::fs::write(&tmp, format!("ready {}", std::process::id())).unwrap();
    std::fs::rename(&tmp, ready).unwrap();
    loop {
        if GO.swap(false, Ordering::SeqCst) {
            let verdict = match check(fd, dir, &saved) {
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
