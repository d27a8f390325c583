//! pidfds (`PIDFD` entries): the process a pidfd refers to, by its pid (`nspid`), and the
//! pidfd's flags, as CRIU writes them.
//!
//! Dump: a descriptor whose link reads `anon_inode:[pidfd]` (or `pidfd:[INO]` with pidfs); the
//! target is the `Pid:` of its fdinfo. Only targets the restore brings back before the holder
//! makes its descriptors are taken: the holder itself or one of its descendants (restored with
//! their pids, before the holder's files). A pidfd of a process that has exited and been reaped
//! (`Pid: -1`) is written with `nspid` -1, as CRIU does. A pidfd of a process outside that
//! subtree or of a thread (`PIDFD_THREAD`) is refused by name. Restore: the task opens the
//! pidfd again with `pidfd_open` and the saved flags; for a reaped process it opens one of a
//! short-lived child of its own and reaps it.
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
        if fd.flags() & PIDFD_THREAD != 0 || tgid_of(target) != Some(target) {
            return Err(refuse(format!("a pidfd of thread {target}")));
        }
        if !in_subtree(target, fd.pid) {
            return Err(refuse(format!(
                "process {target} is neither the holder nor one of its descendants"
            )));
        }
        tracing::debug!(pid = fd.pid, fd = fd.fd, target, "pidfd");
        Ok(pidfd_entry(fd, id, target))
    }

    fn parse(&mut self, _img: &ImageCtx<'_>, e: &FileEntry, fd: i32) -> Parsed {
        let p = kind_entry(&e.pidfd, fd, "pidfd")?;
        if p.nspid <= 0 && p.nspid != -1 {
            return Err(bad(
                criu_images::names::FILES,
                format!("pidfd fd {fd}: pid {}", p.nspid),
            ));
        }
        if p.flags & PIDFD_THREAD != 0 {
            return Err(RestoreError::FileState {
                kind: "pidfd",
                what: format!("pidfd fd {fd} of thread {}", p.nspid),
            });
        }
        Ok(Arc::new(PidfdFile {
            pid: p.nspid,
            flags: p.flags as i32 & libc::O_NONBLOCK,
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
    /// `O_NONBLOCK` (`PIDFD_NONBLOCK`).
    pub flags: i32,
}

impl RestoreFile for PidfdFile {
    fn fd_type(&self) -> FdTypes {
        FdTypes::Pidfd
    }

    fn make_in_task(&self, fd: i32) -> Result<Ends, TaskError> {
        if self.pid == -1 {
            return Ends::made(libc::c_long::from(dead_pidfd(self.flags)), fd);
        }
        // SAFETY: pidfd_open takes integers only; the new descriptor is close-on-exec.
        let r = unsafe { libc::syscall(libc::SYS_pidfd_open, self.pid, self.flags) };
        Ends::made(r as _, fd)
    }
}
