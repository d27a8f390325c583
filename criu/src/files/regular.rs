//! Regular files, directories and character devices (`REG` entries), and files deleted while
//! open, saved with their content as ghost files (`ghost-file-N.img`, `remap-fpath.img`).
//!
//! Dump: the entry records the path, open flags, position, mode and size (and, for the
//! executable and mapped files, the ELF build-id); a file deleted while open (link count 0) is
//! a ghost: its content is written, and the restore recreates it beside its old path, opens it
//! and removes it again. Restore: the task (or the engine, for a file several tasks hold)
//! opens the path and seeks. This kind is also the dump's fallback: a descriptor no other kind
//! claims is refused here by name.
// Unsafe code: opens, seeks and unlinks files with raw system calls inside the new task (no
// allocation, no std).
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use criu_images::pb::{
    self, FdTypes, FileEntry, GhostChunkEntry, GhostFileEntry, RegFileEntry, RemapFilePathEntry,
    RemapType, Timeval,
};
use criu_images::{ImageReader, ImageWriter, magic, names};

use super::{DumpFd, Ends, FileKind, ImageCtx, Parsed, RestoreFile, TaskError, check, fown_zero};
use crate::dump::error::DumpError;
use crate::restore::error::RestoreError;
use crate::restore::images::entry::{bad, cpath, img, kind_entry};

/// Ghost contents are copied in pieces of this size.
const GHOST_PIECE: usize = 1 << 20;

/// CRIU writes ghost files of at least this size in chunks.
const GHOST_CHUNKS_THRESH: u64 = 3 * 4096;

/// A ghost file to write: a file deleted while open, saved with its content.
#[derive(Debug)]
struct Ghost {
    id: u32,
    orig_id: u32,
    /// Where criu can read it (`/proc/PID/fd/N` or `/proc/PID/map_files/...`).
    source: PathBuf,
    meta: std::fs::Metadata,
}

/// Strips the ` (deleted)` suffix the kernel appends to unlinked files' paths.
fn split_deleted(name: &str) -> (&str, bool) {
    match name.strip_suffix(" (deleted)") {
        Some(n) => (n, true),
        None => (name, false),
    }
}

/// How a file was opened, for its entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Opened {
    /// Open flags (without `O_CLOEXEC`).
    pub flags: u32,
    /// File position.
    pub pos: u64,
    /// The executable or a mapped file, which carries its ELF build-id.
    pub mapped: bool,
}

/// The regular files of one dump: the ghosts to write.
#[derive(Debug, Default)]
pub struct Regular {
    ghosts: Vec<Ghost>,
    ghost_by_inode: HashMap<(u64, u64), u32>,
    remaps: Vec<RemapFilePathEntry>,
    ghost_limit: u64,
}

impl Regular {
    /// For a dump that refuses deleted files larger than `ghost_limit` bytes, as CRIU does.
    pub fn new(ghost_limit: u64) -> Regular {
        Regular {
            ghost_limit,
            ..Regular::default()
        }
    }

