//! criu test victim: `/dev/tty` held by a member of a session who is not its leader.
//!
//! `criu-victim-ctty-member OUT READY [shared]` starts a session whose terminal is a pty of its
//! own (master and slave held by the leader), then forks a child (a member of the session, not
//! its leader) that opens `/dev/tty`; with `shared`, the leader opens `/dev/tty` before the
//! fork and both hold it. The child writes `ready LEADER CHILD` into READY. On SIGUSR1 the child
//! checks that its descriptor names `/dev/tty`, that it is not the session leader, and that
//! `/dev/tty` is the pty (a line written to the master is read from it, bytes written to it
//! come out of the master), and writes `ok` or `bad: WHY` into OUT.

use compel_criu_tests::victim::{
    ping_pong, publish, serve_checks, session_with_pty, take_check_signal,
};

fn check(master: i32, tty: i32) -> Result<(), String> {
    let link = std::fs::read_link(format!("/proc/self/fd/{tty}"))
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    if link != "/dev/tty" {
        return Err(format!("fd {tty} links to {link:?}"));
    }
    // SAFETY: plain queries of this process and its descriptor.
    let (sid, me, tsid) = unsafe { (libc::getsid(0), libc::getpid(), libc::tcgetsid(tty)) };
    if sid == me || tsid != sid {
        return Err(format!(
            "session {sid}, pid {me}, the terminal's session {tsid}"
        ));
    }
    ping_pong(master, tty, tty)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: criu-victim-ctty-member OUT READY");
        std::process::exit(2);
    }
    let (out, ready) = (&args[1], &args[2]);
    let (master, _slave) = session_with_pty();
    let shared = args.get(3).map(String::as_str) == Some("shared");
    // SAFETY: open with a NUL-terminated literal path.
    let early = shared.then(|| unsafe { libc::open(c"/dev/tty".as_ptr(), libc::O_RDWR) });
    // SAFETY: the child only opens a file, installs a handler and loops.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork");
    if child > 0 {
        loop {
            // SAFETY: pause is async-signal-safe.
            unsafe { libc::pause() };
        }
    }
    // SAFETY: open with a NUL-terminated literal path.
    let tty = early.unwrap_or_else(|| unsafe { libc::open(c"/dev/tty".as_ptr(), libc::O_RDWR) });
    assert!(
        tty >= 0,
        "open /dev/tty: {}",
        std::io::Error::last_os_error()
    );
    take_check_signal();
    // Ready once the handler is in place (the test signals this member).
    // SAFETY: getppid takes no arguments.
    let leader = unsafe { libc::getppid() };
    publish(ready, &format!("ready {leader} {}", std::process::id()));
    serve_checks(out, || check(master, tty))
}
