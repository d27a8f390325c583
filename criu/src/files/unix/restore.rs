//! The restore side of unix sockets: every socket made before the tasks exist, named, paired,
//! connected, queued and set up as dumped.

// Unsafe code: unix socket addresses (sockaddr_un) and socket/bind/connect/send with raw
// structures.
#![allow(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use criu_images::names;
use criu_images::pb::UnixSkEntry;

use crate::files::socket::{self, SocketError, sys};

use super::image::{Queued, embryos};
use super::send::{send_msg, sockaddr};
use super::{ST_ESTABLISHED, ST_LISTEN, USK_EXTERN, printable, trim_nul};

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

/// The name `fd` is bound to (`getsockname`), raw.
fn socket_name(fd: RawFd) -> std::io::Result<Vec<u8>> {
    // SAFETY: a zeroed sockaddr_un is a valid value.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: getsockname writes at most `len` bytes into a live sockaddr_un.
    if unsafe { libc::getsockname(fd, (&mut a as *mut libc::sockaddr_un).cast(), &mut len) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let n = (len as usize)
        .saturating_sub(std::mem::size_of::<libc::sa_family_t>())
        .min(a.sun_path.len());
    Ok(a.sun_path[..n].iter().map(|&c| c as u8).collect())
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

/// A path name of the tree bound by this restore (removed again if the restore fails).
struct Bound {
    path: PathBuf,
    ino: u64,
}

/// The name of `e` as a user reads it: the path (under the binder's cwd for a relative one)
/// or `@name`.
fn full_name(e: &UnixSkEntry) -> String {
    match (&e.name_dir, e.name.first()) {
        (Some(d), Some(c)) if *c != 0 && *c != b'/' => format!("{d}/{}", printable(&e.name)),
        _ => printable(&e.name),
    }
}

/// Binds `fd` to the name of `e`: a stale socket file at a path name (left by the dumped
/// tree, nobody listening) is replaced; a name removed after bind is bound then unlinked; a
/// different file now at the path is moved aside for the bind and put back. A path bound
/// here is added to `bound`.
fn bind(fd: RawFd, e: &UnixSkEntry, bound: &mut Vec<Bound>) -> Result<(), SocketError> {
    let nm = printable(&e.name);
    let fail = |source: std::io::Error| SocketError::Sys {
        what: format!("binding unix socket id {} to {nm}", e.id),
        source,
    };
    let taken = |by| SocketError::NameTaken {
        id: e.id,
        name: full_name(e),
        by,
    };
    let abstract_name = e.name.first() == Some(&0);
    if abstract_name {
        return match bind_raw(fd, &e.name) {
            Err(err) if err.raw_os_error() == Some(libc::EADDRINUSE) => {
                Err(taken("another socket"))
            }
            r => r.map_err(fail),
        };
    }
    let path = Path::new(std::ffi::OsStr::from_bytes(trim_nul(&e.name))).to_path_buf();
    let deleted = e.deleted == Some(true);
    let mut by = None;
    in_dir(e.name_dir.as_deref(), || {
        let r = bind_raw(fd, &e.name);
        match r {
            Err(err) if err.raw_os_error() == Some(libc::EADDRINUSE) => {
                let m = std::fs::symlink_metadata(&path)?;
                let socket_file = m.file_type().is_socket_file();
                let stale = socket_file && !listening(&e.name);
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
                    by = Some(if socket_file {
                        "another socket"
                    } else {
                        "another file"
                    });
                    return Err(err);
                }
            }
            r => r?,
        }
        let abs = std::fs::canonicalize(".")?.join(&path);
        let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::symlink_metadata(&path)?);
        bound.push(Bound { path: abs, ino });
        if !deleted && let Some(p) = &e.file_perms {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(p.mode & 0o7777))?;
            let c = CString::new(path.as_os_str().as_bytes())
                .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
            // SAFETY: lchown with a NUL-terminated path.
            unsafe { libc::lchown(c.as_ptr(), p.uid, p.gid) };
        }
        Ok(())
    })
    .map_err(|err| match by {
        Some(by) => taken(by),
        None => fail(err),
    })
}

