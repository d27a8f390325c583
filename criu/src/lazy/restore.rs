//! The restore's side of lazy pages: which pages are left out of the fill, a connection to
//! the daemon for each task, and what the task does with it before its restorer runs (make
//! a userfaultfd, register its lazy areas, send it).
// Unsafe code: the task sends its userfaultfd with sendmsg(SCM_RIGHTS) from a forked child,
// without allocating.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use super::images::{TaskLazy, subtract, task_lazy};
use super::{LazyError, RESTORE_FINISHED, io_err, uffd};
use crate::restore::layout::PAGE;
use crate::restore::plan::{PageRun, TreePlan, Vma};

/// What one task does for lazy restore, as plain data for the child.
#[derive(Debug)]
pub struct ChildLazy {
    /// Its own connection to the daemon.
    pub sock: i32,
    /// Its pid in the images (what the daemon finds its pagemap by).
    pub pid: i32,
    /// Areas to register, `(start, len)`: at their final addresses until [`ChildLazy::at`]
    /// moves them to where they are premapped.
    pub areas: Vec<(u64, u64)>,
}

impl ChildLazy {
    /// The same work with the areas at their premapped addresses (`premapped[i]` is
    /// premapped at `premap_addr[i]`).
    pub fn at(&self, premapped: &[&Vma], premap_addr: &[u64]) -> ChildLazy {
        let areas = self
            .areas
            .iter()
            .filter_map(|&(s, len)| {
                let i = premapped
                    .iter()
                    .position(|v| v.start == s && v.end == s + len)?;
                Some((premap_addr[i], len))
            })
            .collect();
        ChildLazy {
            sock: self.sock,
            pid: self.pid,
            areas,
        }
    }
}

/// A lazy restore in progress.
#[derive(Debug)]
pub struct LazyRestore {
    main: UnixStream,
    tasks: HashMap<i32, TaskLazy>,
    conns: Vec<OwnedFd>,
    path: std::path::PathBuf,
}

impl LazyRestore {
    /// Connects to the daemon at `socket` and leaves the lazy pages of every task of `tree`
    /// out of its fill.
    ///
    /// # Errors
    /// [`LazyError::Io`] when no daemon listens there, [`LazyError::Image`] for images that
    /// do not say what is lazy.
    pub fn prepare(dir: &Path, socket: &Path, tree: &mut TreePlan) -> Result<Self, LazyError> {
        let main = UnixStream::connect(socket).map_err(io_err(format!(
            "connect to {} (is `criu lazy-pages` running in this work directory?)",
            socket.display()
        )))?;
        let mut tasks = HashMap::new();
        let mut zombies = Vec::new();
        for t in tree.tasks.iter_mut() {
            if t.zombie.is_some() || t.helper {
                if t.zombie.is_some() {
                    zombies.push(t.pid);
                }
                continue;
            }
            let tl = task_lazy(dir, t.pid)?;
            let before: u64 = t.pages.iter().map(|r| r.nr_pages).sum();
            t.pages = subtract(
                &t.pages,
                &tl.pages,
                |r: &PageRun| (r.vaddr, r.vaddr + r.nr_pages * PAGE),
                |r, skip, len| PageRun {
                    vaddr: r.vaddr + skip,
                    nr_pages: len / PAGE,
                    file: r.file,
                    offset: r.offset + skip,
                },
            );
            let after: u64 = t.pages.iter().map(|r| r.nr_pages).sum();
            tracing::info!(
                pid = t.pid,
                lazy_pages = before - after,
                areas = tl.areas.len(),
                "memory left to the lazy-pages daemon"
            );
            tasks.insert(t.pid, tl);
        }
        let mut me = LazyRestore {
            main,
            tasks,
            conns: Vec::new(),
            path: socket.to_path_buf(),
        };
        // Zombies have no memory: a negative pid tells the daemon (as CRIU's restore does).
        for pid in zombies {
            me.main
                .write_all(&(-pid).to_ne_bytes())
                .map_err(io_err("tell the lazy-pages daemon about a zombie"))?;
        }
        Ok(me)
    }

