//! criu test victim: `/dev/tty`.
//!
//! `criu-victim-devtty OUT READY` starts a session, opens a pty (master and slave; the slave
//! becomes the session's terminal), opens `/dev/tty` and dups it to a second descriptor.
//! Writes `ready PID` into READY. On SIGUSR1 it checks that both descriptors name `/dev/tty`
//! and share one open file, that `/dev/tty` is the pty (its session is ours, a line written
//! to the master is read from it, bytes written to it come out of the master) and writes `ok`
//! or `bad: WHY` into OUT.

use compel_criu_tests::victim::{
    ping_pong, publish, serve_checks, session_with_pty, take_check_signal,
};

fn link(fd: i32) -> String {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

fn check(master: i32, tty: i32, dup: i32) -> Result<(), String> {
    for fd in [tty, dup] {
        if link(fd) != "/dev/tty" {
            return Err(format!("fd {fd} links to {:?}", link(fd)));
        }
    }
    // SAFETY: fcntl/tcgetsid on our own descriptors.
    unsafe {
        let fl = libc::fcntl(tty, libc::F_GETFL);
        libc::fcntl(tty, libc::F_SETFL, fl | libc::O_NONBLOCK);
        let shared = libc::fcntl(dup, libc::F_GETFL) & libc::O_NONBLOCK != 0;
        libc::fcntl(tty, libc::F_SETFL, fl);
        if !shared {
            return Err("the dup is another open file".into());
        }
        if libc::tcgetsid(tty) != libc::getpid() {
            return Err(format!(
                "/dev/tty belongs to session {}",
                libc::tcgetsid(tty)
            ));
        }
    }
    // The pong goes out through the dup: it is the same open file.
    ping_pong(master, tty, dup)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: criu-victim-devtty OUT READY");
        std::process::exit(2);
    }
    let (out, ready) = (&args[1], &args[2]);
    let (master, _slave) = session_with_pty();
    // SAFETY: open with a NUL-terminated literal path, and dup of the result.
    let (tty, dup) = unsafe {
        let t = libc::open(c"/dev/tty".as_ptr(), libc::O_RDWR);
        assert!(t >= 0, "open /dev/tty: {}", std::io::Error::last_os_error());
        (t, libc::dup(t))
    };
    take_check_signal();
    publish(ready, &format!("ready {}", std::process::id()));
    serve_checks(out, || check(master, tty, dup))
}
