//! criu test victim: a tree in a pid namespace of its own whose task made a further one.
//!
//! `criu-victim-ns-pid-nested READY` clones the init of pid namespace 1 and exits once the tree
//! is up (the init is handed to the test, a subreaper). In namespace 1 the init makes itself a
//! session leader, forks a sleeper (pid 2) and clones the init of pid namespace 2 (pid 3 in
//! namespace 1, 1 in 2), which forks two sleepers (pids 4 and 5 in namespace 1, 2 and 3 in 2).
//! Both inits reap whatever child ends. The outer init writes `ready HOSTPID` into READY.
//!
//! On SIGUSR1 the outer init checks that it is pid 1 and that pids 2..=5 exist in its
//! namespace, then sends SIGUSR1 to pid 3 (the inner init), which checks that it is pid 1, that
//! pids 2 and 3 exist in its namespace and pid 4 does not; each writes `check ok` or `check bad:
//! WHY` (READY.2 for the outer init, READY.3 for the inner one). The test then ends pid 3 of
//! namespace 2 and watches the inner init reap it.

use std::sync::atomic::{AtomicBool, Ordering};

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

fn sleep_forever() -> ! {
    loop {
        // SAFETY: pause has no arguments.
        unsafe { libc::pause() };
    }
}

/// Writes `text` into `path` atomically.
fn put(path: &str, text: &str) {
    let t = format!("{path}.tmp");
    std::fs::write(&t, text).unwrap();
    std::fs::rename(&t, path).unwrap();
}

/// A fork-like clone into a new pid namespace; 0 in the child.
fn clone_newpid() -> libc::c_long {
    // SAFETY: a fork-like clone (no CLONE_VM) of this single-threaded process.
    unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_NEWPID | libc::SIGCHLD) as libc::c_long,
            0,
            0,
            0,
            0,
        )
    }
}

/// Whether `pid` exists in this process's pid namespace.
fn exists(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only asks.
    unsafe { libc::kill(pid, 0) == 0 }
}

fn check(present: &[i32], absent: &[i32]) -> Result<(), String> {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    if me != 1 {
        return Err(format!("pid {me}, not 1"));
    }
    if let Some(p) = present.iter().find(|&&p| !exists(p)) {
        return Err(format!("pid {p} missing"));
    }
    if let Some(p) = absent.iter().find(|&&p| exists(p)) {
        return Err(format!("pid {p} exists"));
    }
    Ok(())
}

/// An init's loop: reaps every child that ends; on SIGUSR1 runs `on_go`.
fn init_loop(mut on_go: impl FnMut()) -> ! {
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    loop {
        // SAFETY: waitpid for any child without blocking and without a status.
        while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
        if GO.swap(false, Ordering::SeqCst) {
            on_go();
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

fn inner_init(ready: String) -> ! {
    for _ in 0..2 {
        // SAFETY: fork of a single-threaded process; the child only sleeps.
        if unsafe { libc::fork() } == 0 {
            sleep_forever();
        }
    }
    put(&format!("{ready}.inner2"), "up");
    init_loop(|| {
        let verdict = match check(&[2, 3], &[4]) {
            Ok(()) => "check ok".to_string(),
            Err(e) => format!("check bad: {e}"),
        };
        put(&format!("{ready}.3"), &verdict);
    })
}

fn outer_init(ready: String) -> ! {
    // SAFETY: setsid/fork of a single-threaded process; the child only sleeps.
    unsafe {
        libc::setsid();
        if libc::fork() == 0 {
            sleep_forever();
        }
    }
    let pid = clone_newpid();
    if pid == 0 {
        inner_init(ready);
    }
    let inner = format!("{ready}.inner2");
    while !std::path::Path::new(&inner).exists() {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    put(&format!("{ready}.inner"), "up");
    init_loop(|| {
        let verdict = match check(&[2, 3, 4, 5], &[6]) {
            Ok(()) => "check ok".to_string(),
            Err(e) => format!("check bad: {e}"),
        };
        put(&format!("{ready}.2"), &verdict);
        // SAFETY: a signal to the inner init (pid 3 here).
        unsafe { libc::kill(3, libc::SIGUSR1) };
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 2 {
        eprintln!("usage: criu-victim-ns-pid-nested READY");
        std::process::exit(2);
    }
    let ready = args[1].clone();
    let pid = clone_newpid();
    if pid == 0 {
        outer_init(ready);
    }
    if pid < 0 {
        eprintln!("clone(CLONE_NEWPID): {}", std::io::Error::last_os_error());
        std::process::exit(3);
    }
    let inner = format!("{ready}.inner");
    while !std::path::Path::new(&inner).exists() {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    put(&ready, &format!("ready {pid}"));
}
