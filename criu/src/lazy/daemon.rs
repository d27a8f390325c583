//! `criu lazy-pages`: the daemon that fills lazily restored memory.
//!
//! It listens on `lazy-pages.socket` in the work directory, takes the userfaultfd of each
//! restored task, and then, in one loop over every descriptor:
//! - a missing-page fault gets the saved pages from the faulting page on (up to 64 KiB of
//!   one saved run), or a zero page where nothing was saved;
//! - a fork of a restored task hands over the child's userfaultfd: the child is served from
//!   the same saved pages (what it did not have at the fork, its parent did not either);
//! - `mremap` moves what is still to come with the area; `munmap` and
//!   `madvise(MADV_DONTNEED)` drop it (those pages read as zeros from then on);
//! - once the restore said it finished, and no event waits, the rest is pushed 1 MiB at a
//!   time, task by task. When nothing is left the daemon exits, and the kernel forgets the
//!   registrations (a later fault is an ordinary one). A restored task that ends (its pidfd
//!   says so) takes what it still missed with it.
//!
//! Pages come from the images in `-D` (through the parent chain), or with `--page-server`
//! from a `criu page-server --lazy-pages` or `criu dump --lazy-pages` at `--address:--port`,
//! asked with `PS_IOV_GET` for the task's pid.
//!
//! # When the daemon dies
//! The kernel would then drop the registrations and the tasks would read zero pages where
//! their data was. So before it takes any descriptor the daemon forks a watchdog that holds a
//! copy of each; when the daemon's end of their socket closes without the word that all is
//! in, the watchdog kills (`SIGKILL`) every task it was given and all their descendants,
//! waits until they are gone (5 s at most) and only then lets go of the descriptors. A thread
//! waiting on a fault is woken by the kill. The same happens when the daemon fails (a page
//! server that went away, an image that cannot be read): it says why in its log and exits
//! with an error.

// Unsafe code: fork, poll, SCM_RIGHTS, kill and pidfds.
#![allow(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

use criu_images::pagemap::{PAGE_SIZE, PE_PRESENT};

use super::images::{LocalPages, TaskLazy, task_lazy};
use super::{LazyError, RESTORE_FINISHED, SOCKET_NAME, io_err, uffd};
use crate::pageserver::wire::{IOV_SIZE, PS_IOV_ADD_F, PS_IOV_CLOSE, PS_IOV_GET, PsIov};

/// What `criu lazy-pages` was asked.
#[derive(Clone, Debug)]
pub struct LazyOptions {
    /// The images directory (`-D`).
    pub dir: PathBuf,
    /// The work directory: the socket is made there.
    pub work_dir: PathBuf,
    /// `--page-server --address --port`: get the pages from there.
    pub page_server: Option<(String, u16)>,
    /// `--status-fd`: one zero byte is written there once listening.
    pub status_fd: Option<i32>,
    /// Push pages in the background once the restore finished (off: `CRIU_LAZY_PUSH=0`,
    /// pages come on faults only, to test and measure that path).
    pub push: bool,
}

/// What a run of the daemon did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LazyStats {
    /// Tasks served (forked children included).
    pub tasks: u64,
    /// Pages copied in on a fault.
    pub fault_pages: u64,
    /// Pages pushed in the background.
    pub pushed_pages: u64,
    /// Pages never sent because their task ended first.
    pub dropped_pages: u64,
    /// Zero pages given on a fault.
    pub zero_pages: u64,
}

impl Default for LazyOptions {
    fn default() -> Self {
        LazyOptions {
            dir: PathBuf::new(),
            work_dir: PathBuf::new(),
            page_server: None,
            status_fd: None,
            push: true,
        }
    }
}

const FAULT_CHUNK: u64 = 64 << 10;
const PUSH_CHUNK: u64 = 1 << 20;

/// One area of a task, where it is now and where it was in the images.
#[derive(Clone, Copy, Debug)]
struct Area {
    cur: u64,
    len: u64,
    img: u64,
}

/// One userfaultfd being served.
struct Task {
    fd: OwnedFd,
    /// The pid whose images hold its pages.
    pid: i32,
    /// A pidfd of the restored task (none for a fork: its pid is not known), readable once it
    /// ended.
    pidfd: Option<OwnedFd>,
    areas: Vec<Area>,
    /// Image ranges whose saved pages are still to come: start -> end.
    pending: BTreeMap<u64, u64>,
}

