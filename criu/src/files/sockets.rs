//! Sockets as file kinds: the dump side takes every `socket:[INO]` descriptor and dispatches
//! it on its family ([`Sockets`]: unix, netlink, packet; any other family is refused by name and
//! family, the tree runs on); the restore side has one kind per entry type ([`UnixKind`],
//! [`NetlinkKind`], [`PacketKind`]).
//!
//! Every socket is made by the engine before the tasks exist, and the tasks inherit it. The
//! unix sockets of the images are made together, as one object ([`RestoreFile::group`] 0, one
//! end per socket), because connecting them, refilling their queues and rebuilding backlogs
//! needs all of them at once; netlink and packet sockets are objects of their own.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use criu_images::pb::{
    FdTypes, FileEntry, InetSkEntry, NetlinkSkEntry, PacketSockEntry, UnixSkEntry,
};

use super::socket::{self, SocketError};
use super::{
    DumpFd, Ends, FileKind, ImageCtx, RestoreFile, TaskError, inet, netlink, packet, tcp, unix,
};
use crate::dump::DumpError;
use crate::restore::RestoreError;

/// A socket module's error as a dump error.
pub fn dump_err(e: SocketError) -> DumpError {
    match e {
        SocketError::Sys { what, source } => DumpError::File { what, source },
        other => DumpError::Socket(other),
    }
}

/// A socket module's error as a restore error.
pub fn restore_err(e: SocketError) -> RestoreError {
    match e {
        SocketError::Sys { what, source } => RestoreError::Io {
            what,
            error: source,
        },
        SocketError::BadImage { file, reason } => RestoreError::BadImage { file, reason },
        other => RestoreError::Socket(other),
    }
}

/// The dump side of every socket family: the sockets met by one dump.
#[derive(Debug, Default)]
pub struct Sockets {
    /// Unix sockets.
    pub unix: unix::UnixDump,
    /// Netlink sockets.
    pub netlink: netlink::NetlinkDump,
    /// Packet sockets.
    pub packet: packet::PacketDump,
    /// Inet sockets.
    pub inet: inet::InetDump,
    /// Restore: the unix sockets of the images, read once for every entry.
    restore_unix: UnixKind,
}

impl Sockets {
    /// Dumps socket `ino` (fd `fd` of `pid`, file status flags `flags`) as file `id`.
    ///
    /// # Errors
    /// [`SocketError::Family`] naming the socket and its family for kinds not covered; the
    /// refusals of each family's module.
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
            libc::AF_INET | libc::AF_INET6 => {
                e.r#type = FdTypes::Inetsk as i32;
                e.isk = Some(self.inet.add(pid, fd, &sk, ino, flags, id, family)?);
            }
            f => {
                return Err(SocketError::Family {
                    at: socket::SockAt { pid, fd, ino },
                    family: socket::family_name(f),
                });
            }
        }
        Ok(e)
    }
}

