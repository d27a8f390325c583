//! criu test victim: the less common file kinds of issue 15.
//!
//! `criu-victim-files-more MODE OUT READY` sets up MODE's descriptors, writes `ready PID` into
//! READY, and on SIGUSR1 checks them, writing `ok` or `bad: WHY` into OUT. Modes:
//! - `pidfd`: a pidfd of a child that has exited and been reaped (reports `Pid: -1`, reads as
//!   exited, refuses signals), and one from `clone(CLONE_PIDFD)` of a child that sleeps (names
//!   it, ends it with SIGTERM and reports that exit).
//! - `opath`: `O_PATH|O_NOFOLLOW` descriptors of a symlink and `O_PATH` of a bound unix socket's
//!   node, in a directory next to OUT (checked: file type, inode, the link's target).
//! - `excl`: a pty pair whose slave is in exclusive mode (`TIOCEXCL`; checked with `TIOCGEXCL`).

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, Ordering};

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

fn err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

fn fdinfo_pid(fd: i32) -> Option<i32> {
    std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|v| v.trim().parse().ok())
}

fn send_signal(pidfd: i32, sig: i32) -> i64 {
    // SAFETY: pidfd_send_signal with integers and a null siginfo.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd,
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    }
}

fn readable(fd: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one live pollfd.
    unsafe { libc::poll(&mut pfd, 1, 5000) == 1 }
}

struct Pidfds {
    dead: i32,
    child: i32,
    cfd: i32,
}

fn setup_pidfd() -> Pidfds {
    // SAFETY: the child exits at once.
    let gone = unsafe { libc::fork() };
    if gone == 0 {
        // SAFETY: ends the child without running the parent's handlers.
        unsafe { libc::_exit(0) };
    }
    // SAFETY: pidfd_open takes integers only.
    let dead = unsafe { libc::syscall(libc::SYS_pidfd_open, gone, 0) } as i32;
    assert!(dead >= 0, "pidfd_open");
    let mut st = 0;
    // SAFETY: reaps our own child into a live local.
    unsafe { libc::waitpid(gone, &mut st, 0) };
    let mut cfd: i32 = -1;
    // SAFETY: clone without a new stack behaves as fork; the kernel writes the pidfd into the
    // live local `cfd` (x86-64 argument order: flags, stack, parent_tid, child_tid, tls).
    let child = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_PIDFD | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            &mut cfd as *mut i32,
            0usize,
            0usize,
        )
    } as i32;
    if child == 0 {
        loop {
            // SAFETY: pause is async-signal-safe.
            unsafe { libc::pause() };
        }
    }
    assert!(child > 0 && cfd >= 0, "clone(CLONE_PIDFD)");
    Pidfds { dead, child, cfd }
}

fn check_pidfd(p: &Pidfds) -> Result<(), String> {
    if fdinfo_pid(p.dead) != Some(-1) {
        return Err(format!("the dead pidfd names {:?}", fdinfo_pid(p.dead)));
    }
    if !readable(p.dead) {
        return Err("the dead pidfd does not read as exited".into());
    }
    if send_signal(p.dead, 0) == 0
        || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
    {
        return Err(err("signal 0 through the dead pidfd"));
    }
    if fdinfo_pid(p.cfd) != Some(p.child) {
        return Err(format!(
            "the CLONE_PIDFD pidfd names {:?}, not {}",
            fdinfo_pid(p.cfd),
            p.child
        ));
    }
    if send_signal(p.cfd, libc::SIGTERM) != 0 {
        return Err(err("pidfd_send_signal"));
    }
    if !readable(p.cfd) {
        return Err("the child's pidfd never became readable".into());
    }
    // SAFETY: waitid fills a zeroed local siginfo.
    let mut si: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid fills the live local `si`; P_PIDFD = 3.
    let r = unsafe { libc::waitid(3, p.cfd as libc::id_t, &mut si, libc::WEXITED) };
    // SAFETY: reading the status of a filled siginfo.
    let (wpid, status) = unsafe { (si.si_pid(), si.si_status()) };
    if r != 0 || wpid != p.child || status != libc::SIGTERM {
        return Err(format!("waitid: {r} pid {wpid} status {status}"));
    }
    Ok(())
}

struct Opath {
    dir: String,
    link: i32,
    sock: i32,
}

