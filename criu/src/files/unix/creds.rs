//! Queued messages that carry their sender's credentials (`SCM_CREDENTIALS`, seen by a
//! receiver with `SO_PASSCRED`), sent again with the same pid, uid and gid.
//!
//! CRIU 4.2 drops them (its `sk_packet_entry` only reserves a field): the receiver then reads
//! criu's own credentials. Here the dump keeps them in an entry of ours (`ucred`, field 1001,
//! which CRIU's readers skip), and the restore sends each such message with them. criu (root)
//! may name any uid and gid, and any pid that exists; a pid that does not exist yet (a task of
//! the tree, made after the sockets, or a sender that exited) is borrowed for the send: a
//! short-lived child made with that pid (`clone3` with `set_tid`) sends the message with its
//! own pid and exits. The receiver later reads the number, as it did before the dump.

// Unsafe code: sendmsg with control messages built by hand, kill(pid, 0), and a fork-like
// clone3 whose child only makes raw system calls.
#![allow(unsafe_code)]

use std::os::fd::RawFd;

use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::files::socket::SocketError;
use crate::restore::child::{CloneArgs, fork3};

/// A message's credentials: pid, uid, gid (as the receiver saw them).
pub type Ucred = (i32, u32, u32);

/// Sends all of `m` on `fd` (to `addr` if given) with `rights` in flight with its first
/// bytes and `cred` with every part of it. Makes no allocation (it runs in a forked child).
/// Returns 0 or the errno.
fn send_all_raw(
    fd: RawFd,
    m: &[u8],
    rights: &[RawFd],
    cred: libc::ucred,
    addr: Option<&(libc::sockaddr_un, libc::socklen_t)>,
) -> i32 {
    let mut at = 0;
    let mut first = true;
    loop {
        let mut ctl = [0u64; 160];
        let rest = &m[at..];
        let mut iov = libc::iovec {
            iov_base: rest.as_ptr() as *mut libc::c_void,
            iov_len: rest.len(),
        };
        let nr = if first { rights.len() } else { 0 };
        // SAFETY: a zeroed msghdr is valid; every pointer set below is live for the call; the
        // control buffer (1280 bytes) holds one ucred and at most 253 descriptors, each with
        // its header, as the caller checked; CMSG_* stay within msg_controllen.
        let n = unsafe {
            let mut mh: libc::msghdr = std::mem::zeroed();
            mh.msg_iov = &mut iov;
            mh.msg_iovlen = 1;
            if let Some((a, len)) = addr {
                mh.msg_name = (a as *const libc::sockaddr_un).cast_mut().cast();
                mh.msg_namelen = *len;
            }
            mh.msg_control = ctl.as_mut_ptr().cast();
            let cred_len = std::mem::size_of::<libc::ucred>() as u32;
            mh.msg_controllen = libc::CMSG_SPACE(cred_len) as usize
                + if nr > 0 {
                    libc::CMSG_SPACE(4 * nr as u32) as usize
                } else {
                    0
                };
            let c = libc::CMSG_FIRSTHDR(&mh);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_CREDENTIALS;
            (*c).cmsg_len = libc::CMSG_LEN(cred_len) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut libc::ucred, cred);
            if nr > 0 {
                let c = libc::CMSG_NXTHDR(&mh, c);
                (*c).cmsg_level = libc::SOL_SOCKET;
                (*c).cmsg_type = libc::SCM_RIGHTS;
                (*c).cmsg_len = libc::CMSG_LEN(4 * nr as u32) as usize;
                let data = libc::CMSG_DATA(c) as *mut i32;
                for (k, &r) in rights.iter().enumerate() {
                    std::ptr::write_unaligned(data.add(k), r);
                }
            }
            libc::sendmsg(fd, &mh, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
        };
        if n < 0 {
            // SAFETY: errno is thread-local and just set by sendmsg.
            return unsafe { *libc::__errno_location() };
        }
        first = false;
        at += n as usize;
        if at >= m.len() {
            return 0;
        }
    }
}

/// Whether a process or thread `pid` exists (in criu's pid namespace).
fn exists(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks.
    unsafe { libc::kill(pid, 0) == 0 || *libc::__errno_location() == libc::EPERM }
}

