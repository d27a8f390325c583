//! Open files, one module per kind, each holding both sides of its kind, as CRIU keeps
//! `files-reg.c`, `pipes.c`, `eventfd.c`, ... behind one table of operations.
//!
//! | module | kind | `files.img` entry |
//! |---|---|---|
//! | [`regular`] | regular files, directories, character devices; files deleted while open (ghosts) | `REG` |
//! | [`pipe`] | pipe ends, with the bytes waiting in the pipe (`pipes-data.img`) | `PIPE` |
//! | [`eventfd`] | eventfd with its counter | `EVENTFD` |
//! | [`signalfd`] | signalfd with its mask | `SIGNALFD` |
//! | [`timerfd`] | timerfd with its clock, setting and ticks | `TIMERFD` |
//! | [`epoll`] | epoll instance with its targets (made after them) | `EVENTPOLL` |
//! | [`memfd`] | memfd descriptors: name, size, mode, seals, content once per inode (`memfd.img`, `pagemap-shmem-SHMID.img`) | `MEMFD` |
//! | [`fifo`] | named pipes by path, with the bytes waiting in them (`fifo-data.img`) | `FIFO` (+ `REG` for the path) |
//! | [`inotify`] | inotify instances with their watches (by file handle and path), masks and watch descriptors | `INOTIFY` |
//! | [`fanotify`] | fanotify groups with their inode and mount marks (by file handle and path, by mount point) | `FANOTIFY` |
//! | [`pidfd`] | pidfds of the holder or its descendants, by pid | `PIDFD` |
//! | [`nsfile`] | `/proc/PID/ns/*` descriptors of criu's own namespaces; others refused by name | `NS` |
//! | [`tty`] | pty pairs (index, settings, waiting bytes, session and foreground group: `tty-info.img`, `tty-data.img`); a shell job's slave by path | `TTY` (+ `REG` for the path) |
//! | [`sockets`] | every socket, dispatched on its family: [`unix`] (names, pairs, backlogs, queued data in `sk-queues.img`), [`netlink`], [`packet`], [`inet`] (TCP and UDP; established connections in `tcp-stream-INO.img`, [`tcp`]); others refused by name | `UNIXSK`, `NETLINKSK`, `PACKETSK`, `INETSK` |
//!
//! The socket modules share [`sockdiag`] (one sock_diag dump per family and criu dump) and
//! [`socket`] (a copy of the task's socket taken with `pidfd_getfd`, socket options).
//!
//! # Adding a kind
//! A new kind of open file is one new module here plus one line in [`kinds`]:
//! 1. a type implementing [`FileKind`]: at dump time, [`FileKind::claims`] says whether a
//!    descriptor (what `/proc/PID/fd/N` links to, its `stat`, its fdinfo) is of this kind and
//!    [`FileKind::dump`] turns a new open file description into its `files.img` entry (keeping
//!    what the kind writes into images of its own, written by [`FileKind::write`]); at restore
//!    time [`FileKind::parse`] turns an entry into a [`RestoreFile`];
//! 2. a type implementing [`RestoreFile`]: what a task must do to get the file back. It is made
//!    either by the task that holds it ([`RestoreFile::make_in_task`], after `fork`, so it must
//!    not allocate) or, when several tasks hold it or the kind asks for it
//!    ([`RestoreFile::made_by_engine`]), by the engine before the tasks exist
//!    ([`RestoreFile::make_in_engine`]); the tasks then inherit it.
//!
//! Files made as one object (the two ends of a pipe, or of a socketpair) name a common
//! [`RestoreFile::group`] and each its [`RestoreFile::end`]: the object is made once, by the
//! first of its files met, and each file gets the descriptor of its end. What must exist before
//! a file is said by [`RestoreFile::after_fds`] (descriptors of the same task, made first: an
//! epoll's targets) and [`RestoreFile::after_files`] (file ids the engine makes first: a
//! listening socket before a connection to it).
//!
//! The dump ([`crate::dump::files`]) and the restore (`restore::images`, `restore::prepare`,
//! `restore::shared`, `restore::child`) keep only what all kinds share: file ids, descriptions
//! shared by several descriptors or tasks (kcmp), file locks, the order descriptors are made in,
//! and placing each made descriptor at its number.
// Unsafe code: adopts descriptors returned by raw system calls (from_raw_fd).
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;

