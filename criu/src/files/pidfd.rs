//! pidfds (`PIDFD` entries): the process a pidfd refers to, by its pid (`nspid`), and the
//! pidfd's flags, as CRIU writes them.
//!
//! Dump: a descriptor whose link reads `anon_inode:[pidfd]` (or `pidfd:[INO]` with pidfs); the
//! target is the `Pid:` of its fdinfo. Only targets the restore brings back before the holder
//! makes its descriptors are taken: the holder itself or one of its descendants (restored with
//! their pids, before the holder's files). A pidfd of a process that has exited and been reaped
//! (`Pid: -1`) is written with `nspid` -1, as CRIU does. A pidfd of a process outside that
//! subtree is refused by name. A pidfd of a thread (`PIDFD_THREAD`, kept in the entry's flags
//! as the kernel shows it, `O_EXCL`) is taken when the thread's process is in that subtree.
//! Restore: the task opens the pidfd again with `pidfd_open` and the saved flags; for a reaped
//! process it opens one of a short-lived child of its own and reaps it. A thread other than
//! its process's leader exists only once the restorer has made it, just before the tree
//! resumes: the task holds a placeholder pidfd at the number until then, and the engine opens
//! the thread's pidfd in the task (`pidfd_open` and `dup3` run through ptrace while every
//! thread is stopped) before it lets the tree go ([`open_thread_pidfds`]). A thread's pidfd
//! several processes hold (inherited over `fork`) is opened in the first of them; the others
//! take that same open file from it (`pidfd_getfd`, run in each through ptrace), so it stays
//! one file.
#![allow(unsafe_code)]

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use criu_images::pb::{FdTypes, FileEntry, PidfdEntry};

use super::{DumpFd, Ends, FileKind, ImageCtx, Parsed, RestoreFile, TaskError, fown_zero};
use crate::dump::error::DumpError;
use crate::restore::error::RestoreError;
use crate::restore::images::entry::{bad, kind_entry};

/// `PIDFD_THREAD` (`O_EXCL`).
const PIDFD_THREAD: u32 = libc::O_EXCL as u32;

/// The pidfd kind.
#[derive(Debug, Default)]
pub struct Pidfd;

impl FileKind for Pidfd {
    fn fd_type(&self) -> FdTypes {
        FdTypes::Pidfd
    }

    fn claims(&self, fd: &DumpFd<'_>) -> bool {
        fd.name == "anon_inode:[pidfd]" || fd.name.starts_with("pidfd:")
    }

    fn dump(&mut self, fd: &DumpFd<'_>, id: u32) -> Result<FileEntry, DumpError> {
        let text = fd.fdinfo_text()?;
        let target: i32 = text
            .field("Pid")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| text.bad("pidfd", "Pid"))?;
        let refuse = |why: String| DumpError::FileState {
            kind: "pidfd",
            what: format!("fd {} of {} (pidfd): {why}", fd.fd, fd.pid),
        };
        if target == -1 {
            // The process has exited and been reaped: the pidfd only reports that.
            tracing::debug!(pid = fd.pid, fd = fd.fd, "pidfd of a reaped process");
            return Ok(pidfd_entry(fd, id, -1));
        }
        if target <= 0 {
            return Err(refuse(format!(
                "its process is not visible here (pid {target})"
            )));
        }
        let Some(tgid) = tgid_of(target) else {
            return Err(refuse(format!("its process {target} is gone")));
        };
        if !in_subtree(tgid, fd.pid) {
            return Err(refuse(format!(
                "process {tgid} is neither the holder nor one of its descendants"
            )));
        }
        if tgid != target && fd.flags() & PIDFD_THREAD == 0 {
            return Err(refuse(format!("thread {target} without PIDFD_THREAD")));
        }
        tracing::debug!(pid = fd.pid, fd = fd.fd, target, tgid, "pidfd");
        Ok(pidfd_entry(fd, id, target))
    }

    fn parse(&mut self, img: &ImageCtx<'_>, e: &FileEntry, fd: i32) -> Parsed {
        let p = kind_entry(&e.pidfd, fd, "pidfd")?;
        if p.nspid <= 0 && p.nspid != -1 {
            return Err(bad(
                criu_images::names::FILES,
                format!("pidfd fd {fd}: pid {}", p.nspid),
            ));
        }
        let flags = p.flags as i32 & (libc::O_NONBLOCK | PIDFD_THREAD as i32);
        // A thread other than a leader: made in the task by the engine once it exists.
        let mut thread = false;
        if p.flags & PIDFD_THREAD != 0 && p.nspid != -1 {
            let tree = img
                .dir
                .read_pstree()
                .map_err(|e| bad(criu_images::names::PSTREE, e.to_string()))?;
            let tid = p.nspid as u32;
            let Some(t) = tree
                .iter()
                .find(|t| t.pid == tid || t.threads.contains(&tid))
            else {
                return Err(bad(
                    criu_images::names::FILES,
                    format!("pidfd fd {fd}: thread {} is not in the tree", p.nspid),
                ));
            };
            thread = t.pid != tid;
        }
        Ok(Arc::new(PidfdFile {
            pid: p.nspid,
            flags,
            thread,
        }))
    }
}