    /// The entry (file id `id`) of a file reached through `source` (a `/proc` link that opens
    /// it, stat'ed as `meta`) whose name the kernel reports as `name`, opened as `how` says. A
    /// file deleted while open (link count 0) becomes a ghost.
    ///
    /// # Errors
    /// [`DumpError::DeletedSpecial`], [`DumpError::GhostLimit`].
    pub fn entry(
        &mut self,
        source: &Path,
        meta: std::fs::Metadata,
        name: &str,
        how: Opened,
        id: u32,
    ) -> Result<FileEntry, DumpError> {
        let Opened { flags, pos, mapped } = how;
        let (path, deleted) = split_deleted(name);
        // A `/proc/PID` directory (or a file in it) of a process that has exited: nothing can
        // be opened there again, and a directory of that name cannot be made in /proc.
        if deleted && of_a_process(path) && on_procfs(&meta) {
            return Err(DumpError::FileState {
                kind: "regular",
                what: format!(
                    "{} is {path} of a process that has exited",
                    source.display()
                ),
            });
        }
        let ft = meta.file_type();
        let size = (ft.is_file()).then_some(meta.size());
        let mut reg = RegFileEntry {
            id,
            flags,
            pos,
            fown: fown_zero(),
            name: path.to_string(),
            mnt_id: None,
            size,
            ext: None,
            mode: Some(meta.mode()),
            build_id: Vec::new(),
            checksum: None,
            checksum_config: None,
            checksum_parameter: None,
        };
        // Mapped files and the executable carry their ELF build-id, as CRIU saves it (the
        // restore side checks it instead of only the size).
        if mapped
            && ft.is_file()
            && let Some(bid) = elf_build_id(source)
        {
            reg.build_id = bid;
        }
        // A file deleted while open is saved with its contents: no link left (nlink 0), or its
        // name unlinked while another hard link remains (its old name is gone).
        let name_gone = || {
            std::fs::symlink_metadata(path)
                .map_or(true, |m| (m.dev(), m.ino()) != (meta.dev(), meta.ino()))
        };
        if deleted && (meta.nlink() == 0 || name_gone()) {
            self.add_ghost(id, source, meta)?;
        }
        Ok(FileEntry {
            r#type: FdTypes::Reg as i32,
            id,
            reg: Some(reg),
            ..FileEntry::default()
        })
    }

    /// Saves the file behind `source` (stat'ed as `meta`), deleted while open, as a ghost
    /// for the `REG` entry `orig_id`: one ghost per inode, however many entries name it.
    ///
    /// # Errors
    /// [`DumpError::DeletedSpecial`] for a kind of node that cannot be made again,
    /// [`DumpError::GhostLimit`].
    pub(crate) fn add_ghost(
        &mut self,
        orig_id: u32,
        source: &Path,
        meta: std::fs::Metadata,
    ) -> Result<(), DumpError> {
        let ft = meta.file_type();
        if !(ft.is_file()
            || ft.is_dir()
            || ft.is_char_device()
            || ft.is_block_device()
            || ft.is_fifo())
        {
            return Err(DumpError::DeletedSpecial {
                path: source.to_path_buf(),
            });
        }
        // Only a regular file has content to save: a directory or device node is made again.
        if ft.is_file() && meta.blocks() * 512 > self.ghost_limit {
            return Err(DumpError::GhostLimit {
                path: source.to_path_buf(),
                size: meta.blocks() * 512,
                limit: self.ghost_limit,
            });
        }
        let key = (meta.dev(), meta.ino());
        let id = match self.ghost_by_inode.get(&key) {
            Some(&id) => id,
            None => {
                let id = self.ghosts.len() as u32 + 1;
                self.ghost_by_inode.insert(key, id);
                self.ghosts.push(Ghost {
                    id,
                    orig_id,
                    source: source.to_path_buf(),
                    meta,
                });
                id
            }
        };
        self.remaps.push(RemapFilePathEntry {
            orig_id,
            remap_id: id,
            remap_type: Some(RemapType::Ghost as i32),
        });
        Ok(())
    }

