//! pidfds (`PIDFD` entries): the process a pidfd refers to, by its pid (`nspid`), and the
//! pidfd's flags, as CRIU writes them.
//!
//! Dump: a descriptor whose link reads `anon_inode:[pidfd]` (or `pidfd:[INO]` with pidfs); the
//! target is the `Pid:` of its fdinfo. Only targets the restore brings back before the holder
//! makes its descriptors are taken: the holder itself or one of its descendants (restored with
//! their pids, before the holder's files). A pidfd of a process outside that subtree, of a
//! process that has exited, or of a thread (`PIDFD_THREAD`) is refused by name. Restore: the
//! task opens the pidfd again with `pidfd_open` and the saved flags.
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
        if target <= 0 {
            return Err(refuse("its process has exited".into()));
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
        Ok(FileEntry {
            id,
            r#type: FdTypes::Pidfd as i32,
            pidfd: Some(PidfdEntry {
                id,
                ino: fd.meta.ino() as u32,
                flags: fd.flags(),
                nspid: target,
                fown: fown_zero(),
            }),
            ..FileEntry::default()
        })
    }

    fn parse(&mut self, _img: &ImageCtx<'_>, e: &FileEntry, fd: i32) -> Parsed {
        let p = kind_entry(&e.pidfd, fd, "pidfd")?;
        if p.nspid <= 0 {
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
        // SAFETY: pidfd_open takes integers only; the new descriptor is close-on-exec.
        let r = unsafe { libc::syscall(libc::SYS_pidfd_open, self.pid, self.flags) };
        Ends::made(r as _, fd)
    }
}
