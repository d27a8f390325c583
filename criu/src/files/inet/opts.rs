//! The options of an inet socket, read at dump and set again at restore: CRIU's `ip_opts`
//! (`IP_TOS`, `IP_TTL`, freebind, pktinfo, and ours: `transparent`, the IPv6 traffic class and
//! hop limit, the multicast interface, hop limit and loop), `ip_opts_raw` of raw sockets
//! (`IP_NODEFRAG`, `IPV6_HDRINCL`/`IP_HDRINCL`, the ICMP filters) and `tcp_opts` (nodelay,
//! cork, keepalive, our user timeout and congestion control).

use std::os::fd::RawFd;

use criu_images::pb::{IpOptsEntry, IpOptsRawEntry, TcpOptsEntry};

use super::super::socket::{self, SocketError, sys};
use super::int;

/// `IP_NODEFRAG` (IPv4), `IPV6_HDRINCL`/`IP_HDRINCL` and the ICMP filter of a raw socket of
/// that protocol, as CRIU's `ip_opts_raw_entry` (`ICMP_FILTER`: one word; `ICMPV6_FILTER`:
/// eight).
pub(super) fn read_raw_opts(
    fd: RawFd,
    family: i32,
    proto: i32,
    w: &str,
) -> Result<IpOptsRawEntry, SocketError> {
    let v6 = family == libc::AF_INET6;
    let hdrincl = if v6 {
        int(fd, libc::SOL_IPV6, IPV6_HDRINCL, w, "IPV6_HDRINCL")?
    } else {
        int(fd, libc::SOL_IP, libc::IP_HDRINCL, w, "IP_HDRINCL")?
    };
    let nodefrag = if v6 {
        0
    } else {
        int(fd, libc::SOL_IP, IP_NODEFRAG, w, "IP_NODEFRAG")?
    };
    let filter = match (v6, proto) {
        (false, libc::IPPROTO_ICMP) => Some((SOL_RAW, ICMP_FILTER, 1)),
        (true, libc::IPPROTO_ICMPV6) => Some((libc::IPPROTO_ICMPV6, ICMPV6_FILTER, 8)),
        _ => None,
    };
    let mut icmpv_filter = Vec::new();
    if let Some((level, opt, words)) = filter {
        let mut b = vec![0u32; words];
        let mut len = (words * 4) as libc::socklen_t;
        // SAFETY: getsockopt writes at most len bytes into b.
        let r = unsafe { libc::getsockopt(fd, level, opt, b.as_mut_ptr().cast(), &mut len) };
        if r < 0 {
            return Err(sys(format!("ICMP filter of {w}")));
        }
        icmpv_filter = b;
    }
    Ok(IpOptsRawEntry {
        hdrincl: (hdrincl != 0).then_some(true),
        nodefrag: (nodefrag != 0).then_some(true),
        checksum: None,
        icmpv_filter,
    })
}

/// Sets what [`read_raw_opts`] read.
pub(super) fn write_raw_opts(
    fd: RawFd,
    family: i32,
    proto: i32,
    r: &IpOptsRawEntry,
    who: &str,
) -> Result<(), SocketError> {
    let set = |level: i32, opt: i32, v: i32, name: &str| {
        socket::set_int(fd, level, opt, v).map_err(|source| SocketError::Sys {
            what: format!("setsockopt {name} on {who}"),
            source,
        })
    };
    let v6 = family == libc::AF_INET6;
    if r.nodefrag == Some(true) && !v6 {
        set(libc::SOL_IP, IP_NODEFRAG, 1, "IP_NODEFRAG")?;
    }
    if r.hdrincl == Some(true) {
        if v6 {
            set(libc::SOL_IPV6, IPV6_HDRINCL, 1, "IPV6_HDRINCL")?;
        } else {
            set(libc::SOL_IP, libc::IP_HDRINCL, 1, "IP_HDRINCL")?;
        }
    }
    let filter = match (v6, proto) {
        (false, libc::IPPROTO_ICMP) => Some((SOL_RAW, ICMP_FILTER, 1)),
        (true, libc::IPPROTO_ICMPV6) => Some((libc::IPPROTO_ICMPV6, ICMPV6_FILTER, 8)),
        _ => None,
    };
    if let Some((level, opt, words)) = filter
        && r.icmpv_filter.len() == words
    {
        let b = &r.icmpv_filter;
        // SAFETY: b holds words u32s, the option's size.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                level,
                opt,
                b.as_ptr().cast(),
                (words * 4) as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(sys(format!("setting the ICMP filter of {who}")));
        }
    }
    Ok(())
}

