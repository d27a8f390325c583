//! Hand-built IP packets sent through a raw socket: the peer's FIN (or ACK) that a half-closed
//! connection needs in its receive queue, and datagrams put back into a UDP socket's receive
//! queue with their original sender. The packet goes to a local address, so it never leaves
//! the host; it carries [`MARK`] so that a network lock lets it through.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::SockAddr;

/// `SO_MARK` of the packets sent here (CRIU's `SOCCR_MARK`): lock rules accept it.
pub const MARK: u32 = 0xC114;

/// TCP header flags.
pub const TH_FIN: u8 = 0x01;
/// TCP header flags.
pub const TH_ACK: u8 = 0x10;

/// A TCP header without options (`window` is the raw 16-bit field).
#[derive(Debug, Clone, Copy)]
pub struct TcpHeader {
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
}

/// An IPv4 address inside a v4-mapped IPv6 one, else the address itself.
fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4),
        v4 => v4,
    }
}

fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn add_words(mut sum: u32, b: &[u8]) -> u32 {
    let mut it = b.chunks(2);
    for c in &mut it {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += u32::from(w);
    }
    sum
}

/// The transport checksum over the pseudo header of `src`/`dst` and `seg` (checksum field 0).
fn checksum(src: IpAddr, dst: IpAddr, proto: u8, seg: &[u8]) -> u16 {
    let mut sum = 0u32;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            sum = add_words(sum, &s.octets());
            sum = add_words(sum, &d.octets());
            sum += u32::from(proto) + seg.len() as u32;
        }
        _ => {
            let o = |a: IpAddr| match a {
                IpAddr::V6(a) => a.octets(),
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            };
            sum = add_words(sum, &o(src));
            sum = add_words(sum, &o(dst));
            sum = add_words(sum, &(seg.len() as u32).to_be_bytes());
            sum += u32::from(proto);
        }
    }
    fold(add_words(sum, seg))
}

/// A whole IP packet from `src` to `dst` carrying the transport segment `seg` of `proto`
/// (whose checksum field, at `csum_at`, is filled in here).
fn packet(src: IpAddr, dst: IpAddr, proto: u8, mut seg: Vec<u8>, csum_at: usize) -> Vec<u8> {
    seg[csum_at..csum_at + 2].fill(0);
    let c = checksum(src, dst, proto, &seg);
    let c = if proto == libc::IPPROTO_UDP as u8 && c == 0 {
        0xffff
    } else {
        c
    };
    seg[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
    let mut p = Vec::with_capacity(40 + seg.len());
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = (20 + seg.len()) as u16;
            p.extend_from_slice(&[0x45, 0]);
            p.extend_from_slice(&total.to_be_bytes());
            // id (filled by the kernel), DF, ttl, protocol, checksum (filled by the kernel).
            p.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
        }
        _ => {
            let o = |a: IpAddr| match a {
                IpAddr::V6(a) => a.octets(),
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            };
            p.extend_from_slice(&[0x60, 0, 0, 0]);
            p.extend_from_slice(&(seg.len() as u16).to_be_bytes());
            p.extend_from_slice(&[proto, 64]);
            p.extend_from_slice(&o(src));
            p.extend_from_slice(&o(dst));
        }
    }
    p.extend_from_slice(&seg);
    p
}

/// Sends the IP packet `p` (from `src`) to `dst` through a raw socket marked [`MARK`].
fn send(dst: IpAddr, p: &[u8]) -> io::Result<()> {
    let family = if dst.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: socket() takes no pointers; the result is checked and owned.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_RAW,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a new descriptor owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mark = MARK;
    // SAFETY: setsockopt reads a u32 from a live local.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&mark as *const u32).cast(),
            4,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let to = SockAddr::from(SocketAddr::new(dst, 0));
    let len = if dst.is_ipv4() {
        size_of::<libc::sockaddr_in>()
    } else {
        size_of::<libc::sockaddr_in6>()
    } as libc::socklen_t;
    // SAFETY: p is readable for its length; `to` is a live sockaddr of len bytes.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            p.as_ptr().cast(),
            p.len(),
            0,
            (&to as *const SockAddr).cast(),
            len,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn same_family(src: SocketAddr, dst: SocketAddr) -> io::Result<(IpAddr, IpAddr)> {
    let (s, d) = (unmap(src.ip()), unmap(dst.ip()));
    if s.is_ipv4() != d.is_ipv4() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{src} and {dst} are of different families"),
        ));
    }
    Ok((s, d))
}

/// Sends a TCP segment without data from `src` to `dst` (both v4-mapped IPv6 addresses are
/// sent as IPv4).
///
/// # Errors
/// The error of the raw socket (creating it needs `CAP_NET_RAW`).
pub fn send_tcp(src: SocketAddr, dst: SocketAddr, h: TcpHeader) -> io::Result<()> {
    let (s, d) = same_family(src, dst)?;
    let mut seg = Vec::with_capacity(20);
    seg.extend_from_slice(&src.port().to_be_bytes());
    seg.extend_from_slice(&dst.port().to_be_bytes());
    seg.extend_from_slice(&h.seq.to_be_bytes());
    seg.extend_from_slice(&h.ack.to_be_bytes());
    seg.extend_from_slice(&[5 << 4, h.flags]);
    seg.extend_from_slice(&h.window.to_be_bytes());
    seg.extend_from_slice(&[0, 0, 0, 0]);
    send(d, &packet(s, d, libc::IPPROTO_TCP as u8, seg, 16))
}

/// Sends one UDP datagram carrying `data` from `src` to `dst`.
///
/// # Errors
/// The error of the raw socket (creating it needs `CAP_NET_RAW`), or a datagram too long.
pub fn send_udp(src: SocketAddr, dst: SocketAddr, data: &[u8]) -> io::Result<()> {
    let (s, d) = same_family(src, dst)?;
    let len = u16::try_from(8 + data.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "datagram too long"))?;
    let mut seg = Vec::with_capacity(8 + data.len());
    seg.extend_from_slice(&src.port().to_be_bytes());
    seg.extend_from_slice(&dst.port().to_be_bytes());
    seg.extend_from_slice(&len.to_be_bytes());
    seg.extend_from_slice(&[0, 0]);
    seg.extend_from_slice(data);
    send(d, &packet(s, d, libc::IPPROTO_UDP as u8, seg, 6))
}

/// The loopback address of `ip`'s family, for a destination bound to the unspecified address.
pub fn local_for(ip: IpAddr) -> IpAddr {
    match unmap(ip) {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checksum of a known UDP datagram (127.0.0.1:1234 -> 127.0.0.1:80, "hi").
    #[test]
    fn udp_checksum_verifies() {
        let s: IpAddr = "127.0.0.1".parse().unwrap();
        let mut seg = vec![0x04, 0xd2, 0, 80, 0, 10, 0, 0, b'h', b'i'];
        let c = checksum(s, s, 17, &seg);
        seg[6..8].copy_from_slice(&c.to_be_bytes());
        // A segment with its checksum in place sums to zero.
        assert_eq!(checksum(s, s, 17, &seg), 0);
        let p = packet(s, s, 17, seg[..].to_vec(), 6);
        assert_eq!(p.len(), 30);
        assert_eq!(p[0], 0x45);
    }
}
