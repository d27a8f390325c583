//! Netlink sockets (`AF_NETLINK`: route, uevent, generic, ...), both sides.
//!
//! Dump: protocol, state, bound port id, connected port and group, multicast groups (from one
//! netlink_diag dump per criu dump), options, file flags, as CRIU's `netlink_sk_entry`. The
//! receive queue is dropped, as CRIU does (messages from the kernel that were not read yet:
//! the program asks again); criu says so at `-v3` when data was waiting.
//!
//! Restore: a socket of the protocol, bound to the same port id (a port id another socket
//! took fails the restore, naming it), joined to the same groups, connected as before.
// Unsafe code: makes and binds netlink sockets with a raw sockaddr_nl and adopts their descriptors.
#![allow(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use criu_images::names;
use criu_images::pb::NetlinkSkEntry;

use super::common::diag_of;
use super::sockdiag::{self, NetlinkDiag};
use super::socket::{self, DumpSock, SockAt, SocketError, sys};

/// The netlink sockets met by one dump.
#[derive(Debug, Default)]
pub struct NetlinkDump {
    diag: Option<HashMap<u32, NetlinkDiag>>,
}

/// Whether something waits in the receive queue of `sk` (peeked, nothing taken).
fn has_data(sk: RawFd) -> bool {
    let mut b = [0u8; 1];
    // SAFETY: recv peeks at most one byte into a live local.
    let n = unsafe {
        libc::recv(
            sk,
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT | libc::MSG_TRUNC,
        )
    };
    n >= 0
}

/// Whether the netlink socket `sk` has no port id yet (never bound).
fn unbound(sk: RawFd) -> bool {
    let mut a = nl_addr(0, 0);
    let mut len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    // SAFETY: getsockname writes at most `len` bytes into a live sockaddr_nl.
    let r = unsafe { libc::getsockname(sk, (&mut a as *mut libc::sockaddr_nl).cast(), &mut len) };
    r == 0 && a.nl_pid == 0
}

impl NetlinkDump {
    /// Dumps the netlink socket `s` (criu's copy `s.sk` of the task's descriptor `s.at`) as
    /// file `s.id`.
    ///
    /// # Errors
    /// [`SocketError`] naming the socket.
    pub fn add(&mut self, s: &DumpSock<'_>) -> Result<NetlinkSkEntry, SocketError> {
        let DumpSock { at, sk, flags, id } = *s;
        let SockAt { pid, fd, ino } = at;
        let d = match diag_of(&mut self.diag, sockdiag::netlink_sockets, at, "netlink") {
            Ok(d) => d,
            // netlink_diag lists bound sockets only: one never bound (nor sent on, which
            // binds) is dumped with its protocol alone, as CRIU does.
            Err(SocketError::NotInDiag { .. }) if unbound(sk.as_raw_fd()) => NetlinkDiag {
                protocol: socket::get_int(sk.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PROTOCOL)
                    .map_err(|source| SocketError::Sys {
                        what: format!("SO_PROTOCOL of {at}"),
                        source,
                    })? as u8,
                ..NetlinkDiag::default()
            },
            Err(e) => return Err(e),
        };
        let w = at.to_string();
        if has_data(sk.as_raw_fd()) {
            tracing::info!(
                pid,
                fd,
                protocol = d.protocol,
                "netlink socket {ino}: unread messages in its receive queue are dropped (as CRIU does)"
            );
        }
        Ok(NetlinkSkEntry {
            id,
            ino,
            protocol: u32::from(d.protocol),
            state: u32::from(d.state),
            flags: flags & !(libc::O_CLOEXEC as u32),
            portid: d.portid,
            groups: d.groups.clone(),
            dst_portid: d.dst_portid,
            dst_group: d.dst_group,
            fown: socket::read_fown(sk.as_raw_fd()),
            opts: socket::read_opts(sk.as_raw_fd(), &w)?,
            ns_id: None,
        })
    }
}