/// The inode of a `socket:[INO]` link.
fn socket_ino(name: &str) -> Option<u32> {
    name.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

impl FileKind for Sockets {
    fn fd_type(&self) -> FdTypes {
        FdTypes::Unixsk
    }

    fn claims(&self, fd: &DumpFd<'_>) -> bool {
        socket_ino(fd.name).is_some()
    }

    fn dump(&mut self, fd: &DumpFd<'_>, id: u32) -> Result<FileEntry, DumpError> {
        let ino = socket_ino(fd.name).unwrap_or(0);
        self.inet.tcp_established = fd.tcp_established;
        self.add(fd.pid, fd.fd, ino, fd.info.flags, id)
            .map_err(dump_err)
    }

    fn finish(
        &mut self,
        entries: &mut Vec<FileEntry>,
        ext_unix_sk: Option<&[u32]>,
    ) -> Result<(), DumpError> {
        let mut next = entries.len() as u32 + 1;
        let extra = self
            .unix
            .finish(ext_unix_sk, || {
                let id = next;
                next += 1;
                id
            })
            .map_err(dump_err)?;
        for e in entries.iter_mut() {
            if let Some(u) = e.usk.as_mut()
                && let Some(f) = self.unix.entry(u.ino)
            {
                *u = f.clone();
            }
        }
        for u in extra {
            entries.push(FileEntry {
                r#type: FdTypes::Unixsk as i32,
                id: u.id,
                usk: Some(u),
                ..FileEntry::default()
            });
        }
        Ok(())
    }

    fn dump_done(&mut self, killed: bool) {
        self.inet.dump_done(killed);
    }

    fn write(&self, dir: &Path) -> Result<(), DumpError> {
        self.unix.write_queues(dir)?;
        self.inet.write(dir).map_err(dump_err)?;
        Ok(())
    }

    fn parse(
        &mut self,
        img: &ImageCtx<'_>,
        e: &FileEntry,
        fd: i32,
    ) -> Result<Arc<dyn RestoreFile>, RestoreError> {
        self.restore_unix.parse(img, e, fd)
    }
}

/// The unix sockets of the images, made once for the whole tree.
#[derive(Debug)]
pub struct UnixSet {
    entries: Vec<UnixSkEntry>,
    queues: HashMap<u32, Vec<Vec<u8>>>,
    /// File ids of the sockets the tasks hold (every entry but outside peers), in end order.
    ids: Vec<u32>,
}

impl UnixSet {
    /// Reads and checks every unix socket entry of `files.img` and `sk-queues.img`.
    ///
    /// # Errors
    /// [`RestoreError::BadImage`] naming the file (and offset).
    pub fn load(img: &ImageCtx<'_>) -> Result<UnixSet, RestoreError> {
        let files = img
            .dir
            .read_files()
            .map_err(|e| crate::restore::images::img(criu_images::names::FILES, e))?;
        let mut entries = Vec::new();
        for f in &files {
            if f.r#type == FdTypes::Unixsk as i32 {
                entries.push(f.usk.clone().ok_or_else(|| {
                    crate::restore::images::bad(
                        criu_images::names::FILES,
                        format!("file id {}: UNIXSK entry without its socket", f.id),
                    )
                })?);
            }
        }
        let queues = unix::read_queues(img.dir.path()).map_err(restore_err)?;
        unix::check(&entries, &queues).map_err(restore_err)?;
        let ids = entries
            .iter()
            .filter(|e| e.uflags & unix::USK_EXTERN == 0)
            .map(|e| e.id)
            .collect();
        Ok(UnixSet {
            entries,
            queues,
            ids,
        })
    }
}

/// The restore side of unix sockets (`UNIXSK` entries).
#[derive(Debug, Default)]
pub struct UnixKind {
    set: Option<Arc<UnixSet>>,
}

impl FileKind for UnixKind {
    fn fd_type(&self) -> FdTypes {
        FdTypes::Unixsk
    }

    fn claims(&self, _fd: &DumpFd<'_>) -> bool {
        false
    }

    fn dump(&mut self, fd: &DumpFd<'_>, _id: u32) -> Result<FileEntry, DumpError> {
        Err(DumpError::NotClaimed {
            pid: fd.pid,
            fd: fd.fd,
        })
    }

    fn parse(
        &mut self,
        img: &ImageCtx<'_>,
        e: &FileEntry,
        fd: i32,
    ) -> Result<Arc<dyn RestoreFile>, RestoreError> {
        let u = crate::restore::images::kind_entry(&e.usk, fd, "unix socket")?;
        if self.set.is_none() {
            self.set = Some(Arc::new(UnixSet::load(img)?));
        }
        let set = self.set.clone().ok_or(RestoreError::NoUnixSockets)?;
        let Some(index) = set.ids.iter().position(|&i| i == u.id) else {
            return Err(crate::restore::images::bad(
                criu_images::names::FILES,
                format!("fd {fd}: unix socket id {} is an outside peer", u.id),
            ));
        };
        Ok(Arc::new(UnixFile { set, index }))
    }
}

/// One unix socket of a task: end `index` of the object made of every unix socket.
#[derive(Debug)]
pub struct UnixFile {
    set: Arc<UnixSet>,
    index: usize,
}

impl RestoreFile for UnixFile {
    fn fd_type(&self) -> FdTypes {
        FdTypes::Unixsk
    }

    fn group(&self) -> Option<u64> {
        Some(0)
    }

    fn end(&self) -> usize {
        self.index
    }

    fn made_by_engine(&self) -> bool {
        true
    }

    fn make_in_task(&self, fd: i32) -> Result<Ends, TaskError> {
        Err(TaskError {
            errno: libc::EOPNOTSUPP,
            detail: fd as u64,
        })
    }

