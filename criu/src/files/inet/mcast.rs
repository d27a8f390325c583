//! Multicast memberships of inet datagram sockets (`IP_ADD_MEMBERSHIP`, `IPV6_JOIN_GROUP`,
//! `MCAST_JOIN_GROUP`), which CRIU does not keep.
//!
//! No socket option lists a socket's groups, so the candidates come from the namespace's
//! tables (`/proc/PID/net/igmp` and `igmp6`: every group some socket or the kernel joined on
//! each interface), and each is asked of the socket with `getsockopt(MCAST_MSFILTER)`, which
//! answers only for a group this socket joined on that interface (`EADDRNOTAVAIL`
//! otherwise). The restore joins each again with `MCAST_JOIN_GROUP`. Source filters
//! (`MCAST_JOIN_SOURCE_GROUP`, `MCAST_BLOCK_SOURCE`) are not kept: such a membership comes back
//! as a plain one (logged).
// Unsafe code: getsockopt/setsockopt with struct group_filter and group_req.
#![allow(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;

use criu_images::pb::IpMcastEntry;

use super::super::socket::{SocketError, sys};

/// linux/in.h.
const MCAST_JOIN_GROUP: i32 = 42;
const MCAST_MSFILTER: i32 = 48;
const MCAST_EXCLUDE: u32 = 0;

/// `struct group_filter` with room for no source: interface, padding, group, mode, count.
#[repr(C)]
struct GroupFilter {
    interface: u32,
    group: libc::sockaddr_storage,
    fmode: u32,
    numsrc: u32,
    slist: [libc::sockaddr_storage; 1],
}

/// `struct group_req`.
#[repr(C)]
struct GroupReq {
    interface: u32,
    group: libc::sockaddr_storage,
}

fn storage(group: IpAddr) -> libc::sockaddr_storage {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match group {
        IpAddr::V4(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            let sin = unsafe {
                &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            sin.sin_family = libc::AF_INET as u16;
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.octets());
        }
        IpAddr::V6(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            let sin6 = unsafe {
                &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            sin6.sin6_family = libc::AF_INET6 as u16;
            sin6.sin6_addr.s6_addr = a.octets();
        }
    }
    ss
}

/// The groups joined on each interface of the namespace of `pid`: (interface index, group).
pub(super) fn candidates(pid: i32, v6: bool) -> Vec<(u32, IpAddr)> {
    let mut out = Vec::new();
    if v6 {
        // `IDX DEV GROUP(32 hex digits) USERS FLAGS TIMER`.
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/igmp6")).unwrap_or_default();
        for l in text.lines() {
            let c: Vec<&str> = l.split_whitespace().collect();
            let (Some(idx), Some(g)) = (c.first().and_then(|i| i.parse().ok()), c.get(2)) else {
                continue;
            };
            let mut b = [0u8; 16];
            if g.len() != 32 {
                continue;
            }
            let ok = (0..16).all(|i| {
                g.get(i * 2..i * 2 + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .map(|v| b[i] = v)
                    .is_some()
            });
            if ok {
                out.push((idx, IpAddr::V6(Ipv6Addr::from(b))));
            }
        }
    } else {
        // A device line `IDX\tDEV : COUNT QUERIER`, then one indented line per group:
        // `GROUP(hex of the network-order word as the host reads it) USERS TIMER REPORTER`.
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/igmp")).unwrap_or_default();
        let mut idx = None;
        for l in text.lines().skip(1) {
            if l.starts_with(|c: char| c.is_ascii_digit()) {
                idx = l.split_whitespace().next().and_then(|i| i.parse().ok());
            } else if let (Some(i), Some(g)) = (idx, l.split_whitespace().next())
                && let Ok(w) = u32::from_str_radix(g, 16)
            {
                out.push((i, IpAddr::V4(Ipv4Addr::from(w.to_ne_bytes()))));
            }
        }
    }
    out
}

/// Whether the socket joined `group` on interface `ifindex` (its filter mode and source
/// count), from `MCAST_MSFILTER`.
fn membership(fd: RawFd, v6: bool, ifindex: u32, group: IpAddr) -> Option<(u32, u32)> {
    // SAFETY: all-zero is a valid group_filter.
    let mut gf: GroupFilter = unsafe { std::mem::zeroed() };
    gf.interface = ifindex;
    gf.group = storage(group);
    let mut len = std::mem::size_of::<GroupFilter>() as libc::socklen_t;
    let level = if v6 {
        libc::IPPROTO_IPV6
    } else {
        libc::IPPROTO_IP
    };
    // SAFETY: getsockopt writes at most len bytes into gf (one source fits; numsrc 0 asks
    // for none).
    let r = unsafe {
        libc::getsockopt(
            fd,
            level,
            MCAST_MSFILTER,
            (&mut gf as *mut GroupFilter).cast(),
            &mut len,
        )
    };
    (r == 0).then_some((gf.fmode, gf.numsrc))
}

/// The memberships of socket `fd` (family `family`) among `groups`, the [`candidates`] of its
/// process's namespace.
pub(super) fn read(
    fd: RawFd,
    groups: &[(u32, IpAddr)],
    family: i32,
    who: &str,
) -> Vec<IpMcastEntry> {
    let v6 = family == libc::AF_INET6;
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for &(ifindex, group) in groups {
        if !seen.insert((ifindex, group)) {
            continue;
        }
        let Some((mode, n)) = membership(fd, v6, ifindex, group) else {
            continue;
        };
        if mode != MCAST_EXCLUDE || n != 0 {
            tracing::warn!(
                "{who}: the source filter of its membership of {group} on interface \
                 {ifindex} is not kept (it comes back as a plain membership)"
            );
        }
        out.push(IpMcastEntry {
            group: match group {
                IpAddr::V4(a) => a.octets().to_vec(),
                IpAddr::V6(a) => a.octets().to_vec(),
            },
            ifindex,
        });
    }
    out
}

/// Joins `m` again.
///
/// # Errors
/// [`SocketError::BadImage`] for a group of a wrong size, [`SocketError::Sys`].
pub(super) fn join(fd: RawFd, family: i32, m: &IpMcastEntry, who: &str) -> Result<(), SocketError> {
    let group = match m.group.len() {
        4 => IpAddr::V4(Ipv4Addr::from(
            <[u8; 4]>::try_from(&m.group[..]).unwrap_or_default(),
        )),
        16 => IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(&m.group[..]).unwrap_or_default(),
        )),
        n => {
            return Err(SocketError::BadImage {
                file: criu_images::names::FILES.into(),
                reason: format!("{who}: multicast group of {n} bytes"),
            });
        }
    };
    let req = GroupReq {
        interface: m.ifindex,
        group: storage(group),
    };
    let level = if family == libc::AF_INET6 {
        libc::IPPROTO_IPV6
    } else {
        libc::IPPROTO_IP
    };
    // SAFETY: setsockopt reads a live group_req of the size given.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            MCAST_JOIN_GROUP,
            (&req as *const GroupReq).cast(),
            std::mem::size_of::<GroupReq>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(sys(format!(
            "joining {who} to {group} on interface {}",
            m.ifindex
        )));
    }
    Ok(())
}