/// The `PIDFD` entry of `fd`, naming `nspid` (-1: a reaped process, as CRIU writes it).
fn pidfd_entry(fd: &DumpFd<'_>, id: u32, nspid: i32) -> FileEntry {
    FileEntry {
        id,
        r#type: FdTypes::Pidfd as i32,
        pidfd: Some(PidfdEntry {
            id,
            ino: fd.meta.ino() as u32,
            flags: fd.flags(),
            nspid,
            fown: fown_zero(),
        }),
        ..FileEntry::default()
    }
}

/// The thread group of `tid` (`Tgid:` of its status).
fn tgid_of(tid: i32) -> Option<i32> {
    let s = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The parent of `pid` (`PPid:` of its status).
fn parent_of(pid: i32) -> Option<i32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Whether `pid` is `root` or one of its descendants.
fn in_subtree(mut pid: i32, root: i32) -> bool {
    for _ in 0..4096 {
        if pid == root {
            return true;
        }
        match parent_of(pid) {
            Some(p) if p > 0 && p != pid => pid = p,
            _ => return false,
        }
    }
    false
}

/// A pidfd of a process that has exited and been reaped: a short-lived child is forked, its
/// pidfd opened while it is a zombie, and the child reaped, so the pidfd reports `Pid: -1`,
/// reads as exited and refuses signals, like the dumped one. Returns the fd or -1 (errno set).
fn dead_pidfd(flags: i32) -> i32 {
    // SAFETY: the child calls only _exit, which is async-signal-safe.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: ends the child at once without running any handler of the parent.
        unsafe { libc::_exit(0) };
    }
    if child < 0 {
        return -1;
    }
    // SAFETY: pidfd_open takes integers only; the child is a zombie until reaped below.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, child, flags) } as i32;
    let err = std::io::Error::last_os_error();
    let mut status = 0;
    // SAFETY: waits for our own child, writing the live local `status`.
    unsafe { libc::waitpid(child, &mut status, libc::__WALL) };
    if r < 0 {
        // SAFETY: restores the errno of pidfd_open for the caller's report.
        unsafe { *libc::__errno_location() = err.raw_os_error().unwrap_or(libc::EINVAL) };
    }
    r
}

/// A pidfd to open again.
#[derive(Debug)]
pub struct PidfdFile {
    /// The process.
    pub pid: i32,
    /// `O_NONBLOCK` (`PIDFD_NONBLOCK`) and `PIDFD_THREAD`.
    pub flags: i32,
    /// `pid` is a thread other than its process's leader ([`open_thread_pidfds`]).
    pub thread: bool,
}

impl RestoreFile for PidfdFile {
    fn fd_type(&self) -> FdTypes {
        FdTypes::Pidfd
    }

    fn thread_pidfd(&self) -> Option<(i32, i32)> {
        self.thread.then_some((self.pid, self.flags))
    }

    fn make_in_task(&self, fd: i32) -> Result<Ends, TaskError> {
        if self.pid == -1 {
            return Ends::made(libc::c_long::from(dead_pidfd(self.flags)), fd);
        }
        if self.thread {
            // A placeholder (a pidfd of this task) until the thread exists.
            // SAFETY: getpid and pidfd_open take integers only.
            let r = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), self.flags) };
            return Ends::made(r as _, fd);
        }
        // SAFETY: pidfd_open takes integers only; the new descriptor is close-on-exec.
        let r = unsafe { libc::syscall(libc::SYS_pidfd_open, self.pid, self.flags) };
        Ends::made(r as _, fd)
    }
}

/// Where the thread pidfds opened so far live, by file id: the pid (in the tree's own
/// numbering) and descriptor of the first task that holds each ([`open_thread_pidfds`]).
pub(crate) type ThreadPidfds = std::collections::HashMap<u32, (i32, i32)>;

