//! Named pipes (`FIFO` entries, each with a `REG` entry for its path and open flags; the
//! descriptors of one FIFO share its `pipe_id`) and the bytes waiting in them
//! (`fifo-data.img`), as CRIU writes them.
//!
//! Dump: a descriptor whose file is a FIFO with a path; the first time a FIFO is met its waiting
//! bytes are copied with `tee` (the task keeps them, see [`super::pipe`]); the `REG` entries
//! are added once all processes were collected. A FIFO removed while open is saved as a ghost
//! (`remap-fpath.img`, `ghost-file-N.img` with its mode, as CRIU saves a deleted file; its
//! bytes in `fifo-data.img` as for any FIFO).
//! Restore: the engine opens each FIFO once read-write (which never blocks), writes its bytes
//! back and keeps that descriptor while the restore runs, so the bytes outlive the moment no
//! task holds it yet; each descriptor is then its own open of the FIFO through
//! `/proc/self/fd`, with its flags, and the tasks inherit it. A removed FIFO is made again
//! beside its old path (`mknod`), linked at its old name while the engine opens it (when that
//! name is free) so its descriptors name it as before, and removed again: the restored
//! descriptors read `PATH (deleted)`. A path that is no longer a FIFO, or is gone, fails the
//! restore before any task runs, naming the path.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

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
    /// Dump: the `REG` entry each FIFO entry (by id) still needs, and for a FIFO removed
    /// while open the link that opens it and its `stat`.
    paths: Vec<(u32, RegFileEntry, Option<Removed>)>,
    /// Dump: the ghosts of removed FIFOs, by `REG` entry id ([`FileKind::take_ghosts`]).
    ghosts: Vec<(u32, PathBuf, std::fs::Metadata)>,
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
        let (name, removed) = match fd.name.strip_suffix(" (deleted)") {
            Some(n) => (n, Some((fd.source.to_path_buf(), fd.meta.clone()))),
            None => (fd.name, None),
        };
        let ino = fd.meta.ino();
        if !self.seen.contains(&ino) {
            self.seen.push(ino);
            let (bytes, size) = super::pipe::peek_pipe(fd.pid, fd.fd)?;
            if !bytes.is_empty() {
                self.data.push((ino as u32, PipeData { size, bytes }));
            }
        }
        tracing::debug!(
            pid = fd.pid,
            fd = fd.fd,
            path = name,
            ino,
            removed = removed.is_some(),
            "fifo"
        );
        self.paths.push((
            id,
            RegFileEntry {
                id: 0,
                flags: fd.flags(),
                pos: 0,
                fown: fown_zero(),
                name: name.to_string(),
                mode: Some(fd.meta.mode()),
                ..RegFileEntry::default()
            },
            removed,
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
        for (fifo_id, mut reg, removed) in self.paths.drain(..) {
            let id = entries.iter().map(|e| e.id).max().unwrap_or(0) + 1;
            reg.id = id;
            if let Some((source, meta)) = removed {
                self.ghosts.push((id, source, meta));
            }
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

    fn take_ghosts(&mut self) -> Vec<(u32, PathBuf, std::fs::Metadata)> {
        std::mem::take(&mut self.ghosts)
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
        let path = cpath(&reg.name)?;
        // Removed while open: made again (once, however many descriptors name it).
        let ghost = match ctx.remaps.get(&reg.id) {
            Some(rm) => Some(super::regular::ghost_file(ctx.dir, rm.remap_id, &reg.name)?),
            None => None,
        };
        let at = match &ghost {
            Some(g) => String::from_utf8_lossy(g.path.to_bytes()).into_owned(),
            None => reg.name.clone(),
        };
        let meta = std::fs::symlink_metadata(&at).map_err(|source| RestoreError::MissingFile {
            path: at.clone().into(),
            source,
        })?;
        if !meta.file_type().is_fifo() {
            return Err(RestoreError::FileState {
                kind: "fifo",
                what: format!("fifo {at}: the path is no longer a fifo"),
            });
        }
        let held = match self.held.get(&f.pipe_id) {
            Some(h) => Arc::clone(h),
            None => {
                // One per FIFO in the whole restore: another task may have opened it already
                // (the kinds are made per task).
                let mut all = HELD.lock().unwrap_or_else(|e| e.into_inner());
                all.retain(|(_, _, w)| w.strong_count() > 0);
                let dir = ctx.dir.path().to_path_buf();
                let found = all
                    .iter()
                    .find(|(d, id, _)| *d == dir && *id == f.pipe_id)
                    .and_then(|(_, _, w)| w.upgrade());
                let h = match found {
                    Some(h) => h,
                    None => {
                        let h = Arc::new(Held {
                            path: path.clone(),
                            ghost,
                            data: data.get(&f.pipe_id).cloned().unwrap_or_default(),
                            fd: Mutex::new(None),
                        });
                        all.push((dir, f.pipe_id, Arc::downgrade(&h)));
                        h
                    }
                };
                self.held.insert(f.pipe_id, Arc::clone(&h));
                h
            }
        };
        Ok(Arc::new(FifoFile {
            held,
            flags: reg.flags as i32,
        }))
    }
}

/// FIFOs the engine holds for a restore, by images directory and pipe id: one per FIFO
/// however many tasks open it (each task's kinds are its own), so its bytes are written once.
static HELD: Mutex<Vec<(PathBuf, u32, Weak<Held>)>> = Mutex::new(Vec::new());

/// Reads `fifo-data.img` (absent: no FIFO had data), by pipe id.
fn fifo_data(d: &ImageDir) -> Result<HashMap<u32, PipeData>, RestoreError> {
    super::pipe::read_data(d, names::FIFO_DATA, magic::FIFO_DATA, "fifo", MAX_FIFO_DATA)
}

/// A FIFO removed while open, as met by a dump: the link that opens it and its `stat`.
type Removed = (PathBuf, std::fs::Metadata);

/// One FIFO as the engine holds it while restoring: opened read-write once, its bytes written.
#[derive(Debug)]
pub struct Held {
    /// Its path.
    pub path: CString,
    /// A FIFO removed while open, made again beside its path.
    pub ghost: Option<Arc<super::regular::GhostFile>>,
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
        // A removed FIFO is opened at its old name when that is free (so the descriptors name
        // it as before), which is removed again at once.
        let mut at = self.path.as_c_str();
        let mut linked = false;
        if let Some(g) = &self.ghost {
            at = g.path.as_c_str();
            // SAFETY: linkat with two NUL-terminated paths; fails when the old name is taken.
            if unsafe {
                libc::linkat(
                    libc::AT_FDCWD,
                    g.path.as_ptr(),
                    libc::AT_FDCWD,
                    self.path.as_ptr(),
                    0,
                )
            } == 0
            {
                at = self.path.as_c_str();
                linked = true;
            }
        }
        // SAFETY: open with a NUL-terminated path; read-write opens of a FIFO do not block.
        let fd = unsafe {
            libc::open(
                at.as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if linked {
            // SAFETY: removes the name this function linked, by a NUL-terminated path.
            unsafe { libc::unlink(self.path.as_ptr()) };
        }
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
