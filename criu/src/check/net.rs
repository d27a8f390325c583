//! Network probes of `criu check`: sockets, socket options, netlink (rtnetlink and sock_diag),
//! tun, iptables.
// Unsafe code: probes the kernel with socket ioctls and netlink send/recv that nix does not wrap,
// and adopts the descriptors.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;

use super::Missing;
use super::probes::{io, setsockopt_int, socket, sys};

pub(super) fn tun() -> Result<(), Missing> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(io("opening /dev/net/tun"))?;
    let mut features: libc::c_uint = 0;
    // SAFETY: TUNGETFEATURES writes one unsigned int into a live local.
    if unsafe { libc::ioctl(f.as_raw_fd(), libc::TUNGETFEATURES, &mut features) } < 0 {
        return Err(Missing::Sys {
            what: "TUNGETFEATURES",
            errno: Errno::last(),
        });
    }
    Ok(())
}

/// TCP_REPAIR can be turned on for a socket whose write side is shut down.
pub(super) fn tcp_half_closed() -> Result<(), Missing> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(io("binding a TCP listener"))?;
    let addr = l.local_addr().map_err(io("getsockname"))?;
    let c = std::net::TcpStream::connect(addr).map_err(io("connecting over loopback"))?;
    c.shutdown(std::net::Shutdown::Write)
        .map_err(io("shutting the write side"))?;
    let fd = OwnedFd::from(c);
    match setsockopt_int(&fd, libc::SOL_TCP, libc::TCP_REPAIR, 1) {
        Ok(()) => {
            let _ = setsockopt_int(&fd, libc::SOL_TCP, libc::TCP_REPAIR, 0);
            Ok(())
        }
        Err(Errno::EPERM) => Err(Missing::Absent {
            what: "TCP_REPAIR cannot be enabled on a half-closed socket",
        }),
        Err(errno) => Err(Missing::Sys {
            what: "TCP_REPAIR",
            errno,
        }),
    }
}

pub(super) fn sockopt_buf_lock() -> Result<(), Missing> {
    const SO_BUF_LOCK: i32 = 72;
    let fd = socket(libc::AF_INET, libc::SOCK_STREAM, 0, "a TCP socket")?;
    let mut v: u32 = 0;
    let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
    // SAFETY: the kernel writes at most len bytes into a live local and updates len.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_BUF_LOCK,
            (&mut v as *mut u32).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(Missing::Sys {
            what: "SO_BUF_LOCK",
            errno: Errno::last(),
        });
    }
    Ok(())
}

pub(super) fn ipv6_freebind() -> Result<(), Missing> {
    let fd = socket(libc::AF_INET6, libc::SOCK_DGRAM, 0, "an IPv6 socket")?;
    setsockopt_int(&fd, libc::SOL_IPV6, libc::IPV6_FREEBIND, 1).map_err(sys("IPV6_FREEBIND"))
}

/// `SIOCUNIXFILE` opens a unix socket's file (`ENOENT` for an unbound socket is a yes).
pub(super) fn sk_unix_file() -> Result<(), Missing> {
    const SIOCUNIXFILE: libc::c_ulong = 0x89e0;
    let fd = socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0, "a unix socket")?;
    // SAFETY: SIOCUNIXFILE takes no argument and returns a descriptor or an error.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), SIOCUNIXFILE as _) };
    if r >= 0 {
        // SAFETY: r is a descriptor the ioctl just created.
        drop(unsafe { OwnedFd::from_raw_fd(r) });
        return Ok(());
    }
    match Errno::last() {
        Errno::ENOENT => Ok(()),
        errno => Err(Missing::Sys {
            what: "SIOCUNIXFILE",
            errno,
        }),
    }
}

/// Sends one netlink request and returns the error code of the first answer (0 for an ack or
/// for data, which means the request was understood).
pub(super) fn netlink_ask(
    proto: i32,
    msg_type: u16,
    flags: u16,
    body: &[u8],
) -> Result<i32, Missing> {
    let fd = socket(libc::AF_NETLINK, libc::SOCK_RAW, proto, "a netlink socket")?;
    let len = 16 + body.len();
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&msg_type.to_ne_bytes());
    msg.extend_from_slice(&(flags | libc::NLM_F_REQUEST as u16).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(body);
    // SAFETY: sends len bytes from a live buffer to the kernel (a null address is the kernel).
    if unsafe { libc::send(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) } < 0 {
        return Err(Missing::Sys {
            what: "netlink send",
            errno: Errno::last(),
        });
    }
    let mut buf = vec![0u8; 32768];
    // SAFETY: the kernel writes at most buf.len() bytes into a live buffer.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 16 {
        return Err(Missing::Sys {
            what: "netlink recv",
            errno: Errno::last(),
        });
    }
    let ty = u16::from_ne_bytes([buf[4], buf[5]]);
    if ty == libc::NLMSG_ERROR as u16 && n >= 20 {
        let err = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
        return Ok(-err);
    }
    Ok(0)
}

