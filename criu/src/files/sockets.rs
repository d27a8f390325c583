//! Sockets as one file kind: the dump side dispatches a socket descriptor on its family
//! ([`SocketDump::add`]), the restore side creates every socket of the images in criu before
//! the tasks exist ([`SocketRestore::create`]); the tasks inherit them.
//!
//! Families other than unix, netlink and packet (TCP/UDP before their issue, `AF_VSOCK`, ...)
//! are refused by name and family; the tree runs on.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use criu_images::pb::{FdTypes, FileEntry, NetlinkSkEntry, PacketSockEntry, UnixSkEntry};

use super::socket::{self, SocketError};
use super::{netlink, packet, unix};

/// The sockets met by one dump.
#[derive(Debug, Default)]
pub struct SocketDump {
    /// Unix sockets.
    pub unix: unix::UnixDump,
    /// Netlink sockets.
    pub netlink: netlink::NetlinkDump,
    /// Packet sockets.
    pub packet: packet::PacketDump,
}

impl SocketDump {
    /// Dumps socket `ino` (fd `fd` of `pid`, file status flags `flags`) as file `id`; returns
    /// its `files.img` entry.
    ///
    /// # Errors
    /// [`SocketError::Unsupported`] naming the socket and its family for kinds not covered.
    pub fn add(
        &mut self,
        pid: i32,
        fd: i32,
        ino: u32,
        flags: u32,
        id: u32,
    ) -> Result<FileEntry, SocketError> {
        let sk = socket::steal(pid, fd)?;
        let family = socket::family(sk.as_raw_fd()).map_err(|source| SocketError::Sys {
            what: format!("SO_DOMAIN of fd {fd} of {pid}"),
            source,
        })?;
        let mut e = FileEntry {
            id,
            ..FileEntry::default()
        };
        match family {
            libc::AF_UNIX => {
                e.r#type = FdTypes::Unixsk as i32;
                e.usk = Some(self.unix.add(pid, fd, &sk, ino, flags, id)?);
            }
            libc::AF_NETLINK => {
                e.r#type = FdTypes::Netlinksk as i32;
                e.nlsk = Some(self.netlink.add(pid, fd, &sk, ino, flags, id)?);
            }
            libc::AF_PACKET => {
                e.r#type = FdTypes::Packetsk as i32;
                e.psk = Some(self.packet.add(pid, fd, &sk, ino, flags, id)?);
            }
            f => {
                return Err(SocketError::Unsupported {
                    what: format!(
                        "fd {fd} of {pid}: socket:[{ino}] of family {} (only unix, netlink and packet sockets are dumped)",
                        socket::family_name(f)
                    ),
                });
            }
        }
        Ok(e)
    }

    /// Writes `sk-queues.img`.
    ///
    /// # Errors
    /// [`criu_images::ImageError`].
    pub fn write(&self, dir: &Path) -> Result<(), criu_images::ImageError> {
        self.unix.write_queues(dir)
    }
}

/// The sockets of a restore, read and checked from the images.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SocketRestore {
    /// Unix socket entries of `files.img`.
    pub unix: Vec<UnixSkEntry>,
    /// Netlink socket entries.
    pub netlink: Vec<NetlinkSkEntry>,
    /// Packet socket entries.
    pub packet: Vec<PacketSockEntry>,
    /// Queued unix messages by receiving file id.
    pub queues: HashMap<u32, Vec<Vec<u8>>>,
}

impl SocketRestore {
    /// Takes the socket entries of `files` and `sk-queues.img` of `dir`, checked.
    ///
    /// # Errors
    /// [`SocketError::BadImage`] naming the file (and offset).
    pub fn load(dir: &Path, files: &[FileEntry]) -> Result<SocketRestore, SocketError> {
        let mut out = SocketRestore::default();
        let bad = |id: u32, what: &str| SocketError::BadImage {
            file: criu_images::names::FILES.into(),
            reason: format!("file id {id}: {what} entry without its socket"),
        };
        for f in files {
            if f.r#type == FdTypes::Unixsk as i32 {
                out.unix
                    .push(f.usk.clone().ok_or_else(|| bad(f.id, "UNIXSK"))?);
            } else if f.r#type == FdTypes::Netlinksk as i32 {
                out.netlink
                    .push(f.nlsk.clone().ok_or_else(|| bad(f.id, "NETLINKSK"))?);
            } else if f.r#type == FdTypes::Packetsk as i32 {
                out.packet
                    .push(f.psk.clone().ok_or_else(|| bad(f.id, "PACKETSK"))?);
            }
        }
        let any = !out.unix.is_empty() || !out.netlink.is_empty() || !out.packet.is_empty();
        if any {
            out.queues = unix::read_queues(dir)?;
        }
        unix::check(&out.unix, &out.queues)?;
        netlink::check(&out.netlink)?;
        packet::check(&out.packet)?;
        Ok(out)
    }

    /// Whether there is nothing to create.
    pub fn is_empty(&self) -> bool {
        self.unix.is_empty() && self.netlink.is_empty() && self.packet.is_empty()
    }

    /// Creates every socket whose file id is in `wanted` (held by a task), numbered `min` or
    /// above: file id -> descriptor.
    ///
    /// # Errors
    /// [`SocketError`] naming the socket.
    pub fn create(
        &self,
        wanted: &HashSet<u32>,
        min: i32,
    ) -> Result<HashMap<u32, OwnedFd>, SocketError> {
        let mut out = unix::create_all(&self.unix, wanted, &self.queues, min)?;
        out.extend(netlink::create_all(&self.netlink, wanted, min)?);
        out.extend(packet::create_all(&self.packet, wanted, min)?);
        Ok(out)
    }
}
