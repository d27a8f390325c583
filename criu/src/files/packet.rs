//! Packet sockets (`AF_PACKET`: `SOCK_RAW`, `SOCK_DGRAM`, the obsolete `SOCK_PACKET`), both
//! sides.
//!
//! Dump: type, protocol, bound interface, version, reserve, aux data / orig dev / vnet header /
//! loss flags, timestamp, copy threshold, memberships and fanout (one packet_diag dump per
//! criu dump), options, as CRIU's `packet_sock_entry`; `PACKET_RX_RING` / `PACKET_TX_RING`
//! rings (TPACKET v1, v2, v3) as the entry's `rx_ring` / `tx_ring` (`packet_ring`), and the
//! task's mapping of them as a `VMA_AREA_SOCKET` area whose `shmid` is the socket's file id,
//! as CRIU writes it. The ring's frames are not saved (CRIU neither: the area's pages are
//! skipped), nor the receive queue (packets captured and not read), as CRIU does.
//!
//! Restore: the socket with its settings, its rings set up again (empty), bound to the
//! interface, memberships added, fanout joined; the task maps its socket again at the same
//! address ([`map_ring`]).
// Unsafe code: makes and binds packet sockets with a raw sockaddr_ll and adopts their descriptors.
#![allow(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use criu_images::names;
use criu_images::pb::{PacketMclist, PacketRing, PacketSockEntry};

use super::common::diag_of;
use super::sockdiag::{self, PacketDiag};
use super::socket::{self, DumpSock, SocketError, sys};

/// The packet sockets met by one dump.
#[derive(Debug, Default)]
pub struct PacketDump {
    diag: Option<HashMap<u32, PacketDiag>>,
}

const PDI_AUXDATA: u32 = 0x2;
const PDI_ORIGDEV: u32 = 0x4;
const PDI_VNETHDR: u32 = 0x8;
const PDI_LOSS: u32 = 0x10;
/// The obsolete `SOCK_PACKET` type.
const SOCK_PACKET: u32 = 10;

impl PacketDump {
    /// Dumps the packet socket `s` (criu's copy `s.sk` of the task's descriptor `s.at`) as file
    /// `s.id`.
    ///
    /// # Errors
    /// [`SocketError`] naming the socket; rings are refused.
    pub fn add(&mut self, s: &DumpSock<'_>) -> Result<PacketSockEntry, SocketError> {
        let DumpSock { at, sk, flags, id } = *s;
        let d = diag_of(&mut self.diag, sockdiag::packet_sockets, at, "packet")?;
        let w = at.to_string();
        let [ifindex, version, reserve, copy_thresh, tstamp, pflags] = d.info.unwrap_or_default();
        Ok(PacketSockEntry {
            id,
            r#type: u32::from(d.ty),
            protocol: u32::from(d.num),
            flags: flags & !(libc::O_CLOEXEC as u32),
            ifindex,
            fown: socket::read_fown(sk.as_raw_fd()),
            opts: socket::read_opts(sk.as_raw_fd(), &w)?,
            version,
            reserve,
            aux_data: pflags & PDI_AUXDATA != 0,
            orig_dev: pflags & PDI_ORIGDEV != 0,
            vnet_hdr: pflags & PDI_VNETHDR != 0,
            loss: pflags & PDI_LOSS != 0,
            timestamp: tstamp,
            copy_thresh,
            mclist: d
                .mclist
                .iter()
                .map(|(index, ty, addr)| PacketMclist {
                    index: *index,
                    r#type: u32::from(*ty),
                    addr: addr.clone(),
                })
                .collect(),
            fanout: d.fanout,
            rx_ring: d.rx_ring.map(ring_entry),
            tx_ring: d.tx_ring.map(ring_entry),
            ns_id: None,
        })
    }
}

/// A ring as packet_diag gives it (`packet_diag_ring`, in its order) as CRIU's `packet_ring`.
fn ring_entry(r: [u32; 7]) -> PacketRing {
    let [
        block_size,
        block_nr,
        frame_size,
        frame_nr,
        retire_tmo,
        sizeof_priv,
        features,
    ] = r;
    PacketRing {
        block_size,
        block_nr,
        frame_size,
        frame_nr,
        retire_tmo,
        sizeof_priv,
        features,
    }
}

/// The most bytes of ring one socket gets back (block size × count), far above what programs
/// ask for: a larger one in an image is refused before anything is made.
const MAX_RING: u64 = 1 << 30;

