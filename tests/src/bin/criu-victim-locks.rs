//! criu restore victim: a process holding one file lock of each kind.
//!
//! `criu-victim-locks DIR READY` creates `DIR/a`, `DIR/b` and `DIR/c` (64 bytes each), then
//! holds an exclusive flock on `a` (fd 3), a POSIX write lock on bytes 10..30 of `b` (fd 4; fd 5
//! is `b` again, read-only: closing it would drop the process's lock), and an OFD read
//! lock on all of `c` (fd 6). Then it forks a child that inherits the descriptors (and so shares
//! the flock and the OFD lock, not the POSIX lock) and sleeps. It writes `ready PID CHILD` into
//! READY and sleeps.

use std::os::fd::AsRawFd;

fn lock(fd: i32, cmd: i32, ltype: i32, start: i64, len: i64) {
    // SAFETY: a zeroed struct flock is valid; fcntl reads the one filled in here.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = ltype as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start;
    fl.l_len = len;
    // SAFETY: fcntl on our own descriptor with a live struct.
    let r = unsafe { libc::fcntl(fd, cmd, &fl) };
    assert_eq!(r, 0, "fcntl {cmd}: {}", std::io::Error::last_os_error());
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(ready)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: criu-victim-locks DIR READY");
        std::process::exit(2);
    };
    let open = |name: &str, write: bool| {
        let p = std::path::Path::new(dir).join(name);
        if !p.exists() {
            std::fs::write(&p, [7u8; 64]).expect("create");
        }
        std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .open(p)
            .expect("open")
    };
    let a = open("a", true);
    let b = open("b", true);
    let b2 = open("b", false);
    let c = open("c", true);
    assert_eq!(
        [a.as_raw_fd(), b.as_raw_fd(), b2.as_raw_fd(), c.as_raw_fd()],
        [3, 4, 5, 6],
        "descriptor numbers"
    );
    // SAFETY: flock on our own descriptor.
    let r = unsafe { libc::flock(a.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    assert_eq!(r, 0, "flock");
    lock(b.as_raw_fd(), libc::F_SETLK, libc::F_WRLCK, 10, 20);
    const F_OFD_SETLK: i32 = 37;
    lock(c.as_raw_fd(), F_OFD_SETLK, libc::F_RDLCK, 0, 0);
    // SAFETY: the child only sleeps (pause) until it is killed; nothing else runs in it.
    let child = unsafe { libc::fork() };
    if child == 0 {
        loop {
            // SAFETY: pause has no arguments.
            unsafe { libc::pause() };
        }
    }
    assert!(child > 0, "fork");
    std::fs::write(ready, format!("ready {} {child}", std::process::id())).expect("ready");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1000));
    }
}
