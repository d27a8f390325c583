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

/// Collects the exits of killed tracees `tids` (threads and leaders of processes this process
/// traces), until each is collected or `deadline` passes.
///
/// A tracee woken by SIGKILL has left its ptrace-stop, so `PTRACE_DETACH` fails and the trace
/// link stays until the tracer waits for the exit: until then the real parent cannot reap it
/// (and the init of a pid namespace, which reaps every task of the namespace before it ends,
/// waits for it). The leaders of our own children are left to their waiting parent (us).
pub(crate) fn collect_killed_tracees(tids: &[i32], deadline: Instant) {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let me = std::process::id().to_string();
    // Only a leader (Tgid == its tid) can be our child; a thread's PPid is its process's.
    let ours = |tid: i32| {
        let s = std::fs::read_to_string(format!("/proc/{tid}/status")).unwrap_or_default();
        let field = |name: &str| {
            s.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
        };
        field("PPid:").as_deref() == Some(me.as_str())
            && field("Tgid:").as_deref() == Some(tid.to_string().as_str())
    };
    let mut pending: Vec<i32> = tids.iter().copied().filter(|&t| !ours(t)).collect();
    let flags = WaitPidFlag::__WALL | WaitPidFlag::WNOHANG;
    while !pending.is_empty() {
        pending.retain(|&tid| {
            match waitpid(nix::unistd::Pid::from_raw(tid), Some(flags)) {
                // Not yet (a leader's exit waits for its threads').
                Ok(WaitStatus::StillAlive) => true,
                Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => false,
                // A stop on the way out (none is asked for): let it go on.
                Ok(_) => {
                    let _ = nix::sys::ptrace::cont(nix::unistd::Pid::from_raw(tid), None);
                    true
                }
                // ECHILD: detached after all, or collected already.
                Err(_) => false,
            }
        });
        if pending.is_empty() || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    if !pending.is_empty() {
        tracing::warn!(?pending, "killed tracees not collected");
    }
}
