//! The dump side of unix sockets: what sock_diag and the socket itself say, the queued data
//! peeked in order, the peers checked once the whole tree was met.

// Unsafe code: getpeername and recvmsg with raw structures on criu's copy of the socket.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use criu_images::pb::{FilePermsEntry, ScmEntry, SkPacketEntry, SkUcredEntry, UnixSkEntry};
use criu_images::{ImageWriter, magic, names};

use crate::files::sockdiag::{self, UnixDiag};
use crate::files::socket::{self, DumpSock, SockAt, SocketError};

use super::{MAX_MSG, ST_ESTABLISHED, ST_LISTEN, USK_EXTERN, printable, trim_nul};

/// One dumped socket of the tree.
#[derive(Clone, Debug)]
struct Dumped {
    pid: i32,
    fd: i32,
    entry: UnixSkEntry,
    /// For a client whose connection is still queued on a listener (not accepted: the server
    /// end has no inode, so sock_diag shows peer 0): the listener's name (`getpeername`).
    queued_on: Option<Vec<u8>>,
    /// Such a client sent data its queued connection holds.
    queued_data: bool,
}

/// The server end of a connection still queued on a listener (an embryo), which criu accepted
/// on its copy of the listener to read the data waiting in it.
#[derive(Debug)]
struct Embryo {
    /// Its inode.
    ino: u32,
    /// The listener's inode.
    listener: u32,
    /// The client's inode (its peer).
    client: u32,
    /// The `sk-queues` entries of its data (their `id_for` is set once it has a file id).
    queued: std::ops::Range<usize>,
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
    /// Descriptors in flight (`SCM_RIGHTS`) peeked from the queues, not yet given file ids:
    /// the index of their message in `queues`, and criu's copies of them.
    flight: Vec<(usize, Vec<OwnedFd>)>,
    /// Messages waiting for the file ids of their descriptors in flight, in the order
    /// [`UnixDump::take_in_flight`] handed them out: (index in `queues`, how many).
    flight_wait: Vec<(usize, usize)>,
    /// Connections criu accepted for their data.
    embryos: Vec<Embryo>,
    embryos_done: bool,
}

/// `SCM_PIDFD` (Linux 6.5): a pidfd of the sender, given with `SO_PASSPIDFD`; closed.
const SCM_PIDFD: i32 = 0x04;

