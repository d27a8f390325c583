//! A `NETLINK_SOCK_DIAG` client: what the kernel says about every unix, netlink and packet
//! socket of criu's network namespace, one dump request per family (never one query per
//! socket).
//!
//! Replies are parsed as untrusted data: a short or malformed message ends the dump with
//! [`DiagError::Malformed`] instead of a panic.
// Unsafe code: talks sock_diag over netlink with raw sockaddr_nl and recv into byte buffers.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// What can go wrong talking to sock_diag.
#[derive(Debug, thiserror::Error)]
pub enum DiagError {
    /// A system call on the diag socket failed.
    #[error("sock_diag {what} ({family})")]
    Sys {
        /// The call.
        what: &'static str,
        /// The family asked about.
        family: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The kernel answered with an error.
    #[error("sock_diag dump of {family} sockets refused with errno {errno}")]
    Refused {
        /// The family asked about.
        family: &'static str,
        /// The errno.
        errno: i32,
    },
    /// A reply does not parse.
    #[error("sock_diag reply for {family} sockets is malformed: {what}")]
    Malformed {
        /// The family asked about.
        family: &'static str,
        /// What is wrong.
        what: &'static str,
    },
}

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;

/// What sock_diag says about one unix socket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnixDiag {
    /// `SOCK_STREAM`, `SOCK_DGRAM`, `SOCK_SEQPACKET`.
    pub ty: u8,
    /// TCP-like state (`TCP_ESTABLISHED` 1, `TCP_CLOSE` 7, `TCP_LISTEN` 10).
    pub state: u8,
    /// Inode number.
    pub ino: u32,
    /// The bound name as the kernel keeps it (`\0`-led for abstract names), empty if unbound.
    pub name: Vec<u8>,
    /// `(device, inode)` of the bound file (kernel `dev_t` encoding), for path names.
    pub vfs: Option<(u32, u32)>,
    /// The peer's inode (0: a peer that is gone), `None`: no peer.
    pub peer: Option<u32>,
    /// Inodes of connections queued on a listener, not accepted yet, in queue order.
    pub icons: Vec<u32>,
    /// `(receive queue, write queue)`: for a listener, queued connections and the backlog;
    /// otherwise bytes waiting to be read and bytes sent but not yet read by the peer.
    pub rqlen: Option<(u32, u32)>,
    /// `sk_shutdown` (1: receive, 2: send).
    pub shutdown: u8,
    /// Owner uid.
    pub uid: Option<u32>,
}

/// What sock_diag says about one netlink socket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetlinkDiag {
    /// `SOCK_RAW` or `SOCK_DGRAM`.
    pub ty: u8,
    /// `NETLINK_ROUTE`, ...
    pub protocol: u8,
    /// Socket state (connected or not).
    pub state: u8,
    /// Bound port id.
    pub portid: u32,
    /// Connected port id.
    pub dst_portid: u32,
    /// Connected group.
    pub dst_group: u32,
    /// Inode number.
    pub ino: u32,
    /// Multicast groups joined, as a bitmap of 32-bit words.
    pub groups: Vec<u32>,
}

/// What sock_diag says about one packet socket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PacketDiag {
    /// `SOCK_RAW`, `SOCK_DGRAM` or `SOCK_PACKET`.
    pub ty: u8,
    /// Protocol (network order, as the kernel keeps it).
    pub num: u16,
    /// Inode number.
    pub ino: u32,
    /// `(ifindex, version, reserve, copy_thresh, tstamp, flags)`.
    pub info: Option<[u32; 6]>,
    /// Memberships: `(ifindex, type, address)`.
    pub mclist: Vec<(u32, u16, Vec<u8>)>,
    /// Receive ring, if any.
    pub rx_ring: Option<[u32; 7]>,
    /// Transmit ring, if any.
    pub tx_ring: Option<[u32; 7]>,
    /// Fanout (id | type << 16 | flags << 24), if any.
    pub fanout: Option<u32>,
}

fn sys(what: &'static str, family: &'static str) -> DiagError {
    DiagError::Sys {
        what,
        family,
        source: std::io::Error::last_os_error(),
    }
}