/// `SOL_RAW`, `ICMP_FILTER` (linux/icmp.h), `ICMPV6_FILTER` (linux/icmpv6.h), `IP_NODEFRAG`
/// (linux/in.h), `IPV6_HDRINCL` (linux/in6.h).
pub(super) const SOL_RAW: i32 = 255;
pub(super) const ICMP_FILTER: i32 = 1;
pub(super) const ICMPV6_FILTER: i32 = 1;
pub(super) const IP_NODEFRAG: i32 = 22;
pub(super) const IPV6_HDRINCL: i32 = 36;

pub(super) fn read_tcp_opts(fd: RawFd, w: &str) -> Result<TcpOptsEntry, SocketError> {
    let g = |opt, name| int(fd, libc::SOL_TCP, opt, w, name);
    Ok(TcpOptsEntry {
        cork: Some(g(libc::TCP_CORK, "TCP_CORK")? != 0).filter(|&b| b),
        nodelay: Some(g(libc::TCP_NODELAY, "TCP_NODELAY")? != 0).filter(|&b| b),
        keepcnt: Some(g(libc::TCP_KEEPCNT, "TCP_KEEPCNT")?),
        keepidle: Some(g(libc::TCP_KEEPIDLE, "TCP_KEEPIDLE")?),
        keepintvl: Some(g(libc::TCP_KEEPINTVL, "TCP_KEEPINTVL")?),
        user_timeout: Some(g(libc::TCP_USER_TIMEOUT, "TCP_USER_TIMEOUT")?).filter(|&t| t != 0),
        congestion: congestion(fd),
    })
}

