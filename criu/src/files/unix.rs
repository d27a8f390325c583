//! Unix sockets (`AF_UNIX`: stream, datagram, seqpacket), both sides.
//!
//! **Dump.** What the kernel knows (type, state, name, bound file, peer, queued connections,
//! shutdown) comes from one sock_diag dump for the whole tree ([`super::sockdiag`]); options
//! and queued data are read through criu's own copy of the task's socket
//! ([`super::socket::steal`]): the peek offset is saved, set to 0, every message is peeked in
//! order (`MSG_PEEK`, boundaries kept), and the offset is put back, so the task's socket is as
//! it was. Each socket becomes a `UNIXSK` entry of `files.img` (CRIU's `unix_sk_entry`) and
//! its receive queue `sk-queues.img` entries (`id_for` = the receiving socket's file id, the
//! bytes after the entry), as CRIU writes them.
//!
//! **Restore.** criu itself creates every socket before the tasks exist ([`create_all`]);
//! the tasks inherit them and put them at their numbers. Pairs whose ends are both known come
//! from `socketpair`, or from `connect` + `accept` when one end was accepted from a listener
//! of the tree; names are bound again (absolute, abstract, or relative to the binder's cwd,
//! `name_dir`), a name removed after bind is bound then unlinked, a stale socket file left by
//! the dumped tree is replaced; clients whose connection was still queued are connected again
//! in order, so the backlog is rebuilt; queues are refilled in order by sending from the peer
//! (or from a temporary socket to the receiver's name); then shutdowns, then peers that were
//! closed are closed, then options and file flags.
//!
//! Not covered (refused by name at dump time): file descriptors in flight (`SCM_RIGHTS`), a
//! queued connection that holds unread data or comes from outside the tree, peers outside the
//! tree without `--ext-unix-sk`.
// Unsafe code: unix socket addresses (sockaddr_un) and bind/connect/recvmsg with raw structures, in
// the restored task.
#![allow(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use criu_images::pb::{FilePermsEntry, SkPacketEntry, UnixSkEntry};
use criu_images::{ImageReader, ImageWriter, magic, names};

use super::sockdiag::{self, UnixDiag};
use super::socket::{self, SockAt, SocketError, sys};

/// `unix_sk_entry.uflags`: the peer is outside the dumped tree (`--ext-unix-sk`).
pub const USK_EXTERN: u32 = 1;

/// `TCP_ESTABLISHED`, as sock_diag reports a connected unix socket.
pub const ST_ESTABLISHED: u32 = 1;
/// `TCP_CLOSE`: not connected.
pub const ST_CLOSE: u32 = 7;
/// `TCP_LISTEN`.
pub const ST_LISTEN: u32 = 10;

/// The largest message the dump will peek (bigger datagrams cannot be sent on a unix socket
/// with the default limits anyway).
const MAX_MSG: usize = 8 << 20;

/// One dumped socket of the tree.
#[derive(Clone, Debug)]
struct Dumped {
    pid: i32,
    fd: i32,
    entry: UnixSkEntry,
    /// For a client whose connection is still queued on a listener (not accepted: the server
    /// end has no inode, so sock_diag shows peer 0): the listener's name (`getpeername`).
    queued_on: Option<Vec<u8>>,
}

/// The unix sockets met by one dump.
#[derive(Debug, Default)]
pub struct UnixDump {
    diag: Option<HashMap<u32, UnixDiag>>,
    socks: HashMap<u32, Dumped>,
    order: Vec<u32>,
    /// `sk-queues.img` entries and their bytes, in the order met.
    queues: Vec<(SkPacketEntry, Vec<u8>)>,
    buf: Vec<u8>,
}

fn who(pid: i32, fd: i32, ino: u32) -> SockAt {
    SockAt { pid, fd, ino }
}

/// A printable form of a socket name: the path, or `@name` for an abstract one.
pub fn printable(name: &[u8]) -> String {
    match name.split_first() {
        None => "(unbound)".into(),
        Some((0, rest)) => format!("@{}", String::from_utf8_lossy(rest)),
        Some(_) => String::from_utf8_lossy(trim_nul(name)).into_owned(),
    }
}

/// A path name without the trailing NULs the kernel may keep.
fn trim_nul(name: &[u8]) -> &[u8] {
    let mut n = name;
    while let [rest @ .., 0] = n {
        n = rest;
    }
    n
}

/// The name of the socket `sk` is connected to (`getpeername`), raw; empty if none.
fn peer_name(sk: RawFd) -> Vec<u8> {
    // SAFETY: a zeroed sockaddr_un is a valid value.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: getpeername writes at most `len` bytes into a live sockaddr_un.
    if unsafe { libc::getpeername(sk, (&mut a as *mut libc::sockaddr_un).cast(), &mut len) } < 0 {
        return Vec::new();
    }
    let n = (len as usize).saturating_sub(2).min(108);
    a.sun_path[..n].iter().map(|&c| c as u8).collect()
}

/// Kernel `dev_t` (major << 20 | minor) to the `st_dev` encoding.
fn kdev_to_st(dev: u32) -> u64 {
    libc::makedev(dev >> 20, dev & 0xfffff)
}

