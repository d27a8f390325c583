//! The lazy-pages daemon's watchdog, for when the daemon dies.
//!
//! When the daemon dies the kernel drops the userfaultfd registrations, and the tasks would
//! read zero pages where their data was. So before it takes any descriptor the daemon forks a
//! watchdog that holds a copy of each; when the daemon's end of their socket closes without the word that all is
//! in, the watchdog kills (`SIGKILL`) every task it was given and all their descendants,
//! waits until they are gone (5 s at most) and only then lets go of the descriptors. A thread
//! waiting on a fault is woken by the kill. The same happens when the daemon fails (a page
//! server that went away, an image that cannot be read): it says why in its log and exits
//! with an error.

// Unsafe code: socketpair, fork, setsid, kill and poll.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::recv::recv_fd_byte;
use super::{LazyError, io_err};

/// Forks the watchdog (see the module docs); returns the daemon's end of its socket
/// (`SOCK_SEQPACKET`). Messages: a descriptor with the `i32` pid to kill (0: none) as
/// its data, or the one byte `D` (done: let go without killing).
pub(super) fn spawn() -> Result<(OwnedFd, i32), LazyError> {
    let mut sv = [0i32; 2];
    // SAFETY: socketpair writes two descriptors into our array.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            sv.as_mut_ptr(),
        )
    } != 0
    {
        return Err(io_err("make the watchdog's socket")(
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: both descriptors were just made for us.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) };
    // SAFETY: the daemon is single-threaded here; the child only runs `watchdog` and exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io_err("fork the watchdog")(std::io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(ours);
        watchdog(theirs);
    }
    drop(theirs);
    Ok((ours, pid))
}

fn watchdog(sock: OwnedFd) -> ! {
    // Not stopped by a terminal's ^C meant for the daemon alone.
    // SAFETY: setsid takes no arguments.
    unsafe { libc::setsid() };
    let mut held: Vec<OwnedFd> = Vec::new();
    let mut pids: Vec<i32> = Vec::new();
    let done = loop {
        match recv_fd_byte(sock.as_raw_fd()) {
            Ok((fd, pid)) => {
                held.push(fd);
                if pid > 0 {
                    pids.push(pid);
                }
            }
            Err(Some(b'D')) => break true,
            Err(_) => break false,
        }
    };
    if !done && !pids.is_empty() {
        tracing::error!(
            ?pids,
            "the lazy-pages daemon is gone before all pages were in: killing the restored tasks"
        );
        // Each task still there and its descendants, parents first.
        let mut all: Vec<i32> = Vec::new();
        for &p in &pids {
            if !std::path::Path::new(&format!("/proc/{p}")).exists() {
                continue;
            }
            for q in crate::cgroups::tree_pids(p) {
                if !all.contains(&q) {
                    all.push(q);
                }
            }
        }
        let fds: Vec<OwnedFd> = all
            .iter()
            .filter_map(|&p| crate::pidfd::open(p).ok())
            .collect();
        for &p in &all {
            // SAFETY: kill takes plain values.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        for fd in &fds {
            let mut pfd = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: polls one live pollfd of a pidfd of ours.
            unsafe { libc::poll(&raw mut pfd, 1, 5000) };
        }
    }
    drop(held);
    std::process::exit(0);
}
