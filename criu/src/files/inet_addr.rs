//! The addresses of CRIU's `InetSkEntry` (`src_addr`/`dst_addr` words and ports) to and from
//! socket addresses: one place for the inet socket kind (`inet.rs`) and the per-connection
//! network lock (`namespaces::net::conns`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// An address as CRIU's `src_addr`/`dst_addr` words (the bytes in network order, read as
/// native u32s: one word for IPv4, four for IPv6).
pub(crate) fn words(ip: IpAddr) -> Vec<u32> {
    match ip {
        IpAddr::V4(a) => vec![u32::from_ne_bytes(a.octets())],
        IpAddr::V6(a) => a
            .octets()
            .chunks(4)
            .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    }
}

/// The address of entry words back (`None` for a wrong number of words).
pub(crate) fn addr(family: u32, w: &[u32], port: u32) -> Option<SocketAddr> {
    let port = u16::try_from(port).ok()?;
    match (family as i32, w.len()) {
        (libc::AF_INET, 1) => Some(SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::from(w[0].to_ne_bytes()),
            port,
        ))),
        (libc::AF_INET, 0) => Some(SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::UNSPECIFIED,
            port,
        ))),
        (libc::AF_INET6, 4) => {
            let mut b = [0u8; 16];
            for (i, x) in w.iter().enumerate() {
                b[i * 4..i * 4 + 4].copy_from_slice(&x.to_ne_bytes());
            }
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(b),
                port,
                0,
                0,
            )))
        }
        (libc::AF_INET6, 0) => Some(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::UNSPECIFIED,
            port,
            0,
            0,
        ))),
        _ => None,
    }
}
