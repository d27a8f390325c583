//! Sockets as file kinds: the dump side takes every `socket:[INO]` descriptor and dispatches
//! it on its family ([`Sockets`]: unix, netlink, packet; any other family is refused by name and
//! family, the tree runs on); the restore side has one kind per entry type ([`UnixKind`],
//! [`NetlinkKind`], [`PacketKind`]).
//!
//! Every socket is made by the engine before the tasks exist, and the tasks inherit it. The
//! unix sockets of the images are made together, as one object ([`RestoreFile::group`] 0, one
//! end per socket), because connecting them, refilling their queues and rebuilding backlogs
//! needs all of them at once; netlink and packet sockets are objects of their own, one generic
//! kind and file over their entries ([`EngineSocket`], [`SocketFile`]).

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use criu_images::pb::{
    FdTypes, FileEntry, InetSkEntry, NetlinkSkEntry, PacketSockEntry, UnixSkEntry,
};

use super::socket::{self, SocketError};
use super::{
    DumpFd, Ends, FileKind, FilesById, ImageCtx, RestoreFile, TaskError, inet, netlink, packet,
    tcp, unix,
};
use crate::dump::error::DumpError;
use crate::restore::error::RestoreError;

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
    /// How many of the last files in flight were unix ones.
    unix_in_flight: usize,
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
        let s = socket::DumpSock {
            at: socket::SockAt { pid, fd, ino },
            sk: &sk,
            flags,
            id,
        };
        match family {
            libc::AF_UNIX => {
                e.r#type = FdTypes::Unixsk as i32;
                e.usk = Some(self.unix.add(&s)?);
            }
            libc::AF_NETLINK => {
                e.r#type = FdTypes::Netlinksk as i32;
                e.nlsk = Some(self.netlink.add(&s)?);
            }
            libc::AF_PACKET => {
                e.r#type = FdTypes::Packetsk as i32;
                e.psk = Some(self.packet.add(&s)?);
            }
            libc::AF_INET | libc::AF_INET6 => {
                e.r#type = FdTypes::Inetsk as i32;
                e.isk = Some(self.inet.add(&s, family)?);
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
        self.inet.tcp_close = fd.tcp_close;
        self.inet.skip_in_flight = fd.skip_in_flight;
        self.inet.conn_lock = fd.conn_lock.cloned();
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

    fn take_in_flight(&mut self, tree_dies: bool) -> Result<Vec<OwnedFd>, DumpError> {
        let mut fds = self.unix.take_in_flight(tree_dies).map_err(dump_err)?;
        self.unix_in_flight = fds.len();
        // Connections queued on inet listeners, after the unix files (their ids come first).
        fds.extend(self.inet.take_queued(tree_dies).map_err(dump_err)?);
        Ok(fds)
    }

    fn in_flight_ids(&mut self, ids: &[u32]) {
        self.unix
            .set_in_flight_ids(ids.get(..self.unix_in_flight).unwrap_or(ids));
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

/// The entries of type `ty` in `files.img` (`part` picks the entry's own message, `what` names
/// the type in messages).
fn entries_of<T: Clone>(
    img: &ImageCtx<'_>,
    ty: FdTypes,
    part: impl Fn(&FileEntry) -> &Option<T>,
    what: &str,
) -> Result<Vec<T>, RestoreError> {
    let files = img
        .dir
        .read_files()
        .map_err(|e| crate::restore::images::entry::img(criu_images::names::FILES, e))?;
    let mut entries = Vec::new();
    for f in &files {
        if f.r#type == ty as i32 {
            entries.push(part(f).clone().ok_or_else(|| {
                crate::restore::images::entry::bad(
                    criu_images::names::FILES,
                    format!("file id {}: {what} entry without its socket", f.id),
                )
            })?);
        }
    }
    Ok(entries)
}

/// A socket family whose sockets of the whole tree are made together, as one object whose ends
/// the tasks hold (unix: connections, queues and backlogs need every socket; inet: connections
/// leave repair mode only once every socket is made). [`SetKind`] and [`SetFile`] are shared.
pub trait SocketSet: std::fmt::Debug + Send + Sync + Sized + 'static {
    /// Its entry in `files.img`.
    type Entry;
    /// Its `files.img` type.
    const FD_TYPE: FdTypes;
    /// Its name in messages.
    const WHAT: &'static str;
    /// Its part of a `files.img` entry.
    fn entry(e: &FileEntry) -> &Option<Self::Entry>;
    /// Reads and checks every entry of the family in the images.
    ///
    /// # Errors
    /// [`RestoreError::BadImage`] naming the file, and the family's own checks.
    fn load(img: &ImageCtx<'_>) -> Result<Self, RestoreError>;
    /// The end that fd `fd` of a task (entry `e`) is.
    ///
    /// # Errors
    /// [`RestoreError::BadImage`] for an entry no task can hold.
    fn end_of(&self, e: &Self::Entry, fd: i32) -> Result<usize, RestoreError>;
    /// Makes every socket of the set: one descriptor per end, in end order.
    ///
    /// # Errors
    /// The family's errors, naming the socket.
    fn make_all(&self) -> Result<Vec<OwnedFd>, RestoreError> {
        self.make_all_with(&[])
    }
    /// The files other than sockets of the set that the set needs made first (files in
    /// flight in its queues), by file id ([`RestoreFile::engine_files`]).
    fn engine_files(&self) -> &FilesById {
        &[]
    }
    /// [`SocketSet::make_all`] given the engine's descriptors of [`SocketSet::engine_files`],
    /// in that order.
    ///
    /// # Errors
    /// The family's errors, naming the socket.
    fn make_all_with(&self, files: &[i32]) -> Result<Vec<OwnedFd>, RestoreError>;
    /// What is left to do once every task of the tree is born and before any runs
    /// ([`RestoreFile::after_tree`]).
    ///
    /// # Errors
    /// The family's errors, naming the socket.
    fn after_tree(&self, host: &dyn Fn(i32) -> Option<i32>, init: i32) -> Result<(), RestoreError> {
        let _ = (host, init);
        Ok(())
    }
    /// Whether [`SocketSet::after_tree`] has work.
    fn has_after_tree(&self) -> bool {
        false
    }
}

/// The restore side of a [`SocketSet`] family: the set is loaded once, with its first entry.
#[derive(Debug)]
pub struct SetKind<S> {
    set: Option<Arc<S>>,
}

impl<S> Default for SetKind<S> {
    fn default() -> Self {
        SetKind { set: None }
    }
}

impl<S: SocketSet> FileKind for SetKind<S> {
    fn fd_type(&self) -> FdTypes {
        S::FD_TYPE
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
        let entry = crate::restore::images::entry::kind_entry(S::entry(e), fd, S::WHAT)?;
        let set = match &self.set {
            Some(set) => set.clone(),
            None => self.set.insert(Arc::new(S::load(img)?)).clone(),
        };
        let index = set.end_of(entry, fd)?;
        Ok(Arc::new(SetFile { set, index }))
    }
}

/// One socket of a task: end `index` of the object made of every socket of its set.
#[derive(Debug)]
pub struct SetFile<S> {
    set: Arc<S>,
    index: usize,
}

impl<S: SocketSet> RestoreFile for SetFile<S> {
    fn fd_type(&self) -> FdTypes {
        S::FD_TYPE
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
        self.set.make_all()
    }

    fn engine_files(&self) -> &FilesById {
        self.set.engine_files()
    }

    fn make_in_engine_with(&self, targets: &[i32]) -> Result<Vec<OwnedFd>, RestoreError> {
        self.set.make_all_with(targets)
    }

    fn after_tree(&self, host: &dyn Fn(i32) -> Option<i32>, init: i32) -> Result<(), RestoreError> {
        self.set.after_tree(host, init)
    }

    fn has_after_tree(&self) -> bool {
        self.set.has_after_tree()
    }
}

/// The unix sockets of the images, made once for the whole tree.
#[derive(Debug)]
pub struct UnixSet {
    entries: Vec<UnixSkEntry>,
    queues: HashMap<u32, Vec<unix::Queued>>,
    /// File ids of the sockets the tasks hold (every entry but outside peers and connections
    /// still queued on a listener), in end order.
    ids: Vec<u32>,
    /// The files in flight in the queues that are no unix socket of the set, parsed from
    /// their entries.
    flight: Box<FilesById>,
    /// Whether the tree gets a pid namespace of its own (its root is pid 1 in the images).
    own_pid_ns: bool,
    /// Queues refilled once the tree exists ([`unix::late`]).
    later: std::sync::Mutex<Vec<unix::late::Deferred>>,
}

/// The files other than unix sockets in flight in `queues`, each parsed from its `files.img`
/// entry by its kind.
fn parse_flight(
    img: &ImageCtx<'_>,
    entries: &[UnixSkEntry],
    queues: &HashMap<u32, Vec<unix::Queued>>,
) -> Result<Box<FilesById>, RestoreError> {
    let socks: HashSet<u32> = entries.iter().map(|e| e.id).collect();
    let mut ids: Vec<u32> = queues
        .values()
        .flatten()
        .flat_map(|m| m.rights.iter().copied())
        .filter(|id| !socks.contains(id))
        .collect();
    if ids.is_empty() {
        return Ok(Box::default());
    }
    ids.sort_unstable();
    ids.dedup();
    let files = img
        .dir
        .read_files()
        .map_err(|e| crate::restore::images::entry::img(criu_images::names::FILES, e))?;
    let mut kinds = super::kinds();
    kinds.push(Box::new(super::regular::Regular::default()));
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let bad = |why: String| {
            crate::restore::images::entry::bad(
                criu_images::names::SK_QUEUES,
                format!("a file in flight, id {id}: {why}"),
            )
        };
        let fe = files
            .iter()
            .find(|f| f.id == id)
            .ok_or_else(|| bad("no entry in files.img".into()))?;
        let kind = kinds
            .iter_mut()
            .find(|k| k.fd_type() as i32 == fe.r#type)
            .ok_or_else(|| bad(format!("type {}", fe.r#type)))?;
        tracing::debug!(id, kind = %super::kind_name(kind.fd_type()), "a file in flight");
        out.push((id, kind.parse(img, fe, -1)?));
    }
    Ok(out.into_boxed_slice())
}

impl SocketSet for UnixSet {
    type Entry = UnixSkEntry;
    const FD_TYPE: FdTypes = FdTypes::Unixsk;
    const WHAT: &'static str = "unix socket";

    fn entry(e: &FileEntry) -> &Option<UnixSkEntry> {
        &e.usk
    }

    /// Reads and checks every unix socket entry of `files.img` and `sk-queues.img`.
    fn load(img: &ImageCtx<'_>) -> Result<UnixSet, RestoreError> {
        let entries = entries_of(img, FdTypes::Unixsk, |f| &f.usk, "UNIXSK")?;
        let queues = unix::read_queues(img.dir.path()).map_err(restore_err)?;
        unix::check(&entries, &queues).map_err(restore_err)?;
        let queued = unix::embryos(&entries);
        let ids = entries
            .iter()
            .filter(|e| e.uflags & unix::USK_EXTERN == 0 && !queued.contains(&e.ino))
            .map(|e| e.id)
            .collect();
        let flight = parse_flight(img, &entries, &queues)?;
        let own_pid_ns = img
            .dir
            .read_pstree()
            .is_ok_and(|t| t.first().is_some_and(|r| r.pid == 1));
        Ok(UnixSet {
            entries,
            queues,
            ids,
            flight,
            own_pid_ns,
            later: std::sync::Mutex::new(Vec::new()),
        })
    }

    fn end_of(&self, u: &UnixSkEntry, fd: i32) -> Result<usize, RestoreError> {
        self.ids.iter().position(|&i| i == u.id).ok_or_else(|| {
            crate::restore::images::entry::bad(
                criu_images::names::FILES,
                format!("fd {fd}: unix socket id {} is an outside peer", u.id),
            )
        })
    }

    fn engine_files(&self) -> &FilesById {
        &self.flight
    }

    fn make_all_with(&self, files: &[i32]) -> Result<Vec<OwnedFd>, RestoreError> {
        if files.len() != self.flight.len() {
            return Err(RestoreError::FileState {
                kind: "unix",
                what: format!(
                    "{} of {} files in flight were made",
                    files.len(),
                    self.flight.len()
                ),
            });
        }
        let flight: HashMap<u32, i32> = self
            .flight
            .iter()
            .map(|(id, _)| *id)
            .zip(files.iter().copied())
            .collect();
        let wanted: HashSet<u32> = self.ids.iter().copied().collect();
        let mut later = Vec::new();
        let defer = self.own_pid_ns.then_some(&mut later);
        let mut made = unix::create_all(&self.entries, &wanted, &self.queues, &flight, 3, defer)
            .map_err(restore_err)?;
        if let Ok(mut l) = self.later.lock() {
            l.extend(later);
        }
        let mut out = Vec::with_capacity(self.ids.len());
        for id in &self.ids {
            out.push(
                made.remove(id)
                    .ok_or(RestoreError::UnixNotMade { id: *id })?,
            );
        }
        Ok(out)
    }
    fn after_tree(&self, host: &dyn Fn(i32) -> Option<i32>, init: i32) -> Result<(), RestoreError> {
        let later = match self.later.lock() {
            Ok(mut l) => std::mem::take(&mut *l),
            Err(_) => Vec::new(),
        };
        for d in &later {
            d.refill(host, init).map_err(restore_err)?;
        }
        Ok(())
    }

    fn has_after_tree(&self) -> bool {
        self.later.lock().is_ok_and(|l| !l.is_empty())
    }
}

/// The restore side of unix sockets (`UNIXSK` entries).
pub type UnixKind = SetKind<UnixSet>;

/// The inet sockets of the images, made once for the whole tree (connections leave repair
/// mode only once every socket is made).
#[derive(Debug)]
pub struct InetSet {
    entries: Vec<InetSkEntry>,
    streams: HashMap<u32, tcp::Stream>,
}

impl SocketSet for InetSet {
    type Entry = InetSkEntry;
    const FD_TYPE: FdTypes = FdTypes::Inetsk;
    const WHAT: &'static str = "inet socket";

    fn entry(e: &FileEntry) -> &Option<InetSkEntry> {
        &e.isk
    }

    /// Reads and checks every inet socket entry of `files.img` and its `tcp-stream` image.
    fn load(img: &ImageCtx<'_>) -> Result<InetSet, RestoreError> {
        let entries = entries_of(img, FdTypes::Inetsk, |f| &f.isk, "INETSK")?;
        inet::check(&entries).map_err(restore_err)?;
        let mut streams = HashMap::new();
        // Dumped with --tcp-close: connections have no stream image and come back closed.
        let tcp_close = img.opts.tcp_close
            || img
                .dir
                .read_inventory()
                .is_ok_and(|i| i.tcp_close == Some(true));
        for e in &entries {
            if e.proto == libc::IPPROTO_TCP as u32
                && e.r#type == libc::SOCK_STREAM as u32
                && soccr::supported(e.state)
                && !tcp_close
            {
                streams.insert(
                    e.ino,
                    tcp::read(img.dir.path(), e.ino).map_err(restore_err)?,
                );
            }
        }
        Ok(InetSet { entries, streams })
    }

    fn end_of(&self, i: &InetSkEntry, fd: i32) -> Result<usize, RestoreError> {
        self.entries
            .iter()
            .filter(|x| x.queued_on.is_none())
            .position(|x| x.id == i.id)
            .ok_or_else(|| {
                crate::restore::images::entry::bad(
                    criu_images::names::FILES,
                    format!("fd {fd}: inet socket id {} not in files.img", i.id),
                )
            })
    }

    fn make_all_with(&self, _files: &[i32]) -> Result<Vec<OwnedFd>, RestoreError> {
        let wanted: HashSet<u32> = self.entries.iter().map(|e| e.id).collect();
        let mut made =
            inet::create_all(&self.entries, &wanted, &self.streams, 3).map_err(restore_err)?;
        let mut out = Vec::with_capacity(self.entries.len());
        // Connections queued on a listener are no task's.
        for e in self.entries.iter().filter(|e| e.queued_on.is_none()) {
            out.push(made.remove(&e.id).ok_or_else(|| RestoreError::FileState {
                kind: "inet",
                what: format!("inet socket id {} was not made", e.id),
            })?);
        }
        Ok(out)
    }
}

/// The restore side of inet sockets (`INETSK` entries).
pub type InetKind = SetKind<InetSet>;

/// A socket family whose sockets are objects of their own, each made by the engine from its
/// entry alone (netlink, packet): what differs between them is the entry, its checks and how
/// it is made; [`FileKind`] (restore side only: [`Sockets`] dumps them) and [`SocketFile`]
/// are shared.
pub trait EngineSocket: std::fmt::Debug + Send + Sync + 'static {
    /// Its entry in `files.img`.
    type Entry: Clone + std::fmt::Debug + Send + Sync + 'static;
    /// Its `files.img` type.
    const FD_TYPE: FdTypes;
    /// Its name in messages.
    const WHAT: &'static str;
    /// Its part of a `files.img` entry.
    fn entry(e: &FileEntry) -> &Option<Self::Entry>;
    /// The file id of an entry.
    fn id(e: &Self::Entry) -> u32;
    /// Checks entries before anything is made.
    ///
    /// # Errors
    /// [`SocketError::BadImage`] naming the entry.
    fn check(entries: &[Self::Entry]) -> Result<(), SocketError>;
    /// Makes the sockets of `entries` that `wanted` names, numbered `min` or above.
    ///
    /// # Errors
    /// [`SocketError`] naming the socket and what failed.
    fn create_all(
        entries: &[Self::Entry],
        wanted: &HashSet<u32>,
        min: i32,
    ) -> Result<HashMap<u32, OwnedFd>, SocketError>;
}

impl<K: EngineSocket> FileKind for K {
    fn fd_type(&self) -> FdTypes {
        K::FD_TYPE
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
        let n = crate::restore::images::entry::kind_entry(K::entry(e), fd, K::WHAT)?;
        K::check(std::slice::from_ref(n)).map_err(restore_err)?;
        Ok(Arc::new(SocketFile::<K>(n.clone())))
    }
}

/// One socket of a family of [`EngineSocket`]s.
#[derive(Debug)]
pub struct SocketFile<K: EngineSocket>(K::Entry);

impl<K: EngineSocket> RestoreFile for SocketFile<K> {
    fn fd_type(&self) -> FdTypes {
        K::FD_TYPE
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
        let id = K::id(&self.0);
        let wanted = HashSet::from([id]);
        let mut m =
            K::create_all(std::slice::from_ref(&self.0), &wanted, 3).map_err(restore_err)?;
        Ok(m.remove(&id).into_iter().collect())
    }
}

/// The restore side of netlink sockets (`NETLINKSK` entries).
#[derive(Debug, Default)]
pub struct NetlinkKind;

impl EngineSocket for NetlinkKind {
    type Entry = NetlinkSkEntry;
    const FD_TYPE: FdTypes = FdTypes::Netlinksk;
    const WHAT: &'static str = "netlink socket";

    fn entry(e: &FileEntry) -> &Option<NetlinkSkEntry> {
        &e.nlsk
    }

    fn id(e: &NetlinkSkEntry) -> u32 {
        e.id
    }

    fn check(entries: &[NetlinkSkEntry]) -> Result<(), SocketError> {
        netlink::check(entries)
    }

    fn create_all(
        entries: &[NetlinkSkEntry],
        wanted: &HashSet<u32>,
        min: i32,
    ) -> Result<HashMap<u32, OwnedFd>, SocketError> {
        netlink::create_all(entries, wanted, min)
    }
}

/// The restore side of packet sockets (`PACKETSK` entries).
#[derive(Debug, Default)]
pub struct PacketKind;

impl EngineSocket for PacketKind {
    type Entry = PacketSockEntry;
    const FD_TYPE: FdTypes = FdTypes::Packetsk;
    const WHAT: &'static str = "packet socket";

    fn entry(e: &FileEntry) -> &Option<PacketSockEntry> {
        &e.psk
    }

    fn id(e: &PacketSockEntry) -> u32 {
        e.id
    }

    fn check(entries: &[PacketSockEntry]) -> Result<(), SocketError> {
        packet::check(entries)
    }

    fn create_all(
        entries: &[PacketSockEntry],
        wanted: &HashSet<u32>,
        min: i32,
    ) -> Result<HashMap<u32, OwnedFd>, SocketError> {
        packet::create_all(entries, wanted, min)
    }
}
