//! criu test victim: pidfds.
//!
//! `criu-victim-pidfd OUT READY [parent]` forks a child that sleeps, opens a pidfd of the child
//! (`PIDFD_NONBLOCK`) and one of itself; with `parent`, also one of its parent (outside the
//! dumped tree, which the dump refuses). Writes `ready PID` into READY. On SIGUSR1 it checks
//! that each pidfd names its process (fdinfo `Pid:`), that the child's is non-blocking, and
//! that SIGTERM sent through it ends the child, whose exit the pidfd then reports (`waitid`
//! with `P_PIDFD`), and writes `ok` or `bad: WHY` into OUT.

use std::sync::atomic::{AtomicBool, Ordering};

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

fn pidfd_open(pid: i32, flags: i32) -> i32 {
    // SAFETY: pidfd_open takes integers only.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, flags) } as i32;
    assert!(fd >= 0, "pidfd_open {pid}");
    fd
}

fn fdinfo_pid(fd: i32) -> Option<i32> {
    std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|v| v.trim().parse().ok())
}

fn check(child: i32, cfd: i32, sfd: i32) -> Result<(), String> {
    let me = std::process::id() as i32;
    if fdinfo_pid(cfd) != Some(child) || fdinfo_pid(sfd) != Some(me) {
        return Err(format!(
            "pidfds name {:?} and {:?}",
            fdinfo_pid(cfd),
            fdinfo_pid(sfd)
        ));
    }
    // SAFETY: fcntl query on our own descriptor.
    if unsafe { libc::fcntl(cfd, libc::F_GETFL) } & libc::O_NONBLOCK == 0 {
        return Err("the child's pidfd lost PIDFD_NONBLOCK".into());
    }
    // SAFETY: pidfd_send_signal with integers and a null siginfo.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            cfd,
            libc::SIGTERM,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r != 0 {
        return Err(format!(
            "pidfd_send_signal: {}",
            std::io::Error::last_os_error()
        ));
    }
    let mut pfd = libc::pollfd {
        fd: cfd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one live pollfd.
    if unsafe { libc::poll(&mut pfd, 1, 5000) } != 1 {
        return Err("the child's pidfd never became readable".into());
    }
    // SAFETY: waitid fills a zeroed local siginfo.
    let mut si: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid fills the live local `si`; P_PIDFD = 3.
    let r = unsafe { libc::waitid(3, cfd as libc::id_t, &mut si, libc::WEXITED) };
    // SAFETY: reading the status of a filled siginfo.
    let (wpid, status) = unsafe { (si.si_pid(), si.si_status()) };
    if r != 0 || wpid != child || status != libc::SIGTERM {
        return Err(format!("waitid: {r} pid {wpid} status {status}"));
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: criu-victim-pidfd OUT READY [parent]");
        std::process::exit(2);
    }
    let (out, ready) = (&args[1], &args[2]);
    // SAFETY: the child only sleeps in pause() until killed.
    let child = unsafe { libc::fork() };
    if child == 0 {
        loop {
            // SAFETY: pause is async-signal-safe.
            unsafe { libc::pause() };
        }
    }
    assert!(child > 0, "fork");
    let cfd = pidfd_open(child, libc::O_NONBLOCK);
    let sfd = pidfd_open(std::process::id() as i32, 0);
    if args.get(3).map(String::as_str) == Some("parent") {
        // SAFETY: getppid takes no arguments.
        pidfd_open(unsafe { libc::getppid() }, 0);
    }
    // SAFETY: installs an async-signal-safe handler that only stores an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let t = format!("{ready}.tmp");
    std::fs::write(&t, format!("ready {}", std::process::id())).unwrap();
    std::fs::rename(&t, ready).unwrap();
    loop {
        if GO.swap(false, Ordering::SeqCst) {
            let verdict = match check(child, cfd, sfd) {
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
