//! criu test victim: a tree in a pid namespace of its own.
//!
//! `criu-victim-ns-pid READY OUTER` clones the init of a new pid namespace and exits once the
//! init is ready (the init is handed to the test, a subreaper). The init makes itself a session
//! leader and forks two children (pids 2 and 3 inside); child 2 forks a grandchild (pid 4);
//! all of them sleep. The init writes `ready HOSTPID` into READY (its pid outside, as the
//! starter saw it). On SIGUSR1 the init checks that it is pid 1, that pids 2, 3 and 4 exist in
//! its namespace and are its tree (4's parent is 2), that its pid namespace is not OUTER (the
//! inode of the test's), and writes `check ok` or `check bad: WHY` into READY.2.

use std::os::unix::fs::MetadataExt;
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

/// The parent of `vpid` inside our namespace, from `/proc/HOST/status` of the task found by its
/// NSpid (the mounted /proc is the outer namespace's).
fn ppid_inside(vpid: i32) -> Result<i32, String> {
    for e in std::fs::read_dir("/proc")
        .map_err(|e| e.to_string())?
        .flatten()
    {
        let Ok(st) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let field = |k: &str| st.lines().find_map(|l| l.strip_prefix(k)).map(str::trim);
        let nspid: Vec<i32> = field("NSpid:")
            .unwrap_or("")
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        let mine = std::fs::metadata("/proc/self/ns/pid").map(|m| m.ino()).ok();
        let theirs = std::fs::metadata(e.path().join("ns/pid"))
            .map(|m| m.ino())
            .ok();
        if nspid.len() == 2 && nspid[1] == vpid && mine == theirs {
            // PPid in the outer namespace: translate through its NSpid.
            let pp: i32 = field("PPid:").and_then(|p| p.parse().ok()).unwrap_or(0);
            let pst = std::fs::read_to_string(format!("/proc/{pp}/status")).unwrap_or_default();
            let inner = pst
                .lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|w| w.parse().ok())
                .unwrap_or(0);
            return Ok(inner);
        }
    }
    Err(format!("pid {vpid} not found in our namespace"))
}

fn check(outer: u64) -> Result<(), String> {
    // SAFETY: getpid/kill(pid, 0) only ask.
    unsafe {
        if libc::getpid() != 1 {
            return Err(format!("pid {} inside, not 1", libc::getpid()));
        }
        for p in [2, 3, 4] {
            if libc::kill(p, 0) != 0 {
                return Err(format!("pid {p} missing"));
            }
        }
    }
    for (p, parent) in [(2, 1), (3, 1), (4, 2)] {
        let got = ppid_inside(p)?;
        if got != parent {
            return Err(format!("parent of {p} is {got}, not {parent}"));
        }
    }
    let mine = std::fs::metadata("/proc/self/ns/pid")
        .map_err(|e| e.to_string())?
        .ino();
    if mine == outer {
        return Err("in the test's pid namespace".into());
    }
    Ok(())
}

fn init(ready: &str, outer: u64) -> ! {
    // SAFETY: setsid/fork in a single-threaded process; the children only sleep.
    unsafe {
        libc::setsid();
        let a = libc::fork();
        if a == 0 {
            if libc::fork() == 0 {
                sleep_forever();
            }
            sleep_forever();
        }
        if libc::fork() == 0 {
            sleep_forever();
        }
        libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t);
    }
    let t = format!("{ready}.inner.tmp");
    std::fs::write(&t, "up").unwrap();
    std::fs::rename(&t, format!("{ready}.inner")).unwrap();
    loop {
        if GO.swap(false, Ordering::SeqCst) {
            let verdict = match check(outer) {
                Ok(()) => "check ok".to_string(),
                Err(e) => format!("check bad: {e}"),
            };
            let out = format!("{ready}.2");
            let t = format!("{out}.tmp");
            std::fs::write(&t, verdict).unwrap();
            std::fs::rename(&t, out).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: criu-victim-ns-pid READY OUTER");
        std::process::exit(2);
    }
    let ready = args[1].clone();
    let outer: u64 = args[2].parse().expect("OUTER");
    // SAFETY: a fork-like clone (no CLONE_VM) into a new pid namespace; the child runs `init`.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_NEWPID | libc::SIGCHLD) as libc::c_long,
            0,
            0,
            0,
            0,
        )
    };
    if pid == 0 {
        init(&ready, outer);
    }
    if pid < 0 {
        eprintln!("clone(CLONE_NEWPID): {}", std::io::Error::last_os_error());
        std::process::exit(3);
    }
    let inner = format!("{ready}.inner");
    while !std::path::Path::new(&inner).exists() {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let t = format!("{ready}.tmp");
    std::fs::write(&t, format!("ready {pid}")).unwrap();
    std::fs::rename(&t, &ready).unwrap();
}
