//! criu test victim: a unix socket with an owner for signals.
//!
//! `criu-victim-sock-owner OUT READY` makes a socketpair whose first end is `O_ASYNC` and
//! non-blocking, owned by the victim (`F_SETOWN`) with `F_SETSIG` SIGUSR2. Writes `ready PID`
//! into READY. On SIGUSR1 it checks the owner, signal and flags, then writes into the other end
//! and expects SIGUSR2 and the byte; writes `ok` or `bad: WHY` into OUT.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

static GO: AtomicBool = AtomicBool::new(false);
static IO: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

extern "C" fn on_usr2(_: libc::c_int) {
    IO.fetch_add(1, Ordering::SeqCst);
}

const F_SETSIG: i32 = 10;
const F_GETSIG: i32 = 11;

fn check(a: i32, b: i32) -> Result<(), String> {
    // SAFETY: fcntl queries on our own descriptors; write/read from and into live locals.
    unsafe {
        let (owner, sig, fl) = (
            libc::fcntl(a, libc::F_GETOWN),
            libc::fcntl(a, F_GETSIG),
            libc::fcntl(a, libc::F_GETFL),
        );
        if owner != libc::getpid() || sig != libc::SIGUSR2 {
            return Err(format!("owner {owner}, signal {sig}"));
        }
        if fl & libc::O_ASYNC == 0 || fl & libc::O_NONBLOCK == 0 {
            return Err(format!("flags {fl:#o}"));
        }
        let before = IO.load(Ordering::SeqCst);
        libc::write(b, b"x".as_ptr().cast(), 1);
        let end = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while IO.load(Ordering::SeqCst) == before {
            if std::time::Instant::now() > end {
                return Err("no SIGUSR2 for the write".into());
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let mut c = 0u8;
        if libc::read(a, (&mut c as *mut u8).cast(), 1) != 1 || c != b'x' {
            return Err("the byte did not arrive".into());
        }
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: criu-victim-sock-owner OUT READY");
        std::process::exit(2);
    }
    let (out, ready) = (&args[1], &args[2]);
    let mut sv = [0i32; 2];
    // SAFETY: socketpair into a live array; signal handlers that only touch atomics; fcntl on
    // our own descriptor.
    unsafe {
        libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t);
        libc::signal(libc::SIGUSR2, on_usr2 as *const () as libc::sighandler_t);
        assert_eq!(
            libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, sv.as_mut_ptr()),
            0
        );
        assert_eq!(libc::fcntl(sv[0], libc::F_SETOWN, libc::getpid()), 0);
        assert_eq!(libc::fcntl(sv[0], F_SETSIG, libc::SIGUSR2), 0);
        let fl = libc::fcntl(sv[0], libc::F_GETFL);
        assert_eq!(
            libc::fcntl(sv[0], libc::F_SETFL, fl | libc::O_ASYNC | libc::O_NONBLOCK),
            0
        );
    }
    let tmp = format!("{ready}.tmp");
    std::fs::write(&tmp, format!("ready {}", std::process::id())).unwrap();
    std::fs::rename(&tmp, ready).unwrap();
    loop {
        if GO.swap(false, Ordering::SeqCst) {
            let verdict = match check(sv[0], sv[1]) {
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