impl Task {
    fn new(fd: OwnedFd, pid: i32, tl: &TaskLazy) -> Task {
        Task {
            fd,
            pid,
            pidfd: pidfd(pid),
            areas: tl
                .areas
                .iter()
                .map(|&(s, e)| Area {
                    cur: s,
                    len: e - s,
                    img: s,
                })
                .collect(),
            pending: tl.pages.iter().copied().collect(),
        }
    }

    /// The image address of `cur` and the end of its area (image addresses).
    fn to_img(&self, cur: u64) -> Option<(u64, u64)> {
        self.areas
            .iter()
            .find(|a| a.cur <= cur && cur < a.cur + a.len)
            .map(|a| (a.img + (cur - a.cur), a.img + a.len))
    }

    /// Where image address `img` is now, and the end of that piece (image addresses).
    fn to_cur(&self, img: u64) -> Option<(u64, u64)> {
        self.areas
            .iter()
            .find(|a| a.img <= img && img < a.img + a.len)
            .map(|a| (a.cur + (img - a.img), a.img + a.len))
    }

    /// The pending range holding `img`, cut to `[img, limit)`.
    fn pending_at(&self, img: u64, limit: u64) -> Option<u64> {
        let (_, &e) = self.pending.range(..=img).next_back()?;
        (e > img).then(|| e.min(limit))
    }

    /// Marks image range `[a, b)` as no longer pending.
    fn done(&mut self, a: u64, b: u64) {
        let mut cut = Vec::new();
        for (&s, &e) in self.pending.range(..b) {
            if e > a {
                cut.push((s, e));
            }
        }
        for (s, e) in cut {
            self.pending.remove(&s);
            if s < a {
                self.pending.insert(s, a);
            }
            if e > b {
                self.pending.insert(b, e);
            }
        }
    }

    /// The task moved `[from, from + len)` to `to`: pieces of areas inside move along.
    /// Moves of nothing we know (the restorer putting a premapped area in place) change
    /// nothing.
    fn remap(&mut self, from: u64, to: u64, len: u64) {
        let end = from + len;
        let mut out = Vec::with_capacity(self.areas.len() + 2);
        for a in &self.areas {
            let (s, e) = (a.cur, a.cur + a.len);
            let (x, y) = (s.max(from), e.min(end));
            if x >= y {
                out.push(*a);
                continue;
            }
            if s < x {
                out.push(Area {
                    cur: s,
                    len: x - s,
                    img: a.img,
                });
            }
            out.push(Area {
                cur: to + (x - from),
                len: y - x,
                img: a.img + (x - s),
            });
            if y < e {
                out.push(Area {
                    cur: y,
                    len: e - y,
                    img: a.img + (y - s),
                });
            }
        }
        self.areas = out;
    }

    /// `[a, b)` was unmapped (`unmap`) or emptied: what was to come there is dropped.
    fn remove(&mut self, a: u64, b: u64, unmap: bool) {
        let mut drop = Vec::new();
        for ar in &self.areas {
            let (x, y) = (ar.cur.max(a), (ar.cur + ar.len).min(b));
            if x < y {
                drop.push((ar.img + (x - ar.cur), ar.img + (y - ar.cur)));
            }
        }
        for (x, y) in drop {
            self.done(x, y);
        }
        if unmap {
            // Keep the pieces outside [a, b): a remap of nothing we know is harmless, so
            // model the unmap as a move far away and a drop.
            let mut out = Vec::new();
            for ar in &self.areas {
                let (s, e) = (ar.cur, ar.cur + ar.len);
                if e <= a || s >= b {
                    out.push(*ar);
                    continue;
                }
                if s < a {
                    out.push(Area {
                        cur: s,
                        len: a - s,
                        img: ar.img,
                    });
                }
                if e > b {
                    out.push(Area {
                        cur: b,
                        len: e - b,
                        img: ar.img + (b - s),
                    });
                }
            }
            self.areas = out;
        }
    }
}

/// Where pages come from.
enum Source {
    Local(HashMap<i32, LocalPages>),
    Remote { sock: TcpStream, peer: String },
}

