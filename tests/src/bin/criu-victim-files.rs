//! criu test victim: open files at known offsets and flags.
//!
//! `criu-victim-files DIR READY` creates in DIR and keeps open:
//!
//! - fd 10: `a` (`0123456789`) read-only at offset 3;
//! - fd 11: `b` write-only with `O_APPEND` after writing `abc`;
//! - fd 12: `c` read-write at offset 5, and fd 13 a `dup` of it (same open file);
//! - fd 14: DIR itself (`O_DIRECTORY`);
//! - fd 15: `/dev/null` read-write;
//! - fd 16: `gone`, holding `ghost data 42`, unlinked while open, at offset 2;
//! - fd 17: `a` again, read-only with `O_CLOEXEC`, at offset 0;
//!
//! writes `ready PID` into READY and waits (polling, every 10 ms). On `SIGUSR1` it checks offsets, flags and the
//! deleted file's contents and writes `check ok` (or `check bad FD...`) into READY.2.

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, Ordering};

static CHECK: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    CHECK.store(true, Ordering::SeqCst);
}

fn open_at(path: &str, flags: i32, fd: i32) {
    let c = CString::new(path).expect("path");
    // SAFETY: open/dup2/close on descriptors this program owns.
    unsafe {
        let f = libc::open(c.as_ptr(), flags, 0o644);
        assert!(f >= 0, "open {path}: {}", std::io::Error::last_os_error());
        if f != fd {
            // dup3 keeps close-on-exec (dup2 would drop it).
            libc::dup3(f, fd, flags & libc::O_CLOEXEC);
            libc::close(f);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(ready)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: criu-victim-files DIR READY");
        std::process::exit(2);
    };
    std::fs::write(format!("{dir}/a"), "0123456789").unwrap();
    std::fs::write(format!("{dir}/b"), "").unwrap();
    std::fs::write(format!("{dir}/c"), "hello world").unwrap();
    std::fs::write(format!("{dir}/gone"), "ghost data 42").unwrap();
    open_at(&format!("{dir}/a"), libc::O_RDONLY, 10);
    open_at(&format!("{dir}/b"), libc::O_WRONLY | libc::O_APPEND, 11);
    open_at(&format!("{dir}/c"), libc::O_RDWR, 12);
    open_at(dir, libc::O_RDONLY | libc::O_DIRECTORY, 14);
    open_at("/dev/null", libc::O_RDWR, 15);
    open_at(&format!("{dir}/gone"), libc::O_RDWR, 16);
    open_at(&format!("{dir}/a"), libc::O_RDONLY | libc::O_CLOEXEC, 17);
    // SAFETY: plain calls on our descriptors.
    unsafe {
        libc::lseek(10, 3, libc::SEEK_SET);
        libc::write(11, b"abc".as_ptr() as *const libc::c_void, 3);
        libc::lseek(12, 5, libc::SEEK_SET);
        libc::dup2(12, 13);
        libc::lseek(16, 2, libc::SEEK_SET);
        libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t);
    }
    std::fs::remove_file(format!("{dir}/gone")).unwrap();
    let tmp = format!("{ready}.tmp");
    std::fs::write(&tmp, format!("ready {}", std::process::id())).unwrap();
    std::fs::rename(&tmp, ready).unwrap();
    loop {
        // Poll the flag (a pause() loop could miss a signal that lands just before it).
        std::thread::sleep(std::time::Duration::from_millis(10));
        if CHECK.swap(false, Ordering::SeqCst) {
            let mut bad = Vec::new();
            // SAFETY: queries on our own descriptors into owned buffers.
            unsafe {
                let pos = |fd| libc::lseek(fd, 0, libc::SEEK_CUR);
                let fl = |fd| libc::fcntl(fd, libc::F_GETFL) & !0o100000; // the kernel's O_LARGEFILE
                if pos(10) != 3 || fl(10) & libc::O_ACCMODE != libc::O_RDONLY {
                    bad.push("10");
                }
                if pos(11) != 3 || fl(11) != libc::O_WRONLY | libc::O_APPEND {
                    bad.push("11");
                }
                if pos(12) != 5 || fl(12) & libc::O_ACCMODE != libc::O_RDWR {
                    bad.push("12");
                }
                // 13 shares 12's offset.
                libc::lseek(13, 6, libc::SEEK_SET);
                if pos(12) != 6 {
                    bad.push("13");
                }
                libc::lseek(12, 5, libc::SEEK_SET);
                if fl(14) & libc::O_DIRECTORY == 0 {
                    bad.push("14");
                }
                if fl(15) & libc::O_ACCMODE != libc::O_RDWR {
                    bad.push("15");
                }
                let mut buf = [0u8; 32];
                let n = libc::pread(16, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0);
                if n != 13 || &buf[..13] != b"ghost data 42" || pos(16) != 2 {
                    bad.push("16");
                }
                if libc::fcntl(17, libc::F_GETFD) & libc::FD_CLOEXEC == 0
                    || libc::fcntl(10, libc::F_GETFD) & libc::FD_CLOEXEC != 0
                {
                    bad.push("17");
                }
            }
            let msg = if bad.is_empty() {
                "check ok".to_string()
            } else {
                format!("check bad {}", bad.join(" "))
            };
            std::fs::write(format!("{ready}.2"), msg).unwrap();
        }
    }
}
