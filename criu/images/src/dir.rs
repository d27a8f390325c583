//! Typed access to the images of one image directory, by CRIU's file names.

use std::path::{Path, PathBuf};

use crate::error::ImageError;
use crate::image::{read_all, read_single, write_all};
use crate::magic;
use crate::names;
use crate::pagemap::Pagemap;
use crate::pb::{
    CoreEntry, FdinfoEntry, FileEntry, FsEntry, InventoryEntry, MemfdInodeEntry, MmEntry,
    PstreeEntry, SeccompEntry, TaskKobjIdsEntry, TimensEntry,
};

/// An image directory.
///
/// ```no_run
/// use criu_images::ImageDir;
/// let dir = ImageDir::new("/tmp/img");
/// for task in dir.read_pstree()? {
///     let core = dir.read_core(task.pid)?;
///     let mm = dir.read_mm(task.pid)?;
///     println!("{} {:?}: {} vmas", task.pid, core.tc.map(|t| t.comm), mm.vmas.len());
/// }
/// # Ok::<(), criu_images::ImageError>(())
/// ```
#[derive(Clone, Debug)]
pub struct ImageDir {
    path: PathBuf,
}

macro_rules! single {
    ($read:ident, $write:ident, $ty:ty, $magic:expr, $name:expr, $doc:literal) => {
        #[doc = concat!("Reads ", $doc, ".\n\n# Errors\nI/O and format errors.")]
        pub fn $read(&self) -> Result<$ty, ImageError> {
            read_single(self.path.join($name), $magic)
        }
        #[doc = concat!("Writes ", $doc, ".\n\n# Errors\nI/O errors.")]
        pub fn $write(&self, e: &$ty) -> Result<(), ImageError> {
            write_all(self.path.join($name), $magic, [e])
        }
    };
}

macro_rules! per_id {
    ($read:ident, $write:ident, $ty:ty, $magic:expr, $name:path, $doc:literal) => {
        #[doc = concat!("Reads ", $doc, ".\n\n# Errors\nI/O and format errors.")]
        pub fn $read(&self, id: u32) -> Result<$ty, ImageError> {
            read_single(self.path.join($name(id)), $magic)
        }
        #[doc = concat!("Writes ", $doc, ".\n\n# Errors\nI/O errors.")]
        pub fn $write(&self, id: u32, e: &$ty) -> Result<(), ImageError> {
            write_all(self.path.join($name(id)), $magic, [e])
        }
    };
}

macro_rules! list {
    ($read:ident, $write:ident, $ty:ty, $magic:expr, $name:expr, $doc:literal) => {
        #[doc = concat!("Reads all entries of ", $doc, ".\n\n# Errors\nI/O and format errors.")]
        pub fn $read(&self) -> Result<Vec<$ty>, ImageError> {
            read_all(self.path.join($name), $magic)
        }
        #[doc = concat!("Writes ", $doc, ".\n\n# Errors\nI/O errors.")]
        pub fn $write(&self, entries: &[$ty]) -> Result<(), ImageError> {
            write_all(self.path.join($name), $magic, entries)
        }
    };
}