/// Checks packet entries before anything is created.
///
/// # Errors
/// [`SocketError::BadImage`].
pub fn check(entries: &[PacketSockEntry]) -> Result<(), SocketError> {
    for e in entries {
        let bad = |what: &str| SocketError::BadImage {
            file: names::FILES.into(),
            reason: format!("packet socket id {}: {what}", e.id),
        };
        if ![libc::SOCK_RAW as u32, libc::SOCK_DGRAM as u32, SOCK_PACKET].contains(&e.r#type) {
            return Err(bad("type"));
        }
        if e.protocol > 0xffff || e.version > 2 {
            return Err(bad("protocol or version"));
        }
        if e.mclist.iter().any(|m| m.addr.len() > 8) {
            return Err(bad("membership address"));
        }
        for r in [&e.rx_ring, &e.tx_ring].into_iter().flatten() {
            if u64::from(r.block_size) * u64::from(r.block_nr) > MAX_RING {
                return Err(bad("a ring over 1 GiB"));
            }
        }
    }
    Ok(())
}

/// Creates the packet sockets of `entries` held by a task (`wanted` file ids), numbered `min`
/// or above.
///
/// # Errors
/// [`SocketError`] naming the socket.
pub fn create_all(
    entries: &[PacketSockEntry],
    wanted: &HashSet<u32>,
    min: i32,
) -> Result<HashMap<u32, OwnedFd>, SocketError> {
    let mut out = HashMap::new();
    for e in entries.iter().filter(|e| wanted.contains(&e.id)) {
        let who = format!("packet socket id {}", e.id);
        let proto = (e.protocol as u16).to_be();
        // SAFETY: socket() takes no pointers; the result is checked and owned.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                e.r#type as i32 | libc::SOCK_CLOEXEC,
                i32::from(proto),
            )
        };
        if fd < 0 {
            return Err(sys(format!("creating {who}")));
        }
        // SAFETY: fd was just created and is owned by nothing else.
        let s = unsafe { OwnedFd::from_raw_fd(fd) };
        let sk = s.as_raw_fd();
        socket::write_opts(sk, &e.opts, &who)?;
        let set = |opt: i32, v: u32, name: &str| {
            socket::set_int(sk, libc::SOL_PACKET, opt, v as i32).map_err(|source| {
                SocketError::Sys {
                    what: format!("setsockopt {name} on {who}"),
                    source,
                }
            })
        };
        if e.r#type != SOCK_PACKET {
            if e.version != 0 {
                set(libc::PACKET_VERSION, e.version, "PACKET_VERSION")?;
            }
            if e.reserve != 0 {
                set(libc::PACKET_RESERVE, e.reserve, "PACKET_RESERVE")?;
            }
            if e.aux_data {
                set(libc::PACKET_AUXDATA, 1, "PACKET_AUXDATA")?;
            }
            if e.orig_dev {
                set(libc::PACKET_ORIGDEV, 1, "PACKET_ORIGDEV")?;
            }
            if e.vnet_hdr {
                set(libc::PACKET_VNET_HDR, 1, "PACKET_VNET_HDR")?;
            }
            if e.loss {
                set(libc::PACKET_LOSS, 1, "PACKET_LOSS")?;
            }
            if e.timestamp != 0 {
                set(libc::PACKET_TIMESTAMP, e.timestamp, "PACKET_TIMESTAMP")?;
            }
            if e.copy_thresh != 0 {
                set(
                    libc::PACKET_COPY_THRESH,
                    e.copy_thresh,
                    "PACKET_COPY_THRESH",
                )?;
            }
            for (opt, ring, name) in [
                (libc::PACKET_RX_RING, &e.rx_ring, "PACKET_RX_RING"),
                (libc::PACKET_TX_RING, &e.tx_ring, "PACKET_TX_RING"),
            ] {
                if let Some(r) = ring {
                    set_ring(sk, opt, r).map_err(|source| SocketError::Sys {
                        what: format!(
                            "setsockopt {name} on {who} ({} blocks of {}, {} frames of {})",
                            r.block_nr, r.block_size, r.frame_nr, r.frame_size
                        ),
                        source,
                    })?;
                }
            }
        }
        if e.ifindex != 0 {
            if e.r#type == SOCK_PACKET {
                return Err(SocketError::SockPacketBound {
                    id: e.id,
                    ifindex: e.ifindex,
                });
            }
            // SAFETY: a zeroed sockaddr_ll is a valid value.
            let mut a: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            a.sll_family = libc::AF_PACKET as u16;
            a.sll_protocol = proto;
            a.sll_ifindex = e.ifindex as i32;
            // SAFETY: bind reads a live sockaddr_ll of the size given.
            let r = unsafe {
                libc::bind(
                    sk,
                    (&a as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if r < 0 {
                return Err(sys(format!("binding {who} to interface {}", e.ifindex)));
            }
        }
        for m in &e.mclist {
            let mut mr = libc::packet_mreq {
                mr_ifindex: m.index as i32,
                mr_type: m.r#type as u16,
                mr_alen: m.addr.len() as u16,
                mr_address: [0; 8],
            };
            mr.mr_address[..m.addr.len().min(8)].copy_from_slice(&m.addr[..m.addr.len().min(8)]);
            // SAFETY: setsockopt reads a live packet_mreq of the size given.
            let r = unsafe {
                libc::setsockopt(
                    sk,
                    libc::SOL_PACKET,
                    libc::PACKET_ADD_MEMBERSHIP,
                    (&mr as *const libc::packet_mreq).cast(),
                    std::mem::size_of::<libc::packet_mreq>() as u32,
                )
            };
            if r < 0 {
                return Err(sys(format!(
                    "adding a membership of {who} on interface {}",
                    m.index
                )));
            }
        }
        if let Some(f) = e.fanout {
            set(libc::PACKET_FANOUT, f, "PACKET_FANOUT")?;
        }
        let fl = e.flags as i32 & (libc::O_NONBLOCK | libc::O_ASYNC);
        // SAFETY: fcntl on a socket we own.
        if fl != 0 && unsafe { libc::fcntl(sk, libc::F_SETFL, fl) } < 0 {
            return Err(sys(format!("setting the flags of {who}")));
        }
        out.insert(e.id, socket::move_up(s, min)?);
    }
    Ok(out)
}