/// Opens the pidfds of threads other than leaders ([`RestoreFile::thread_pidfd`]) in the
/// restored task `pid` (the host's pid of its leader, ptrace-stopped with every thread made;
/// `ns_pid` its pid in the tree), at the numbers their placeholders hold: `pidfd_open` of the
/// thread, `dup3` onto the number (and onto every descriptor that duplicates it), `close` of
/// the new number, each run through the `syscall` instruction at `insn`. The pids are the
/// task's own (the calls run in it). A file another task already opened (`opened`) is taken
/// from that task instead (`pidfd_open` of it, `pidfd_getfd`), so that both hold one open file;
/// if the kernel refuses that (the tasks' credentials), the task opens a pidfd of its own, and
/// the log says so.
///
/// # Errors
/// [`RestoreError::Trace`] when running a call fails, [`RestoreError::FileState`] when
/// `pidfd_open` or `dup3` fails in the task.
pub(crate) fn open_thread_pidfds(
    pid: i32,
    ns_pid: i32,
    insn: u64,
    fds: &[crate::restore::plan::Fd],
    opened: &mut ThreadPidfds,
) -> Result<(), RestoreError> {
    use crate::restore::plan::FdSource;
    for f in fds {
        let FdSource::File(file) = &f.source else {
            continue;
        };
        let Some((tid, flags)) = file.thread_pidfd() else {
            continue;
        };
        let fail = |what: &str, ret: i64| RestoreError::FileState {
            kind: "pidfd",
            what: format!(
                "fd {} of {pid}: {what} of thread {tid}: {}",
                f.fd,
                std::io::Error::from_raw_os_error(-ret as i32)
            ),
        };
        let taken = match opened.get(&f.file_id) {
            Some(&(owner, at)) => take_from(pid, insn, owner, at)?,
            None => None,
        };
        let made = match taken {
            Some(fd) => fd,
            None => {
                let made = remote(
                    pid,
                    insn,
                    compel_arch::nr::PIDFD_OPEN,
                    [tid as u64, flags as u64, 0],
                )?;
                if made < 0 {
                    return Err(fail("pidfd_open", made));
                }
                opened.entry(f.file_id).or_insert((ns_pid, f.fd));
                made
            }
        };
        let dups = fds.iter().filter(|d| match d.source {
            FdSource::Dup { of } => of == f.fd,
            FdSource::File(_) => d.fd == f.fd,
        });
        for d in dups {
            let cloexec = if d.cloexec { libc::O_CLOEXEC } else { 0 };
            let r = remote(
                pid,
                insn,
                compel_arch::nr::DUP3,
                [made as u64, d.fd as u64, cloexec as u64],
            )?;
            if r < 0 {
                return Err(fail("dup3", r));
            }
        }
        remote(pid, insn, compel_arch::nr::CLOSE, [made as u64, 0, 0])?;
        tracing::debug!(
            pid,
            fd = f.fd,
            tid,
            shared = taken.is_some(),
            "pidfd of a thread opened"
        );
    }
    Ok(())
}

/// Takes descriptor `at` of task `owner` (a pid of the tree's numbering) into the stopped task
/// `pid`: `pidfd_open` of the owner and `pidfd_getfd`, run in the task. The new descriptor, or
/// `None` when the kernel refuses (logged).
fn take_from(pid: i32, insn: u64, owner: i32, at: i32) -> Result<Option<i64>, RestoreError> {
    let pfd = remote(pid, insn, compel_arch::nr::PIDFD_OPEN, [owner as u64, 0, 0])?;
    if pfd < 0 {
        tracing::warn!(
            pid,
            owner,
            errno = -pfd,
            "a thread's pidfd cannot be shared: pidfd_open of its first holder failed; opening one of its own"
        );
        return Ok(None);
    }
    let got = remote(
        pid,
        insn,
        compel_arch::nr::PIDFD_GETFD,
        [pfd as u64, at as u64, 0],
    )?;
    remote(pid, insn, compel_arch::nr::CLOSE, [pfd as u64, 0, 0])?;
    if got < 0 {
        tracing::warn!(
            pid,
            owner,
            fd = at,
            errno = -got,
            "a thread's pidfd cannot be shared: pidfd_getfd from its first holder failed; opening one of its own"
        );
        return Ok(None);
    }
    Ok(Some(got))
}

/// Runs system call `nr` with `args` in the stopped thread `tid`; its raw result.
fn remote(tid: i32, insn: u64, nr: usize, args: [u64; 3]) -> Result<i64, RestoreError> {
    let err = |what: &'static str| {
        move |e: compel::TaskError| RestoreError::Trace {
            pid: tid,
            what,
            errno: match e {
                compel::TaskError::Ptrace { source, .. }
                | compel::TaskError::Wait { source, .. } => source,
                _ => nix::errno::Errno::ESRCH,
            },
        }
    };
    let run = compel::syscall_stop::SyscallRun::start(
        tid,
        compel::RemoteAddr(insn),
        nr,
        [args[0], args[1], args[2], 0, 0, 0],
    )
    .map_err(err("a system call for a thread's pidfd"))?;
    run.finish()
        .map_err(err("a system call for a thread's pidfd"))
}
