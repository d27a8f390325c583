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
//! asked with `PS_IOV_GET` for the task's pid ([`super::source`]).
//!
//! Before it takes any descriptor it forks a watchdog ([`super::watchdog`]) that kills the
//! restored tasks if the daemon dies before all their pages are in.

// Unsafe code: poll, writes to the status descriptor, the watchdog's socket and waitpid.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

use criu_images::pagemap::PAGE_SIZE;

use super::images::{LocalPages, task_lazy};
use super::recv::{Msg, recv_msg};
use super::source::Source;
use super::task::Task;
use super::{LazyError, SOCKET_NAME, io_err, uffd, watchdog};
use crate::pageserver::wire::{PS_IOV_CLOSE, PsIov};
use crate::scripts::{Notify, ScriptAction, ScriptError};

/// What `criu lazy-pages` was asked.
#[derive(Clone, Debug)]
pub struct LazyOptions {
    /// The images directory (`-D`).
    pub dir: PathBuf,
    /// The work directory: the socket is made there.
    pub work_dir: PathBuf,
    /// `--page-server --address --port`: get the pages from there.
    pub page_server: Option<(String, u16)>,
    /// `--tls` and its files: the page server connection is TLS (see
    /// [`crate::pageserver::tls`]).
    pub tls: crate::options::TlsOptions,
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
            tls: Default::default(),
            status_fd: None,
            push: true,
        }
    }
}

const FAULT_CHUNK: u64 = 64 << 10;
const PUSH_CHUNK: u64 = 1 << 20;

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
    let quiet = |_: ScriptAction, _: Option<i32>| -> Result<(), ScriptError> { Ok(()) };
    run_lazy_pages_with(o, &quiet)
}

/// [`run_lazy_pages`], telling `ready` (the action scripts) at `status-ready`: once it
/// listens, before `--status-fd`, as CRIU's `status_ready`.
///
/// # Errors
/// As [`run_lazy_pages`]; [`LazyError::StatusReady`] when a script fails (nothing is written
/// to the status descriptor, the socket is removed).
pub fn run_lazy_pages_with(o: &LazyOptions, ready: &dyn Notify) -> Result<LazyStats, LazyError> {
    // First, so that it holds nothing but what it is given (a copy of the listening socket
    // would accept a restore after the daemon died).
    let (watchdog, watchdog_pid) = watchdog::spawn()?;
    let path = o.work_dir.join(SOCKET_NAME);
    let _ = std::fs::remove_file(&path);
    let listener =
        UnixListener::bind(&path).map_err(io_err(format!("listen on {}", path.display())))?;
    listener
        .set_nonblocking(true)
        .map_err(io_err("set the socket non-blocking"))?;
    let source = match &o.page_server {
        Some((addr, port)) => {
            let (sock, peer) =
                crate::pageserver::PageClient::connect(addr, *port, &o.tls)?.into_parts();
            tracing::info!(%peer, tls = o.tls.enabled, "pages come from the page server");
            Source::Remote { sock, peer }
        }
        None => Source::Local(HashMap::new()),
    };
    tracing::info!(socket = %path.display(), "lazy-pages daemon listening");
    if let Err(e) = ready.notify(ScriptAction::StatusReady, None) {
        let _ = std::fs::remove_file(&path);
        return Err(LazyError::StatusReady(e));
    }
    crate::pageserver::server::tell_status(o.status_fd);
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
    let stats = d.stats;
    // Closing our end lets the watchdog go (and kill, unless it heard `D`); it is our child.
    drop(d);
    // SAFETY: waits for our own child; no status is read.
    unsafe { libc::waitpid(watchdog_pid, std::ptr::null_mut(), 0) };
    r.map(|()| stats)
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