    /// The lazy work of task `pid` (its areas at their final addresses, see
    /// [`ChildLazy::at`]), with a connection of its own; `None` when it has no lazy memory.
    ///
    /// # Errors
    /// [`LazyError::Io`] when the daemon cannot be reached again.
    pub fn task(&mut self, pid: i32) -> Result<Option<ChildLazy>, LazyError> {
        let Some(tl) = self.tasks.get(&pid) else {
            return Ok(None);
        };
        if tl.areas.is_empty() {
            return Ok(None);
        }
        let areas = tl.areas.iter().map(|&(s, e)| (s, e - s)).collect();
        let c = UnixStream::connect(&self.path).map_err(io_err(format!(
            "connect to {} for task {pid}",
            self.path.display()
        )))?;
        let fd: OwnedFd = c.into();
        let sock = fd.as_raw_fd();
        self.conns.push(fd);
        Ok(Some(ChildLazy { sock, pid, areas }))
    }

    /// Tells the daemon the tree is restored: it starts pushing the rest.
    ///
    /// # Errors
    /// [`LazyError::Io`] if the daemon went away.
    pub fn finish(&mut self) -> Result<(), LazyError> {
        self.conns.clear();
        self.main
            .write_all(&RESTORE_FINISHED.to_ne_bytes())
            .map_err(io_err("tell the lazy-pages daemon the restore finished"))
    }
}

/// In the restored task, before its restorer runs: makes a userfaultfd, registers the lazy
/// areas (premapped; the restorer's `mremap` carries the registration to their final place,
/// which the daemon hears as a remap event), sends pid and descriptor on the task's own
/// connection, and closes both. Allocates nothing (it runs in a forked child).
///
/// # Errors
/// `(errno, detail)`: the area that could not be registered, or 0.
pub fn child_send(l: &ChildLazy) -> Result<(), (i32, u64)> {
    let (fd, got) = uffd::open(uffd::LAZY_FEATURES).map_err(|e| (e, 0))?;
    if got & uffd::LAZY_FEATURES != uffd::LAZY_FEATURES {
        return Err((libc::EOPNOTSUPP, got));
    }
    for &(a, len) in &l.areas {
        uffd::register_missing(fd.as_raw_fd(), a, len).map_err(|e| (e, a))?;
    }
    let pid = l.pid.to_ne_bytes();
    // SAFETY: sends 4 bytes of a live buffer on a socket the engine connected for us.
    let n = unsafe { libc::send(l.sock, pid.as_ptr().cast(), pid.len(), libc::MSG_NOSIGNAL) };
    if n != pid.len() as isize {
        return Err((errno(), 0));
    }
    send_fd_with(l.sock, fd.as_raw_fd(), &[0]).map_err(|e| (e, 0))?;
    // SAFETY: the connection is ours and used no more (the descriptor table copy of the
    // engine's other connections is closed with the other inherited descriptors).
    unsafe { libc::close(l.sock) };
    Ok(())
}

/// Sends `data` (at most 4 bytes) carrying `fd` as `SCM_RIGHTS`.
pub(crate) fn send_fd_with(sock: i32, fd: i32, data: &[u8]) -> Result<(), i32> {
    #[repr(C)]
    struct Cmsg {
        hdr: libc::cmsghdr,
        fd: i32,
        pad: i32,
    }
    let mut bytes = [0u8; 4];
    let n = data.len().min(4);
    bytes[..n].copy_from_slice(&data[..n]);
    let mut iov = libc::iovec {
        iov_base: bytes.as_mut_ptr().cast(),
        iov_len: n,
    };
    // SAFETY: all-zero is a valid cmsghdr/msghdr (null pointers, zero lengths).
    let mut c: Cmsg = unsafe { std::mem::zeroed() };
    // SAFETY: CMSG_LEN only computes a length.
    c.hdr.cmsg_len = unsafe { libc::CMSG_LEN(4) } as _;
    c.hdr.cmsg_level = libc::SOL_SOCKET;
    c.hdr.cmsg_type = libc::SCM_RIGHTS;
    c.fd = fd;
    // SAFETY: all-zero is a valid msghdr (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = (&raw mut c).cast();
    // SAFETY: CMSG_SPACE only computes a length; it fits `Cmsg` (16 + 4, padded to 24).
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(4) } as _;
    // SAFETY: the message points at live locals for the whole call.
    let sent = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
    if sent != n as isize {
        return Err(errno());
    }
    Ok(())
}

const _: () = assert!(std::mem::size_of::<libc::cmsghdr>() + 8 == 24);

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}