/// `IFLA_NEW_IFINDEX`: setting a negative new index on a link that does not exist answers
/// `ERANGE` from kernels that know the attribute, `ENODEV` from the others.
pub(super) fn newifindex() -> Result<(), Missing> {
    const IFLA_NEW_IFINDEX: u16 = 49;
    let mut body = vec![0u8; 16]; // ifinfomsg, AF_UNSPEC, index 0.
    let attr = |body: &mut Vec<u8>, ty: u16, data: &[u8]| {
        body.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        body.extend_from_slice(&ty.to_ne_bytes());
        body.extend_from_slice(data);
        while !body.len().is_multiple_of(4) {
            body.push(0);
        }
    };
    attr(&mut body, IFLA_NEW_IFINDEX, &(-1i32).to_ne_bytes());
    attr(&mut body, libc::IFLA_IFNAME, b"criu-kdat");
    let flags = (libc::NLM_F_ACK | libc::NLM_F_CREATE) as u16;
    match netlink_ask(libc::NETLINK_ROUTE, libc::RTM_SETLINK, flags, &body)? {
        libc::ERANGE => Ok(()),
        libc::ENODEV => Err(Missing::Absent {
            what: "the kernel ignores IFLA_NEW_IFINDEX",
        }),
        e => Err(Missing::Sys {
            what: "RTM_SETLINK with IFLA_NEW_IFINDEX",
            errno: Errno::from_raw(e),
        }),
    }
}

/// Network namespace ids: `RTM_GETNSID` for our own namespace is understood.
pub(super) fn netns_ids() -> Result<(), Missing> {
    const NETNSA_FD: u16 = 3;
    let ns = std::fs::File::open("/proc/self/ns/net").map_err(io("/proc/self/ns/net"))?;
    let mut body = vec![0u8; 4]; // rtgenmsg, padded.
    body.extend_from_slice(&8u16.to_ne_bytes());
    body.extend_from_slice(&NETNSA_FD.to_ne_bytes());
    body.extend_from_slice(&ns.as_raw_fd().to_ne_bytes());
    match netlink_ask(libc::NETLINK_ROUTE, libc::RTM_GETNSID, 0, &body)? {
        0 => Ok(()),
        e => Err(Missing::Sys {
            what: "RTM_GETNSID",
            errno: Errno::from_raw(e),
        }),
    }
}

/// sock_diag answers for raw sockets of both families.
pub(super) fn net_diag_raw() -> Result<(), Missing> {
    const NETLINK_SOCK_DIAG: i32 = 4;
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    for family in [libc::AF_INET, libc::AF_INET6] {
        // inet_diag_req_v2: family, protocol, ext, pad, states, then a 48-byte socket id.
        let mut body = vec![family as u8, libc::IPPROTO_RAW as u8, 0, 0];
        body.extend_from_slice(&u32::MAX.to_ne_bytes());
        body.extend_from_slice(&[0u8; 48]);
        let flags = libc::NLM_F_DUMP as u16;
        match netlink_ask(NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY, flags, &body)? {
            0 => {}
            e => {
                return Err(Missing::Sys {
                    what: "sock_diag for raw sockets",
                    errno: Errno::from_raw(e),
                });
            }
        }
    }
    Ok(())
}

/// A legacy (not nf_tables) iptables for IPv4 and IPv6.
pub(super) fn ipt_legacy() -> Result<(), Missing> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    let found = |name: &str| std::env::split_paths(&path).any(|d| d.join(name).is_file());
    if !found("iptables-legacy") {
        return Err(Missing::Absent {
            what: "no iptables-legacy in PATH",
        });
    }
    if Path::new("/proc/net/if_inet6").exists() && !found("ip6tables-legacy") {
        return Err(Missing::Absent {
            what: "no ip6tables-legacy in PATH",
        });
    }
    Ok(())
}
