//! criu test victim: pidfds of threads (`PIDFD_THREAD`).
//!
//! `criu-victim-pidfd-thread OUT READY` blocks SIGUSR2 everywhere, forks a child that starts a
//! thread of its own, starts a thread T of its own, and opens: a `PIDFD_THREAD |
//! PIDFD_NONBLOCK` pidfd of T (close-on-exec) and a duplicate of it (not close-on-exec), a
//! `PIDFD_THREAD` pidfd of its own leader, and one of the child's thread. Writes the child's
//! pid and its thread's tid into `OUT.pids`, then `ready PID` into READY. On SIGUSR1 it checks
//! that each pidfd names its thread (fdinfo `Pid:`) with its flags (`O_EXCL` is
//! `PIDFD_THREAD`), that the duplicate is the same open file with its own descriptor flag,
//! that SIGUSR2 sent through the pidfds is pending on that very thread (`SigPnd:` of its
//! task), and that T's pidfd becomes readable when T exits while the leader's does not, and
//! writes `ok` or `bad: WHY` into OUT.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

static GO: AtomicBool = AtomicBool::new(false);
static STOP: AtomicBool = AtomicBool::new(false);
static TID: AtomicI32 = AtomicI32::new(0);

/// `PIDFD_THREAD`.
const PIDFD_THREAD: i32 = libc::O_EXCL;
/// SIGUSR2's bit in a `SigPnd:` mask.
const USR2_BIT: u64 = 1 << (libc::SIGUSR2 - 1);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

fn pidfd_open(pid: i32, flags: i32) -> i32 {
    // SAFETY: pidfd_open takes integers only.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, flags) } as i32;
    assert!(
        fd >= 0,
        "pidfd_open {pid}: {}",
        std::io::Error::last_os_error()
    );
    fd
}

fn fdinfo(fd: i32, field: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_string()))
}

fn fdinfo_pid(fd: i32) -> Option<i32> {
    fdinfo(fd, "Pid:")?.parse().ok()
}

fn fdinfo_flags(fd: i32) -> u32 {
    fdinfo(fd, "flags:")
        .and_then(|v| u32::from_str_radix(&v, 8).ok())
        .unwrap_or(0)
}