    fn write_ghost(&self, dir: &Path, g: &Ghost) -> Result<(), DumpError> {
        let m = &g.meta;
        let chunks = m.file_type().is_file() && m.size() >= GHOST_CHUNKS_THRESH;
        let gfe = GhostFileEntry {
            uid: m.uid(),
            gid: m.gid(),
            mode: m.mode(),
            dev: Some(m.dev() as u32),
            ino: Some(m.ino()),
            rdev: (m.file_type().is_char_device() || m.file_type().is_block_device())
                .then_some(m.rdev() as u32),
            atim: Some(Timeval {
                tv_sec: m.atime() as u64,
                tv_usec: (m.atime_nsec() / 1000) as u64,
            }),
            mtim: Some(Timeval {
                tv_sec: m.mtime() as u64,
                tv_usec: (m.mtime_nsec() / 1000) as u64,
            }),
            chunks: chunks.then_some(true),
            size: chunks.then_some(m.size()),
            symlnk_target: None,
        };
        let mut w = ImageWriter::create_in(dir, &names::ghost_file(g.id), magic::GHOST_FILE)?;
        w.write_entry(&gfe)?;
        if m.file_type().is_file() {
            let ferr = |e| DumpError::File {
                what: format!("read ghost file (id {}) {}", g.orig_id, g.source.display()),
                source: e,
            };
            let mut f = File::open(&g.source).map_err(ferr)?;
            if chunks {
                // Data regions only (holes stay holes), each as a chunk header then its bytes.
                // Streamed in pieces: a region may be larger than memory.
                let mut buf = vec![0u8; GHOST_PIECE];
                for (off, len) in data_regions(&mut f, m.size()).map_err(ferr)? {
                    w.write_entry(&GhostChunkEntry { len, off })?;
                    f.seek(SeekFrom::Start(off)).map_err(ferr)?;
                    let mut left = len;
                    while left > 0 {
                        let n = left.min(GHOST_PIECE as u64) as usize;
                        f.read_exact(&mut buf[..n]).map_err(ferr)?;
                        w.write_extra(&buf[..n])?;
                        left -= n as u64;
                    }
                }
            } else {
                let mut buf = Vec::with_capacity(m.size() as usize);
                f.read_to_end(&mut buf).map_err(ferr)?;
                w.write_extra(&buf)?;
            }
        }
        w.finish()?;
        Ok(())
    }
}

impl FileKind for Regular {
    fn fd_type(&self) -> FdTypes {
        FdTypes::Reg
    }

    fn claims(&self, fd: &DumpFd<'_>) -> bool {
        let ft = fd.meta.file_type();
        // `/memfd:NAME (deleted)` is not a deleted file of that name but a memfd, a kind of
        // its own.
        // An O_PATH descriptor names its node without opening it: a symlink (O_NOFOLLOW) or a
        // socket's node comes back by the same path and flags (CRIU refuses the socket).
        let o_path = fd.info.flags & libc::O_PATH as u32 != 0;
        fd.name.starts_with('/')
            && !fd.name.starts_with("/memfd:")
            && (ft.is_file()
                || ft.is_dir()
                || ft.is_char_device()
                || (o_path && (ft.is_symlink() || ft.is_socket())))
    }

    fn dump(&mut self, fd: &DumpFd<'_>, id: u32) -> Result<FileEntry, DumpError> {
        let how = Opened {
            flags: fd.flags(),
            pos: fd.info.pos,
            mapped: false,
        };
        self.entry(fd.source, fd.meta.clone(), fd.name, how, id)
    }

    fn write(&self, dir: &Path) -> Result<(), DumpError> {
        if !self.remaps.is_empty() {
            criu_images::write_all(
                dir.join(names::REMAP_FPATH),
                magic::REMAP_FPATH,
                &self.remaps,
            )?;
        }
        for g in &self.ghosts {
            self.write_ghost(dir, g)?;
        }
        Ok(())
    }

    fn parse(&mut self, img: &ImageCtx<'_>, e: &FileEntry, fd: i32) -> Parsed {
        let r = kind_entry(&e.reg, fd, "regular file")?;
        let flags = r.flags as i32;
        // A name with '..' or a NUL is refused before anything is looked up or made.
        let path = cpath(&r.name)?;
        if let Some(rm) = img.remaps.get(&r.id) {
            return Ok(Arc::new(RegularFile::Deleted {
                ghost: ghost_file(img.dir, rm.remap_id, &r.name)?,
                flags,
                pos: r.pos,
            }));
        }
        // A file of a process (`/proc/PID/...`, also what `/proc/self/...` was) exists only once
        // the restored process does: the task opening it reports a missing one.
        if !of_a_process(&r.name) && std::fs::symlink_metadata(&r.name).is_err() {
            return Err(RestoreError::MissingFile {
                path: r.name.clone().into(),
                source: std::io::Error::from_raw_os_error(libc::ENOENT),
            });
        }
        Ok(Arc::new(RegularFile::Path {
            path,
            flags,
            pos: r.pos,
        }))
    }
}

/// Whether `meta` is of a file on procfs (the device of criu's `/proc`).
fn on_procfs(meta: &std::fs::Metadata) -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|p| p.dev() == meta.dev())
}

