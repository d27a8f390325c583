//! Process descriptors: pinning a process by pid and waiting for it to end.
// Unsafe code: the pidfd_open and poll system calls.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;

/// A pidfd for `pid` (close-on-exec).
///
/// # Errors
/// The kernel's: `ESRCH` when there is no such process.
pub(crate) fn open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes integers only; it returns a new close-on-exec descriptor.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just made and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// Waits until the process of `pidfd` has ended (its pidfd polls readable then: it is a
/// zombie or gone) or `deadline` passes; says whether it ended.
pub(crate) fn wait_exit(pidfd: &OwnedFd, deadline: Instant) -> bool {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut p = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll reads and writes one live pollfd for at most `left`.
        let n = unsafe { libc::poll(&mut p, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if n > 0 {
            return true;
        }
        if n == 0 || left.is_zero() {
            return false;
        }
        // EINTR: poll again until the deadline.
    }
}

/// Whether the process of `pidfd` has already ended.
pub(crate) fn exited(pidfd: &OwnedFd) -> bool {
    wait_exit(pidfd, Instant::now())
}
