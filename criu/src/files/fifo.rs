//! Named pipes (`FIFO` entries, each with a `REG` entry for its path and open flags; the
//! descriptors of one FIFO share its `pipe_id`) and the bytes waiting in them
//! (`fifo-data.img`), as CRIU writes them.
//!
//! Dump: a descriptor whose file is a FIFO with a path; the first time a FIFO is met its waiting
//! bytes are copied with `tee` (the task keeps them, see [`super::pipe`]); the `REG` entries
//! are added once all processes were collected. A FIFO removed while open is refused by name.
//! Restore: the engine opens each FIFO once read-write (which never blocks), writes its bytes
//! back and keeps that descriptor while the restore runs, so the bytes outlive the moment no
//! task holds it yet; each descriptor is then its own open of the FIFO through
//! `/proc/self/fd`, with its flags, and the tasks inherit it.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::{Arc, Mutex};

use criu_images::pb::{FdTypes, FifoEntry, FileEntry, RegFileEntry};
use criu_images::{ImageDir, magic, names};

use super::pipe::PipeData;
use super::{DumpFd, Ends, FileKind, ImageCtx, Parsed, RestoreFile, TaskError, fown_zero};
use crate::dump::error::DumpError;
use crate::restore::error::RestoreError;
use crate::restore::images::entry::{bad, cpath, img, kind_entry};

/// The most bytes one FIFO may hold on restore (the kernel's default maximum pipe size).
const MAX_FIFO_DATA: u32 = 1 << 20;

/// The FIFO kind: what a dump met, or the FIFOs of one restore.
#[derive(Debug, Default)]
pub struct Fifo {
    /// Dump: FIFOs met, by inode.
    seen: Vec<u64>,
    /// Dump: FIFOs holding data, by pipe id.
    data: Vec<(u32, PipeData)>,
    /// Dump: the `REG` entry each FIFO entry (by id) still needs.
    paths: Vec<(u32, RegFileEntry)>,
    /// Restore: `files.img`'s `REG` entries by id and `fifo-data.img`, read at the first FIFO.
    images: Option<(HashMap<u32, RegFileEntry>, HashMap<u32, PipeData>)>,
    /// Restore: each FIFO's engine-held read-write descriptor, by pipe id.
    held: HashMap<u32, Arc<Held>>,
}

impl FileKind for Fifo {
    fn fd_type(&self) -> FdTypes {
        FdTypes::Fifo
    }

    fn claims(&self, fd: &DumpFd<'_>) -> bool {
        fd.name.starts_with('/') && fd.meta.file_type().is_fifo()
    }

    fn dump(&mut self, fd: &DumpFd<'_>, id: u32) -> Result<FileEntry, DumpError> {
        if fd.name.ends_with(" (deleted)") {
            return Err(DumpError::FileState {
                kind: "fifo",
                what: format!(
                    "fd {} of {} is a fifo removed while open ({})",
                    fd.fd, fd.pid, fd.name
                ),
            });
        }
        let ino = fd.meta.ino();
        if !self.seen.contains(&ino) {
            self.seen.push(ino);
            let (bytes, size) = super::pipe::peek_pipe(fd.pid, fd.fd)?;
            if !bytes.is_empty() {
                self.data.push((ino as u32, PipeData { size, bytes }));
            }
        }
        tracing::debug!(pid = fd.pid, fd = fd.fd, path = fd.name, ino, "fifo");
        self.paths.push((
            id,
            RegFileEntry {
                id: 0,
                flags: fd.flags(),
                pos: 0,
                fown: fown_zero(),
                name: fd.name.to_string(),
                mode: Some(fd.meta.mode()),
                ..RegFileEntry::default()
            },
        ));
        Ok(FileEntry {
            id,
            r#type: FdTypes::Fifo as i32,
            fifo: Some(FifoEntry {
                id,
                pipe_id: ino as u32,
                regf_id: None,
            }),
            ..FileEntry::default()
        })
    }

    /// Adds the `REG` entry of each FIFO's path, with the next free ids.
    fn finish(
        &mut self,
        entries: &mut Vec<FileEntry>,
        _ext_unix_sk: Option<&[u32]>,
    ) -> Result<(), DumpError> {
        for (fifo_id, mut reg) in self.paths.drain(..) {
            let id = entries.iter().map(|e| e.id).max().unwrap_or(0) + 1;
            reg.id = id;
            if let Some(f) = entries
                .iter_mut()
                .find(|e| e.id == fifo_id)
                .and_then(|e| e.fifo.as_mut())
            {
                f.regf_id = Some(id);
            }
            entries.push(FileEntry {
                id,
                r#type: FdTypes::Reg as i32,
                reg: Some(reg),
                ..FileEntry::default()
            });
        }
        Ok(())
    }

    fn write(&self, dir: &Path) -> Result<(), DumpError> {
        super::pipe::write_data(dir, names::FIFO_DATA, magic::FIFO_DATA, &self.data)
    }

