//! signalfd (`SIGNALFD` entries): the signals it reads and its flags.
//!
//! Dump: `sigmask` from fdinfo. Restore: `signalfd4` with the mask in the task.
// Unsafe code: makes the signalfd with the raw signalfd4 system call inside the new task.
#![allow(unsafe_code)]

use std::sync::Arc;

use criu_images::pb::{FdTypes, FileEntry, SignalfdEntry};

use super::{DumpFd, Ends, FileKind, ImageCtx, Parsed, RestoreFile, TaskError, fown_zero};
use crate::dump::error::DumpError;
use crate::restore::images::entry::kind_entry;

/// The signalfd kind.
#[derive(Debug, Default)]
pub struct SignalFd;

impl FileKind for SignalFd {
    fn fd_type(&self) -> FdTypes {
        FdTypes::Signalfd
    }

    fn claims(&self, fd: &DumpFd<'_>) -> bool {
        fd.name == "anon_inode:[signalfd]"
    }

    fn dump(&mut self, fd: &DumpFd<'_>, id: u32) -> Result<FileEntry, DumpError> {
        let mask = fd.fdinfo_hex("[signalfd]", "sigmask")?;
        Ok(FileEntry {
            id,
            r#type: FdTypes::Signalfd as i32,
            sgfd: Some(SignalfdEntry {
                id,
                flags: fd.flags(),
                fown: fown_zero(),
                sigmask: mask,
            }),
            ..FileEntry::default()
        })
    }

    fn parse(&mut self, _img: &ImageCtx<'_>, e: &FileEntry, fd: i32) -> Parsed {
        let e = kind_entry(&e.sgfd, fd, "signalfd")?;
        Ok(Arc::new(SignalFdFile {
            mask: e.sigmask,
            flags: e.flags as i32 & libc::O_NONBLOCK,
        }))
    }
}

/// A signalfd to make again.
#[derive(Debug)]
pub struct SignalFdFile {
    /// Signals it reads.
    pub mask: u64,
    /// File status flags (`O_NONBLOCK`).
    pub flags: i32,
}

impl RestoreFile for SignalFdFile {
    fn fd_type(&self) -> FdTypes {
        FdTypes::Signalfd
    }

    fn make_in_task(&self, fd: i32) -> Result<Ends, TaskError> {
        // SAFETY: signalfd4 makes a new descriptor from a live local mask of the kernel's size.
        let t = unsafe {
            libc::syscall(
                libc::SYS_signalfd4,
                -1,
                &self.mask as *const u64,
                8usize,
                libc::SFD_CLOEXEC | self.flags,
            )
        };
        Ends::made(t as _, fd)
    }
}