/// The `SigPnd:` mask of thread `tid` of process `pid`.
fn thread_pending(pid: i32, tid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("SigPnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

fn send(fd: i32, sig: i32) -> Result<(), String> {
    // SAFETY: pidfd_send_signal with integers and a null siginfo.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd,
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r != 0 {
        return Err(format!(
            "pidfd_send_signal on fd {fd}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn readable(fd: i32, ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one live pollfd.
    unsafe { libc::poll(&mut pfd, 1, ms) == 1 }
}

fn cloexec(fd: i32) -> bool {
    // SAFETY: fcntl query on our own descriptor.
    unsafe { libc::fcntl(fd, libc::F_GETFD) & libc::FD_CLOEXEC != 0 }
}

struct Fds {
    t: i32,
    dup: i32,
    leader: i32,
    child: i32,
}

fn check(f: &Fds, child: i32, child_tid: i32) -> Result<(), String> {
    let me = std::process::id() as i32;
    let t = TID.load(Ordering::SeqCst);
    let names = [(f.t, t), (f.dup, t), (f.leader, me), (f.child, child_tid)];
    for (fd, want) in names {
        if fdinfo_pid(fd) != Some(want) {
            return Err(format!("fd {fd} names {:?}, not {want}", fdinfo_pid(fd)));
        }
    }
    for fd in [f.t, f.dup, f.leader, f.child] {
        if fdinfo_flags(fd) & PIDFD_THREAD as u32 == 0 {
            return Err(format!(
                "fd {fd} lost PIDFD_THREAD ({:o})",
                fdinfo_flags(fd)
            ));
        }
    }
    if fdinfo_flags(f.t) & libc::O_NONBLOCK as u32 == 0 {
        return Err("T's pidfd lost PIDFD_NONBLOCK".into());
    }
    if !cloexec(f.t) || cloexec(f.dup) {
        return Err(format!(
            "close-on-exec: pidfd {} and its duplicate {}",
            cloexec(f.t),
            cloexec(f.dup)
        ));
    }
    // SAFETY: kcmp compares two descriptors of this process; integers only (KCMP_FILE = 0).
    let same = unsafe { libc::syscall(libc::SYS_kcmp, me, me, 0, f.t, f.dup) };
    if same != 0 {
        return Err(format!("the duplicate is another open file (kcmp {same})"));
    }
    if thread_pending(me, t) & USR2_BIT != 0 {
        return Err("SIGUSR2 pending on T before any was sent".into());
    }
    send(f.t, libc::SIGUSR2)?;
    if thread_pending(me, t) & USR2_BIT == 0 || thread_pending(me, me) & USR2_BIT != 0 {
        return Err("SIGUSR2 through T's pidfd is not pending on T alone".into());
    }
    send(f.child, libc::SIGUSR2)?;
    if thread_pending(child, child_tid) & USR2_BIT == 0
        || thread_pending(child, child) & USR2_BIT != 0
    {
        return Err("SIGUSR2 through the child thread's pidfd is not pending on it alone".into());
    }
    if readable(f.t, 0) || readable(f.leader, 0) {
        return Err("a pidfd of a live thread is readable".into());
    }
    STOP.store(true, Ordering::SeqCst);
    if !readable(f.t, 5000) {
        return Err("T's pidfd never reported T's exit".into());
    }
    if readable(f.leader, 0) {
        return Err("the leader's pidfd reports an exit".into());
    }
    Ok(())
}

fn gettid() -> i32 {
    // SAFETY: gettid takes no arguments.
    unsafe { libc::gettid() }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: criu-victim-pidfd-thread OUT READY");
        std::process::exit(2);
    }
    let (out, ready) = (&args[1], &args[2]);
    // SAFETY: a zeroed sigset filled by sigaddset, then blocked in this (only) thread; the
    // threads and the child inherit the mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let mut p = [0i32; 2];
    // SAFETY: pipe fills the live local array.
    assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0, "pipe");
    // SAFETY: the child is single-threaded here; it only starts a thread and sleeps.
    let child = unsafe { libc::fork() };
    if child == 0 {
        std::thread::spawn(move || {
            let tid = gettid().to_ne_bytes();
            // SAFETY: writes four bytes of a live local into the pipe.
            unsafe { libc::write(p[1], tid.as_ptr().cast(), 4) };
            loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        });
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
    assert!(child > 0, "fork");
    let mut b = [0u8; 4];
    // SAFETY: reads four bytes into the live local buffer.
    let n = unsafe { libc::read(p[0], b.as_mut_ptr().cast(), 4) };
    assert_eq!(n, 4, "child tid");
    let child_tid = i32::from_ne_bytes(b);
    // SAFETY: both ends are ours and no longer used.
    unsafe {
        libc::close(p[0]);
        libc::close(p[1]);
    }
    std::thread::spawn(|| {
        TID.store(gettid(), Ordering::SeqCst);
        while !STOP.load(Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    });
    while TID.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let t = pidfd_open(TID.load(Ordering::SeqCst), PIDFD_THREAD | libc::O_NONBLOCK);
    // SAFETY: dup of our own descriptor (the copy is not close-on-exec).
    let dup = unsafe { libc::dup(t) };
    assert!(dup >= 0, "dup");
    let fds = Fds {
        t,
        dup,
        leader: pidfd_open(std::process::id() as i32, PIDFD_THREAD),
        child: pidfd_open(child_tid, PIDFD_THREAD),
    };
    // SAFETY: installs an async-signal-safe handler that only stores an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    std::fs::write(format!("{out}.pids"), format!("{child} {child_tid}")).unwrap();
    let tmp = format!("{ready}.tmp");
    std::fs::write(&tmp, format!("ready {}", std::process::id())).unwrap();
    std::fs::rename(&tmp, ready).unwrap();
    loop {
        if GO.swap(false, Ordering::SeqCst) {
            let verdict = match check(&fds, child, child_tid) {
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
