//! What inet sock_diag tells and no socket option does: the shut-down state of a UDP or
//! UDP-Lite socket (`INET_DIAG_SHUTDOWN`), as CRIU reads it. One dump per network namespace,
//! family and protocol (never one query per socket), asked from inside the socket's own
//! network namespace (`SIOCGSKNS`; a thread of criu enters it for the request).
// Unsafe code: the SIOCGSKNS ioctl and setns(2) on a thread of its own.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use super::super::sockdiag::{self, DiagError};

/// `SIOCGSKNS` (linux/sockios.h): a descriptor of the socket's network namespace.
const SIOCGSKNS: libc::c_ulong = 0x894C;
/// `INET_DIAG_SHUTDOWN` (linux/inet_diag.h).
const INET_DIAG_SHUTDOWN: u16 = 8;
/// Size of `struct inet_diag_msg`, whose inode is at 68.
const MSG_LEN: usize = 72;

/// `sk_shutdown` of every socket of one (namespace, family, protocol), by inode.
type Table = HashMap<u32, u8>;

/// The dumps made so far: (namespace inode, family, protocol).
#[derive(Debug, Default)]
pub(super) struct ShutdownCache {
    tables: HashMap<(u64, i32, i32), Table>,
}

/// The socket's network namespace (its inode, a descriptor of it).
fn netns_of(sk: BorrowedFd<'_>, pid: i32) -> Option<(u64, OwnedFd)> {
    // SAFETY: SIOCGSKNS takes no argument and returns a new descriptor.
    let r = unsafe { libc::ioctl(sk.as_raw_fd(), SIOCGSKNS as _) };
    let fd = if r >= 0 {
        // SAFETY: r is a new descriptor owned by nothing else.
        unsafe { OwnedFd::from_raw_fd(r) }
    } else {
        std::fs::File::open(format!("/proc/{pid}/ns/net"))
            .ok()?
            .into()
    };
    let ino = std::fs::File::from(fd.try_clone().ok()?)
        .metadata()
        .ok()?
        .ino();
    Some((ino, fd))
}

/// `inet_diag_req_v2` asking for every socket of `family` and `proto` in any state.
fn request(family: i32, proto: i32) -> Vec<u8> {
    let mut req = vec![family as u8, proto as u8, 0, 0];
    req.extend_from_slice(&u32::MAX.to_ne_bytes());
    req.extend_from_slice(&[0u8; 48]); // inet_diag_sockid: any
    req
}

fn parse(msgs: &[Vec<u8>]) -> Result<Table, DiagError> {
    const F: &str = "inet";
    let mut out = Table::new();
    for m in msgs {
        let ino = m
            .get(68..72)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_ne_bytes)
            .ok_or(DiagError::Malformed {
                family: F,
                what: "short inet_diag_msg",
            })?;
        let mut shut = 0;
        for (ty, v) in sockdiag::attrs(F, m, MSG_LEN)? {
            if ty == INET_DIAG_SHUTDOWN {
                shut = v.first().copied().unwrap_or(0) & 3;
            }
        }
        out.insert(ino, shut);
    }
    Ok(out)
}

/// One dump in the namespace `ns` (entered on a thread of its own unless it is criu's).
fn dump_in(ns: &OwnedFd, ino: u64, family: i32, proto: i32) -> Result<Table, DiagError> {
    let req = request(family, proto);
    let own = std::fs::metadata("/proc/thread-self/ns/net").map(|m| m.ino());
    if own.ok() == Some(ino) {
        return parse(&sockdiag::dump("inet", &req)?);
    }
    let ns = ns.as_fd();
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns changes only this thread's network namespace; the thread ends
            // right after the request.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
                return Err(DiagError::Sys {
                    what: "setns",
                    family: "inet",
                    source: std::io::Error::last_os_error(),
                });
            }
            parse(&sockdiag::dump("inet", &req)?)
        })
        .join()
        .unwrap_or(Err(DiagError::Malformed {
            family: "inet",
            what: "the request thread panicked",
        }))
    })
}

impl ShutdownCache {
    /// `sk_shutdown` of socket `ino` (criu's copy `sk`, of process `pid`), family `family`,
    /// protocol `proto` (1: no more receiving, 2: no more sending); `None` when sock_diag
    /// cannot tell (no `udp_diag` in this kernel: logged).
    pub(super) fn get(
        &mut self,
        sk: BorrowedFd<'_>,
        pid: i32,
        ino: u32,
        family: i32,
        proto: i32,
    ) -> Option<u8> {
        let (ns_ino, ns) = netns_of(sk, pid)?;
        let key = (ns_ino, family, proto);
        if !self.tables.contains_key(&key) {
            let t = dump_in(&ns, ns_ino, family, proto).unwrap_or_else(|e| {
                tracing::warn!("shut-down state of inet sockets not read: {e}");
                Table::new()
            });
            self.tables.insert(key, t);
        }
        self.tables.get(&key)?.get(&ino).copied()
    }
}