fn who(pid: i32, fd: i32, ino: u32) -> SockAt {
    SockAt { pid, fd, ino }
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

    /// Dumps the unix socket `s` (criu's copy `s.sk` of the task's descriptor `s.at`, file
    /// status flags `s.flags`) as file `s.id`; returns its entry.
    ///
    /// # Errors
    /// [`SocketError::NotInDiag`], [`SocketError::UnixType`], [`SocketError::UnacceptedData`],
    /// [`SocketError::FdsInFlight`], [`SocketError::MessageSize`]
    /// naming the socket for states not covered; [`SocketError::Sys`], [`SocketError::Diag`].
    pub fn add(&mut self, s: &DumpSock<'_>) -> Result<UnixSkEntry, SocketError> {
        let DumpSock {
            at: w,
            sk,
            flags,
            id,
        } = *s;
        let SockAt { pid, fd, ino } = w;
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
        let mut queued_data = false;
        if stream && state == ST_ESTABLISHED && d.peer == Some(0) && d.shutdown != 3 {
            let name = peer_name(sk.as_raw_fd());
            // Data it sent waits in the queued connection: read once the whole tree was met
            // ([`UnixDump::take_in_flight`]), or refused then.
            queued_data = d.rqlen.is_some_and(|r| r.1 > 0);
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
            // A datagram socket still connected to a receiver that was closed: sock_diag
            // names the peer with inode 0 until a send finds it gone (ECONNREFUSED).
            peer_gone: (!stream && d.peer == Some(0)).then_some(true),
            ..UnixSkEntry::default()
        };
        if entry.fown.pid != 0 {
            // The owner for signals (`F_SETOWN`, `F_SETSIG`) comes back with the descriptor's
            // status (`FileStatus`); tasks keep their pids.
            tracing::debug!(%w, owner = entry.fown.pid, signum = entry.fown.signum, "unix socket owner");
        }
        if let Some(&first) = d.name.first()
            && first != 0
        {
            self.resolve_name(pid, &d, &mut entry);
        }
        if state != ST_LISTEN {
            let off = self.peek_queue(sk.as_raw_fd(), ty, id, w)?;
            // SO_PEEK_OFF is -1 until a program sets it: kept only when set (ours, CRIU's
            // entry has no field for it).
            if off >= 0 {
                tracing::debug!(%w, off, "unix socket peek offset");
                entry.peek_off = Some(off);
            }
        }
        self.socks.insert(
            ino,
            Dumped {
                pid,
                fd,
                entry: entry.clone(),
                queued_on,
                queued_data,
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
    /// `sk-queues` entries for file `id`; returns the peek offset it had (-1: none set).
    fn peek_queue(&mut self, sk: RawFd, ty: i32, id: u32, w: SockAt) -> Result<i32, SocketError> {
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
        })?;
        Ok(old)
    }

    fn peek_all(&mut self, sk: RawFd, ty: i32, id: u32, w: SockAt) -> Result<(), SocketError> {
        if self.buf.is_empty() {
            self.buf = vec![0u8; 256 << 10];
        }
        let mut off: i64 = 0;
        let dgram = ty != libc::SOCK_STREAM;
        loop {
            // Room for the most descriptors one message carries (SCM_MAX_FD, 253) and
            // credentials.
            let mut ctl = [0u64; 160];
            let mut iov = libc::iovec {
                iov_base: self.buf.as_mut_ptr().cast(),
                iov_len: self.buf.len(),
            };
            // The sender's name, for a datagram (recvfrom's address).
            // SAFETY: a zeroed sockaddr_un is a valid value.
            let mut from: libc::sockaddr_un = unsafe { std::mem::zeroed() };
            // SAFETY: a zeroed msghdr is valid; the pointers set below are live locals.
            let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
            mh.msg_iov = &mut iov;
            mh.msg_iovlen = 1;
            if ty == libc::SOCK_DGRAM {
                mh.msg_name = (&mut from as *mut libc::sockaddr_un).cast();
                mh.msg_namelen = std::mem::size_of::<libc::sockaddr_un>() as u32;
            }
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
            // Descriptors in flight came to us with the peek: criu's copies of the files,
            // dumped as files of the tree once every task was met.
            let mut rights: Vec<OwnedFd> = Vec::new();
            // The sender's credentials, given when the receiver has SO_PASSCRED.
            let mut ucred = None;
            // SAFETY: CMSG_FIRSTHDR/NXTHDR walk the control buffer the kernel filled, within
            // msg_controllen; each SCM_RIGHTS (and SCM_PIDFD) descriptor is new and ours
            // alone; an SCM_CREDENTIALS payload is one struct ucred (length checked).
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&mh);
                while !c.is_null() {
                    let len = ((*c).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
                    let is = |t| (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == t;
                    if is(libc::SCM_RIGHTS) || is(SCM_PIDFD) {
                        let data = libc::CMSG_DATA(c) as *const i32;
                        for k in 0..len / 4 {
                            let f = OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(k)));
                            if is(libc::SCM_RIGHTS) {
                                rights.push(f);
                            }
                        }
                    } else if is(libc::SCM_CREDENTIALS) && len >= std::mem::size_of::<libc::ucred>()
                    {
                        let u: libc::ucred =
                            std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::ucred);
                        ucred = Some(SkUcredEntry {
                            pid: u.pid as u32,
                            uid: u.uid,
                            gid: u.gid,
                        });
                    }
                    c = libc::CMSG_NXTHDR(&mh, c);
                }
            }
            if mh.msg_flags & libc::MSG_CTRUNC != 0 {
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
                // End of a stream (or an empty datagram, which is not kept: the peek offset
                // cannot move past it; one carrying descriptors is refused).
                if !rights.is_empty() {
                    return Err(SocketError::FdsInFlight { at: w });
                }
                return Ok(());
            }
            off += n as i64;
            let name_len = (mh.msg_namelen as usize)
                .saturating_sub(std::mem::size_of::<libc::sa_family_t>())
                .min(from.sun_path.len());
            let addr = (ty == libc::SOCK_DGRAM && name_len > 0)
                .then(|| from.sun_path[..name_len].iter().map(|&c| c as u8).collect());
            if !rights.is_empty() {
                tracing::debug!(%w, count = rights.len(), "descriptors in flight");
                self.flight.push((self.queues.len(), rights));
            }
            self.queues.push((
                SkPacketEntry {
                    id_for: id,
                    length: n as u32,
                    scm: Vec::new(),
                    ucred,
                    addr,
                },
                self.buf[..n].to_vec(),
            ));
        }
    }

    /// The descriptors in flight peeked from the queues since the last call (criu's copies),
    /// to be dumped as files of the tree; [`UnixDump::set_in_flight_ids`] then gets their file
    /// ids in the same order. When the dump ends the tree (`tree_dies`), the first call also
    /// accepts the connections still queued on a listener of the tree that hold data, to read
    /// it (otherwise [`UnixDump::finish`] refuses them).
    ///
    /// # Errors
    /// [`SocketError::Sys`], [`SocketError::Diag`], and the queue reading's refusals.
    pub fn take_in_flight(&mut self, tree_dies: bool) -> Result<Vec<OwnedFd>, SocketError> {
        if !self.embryos_done {
            self.embryos_done = true;
            if tree_dies {
                self.accept_queued()?;
            }
        }
        let mut out = Vec::new();
        for (at, fds) in std::mem::take(&mut self.flight) {
            self.flight_wait.push((at, fds.len()));
            out.extend(fds);
        }
        Ok(out)
    }

    /// The file ids of the descriptors [`UnixDump::take_in_flight`] handed out, in order: each
    /// message gets its `SCM_RIGHTS` entry.
    pub fn set_in_flight_ids(&mut self, ids: &[u32]) {
        let mut at = 0;
        for (q, n) in std::mem::take(&mut self.flight_wait) {
            let rights = ids.get(at..at + n).unwrap_or_default().to_vec();
            at += n;
            if let Some((e, _)) = self.queues.get_mut(q) {
                e.scm = vec![ScmEntry {
                    r#type: libc::SCM_RIGHTS as u32,
                    rights,
                }];
            }
        }
    }

    /// Accepts, on criu's copy of a listener, every connection queued on it when a client of
    /// the tree sent data into one (the data cannot be read otherwise), and peeks that data.
    /// Only done when the dump ends the tree: the connections are gone from the listener.
    fn accept_queued(&mut self) -> Result<(), SocketError> {
        let with_data: Vec<(Vec<u8>, u32)> = self
            .socks
            .values()
            .filter(|d| d.queued_data)
            .filter_map(|d| Some((d.queued_on.clone()?, d.entry.r#type)))
            .collect();
        if with_data.is_empty() {
            return Ok(());
        }
        let listeners: Vec<(i32, i32, u32, u32)> = self
            .order
            .iter()
            .filter_map(|ino| self.socks.get(ino))
            .filter(|d| {
                d.entry.state == ST_LISTEN
                    && with_data
                        .iter()
                        .any(|(n, t)| *n == d.entry.name && *t == d.entry.r#type)
            })
            .map(|d| (d.pid, d.fd, d.entry.ino, d.entry.r#type))
            .collect();
        let mut accepted = Vec::new();
        for (pid, fd, lino, ty) in listeners {
            let l = socket::steal(pid, fd)?;
            loop {
                // The listener is the task's open file (its blocking mode too): accept only
                // what is queued now.
                let mut pfd = libc::pollfd {
                    fd: l.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: poll on one live pollfd, not waiting.
                if unsafe { libc::poll(&mut pfd, 1, 0) } != 1 {
                    break;
                }
                // SAFETY: accept4 without an address, on criu's copy of the listener.
                let a = unsafe {
                    libc::accept4(
                        l.as_raw_fd(),
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                        libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                    )
                };
                if a < 0 {
                    let e = std::io::Error::last_os_error();
                    if e.raw_os_error() == Some(libc::EAGAIN) {
                        break;
                    }
                    return Err(SocketError::Sys {
                        what: format!("accepting a queued connection on {}", who(pid, fd, lino)),
                        source: e,
                    });
                }
                // SAFETY: a is a new descriptor owned by nothing else.
                let a = unsafe { OwnedFd::from_raw_fd(a) };
                let st = nix::sys::stat::fstat(&a).map_err(|e| SocketError::Sys {
                    what: format!("fstat of a connection accepted on {}", who(pid, fd, lino)),
                    source: e.into(),
                })?;
                tracing::debug!(
                    listener = lino,
                    ino = st.st_ino,
                    "accepted a queued connection for its data"
                );
                accepted.push((pid, fd, lino, ty, st.st_ino as u32, a));
            }
        }
        // The accepted sockets' peers (the clients), as sock_diag says now.
        let now = sockdiag::unix_sockets()?;
        for (pid, fd, listener, ty, ino, a) in accepted {
            let Some(client) = now.get(&ino).and_then(|d| d.peer).filter(|&p| p != 0) else {
                continue;
            };
            if !self.socks.get(&client).is_some_and(|c| c.queued_data) {
                continue;
            }
            let first = self.queues.len();
            self.peek_queue(a.as_raw_fd(), ty as i32, 0, who(pid, fd, ino))?;
            self.embryos.push(Embryo {
                ino,
                listener,
                client,
                queued: first..self.queues.len(),
            });
        }
        Ok(())
    }

    /// Checks the peers once every socket of the tree was met: each peer is a socket of the
    /// tree, a connection queued on a listener of the tree, or gone. Peers outside the tree are
    /// refused unless `ext` allows them (`--ext-unix-sk`, all or the listed inodes); then an
    /// entry for the outside peer (flag [`USK_EXTERN`]) is returned for `files.img`, with ids
    /// from `next_id`.
    ///
    /// # Errors
    /// [`SocketError::ExtUnaccepted`], [`SocketError::ExtQueued`], [`SocketError::ExtPeer`],
    /// [`SocketError::ExtPeerData`], [`SocketError::ExtPeerUnnamed`] naming the socket and its
    /// peer.
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
        let read: Vec<u32> = self.embryos.iter().map(|e| e.client).collect();
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
                Some(&(_, _, l)) if !d.queued_data || read.contains(&ino) => {
                    d.entry.peer = l;
                    *queued.entry(l).or_default() += 1;
                }
                Some(_) => {
                    return Err(SocketError::UnacceptedData {
                        at: who(d.pid, d.fd, ino),
                        name: printable(&name),
                    });
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
        // The server ends criu accepted for their data: entries no task holds, named as their
        // listener and connected to their client, which names the listener as its peer.
        for em in &self.embryos {
            let (Some(c), Some(l)) = (self.socks.get(&em.client), self.socks.get(&em.listener))
            else {
                continue;
            };
            let id = next_id();
            for (q, _) in &mut self.queues[em.queued.clone()] {
                q.id_for = id;
            }
            extra.push(UnixSkEntry {
                id,
                ino: em.ino,
                r#type: c.entry.r#type,
                state: ST_ESTABLISHED,
                flags: libc::O_RDWR as u32,
                peer: em.client,
                name: l.entry.name.clone(),
                ..UnixSkEntry::default()
            });
        }
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
