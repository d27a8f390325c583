//! criu test victim for issue 15's remaining file kinds: `criu-victim-files15 MODE OUT READY
//! [ARG]`. Each mode sets its files up, writes `ready PID` into READY and, on SIGUSR1, checks
//! them and writes `ok` or `bad: WHY` into OUT.
//!
//! - `hugetlb-memfd`: memfd `huge-a` (`MFD_HUGETLB | MFD_HUGE_2MB`, sealing allowed, 4 MiB)
//!   with a pattern in both huge pages, mapped shared and writable, sealed against shrinking
//!   and growing, its descriptor at position 12345; memfd `huge-b` (2 MiB) with a pattern,
//!   mapped private with one byte changed in the mapping, its descriptor closed and its shared
//!   mapping gone. The check: the seals, the file system (hugetlbfs, 2 MiB blocks), the content
//!   through the mapping and `pread`, a write through the mapping seen by `pread`, the
//!   position, both areas' 2 MiB kernel page size (`smaps`), the private byte and the rest of
//!   `huge-b`'s pattern.
//! - `fanotify-fs DIR`: a fanotify group (non-blocking) with a filesystem mark
//!   (`FAN_MARK_FILESYSTEM`, `FAN_OPEN | FAN_CLOSE_WRITE`) on DIR's file system and an inode
//!   mark on DIR (`FAN_ONDIR | FAN_OPEN`). The check: fdinfo still lists a filesystem mark
//!   (`sdev:` only) and an inode mark, and opening a new file in a subdirectory (which the
//!   inode mark does not cover) brings a `FAN_OPEN` event from this process for that file.
//! - `watch-deleted DIR KIND`: DIR/gone is opened and kept open, watched by an inotify
//!   (`KIND` = `inotify`) or fanotify (`fanotify`, an inode mark) instance, then removed. No
//!   check: the dump is expected to refuse the watch by name.
//! - `inotify-scan FILE`: an inotify instance (non-blocking) watching FILE (on a file system
//!   whose file handles do not open again, such as ramfs) for `IN_MODIFY`. The check: writing
//!   FILE brings an `IN_MODIFY` event on the same watch descriptor.
//! - `pidfd-thread-shared`: a thread T, a `PIDFD_THREAD | PIDFD_NONBLOCK` pidfd of T at fd 50,
//!   then a child forked that inherits it (and only sleeps); the child's pid goes into
//!   `OUT.pids`. The check: fd 50 names T (fdinfo `Pid:`), SIGUSR2 sent through it is pending
//!   on T alone, and turning `O_NONBLOCK` off on fd 50 shows in the child's
//!   `/proc/CHILD/fdinfo/50` (one open file), then on again.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

static GO: AtomicBool = AtomicBool::new(false);
static TID: AtomicI32 = AtomicI32::new(0);

const HUGE: usize = 2 << 20;
const MFD_HUGE_2MB: u32 = 21 << 26;
/// `PIDFD_THREAD`.
const PIDFD_THREAD: i32 = libc::O_EXCL;
const PIDFD_AT: i32 = 50;

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 7 + seed as usize) % 251) as u8 + 1)
        .collect()
}

/// The `KernelPageSize` of the area starting at `addr` in our smaps, in kB.
fn kernel_page_kb(addr: usize) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let head = format!("{addr:x}-");
    let mut inside = false;
    for l in s.lines() {
        if l.contains('-') && l.split_whitespace().next().is_some_and(|r| r.contains('-')) {
            inside = l.starts_with(&head);
            continue;
        }
        if inside && let Some(v) = l.strip_prefix("KernelPageSize:") {
            return v.trim().trim_end_matches("kB").trim().parse().ok();
        }
    }
    None
}

fn fdinfo_of(pid: i32, fd: i32, field: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_string()))
}

// ---- hugetlb memfd ----

struct Huge {
    a: i32,
    a_map: *mut u8,
    b_map: *mut u8,
    round: u8,
}

fn memfd_huge(name: &std::ffi::CStr, size: usize, flags: u32) -> i32 {
    // SAFETY: memfd_create with a NUL-terminated name.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_HUGETLB | MFD_HUGE_2MB | flags) };
    assert!(fd >= 0, "memfd_create: {}", errno());
    // SAFETY: sizing our own memfd.
    assert_eq!(unsafe { libc::ftruncate(fd, size as i64) }, 0, "ftruncate");
    fd
}