/// Whether `path` is under `/proc/PID/`.
fn of_a_process(path: &str) -> bool {
    path.strip_prefix("/proc/")
        .and_then(|p| p.split('/').next())
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The refusal of a descriptor no kind takes, naming what it is.
pub fn refuse(fd: &DumpFd<'_>) -> DumpError {
    DumpError::FdKind {
        pid: fd.pid,
        fd: fd.fd,
        name: fd.name.to_string(),
    }
}

/// A regular file, directory or device to open again.
#[derive(Debug)]
pub enum RegularFile {
    /// Open a path and seek.
    Path {
        /// The path.
        path: CString,
        /// `open` flags (access mode, `O_APPEND`, `O_NONBLOCK`, ...).
        flags: i32,
        /// The offset to seek to.
        pos: u64,
    },
    /// A file deleted while open: open the file the engine recreated for it (once for every
    /// open file of it, [`ghost_file`]).
    Deleted {
        /// The recreated file.
        ghost: Arc<GhostFile>,
        /// `open` flags.
        flags: i32,
        /// The offset to seek to.
        pos: u64,
    },
}

/// The flags to open a file again with, from the flags it was opened with: never creating or
/// truncating, and a file made with `O_TMPFILE` is opened as the plain file it is now.
pub fn reopen_flags(flags: i32) -> i32 {
    let mut f = flags & !(libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL | libc::O_CLOEXEC);
    if f & libc::O_TMPFILE == libc::O_TMPFILE {
        f &= !libc::O_TMPFILE;
    }
    f
}

/// Opens `path` with `flags` (close-on-exec, never creating) and seeks to `pos`; `fd` is the
/// target descriptor, for the report.
pub fn open_seek(path: &CStr, flags: i32, pos: u64, fd: i32) -> Result<i32, TaskError> {
    let flags = reopen_flags(flags);
    // SAFETY: open with a NUL-terminated path we own.
    let t = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) };
    let t = check(t as _, fd as u64)? as i32;
    if pos != 0 {
        // SAFETY: lseek on the descriptor just opened, which we own.
        let r = unsafe { libc::lseek(t, pos as libc::off_t, libc::SEEK_SET) };
        if let Err(e) = check(r as _, fd as u64) {
            // SAFETY: closing the descriptor we just opened.
            unsafe { libc::close(t) };
            return Err(e);
        }
    }
    Ok(t)
}

impl RestoreFile for RegularFile {
    fn fd_type(&self) -> FdTypes {
        FdTypes::Reg
    }

    /// A file under `/proc/PID` names a process of the tree (pids come back as they were, so
    /// the path names the same task): it is opened once the tree exists.
    fn needs_tree(&self) -> bool {
        matches!(self, RegularFile::Path { path, .. } if of_a_process(&path.to_string_lossy()))
    }

    fn make_in_task(&self, fd: i32) -> Result<Ends, TaskError> {
        match self {
            RegularFile::Path { path, flags, pos } => {
                open_seek(path, *flags, *pos, fd).map(Ends::one)
            }
            RegularFile::Deleted { ghost, flags, pos } => {
                open_seek(&ghost.path, *flags, *pos, fd).map(Ends::one)
            }
        }
    }

    fn make_in_engine(&self) -> Result<Vec<OwnedFd>, RestoreError> {
        let (path, flags, pos) = match self {
            RegularFile::Path { path, flags, pos } => (path, *flags, *pos),
            RegularFile::Deleted { ghost, flags, pos } => (&ghost.path, *flags, *pos),
        };
        open_in_engine(path, flags, pos).map(|f| vec![f])
    }
}

/// Opens `path` in the engine, for tasks to inherit.
pub fn open_in_engine(path: &CStr, flags: i32, pos: u64) -> Result<OwnedFd, RestoreError> {
    let flags = reopen_flags(flags);
    // SAFETY: open with a NUL-terminated path.
    let fd = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(RestoreError::MissingFile {
            path: String::from_utf8_lossy(path.to_bytes()).into_owned().into(),
            source: std::io::Error::last_os_error(),
        });
    }
    let fd = crate::files::owned(fd);
    if pos != 0 {
        // SAFETY: lseek on a descriptor we own.
        if unsafe { libc::lseek(fd.as_raw_fd(), pos as libc::off_t, libc::SEEK_SET) } < 0 {
            return Err(super::sys("seeking a shared file"));
        }
    }
    Ok(fd)
}

