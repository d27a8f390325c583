//! criu test victim: an inotify instance with watches.
//!
//! `criu-victim-inotify OUT READY DIR [fanotify]` makes DIR/file and DIR/sub, and a non-blocking inotify
//! instance watching DIR/file for `IN_MODIFY` (wd 1), DIR/sub for `IN_CREATE` (wd 3; wd 2 was
//! added and removed again). Writes `ready PID` into READY. On SIGUSR1 it checks that the
//! instance is still non-blocking and empty, that writing DIR/file gives `IN_MODIFY` on wd 1 and
//! creating DIR/sub/new gives `IN_CREATE` named `new` on wd 3, and writes `ok` or `bad: WHY`
//! into OUT. With `fanotify` it also holds a fanotify group with a filesystem mark.

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, Ordering};

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

fn watch(fd: i32, path: &str, mask: u32) -> i32 {
    let c = CString::new(path).unwrap();
    // SAFETY: inotify_add_watch with a NUL-terminated path on our own instance.
    unsafe { libc::inotify_add_watch(fd, c.as_ptr(), mask) }
}

/// The events waiting: (wd, mask, name).
fn events(fd: i32) -> Result<Vec<(i32, u32, String)>, i32> {
    let mut buf = [0u8; 4096];
    // SAFETY: reads into a live buffer; the descriptor is ours.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    let mut out = Vec::new();
    let mut off = 0usize;
    while off + 16 <= n as usize {
        let wd = i32::from_ne_bytes(buf[off..off + 4].try_into().unwrap());
        let mask = u32::from_ne_bytes(buf[off + 4..off + 8].try_into().unwrap());
        let len = u32::from_ne_bytes(buf[off + 12..off + 16].try_into().unwrap()) as usize;
        let name = &buf[off + 16..off + 16 + len];
        let name = String::from_utf8_lossy(name.split(|&b| b == 0).next().unwrap_or(&[]));
        out.push((wd, mask, name.into_owned()));
        off += 16 + len;
    }
    Ok(out)
}

fn check(fd: i32, dir: &str) -> Result<(), String> {
    // SAFETY: fcntl query on our own descriptor.
    if unsafe { libc::fcntl(fd, libc::F_GETFL) } & libc::O_NONBLOCK == 0 {
        return Err("the instance is blocking".into());
    }
    if events(fd) != Err(libc::EAGAIN) {
        return Err("events were waiting after restore".into());
    }
    std::fs::write(format!("{dir}/file"), b"more").map_err(|e| e.to_string())?;
    let ev = events(fd).map_err(|e| format!("read: errno {e}"))?;
    if !ev
        .iter()
        .any(|(wd, m, _)| *wd == 1 && m & libc::IN_MODIFY != 0)
    {
        return Err(format!("after a write: {ev:?}"));
    }
    std::fs::write(format!("{dir}/sub/new"), b"").map_err(|e| e.to_string())?;
    let ev = events(fd).map_err(|e| format!("read: errno {e}"))?;
    if ev != [(3, libc::IN_CREATE, "new".to_string())] {
        return Err(format!("after a create: {ev:?}"));
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: criu-victim-inotify OUT READY DIR [fanotify]");
        std::process::exit(2);
    }
    let (out, ready, dir) = (&args[1], &args[2], &args[3]);
    std::fs::write(format!("{dir}/file"), b"x").unwrap();
    std::fs::create_dir(format!("{dir}/sub")).unwrap();
    // SAFETY: inotify_init1 takes flags only.
    let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK) };
    assert!(fd >= 0, "inotify_init1");
    assert_eq!(watch(fd, &format!("{dir}/file"), libc::IN_MODIFY), 1);
    let tmp = watch(fd, dir, libc::IN_ATTRIB);
    assert_eq!(tmp, 2);
    // SAFETY: removes our own watch.
    unsafe { libc::inotify_rm_watch(fd, tmp) };
    assert_eq!(watch(fd, &format!("{dir}/sub"), libc::IN_CREATE), 3);
    // Drain the IN_IGNORED of the removed watch.
    let _ = events(fd);
    if args.get(4).map(String::as_str) == Some("fanotify") {
        // SAFETY: fanotify_init takes flags only.
        let f = unsafe { libc::fanotify_init(libc::FAN_CLASS_NOTIF, libc::O_RDONLY as u32) };
        assert!(f >= 0, "fanotify_init");
        let c = CString::new(dir.as_str()).unwrap();
        // SAFETY: fanotify_mark on our own group with a NUL-terminated path.
        let r = unsafe {
            libc::fanotify_mark(
                f,
                libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
                libc::FAN_CLOSE_WRITE,
                libc::AT_FDCWD,
                c.as_ptr(),
            )
        };
        assert_eq!(r, 0, "fanotify_mark (filesystem)");
    }
    // SAFETY: installs an async-signal-safe handler that only stores an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let t = format!("{ready}.tmp");
    std::fs::write(&t, format!("ready {}", std::process::id())).unwrap();
    std::fs::rename(&t, ready).unwrap();
    loop {
        if GO.swap(false, Ordering::SeqCst) {
            let verdict = match check(fd, dir) {
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