/// Removes the socket files this restore bound (the same inode still at the path): a
/// failed restore leaves no name behind.
fn unbind_all(bound: &[Bound]) {
    for b in bound {
        if let Ok(m) = std::fs::symlink_metadata(&b.path)
            && m.file_type().is_socket_file()
            && std::os::unix::fs::MetadataExt::ino(&m) == b.ino
        {
            let _ = std::fs::remove_file(&b.path);
        }
    }
}

/// The name to send to `e` from anywhere: a relative path name joined to the binder's cwd
/// (when that still fits a `sockaddr_un`), any other name as it is.
fn reach_name(e: &UnixSkEntry) -> Vec<u8> {
    match (&e.name_dir, e.name.first()) {
        (Some(d), Some(c)) if *c != 0 && *c != b'/' => {
            let mut v = d.as_bytes().to_vec();
            v.push(b'/');
            v.extend_from_slice(trim_nul(&e.name));
            if v.len() <= 108 { v } else { e.name.clone() }
        }
        _ => e.name.clone(),
    }
}

/// A name as compared between a socket's entry and a queued datagram's sender: a path without
/// its trailing NULs, an abstract name whole.
fn name_key(name: &[u8]) -> &[u8] {
    if name.first() == Some(&0) {
        name
    } else {
        trim_nul(name)
    }
}

