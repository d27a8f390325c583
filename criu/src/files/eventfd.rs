//! eventfd (`EVENTFD` entries): its counter and flags.
//!
//! Dump: `eventfd-count` from fdinfo. Restore: made empty and non-blocking in the task, the
//! counter written in (it may not fit the initial value's 32 bits), then the saved flags.
// Unsafe code: makes the eventfd and writes its counter with raw system calls inside the new task.
#![allow(unsafe_code)]

use std::sync::Arc;

use criu_images::pb::{EventfdFileEntry, FdTypes, FileEntry};

use super::{
    DumpFd, Ends, FileKind, ImageCtx, Parsed, RestoreFile, TaskError, check, fown_zero, made_with,
};
use crate::dump::error::DumpError;
use crate::restore::images::entry::kind_entry;

/// The eventfd kind.
#[derive(Debug, Default)]
pub struct EventFd;

impl FileKind for EventFd {
    fn fd_type(&self) -> FdTypes {
        FdTypes::Eventfd
    }

    fn claims(&self, fd: &DumpFd<'_>) -> bool {
        fd.name == "anon_inode:[eventfd]"
    }

    fn dump(&mut self, fd: &DumpFd<'_>, id: u32) -> Result<FileEntry, DumpError> {
        let counter = fd.fdinfo_hex("[eventfd]", "eventfd-count")?;
        Ok(FileEntry {
            id,
            r#type: FdTypes::Eventfd as i32,
            efd: Some(EventfdFileEntry {
                id,
                flags: fd.flags(),
                fown: fown_zero(),
                counter,
            }),
            ..FileEntry::default()
        })
    }

    fn parse(&mut self, _img: &ImageCtx<'_>, e: &FileEntry, fd: i32) -> Parsed {
        let e = kind_entry(&e.efd, fd, "eventfd")?;
        Ok(Arc::new(EventFdFile {
            counter: e.counter,
            flags: e.flags as i32 & libc::O_NONBLOCK,
        }))
    }
}

/// An eventfd to make again.
#[derive(Debug)]
pub struct EventFdFile {
    /// The counter.
    pub counter: u64,
    /// File status flags (`O_NONBLOCK`).
    pub flags: i32,
}

impl RestoreFile for EventFdFile {
    fn fd_type(&self) -> FdTypes {
        FdTypes::Eventfd
    }

    fn make_in_task(&self, fd: i32) -> Result<Ends, TaskError> {
        let d = fd as u64;
        // SAFETY: eventfd takes integers only.
        let t = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        made_with(t as _, fd, |t| {
            // SAFETY: write/fcntl on the eventfd made here, from a live local counter.
            unsafe {
                if self.counter != 0 {
                    let n = libc::write(t, (&self.counter as *const u64).cast(), 8);
                    check(n as _, d)?;
                }
                check(libc::fcntl(t, libc::F_SETFL, self.flags) as _, d)?;
            }
            Ok(())
        })
    }
}