fn map(fd: i32, len: usize, flags: i32) -> *mut u8 {
    // SAFETY: a new mapping of our own memfd; the kernel picks the address.
    let m = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            fd,
            0,
        )
    };
    assert_ne!(m, libc::MAP_FAILED, "mmap: {}", errno());
    m.cast()
}

fn setup_huge() -> Huge {
    let a = memfd_huge(c"huge-a", 2 * HUGE, libc::MFD_ALLOW_SEALING);
    let a_map = map(a, 2 * HUGE, libc::MAP_SHARED);
    for (off, seed) in [(0usize, 1u8), (HUGE + 4096, 2)] {
        let p = pattern(seed, 10000);
        // SAFETY: the 10000 bytes at `off` lie inside the 4 MiB mapping.
        unsafe { std::ptr::copy_nonoverlapping(p.as_ptr(), a_map.add(off), p.len()) };
    }
    // SAFETY: byte 5 of the mapping: the round counter the check moves on.
    unsafe { *a_map.add(5) = 0 };
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;
    // SAFETY: fcntl on our own descriptor.
    let sealed = unsafe { libc::fcntl(a, libc::F_ADD_SEALS, seals) };
    assert_eq!(sealed, 0, "seal");
    // SAFETY: lseek on our own descriptor.
    assert_eq!(unsafe { libc::lseek(a, 12345, libc::SEEK_SET) }, 12345);
    let b = memfd_huge(c"huge-b", HUGE, 0);
    let shared = map(b, HUGE, libc::MAP_SHARED);
    let p = pattern(3, HUGE);
    // SAFETY: `shared` maps HUGE writable bytes.
    unsafe { std::ptr::copy_nonoverlapping(p.as_ptr(), shared, HUGE) };
    let b_map = map(b, HUGE, libc::MAP_PRIVATE);
    // SAFETY: `b_map` maps HUGE writable bytes; a private change of one byte.
    unsafe { *b_map.add(8192) = 0xee };
    // SAFETY: unmaps our own shared mapping and closes our own descriptor.
    unsafe {
        libc::munmap(shared.cast(), HUGE);
        libc::close(b);
    }
    Huge {
        a,
        a_map,
        b_map,
        round: 0,
    }
}

fn check_huge(h: &mut Huge) -> Result<(), String> {
    // SAFETY: fcntl query on our own descriptor.
    let seals = unsafe { libc::fcntl(h.a, libc::F_GET_SEALS) };
    if seals != libc::F_SEAL_SHRINK | libc::F_SEAL_GROW {
        return Err(format!("seals {seals:#x}"));
    }
    // SAFETY: statfs is plain data; fstatfs fills it from our own descriptor.
    let mut sfs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstatfs(h.a, &mut sfs) } != 0 {
        return Err(format!("fstatfs: {}", errno()));
    }
    if sfs.f_type as i64 != 0x9584_58f6 || sfs.f_bsize as usize != HUGE {
        return Err(format!(
            "not a 2 MiB hugetlbfs file: type {:#x}, block {}",
            sfs.f_type, sfs.f_bsize
        ));
    }
    let link = std::fs::read_link(format!("/proc/self/fd/{}", h.a)).map_err(|e| e.to_string())?;
    if !link.to_string_lossy().starts_with("/memfd:huge-a") {
        return Err(format!("fd names {}", link.display()));
    }
    // SAFETY: lseek query on our own descriptor.
    let pos = unsafe { libc::lseek(h.a, 0, libc::SEEK_CUR) };
    if pos != 12345 {
        return Err(format!("position {pos}"));
    }
    // SAFETY: `a_map` maps 4 MiB of huge-a for the victim's life.
    let a = unsafe { std::slice::from_raw_parts_mut(h.a_map, 2 * HUGE) };
    for (off, seed) in [(0usize, 1u8), (HUGE + 4096, 2)] {
        let mut want = pattern(seed, 10000);
        if off == 0 {
            want[5] = h.round;
        }
        if a[off..off + 10000] != want[..] {
            return Err(format!("huge-a lost its content at {off:#x}"));
        }
        let mut got = vec![0u8; 10000];
        // SAFETY: pread into a live local buffer of 10000 bytes.
        let n = unsafe { libc::pread(h.a, got.as_mut_ptr().cast(), 10000, off as i64) };
        if n != 10000 || got != want {
            return Err(format!("pread of huge-a at {off:#x}: {n}"));
        }
    }
    if a[HUGE - 1] != 0 || a[2 * HUGE - 1] != 0 {
        return Err("huge-a's zeros are not zeros".into());
    }
    h.round = h.round.wrapping_add(1).max(1);
    a[5] = h.round;
    let mut b = [0u8; 1];
    // SAFETY: pread of one byte into a live local buffer.
    if unsafe { libc::pread(h.a, b.as_mut_ptr().cast(), 1, 5) } != 1 || b[0] != h.round {
        return Err("a write through huge-a's mapping did not reach the memfd".into());
    }
    for (m, what) in [(h.a_map, "huge-a"), (h.b_map, "huge-b")] {
        let kb = kernel_page_kb(m as usize);
        if kb != Some(2048) {
            return Err(format!("{what}'s mapping has {kb:?} kB pages"));
        }
    }
    // SAFETY: `b_map` maps 2 MiB of huge-b, private, for the victim's life.
    let bm = unsafe { std::slice::from_raw_parts(h.b_map, HUGE) };
    let mut want = pattern(3, HUGE);
    want[8192] = 0xee;
    if bm != want.as_slice() {
        let at = bm.iter().zip(&want).position(|(x, y)| x != y);
        return Err(format!("huge-b's private mapping differs at {at:?}"));
    }
    Ok(())
}

