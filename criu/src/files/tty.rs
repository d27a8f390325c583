//! Terminals. A shell job (`--shell-job`) keeps its controlling terminal: the dump records it
//! as its path (a `REG` entry, by [`super::regular`]); CRIU's `TTY` entries are restored as
//! criu's own terminal (`/dev/tty`). Without `--shell-job` a terminal is refused, as is a pty
//! master (ptys are a kind of their own, not done yet).
#![allow(unsafe_code)]

use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::sync::Arc;

use criu_images::pb::{FdTypes, FileEntry};

use super::{DumpFd, Ends, FileKind, ImageCtx, RestoreFile, TaskError};
use crate::dump::DumpError;
use crate::restore::RestoreError;

/// The terminal kind.
#[derive(Debug, Default)]
pub struct Tty;

/// `(pty master, terminal)` for a character device.
fn terminal(fd: &DumpFd<'_>) -> (bool, bool) {
    if !fd.meta.file_type().is_char_device() {
        return (false, false);
    }
    let rdev = fd.meta.rdev();
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    // 4: virtual consoles and serial ttys, 5: /dev/tty, /dev/console, /dev/ptmx,
    // 136..=143: pty slaves (/dev/pts/N).
    let ptmx = major == 5 && minor == 2;
    let tty = major == 4 || major == 5 || (136..=143).contains(&major);
    (ptmx, tty)
}

impl FileKind for Tty {
    fn fd_type(&self) -> FdTypes {
        FdTypes::Tty
    }

    /// Takes the terminals it refuses: a pty master, or any terminal without `--shell-job`
    /// (a shell job's terminal is left to the regular kind, which records its path).
    fn claims(&self, fd: &DumpFd<'_>) -> bool {
        let (ptmx, tty) = terminal(fd);
        fd.name.starts_with('/') && (ptmx || (tty && !fd.shell_job))
    }

    fn dump(&mut self, fd: &DumpFd<'_>, _id: u32) -> Result<FileEntry, DumpError> {
        let (pid, n, name) = (fd.pid, fd.fd, fd.name);
        let what = if terminal(fd).0 {
            format!("fd {n} of {pid} is a pty master ({name})")
        } else {
            format!("fd {n} of {pid} is the terminal {name}: dump a shell job with --shell-job")
        };
        Err(DumpError::Unsupported { what })
    }

    fn parse(
        &mut self,
        img: &ImageCtx<'_>,
        e: &FileEntry,
        fd: i32,
    ) -> Result<Arc<dyn RestoreFile>, RestoreError> {
        if !img.shell_job {
            return Err(RestoreError::Unsupported {
                what: format!("terminal at fd {fd} without --shell-job"),
            });
        }
        let flags = e
            .tty
            .as_ref()
            .map(|t| t.flags as i32)
            .unwrap_or(libc::O_RDWR);
        Ok(Arc::new(TtyFile { flags }))
    }
}

/// The controlling terminal of a shell job: criu's own terminal, opened again.
#[derive(Debug)]
pub struct TtyFile {
    /// `open` flags.
    pub flags: i32,
}

impl RestoreFile for TtyFile {
    fn fd_type(&self) -> FdTypes {
        FdTypes::Tty
    }

    fn make_in_task(&self, fd: i32) -> Result<Ends, TaskError> {
        super::regular::open_seek(c"/dev/tty", self.flags, 0, fd).map(Ends::one)
    }

    fn make_in_engine(&self) -> Result<Vec<OwnedFd>, RestoreError> {
        super::regular::open_in_engine(c"/dev/tty", self.flags, 0).map(|f| vec![f])
    }
}