/// Sends `m` to `to` from a socket of its own bound to `addr` (the name of a sender no socket
/// of the tree holds now): an abstract name, or an absolute path where nothing is (the file
/// the bind makes is removed again). `Ok(false)` when the name cannot be taken.
fn send_as(
    addr: &[u8],
    m: &[u8],
    rights: &[RawFd],
    ucred: Option<super::creds::Ucred>,
    to: &[u8],
    what: &str,
) -> Result<bool, SocketError> {
    let path = (addr.first() != Some(&0))
        .then(|| Path::new(std::ffi::OsStr::from_bytes(trim_nul(addr))).to_path_buf());
    if let Some(p) = &path
        && (!p.is_absolute() || std::fs::symlink_metadata(p).is_ok())
    {
        return Ok(false);
    }
    let s = new_socket(libc::SOCK_DGRAM as u32)?;
    if bind_raw(s.as_raw_fd(), addr).is_err() {
        return Ok(false);
    }
    let r = send_msg(s.as_raw_fd(), m, rights, ucred, Some(to), what);
    if let Some(p) = &path {
        let _ = std::fs::remove_file(p);
    }
    r.map(|()| true)
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

/// Creates every unix socket of `entries` that `wanted` names (file ids held by a task),
/// connected, bound, queued and set up as dumped (see the module docs for the order). The
/// files in flight in the queues are unix sockets of `entries` or the engine's descriptors
/// `flight` (by file id). The descriptors are numbered `min` or above.
///
/// # Errors
/// [`SocketError::Sys`] naming the socket and what failed (a name that cannot be bound again
/// is named), [`SocketError::PeerUnnamed`], [`SocketError::PeerClosed`],
/// [`SocketError::NoSender`], [`SocketError::BadImage`].
/// [`SocketError::NameTaken`] for a name someone else holds now. On any error the socket
/// files this call bound are removed again.
///
/// With `defer` (the tree gets a pid namespace of its own), the queue of a receiver holding
/// a message with a sender's pid is not refilled here but pushed there, to be refilled once
/// the tree exists ([`super::late`]).
pub fn create_all(
    entries: &[UnixSkEntry],
    wanted: &HashSet<u32>,
    queues: &HashMap<u32, Vec<Queued>>,
    flight: &HashMap<u32, RawFd>,
    min: i32,
    defer: Option<&mut Vec<super::late::Deferred>>,
) -> Result<HashMap<u32, OwnedFd>, SocketError> {
    let mut bound = Vec::new();
    let r = create_all_in(entries, wanted, queues, flight, min, &mut bound, defer);
    if r.is_err() {
        // The sockets are closed by now (dropped with the error).
        unbind_all(&bound);
    }
    r
}

fn create_all_in(
    entries: &[UnixSkEntry],
    wanted: &HashSet<u32>,
    queues: &HashMap<u32, Vec<Queued>>,
    flight: &HashMap<u32, RawFd>,
    min: i32,
    bound: &mut Vec<Bound>,
    mut defer: Option<&mut Vec<super::late::Deferred>>,
) -> Result<HashMap<u32, OwnedFd>, SocketError> {
    let by_ino: HashMap<u32, &UnixSkEntry> = entries.iter().map(|e| (e.ino, e)).collect();
    // Connections still queued on a listener, with data: not made, their clients connect
    // again and send it.
    let queued_ends = embryos(entries);
    let mine: Vec<&UnixSkEntry> = entries
        .iter()
        .filter(|e| {
            wanted.contains(&e.id) && e.uflags & USK_EXTERN == 0 && !queued_ends.contains(&e.ino)
        })
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
        bind(s, e, bound)?;
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
            (None, None) if e.peer_gone == Some(true) => {
                // Connected to a receiver that was closed: connect it to a fresh autobound
                // socket and close that, so its next send fails with ECONNREFUSED as before.
                let s = match fds.remove(&e.ino) {
                    Some(s) => s,
                    None => new_socket(e.r#type)?,
                };
                let gone = new_socket(libc::SOCK_DGRAM as u32)?;
                let fam = libc::AF_UNIX as libc::sa_family_t;
                // SAFETY: bind reads the family alone (autobind) from a live local.
                let r = unsafe {
                    libc::bind(
                        gone.as_raw_fd(),
                        (&fam as *const libc::sa_family_t).cast(),
                        std::mem::size_of::<libc::sa_family_t>() as libc::socklen_t,
                    )
                };
                if r < 0 {
                    return Err(sys(format!(
                        "autobinding the stand-in receiver of unix socket id {}",
                        e.id
                    )));
                }
                let name = socket_name(gone.as_raw_fd()).map_err(|_| {
                    sys(format!(
                        "naming the stand-in receiver of unix socket id {}",
                        e.id
                    ))
                })?;
                connect_to(s.as_raw_fd(), &name).map_err(conn_err(e.id, &name))?;
                drop(gone);
                fds.insert(e.ino, s);
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
    //    datagram socket nobody is connected to, from a temporary socket to its name; the
    //    data of a queued connection by its client. Files in flight go with their message.
    let id_ino: HashMap<u32, u32> = mine.iter().map(|e| (e.id, e.ino)).collect();
    // Datagram sockets of the tree by name: the senders of queued datagrams that had one.
    let by_name: HashMap<&[u8], u32> = mine
        .iter()
        .filter(|s| dgram(s) && !s.name.is_empty())
        .map(|s| (name_key(&s.name), s.ino))
        .collect();
    let queued_conns: Vec<&UnixSkEntry> = entries
        .iter()
        .filter(|e| queued_ends.contains(&e.ino))
        .collect();
    // Receivers whose queue waits for the tree (their peek offset waits with it).
    let mut deferred: HashSet<u32> = HashSet::new();
    for e in mine.iter().chain(queued_conns.iter()) {
        let Some(msgs) = queues.get(&e.id) else {
            continue;
        };
        let what = format!("unix socket id {}", e.id);
        let reach = reach_name(e);
        let (from, to): (Option<RawFd>, Option<&[u8]>) = if let Some(s) = standin.get(&e.ino) {
            (Some(s.as_raw_fd()), None)
        } else if queued_ends.contains(&e.ino) {
            (fds.get(&e.peer).map(|f| f.as_raw_fd()), None)
        } else if let Some(p) = peer_of(e) {
            let f = fds.get(&p.ino).map(|f| f.as_raw_fd());
            if !dgram(e) || p.peer == e.ino {
                (f, None)
            } else {
                (f, Some(reach.as_slice()))
            }
        } else {
            (None, (!e.name.is_empty()).then_some(reach.as_slice()))
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
        let rights_of = |m: &Queued| -> Result<Vec<RawFd>, SocketError> {
            let mut rights = Vec::with_capacity(m.rights.len());
            for id in &m.rights {
                let fd = match id_ino.get(id).and_then(|ino| fds.get(ino)) {
                    Some(f) => f.as_raw_fd(),
                    None => *flight.get(id).ok_or_else(|| SocketError::BadImage {
                        file: names::SK_QUEUES.into(),
                        reason: format!(
                            "a message queued for {what} carries file id {id}, which was not made"
                        ),
                    })?,
                };
                rights.push(fd);
            }
            Ok(rights)
        };
        // A sender's pid in the tree's own pid namespace can be named only once it exists:
        // the whole queue waits (in order). Not for a queue that a shutdown, a closed peer's
        // stand-in or a removed name would no longer accept then (sent now: the pid reads 0).
        if let Some(later) = defer.as_deref_mut()
            && msgs.iter().any(|m| m.ucred.is_some_and(|c| c.0 > 0))
            && let Some(receiver) = fds.get(&e.ino)
            && !standin.contains_key(&e.ino)
            && e.shutdown.unwrap_or(0) == 0
            && peer_of(e).is_none_or(|p| p.shutdown.unwrap_or(0) == 0)
            && (to.is_none() || e.deleted != Some(true))
        {
            let mut later_msgs = Vec::with_capacity(msgs.len());
            for m in msgs {
                let rights = rights_of(m)?
                    .into_iter()
                    .map(super::late::dup)
                    .collect::<Result<Vec<_>, _>>()?;
                let sender = m
                    .addr
                    .as_deref()
                    .filter(|_| dgram(e) && !e.name.is_empty())
                    .and_then(|a| by_name.get(name_key(a)))
                    .and_then(|ino| fds.get(ino))
                    .map(|f| f.as_raw_fd())
                    .filter(|&f| f != from)
                    .map(super::late::dup)
                    .transpose()?;
                later_msgs.push(super::late::Msg {
                    data: m.data.clone(),
                    rights,
                    ucred: m.ucred,
                    sender,
                });
            }
            tracing::debug!(%what, "queue with a sender's pid in the tree's pid namespace: refilled once the tree exists");
            later.push(super::late::Deferred {
                what: what.clone(),
                from: super::late::dup(from)?,
                to: to.map(<[u8]>::to_vec),
                reach: reach.clone(),
                msgs: later_msgs,
                receiver: super::late::dup(receiver.as_raw_fd())?,
                peek_off: e.peek_off,
            });
            deferred.insert(e.ino);
            continue;
        }
        for m in msgs {
            let rights = rights_of(m)?;
            // A datagram from a named sender is sent from that name again, so recvfrom
            // gives the same address: the tree's socket holding it, or a socket of criu's
            // bound to it for the send. When neither can send to this receiver, it comes
            // from the socket that would send it otherwise (said at -v4).
            if let Some(a) = m.addr.as_deref().filter(|_| dgram(e) && !e.name.is_empty()) {
                let sender = by_name.get(name_key(a)).and_then(|ino| fds.get(ino));
                let sent = match sender {
                    Some(sf) if sf.as_raw_fd() == from => false,
                    Some(sf) => send_msg(
                        sf.as_raw_fd(),
                        &m.data,
                        &rights,
                        m.ucred,
                        Some(&reach),
                        &what,
                    )
                    .is_ok(),
                    None => send_as(a, &m.data, &rights, m.ucred, &reach, &what)?,
                };
                if sent {
                    continue;
                }
                if sender.is_none_or(|sf| sf.as_raw_fd() != from) {
                    tracing::debug!(
                        %what,
                        sender = %printable(a),
                        "a queued datagram's sender name could not be sent from again"
                    );
                }
            }
            send_msg(from, &m.data, &rights, m.ucred, to, &what)?;
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
        if let Some(off) = e.peek_off.filter(|&o| o >= 0 && !deferred.contains(&e.ino)) {
            // The queue is back: reads resume where the dumped socket's peek offset was.
            socket::set_int(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PEEK_OFF, off).map_err(
                |source| SocketError::Sys {
                    what: format!("setting SO_PEEK_OFF of unix socket id {}", e.id),
                    source,
                },
            )?;
        }
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
