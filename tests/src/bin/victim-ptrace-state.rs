//! Victim: holds the per-thread state compel's ptrace queries read, and says what it holds.
//!
//! `victim-ptrace-state [seccomp]`: blocks SIGUSR1 and SIGUSR2 (so signals sent to it stay
//! queued), with `seccomp` installs one allow-everything seccomp filter with
//! `SECCOMP_FILTER_FLAG_LOG`, then prints `ready PID RSEQ` (RSEQ: the address of the `struct
//! rseq` glibc registered for the main thread, in hex, 0 if none) and echoes each stdin line
//! as `got LINE`. Exits 0 at end of input.

use std::io::{BufRead, Write};

unsafe extern "C" {
    static __rseq_offset: isize;
    static __rseq_size: u32;
}

/// `BPF_RET | BPF_K` returning `SECCOMP_RET_ALLOW`.
const ALLOW: [u8; 8] = [0x06, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0x7f];

fn main() {
    // SAFETY: a live sigset manipulated and installed as this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        assert_eq!(
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()),
            0
        );
    }
    if std::env::args().nth(1).as_deref() == Some("seccomp") {
        let prog = libc::sock_fprog {
            len: 1,
            filter: ALLOW.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: no_new_privs then one filter program that lives for the call.
        unsafe {
            assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
            assert_eq!(
                libc::syscall(
                    libc::SYS_seccomp,
                    1, // SECCOMP_SET_MODE_FILTER
                    2, // SECCOMP_FILTER_FLAG_LOG
                    &prog as *const libc::sock_fprog,
                ),
                0
            );
        }
    }
    // SAFETY: glibc defines both symbols; the thread pointer is the address pthread_self
    // returns on x86_64 glibc, and the rseq area lies at `__rseq_offset` from it.
    let rseq = unsafe {
        if __rseq_size > 0 {
            (libc::pthread_self() as usize).wrapping_add_signed(__rseq_offset)
        } else {
            0
        }
    };
    let mut out = std::io::stdout();
    writeln!(out, "ready {} {rseq:x}", std::process::id()).unwrap();
    out.flush().unwrap();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        writeln!(out, "got {line}").unwrap();
        out.flush().unwrap();
    }
}