impl Source {
    /// Reads saved pages of `pid` from image address `img` into `buf` (its whole length,
    /// which lies inside one saved run).
    fn fetch(
        &mut self,
        dir: &std::path::Path,
        pid: i32,
        img: u64,
        buf: &mut [u8],
    ) -> Result<(), LazyError> {
        match self {
            Source::Local(map) => {
                let lp = match map.entry(pid) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(LocalPages::open(dir, pid)?)
                    }
                };
                let mut at = 0;
                while at < buf.len() {
                    let n = lp.read(img + at as u64, &mut buf[at..])?;
                    if n == 0 {
                        return Err(LazyError::Image {
                            file: criu_images::names::pagemap(pid as u32),
                            reason: format!(
                                "lazy page {:#x} is not in the images (its pages are on a page \
                                 server: use --page-server)",
                                img + at as u64
                            ),
                        });
                    }
                    at += n;
                }
                Ok(())
            }
            Source::Remote { sock, peer } => {
                let nr = buf.len() as u64 / PAGE_SIZE;
                let req = PsIov::new(PS_IOV_GET, 0, nr, img, pid as u64);
                sock.write_all(&req.encode())
                    .map_err(io_err(format!("ask the page server {peer} for pages")))?;
                let mut b = [0u8; IOV_SIZE];
                sock.read_exact(&mut b)
                    .map_err(io_err(format!("the page server {peer} does not answer")))?;
                let r = PsIov::decode(&b);
                if r.command() != PS_IOV_ADD_F
                    || r.flags() & PE_PRESENT == 0
                    || r.vaddr != img
                    || r.nr_pages != nr
                {
                    return Err(LazyError::Protocol(format!(
                        "the page server {peer} answered {} pages at {:#x} (command {:#x}) \
                         for {nr} pages of task {pid} at {img:#x}",
                        r.nr_pages, r.vaddr, r.cmd
                    )));
                }
                sock.read_exact(buf).map_err(io_err(format!(
                    "receive pages of task {pid} at {img:#x} from {peer}"
                )))?;
                Ok(())
            }
        }
    }
}

struct Daemon {
    dir: PathBuf,
    source: Source,
    tasks: Vec<Task>,
    watchdog: OwnedFd,
    stats: LazyStats,
    buf: Vec<u8>,
}

impl Daemon {
    /// Takes a new descriptor for `pid` (a restored task, or `parent`'s fork).
    fn add(&mut self, fd: OwnedFd, pid: i32, from: Option<usize>) -> Result<(), LazyError> {
        let t = match from {
            Some(i) => Task {
                fd,
                pid,
                pidfd: None,
                areas: self.tasks[i].areas.clone(),
                pending: self.tasks[i].pending.clone(),
            },
            None => {
                let tl = task_lazy(&self.dir, pid)?;
                if let Source::Local(map) = &mut self.source {
                    let lp = LocalPages::open(&self.dir, pid)?;
                    if let Some(&(a, b)) = tl.pages.iter().find(|p| !lp.holds(p.0, p.1)) {
                        return Err(LazyError::Image {
                            file: criu_images::names::pagemap(pid as u32),
                            reason: format!(
                                "lazy pages {a:#x}-{b:#x} are not in the images (they are on a \
                                 page server: use --page-server)"
                            ),
                        });
                    }
                    map.insert(pid, lp);
                }
                tracing::info!(
                    pid,
                    bytes = tl.bytes(),
                    areas = tl.areas.len(),
                    "task to serve"
                );
                Task::new(fd, pid, &tl)
            }
        };
        // The watchdog holds a copy, and the pid of a restored task to kill.
        let wpid = if from.is_some() { 0 } else { pid };
        super::restore::send_fd_with(
            self.watchdog.as_raw_fd(),
            t.fd.as_raw_fd(),
            &wpid.to_ne_bytes(),
        )
        .map_err(|e| LazyError::Io {
            what: "hand a descriptor to the watchdog".into(),
            source: std::io::Error::from_raw_os_error(e),
        })?;
        self.stats.tasks += 1;
        self.tasks.push(t);
        Ok(())
    }