/// Sends `m` on `fd` (to `addr`) with `rights` and the credentials `cred`. `what` names the
/// receiving socket in errors.
///
/// # Errors
/// [`SocketError::Sys`] when the send (or the child that borrows the pid) fails.
pub fn send(
    fd: RawFd,
    m: &[u8],
    rights: &[RawFd],
    (pid, uid, gid): Ucred,
    addr: Option<&(libc::sockaddr_un, libc::socklen_t)>,
    what: &str,
) -> Result<(), SocketError> {
    if rights.len() > 253 {
        return Err(SocketError::BadImage {
            file: criu_images::names::SK_QUEUES.into(),
            reason: format!("{what}: {} files in flight with one message", rights.len()),
        });
    }
    let fail = |errno: i32, how: &str| SocketError::Sys {
        what: format!("refilling the queue of {what} (a message from pid {pid} {how})"),
        source: std::io::Error::from_raw_os_error(errno),
    };
    let cred = libc::ucred { pid, uid, gid };
    if pid <= 0 || exists(pid) {
        // A pid that exists (or none to give: the sender was in a pid namespace the receiver
        // does not see, and the kernel refuses 0; criu's own pid is sent then).
        let cred = if pid <= 0 {
            tracing::debug!(what, "queued credentials without a pid: criu's pid sent");
            libc::ucred {
                pid: std::process::id() as i32,
                uid,
                gid,
            }
        } else {
            cred
        };
        return match send_all_raw(fd, m, rights, cred, addr) {
            0 => Ok(()),
            e => Err(fail(e, "with its credentials")),
        };
    }
    tracing::debug!(what, pid, "queued credentials: pid borrowed for the send");
    let tid = [pid];
    let args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: tid.as_ptr() as u64,
        set_tid_size: 1,
        ..Default::default()
    };
    let r = fork3(&args);
    if r == 0 {
        // The child: raw system calls only, then _exit with the errno.
        let e = send_all_raw(fd, m, rights, cred, addr);
        // SAFETY: _exit ends this forked child at once, running nothing of the parent's.
        unsafe { libc::_exit(e & 0xff) };
    }
    if r < 0 {
        return Err(fail(
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            "(making a child with that pid)",
        ));
    }
    sent_by(r as i32, "sender", fail)
}

/// Sends `m` on `fd` (to `addr`) with `rights` and credentials naming pid `pid` of the pid
/// namespace whose init is `init` (its pid as criu sees it), when no task of that namespace
/// has the pid (a sender that exited before the dump): a helper joins the namespace for its
/// children (`setns`) and makes one there with that pid (`clone3` with `set_tid`), which
/// sends the message and exits. The receiver then reads `pid`, as it did before the dump.
///
/// # Errors
/// [`SocketError::Sys`] when the namespace cannot be joined, the pid cannot be taken or the
/// send fails.
pub fn send_in_ns(
    init: i32,
    fd: RawFd,
    m: &[u8],
    rights: &[RawFd],
    (pid, uid, gid): Ucred,
    addr: Option<&(libc::sockaddr_un, libc::socklen_t)>,
    what: &str,
) -> Result<(), SocketError> {
    let fail = |errno: i32, how: &str| SocketError::Sys {
        what: format!(
            "refilling the queue of {what} (a message from pid {pid} of the tree's pid namespace {how})"
        ),
        source: std::io::Error::from_raw_os_error(errno),
    };
    // SAFETY: pidfd_open takes no pointers; the result is checked.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, init, 0) } as i32;
    if pidfd < 0 {
        return Err(fail(
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            "(opening its init)",
        ));
    }
    let cred = libc::ucred { pid, uid, gid };
    let tid = [pid];
    let args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: tid.as_ptr() as u64,
        set_tid_size: 1,
        ..Default::default()
    };
    let helper = fork3(&CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    });
    if helper == 0 {
        // The helper: raw system calls only. Its children go into the tree's namespace.
        // SAFETY: setns, clone3, waitpid and _exit with live arguments; the sender child
        // runs only send_all_raw (raw system calls) and _exit.
        unsafe {
            if libc::setns(pidfd, libc::CLONE_NEWPID) < 0 {
                libc::_exit(*libc::__errno_location() & 0xff);
            }
            let r = fork3(&args);
            if r == 0 {
                let e = send_all_raw(fd, m, rights, cred, addr);
                libc::_exit(e & 0xff);
            }
            if r < 0 {
                libc::_exit(*libc::__errno_location() & 0xff);
            }
            let mut st = 0;
            if libc::waitpid(r as i32, &mut st, 0) != r as i32 || !libc::WIFEXITED(st) {
                libc::_exit(libc::ECHILD);
            }
            libc::_exit(libc::WEXITSTATUS(st));
        }
    }
    // SAFETY: closing the pidfd we opened (the helper has its own copy).
    unsafe { libc::close(pidfd) };
    if helper < 0 {
        return Err(fail(
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            "(making a helper)",
        ));
    }
    sent_by(helper as i32, "helper", fail)
}

/// Waits for the child `pid` (`who`: "sender" or "helper") that sent a queued message: its
/// exit status is the errno of the send (0: sent).
fn sent_by(
    pid: i32,
    who: &str,
    fail: impl Fn(i32, &str) -> SocketError,
) -> Result<(), SocketError> {
    match waitpid(Pid::from_raw(pid), None) {
        Ok(WaitStatus::Exited(_, 0)) => Ok(()),
        Ok(WaitStatus::Exited(_, e)) => Err(fail(e, "(sent by a child with that pid)")),
        Ok(other) => Err(fail(libc::ECHILD, &format!("(its {who} ended: {other:?})"))),
        Err(e) => Err(fail(e as i32, &format!("(waiting for its {who})"))),
    }
}