    fn parse(&mut self, ctx: &ImageCtx<'_>, e: &FileEntry, fd: i32) -> Parsed {
        let f = kind_entry(&e.fifo, fd, "fifo")?;
        if self.images.is_none() {
            let regs = ctx
                .dir
                .read_files()
                .map_err(|x| img(names::FILES, x))?
                .into_iter()
                .filter_map(|e| e.reg.map(|r| (e.id, r)))
                .collect();
            self.images = Some((regs, fifo_data(ctx.dir)?));
        }
        let Some((regs, data)) = self.images.as_ref() else {
            return Err(bad(names::FILES, "fifo images not read"));
        };
        let reg = f.regf_id.and_then(|r| regs.get(&r)).ok_or_else(|| {
            bad(
                names::FILES,
                format!("fifo {} (fd {fd}) has no path entry", f.id),
            )
        })?;
        let meta = std::fs::metadata(&reg.name).map_err(|source| RestoreError::MissingFile {
            path: reg.name.clone().into(),
            source,
        })?;
        if !meta.file_type().is_fifo() {
            return Err(RestoreError::FileState {
                kind: "fifo",
                what: format!("fifo {}: the path is no longer a fifo", reg.name),
            });
        }
        let path = cpath(&reg.name)?;
        let held = self
            .held
            .entry(f.pipe_id)
            .or_insert_with(|| {
                Arc::new(Held {
                    path: path.clone(),
                    data: data.get(&f.pipe_id).cloned().unwrap_or_default(),
                    fd: Mutex::new(None),
                })
            })
            .clone();
        Ok(Arc::new(FifoFile {
            held,
            flags: reg.flags as i32,
        }))
    }
}

/// Reads `fifo-data.img` (absent: no FIFO had data), by pipe id.
fn fifo_data(d: &ImageDir) -> Result<HashMap<u32, PipeData>, RestoreError> {
    super::pipe::read_data(d, names::FIFO_DATA, magic::FIFO_DATA, "fifo", MAX_FIFO_DATA)
}

/// One FIFO as the engine holds it while restoring: opened read-write once, its bytes written.
#[derive(Debug)]
pub struct Held {
    /// Its path.
    pub path: CString,
    /// The bytes it held.
    pub data: PipeData,
    fd: Mutex<Option<OwnedFd>>,
}

impl Held {
    /// The engine's read-write descriptor of the FIFO, opened (and refilled) the first time.
    fn get(&self) -> Result<i32, RestoreError> {
        let mut held = self.fd.lock().map_err(|_| RestoreError::Sys {
            what: "a fifo lock was poisoned",
            errno: nix::errno::Errno::EINVAL,
        })?;
        if let Some(fd) = held.as_ref() {
            return Ok(fd.as_raw_fd());
        }
        // SAFETY: open with a NUL-terminated path; read-write opens of a FIFO do not block.
        let fd = unsafe {
            libc::open(
                self.path.as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(RestoreError::MissingFile {
                path: String::from_utf8_lossy(self.path.to_bytes())
                    .into_owned()
                    .into(),
                source: std::io::Error::last_os_error(),
            });
        }
        let fd = super::owned(fd);
        super::pipe::refill(fd.as_raw_fd(), &self.data.bytes, self.data.size, 0).map_err(|f| {
            RestoreError::Sys {
                what: "refilling a fifo",
                errno: nix::errno::Errno::from_raw(f.errno),
            }
        })?;
        let raw = fd.as_raw_fd();
        *held = Some(fd);
        Ok(raw)
    }
}

/// One descriptor of a FIFO: its own open, with its flags.
#[derive(Debug)]
pub struct FifoFile {
    /// The FIFO.
    pub held: Arc<Held>,
    /// Open flags.
    pub flags: i32,
}

impl RestoreFile for FifoFile {
    fn fd_type(&self) -> FdTypes {
        FdTypes::Fifo
    }

    fn made_by_engine(&self) -> bool {
        true
    }

    fn make_in_task(&self, fd: i32) -> Result<Ends, TaskError> {
        super::engine_makes_it(fd)
    }

    fn make_in_engine(&self) -> Result<Vec<OwnedFd>, RestoreError> {
        let h = self.held.get()?;
        // Opening through the held read-write descriptor: a read-only or write-only open finds
        // the other side present and does not block.
        super::regular::reopen_in_engine(h, self.flags, 0).map(|f| vec![f])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CRIU 4.2's `fifo-data.img` reads as the bytes its FIFO held.
    #[test]
    fn criu_fixture_fifo_data_reads_back() {
        let dir = Path::new("/work/shared/fixtures/criu-4.2/files");
        if !dir.exists() {
            return;
        }
        let d = ImageDir::new(dir);
        let data = fifo_data(&d).unwrap();
        let p = data.get(&10207379).expect("the fixture's fifo");
        assert_eq!(p.bytes, b"fifo-data");
        assert_eq!(p.size, 65536);
        // Its FIFO entry names its path through a REG entry.
        let files = d.read_files().unwrap();
        let f = files.iter().find_map(|e| e.fifo.as_ref()).unwrap();
        let reg = files
            .iter()
            .find(|e| Some(e.id) == f.regf_id)
            .and_then(|e| e.reg.as_ref())
            .unwrap();
        assert_eq!(reg.name, "/tmp/fx/files.fifo");
    }
}