// ---- fanotify filesystem mark ----

struct Fan {
    fd: i32,
    dir: String,
    n: u32,
}

fn setup_fan_fs(dir: &str) -> Fan {
    // SAFETY: fanotify_init takes flags only.
    let fd = unsafe {
        libc::fanotify_init(
            libc::FAN_CLASS_NOTIF | libc::FAN_NONBLOCK | libc::FAN_CLOEXEC,
            libc::O_RDONLY as u32,
        )
    };
    assert!(fd >= 0, "fanotify_init: {}", errno());
    let c = std::ffi::CString::new(dir).unwrap();
    // SAFETY: fanotify_mark on our own group with a NUL-terminated path.
    let r = unsafe {
        libc::fanotify_mark(
            fd,
            libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
            libc::FAN_OPEN | libc::FAN_CLOSE_WRITE,
            libc::AT_FDCWD,
            c.as_ptr(),
        )
    };
    assert_eq!(r, 0, "filesystem mark: {}", errno());
    // SAFETY: as above.
    let r = unsafe {
        libc::fanotify_mark(
            fd,
            libc::FAN_MARK_ADD,
            libc::FAN_OPEN | libc::FAN_ONDIR,
            libc::AT_FDCWD,
            c.as_ptr(),
        )
    };
    assert_eq!(r, 0, "inode mark: {}", errno());
    std::fs::create_dir_all(format!("{dir}/sub")).unwrap();
    Fan {
        fd,
        dir: dir.to_string(),
        n: 0,
    }
}

/// Reads the group's events: whether one is `mask` from this process for `path`.
fn fan_events(fd: i32, mask: u64, path: &str) -> bool {
    let me = std::process::id() as i32;
    let mut found = false;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: reads into a live local buffer from our own non-blocking group.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return found;
        }
        let mut at = 0usize;
        let size = std::mem::size_of::<libc::fanotify_event_metadata>();
        while at + size <= n as usize {
            // SAFETY: the kernel wrote whole event records; read_unaligned copies one out.
            let m: libc::fanotify_event_metadata =
                unsafe { std::ptr::read_unaligned(buf.as_ptr().add(at).cast()) };
            if m.event_len as usize == 0 {
                break;
            }
            if m.fd >= 0 {
                if m.pid == me
                    && m.mask & mask != 0
                    && std::fs::read_link(format!("/proc/self/fd/{}", m.fd))
                        .is_ok_and(|p| p.to_string_lossy() == path)
                {
                    found = true;
                }
                // SAFETY: closes the descriptor the event handed us.
                unsafe { libc::close(m.fd) };
            }
            at += m.event_len as usize;
        }
    }
}

fn check_fan_fs(f: &mut Fan) -> Result<(), String> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", f.fd))
        .map_err(|e| e.to_string())?;
    let marks: Vec<&str> = info
        .lines()
        .filter_map(|l| l.strip_prefix("fanotify "))
        .filter(|l| !l.starts_with("flags:"))
        .collect();
    if !marks.iter().any(|l| l.starts_with("sdev:")) {
        return Err(format!("no filesystem mark in fdinfo: {marks:?}"));
    }
    if !marks.iter().any(|l| l.starts_with("ino:")) {
        return Err(format!("no inode mark in fdinfo: {marks:?}"));
    }
    fan_events(f.fd, 0, "");
    f.n += 1;
    let path = format!("{}/sub/new{}", f.dir, f.n);
    std::fs::write(&path, b"x").map_err(|e| e.to_string())?;
    if !fan_events(f.fd, libc::FAN_OPEN, &path) {
        return Err(format!("no FAN_OPEN event for {path}"));
    }
    Ok(())
}

