//! criu test victim: a tree in a UTS namespace of its own.
//!
//! `criu-victim-ns-uts READY HOST DOMAIN OUTER` makes a new UTS namespace (`unshare`), names it HOST
//! and DOMAIN, forks a child that shares it and sleeps, and writes `ready PID CHILD` into
//! READY. On SIGUSR1 it checks that its names are still HOST and DOMAIN, that its namespace is
//! not OUTER (the inode of the test's), and that the child is still in it, and writes `check ok` or
//! `check bad: WHY` into READY.2.

use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

fn field(raw: &[libc::c_char]) -> String {
    raw.iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8 as char)
        .collect()
}

fn ino(path: &str) -> Result<u64, String> {
    std::fs::metadata(path)
        .map(|m| m.ino())
        .map_err(|e| format!("{path}: {e}"))
}

fn check(host: &str, domain: &str, child: i32, outer: u64) -> Result<(), String> {
    // SAFETY: utsname is plain data; uname fills the live local.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uname fills the live local `u`.
    if unsafe { libc::uname(&mut u) } != 0 {
        return Err("uname failed".into());
    }
    let (h, d) = (field(&u.nodename), field(&u.domainname));
    if h != host || d != domain {
        return Err(format!("names are {h:?} {d:?}, not {host:?} {domain:?}"));
    }
    let mine = ino("/proc/self/ns/uts")?;
    if mine == outer {
        return Err("back in the test's uts namespace".into());
    }
    let theirs = ino(&format!("/proc/{child}/ns/uts"))?;
    if theirs != mine {
        return Err(format!(
            "child {child} is in uts namespace {theirs}, not {mine}"
        ));
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: criu-victim-ns-uts READY HOST DOMAIN OUTER");
        std::process::exit(2);
    }
    let (ready, host, domain) = (&args[1], &args[2], &args[3]);
    let outer: u64 = args[4].parse().expect("OUTER");
    // SAFETY: unshare/sethostname/setdomainname on our own process with live buffers.
    unsafe {
        assert_eq!(libc::unshare(libc::CLONE_NEWUTS), 0, "unshare");
        assert_eq!(libc::sethostname(host.as_ptr().cast(), host.len()), 0);
        assert_eq!(libc::setdomainname(domain.as_ptr().cast(), domain.len()), 0);
    }
    // SAFETY: the child only sleeps until it is killed.
    let child = unsafe { libc::fork() };
    if child == 0 {
        loop {
            // SAFETY: pause has no arguments.
            unsafe { libc::pause() };
        }
    }
    // SAFETY: installs an async-signal-safe handler that only stores an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let t = format!("{ready}.tmp");
    std::fs::write(&t, format!("ready {} {child}", std::process::id())).unwrap();
    std::fs::rename(&t, ready).unwrap();
    loop {
        if GO.swap(false, Ordering::SeqCst) {
            let verdict = match check(host, domain, child, outer) {
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