use criu_images::ImageDir;
use criu_images::pb::{FdTypes, FileEntry, FownEntry, RemapFilePathEntry};

use crate::dump::error::DumpError;
use crate::dump::proc::FdInfo;
use crate::restore::error::RestoreError;

pub mod aio;
pub(crate) mod common;
pub mod epoll;
pub mod eventfd;
pub mod fanotify;
pub mod fifo;
pub mod inet;
pub(crate) mod inet_addr;
pub mod inotify;
pub mod memfd;
pub mod netlink;
pub mod nsfile;
pub mod packet;
pub mod pidfd;
pub mod pipe;
pub mod regular;
pub mod signalfd;
pub mod sockdiag;
pub mod socket;
pub mod sockets;
pub mod tcp;
pub mod timerfd;
pub mod tty;
pub mod tun;
pub mod unix;

/// The kinds of open file, in the order the dump asks them whether they take a descriptor.
/// [`regular::Regular`] is not listed: it is the dump's fallback (and also holds the executable
/// and the mapped files), kept apart by the file table.
pub fn kinds() -> Vec<Box<dyn FileKind>> {
    vec![
        Box::new(pipe::Pipe::default()),
        Box::new(tun::Tun),
        Box::new(eventfd::EventFd),
        Box::new(signalfd::SignalFd),
        Box::new(timerfd::TimerFd),
        Box::new(epoll::Epoll),
        Box::new(tty::Tty::default()),
        Box::new(memfd::Memfd::default()),
        Box::new(fifo::Fifo::default()),
        Box::new(inotify::Inotify),
        Box::new(fanotify::Fanotify),
        Box::new(pidfd::Pidfd),
        Box::new(nsfile::NsFile),
        Box::new(sockets::Sockets::default()),
        Box::new(sockets::NetlinkKind),
        Box::new(sockets::PacketKind),
        Box::new(sockets::InetKind::default()),
    ]
}

/// One descriptor of a task being dumped, as the dump found it.
#[derive(Debug)]
pub struct DumpFd<'a> {
    /// The task.
    pub pid: i32,
    /// The descriptor number.
    pub fd: i32,
    /// What `/proc/PID/fd/FD` links to (`/path`, `pipe:[INO]`, `anon_inode:[eventfd]`, ...).
    pub name: &'a str,
    /// `/proc/PID/fd/FD`, which opens the same file.
    pub source: &'a Path,
    /// Its `stat`.
    pub meta: &'a Metadata,
    /// Its fdinfo (flags with `O_CLOEXEC`, position, locks).
    pub info: &'a FdInfo,
    /// `--shell-job`: the task's terminal may be dumped.
    pub shell_job: bool,
    /// `--tcp-established`: established TCP connections may be dumped.
    pub tcp_established: bool,
    /// `--tcp-close`: established TCP connections are dumped without their state.
    pub tcp_close: bool,
    /// `--skip-in-flight`: connections not yet accepted are dropped.
    pub skip_in_flight: bool,
    /// The lock of each saved TCP connection (tree in criu's network namespace).
    pub conn_lock: Option<&'a crate::namespaces::net::conns::Shared>,
    /// `--orphan-pts-master`: a pty slave whose master is outside the tree may be dumped.
    pub orphan_pts_master: bool,
}