/// Checks netlink entries before anything is created.
///
/// # Errors
/// [`SocketError::BadImage`].
pub fn check(entries: &[NetlinkSkEntry]) -> Result<(), SocketError> {
    for e in entries {
        if e.protocol > 31 || e.groups.len() > 1024 {
            return Err(SocketError::BadImage {
                file: names::FILES.into(),
                reason: format!(
                    "netlink socket id {}: protocol {} or groups",
                    e.id, e.protocol
                ),
            });
        }
    }
    Ok(())
}

fn nl_addr(pid: u32, groups: u32) -> libc::sockaddr_nl {
    // SAFETY: a zeroed sockaddr_nl is a valid value.
    let mut a: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    a.nl_family = libc::AF_NETLINK as u16;
    a.nl_pid = pid;
    a.nl_groups = groups;
    a
}

/// Creates the netlink sockets of `entries` held by a task (`wanted` file ids), numbered `min`
/// or above.
///
/// # Errors
/// [`SocketError`] naming the socket (a port id that cannot be bound again is named).
pub fn create_all(
    entries: &[NetlinkSkEntry],
    wanted: &HashSet<u32>,
    min: i32,
) -> Result<HashMap<u32, OwnedFd>, SocketError> {
    let mut out = HashMap::new();
    for e in entries.iter().filter(|e| wanted.contains(&e.id)) {
        // SAFETY: socket() takes no pointers; the result is checked and owned.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                e.protocol as i32,
            )
        };
        if fd < 0 {
            return Err(sys(format!(
                "creating netlink socket id {} (protocol {})",
                e.id, e.protocol
            )));
        }
        // SAFETY: fd was just created and is owned by nothing else.
        let s = unsafe { OwnedFd::from_raw_fd(fd) };
        let who = format!("netlink socket id {}", e.id);
        socket::write_opts(s.as_raw_fd(), &e.opts, &who)?;
        if e.portid != 0 {
            let a = nl_addr(e.portid, 0);
            // SAFETY: bind reads a live sockaddr_nl of the size given.
            let r = unsafe {
                libc::bind(
                    s.as_raw_fd(),
                    (&a as *const libc::sockaddr_nl).cast(),
                    std::mem::size_of::<libc::sockaddr_nl>() as u32,
                )
            };
            if r < 0 {
                return Err(sys(format!(
                    "binding {who} to port id {} (protocol {})",
                    e.portid, e.protocol
                )));
            }
        }
        for (w, bits) in e.groups.iter().enumerate() {
            for b in 0..32 {
                if bits & (1 << b) != 0 {
                    let g = (w * 32 + b + 1) as i32;
                    socket::set_int(
                        s.as_raw_fd(),
                        libc::SOL_NETLINK,
                        libc::NETLINK_ADD_MEMBERSHIP,
                        g,
                    )
                    .map_err(|source| SocketError::Sys {
                        what: format!("joining group {g} with {who}"),
                        source,
                    })?;
                }
            }
        }
        if e.dst_portid != 0 || e.dst_group != 0 {
            let a = nl_addr(e.dst_portid, e.dst_group);
            // SAFETY: connect reads a live sockaddr_nl of the size given.
            let r = unsafe {
                libc::connect(
                    s.as_raw_fd(),
                    (&a as *const libc::sockaddr_nl).cast(),
                    std::mem::size_of::<libc::sockaddr_nl>() as u32,
                )
            };
            if r < 0 {
                return Err(sys(format!("connecting {who}")));
            }
        }
        let fl = e.flags as i32 & (libc::O_NONBLOCK | libc::O_ASYNC);
        // SAFETY: fcntl on a socket we own.
        if fl != 0 && unsafe { libc::fcntl(s.as_raw_fd(), libc::F_SETFL, fl) } < 0 {
            return Err(sys(format!("setting the flags of {who}")));
        }
        out.insert(e.id, socket::move_up(s, min)?);
    }
    Ok(out)
}