    fn make_in_engine(&self) -> Result<Vec<OwnedFd>, RestoreError> {
        let wanted: HashSet<u32> = self.set.ids.iter().copied().collect();
        let mut made = unix::create_all(&self.set.entries, &wanted, &self.set.queues, 3)
            .map_err(restore_err)?;
        let mut out = Vec::with_capacity(self.set.ids.len());
        for id in &self.set.ids {
            out.push(
                made.remove(id)
                    .ok_or(RestoreError::UnixNotMade { id: *id })?,
            );
        }
        Ok(out)
    }
}

/// The restore side of netlink sockets (`NETLINKSK` entries).
#[derive(Debug, Default)]
pub struct NetlinkKind;

impl FileKind for NetlinkKind {
    fn fd_type(&self) -> FdTypes {
        FdTypes::Netlinksk
    }

    fn claims(&self, _fd: &DumpFd<'_>) -> bool {
        false
    }

    fn dump(&mut self, fd: &DumpFd<'_>, _id: u32) -> Result<FileEntry, DumpError> {
        Err(DumpError::NotClaimed {
            pid: fd.pid,
            fd: fd.fd,
        })
    }

    fn parse(
        &mut self,
        _img: &ImageCtx<'_>,
        e: &FileEntry,
        fd: i32,
    ) -> Result<Arc<dyn RestoreFile>, RestoreError> {
        let n = crate::restore::images::kind_entry(&e.nlsk, fd, "netlink socket")?;
        netlink::check(std::slice::from_ref(n)).map_err(restore_err)?;
        Ok(Arc::new(NetlinkFile(n.clone())))
    }
}

/// One netlink socket.
#[derive(Debug)]
pub struct NetlinkFile(NetlinkSkEntry);

impl RestoreFile for NetlinkFile {
    fn fd_type(&self) -> FdTypes {
        FdTypes::Netlinksk
    }

    fn made_by_engine(&self) -> bool {
        true
    }

    fn make_in_task(&self, fd: i32) -> Result<Ends, TaskError> {
        Err(TaskError {
            errno: libc::EOPNOTSUPP,
            detail: fd as u64,
        })
    }

    fn make_in_engine(&self) -> Result<Vec<OwnedFd>, RestoreError> {
        let wanted = HashSet::from([self.0.id]);
        let mut m =
            netlink::create_all(std::slice::from_ref(&self.0), &wanted, 3).map_err(restore_err)?;
        Ok(m.remove(&self.0.id).into_iter().collect())
    }
}

/// The restore side of packet sockets (`PACKETSK` entries).
#[derive(Debug, Default)]
pub struct PacketKind;

impl FileKind for PacketKind {
    fn fd_type(&self) -> FdTypes {
        FdTypes::Packetsk
    }

    fn claims(&self, _fd: &DumpFd<'_>) -> bool {
        false
    }

    fn dump(&mut self, fd: &DumpFd<'_>, _id: u32) -> Result<FileEntry, DumpError> {
        Err(DumpError::NotClaimed {
            pid: fd.pid,
            fd: fd.fd,
        })
    }

    fn parse(
        &mut self,
        _img: &ImageCtx<'_>,
        e: &FileEntry,
        fd: i32,
    ) -> Result<Arc<dyn RestoreFile>, RestoreError> {
        let p = crate::restore::images::kind_entry(&e.psk, fd, "packet socket")?;
        packet::check(std::slice::from_ref(p)).map_err(restore_err)?;
        Ok(Arc::new(PacketFile(p.clone())))
    }
}

/// One packet socket.
#[derive(Debug)]
pub struct PacketFile(PacketSockEntry);

impl RestoreFile for PacketFile {
    fn fd_type(&self) -> FdTypes {
        FdTypes::Packetsk
    }

    fn made_by_engine(&self) -> bool {
        true
    }

    fn make_in_task(&self, fd: i32) -> Result<Ends, TaskError> {
        Err(TaskError {
            errno: libc::EOPNOTSUPP,
            detail: fd as u64,
        })
    }

    fn make_in_engine(&self) -> Result<Vec<OwnedFd>, RestoreError> {
        let wanted = HashSet::from([self.0.id]);
        let mut m =
            packet::create_all(std::slice::from_ref(&self.0), &wanted, 3).map_err(restore_err)?;
        Ok(m.remove(&self.0.id).into_iter().collect())
    }
}