// ---- watches on a deleted file ----

fn setup_watch_deleted(dir: &str, kind: &str) {
    let path = format!("{dir}/gone");
    std::fs::write(&path, b"x").unwrap();
    let keep = std::fs::File::open(&path).unwrap();
    std::mem::forget(keep);
    let c = std::ffi::CString::new(path.as_str()).unwrap();
    if kind == "inotify" {
        // SAFETY: inotify calls with flags and a NUL-terminated path.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        // SAFETY: as above.
        let wd = unsafe { libc::inotify_add_watch(fd, c.as_ptr(), libc::IN_MODIFY) };
        assert!(wd > 0, "inotify_add_watch: {}", errno());
    } else {
        // SAFETY: fanotify_init takes flags only.
        let fd = unsafe { libc::fanotify_init(libc::FAN_CLASS_NOTIF, libc::O_RDONLY as u32) };
        assert!(fd >= 0, "fanotify_init: {}", errno());
        // SAFETY: fanotify_mark on our own group with a NUL-terminated path.
        let r = unsafe {
            libc::fanotify_mark(
                fd,
                libc::FAN_MARK_ADD,
                libc::FAN_MODIFY,
                libc::AT_FDCWD,
                c.as_ptr(),
            )
        };
        assert_eq!(r, 0, "fanotify_mark: {}", errno());
    }
    std::fs::remove_file(&path).unwrap();
}

// ---- inotify watch found by a path scan ----

struct Scan {
    fd: i32,
    wd: i32,
    file: String,
}

fn setup_scan(file: &str) -> Scan {
    // SAFETY: inotify_init1 takes flags only.
    let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    assert!(fd >= 0);
    let c = std::ffi::CString::new(file).unwrap();
    // SAFETY: inotify_add_watch on our own instance with a NUL-terminated path.
    let wd = unsafe { libc::inotify_add_watch(fd, c.as_ptr(), libc::IN_MODIFY) };
    assert!(wd > 0, "inotify_add_watch: {}", errno());
    Scan {
        fd,
        wd,
        file: file.to_string(),
    }
}