/// Sends one dump request (`req` after the netlink header) and returns every reply payload.
pub(crate) fn dump(family: &'static str, req: &[u8]) -> Result<Vec<Vec<u8>>, DiagError> {
    // SAFETY: socket() takes no pointers; the result is checked and owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(sys("socket", family));
    }
    // SAFETY: fd was just created and is owned by nothing else.
    let sk = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = 16 + req.len();
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
    msg.extend_from_slice(req);
    // SAFETY: zeroed sockaddr_nl is valid: the kernel as destination.
    let mut dst: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    dst.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: sends from a live buffer to a live address of the size given.
    let n = unsafe {
        libc::sendto(
            sk.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&dst as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if n < 0 {
        return Err(sys("send", family));
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        // SAFETY: receives into a live buffer of the length given.
        let n = unsafe { libc::recv(sk.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(sys("recv", family));
        }
        let mut b = &buf[..n as usize];
        if b.is_empty() {
            return Err(DiagError::Malformed {
                family,
                what: "empty reply",
            });
        }
        while b.len() >= 16 {
            let mlen = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
            let mtype = u16::from_ne_bytes([b[4], b[5]]);
            if mlen < 16 || mlen > b.len() {
                return Err(DiagError::Malformed {
                    family,
                    what: "message length",
                });
            }
            let payload = &b[16..mlen];
            match mtype {
                NLMSG_DONE => {
                    // One line per dump request: a test counts them (one per family and
                    // dump, never one per socket).
                    tracing::debug!(family, sockets = out.len(), "sock_diag dump");
                    return Ok(out);
                }
                NLMSG_ERROR => {
                    let errno = payload
                        .get(..4)
                        .map(|e| i32::from_ne_bytes([e[0], e[1], e[2], e[3]]))
                        .unwrap_or(0);
                    return Err(DiagError::Refused {
                        family,
                        errno: -errno,
                    });
                }
                SOCK_DIAG_BY_FAMILY => out.push(payload.to_vec()),
                _ => {}
            }
            let step = mlen.div_ceil(4) * 4;
            b = b.get(step..).unwrap_or(&[]);
        }
    }
}

/// The attributes after a fixed header of `hdr` bytes: `(type, value)`.
pub(crate) fn attrs<'a>(
    family: &'static str,
    msg: &'a [u8],
    hdr: usize,
) -> Result<Vec<(u16, &'a [u8])>, DiagError> {
    let bad = |what| DiagError::Malformed { family, what };
    let mut b = msg.get(hdr..).ok_or(bad("short message"))?;
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            return Err(bad("attribute length"));
        }
        out.push((ty, &b[4..len]));
        b = b.get(len.div_ceil(4) * 4..).unwrap_or(&[]);
    }
    Ok(out)
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Every unix socket of criu's network namespace, by inode.
///
/// # Errors
/// [`DiagError`].
pub fn unix_sockets() -> Result<HashMap<u32, UnixDiag>, DiagError> {
    const F: &str = "unix";
    // unix_diag_req: family, protocol, pad, states, ino, show, cookie[2].
    let show: u32 = 0x01 | 0x02 | 0x04 | 0x08 | 0x10 | 0x40; // name vfs peer icons rqlen uid
    let mut req = vec![libc::AF_UNIX as u8, 0, 0, 0];
    req.extend_from_slice(&u32::MAX.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(&show.to_ne_bytes());
    req.extend_from_slice(&[0xff; 8]);
    let bad = |what| DiagError::Malformed { family: F, what };
    let mut out = HashMap::new();
    for m in dump(F, &req)? {
        if m.len() < 16 {
            return Err(bad("short unix_diag_msg"));
        }
        let mut d = UnixDiag {
            ty: m[1],
            state: m[2],
            ino: u32_at(&m, 4).ok_or(bad("inode"))?,
            ..UnixDiag::default()
        };
        for (ty, v) in attrs(F, &m, 16)? {
            match ty {
                0 => d.name = v.to_vec(),
                1 => {
                    d.vfs = Some((
                        u32_at(v, 4).ok_or(bad("vfs"))?,
                        u32_at(v, 0).ok_or(bad("vfs"))?,
                    ))
                }
                2 => d.peer = Some(u32_at(v, 0).ok_or(bad("peer"))?),
                3 => {
                    d.icons = v
                        .chunks_exact(4)
                        .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                        .collect()
                }
                4 => {
                    d.rqlen = Some((
                        u32_at(v, 0).ok_or(bad("rqlen"))?,
                        u32_at(v, 4).ok_or(bad("rqlen"))?,
                    ))
                }
                6 => d.shutdown = v.first().copied().unwrap_or(0),
                7 => d.uid = u32_at(v, 0),
                _ => {}
            }
        }
        out.insert(d.ino, d);
    }
    Ok(out)
}

/// Every netlink socket of criu's network namespace, by inode.
///
/// # Errors
/// [`DiagError`].
pub fn netlink_sockets() -> Result<HashMap<u32, NetlinkDiag>, DiagError> {
    const F: &str = "netlink";
    // netlink_diag_req: family, protocol (all), pad, ino, show, cookie[2].
    let mut req = vec![libc::AF_NETLINK as u8, 255, 0, 0];
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(&0x2u32.to_ne_bytes()); // NDIAG_SHOW_GROUPS
    req.extend_from_slice(&[0xff; 8]);
    let bad = |what| DiagError::Malformed { family: F, what };
    let mut out = HashMap::new();
    for m in dump(F, &req)? {
        if m.len() < 28 {
            return Err(bad("short netlink_diag_msg"));
        }
        let mut d = NetlinkDiag {
            ty: m[1],
            protocol: m[2],
            state: m[3],
            portid: u32_at(&m, 4).ok_or(bad("portid"))?,
            dst_portid: u32_at(&m, 8).ok_or(bad("dst_portid"))?,
            dst_group: u32_at(&m, 12).ok_or(bad("dst_group"))?,
            ino: u32_at(&m, 16).ok_or(bad("inode"))?,
            groups: Vec::new(),
        };
        for (ty, v) in attrs(F, &m, 28)? {
            if ty == 1 {
                d.groups = v
                    .chunks_exact(4)
                    .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                // The kernel sends whole longs: no trailing empty words.
                while d.groups.last() == Some(&0) {
                    d.groups.pop();
                }
            }
        }
        out.insert(d.ino, d);
    }
    Ok(out)
}

/// Every packet socket of criu's network namespace, by inode.
///
/// # Errors
/// [`DiagError`].
pub fn packet_sockets() -> Result<HashMap<u32, PacketDiag>, DiagError> {
    const F: &str = "packet";
    // packet_diag_req: family, protocol, pad, ino, show, cookie[2].
    let show: u32 = 0x01 | 0x02 | 0x04 | 0x08; // info mclist ring fanout
    let mut req = vec![libc::AF_PACKET as u8, 0, 0, 0];
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(&show.to_ne_bytes());
    req.extend_from_slice(&[0xff; 8]);
    let bad = |what| DiagError::Malformed { family: F, what };
    let ring = |v: &[u8]| -> Result<[u32; 7], DiagError> {
        let mut r = [0u32; 7];
        for (i, x) in r.iter_mut().enumerate() {
            *x = u32_at(v, i * 4).ok_or(bad("ring"))?;
        }
        Ok(r)
    };
    let mut out = HashMap::new();
    for m in dump(F, &req)? {
        if m.len() < 16 {
            return Err(bad("short packet_diag_msg"));
        }
        let mut d = PacketDiag {
            ty: m[1],
            num: u16::from_ne_bytes([m[2], m[3]]),
            ino: u32_at(&m, 4).ok_or(bad("inode"))?,
            ..PacketDiag::default()
        };
        for (ty, v) in attrs(F, &m, 16)? {
            match ty {
                0 => {
                    let mut i = [0u32; 6];
                    for (k, x) in i.iter_mut().enumerate() {
                        *x = u32_at(v, k * 4).ok_or(bad("info"))?;
                    }
                    d.info = Some(i);
                }
                1 => {
                    // packet_diag_mclist: index, count, type (u16), alen (u16), addr[32].
                    for c in v.chunks_exact(44) {
                        let index = u32_at(c, 0).ok_or(bad("mclist"))?;
                        let ty = u16::from_ne_bytes([c[8], c[9]]);
                        let alen = (u16::from_ne_bytes([c[10], c[11]]) as usize).min(32);
                        d.mclist.push((index, ty, c[12..12 + alen].to_vec()));
                    }
                }
                2 => d.rx_ring = Some(ring(v)?),
                3 => d.tx_ring = Some(ring(v)?),
                4 => d.fanout = u32_at(v, 0),
                _ => {}
            }
        }
        out.insert(d.ino, d);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};

    fn ino(fd: &impl AsRawFd) -> u32 {
        std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .unwrap()
            .ino() as u32
    }

    #[test]
    fn unix_dump_sees_pairs_names_and_queued_connections() {
        let (a, b) = UnixStream::pair().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l");
        let l = UnixListener::bind(&path).unwrap();
        let c = UnixStream::connect(&path).unwrap();
        let d = UnixDatagram::unbound().unwrap();
        d.connect(&path).ok();
        use std::io::Write;
        (&a).write_all(b"12345").unwrap();
        let all = unix_sockets().unwrap();
        let da = &all[&ino(&a)];
        let db = &all[&ino(&b)];
        assert_eq!(da.peer, Some(ino(&b)));
        assert_eq!(db.peer, Some(ino(&a)));
        assert_eq!(db.rqlen.unwrap().0, 5);
        assert_eq!(da.ty, libc::SOCK_STREAM as u8);
        let dl = &all[&ino(&l)];
        assert_eq!(dl.state, 10);
        let mut name = path.as_os_str().as_encoded_bytes().to_vec();
        name.push(0);
        assert_eq!(dl.name, name);
        let st = std::fs::metadata(&path).unwrap();
        assert_eq!(dl.vfs.unwrap().1 as u64, st.ino());
        assert_eq!(dl.icons.len(), 1);
        // The queued server end has no socket yet: the client's peer shows as 0 (or, on
        // kernels that number it, the queued connection), and it is not closed (no shutdown).
        let cp = all[&ino(&c)].peer;
        assert!(cp == Some(0) || cp == Some(dl.icons[0]), "{cp:?}");
        assert_eq!(all[&ino(&c)].shutdown, 0);
    }
}