impl ImageDir {
    /// An image directory at `path` (not checked).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `dir/name`.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    single!(
        read_inventory,
        write_inventory,
        InventoryEntry,
        magic::INVENTORY,
        names::INVENTORY,
        "`inventory.img`"
    );
    single!(
        read_seccomp,
        write_seccomp,
        SeccompEntry,
        magic::SECCOMP,
        names::SECCOMP,
        "`seccomp.img`"
    );
    list!(
        read_pstree,
        write_pstree,
        PstreeEntry,
        magic::PSTREE,
        names::PSTREE,
        "`pstree.img`"
    );
    list!(
        read_files,
        write_files,
        FileEntry,
        magic::FILES,
        names::FILES,
        "`files.img`"
    );
    list!(
        read_memfd,
        write_memfd,
        MemfdInodeEntry,
        magic::MEMFD_INODE,
        names::MEMFD,
        "`memfd.img`"
    );
    per_id!(
        read_core,
        write_core,
        CoreEntry,
        magic::CORE,
        names::core,
        "`core-PID.img`"
    );
    per_id!(
        read_mm,
        write_mm,
        MmEntry,
        magic::MM,
        names::mm,
        "`mm-PID.img`"
    );
    per_id!(
        read_ids,
        write_ids,
        TaskKobjIdsEntry,
        magic::IDS,
        names::ids,
        "`ids-PID.img`"
    );
    per_id!(
        read_fs,
        write_fs,
        FsEntry,
        magic::FS,
        names::fs,
        "`fs-PID.img`"
    );
    per_id!(
        read_timens,
        write_timens,
        TimensEntry,
        magic::TIMENS,
        names::timens,
        "`timens-ID.img`"
    );

    /// Reads `fdinfo-FILES_ID.img`.
    ///
    /// # Errors
    /// I/O and format errors.
    pub fn read_fdinfo(&self, files_id: u32) -> Result<Vec<FdinfoEntry>, ImageError> {
        read_all(self.path.join(names::fdinfo(files_id)), magic::FDINFO)
    }

    /// Writes `fdinfo-FILES_ID.img`.
    ///
    /// # Errors
    /// I/O errors.
    pub fn write_fdinfo(&self, files_id: u32, fds: &[FdinfoEntry]) -> Result<(), ImageError> {
        write_all(self.path.join(names::fdinfo(files_id)), magic::FDINFO, fds)
    }

    /// Reads `pagemap-PID.img`.
    ///
    /// # Errors
    /// I/O and format errors.
    pub fn read_pagemap(&self, pid: u32) -> Result<Pagemap, ImageError> {
        Pagemap::read(self.path.join(names::pagemap(pid)))
    }

    /// Writes `pagemap-PID.img`.
    ///
    /// # Errors
    /// I/O errors.
    pub fn write_pagemap(&self, pid: u32, pm: &Pagemap) -> Result<(), ImageError> {
        pm.write(self.path.join(names::pagemap(pid)))
    }

    /// Path of `pages-ID.img`.
    pub fn pages_path(&self, pages_id: u32) -> PathBuf {
        self.path.join(names::pages(pages_id))
    }
}

/// Index in `task_core_entry.sigactions` of signal `sig`: CRIU saves signals 1..=64 except
/// SIGKILL (9) and SIGSTOP (19), in order, so there are 62 slots.
pub fn sigaction_slot(sig: u32) -> Option<usize> {
    match sig {
        1..=8 => Some(sig as usize - 1),
        10..=18 => Some(sig as usize - 2),
        20..=64 => Some(sig as usize - 3),
        _ => None,
    }
}

/// Number of sigaction slots in a core image.
pub const SIGACTION_SLOTS: usize = 62;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigaction_slots_skip_kill_and_stop() {
        assert_eq!(sigaction_slot(1), Some(0));
        assert_eq!(sigaction_slot(9), None);
        assert_eq!(sigaction_slot(10), Some(8));
        assert_eq!(sigaction_slot(19), None);
        assert_eq!(sigaction_slot(64), Some(SIGACTION_SLOTS - 1));
        assert_eq!(sigaction_slot(65), None);
    }

    #[test]
    fn dir_write_then_read() {
        let t = tempfile::tempdir().unwrap();
        let d = ImageDir::new(t.path());
        let ps = vec![PstreeEntry {
            pid: 5,
            ppid: 0,
            pgid: 5,
            sid: 5,
            threads: vec![5, 6],
        }];
        d.write_pstree(&ps).unwrap();
        assert_eq!(d.read_pstree().unwrap(), ps);
        let fs = FsEntry {
            cwd_id: 1,
            root_id: 2,
            umask: Some(0o22),
        };
        d.write_fs(5, &fs).unwrap();
        assert_eq!(d.read_fs(5).unwrap(), fs);
        // The wrong image type is refused.
        std::fs::copy(d.file(&names::fs(5)), d.file(&names::mm(5))).unwrap();
        let e = d.read_mm(5).unwrap_err();
        assert!(matches!(e, ImageError::WrongMagic { .. }), "{e}");
    }
}