    /// Handles every message waiting on task `i`; returns false when the task is gone.
    fn events(&mut self, i: usize) -> Result<bool, LazyError> {
        loop {
            let fd = self.tasks[i].fd.as_raw_fd();
            let m = match uffd::read_msg(fd) {
                Ok(Some(m)) => m,
                Ok(None) => return Ok(true),
                Err(e) => {
                    tracing::debug!(pid = self.tasks[i].pid, errno = e, "userfaultfd closed");
                    return Ok(false);
                }
            };
            match m.event {
                uffd::EVENT_PAGEFAULT => {
                    if !self.fault(i, m.arg[1] & !(PAGE_SIZE - 1))? {
                        return Ok(false);
                    }
                }
                uffd::EVENT_FORK => {
                    let child = m.arg[0] as u32 as RawFd;
                    // SAFETY: the kernel installed this descriptor in our table for us.
                    let child = unsafe { OwnedFd::from_raw_fd(child) };
                    let pid = self.tasks[i].pid;
                    tracing::debug!(pid, "a restored task forked");
                    self.add(child, pid, Some(i))?;
                }
                uffd::EVENT_REMAP => {
                    self.tasks[i].remap(m.arg[0], m.arg[1], m.arg[2]);
                }
                uffd::EVENT_REMOVE => self.tasks[i].remove(m.arg[0], m.arg[1], false),
                uffd::EVENT_UNMAP => self.tasks[i].remove(m.arg[0], m.arg[1], true),
                other => {
                    return Err(LazyError::Protocol(format!(
                        "unknown userfaultfd event {other:#x}"
                    )));
                }
            }
        }
    }

    /// Serves a fault at page `addr` of task `i`; false when the task is gone.
    fn fault(&mut self, i: usize, addr: u64) -> Result<bool, LazyError> {
        let t = &self.tasks[i];
        let fd = t.fd.as_raw_fd();
        let Some((img, area_end)) = t.to_img(addr) else {
            return Ok(self.zero(i, addr));
        };
        let Some(end) = t.pending_at(img, area_end.min(img + FAULT_CHUNK)) else {
            return Ok(self.zero(i, addr));
        };
        let len = (end - img) as usize;
        let pid = t.pid;
        let mut buf = std::mem::take(&mut self.buf);
        self.source.fetch(&self.dir, pid, img, &mut buf[..len])?;
        let r = self.copy(fd, addr, &buf[..len]);
        self.buf = buf;
        match r {
            Ok(n) => {
                self.tasks[i].done(img, img + n);
                self.stats.fault_pages += n / PAGE_SIZE;
                Ok(true)
            }
            Err(e) => Ok(self.gone(i, e)),
        }
    }

    /// Copies `src` to `dst`; pages already there (`EEXIST`) are skipped. Returns the bytes
    /// now in place.
    fn copy(&self, fd: RawFd, dst: u64, src: &[u8]) -> Result<u64, i32> {
        match uffd::copy(fd, dst, src) {
            Ok(n) => Ok(n),
            Err((libc::EEXIST, _)) => {
                for off in (0..src.len()).step_by(PAGE_SIZE as usize) {
                    let page = &src[off..off + PAGE_SIZE as usize];
                    match uffd::copy(fd, dst + off as u64, page) {
                        Ok(_) | Err((libc::EEXIST, _)) => {}
                        Err((e, _)) => return Err(e),
                    }
                }
                Ok(src.len() as u64)
            }
            Err((e, _)) => Err(e),
        }
    }

    fn zero(&mut self, i: usize, addr: u64) -> bool {
        match uffd::zeropage(self.tasks[i].fd.as_raw_fd(), addr, PAGE_SIZE) {
            Ok(()) | Err(libc::EEXIST) => {
                self.stats.zero_pages += 1;
                true
            }
            Err(e) => self.gone(i, e),
        }
    }

    /// After a failed copy: whether the task is still there (`EAGAIN`: its memory is being
    /// changed, the event comes next).
    fn gone(&self, i: usize, e: i32) -> bool {
        match e {
            libc::EAGAIN | libc::ENOENT | libc::EINVAL => true,
            _ => {
                tracing::debug!(pid = self.tasks[i].pid, errno = e, "task gone");
                false
            }
        }
    }

