//! Queues refilled once the tree exists: those holding messages with the credentials
//! (`SCM_CREDENTIALS`) of a sender in the tree's own pid namespace.
//!
//! The kernel keeps a message's sender as a pid object, named in the sending process's pid
//! namespace and read back in the receiver's. Before the tree's pid namespace exists no pid of
//! it can be named, so a receiver whose queue holds such a message gets its whole queue (in
//! order, with its peek offset) only after every task is born and before any runs: from criu,
//! naming the sender by the pid criu sees for that task, or, for a sender that is no task of
//! the tree (it exited before the dump), from a child made in the namespace with that pid.

// Unsafe code: fcntl(F_DUPFD_CLOEXEC) on descriptors the engine holds.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::files::socket::{self, SocketError, sys};

use super::creds::Ucred;

/// One message of a deferred queue.
#[derive(Debug)]
pub struct Msg {
    /// Its bytes.
    pub data: Vec<u8>,
    /// The files in flight with it (the engine's copies, held until it is sent).
    pub rights: Vec<OwnedFd>,
    /// The sender's credentials, pid as seen inside the tree.
    pub ucred: Option<Ucred>,
    /// The tree's socket bound to the datagram's sender name, when it has one.
    pub sender: Option<OwnedFd>,
}

/// The queue of one receiver, refilled once the tree exists ([`Deferred::refill`]).
#[derive(Debug)]
pub struct Deferred {
    /// The receiver, in messages.
    pub what: String,
    /// The socket that sends the messages (the peer, or one of criu's).
    pub from: OwnedFd,
    /// The receiver's name, when it is sent to by name.
    pub to: Option<Vec<u8>>,
    /// The receiver's name reachable from anywhere (for named senders).
    pub reach: Vec<u8>,
    /// The messages, in order.
    pub msgs: Vec<Msg>,
    /// The receiver (for its peek offset).
    pub receiver: OwnedFd,
    /// `SO_PEEK_OFF` once the queue is back.
    pub peek_off: Option<i32>,
}

/// A copy of `fd`, held by the engine until the queue is refilled.
///
/// # Errors
/// [`SocketError::Sys`].
pub fn dup(fd: RawFd) -> Result<OwnedFd, SocketError> {
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor the engine holds; the result is checked and owned.
    let d = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if d < 0 {
        return Err(sys("holding a unix socket until the tree exists"));
    }
    // SAFETY: d was just made and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(d) })
}

impl Deferred {
    /// Sends every message again, in order: credentials naming `host(pid)` for a task of the
    /// tree, else from a child with that pid made in the namespace whose init criu sees as
    /// `init`; then sets the peek offset.
    ///
    /// # Errors
    /// [`SocketError::Sys`] naming the receiver and the step.
    pub fn refill(&self, host: &dyn Fn(i32) -> Option<i32>, init: i32) -> Result<(), SocketError> {
        for m in &self.msgs {
            let rights: Vec<RawFd> = m.rights.iter().map(AsRawFd::as_raw_fd).collect();
            let (fd, name) = match &m.sender {
                Some(s) => (s.as_raw_fd(), Some(self.reach.as_slice())),
                None => (self.from.as_raw_fd(), self.to.as_deref()),
            };
            match m.ucred {
                Some((pid, uid, gid)) if pid > 0 => {
                    let addr = name.and_then(super::send::sockaddr);
                    match host(pid) {
                        Some(h) => super::creds::send(
                            fd,
                            &m.data,
                            &rights,
                            (h, uid, gid),
                            addr.as_ref(),
                            &self.what,
                        )?,
                        None => super::creds::send_in_ns(
                            init,
                            fd,
                            &m.data,
                            &rights,
                            (pid, uid, gid),
                            addr.as_ref(),
                            &self.what,
                        )?,
                    }
                }
                c => super::send::send_msg(fd, &m.data, &rights, c, name, &self.what)?,
            }
        }
        if let Some(off) = self.peek_off.filter(|&o| o >= 0) {
            socket::set_int(
                self.receiver.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEEK_OFF,
                off,
            )
            .map_err(|source| SocketError::Sys {
                what: format!("setting SO_PEEK_OFF of {}", self.what),
                source,
            })?;
        }
        Ok(())
    }
}