/// Opens the file behind descriptor `held` of the engine again, through `/proc/self/fd` (a new
/// open file description, as [`open_in_engine`] with `flags` and `pos`).
///
/// # Errors
/// As [`open_in_engine`].
pub fn reopen_in_engine(held: i32, flags: i32, pos: u64) -> Result<OwnedFd, RestoreError> {
    let path = crate::restore::images::entry::cpath(&format!("/proc/self/fd/{held}"))?;
    open_in_engine(&path, flags, pos)
}

/// A file deleted while open, made again by the engine once for the whole restore (every open
/// file of it, in every task, opens this one), beside its old path; removed again when the
/// last plan using it is dropped, after the tasks opened it.
#[derive(Debug)]
pub struct GhostFile {
    /// Where it was made.
    pub path: CString,
    dir: bool,
}

impl Drop for GhostFile {
    fn drop(&mut self) {
        // SAFETY: removes the file or directory this restore made, by a path we own.
        unsafe {
            if self.dir {
                libc::rmdir(self.path.as_ptr());
            } else {
                libc::unlink(self.path.as_ptr());
            }
        }
    }
}

/// Ghosts made so far, by their image: one file per deleted inode, however many open it.
static GHOSTS: std::sync::Mutex<Vec<(PathBuf, std::sync::Weak<GhostFile>)>> =
    std::sync::Mutex::new(Vec::new());

/// The file made again for ghost `id` of `d` (made the first time it is asked for), a deleted
/// file once named `name`: a regular file with its content (holes kept), a directory or a
/// device node, with the owner, mode and times the dump saved.
///
/// # Errors
/// [`RestoreError::Image`]/[`RestoreError::BadImage`] for its image, [`RestoreError::Sys`]
/// for making it.
pub fn ghost_file(
    d: &criu_images::ImageDir,
    id: u32,
    name: &str,
) -> Result<Arc<GhostFile>, RestoreError> {
    let key = d.file(&names::ghost_file(id));
    let mut all = GHOSTS.lock().unwrap_or_else(|e| e.into_inner());
    all.retain(|(_, w)| w.strong_count() > 0);
    if let Some(g) = all
        .iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, w)| w.upgrade())
    {
        return Ok(g);
    }
    let name = name.trim_end_matches(" (deleted)");
    let path = format!("{name}.criu-ghost.{id}");
    let g = make_ghost(d, id, &path)?;
    all.push((key, Arc::downgrade(&g)));
    Ok(g)
}

/// The largest deleted file a restore makes again (sparse chunks included): far above any
/// `--ghost-limit` a dump is given in practice, far below what a crafted size could ask of the
/// filesystem.
const MAX_GHOST_SIZE: u64 = 1 << 40;