impl DumpFd<'_> {
    /// The file status flags the entry records (without the descriptor's `O_CLOEXEC`).
    pub fn flags(&self) -> u32 {
        self.info.flags & !(libc::O_CLOEXEC as u32)
    }

    /// The hexadecimal value of fdinfo line `field` of a `kind` descriptor (`[eventfd]`, ...).
    ///
    /// # Errors
    /// [`DumpError::Proc`], and [`DumpError::Fdinfo`] when the line is missing or not hex.
    pub fn fdinfo_hex(&self, kind: &str, field: &str) -> Result<u64, DumpError> {
        let text = self.fdinfo_text()?;
        text.field(field)
            .and_then(|v| u64::from_str_radix(v, 16).ok())
            .ok_or_else(|| text.bad(kind, field))
    }

    /// The text of `/proc/PID/fdinfo/FD`, for kinds that read more than [`FdInfo`] holds.
    ///
    /// # Errors
    /// [`DumpError::Proc`].
    pub fn fdinfo_text(&self) -> Result<FdinfoText, DumpError> {
        Ok(FdinfoText {
            text: crate::dump::proc::read_fdinfo_text(self.pid, self.fd)?,
            pid: self.pid,
            fd: self.fd,
        })
    }
}

/// The text of one fdinfo file, with its `key: value` lines at hand.
#[derive(Debug)]
pub struct FdinfoText {
    /// The whole text.
    pub text: String,
    pid: i32,
    fd: i32,
}

impl FdinfoText {
    /// The value of the first `key:` line, trimmed.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.text
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim_start_matches(':').trim())
    }

    /// The error for a value of a `kind` descriptor (`[eventfd]`, ...) that cannot be parsed.
    pub fn bad(&self, kind: &str, what: &str) -> DumpError {
        DumpError::Fdinfo {
            pid: self.pid,
            fd: self.fd,
            kind: kind.to_string(),
            what: what.to_string(),
        }
    }
}

/// The `fown` an entry is made with: nobody. The dump fills in the real owner of every kind
/// afterwards ([`set_fown`]).
pub fn fown_zero() -> FownEntry {
    FownEntry {
        uid: 0,
        euid: 0,
        signum: 0,
        pid_type: 0,
        pid: 0,
    }
}

/// What the restore side of a kind reads besides the entry: the images directory and what
/// several kinds need from it.
#[derive(Debug)]
pub struct ImageCtx<'a> {
    /// The images directory.
    pub dir: &'a ImageDir,
    /// `remap-fpath.img` by original file id (ghost files).
    pub remaps: &'a HashMap<u32, RemapFilePathEntry>,
    /// What the restore's options say about open files.
    pub opts: &'a FileOpts,
}

/// The restore options the file kinds read from their images' context.
#[derive(Clone, Debug, Default)]
pub struct FileOpts {
    /// `--shell-job`.
    pub shell_job: bool,
    /// `--tcp-close`: every TCP connection comes back closed, as CRIU does, even one whose
    /// state the dump saved.
    pub tcp_close: bool,
    /// `--orphan-pts-master`: a pty slave whose master was outside the tree gets a new master,
    /// handed to the `orphan-pts-master` notification.
    pub orphan_pts_master: bool,
    /// `--inherit-fd fd[N]:KEY`: criu's descriptor for each key (`tty[RDEV:DEV]` for a
    /// terminal outside the tree).
    pub inherit_fds: Vec<(String, i32)>,
}

impl FileOpts {
    /// criu's descriptor given for `key` with `--inherit-fd`.
    pub fn inherited(&self, key: &str) -> Option<i32> {
        self.inherit_fds
            .iter()
            .find(|(k, _)| k == key)
            .map(|&(_, fd)| fd)
    }
}

/// What [`FileKind::parse`] gives: the file to bring back, or why it cannot be.
pub type Parsed = Result<Arc<dyn RestoreFile>, RestoreError>;

/// One kind of open file: its dump side and how its image entries are read back.
pub trait FileKind {
    /// The `files.img` (and `fdinfo`) type of its entries.
    fn fd_type(&self) -> FdTypes;