    /// Pushes up to [`PUSH_CHUNK`] of what task `i` still misses; false when it is gone.
    fn push(&mut self, i: usize) -> Result<bool, LazyError> {
        let t = &self.tasks[i];
        let Some((&a, &b)) = t.pending.iter().next() else {
            return Ok(true);
        };
        let Some((cur, piece_end)) = t.to_cur(a) else {
            // No longer mapped anywhere.
            let end = t
                .areas
                .iter()
                .filter(|ar| ar.img > a)
                .map(|ar| ar.img)
                .min()
                .unwrap_or(b)
                .min(b);
            self.tasks[i].done(a, end);
            return Ok(true);
        };
        let end = b.min(piece_end).min(a + PUSH_CHUNK);
        let len = (end - a) as usize;
        let (pid, fd) = (t.pid, t.fd.as_raw_fd());
        let mut buf = std::mem::take(&mut self.buf);
        self.source.fetch(&self.dir, pid, a, &mut buf[..len])?;
        let r = self.copy(fd, cur, &buf[..len]);
        self.buf = buf;
        match r {
            Ok(n) => {
                self.tasks[i].done(a, a + n);
                self.stats.pushed_pages += n / PAGE_SIZE;
                Ok(true)
            }
            Err(libc::EAGAIN) => Ok(true),
            Err(libc::ENOENT | libc::EINVAL) => {
                // Not registered there any more: an unmap whose event is still unread.
                self.tasks[i].done(a, end);
                Ok(true)
            }
            Err(e) => Ok(self.gone(i, e)),
        }
    }
}

/// One connection from a restore.
struct Conn {
    sock: UnixStream,
}

/// Runs `criu lazy-pages`: serves every task a restore hands over until all of its memory is
/// in.
///
/// # Errors
/// [`LazyError`] when it cannot listen, an image or the page server fails, or the restore
/// ends without finishing; the watchdog then kills what was restored.
pub fn run_lazy_pages(o: &LazyOptions) -> Result<LazyStats, LazyError> {
    // First, so that it holds nothing but what it is given (a copy of the listening socket
    // would accept a restore after the daemon died).
    let watchdog = spawn_watchdog()?;
    let path = o.work_dir.join(SOCKET_NAME);
    let _ = std::fs::remove_file(&path);
    let listener =
        UnixListener::bind(&path).map_err(io_err(format!("listen on {}", path.display())))?;
    listener
        .set_nonblocking(true)
        .map_err(io_err("set the socket non-blocking"))?;
    let source = match &o.page_server {
        Some((addr, port)) => {
            let peer = format!("{addr}:{port}");
            let sock = TcpStream::connect((addr.as_str(), *port))
                .map_err(io_err(format!("connect to the page server {peer}")))?;
            let _ = sock.set_nodelay(true);
            tracing::info!(%peer, "pages come from the page server");
            Source::Remote { sock, peer }
        }
        None => Source::Local(HashMap::new()),
    };
    tracing::info!(socket = %path.display(), "lazy-pages daemon listening");
    if let Some(fd) = o.status_fd {
        // SAFETY: one byte from a live buffer to a descriptor handed to us, then closed.
        unsafe {
            libc::write(fd, [0u8].as_ptr().cast(), 1);
            libc::close(fd);
        }
    }
    let mut d = Daemon {
        dir: o.dir.clone(),
        source,
        tasks: Vec::new(),
        watchdog,
        stats: LazyStats::default(),
        buf: vec![0u8; PUSH_CHUNK.max(FAULT_CHUNK) as usize],
    };
    let r = serve(&mut d, &listener, o.push);
    let _ = std::fs::remove_file(&path);
    match &r {
        Ok(()) => {
            // All in: the watchdog may let go.
            // SAFETY: sends one byte of a live buffer on our socket.
            unsafe {
                libc::send(
                    d.watchdog.as_raw_fd(),
                    b"D".as_ptr().cast(),
                    1,
                    libc::MSG_NOSIGNAL,
                )
            };
            if let Source::Remote { sock, .. } = &mut d.source {
                let _ = sock.write_all(&PsIov::new(PS_IOV_CLOSE, 0, 0, 0, 0).encode());
                let mut st = [0u8; 4];
                let _ = sock.read_exact(&mut st);
            }
            tracing::info!(
                tasks = d.stats.tasks,
                fault_pages = d.stats.fault_pages,
                pushed_pages = d.stats.pushed_pages,
                zero_pages = d.stats.zero_pages,
                dropped_pages = d.stats.dropped_pages,
                "all lazy pages are in"
            );
        }
        Err(e) => tracing::error!("{e}; the watchdog kills the restored tasks"),
    }
    r.map(|()| d.stats)
}