fn make_ghost(
    d: &criu_images::ImageDir,
    id: u32,
    path: &str,
) -> Result<Arc<GhostFile>, RestoreError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let name = names::ghost_file(id);
    let sys = |what: &'static str| {
        move |e: std::io::Error| RestoreError::Sys {
            what,
            errno: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        }
    };
    let mut r =
        ImageReader::open_expect(d.file(&name), magic::GHOST_FILE).map_err(|e| img(&name, e))?;
    let g: GhostFileEntry = r.read_one().map_err(|e| img(&name, e))?;
    let perm = g.mode & 0o7777;
    if let Some(size) = g.size.filter(|s| *s > MAX_GHOST_SIZE) {
        return Err(bad(
            &name,
            format!("a deleted file of {size} bytes (max {MAX_GHOST_SIZE})"),
        ));
    }
    let cpath = cpath(path)?;
    let fmt = g.mode & libc::S_IFMT;
    let ghost = Arc::new(GhostFile {
        path: cpath.clone(),
        dir: fmt == libc::S_IFDIR,
    });
    // From here on, a failure removes what was made (dropping `ghost`).
    let mut file = None;
    match fmt {
        libc::S_IFDIR => std::fs::DirBuilder::new()
            .mode(perm)
            .create(path)
            .map_err(sys("making a deleted directory again"))?,
        libc::S_IFCHR | libc::S_IFBLK => {
            let dev = g
                .rdev
                .ok_or_else(|| bad(&name, "device node without its device"))?;
            // SAFETY: mknod with a NUL-terminated path we own.
            if unsafe { libc::mknod(cpath.as_ptr(), fmt | perm, libc::dev_t::from(dev)) } != 0 {
                return Err(crate::files::sys("making a deleted device node again"));
            }
        }
        libc::S_IFIFO => {
            // SAFETY: mknod with a NUL-terminated path we own.
            if unsafe { libc::mknod(cpath.as_ptr(), fmt | perm, 0) } != 0 {
                return Err(crate::files::sys("making a deleted fifo again"));
            }
        }
        libc::S_IFREG => {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(perm)
                .open(path)
                .map_err(sys("making a deleted file again"))?;
            let wr = sys("writing a deleted file again");
            if g.chunks.unwrap_or(false) {
                let mut written = 0u64;
                while let Some(c) = r
                    .read_entry::<pb::GhostChunkEntry>()
                    .map_err(|e| img(&name, e))?
                {
                    // Chunks in order, disjoint, inside the file's size (or the limit).
                    let end = c
                        .off
                        .checked_add(c.len)
                        .filter(|e| *e <= g.size.unwrap_or(MAX_GHOST_SIZE) && c.off >= written);
                    let Some(end) = end else {
                        return Err(bad(
                            &name,
                            format!(
                                "chunk of {} bytes at {} (the file has {:?} bytes, {written} written)",
                                c.len, c.off, g.size
                            ),
                        ));
                    };
                    written = end;
                    let mut at = c.off;
                    let mut left = c.len;
                    while left > 0 {
                        let n = left.min(GHOST_PIECE as u64);
                        let data = r.read_extra(n).map_err(|e| img(&name, e))?;
                        f.write_all_at(&data, at).map_err(wr)?;
                        at = at.saturating_add(n);
                        left -= n;
                    }
                }
                if let Some(size) = g.size {
                    f.set_len(size).map_err(wr)?;
                }
            } else {
                let data = r.read_rest().map_err(|e| img(&name, e))?;
                f.write_all_at(&data, 0).map_err(wr)?;
            }
            file = Some(f);
        }
        other => return Err(bad(&name, format!("file type {other:o}"))),
    }
    // Owner first (it clears set-id bits), then the mode, then the times, all through a
    // descriptor of what was just made: a symlink put in its place meanwhile is never
    // followed (O_NOFOLLOW, and the type must be the one made).
    let made = match &file {
        Some(f) => f.try_clone().map(OwnedFd::from),
        None => std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
            .open(path)
            .map(OwnedFd::from),
    }
    .map_err(sys("opening a deleted file made again"))?;
    let st = nix::sys::stat::fstat(&made).map_err(|e| RestoreError::Sys {
        what: "opening a deleted file made again",
        errno: e,
    })?;
    if st.st_mode & libc::S_IFMT != fmt {
        return Err(bad(&name, format!("{path} was replaced while it was made")));
    }
    // SAFETY: fchownat on a descriptor we own with an empty NUL-terminated path.
    if unsafe {
        libc::fchownat(
            made.as_raw_fd(),
            c"".as_ptr(),
            g.uid,
            g.gid,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    } != 0
    {
        return Err(crate::files::sys("giving a deleted file its owner"));
    }
    // The descriptor's /proc link reaches exactly the inode made (O_PATH has no fchmod).
    let by_fd = CString::new(format!("/proc/self/fd/{}", made.as_raw_fd()))
        .map_err(|_| bad(&name, "descriptor path"))?;
    // SAFETY: chmod with a NUL-terminated path we own.
    if unsafe { libc::chmod(by_fd.as_ptr(), perm) } != 0 {
        return Err(crate::files::sys("giving a deleted file its mode"));
    }
    let ts = |t: &Option<pb::Timeval>| match t {
        Some(t) => libc::timespec {
            tv_sec: t.tv_sec as libc::time_t,
            tv_nsec: (t.tv_usec.min(999_999) * 1000) as libc::c_long,
        },
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
    };
    let times = [ts(&g.atim), ts(&g.mtim)];
    // SAFETY: utimensat with a NUL-terminated path and a live array of two timespecs.
    if unsafe { libc::utimensat(libc::AT_FDCWD, by_fd.as_ptr(), times.as_ptr(), 0) } != 0 {
        return Err(crate::files::sys("giving a deleted file its times"));
    }
    drop(made);
    drop(file);
    Ok(ghost)
}