    /// Dump: whether descriptor `fd` is of this kind.
    fn claims(&self, fd: &DumpFd<'_>) -> bool;

    /// Dump: the `files.img` entry (file id `id`) of the open file description behind `fd`,
    /// met for the first time in the tree.
    ///
    /// # Errors
    /// [`DumpError::FileState`] for a state of the kind that cannot be dumped, and whatever
    /// reading it fails with.
    fn dump(&mut self, fd: &DumpFd<'_>, id: u32) -> Result<FileEntry, DumpError>;

    /// Dump: called once every process of the tree was collected, before the images are
    /// written: a kind whose files link across processes (a socket and its peer) checks them
    /// here, and may fix its entries or add some (ids follow the last entry). `ext_unix_sk`:
    /// `--ext-unix-sk` (the inodes it lists; empty: all).
    ///
    /// # Errors
    /// [`DumpError::FileState`] naming the file.
    fn finish(
        &mut self,
        _entries: &mut Vec<FileEntry>,
        _ext_unix_sk: Option<&[u32]>,
    ) -> Result<(), DumpError> {
        Ok(())
    }

    /// Dump, after [`FileKind::finish`]: files deleted while open that this kind's `REG`
    /// entries name, to be saved as ghosts (`REG` entry id, the `/proc` link that opens the
    /// file, its `stat`), as regular files are.
    fn take_ghosts(&mut self) -> Vec<(u32, std::path::PathBuf, Metadata)> {
        Vec::new()
    }

    /// Dump: criu's own copies of files this kind met in flight (descriptors queued in a
    /// socket, `SCM_RIGHTS`), to be dumped as files of the tree; asked again until no kind
    /// gives any (a socket in flight may carry more). Each gets a file id, handed back in the
    /// same order by [`FileKind::in_flight_ids`]. `tree_dies`: the dump ends the tree (what it
    /// reads may change the tree's state then).
    ///
    /// # Errors
    /// What reading them fails with.
    fn take_in_flight(&mut self, _tree_dies: bool) -> Result<Vec<OwnedFd>, DumpError> {
        Ok(Vec::new())
    }

    /// Dump: the file ids of the files of the last [`FileKind::take_in_flight`], in order.
    fn in_flight_ids(&mut self, _ids: &[u32]) {}

    /// Dump: called once the dump is over; `killed` when the tree was killed (a kind holding
    /// state of the tree's files, like TCP connections in repair mode, lets it go).
    fn dump_done(&mut self, _killed: bool) {}

    /// Dump: writes the images of the kind's own (besides `files.img`) into `dir`.
    ///
    /// # Errors
    /// [`DumpError::Image`], [`DumpError::File`].
    fn write(&self, _dir: &Path) -> Result<(), DumpError> {
        Ok(())
    }

    /// Restore: what the task holding `e` at descriptor `fd` must do to get it back.
    ///
    /// # Errors
    /// [`RestoreError::BadImage`] for an entry that contradicts itself,
    /// [`RestoreError::FileState`] (or a typed refusal such as [`RestoreError::Socket`]) for
    /// one this restore cannot bring back.
    fn parse(&mut self, img: &ImageCtx<'_>, e: &FileEntry, fd: i32) -> Parsed;
}

/// The most descriptors one object is made with (a pipe's two ends).
pub const MAX_ENDS: usize = 2;

/// The descriptors one object was made with, in end order, at whatever numbers the kernel gave.
#[derive(Clone, Copy, Debug)]
pub struct Ends {
    /// The descriptors (`fds[..n]`).
    pub fds: [i32; MAX_ENDS],
    /// How many.
    pub n: usize,
}

impl Ends {
    /// One descriptor.
    pub fn one(fd: i32) -> Ends {
        Ends {
            fds: [fd, -1],
            n: 1,
        }
    }

    /// The one descriptor a call returned (`ret`), or its errno about target descriptor `fd`.
    ///
    /// # Errors
    /// The call's errno when `ret` is negative.
    pub fn made(ret: libc::c_long, fd: i32) -> Result<Ends, TaskError> {
        Ok(Ends::one(check(ret, fd as u64)? as i32))
    }
}

/// The one descriptor a call returned (`ret`), set up by `setup` (its status, its content);
/// closed again when setting it up fails. `fd` is the target descriptor, for reports. Runs in
/// a freshly forked task: no allocation.
///
/// # Errors
/// The errno of the call or of `setup`.
pub fn made_with(
    ret: libc::c_long,
    fd: i32,
    setup: impl FnOnce(i32) -> Result<(), TaskError>,
) -> Result<Ends, TaskError> {
    let t = check(ret, fd as u64)? as i32;
    if let Err(e) = setup(t) {
        // SAFETY: closing the descriptor just made, which nothing else holds.
        unsafe { libc::close(t) };
        return Err(e);
    }
    Ok(Ends::one(t))
}

/// [`RestoreFile::make_in_task`] of a file the engine always makes
/// ([`RestoreFile::made_by_engine`]): never called, `ENOTSUP` about target descriptor `fd`.
///
/// # Errors
/// Always.
pub fn engine_makes_it(fd: i32) -> Result<Ends, TaskError> {
    Err(TaskError {
        errno: libc::ENOTSUP,
        detail: fd as u64,
    })
}

/// A failed call while a task makes a file: the errno and a detail for the report (the target
/// descriptor, or what the call was about).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskError {
    /// The errno.
    pub errno: i32,
    /// The descriptor (or object) it concerns.
    pub detail: u64,
}

/// The errno of the last failed call.
pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// `ret` when it is not negative, else the errno as a [`TaskError`] about `detail`.
pub fn check(ret: libc::c_long, detail: u64) -> Result<libc::c_long, TaskError> {
    if ret < 0 {
        Err(TaskError {
            errno: errno(),
            detail,
        })
    } else {
        Ok(ret)
    }
}

/// Files by file id, each parsed from its entry ([`RestoreFile::engine_files`]).
pub type FilesById = [(u32, Arc<dyn RestoreFile>)];

/// One open file to bring back, as parsed from the images.
pub trait RestoreFile: std::fmt::Debug + Send + Sync {
    /// Its kind.
    fn fd_type(&self) -> FdTypes;

    /// The object it is one end of, with other files of the same kind and group (a pipe: its
    /// pipe id); `None` for a file that is an object of its own.
    fn group(&self) -> Option<u64> {
        None
    }

    /// Which end of its group's object it is (index into [`Ends`]).
    fn end(&self) -> usize {
        0
    }

    /// Descriptors of the same task that must exist before it is made (an epoll's targets).
    fn after_fds(&self) -> &[i32] {
        &[]
    }

    /// File ids the engine must make before it (when the engine makes it).
    fn after_files(&self) -> &[u32] {
        &[]
    }

    /// Descriptors of the holding task whose files the engine makes first, and hands to
    /// [`RestoreFile::make_in_engine_with`], when it makes this file for several tasks (an
    /// epoll's targets: the engine then makes them too, and the tasks inherit them).
    fn engine_targets(&self) -> &[i32] {
        &[]
    }

    /// [`RestoreFile::make_in_engine`] given the engine's descriptors of the files of
    /// [`RestoreFile::engine_targets`], in that order.
    ///
    /// # Errors
    /// As [`RestoreFile::make_in_engine`].
    fn make_in_engine_with(&self, targets: &[i32]) -> Result<Vec<OwnedFd>, RestoreError> {
        let _ = targets;
        self.make_in_engine()
    }

    /// Files the engine makes before it and hands to [`RestoreFile::make_in_engine_with`]
    /// after those of [`RestoreFile::engine_targets`], by file id, parsed from their entries:
    /// the files in flight in a socket's queue, sent again with their message. They are made
    /// by the engine even when no task holds them; a task that holds one inherits the same
    /// open file.
    fn engine_files(&self) -> &FilesById {
        &[]
    }

    /// What the engine does for it once every task is born and before any runs (a unix
    /// socket's queue holding a sender's pid in the tree's own pid namespace, which can be
    /// named only now). `host` gives criu's pid of a task of the tree by its pid in the
    /// images; `init` is criu's pid of the tree's root.
    ///
    /// # Errors
    /// The kind's errors, naming the file.
    fn after_tree(&self, host: &dyn Fn(i32) -> Option<i32>, init: i32) -> Result<(), RestoreError> {
        let _ = (host, init);
        Ok(())
    }

    /// Whether [`RestoreFile::after_tree`] has work (known once the engine made the file).
    fn has_after_tree(&self) -> bool {
        false
    }

    /// Whether it exists only once the tree does (a file under `/proc/PID` of a task of the
    /// tree): made by the engine for several tasks, it is opened after every task is born.
    fn needs_tree(&self) -> bool {
        false
    }

    /// For a pidfd of a thread other than its process's leader: `(tid, flags)`. The task holds
    /// a placeholder until the engine opens it in the task once the thread exists
    /// ([`pidfd::open_thread_pidfds`]).
    fn thread_pidfd(&self) -> Option<(i32, i32)> {
        None
    }

    /// Whether each task holding it makes its own, even when several share it (`/dev/tty`:
    /// only a task of the session can open it; the tasks then hold one open file each).
    fn per_task(&self) -> bool {
        false
    }

    /// Whether the engine always makes it, even when one task holds it (objects whose ends
    /// must be made together across tasks, or that need other tasks' files first).
    fn made_by_engine(&self) -> bool {
        false
    }

    /// For a terminal that was the controlling terminal of a session: `(session, foreground
    /// process group)`; the session leader makes it its terminal again once its descriptors
    /// are placed.
    fn ctty(&self) -> Option<(i32, i32)> {
        None
    }

    /// Made in the task only once its session has its controlling terminal again (`/dev/tty`,
    /// which opens that terminal).
    fn after_ctty(&self) -> bool {
        false
    }

    /// Makes the object in the task that holds it (target descriptor `fd`, for reports): all
    /// its ends, close-on-exec, at any numbers. Runs in a freshly forked task: no allocation,
    /// no locks.
    ///
    /// # Errors
    /// The failing call's errno.
    fn make_in_task(&self, fd: i32) -> Result<Ends, TaskError>;

    /// Makes the object in the engine, for tasks to inherit: one descriptor per end. By
    /// default the way a task makes it ([`RestoreFile::make_in_task`]): an object made from
    /// its entry alone (an eventfd, a timerfd) is the same whoever makes it.
    ///
    /// # Errors
    /// [`RestoreError::FileState`] for kinds the engine cannot make, and what making it
    /// fails with.
    fn make_in_engine(&self) -> Result<Vec<OwnedFd>, RestoreError> {
        let ends = self.make_in_task(-1).map_err(|e| RestoreError::Sys {
            what: "making a file shared by several processes",
            errno: nix::errno::Errno::from_raw(e.errno),
        })?;
        Ok(ends.fds[..ends.n.min(MAX_ENDS)]
            .iter()
            .map(|&fd| owned(fd))
            .collect())
    }
}

/// The name of a kind in messages: its `files.img` type, in lower case (`pipe`, `eventfd`).
pub fn kind_name(t: FdTypes) -> String {
    t.as_str_name().to_ascii_lowercase()
}

/// An engine-side error from the last failed call.
pub(crate) fn sys(what: &'static str) -> RestoreError {
    RestoreError::Sys {
        what,
        errno: nix::errno::Errno::last(),
    }
}

/// Wraps a raw descriptor the caller owns.
pub(crate) fn owned(fd: i32) -> OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: callers pass a descriptor they just created and own exclusively.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// The `flags` and `fown` fields of an entry, whatever its kind.
fn status_fields(e: &mut FileEntry) -> Option<(&mut u32, &mut FownEntry)> {
    macro_rules! pick {
        ($($f:ident),*) => {
            $(if let Some(x) = e.$f.as_mut() {
                return Some((&mut x.flags, &mut x.fown));
            })*
        };
    }
    pick!(
        reg, pipe, efd, epfd, sgfd, tfd, tty, usk, nlsk, psk, isk, ffy
    );
    None
}

/// Dump: records the owner `fown` (`F_SETOWN_EX`, `F_SETSIG`) of the open file of entry `e`,
/// whatever its kind, unless the kind recorded one itself.
pub fn set_fown(e: &mut FileEntry, fown: FownEntry) {
    if let Some((_, f)) = status_fields(e)
        && f.pid == 0
        && f.signum == 0
    {
        *f = fown;
    }
}

/// What belongs to an open file description whatever its kind, applied to each descriptor
/// once it is made: its status flags and its owner for signals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileStatus {
    /// `open` flags as dumped (access mode and status flags).
    pub flags: i32,
    /// `F_OWNER_TID`, `F_OWNER_PID` or `F_OWNER_PGRP` (with `owner_pid` not 0).
    pub owner_type: i32,
    /// The owner (0: nobody).
    pub owner_pid: i32,
    /// The signal sent instead of `SIGIO` (0: `SIGIO`).
    pub signum: i32,
}

/// Status flags `F_SETFL` changes.
const SETFL_MASK: i32 = libc::O_APPEND | libc::O_ASYNC | libc::O_NOATIME | libc::O_NONBLOCK;

impl FileStatus {
    /// The status of entry `e`, whatever its kind (`None` for kinds without one).
    pub fn of(e: &FileEntry) -> Option<FileStatus> {
        let mut e = e.clone();
        let (flags, f) = status_fields(&mut e)?;
        Some(FileStatus {
            flags: *flags as i32,
            owner_type: f.pid_type as i32,
            owner_pid: f.pid as i32,
            signum: f.signum as i32,
        })
    }