impl UnixDump {
    fn diag(&mut self) -> Result<&HashMap<u32, UnixDiag>, SocketError> {
        if self.diag.is_none() {
            self.diag = Some(sockdiag::unix_sockets()?);
        }
        Ok(self.diag.get_or_insert_with(HashMap::new))
    }

    /// Dumps the unix socket `sk` (criu's copy of fd `fd` of `pid`, inode `ino`, file status
    /// flags `flags`) as file `id`; returns its entry.
    ///
    /// # Errors
    /// [`SocketError::Unsupported`] naming the socket for states not covered,
    /// [`SocketError::Sys`], [`SocketError::Diag`].
    pub fn add(
        &mut self,
        pid: i32,
        fd: i32,
        sk: &OwnedFd,
        ino: u32,
        flags: u32,
        id: u32,
    ) -> Result<UnixSkEntry, SocketError> {
        let w = who(pid, fd, ino);
        let d = match self.diag()?.get(&ino) {
            Some(d) => d.clone(),
            None => {
                return Err(SocketError::NotInDiag {
                    at: w,
                    family: "unix",
                });
            }
        };
        let ty = i32::from(d.ty);
        if ![libc::SOCK_STREAM, libc::SOCK_DGRAM, libc::SOCK_SEQPACKET].contains(&ty) {
            return Err(SocketError::UnixType { at: w, ty });
        }
        let state = u32::from(d.state);
        // A stream client connected to a connection not accepted yet: the server end (an
        // embryo without inode) shows as peer 0 without the shutdown of a closed peer. Its
        // listener is found by name; data it sent cannot be read without accepting.
        let stream = ty != libc::SOCK_DGRAM;
        let mut queued_on = None;
        if stream && state == ST_ESTABLISHED && d.peer == Some(0) && d.shutdown != 3 {
            let name = peer_name(sk.as_raw_fd());
            if d.rqlen.is_some_and(|r| r.1 > 0) {
                return Err(SocketError::UnacceptedData {
                    at: w,
                    name: printable(&name),
                });
            }
            queued_on = Some(name);
        }
        let mut entry = UnixSkEntry {
            id,
            ino,
            r#type: ty as u32,
            state,
            flags: flags & !(libc::O_CLOEXEC as u32),
            uflags: 0,
            backlog: d.rqlen.map_or(0, |r| r.1),
            peer: d.peer.unwrap_or(0),
            fown: socket::read_fown(sk.as_raw_fd()),
            opts: socket::read_opts(sk.as_raw_fd(), &w.to_string())?,
            name: d.name.clone(),
            shutdown: (d.shutdown != 0).then_some(i32::from(d.shutdown & 3)),
            ..UnixSkEntry::default()
        };
        if entry.fown.pid != 0 {
            return Err(SocketError::Owner {
                at: w,
                owner: entry.fown.pid,
            });
        }
        if let Some(&first) = d.name.first()
            && first != 0
        {
            self.resolve_name(pid, &d, &mut entry);
        }
        if state != ST_LISTEN {
            self.peek_queue(sk.as_raw_fd(), ty, id, w)?;
        }
        self.socks.insert(
            ino,
            Dumped {
                pid,
                fd,
                entry: entry.clone(),
                queued_on,
            },
        );
        self.order.push(ino);
        Ok(entry)
    }

    /// Sets `name_dir`, `deleted` and `file_perms` of a socket bound to a path.
    fn resolve_name(&self, pid: i32, d: &UnixDiag, e: &mut UnixSkEntry) {
        let path = Path::new(std::ffi::OsStr::from_bytes(trim_nul(&d.name)));
        let full: PathBuf = if path.is_absolute() {
            path.to_path_buf()
        } else {
            // Relative to the binder's cwd: the holder's cwd is the best guess criu has.
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
            e.name_dir = Some(cwd.to_string_lossy().into_owned());
            cwd.join(path)
        };
        let same = |m: &std::fs::Metadata| {
            d.vfs
                .is_some_and(|(dev, ino)| m.ino() == u64::from(ino) && m.dev() == kdev_to_st(dev))
        };
        match std::fs::symlink_metadata(&full) {
            Ok(m) if same(&m) => {
                e.file_perms = Some(FilePermsEntry {
                    mode: m.mode(),
                    uid: m.uid(),
                    gid: m.gid(),
                });
            }
            // Removed after bind, or another file took the path since.
            _ => e.deleted = Some(true),
        }
    }

    /// Peeks every message waiting in `sk` (its peek offset saved and put back) into
    /// `sk-queues` entries for file `id`.
    fn peek_queue(&mut self, sk: RawFd, ty: i32, id: u32, w: SockAt) -> Result<(), SocketError> {
        let old = socket::get_int(sk, libc::SOL_SOCKET, libc::SO_PEEK_OFF).map_err(|source| {
            SocketError::Sys {
                what: format!("SO_PEEK_OFF of {w}"),
                source,
            }
        })?;
        socket::set_int(sk, libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0).map_err(|source| {
            SocketError::Sys {
                what: format!("setting SO_PEEK_OFF of {w}"),
                source,
            }
        })?;
        let r = self.peek_all(sk, ty, id, w);
        let back = socket::set_int(sk, libc::SOL_SOCKET, libc::SO_PEEK_OFF, old);
        r?;
        back.map_err(|source| SocketError::Sys {
            what: format!("restoring SO_PEEK_OFF of {w}"),
            source,
        })
    }