/// The GNU build-id of an ELF file (its `NT_GNU_BUILD_ID` note) as CRIU saves it: the id's
/// bytes as little-endian 32-bit words. `None` for anything else or anything malformed.
pub fn elf_build_id(path: &Path) -> Option<Vec<u32>> {
    let f = File::open(path).ok()?;
    let mut hdr = [0u8; 64];
    f.read_exact_at(&mut hdr, 0).ok()?;
    if &hdr[..4] != b"\x7fELF" || hdr[4] != 2 || hdr[5] != 1 {
        return None; // not ELF64 little-endian
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as u64;
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or([0; 4]));
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
    let (phoff, phentsize, phnum) = (u64_at(&hdr, 0x20), u16_at(&hdr, 0x36), u16_at(&hdr, 0x38));
    if phentsize < 56 || phnum > 256 {
        return None;
    }
    let mut phdrs = vec![0u8; (phentsize * phnum) as usize];
    f.read_exact_at(&mut phdrs, phoff).ok()?;
    for ph in phdrs.chunks_exact(phentsize as usize) {
        const PT_NOTE: u32 = 4;
        if u32_at(ph, 0) != PT_NOTE {
            continue;
        }
        let (off, size) = (u64_at(ph, 0x08), u64_at(ph, 0x20));
        if size > 64 << 10 {
            continue;
        }
        let mut notes = vec![0u8; size as usize];
        f.read_exact_at(&mut notes, off).ok()?;
        let mut at = 0usize;
        while at + 12 <= notes.len() {
            let namesz = u32_at(&notes, at) as usize;
            let descsz = u32_at(&notes, at + 4) as usize;
            let ty = u32_at(&notes, at + 8);
            let name_at = at + 12;
            let desc_at = name_at + namesz.div_ceil(4) * 4;
            let end = desc_at + descsz.div_ceil(4) * 4;
            if end > notes.len() || desc_at + descsz > notes.len() {
                break;
            }
            const NT_GNU_BUILD_ID: u32 = 3;
            if ty == NT_GNU_BUILD_ID && notes.get(name_at..name_at + namesz) == Some(b"GNU\0") {
                let id = &notes[desc_at..desc_at + descsz];
                return Some(
                    id.chunks(4)
                        .map(|c| {
                            let mut w = [0u8; 4];
                            w[..c.len()].copy_from_slice(c);
                            u32::from_le_bytes(w)
                        })
                        .collect(),
                );
            }
            at = end;
        }
    }
    None
}

/// The data regions of a file (SEEK_DATA/SEEK_HOLE), or the whole file if the file system
/// cannot tell.
fn data_regions(f: &mut File, size: u64) -> std::io::Result<Vec<(u64, u64)>> {
    use std::os::fd::AsRawFd;
    let fd = f.as_raw_fd();
    let mut out = Vec::new();
    let mut off: i64 = 0;
    while (off as u64) < size {
        // SAFETY: lseek on a descriptor we own; it only moves the file offset.
        let data = unsafe { libc::lseek(fd, off, libc::SEEK_DATA) };
        if data < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break;
            }
            return Ok(vec![(0, size)]);
        }
        // SAFETY: lseek on a descriptor we own; it only moves the file offset.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        let hole = if hole < 0 { size as i64 } else { hole };
        out.push((data as u64, (hole - data) as u64));
        off = hole;
    }
    Ok(out)
}