/// `TCP_CONGESTION`: the name of the socket's congestion control algorithm.
pub(super) fn congestion(fd: RawFd) -> Option<String> {
    let mut b = [0u8; 16];
    let mut len = b.len() as libc::socklen_t;
    // SAFETY: getsockopt writes at most len bytes into b.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_TCP,
            libc::TCP_CONGESTION,
            b.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r < 0 {
        return None;
    }
    let b = &b[..(len as usize).min(b.len())];
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    std::str::from_utf8(&b[..end])
        .ok()
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Sets `TCP_CONGESTION` to `name` unless the socket has it already (the default one needs
/// no privilege; another may need `CAP_NET_ADMIN`).
pub(super) fn set_congestion(fd: RawFd, name: &str, who: &str) -> Result<(), SocketError> {
    if congestion(fd).as_deref() == Some(name) {
        return Ok(());
    }
    // SAFETY: setsockopt reads name.len() bytes from a live string.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_TCP,
            libc::TCP_CONGESTION,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(sys(format!("setsockopt TCP_CONGESTION {name} on {who}")));
    }
    Ok(())
}

/// `IP_FREEBIND`, `IP_PKTINFO`, `IP_TOS` and `IP_TTL` (IPv4), `IPV6_FREEBIND` and
/// `IPV6_RECVPKTINFO` (IPv6) as CRIU's `ip_opts_entry` (set ones only, as CRIU writes them),
/// with ours: `IPV6_TCLASS`, `IPV6_UNICAST_HOPS` and the multicast interface, hop limit and
/// loop of either family, each only when it differs from what a new socket has (see
/// [`read_mcast_opts`]).
pub(super) fn read_ip_opts(
    fd: RawFd,
    family: i32,
    ty: i32,
    w: &str,
) -> Result<IpOptsEntry, SocketError> {
    let g = |level, opt, name| int(fd, level, opt, w, name);
    let (freebind, pktinfo, tos, ttl, transparent) = if family == libc::AF_INET6 {
        (
            g(libc::SOL_IPV6, libc::IPV6_FREEBIND, "IPV6_FREEBIND")?,
            g(libc::SOL_IPV6, libc::IPV6_RECVPKTINFO, "IPV6_RECVPKTINFO")?,
            0,
            0,
            g(libc::SOL_IPV6, libc::IPV6_TRANSPARENT, "IPV6_TRANSPARENT")?,
        )
    } else {
        (
            g(libc::SOL_IP, libc::IP_FREEBIND, "IP_FREEBIND")?,
            g(libc::SOL_IP, libc::IP_PKTINFO, "IP_PKTINFO")?,
            g(libc::SOL_IP, libc::IP_TOS, "IP_TOS")?,
            g(libc::SOL_IP, libc::IP_TTL, "IP_TTL")?,
            g(libc::SOL_IP, libc::IP_TRANSPARENT, "IP_TRANSPARENT")?,
        )
    };
    let mut e = IpOptsEntry {
        freebind: (freebind != 0).then_some(true),
        raw: None,
        pktinfo: (pktinfo != 0).then_some(true),
        tos: (tos != 0).then_some(tos),
        ttl: (ttl != 0).then_some(ttl),
        transparent: (transparent != 0).then_some(true),
        ..Default::default()
    };
    read_mcast_opts(fd, family, ty, w, &mut e)?;
    Ok(e)
}

/// The hop limit a new IPv6 socket reports for `IPV6_UNICAST_HOPS` when nobody set one (the
/// kernel's default; a socket set to exactly this is kept as unset, which reads the same).
const DEFAULT_HOPS: u32 = 64;

/// Our options of [`IpOptsEntry`] (fields 1002..1006): `IPV6_TCLASS` and `IPV6_UNICAST_HOPS`
/// (IPv6), and for both families the multicast interface (`IP_MULTICAST_IF`: the IPv4
/// address the kernel reports, network order; `IPV6_MULTICAST_IF`: the interface index), hop
/// limit (`IP_MULTICAST_TTL`, `IPV6_MULTICAST_HOPS`, 1 on a new socket) and loop (on for a
/// new socket: kept only when turned off). A stream socket has no multicast options a program
/// can set (the kernel refuses them), and an accepted TCP socket reports the TTL of the SYN
/// that made it as its multicast TTL: they are not read for stream sockets.
fn read_mcast_opts(
    fd: RawFd,
    family: i32,
    ty: i32,
    w: &str,
    e: &mut IpOptsEntry,
) -> Result<(), SocketError> {
    let g = |level, opt, name| int(fd, level, opt, w, name);
    let stream = ty == libc::SOCK_STREAM;
    let (mc_if, mc_ttl, mc_loop) = if family == libc::AF_INET6 {
        let tclass = g(libc::SOL_IPV6, libc::IPV6_TCLASS, "IPV6_TCLASS")?;
        let hops = g(libc::SOL_IPV6, libc::IPV6_UNICAST_HOPS, "IPV6_UNICAST_HOPS")?;
        e.tclass = (tclass != 0).then_some(tclass);
        e.hops = (hops != DEFAULT_HOPS).then_some(hops);
        if stream {
            return Ok(());
        }
        (
            g(libc::SOL_IPV6, libc::IPV6_MULTICAST_IF, "IPV6_MULTICAST_IF")?,
            g(
                libc::SOL_IPV6,
                libc::IPV6_MULTICAST_HOPS,
                "IPV6_MULTICAST_HOPS",
            )?,
            g(
                libc::SOL_IPV6,
                libc::IPV6_MULTICAST_LOOP,
                "IPV6_MULTICAST_LOOP",
            )?,
        )
    } else if stream {
        return Ok(());
    } else {
        (
            g(libc::SOL_IP, libc::IP_MULTICAST_IF, "IP_MULTICAST_IF")?,
            g(libc::SOL_IP, libc::IP_MULTICAST_TTL, "IP_MULTICAST_TTL")?,
            g(libc::SOL_IP, libc::IP_MULTICAST_LOOP, "IP_MULTICAST_LOOP")?,
        )
    };
    e.mc_if = (mc_if != 0).then_some(mc_if);
    e.mc_ttl = (mc_ttl != 1).then_some(mc_ttl);
    e.mc_loop = (mc_loop == 0).then_some(false);
    Ok(())
}

/// Sets what [`read_mcast_opts`] read.
fn write_mcast_opts(fd: RawFd, v6: bool, o: &IpOptsEntry, who: &str) -> Result<(), SocketError> {
    let set = |level: i32, opt: i32, v: u32, name: &str| {
        socket::set_int(fd, level, opt, v as i32).map_err(|source| SocketError::Sys {
            what: format!("setsockopt {name} on {who}"),
            source,
        })
    };
    if v6 {
        if let Some(t) = o.tclass {
            set(libc::SOL_IPV6, libc::IPV6_TCLASS, t, "IPV6_TCLASS")?;
        }
        if let Some(h) = o.hops {
            set(
                libc::SOL_IPV6,
                libc::IPV6_UNICAST_HOPS,
                h,
                "IPV6_UNICAST_HOPS",
            )?;
        }
        if let Some(i) = o.mc_if {
            set(
                libc::SOL_IPV6,
                libc::IPV6_MULTICAST_IF,
                i,
                "IPV6_MULTICAST_IF",
            )?;
        }
        if let Some(h) = o.mc_ttl {
            set(
                libc::SOL_IPV6,
                libc::IPV6_MULTICAST_HOPS,
                h,
                "IPV6_MULTICAST_HOPS",
            )?;
        }
        if let Some(l) = o.mc_loop {
            set(
                libc::SOL_IPV6,
                libc::IPV6_MULTICAST_LOOP,
                l.into(),
                "IPV6_MULTICAST_LOOP",
            )?;
        }
    } else {
        if let Some(a) = o.mc_if {
            // An in_addr (4 bytes, network order as read): the kernel finds its interface.
            set(libc::SOL_IP, libc::IP_MULTICAST_IF, a, "IP_MULTICAST_IF")?;
        }
        if let Some(t) = o.mc_ttl {
            set(libc::SOL_IP, libc::IP_MULTICAST_TTL, t, "IP_MULTICAST_TTL")?;
        }
        if let Some(l) = o.mc_loop {
            set(
                libc::SOL_IP,
                libc::IP_MULTICAST_LOOP,
                l.into(),
                "IP_MULTICAST_LOOP",
            )?;
        }
    }
    Ok(())
}

/// Sets what [`read_ip_opts`] read.
pub(super) fn write_ip_opts(
    fd: RawFd,
    family: i32,
    o: &IpOptsEntry,
    who: &str,
) -> Result<(), SocketError> {
    let set = |level: i32, opt: i32, v: u32, name: &str| {
        socket::set_int(fd, level, opt, v as i32).map_err(|source| SocketError::Sys {
            what: format!("setsockopt {name} on {who}"),
            source,
        })
    };
    let v6 = family == libc::AF_INET6;
    if let Some(b) = o.transparent {
        if v6 {
            set(
                libc::SOL_IPV6,
                libc::IPV6_TRANSPARENT,
                b.into(),
                "IPV6_TRANSPARENT",
            )?;
        } else {
            set(
                libc::SOL_IP,
                libc::IP_TRANSPARENT,
                b.into(),
                "IP_TRANSPARENT",
            )?;
        }
    }
    if let Some(b) = o.freebind {
        if v6 {
            set(
                libc::SOL_IPV6,
                libc::IPV6_FREEBIND,
                b.into(),
                "IPV6_FREEBIND",
            )?;
        } else {
            set(libc::SOL_IP, libc::IP_FREEBIND, b.into(), "IP_FREEBIND")?;
        }
    }
    if let Some(b) = o.pktinfo {
        if v6 {
            set(
                libc::SOL_IPV6,
                libc::IPV6_RECVPKTINFO,
                b.into(),
                "IPV6_RECVPKTINFO",
            )?;
        } else {
            set(libc::SOL_IP, libc::IP_PKTINFO, b.into(), "IP_PKTINFO")?;
        }
    }
    if !v6 {
        if let Some(t) = o.tos {
            set(libc::SOL_IP, libc::IP_TOS, t, "IP_TOS")?;
        }
        if let Some(t) = o.ttl {
            set(libc::SOL_IP, libc::IP_TTL, t, "IP_TTL")?;
        }
    }
    write_mcast_opts(fd, v6, o, who)
}