fn open_path(path: &str, flags: i32) -> i32 {
    let c = CString::new(path).unwrap();
    // SAFETY: opens a NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_PATH | libc::O_CLOEXEC) };
    assert!(fd >= 0, "{}", err(path));
    fd
}

fn setup_opath(out: &str) -> Opath {
    let dir = format!("{out}.d");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(format!("{dir}/target"), "t").unwrap();
    std::os::unix::fs::symlink("target", format!("{dir}/link")).unwrap();
    let l = std::os::unix::net::UnixListener::bind(format!("{dir}/sock")).unwrap();
    drop(l);
    let link = open_path(&format!("{dir}/link"), libc::O_NOFOLLOW);
    let sock = open_path(&format!("{dir}/sock"), 0);
    Opath { dir, link, sock }
}

fn fstat(fd: i32) -> libc::stat {
    // SAFETY: fstat fills a zeroed local stat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes the live local `st`.
    unsafe { libc::fstat(fd, &mut st) };
    st
}

fn check_opath(o: &Opath) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    for (fd, name, kind) in [
        (o.link, "link", libc::S_IFLNK),
        (o.sock, "sock", libc::S_IFSOCK),
    ] {
        let st = fstat(fd);
        let path = format!("{}/{name}", o.dir);
        let meta = std::fs::symlink_metadata(&path).map_err(|e| format!("{path}: {e}"))?;
        if st.st_mode & libc::S_IFMT != kind || st.st_ino != meta.ino() {
            return Err(format!(
                "{name}: mode {:o} ino {} (want type {kind:o} ino {})",
                st.st_mode,
                st.st_ino,
                meta.ino()
            ));
        }
        // SAFETY: fcntl query on our own descriptor.
        if unsafe { libc::fcntl(fd, libc::F_GETFL) } & libc::O_PATH == 0 {
            return Err(format!("{name}: no longer O_PATH"));
        }
    }
    let mut buf = [0u8; 64];
    // SAFETY: readlinkat of the O_PATH symlink itself (empty path) into a live buffer.
    let n = unsafe { libc::readlinkat(o.link, c"".as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 || &buf[..n as usize] != b"target" {
        return Err(err("readlinkat of the link descriptor"));
    }
    Ok(())
}

fn setup_excl() -> i32 {
    // SAFETY: opens the pty multiplexer.
    let m = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY) };
    assert!(m >= 0, "posix_openpt");
    // SAFETY: unlocks and names the slave of our own master.
    let name = unsafe {
        libc::grantpt(m);
        libc::unlockpt(m);
        std::ffi::CStr::from_ptr(libc::ptsname(m)).to_owned()
    };
    // SAFETY: opens the slave by its NUL-terminated name.
    let s = unsafe { libc::open(name.as_ptr(), libc::O_RDWR | libc::O_NOCTTY) };
    assert!(s >= 0, "open slave");
    // SAFETY: TIOCEXCL takes no argument.
    assert_eq!(unsafe { libc::ioctl(s, libc::TIOCEXCL) }, 0, "TIOCEXCL");
    s
}

fn check_excl(s: i32) -> Result<(), String> {
    let mut v: libc::c_int = 0;
    // SAFETY: TIOCGEXCL writes one int into the live local `v`.
    if unsafe { libc::ioctl(s, libc::TIOCGEXCL, &mut v) } != 0 {
        return Err(err("TIOCGEXCL"));
    }
    if v == 0 {
        return Err("the slave left exclusive mode".into());
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: criu-victim-files-more MODE OUT READY");
        std::process::exit(2);
    }
    let (mode, out, ready) = (args[1].as_str(), &args[2], &args[3]);
    let check: Box<dyn Fn() -> Result<(), String>> = match mode {
        "pidfd" => {
            let p = setup_pidfd();
            Box::new(move || check_pidfd(&p))
        }
        "opath" => {
            let o = setup_opath(out);
            Box::new(move || check_opath(&o))
        }
        "excl" => {
            let s = setup_excl();
            Box::new(move || check_excl(s))
        }
        _ => {
            eprintln!("unknown mode {mode}");
            std::process::exit(2);
        }
    };
    // SAFETY: installs an async-signal-safe handler that only stores an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let t = format!("{ready}.tmp");
    std::fs::write(&t, format!("ready {}", std::process::id())).unwrap();
    std::fs::rename(&t, ready).unwrap();
    loop {
        if GO.swap(false, Ordering::SeqCst) {
            let verdict = match check() {
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