/// Sets up ring `opt` (`PACKET_RX_RING` or `PACKET_TX_RING`) of `sk` as `r` says, with a
/// `tpacket_req3` (the kernel reads its first four fields for TPACKET v1 and v2).
fn set_ring(sk: i32, opt: i32, r: &PacketRing) -> std::io::Result<()> {
    let req = libc::tpacket_req3 {
        tp_block_size: r.block_size,
        tp_block_nr: r.block_nr,
        tp_frame_size: r.frame_size,
        tp_frame_nr: r.frame_nr,
        tp_retire_blk_tov: r.retire_tmo,
        tp_sizeof_priv: r.sizeof_priv,
        tp_feature_req_word: r.features,
    };
    // SAFETY: setsockopt reads a live tpacket_req3 of the size given.
    let n = unsafe {
        libc::setsockopt(
            sk,
            libc::SOL_PACKET,
            opt,
            (&req as *const libc::tpacket_req3).cast(),
            std::mem::size_of::<libc::tpacket_req3>() as u32,
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A task's mapping of a packet socket's rings, made again over its premapped area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingMap {
    /// The premapped area (moved to its place with the others).
    pub at: u64,
    /// Its length.
    pub len: u64,
    /// Its protection.
    pub prot: i32,
    /// The task's descriptor of the socket (in place by then).
    pub fd: i32,
}

/// Maps the rings of the packet socket `m.fd` over the premapped area at `m.at` (`MAP_SHARED`,
/// as the task mapped them), in the restoring task. Returns the errno on failure.
///
/// # Errors
/// The errno of `mmap`.
pub fn map_ring(m: &RingMap) -> Result<(), i32> {
    // SAFETY: `m.at` .. `m.at + m.len` is this task's own premapped placeholder area, which
    // nothing else uses; MAP_FIXED replaces exactly it.
    let r = unsafe {
        libc::mmap(
            m.at as *mut libc::c_void,
            m.len as usize,
            m.prot,
            libc::MAP_SHARED | libc::MAP_FIXED,
            m.fd,
            0,
        )
    };
    if r == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL));
    }
    Ok(())
}

/// The areas of `pid` that map a socket (`VMA_AREA_SOCKET`, `shmid` its inode as
/// [`crate::dump`] met it) get the file id of the task's packet socket on that inode, as CRIU
/// writes it. A mapping of a socket the task has no descriptor of, or of another kind of
/// socket, is refused by name.
///
/// # Errors
/// [`crate::dump::error::DumpError::FileState`] naming the process and the area.
pub fn ring_areas<'a>(
    pid: i32,
    areas: impl Iterator<Item = &'a mut criu_images::pb::VmaEntry>,
    fds: &[criu_images::pb::FdinfoEntry],
) -> Result<(), crate::dump::error::DumpError> {
    use std::os::unix::fs::MetadataExt;
    let status = criu_images::vma::status::SOCKET;
    for v in areas.filter(|v| v.has_status(status)) {
        let ino = v.shmid;
        let id = fds
            .iter()
            .filter(|f| f.r#type == criu_images::pb::FdTypes::Packetsk as i32)
            .find(|f| {
                std::fs::metadata(format!("/proc/{pid}/fd/{}", f.fd)).is_ok_and(|m| m.ino() == ino)
            })
            .map(|f| f.id);
        let Some(id) = id else {
            return Err(crate::dump::error::DumpError::FileState {
                kind: "packet",
                what: format!(
                    "{pid} maps socket:[{ino}] at {:#x} and holds no packet socket descriptor of it (only packet rings of an open socket are dumped)",
                    v.start
                ),
            });
        };
        tracing::debug!(pid, start = v.start, ino, id, "packet ring area");
        v.shmid = u64::from(id);
    }
    Ok(())
}