fn serve(d: &mut Daemon, listener: &UnixListener, push: bool) -> Result<(), LazyError> {
    let mut conns: Vec<Conn> = Vec::new();
    let mut accepted = false;
    let mut finished = false;
    let mut next_push = 0usize;
    loop {
        let left = d.tasks.iter().any(|t| !t.pending.is_empty());
        if finished && !left {
            return Ok(());
        }
        let work = finished && left && push;
        if accepted && conns.is_empty() && !finished {
            return Err(LazyError::Protocol(
                "the restore ended without finishing (it failed or was killed)".into(),
            ));
        }
        let mut pfds: Vec<libc::pollfd> = Vec::with_capacity(1 + conns.len() + d.tasks.len());
        let ev = |fd: RawFd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        pfds.push(ev(listener.as_raw_fd()));
        pfds.extend(conns.iter().map(|c| ev(c.sock.as_raw_fd())));
        pfds.extend(d.tasks.iter().map(|t| ev(t.fd.as_raw_fd())));
        // Each task's pidfd (or the uffd again where there is none, which is harmless).
        pfds.extend(
            d.tasks
                .iter()
                .map(|t| ev(t.pidfd.as_ref().unwrap_or(&t.fd).as_raw_fd())),
        );
        // SAFETY: polls a live array of pollfds of descriptors we own.
        let n = unsafe {
            libc::poll(
                pfds.as_mut_ptr(),
                pfds.len() as libc::nfds_t,
                if work { 0 } else { -1 },
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(io_err("poll")(e));
        }
        if n == 0 && work {
            let k = d.tasks.len();
            for j in 0..k {
                let i = (next_push + j) % k;
                if !d.tasks[i].pending.is_empty() {
                    if !d.push(i)? {
                        d.tasks.remove(i);
                    }
                    next_push = i + 1;
                    break;
                }
            }
            continue;
        }
        // Tasks first: a waiting fault matters most.
        let base = 1 + conns.len();
        let nt = d.tasks.len();
        let mut gone = Vec::new();
        for i in 0..nt {
            if pfds[base + i].revents != 0 && !d.events(i)? {
                gone.push(i);
            } else if d.tasks[i].pidfd.is_some() && pfds[base + nt + i].revents != 0 {
                tracing::info!(pid = d.tasks[i].pid, "a restored task ended");
                gone.push(i);
            }
        }
        for i in gone.into_iter().rev() {
            let t = d.tasks.remove(i);
            d.stats.dropped_pages += t
                .pending
                .iter()
                .map(|(a, b)| (b - a) / PAGE_SIZE)
                .sum::<u64>();
        }
        let mut closed = Vec::new();
        for (k, c) in conns.iter_mut().enumerate() {
            if pfds[1 + k].revents == 0 {
                continue;
            }
            match recv_msg(&mut c.sock)? {
                Msg::Eof => closed.push(k),
                Msg::Finished => {
                    tracing::info!("the restore finished: pushing the rest");
                    finished = true;
                }
                Msg::Zombie(pid) => tracing::debug!(pid, "zombie"),
                Msg::Task(pid, fd) => d.add(fd, pid, None)?,
            }
        }
        for k in closed.into_iter().rev() {
            conns.remove(k);
        }
        if pfds[0].revents != 0 {
            loop {
                match listener.accept() {
                    Ok((sock, _)) => {
                        sock.set_nonblocking(false)
                            .map_err(io_err("set a connection blocking"))?;
                        conns.push(Conn { sock });
                        accepted = true;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(io_err("accept a restore")(e)),
                }
            }
        }
    }
}

enum Msg {
    Eof,
    Finished,
    Zombie(i32),
    Task(i32, OwnedFd),
}

fn recv_msg(sock: &mut UnixStream) -> Result<Msg, LazyError> {
    let mut b = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match sock.read(&mut b[got..]) {
            Ok(0) if got == 0 => return Ok(Msg::Eof),
            Ok(0) => return Err(LazyError::Protocol("a restore sent half a pid".into())),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err("read from a restore")(e)),
        }
    }
    let v = i32::from_ne_bytes(b);
    if v as u32 == RESTORE_FINISHED {
        return Ok(Msg::Finished);
    }
    if v <= 0 {
        return Ok(Msg::Zombie(-v));
    }
    let fd = recv_fd(sock.as_raw_fd()).map_err(|e| LazyError::Io {
        what: format!("receive the userfaultfd of task {v}"),
        source: std::io::Error::from_raw_os_error(e),
    })?;
    Ok(Msg::Task(v, fd))
}