/// The inet sockets of the images, made once for the whole tree (connections leave repair
/// mode only once every socket is made).
#[derive(Debug)]
pub struct InetSet {
    entries: Vec<InetSkEntry>,
    streams: HashMap<u32, tcp::Stream>,
}

impl InetSet {
    /// Reads and checks every inet socket entry of `files.img` and its `tcp-stream` image.
    ///
    /// # Errors
    /// [`RestoreError::BadImage`] naming the file, [`RestoreError::FileState`].
    pub fn load(img: &ImageCtx<'_>) -> Result<InetSet, RestoreError> {
        let files = img
            .dir
            .read_files()
            .map_err(|e| crate::restore::images::img(criu_images::names::FILES, e))?;
        let mut entries = Vec::new();
        for f in &files {
            if f.r#type == FdTypes::Inetsk as i32 {
                entries.push(f.isk.clone().ok_or_else(|| {
                    crate::restore::images::bad(
                        criu_images::names::FILES,
                        format!("file id {}: INETSK entry without its socket", f.id),
                    )
                })?);
            }
        }
        inet::check(&entries).map_err(restore_err)?;
        let mut streams = HashMap::new();
        for e in &entries {
            if e.proto == libc::IPPROTO_TCP as u32 && e.state == inet::TCP_ESTABLISHED {
                streams.insert(
                    e.ino,
                    tcp::read(img.dir.path(), e.ino).map_err(restore_err)?,
                );
            }
        }
        Ok(InetSet { entries, streams })
    }
}

/// The restore side of inet sockets (`INETSK` entries).
#[derive(Debug, Default)]
pub struct InetKind {
    set: Option<Arc<InetSet>>,
}

impl FileKind for InetKind {
    fn fd_type(&self) -> FdTypes {
        FdTypes::Inetsk
    }

    fn claims(&self, _fd: &DumpFd<'_>) -> bool {
        false
    }

    fn dump(&mut self, fd: &DumpFd<'_>, _id: u32) -> Result<FileEntry, DumpError> {
        Err(DumpError::FileState {
            kind: "inet",
            what: format!("fd {} of {}: not claimed by the socket kind", fd.fd, fd.pid),
        })
    }

    fn parse(
        &mut self,
        img: &ImageCtx<'_>,
        e: &FileEntry,
        fd: i32,
    ) -> Result<Arc<dyn RestoreFile>, RestoreError> {
        let i = crate::restore::images::kind_entry(&e.isk, fd, "inet socket")?;
        if self.set.is_none() {
            self.set = Some(Arc::new(InetSet::load(img)?));
        }
        let set = self.set.clone().ok_or_else(|| RestoreError::FileState {
            kind: "inet",
            what: "inet sockets".into(),
        })?;
        let Some(index) = set.entries.iter().position(|x| x.id == i.id) else {
            return Err(crate::restore::images::bad(
                criu_images::names::FILES,
                format!("fd {fd}: inet socket id {} not in files.img", i.id),
            ));
        };
        Ok(Arc::new(InetFile { set, index }))
    }
}

/// One inet socket of a task: end `index` of the object made of every inet socket.
#[derive(Debug)]
pub struct InetFile {
    set: Arc<InetSet>,
    index: usize,
}

impl RestoreFile for InetFile {
    fn fd_type(&self) -> FdTypes {
        FdTypes::Inetsk
    }

    fn group(&self) -> Option<u64> {
        Some(0)
    }

    fn end(&self) -> usize {
        self.index
    }

    fn made_by_engine(&self) -> bool {
        true
    }

    fn make_in_task(&self, fd: i32) -> Result<Ends, TaskError> {
        Err(TaskError {
            errno: libc::EOPNOTSUPP,
            detail: fd as u64,
        })
    }

    fn make_in_engine(&self) -> Result<Vec<OwnedFd>, RestoreError> {
        let wanted: HashSet<u32> = self.set.entries.iter().map(|e| e.id).collect();
        let mut made = inet::create_all(&self.set.entries, &wanted, &self.set.streams, 3)
            .map_err(restore_err)?;
        let mut out = Vec::with_capacity(self.set.entries.len());
        for e in &self.set.entries {
            out.push(made.remove(&e.id).ok_or_else(|| RestoreError::FileState {
                kind: "inet",
                what: format!("inet socket id {} was not made", e.id),
            })?);
        }
        Ok(out)
    }
}