    /// Gives descriptor `fd` (just made, in the task that holds it) its owner, signal and
    /// status flags (`O_NONBLOCK`, `O_ASYNC`, `O_APPEND`, ...), which belong to the open file,
    /// not to the object it is open on. Runs in a freshly forked task: no allocation.
    ///
    /// # Errors
    /// The failing `fcntl`'s errno.
    pub fn apply(&self, fd: i32) -> Result<(), TaskError> {
        /// `struct f_owner_ex`.
        #[repr(C)]
        struct OwnerEx {
            ty: i32,
            pid: i32,
        }
        const F_SETOWN_EX: i32 = 15;
        const F_SETSIG: i32 = 10;
        let d = fd as u64;
        if self.signum != 0 {
            // SAFETY: F_SETSIG takes an int.
            check(unsafe { libc::fcntl(fd, F_SETSIG, self.signum) } as _, d)?;
        }
        if self.owner_pid != 0 {
            let ex = OwnerEx {
                ty: self.owner_type,
                pid: self.owner_pid,
            };
            // SAFETY: F_SETOWN_EX reads a live f_owner_ex.
            let r = unsafe { libc::fcntl(fd, F_SETOWN_EX, &ex as *const OwnerEx) };
            check(r as _, d)?;
        }
        // SAFETY: F_GETFL takes no argument.
        let cur = check(unsafe { libc::fcntl(fd, libc::F_GETFL) } as _, d)? as i32;
        let want = (cur & !SETFL_MASK) | (self.flags & SETFL_MASK);
        if want != cur {
            // SAFETY: F_SETFL takes an int.
            check(unsafe { libc::fcntl(fd, libc::F_SETFL, want) } as _, d)?;
        }
        Ok(())
    }
}