    fn peek_all(&mut self, sk: RawFd, ty: i32, id: u32, w: SockAt) -> Result<(), SocketError> {
        if self.buf.is_empty() {
            self.buf = vec![0u8; 256 << 10];
        }
        let mut off: i64 = 0;
        let dgram = ty != libc::SOCK_STREAM;
        loop {
            let mut ctl = [0u64; 64];
            let mut iov = libc::iovec {
                iov_base: self.buf.as_mut_ptr().cast(),
                iov_len: self.buf.len(),
            };
            // SAFETY: a zeroed msghdr is valid; the pointers set below are live locals.
            let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
            mh.msg_iov = &mut iov;
            mh.msg_iovlen = 1;
            mh.msg_control = ctl.as_mut_ptr().cast();
            mh.msg_controllen = std::mem::size_of_val(&ctl);
            let fl = libc::MSG_PEEK
                | libc::MSG_DONTWAIT
                | libc::MSG_CMSG_CLOEXEC
                | if dgram { libc::MSG_TRUNC } else { 0 };
            // SAFETY: recvmsg writes into the buffers msghdr points at, all live and sized.
            let n = unsafe { libc::recvmsg(sk, &mut mh, fl) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => return Ok(()),
                    Some(libc::EINTR) => continue,
                    _ => {
                        return Err(SocketError::Sys {
                            what: format!("peeking the queue of {w}"),
                            source: e,
                        });
                    }
                }
            }
            let n = n as usize;
            // Descriptors in flight came to us with the peek: close them, refuse.
            let mut rights = false;
            // SAFETY: CMSG_FIRSTHDR/NXTHDR walk the control buffer the kernel filled, within
            // msg_controllen.
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&mh);
                while !c.is_null() {
                    if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                        rights = true;
                        let data = libc::CMSG_DATA(c) as *const i32;
                        let count = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / 4;
                        for k in 0..count {
                            libc::close(std::ptr::read_unaligned(data.add(k)));
                        }
                    }
                    c = libc::CMSG_NXTHDR(&mh, c);
                }
            }
            if rights {
                return Err(SocketError::FdsInFlight { at: w });
            }
            if dgram && n > self.buf.len() {
                // Truncated: peek this message again with room for it.
                if n > MAX_MSG {
                    return Err(SocketError::MessageSize { at: w, size: n });
                }
                self.buf.resize(n, 0);
                socket::set_int(sk, libc::SOL_SOCKET, libc::SO_PEEK_OFF, off as i32).map_err(
                    |source| SocketError::Sys {
                        what: format!("setting SO_PEEK_OFF of {w}"),
                        source,
                    },
                )?;
                continue;
            }
            if n == 0 {
                // End of a stream (or an empty datagram, which is not kept).
                return Ok(());
            }
            off += n as i64;
            self.queues.push((
                SkPacketEntry {
                    id_for: id,
                    length: n as u32,
                    scm: Vec::new(),
                },
                self.buf[..n].to_vec(),
            ));
        }
    }

    /// Checks the peers once every socket of the tree was met: each peer is a socket of the
    /// tree, a connection queued on a listener of the tree, or gone. Peers outside the tree are
    /// refused unless `ext` allows them (`--ext-unix-sk`, all or the listed inodes); then an
    /// entry for the outside peer (flag [`USK_EXTERN`]) is returned for `files.img`, with ids
    /// from `next_id`.
    ///
    /// # Errors
    /// [`SocketError::Unsupported`] naming the socket and its peer.
    pub fn finish(
        &mut self,
        ext: Option<&[u32]>,
        mut next_id: impl FnMut() -> u32,
    ) -> Result<Vec<UnixSkEntry>, SocketError> {
        let Some(diag) = self.diag.as_ref() else {
            return Ok(Vec::new());
        };
        // A client whose connection is still queued names the listener as its peer (the
        // queued server end has no descriptor and no entry).
        let listeners: Vec<(Vec<u8>, u32, u32)> = self
            .socks
            .values()
            .filter(|d| d.entry.state == ST_LISTEN)
            .map(|d| (d.entry.name.clone(), d.entry.r#type, d.entry.ino))
            .collect();
        let mut queued: HashMap<u32, usize> = HashMap::new();
        for ino in self.order.clone() {
            let Some(d) = self.socks.get_mut(&ino) else {
                continue;
            };
            let Some(name) = d.queued_on.clone() else {
                continue;
            };
            match listeners
                .iter()
                .find(|(n, t, _)| *n == name && *t == d.entry.r#type)
            {
                Some(&(_, _, l)) => {
                    d.entry.peer = l;
                    *queued.entry(l).or_default() += 1;
                }
                None => {
                    return Err(SocketError::ExtUnaccepted {
                        at: who(d.pid, d.fd, ino),
                        name: printable(&name),
                    });
                }
            }
        }
        // Every connection queued on a listener of the tree comes from a client of the tree.
        for d in self.socks.values() {
            if d.entry.state != ST_LISTEN {
                continue;
            }
            let n = diag.get(&d.entry.ino).map_or(0, |e| e.icons.len());
            let ours = queued.get(&d.entry.ino).copied().unwrap_or(0);
            if n > ours {
                return Err(SocketError::ExtQueued {
                    at: who(d.pid, d.fd, d.entry.ino),
                    name: printable(&d.entry.name),
                    count: n - ours,
                });
            }
        }
        let mut extra = Vec::new();
        let mut ext_done: HashMap<u32, u32> = HashMap::new();
        for ino in self.order.clone() {
            let d = &self.socks[&ino];
            let peer = d.entry.peer;
            if peer == 0 || self.socks.contains_key(&peer) {
                continue;
            }
            let pd = diag.get(&peer).cloned().unwrap_or_default();
            let allowed =
                ext.is_some_and(|l| l.is_empty() || l.contains(&ino) || l.contains(&peer));
            if !allowed {
                return Err(SocketError::ExtPeer {
                    at: who(d.pid, d.fd, ino),
                    peer,
                    name: printable(&pd.name),
                });
            }
            if self.queues.iter().any(|(q, _)| q.id_for == d.entry.id) {
                return Err(SocketError::ExtPeerData {
                    at: who(d.pid, d.fd, ino),
                    name: printable(&pd.name),
                });
            }
            if pd.name.is_empty() {
                return Err(SocketError::ExtPeerUnnamed {
                    at: who(d.pid, d.fd, ino),
                    peer,
                });
            }
            if let std::collections::hash_map::Entry::Vacant(v) = ext_done.entry(peer) {
                let id = next_id();
                v.insert(id);
                extra.push(UnixSkEntry {
                    id,
                    ino: peer,
                    r#type: u32::from(pd.ty),
                    state: u32::from(pd.state),
                    uflags: USK_EXTERN,
                    name: pd.name.clone(),
                    flags: libc::O_RDWR as u32,
                    ..UnixSkEntry::default()
                });
            }
        }
        Ok(extra)
    }

    /// The entry of a dumped socket (after [`UnixDump::finish`], with its final flags).
    pub fn entry(&self, ino: u32) -> Option<&UnixSkEntry> {
        self.socks.get(&ino).map(|d| &d.entry)
    }

    /// Writes `sk-queues.img` (only when some socket had data).
    ///
    /// # Errors
    /// [`criu_images::ImageError`].
    pub fn write_queues(&self, dir: &Path) -> Result<(), criu_images::ImageError> {
        if self.queues.is_empty() {
            return Ok(());
        }
        let mut w = ImageWriter::create_in(dir, names::SK_QUEUES, magic::SK_QUEUES)?;
        for (e, data) in &self.queues {
            w.write_entry(e)?;
            w.write_extra(data)?;
        }
        w.finish()?;
        Ok(())
    }
}

/// The queued messages of `sk-queues.img` by receiving file id, in order (an absent file: no
/// data). A truncated or inconsistent entry is refused with the file and offset.
///
/// # Errors
/// [`SocketError::BadImage`].
pub fn read_queues(dir: &Path) -> Result<HashMap<u32, Vec<Vec<u8>>>, SocketError> {
    let path = dir.join(names::SK_QUEUES);
    let mut out: HashMap<u32, Vec<Vec<u8>>> = HashMap::new();
    if !path.exists() {
        return Ok(out);
    }
    let bad = |e: criu_images::ImageError| SocketError::BadImage {
        file: names::SK_QUEUES.into(),
        reason: e.to_string(),
    };
    let mut r = ImageReader::open_expect(&path, magic::SK_QUEUES).map_err(bad)?;
    loop {
        let at = r.offset();
        let Some(e) = r.read_entry::<SkPacketEntry>().map_err(bad)? else {
            break;
        };
        if e.length as usize > MAX_MSG {
            return Err(SocketError::BadImage {
                file: names::SK_QUEUES.into(),
                reason: format!("offset {at}: a message of {} bytes", e.length),
            });
        }
        if !e.scm.is_empty() {
            return Err(SocketError::BadImage {
                file: names::SK_QUEUES.into(),
                reason: format!(
                    "offset {at}: control messages (file descriptors in flight) are not restored yet"
                ),
            });
        }
        let data = r.read_extra(u64::from(e.length)).map_err(bad)?;
        out.entry(e.id_for).or_default().push(data);
    }
    Ok(out)
}

/// Checks the unix socket entries of `files.img` before anything is created: types, states,
/// names, peers, queue owners. `path` names the file in messages.
///
/// # Errors
/// [`SocketError::BadImage`].
pub fn check(
    entries: &[UnixSkEntry],
    queues: &HashMap<u32, Vec<Vec<u8>>>,
) -> Result<(), SocketError> {
    let bad = |id: u32, reason: String| SocketError::BadImage {
        file: names::FILES.into(),
        reason: format!("unix socket id {id}: {reason}"),
    };
    let mut inos = HashSet::new();
    for e in entries {
        let ty = e.r#type as i32;
        if ![libc::SOCK_STREAM, libc::SOCK_DGRAM, libc::SOCK_SEQPACKET].contains(&ty) {
            return Err(bad(e.id, format!("type {}", e.r#type)));
        }
        if ![ST_ESTABLISHED, ST_CLOSE, ST_LISTEN].contains(&e.state) {
            return Err(bad(e.id, format!("state {}", e.state)));
        }
        if e.name.len() > 108 {
            return Err(bad(e.id, format!("name of {} bytes", e.name.len())));
        }
        // A path name (and the directory it is relative to) never climbs or hides a NUL: a
        // bind makes a file there.
        let climbs = |b: &[u8]| {
            Path::new(std::ffi::OsStr::from_bytes(b))
                .components()
                .any(|c| c == std::path::Component::ParentDir)
        };
        if e.name.first().is_some_and(|b| *b != 0)
            && (trim_nul(&e.name).contains(&0) || climbs(trim_nul(&e.name)))
        {
            return Err(bad(e.id, format!("name {:?}", printable(&e.name))));
        }
        if e.name_dir
            .as_deref()
            .is_some_and(|d| d.contains('\0') || climbs(d.as_bytes()))
        {
            return Err(bad(e.id, "name_dir with '..' or a NUL byte".into()));
        }
        if e.shutdown.is_some_and(|s| !(0..=3).contains(&s)) {
            return Err(bad(e.id, "shutdown".into()));
        }
        if !inos.insert(e.ino) {
            return Err(bad(e.id, format!("inode {} appears twice", e.ino)));
        }
    }
    let ids: HashSet<u32> = entries.iter().map(|e| e.id).collect();
    for id in queues.keys() {
        if !ids.contains(id) {
            return Err(SocketError::BadImage {
                file: names::SK_QUEUES.into(),
                reason: format!("queued data for file id {id}, which is no unix socket"),
            });
        }
    }
    Ok(())
}

/// A `sockaddr_un` for `name` (as the kernel reports it); `None` for an empty name.
fn sockaddr(name: &[u8]) -> Option<(libc::sockaddr_un, libc::socklen_t)> {
    if name.is_empty() || name.len() > 108 {
        return None;
    }
    // SAFETY: a zeroed sockaddr_un is a valid value.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as u16;
    for (d, s) in a.sun_path.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + name.len();
    Some((a, len as libc::socklen_t))
}

fn new_socket(ty: u32) -> Result<OwnedFd, SocketError> {
    // SAFETY: socket() takes no pointers; the result is checked and owned.
    let fd = unsafe { libc::socket(libc::AF_UNIX, ty as i32 | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(sys("creating a unix socket"));
    }
    // SAFETY: fd was just created and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn pair(ty: u32) -> Result<(OwnedFd, OwnedFd), SocketError> {
    let mut sv = [0i32; 2];
    // SAFETY: socketpair writes two descriptors into a live local array.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            ty as i32 | libc::SOCK_CLOEXEC,
            0,
            sv.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(sys("creating a unix socket pair"));
    }
    // SAFETY: both descriptors were just created and are owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) })
}

fn connect_to(fd: RawFd, name: &[u8]) -> std::io::Result<()> {
    let Some((a, len)) = sockaddr(name) else {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    };
    // SAFETY: connect reads `len` bytes of a live sockaddr_un.
    let r = unsafe { libc::connect(fd, (&a as *const libc::sockaddr_un).cast(), len) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn bind_raw(fd: RawFd, name: &[u8]) -> std::io::Result<()> {
    let Some((a, len)) = sockaddr(name) else {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    };
    // SAFETY: bind reads `len` bytes of a live sockaddr_un.
    let r = unsafe { libc::bind(fd, (&a as *const libc::sockaddr_un).cast(), len) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` with the cwd set to `dir` (for names relative to the binder's cwd).
fn in_dir<T>(dir: Option<&str>, f: impl FnOnce() -> std::io::Result<T>) -> std::io::Result<T> {
    let Some(dir) = dir else { return f() };
    let here = std::fs::File::open(".")?;
    std::env::set_current_dir(dir)?;
    let r = f();
    // SAFETY: fchdir on a directory descriptor we own.
    unsafe { libc::fchdir(here.as_raw_fd()) };
    r
}

/// Binds `fd` to the name of `e`: a stale socket file at a path name (left by the dumped
/// tree, nobody listening) is replaced; a name removed after bind is bound then unlinked; a
/// different file now at the path is moved aside for the bind and put back.
fn bind(fd: RawFd, e: &UnixSkEntry) -> Result<(), SocketError> {
    let nm = printable(&e.name);
    let fail = |source: std::io::Error| SocketError::Sys {
        what: format!("binding unix socket id {} to {nm}", e.id),
        source,
    };
    let abstract_name = e.name.first() == Some(&0);
    if abstract_name {
        return bind_raw(fd, &e.name).map_err(fail);
    }
    let path = Path::new(std::ffi::OsStr::from_bytes(trim_nul(&e.name))).to_path_buf();
    let deleted = e.deleted == Some(true);
    in_dir(e.name_dir.as_deref(), || {
        let r = bind_raw(fd, &e.name);
        match r {
            Err(err) if err.raw_os_error() == Some(libc::EADDRINUSE) => {
                let m = std::fs::symlink_metadata(&path)?;
                let stale = m.file_type().is_socket_file() && !listening(&e.name);
                if stale {
                    std::fs::remove_file(&path)?;
                    bind_raw(fd, &e.name)?;
                } else if deleted {
                    // Another file holds the path: step it aside for the bind.
                    let aside = aside_name(&path);
                    std::fs::rename(&path, &aside)?;
                    let r = bind_raw(fd, &e.name);
                    if r.is_ok() {
                        let _ = std::fs::remove_file(&path);
                    }
                    std::fs::rename(&aside, &path)?;
                    return r;
                } else {
                    return Err(err);
                }
            }
            r => r?,
        }
        if !deleted && let Some(p) = &e.file_perms {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(p.mode & 0o7777))?;
            let c = CString::new(path.as_os_str().as_bytes())
                .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
            // SAFETY: lchown with a NUL-terminated path.
            unsafe { libc::lchown(c.as_ptr(), p.uid, p.gid) };
        }
        Ok(())
    })
    .map_err(fail)
}

fn aside_name(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(format!(".criu-aside.{}", std::process::id()));
    PathBuf::from(s)
}

/// Whether a live socket holds `name` (a connect of some type succeeds).
fn listening(name: &[u8]) -> bool {
    for ty in [libc::SOCK_STREAM, libc::SOCK_SEQPACKET, libc::SOCK_DGRAM] {
        if let Ok(s) = new_socket(ty as u32)
            && connect_to(s.as_raw_fd(), name).is_ok()
        {
            return true;
        }
    }
    false
}

trait SockType {
    fn is_socket_file(&self) -> bool;
}
impl SockType for std::fs::FileType {
    fn is_socket_file(&self) -> bool {
        std::os::unix::fs::FileTypeExt::is_socket(self)
    }
}

fn send_all(fd: RawFd, data: &[u8], to: Option<&[u8]>, what: &str) -> Result<(), SocketError> {
    let addr = to.and_then(sockaddr);
    let mut at = 0;
    loop {
        let rest = &data[at..];
        // SAFETY: sendto reads `rest` and, if given, a live sockaddr_un.
        let n = unsafe {
            match &addr {
                Some((a, len)) => libc::sendto(
                    fd,
                    rest.as_ptr().cast(),
                    rest.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                    (a as *const libc::sockaddr_un).cast(),
                    *len,
                ),
                None => libc::send(
                    fd,
                    rest.as_ptr().cast(),
                    rest.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                ),
            }
        };
        if n < 0 {
            return Err(sys(format!("refilling the queue of {what}")));
        }
        at += n as usize;
        if at >= data.len() {
            return Ok(());
        }
    }
}

/// Creates every unix socket of `entries` that `wanted` names (file ids held by a task),
/// connected, bound, queued and set up as dumped (see the module docs for the order). The
/// descriptors are numbered `min` or above.
///
/// # Errors
/// [`SocketError::Sys`] naming the socket and what failed (a name that cannot be bound again
/// is named), [`SocketError::Unsupported`].
pub fn create_all(
    entries: &[UnixSkEntry],
    wanted: &HashSet<u32>,
    queues: &HashMap<u32, Vec<Vec<u8>>>,
    min: i32,
) -> Result<HashMap<u32, OwnedFd>, SocketError> {
    let by_ino: HashMap<u32, &UnixSkEntry> = entries.iter().map(|e| (e.ino, e)).collect();
    let mine: Vec<&UnixSkEntry> = entries
        .iter()
        .filter(|e| wanted.contains(&e.id) && e.uflags & USK_EXTERN == 0)
        .collect();
    let in_mine: HashSet<u32> = mine.iter().map(|e| e.ino).collect();
    let dgram = |e: &UnixSkEntry| e.r#type == libc::SOCK_DGRAM as u32;
    // The listener of the tree an accepted socket came from (it carries the listener's name).
    let listener_of = |e: &UnixSkEntry| -> Option<&UnixSkEntry> {
        if e.state == ST_LISTEN || e.name.is_empty() || dgram(e) {
            return None;
        }
        mine.iter().copied().find(|l| {
            l.state == ST_LISTEN && l.name == e.name && l.r#type == e.r#type && l.ino != e.ino
        })
    };
    let peer_of = |e: &UnixSkEntry| -> Option<&UnixSkEntry> {
        (e.peer != 0)
            .then(|| by_ino.get(&e.peer).copied())
            .flatten()
            .filter(|p| in_mine.contains(&p.ino))
    };
    let mut fds: HashMap<u32, OwnedFd> = HashMap::new(); // by inode
    // Stand-in ends for peers that were closed (closed once the queues are refilled).
    let mut standin: HashMap<u32, OwnedFd> = HashMap::new();
    let conn_err = |id: u32, to: &[u8]| {
        let what = format!("connecting unix socket id {id} to {}", printable(to));
        move |source| SocketError::Sys { what, source }
    };

    // A. Pairs whose both ends are known and neither was accepted: one socketpair.
    for e in &mine {
        if e.state != ST_ESTABLISHED || fds.contains_key(&e.ino) || listener_of(e).is_some() {
            continue;
        }
        if let Some(p) = peer_of(e)
            && p.peer == e.ino
            && p.r#type == e.r#type
            && listener_of(p).is_none()
            && !fds.contains_key(&p.ino)
        {
            let (a, b) = pair(e.r#type)?;
            fds.insert(e.ino, a);
            fds.insert(p.ino, b);
        }
    }
    // B. Names: every socket that bound one (not accepted sockets, which share their
    //    listener's), options first (buffer sizes before any data), then listen.
    for e in &mine {
        if e.name.is_empty() || listener_of(e).is_some() {
            continue;
        }
        if let std::collections::hash_map::Entry::Vacant(v) = fds.entry(e.ino) {
            v.insert(new_socket(e.r#type)?);
        }
        let s = fds[&e.ino].as_raw_fd();
        socket::write_opts(s, &e.opts, &format!("unix socket id {}", e.id))?;
        bind(s, e)?;
        if e.state == ST_LISTEN {
            // SAFETY: listen on a socket we own.
            if unsafe { libc::listen(s, e.backlog as i32) } < 0 {
                return Err(sys(format!("listening on {}", printable(&e.name))));
            }
        }
    }
    // C. Connections: accepted ones first (client connects, the listener accepts), then the
    //    others in image order (clients still queued on a listener come back queued).
    let mut order: Vec<&UnixSkEntry> = mine.clone();
    order.sort_by_key(|e| listener_of(e).is_none());
    for e in order {
        if e.state != ST_ESTABLISHED || fds.contains_key(&e.ino) && !dgram(e) && e.name.is_empty() {
            continue;
        }
        if let Some(l) = listener_of(e) {
            if fds.contains_key(&e.ino) {
                continue;
            }
            match peer_of(e) {
                Some(c) => {
                    let cs = match fds.remove(&c.ino) {
                        Some(s) => s,
                        None => new_socket(c.r#type)?,
                    };
                    connect_to(cs.as_raw_fd(), &l.name).map_err(conn_err(c.id, &l.name))?;
                    let lfd = fds.get(&l.ino).map_or(-1, |f| f.as_raw_fd());
                    // SAFETY: accept4 without an address, on a listener we own.
                    let a = unsafe {
                        libc::accept4(
                            lfd,
                            std::ptr::null_mut(),
                            std::ptr::null_mut(),
                            libc::SOCK_CLOEXEC,
                        )
                    };
                    if a < 0 {
                        return Err(sys(format!("accepting on {}", printable(&l.name))));
                    }
                    fds.insert(c.ino, cs);
                    // SAFETY: a is a new descriptor owned by nothing else.
                    fds.insert(e.ino, unsafe { OwnedFd::from_raw_fd(a) });
                }
                None => {
                    // Its client was closed.
                    let (a, b) = pair(e.r#type)?;
                    fds.insert(e.ino, a);
                    standin.insert(e.ino, b);
                }
            }
            continue;
        }
        let ext = by_ino
            .get(&e.peer)
            .filter(|p| e.peer != 0 && p.uflags & USK_EXTERN != 0 && !in_mine.contains(&p.ino));
        match (peer_of(e), ext) {
            (Some(p), _) if p.peer == e.ino && p.r#type == e.r#type && listener_of(p).is_none() => {
                // Made as a pair in A.
            }
            (Some(p), _) if listener_of(p).is_some() => {
                // Accepted end: made with its client above.
            }
            (Some(p), _) if p.state == ST_LISTEN || dgram(e) => {
                // A client still queued on a listener, or a datagram socket connected to a
                // bound one: connect to its name again.
                if fds.contains_key(&e.ino) && !dgram(e) {
                    continue;
                }
                if p.name.is_empty() {
                    return Err(SocketError::PeerUnnamed {
                        id: e.id,
                        peer: p.id,
                    });
                }
                let s = match fds.remove(&e.ino) {
                    Some(s) => s,
                    None => new_socket(e.r#type)?,
                };
                connect_to(s.as_raw_fd(), &p.name).map_err(conn_err(e.id, &p.name))?;
                fds.insert(e.ino, s);
            }
            (Some(p), _) => {
                return Err(SocketError::BadImage {
                    file: names::FILES.into(),
                    reason: format!(
                        "unix socket id {} names id {} as its peer, which is connected elsewhere",
                        e.id, p.id
                    ),
                });
            }
            (None, Some(p)) => {
                // --ext-unix-sk: connected to the same outside name.
                let s = match fds.remove(&e.ino) {
                    Some(s) => s,
                    None => new_socket(e.r#type)?,
                };
                connect_to(s.as_raw_fd(), &p.name).map_err(conn_err(e.id, &p.name))?;
                fds.insert(e.ino, s);
            }
            (None, None) if e.peer != 0 => {
                return Err(SocketError::BadImage {
                    file: names::FILES.into(),
                    reason: format!(
                        "unix socket id {}: its peer socket:[{}] has no entry",
                        e.id, e.peer
                    ),
                });
            }
            (None, None) if !dgram(e) => {
                // Its peer was closed: a pair whose other end goes once the queue is back.
                let (a, b) = pair(e.r#type)?;
                if let Some(old) = fds.remove(&e.ino) {
                    drop(old);
                    if !e.name.is_empty() {
                        return Err(SocketError::PeerClosed {
                            id: e.id,
                            name: printable(&e.name),
                        });
                    }
                }
                fds.insert(e.ino, a);
                standin.insert(e.ino, b);
            }
            (None, None) => {
                // A datagram socket others connected to (the kernel marks it established).
            }
        }
    }
    // Everything else: unbound, unconnected sockets.
    for e in &mine {
        if let std::collections::hash_map::Entry::Vacant(v) = fds.entry(e.ino) {
            v.insert(new_socket(e.r#type)?);
        }
    }
    // Options of the sockets not set in B, before their data comes.
    for e in &mine {
        if e.name.is_empty() || listener_of(e).is_some() {
            socket::write_opts(
                fds[&e.ino].as_raw_fd(),
                &e.opts,
                &format!("unix socket id {}", e.id),
            )?;
        }
    }
    // D. Queues, in order: sent by the peer (or the stand-in of a closed one), or, for a
    //    datagram socket nobody is connected to, from a temporary socket to its name.
    for e in &mine {
        let Some(msgs) = queues.get(&e.id) else {
            continue;
        };
        let what = format!("unix socket id {}", e.id);
        let (from, to): (Option<RawFd>, Option<&[u8]>) = if let Some(s) = standin.get(&e.ino) {
            (Some(s.as_raw_fd()), None)
        } else if let Some(p) = peer_of(e) {
            let f = fds.get(&p.ino).map(|f| f.as_raw_fd());
            if !dgram(e) || p.peer == e.ino {
                (f, None)
            } else {
                (f, Some(e.name.as_slice()))
            }
        } else {
            (None, (!e.name.is_empty()).then_some(e.name.as_slice()))
        };
        let tmp;
        let from = match (from, to) {
            (Some(f), _) => f,
            (None, Some(_)) if dgram(e) => {
                tmp = new_socket(libc::SOCK_DGRAM as u32)?;
                tmp.as_raw_fd()
            }
            _ => {
                return Err(SocketError::NoSender { id: e.id });
            }
        };
        for m in msgs {
            send_all(from, m, to, &what)?;
        }
    }
    // E. Shutdowns, closed peers, names removed after bind, flags.
    for e in &mine {
        if let Some(how) = e.shutdown.filter(|&h| h != 0) {
            let how = match how {
                1 => libc::SHUT_RD,
                2 => libc::SHUT_WR,
                _ => libc::SHUT_RDWR,
            };
            // SAFETY: shutdown on a socket we own.
            unsafe { libc::shutdown(fds[&e.ino].as_raw_fd(), how) };
        }
    }
    drop(standin);
    for e in &mine {
        if e.deleted == Some(true)
            && e.name.first().is_some_and(|&c| c != 0)
            && listener_of(e).is_none()
        {
            let path = Path::new(std::ffi::OsStr::from_bytes(trim_nul(&e.name))).to_path_buf();
            in_dir(e.name_dir.as_deref(), || {
                match std::fs::symlink_metadata(&path) {
                    Ok(m) if m.file_type().is_socket_file() => std::fs::remove_file(&path),
                    _ => Ok(()),
                }
            })
            .map_err(|source| SocketError::Sys {
                what: format!(
                    "removing the name {} (deleted when dumped)",
                    printable(&e.name)
                ),
                source,
            })?;
        }
    }
    let mut out = HashMap::new();
    for e in &mine {
        let Some(s) = fds.remove(&e.ino) else {
            continue;
        };
        let fl = e.flags as i32 & (libc::O_NONBLOCK | libc::O_ASYNC);
        if fl != 0 {
            // SAFETY: fcntl on a socket we own.
            if unsafe { libc::fcntl(s.as_raw_fd(), libc::F_SETFL, fl) } < 0 {
                return Err(sys(format!("setting the flags of unix socket id {}", e.id)));
            }
        }
        out.insert(e.id, socket::move_up(s, min)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(name: &[u8], dir: Option<&str>) -> UnixSkEntry {
        UnixSkEntry {
            id: 1,
            ino: 7,
            r#type: libc::SOCK_STREAM as u32,
            state: ST_LISTEN,
            name: name.to_vec(),
            name_dir: dir.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn socket_names_that_climb_or_hide_a_nul_are_refused() {
        let ok = |e: UnixSkEntry| check(&[e], &HashMap::new()).is_ok();
        assert!(ok(bound(b"/tmp/a.sock", None)));
        assert!(
            ok(bound(b"\0abstract/../x", None)),
            "abstract names are no paths"
        );
        assert!(ok(bound(b"a.sock\0", Some("/tmp/d"))));
        assert!(!ok(bound(b"/tmp/../etc/a.sock", None)));
        assert!(!ok(bound(b"../a.sock", Some("/tmp/d"))));
        assert!(!ok(bound(b"/tmp/a\0b", None)));
        assert!(!ok(bound(b"a.sock", Some("/tmp/../etc"))));
    }
}