/// Receives up to 4 bytes carrying a descriptor; returns the descriptor and the bytes as a
/// native `i32`. `Err(Some(b))`: a message of one byte `b` without a descriptor;
/// `Err(None)`: end of stream or an error.
fn recv_fd_byte(sock: RawFd) -> Result<(OwnedFd, i32), Option<u8>> {
    let mut b = [0u8; 4];
    let mut iov = libc::iovec {
        iov_base: b.as_mut_ptr().cast(),
        iov_len: 4,
    };
    let mut cbuf = [0u64; 8];
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
    // SAFETY: receives into live buffers described by `msg`.
    let n = unsafe { libc::recvmsg(sock, &raw mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n <= 0 {
        return Err(None);
    }
    // SAFETY: the kernel filled the control buffer; the CMSG macros stay inside it.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        if c.is_null()
            || (*c).cmsg_level != libc::SOL_SOCKET
            || (*c).cmsg_type != libc::SCM_RIGHTS
            || (*c).cmsg_len < libc::CMSG_LEN(4) as _
        {
            return Err(Some(b[0]));
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<i32>());
        Ok((OwnedFd::from_raw_fd(fd), i32::from_ne_bytes(b)))
    }
}

/// Receives the one byte that carries a task's userfaultfd.
fn recv_fd(sock: RawFd) -> Result<OwnedFd, i32> {
    recv_fd_byte(sock)
        .map(|(fd, _)| fd)
        .map_err(|_| libc::EBADMSG)
}

/// Forks the watchdog (see the module's documentation); returns the daemon's end of its
/// socket (`SOCK_SEQPACKET`). Messages: a descriptor with the `i32` pid to kill (0: none) as
/// its data, or the one byte `D` (done: let go without killing).
fn spawn_watchdog() -> Result<OwnedFd, LazyError> {
    let mut sv = [0i32; 2];
    // SAFETY: socketpair writes two descriptors into our array.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            sv.as_mut_ptr(),
        )
    } != 0
    {
        return Err(io_err("make the watchdog's socket")(
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: both descriptors were just made for us.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) };
    // SAFETY: the daemon is single-threaded here; the child only runs `watchdog` and exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io_err("fork the watchdog")(std::io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(ours);
        watchdog(theirs);
    }
    drop(theirs);
    Ok(ours)
}

fn watchdog(sock: OwnedFd) -> ! {
    // Not stopped by a terminal's ^C meant for the daemon alone.
    // SAFETY: setsid takes no arguments.
    unsafe { libc::setsid() };
    let mut held: Vec<OwnedFd> = Vec::new();
    let mut pids: Vec<i32> = Vec::new();
    let done = loop {
        match recv_fd_byte(sock.as_raw_fd()) {
            Ok((fd, pid)) => {
                held.push(fd);
                if pid > 0 {
                    pids.push(pid);
                }
            }
            Err(Some(b'D')) => break true,
            Err(_) => break false,
        }
    };
    if !done && !pids.is_empty() {
        tracing::error!(
            ?pids,
            "the lazy-pages daemon is gone before all pages were in: killing the restored tasks"
        );
        let mut all = Vec::new();
        for &p in &pids {
            descendants(p, &mut all);
        }
        let fds: Vec<OwnedFd> = all.iter().filter_map(|&p| pidfd(p)).collect();
        for &p in &all {
            // SAFETY: kill takes plain values.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        for fd in &fds {
            let mut pfd = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: polls one live pollfd of a pidfd of ours.
            unsafe { libc::poll(&raw mut pfd, 1, 5000) };
        }
    }
    drop(held);
    std::process::exit(0);
}

/// `pid` and all its descendants (through every thread's `children`), parents first.
fn descendants(pid: i32, out: &mut Vec<i32>) {
    if out.contains(&pid) || !std::path::Path::new(&format!("/proc/{pid}")).exists() {
        return;
    }
    out.push(pid);
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return;
    };
    for t in tasks.flatten() {
        let p = t.path().join("children");
        if let Ok(s) = std::fs::read_to_string(p) {
            for c in s.split_whitespace().filter_map(|c| c.parse().ok()) {
                descendants(c, out);
            }
        }
    }
}

fn pidfd(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open with plain values returns a new descriptor of ours or an error.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a descriptor just returned to us.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}