fn check_scan(s: &Scan) -> Result<(), String> {
    let mut buf = [0u8; 4096];
    // SAFETY: drains our own non-blocking instance into a live local buffer.
    while unsafe { libc::read(s.fd, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
    std::fs::write(&s.file, b"more").map_err(|e| e.to_string())?;
    // SAFETY: reads into a live local buffer from our own instance.
    let n = unsafe { libc::read(s.fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < std::mem::size_of::<libc::inotify_event>() as isize {
        return Err(format!("no event after writing {}: {}", s.file, errno()));
    }
    // SAFETY: the kernel wrote at least one whole event; read_unaligned copies its header.
    let e: libc::inotify_event = unsafe { std::ptr::read_unaligned(buf.as_ptr().cast()) };
    if e.wd != s.wd || e.mask & libc::IN_MODIFY == 0 {
        return Err(format!("event wd {} mask {:#x}", e.wd, e.mask));
    }
    Ok(())
}

// ---- a thread's pidfd shared with a child ----

struct Shared {
    child: i32,
}

fn setup_pidfd_shared(out: &str) -> Shared {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // SAFETY: gettid takes nothing.
        TID.store(unsafe { libc::gettid() }, Ordering::SeqCst);
        tx.send(()).unwrap();
        loop {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    });
    rx.recv().unwrap();
    let tid = TID.load(Ordering::SeqCst);
    // SAFETY: pidfd_open takes integers only.
    let fd =
        unsafe { libc::syscall(libc::SYS_pidfd_open, tid, PIDFD_THREAD | libc::O_NONBLOCK) } as i32;
    assert!(fd >= 0, "pidfd_open: {}", errno());
    // SAFETY: dup3 of our own descriptor onto a free number.
    let at = unsafe { libc::dup3(fd, PIDFD_AT, libc::O_CLOEXEC) };
    assert_eq!(at, PIDFD_AT);
    // SAFETY: closes our own descriptor.
    unsafe { libc::close(fd) };
    // SAFETY: the child only sleeps (async-signal-safe calls) until it is killed.
    let child = unsafe { libc::fork() };
    if child == 0 {
        loop {
            // SAFETY: pause takes nothing.
            unsafe { libc::pause() };
        }
    }
    std::fs::write(format!("{out}.pids"), child.to_string()).unwrap();
    Shared { child }
}

fn check_pidfd_shared(s: &Shared) -> Result<(), String> {
    let me = std::process::id() as i32;
    let tid = TID.load(Ordering::SeqCst);
    let pid = fdinfo_of(me, PIDFD_AT, "Pid:").unwrap_or_default();
    if pid != tid.to_string() {
        return Err(format!("fd {PIDFD_AT} names {pid}, not thread {tid}"));
    }
    let flags = |pid: i32| {
        fdinfo_of(pid, PIDFD_AT, "flags:")
            .and_then(|v| u32::from_str_radix(&v, 8).ok())
            .unwrap_or(0)
    };
    for want in [false, true] {
        // SAFETY: fcntl on our own descriptor.
        let fl = unsafe { libc::fcntl(PIDFD_AT, libc::F_GETFL) };
        let set = if want {
            fl | libc::O_NONBLOCK
        } else {
            fl & !libc::O_NONBLOCK
        };
        // SAFETY: as above.
        unsafe { libc::fcntl(PIDFD_AT, libc::F_SETFL, set) };
        let theirs = flags(s.child) & libc::O_NONBLOCK as u32 != 0;
        if theirs != want {
            return Err(format!(
                "O_NONBLOCK {want} on fd {PIDFD_AT} is {theirs} in child {}: not one open file",
                s.child
            ));
        }
        if flags(s.child) & PIDFD_THREAD as u32 == 0 {
            return Err("the child's pidfd is not PIDFD_THREAD".into());
        }
    }
    // SAFETY: pidfd_send_signal with integers and a null siginfo.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            PIDFD_AT,
            libc::SIGUSR2,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r != 0 {
        return Err(format!("pidfd_send_signal: {}", errno()));
    }
    let pending = |t: i32| {
        std::fs::read_to_string(format!("/proc/{me}/task/{t}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("SigPnd:"))
                    .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            })
            .unwrap_or(0)
    };
    let bit = 1u64 << (libc::SIGUSR2 - 1);
    if pending(tid) & bit == 0 || pending(me) & bit != 0 {
        return Err("SIGUSR2 through the pidfd is not pending on the thread alone".into());
    }
    // Take it back: wait for it on the thread is not possible here; drop it by ignoring.
    // SAFETY: setting SIGUSR2 to ignored discards the pending one.
    unsafe { libc::signal(libc::SIGUSR2, libc::SIG_IGN) };
    // SAFETY: as above, back to blocked-and-pending-free.
    unsafe { libc::signal(libc::SIGUSR2, libc::SIG_DFL) };
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: criu-victim-files15 MODE OUT READY [ARG...]");
        std::process::exit(2);
    }
    let (mode, out, ready) = (args[1].as_str(), &args[2], &args[3]);
    let arg = |i: usize| args.get(4 + i).cloned().unwrap_or_default();
    // SIGUSR2 is blocked everywhere (the pidfd check sends it to a thread).
    // SAFETY: sigset_t is plain data; the calls fill and apply it to this thread, which the
    // other threads inherit.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let mut check: Box<dyn FnMut() -> Result<(), String>> = match mode {
        "hugetlb-memfd" => {
            let mut h = setup_huge();
            Box::new(move || check_huge(&mut h))
        }
        "fanotify-fs" => {
            let mut f = setup_fan_fs(&arg(0));
            Box::new(move || check_fan_fs(&mut f))
        }
        "watch-deleted" => {
            setup_watch_deleted(&arg(0), &arg(1));
            Box::new(|| Ok(()))
        }
        "inotify-scan" => {
            let s = setup_scan(&arg(0));
            Box::new(move || check_scan(&s))
        }
        "pidfd-thread-shared" => {
            let s = setup_pidfd_shared(out);
            Box::new(move || check_pidfd_shared(&s))
        }
        m => {
            eprintln!("unknown mode {m}");
            std::process::exit(2);
        }
    };
    // SAFETY: installs an async-signal-safe handler that only stores an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let tmp = format!("{ready}.tmp");
    std::fs::write(&tmp, format!("ready {}", std::process::id())).unwrap();
    std::fs::rename(&tmp, ready).unwrap();
    loop {
        if GO.swap(false, Ordering::SeqCst) {
            let verdict = match check() {
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
