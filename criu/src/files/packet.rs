//! Packet sockets (`AF_PACKET`: `SOCK_RAW`, `SOCK_DGRAM`, the obsolete `SOCK_PACKET`), both
//! sides.
//!
//! Dump: type, protocol, bound interface, version, reserve, aux data / orig dev / vnet header /
//! loss flags, timestamp, copy threshold, memberships and fanout (one packet_diag dump per
//! criu dump), options, as CRIU's `packet_sock_entry`. Sockets with `PACKET_RX_RING` /
//! `PACKET_TX_RING` rings are refused by name (not covered yet); the receive queue (packets
//! captured and not read) is dropped, as CRIU does.
//!
//! Restore: the socket with its settings, bound to the interface, memberships added, fanout
//! joined.
// Unsafe code: makes and binds packet sockets with a raw sockaddr_ll and adopts their descriptors.
#![allow(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use criu_images::names;
use criu_images::pb::{PacketMclist, PacketSockEntry};

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
        if d.rx_ring.is_some() || d.tx_ring.is_some() {
            return Err(SocketError::PacketRing { at });
        }
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
            rx_ring: None,
            tx_ring: None,
            ns_id: None,
        })
    }
}

/// Checks packet entries before anything is created.
///
/// # Errors
/// [`SocketError::BadImage`], or [`SocketError::PacketRings`].
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
        if e.rx_ring.is_some() || e.tx_ring.is_some() {
            return Err(SocketError::PacketRings { id: e.id });
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
