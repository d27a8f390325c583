//! inotify instances (`INOTIFY` entries) with their watches: each watch's inode (number,
//! device, file handle and the path the handle resolves to), mask and watch descriptor, as CRIU
//! writes them. Pending events are dropped, as CRIU does.
//!
//! Dump: the `inotify` lines of the descriptor's fdinfo; each watch's file handle is resolved
//! (`open_by_handle_at` on a mount of its device) to the path recorded beside it. When the
//! handle does not open (a file system whose handles cannot be opened again, such as ramfs,
//! sysfs or procfs) the mounts of its device are scanned for the inode's number, as CRIU does
//! with its irmap ([`find_path`]); `-v3` says which way each path was found. A watch on a file
//! removed since (still held open somewhere) is refused by name. Restore: the engine makes the instance
//! with its flags and adds each watch on its path (checking the inode is still the one watched),
//! adding and removing watches until the kernel hands out the saved watch descriptor.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use criu_images::pb::{FdTypes, FhEntry, FileEntry, InotifyFileEntry, InotifyWdEntry};

use super::{DumpFd, Ends, FileKind, ImageCtx, Parsed, RestoreFile, TaskError, fown_zero};
use crate::dump::error::DumpError;
use crate::restore::error::RestoreError;
use crate::restore::images::entry::{bad, cpath, kind_entry};

/// The longest file handle CRIU keeps (16 words).
const MAX_HANDLE: usize = 128;

/// The most watch descriptors tried while looking for a saved one.
const MAX_WD_TRIES: u32 = 1 << 16;

/// The inotify kind.
#[derive(Debug, Default)]
pub struct Inotify;

impl FileKind for Inotify {
    fn fd_type(&self) -> FdTypes {
        FdTypes::Inotify
    }

    fn claims(&self, fd: &DumpFd<'_>) -> bool {
        fd.name == "anon_inode:inotify"
    }

    fn dump(&mut self, fd: &DumpFd<'_>, id: u32) -> Result<FileEntry, DumpError> {
        let text = fd.fdinfo_text()?;
        let mut wds = Vec::new();
        for line in text.text.lines() {
            let Some(rest) = line.strip_prefix("inotify ") else {
                continue;
            };
            let w = parse_watch(rest, id).ok_or_else(|| text.bad("inotify", "a watch"))?;
            let (path, how) =
                find_path(&w.f_handle, w.s_dev, w.i_ino).map_err(|why| DumpError::FileState {
                    kind: "inotify",
                    what: format!(
                        "fd {} of {} (inotify): watch {} on inode {} of device {:#x}: {why}",
                        fd.fd, fd.pid, w.wd, w.i_ino, w.s_dev
                    ),
                })?;
            tracing::info!(pid = fd.pid, fd = fd.fd, wd = w.wd, mask = w.mask, path = %path, "inotify watch (path found by {how})");
            let mut w = w;
            w.f_handle.path = Some(path);
            wds.push(w);
        }
        tracing::debug!(pid = fd.pid, fd = fd.fd, watches = wds.len(), "inotify");
        Ok(FileEntry {
            id,
            r#type: FdTypes::Inotify as i32,
            ify: Some(InotifyFileEntry {
                id,
                flags: fd.flags(),
                fown: fown_zero(),
                wd: wds,
            }),
            ..FileEntry::default()
        })
    }

    fn parse(&mut self, _img: &ImageCtx<'_>, e: &FileEntry, fd: i32) -> Parsed {
        let f = kind_entry(&e.ify, fd, "inotify")?;
        let mut watches = Vec::new();
        for w in &f.wd {
            let path = w
                .f_handle
                .path
                .as_deref()
                .ok_or_else(|| RestoreError::FileState {
                    kind: "inotify",
                    what: format!("inotify watch {} (fd {fd}) without a path", w.wd),
                })?;
            if w.wd == 0 || w.wd > i32::MAX as u32 {
                return Err(bad(
                    criu_images::names::FILES,
                    format!("inotify fd {fd}: watch descriptor {}", w.wd),
                ));
            }
            watches.push(Watch {
                wd: w.wd as i32,
                mask: w.mask & !(libc::IN_MASK_ADD | IN_MASK_CREATE),
                ino: w.i_ino,
                path: cpath(path)?,
            });
        }
        watches.sort_by_key(|w| w.wd);
        if watches.windows(2).any(|p| p[0].wd == p[1].wd) {
            return Err(bad(
                criu_images::names::FILES,
                format!("inotify fd {fd}: a watch descriptor twice"),
            ));
        }
        Ok(Arc::new(InotifyFile {
            flags: f.flags as i32 & libc::O_NONBLOCK,
            watches,
        }))
    }
}

/// `IN_MASK_CREATE` (not in every libc).
const IN_MASK_CREATE: u32 = 0x1000_0000;

/// One `inotify wd:.. ino:.. sdev:.. mask:.. ignored_mask:.. fhandle-bytes:.. fhandle-type:..
/// f_handle:..` line (all hex), without its `inotify ` prefix.
fn parse_watch(s: &str, id: u32) -> Option<InotifyWdEntry> {
    let field = |k: &str| {
        s.split_whitespace()
            .find_map(|t| t.strip_prefix(k).and_then(|v| v.strip_prefix(':')))
    };
    let hex = |k: &str| field(k).and_then(|v| u64::from_str_radix(v, 16).ok());
    let bytes = hex("fhandle-bytes")? as usize;
    let raw = field("f_handle")?;
    if bytes > MAX_HANDLE || raw.len() != bytes * 2 {
        return None;
    }
    let mut handle = vec![0u64; MAX_HANDLE / 8];
    for i in 0..bytes {
        let b = u8::from_str_radix(raw.get(2 * i..2 * i + 2)?, 16).ok()?;
        handle[i / 8] |= u64::from(b) << (8 * (i % 8));
    }
    Some(InotifyWdEntry {
        id,
        i_ino: hex("ino")?,
        mask: hex("mask")? as u32,
        ignored_mask: hex("ignored_mask")? as u32,
        s_dev: hex("sdev")? as u32,
        wd: hex("wd")? as u32,
        f_handle: FhEntry {
            bytes: bytes as u32,
            r#type: hex("fhandle-type")? as u32,
            handle,
            path: None,
            mnt_id: None,
        },
    })
}

/// The most directory entries a path scan looks at ([`scan`]).
const SCAN_MAX: usize = 1 << 20;

/// A watched inode's path, and how it was found (`file handle` or `path scan`): its file handle
/// `h` opened on a mount of kernel device `s_dev`, else (the handle does not open) a scan of
/// those mounts for inode `ino`. A path that names another inode, or a file removed since
/// (the kernel shows `PATH (deleted)`), is refused with the reason.
pub(super) fn find_path(
    h: &FhEntry,
    s_dev: u32,
    ino: u64,
) -> Result<(String, &'static str), String> {
    match resolve(h, s_dev) {
        Ok(p) => {
            if same_inode(Path::new(&p), s_dev, ino) {
                return Ok((p, "file handle"));
            }
            if let Some(gone) = p.strip_suffix(" (deleted)") {
                return Err(format!(
                    "{gone} was removed while watched (a watch on a removed file is not restored)"
                ));
            }
            scan(s_dev, ino)
                .map(|p| (p, "path scan"))
                .ok_or_else(|| format!("{p} is another file now, and a scan of the mounts of its device found no path of the inode"))
        }
        Err(why) => scan(s_dev, ino).map(|p| (p, "path scan")).ok_or_else(|| {
            format!("{why}, and a scan of the mounts of its device found no path of the inode (removed since?)")
        }),
    }
}

/// Whether `p` (not followed if a symlink) is inode `ino` of kernel device `s_dev`.
fn same_inode(p: &Path, s_dev: u32, ino: u64) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.ino() == ino && kernel_dev(m.dev()) == s_dev)
}

/// A device number as the kernel encodes it inside (`MAJOR << 20 | MINOR`, fdinfo's `sdev`).
fn kernel_dev(dev: u64) -> u32 {
    (libc::major(dev) << 20) | (libc::minor(dev) & 0xfffff)
}

/// The mount points of kernel device `s_dev` in criu's `/proc/self/mountinfo`, unescaped.
fn mounts_of(s_dev: u32) -> Result<Vec<Vec<u8>>, String> {
    let dev = format!("{}:{}", s_dev >> 20, s_dev & 0xfffff);
    let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
    let mounts: Vec<Vec<u8>> = info
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            (f.nth(2) == Some(dev.as_str())).then(|| f.nth(1)).flatten()
        })
        .map(unescape)
        .collect();
    if mounts.is_empty() {
        return Err(format!("no mount of device {dev}"));
    }
    Ok(mounts)
}

/// A path of inode `ino` on kernel device `s_dev`, found by walking the mounts of that device
/// breadth first (not following symlinks, not entering other file systems), comparing each
/// entry's inode number; at most [`SCAN_MAX`] entries are looked at.
fn scan(s_dev: u32, ino: u64) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::DirEntryExt;
    let mut seen = 0usize;
    for mp in mounts_of(s_dev).ok()? {
        let root = PathBuf::from(std::ffi::OsStr::from_bytes(&mp));
        if same_inode(&root, s_dev, ino) {
            return Some(root.display().to_string());
        }
        let mut queue = std::collections::VecDeque::from([root]);
        while let Some(dir) = queue.pop_front() {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                seen += 1;
                if seen > SCAN_MAX {
                    tracing::info!(s_dev, ino, seen, "path scan gave up");
                    return None;
                }
                let p = e.path();
                if e.ino() == ino && same_inode(&p, s_dev, ino) {
                    tracing::debug!(s_dev, ino, seen, path = %p.display(), "path scan found the inode");
                    return Some(p.display().to_string());
                }
                if e.file_type().is_ok_and(|t| t.is_dir())
                    && std::fs::symlink_metadata(&p).is_ok_and(|m| kernel_dev(m.dev()) == s_dev)
                {
                    queue.push_back(p);
                }
            }
        }
    }
    None
}

/// The path file handle `h` of the file system on kernel device `s_dev` resolves to, through a
/// mount of that device in criu's `/proc/self/mountinfo`.
fn resolve(h: &FhEntry, s_dev: u32) -> Result<String, String> {
    let mounts = mounts_of(s_dev)?;
    // struct file_handle: u32 bytes, i32 type, then the handle.
    let mut buf = [0u8; 8 + MAX_HANDLE];
    buf[..4].copy_from_slice(&h.bytes.to_ne_bytes());
    buf[4..8].copy_from_slice(&(h.r#type as i32).to_ne_bytes());
    for (i, w) in h.handle.iter().take(MAX_HANDLE / 8).enumerate() {
        buf[8 + 8 * i..16 + 8 * i].copy_from_slice(&w.to_le_bytes());
    }
    for m in mounts {
        let Ok(mp) = CString::new(m) else {
            continue;
        };
        // SAFETY: open with a NUL-terminated path.
        let mfd = unsafe { libc::open(mp.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if mfd < 0 {
            continue;
        }
        let mfd = super::owned(mfd);
        // SAFETY: open_by_handle_at reads a file_handle of `bytes` (<= MAX_HANDLE) handle bytes
        // from a live local buffer of 8 + MAX_HANDLE bytes.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_open_by_handle_at,
                mfd.as_raw_fd(),
                buf.as_ptr(),
                libc::O_PATH | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            continue;
        }
        let fd = super::owned(fd as i32);
        if let Ok(p) = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())) {
            return Ok(p.display().to_string());
        }
    }
    Err("its file handle does not open".into())
}

/// A mountinfo path with its octal escapes (`\040` for a space) undone.
pub(super) fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(Ok(v)) = s.get(i + 1..i + 4).map(|o| u8::from_str_radix(o, 8))
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// One watch to add again.
#[derive(Debug)]
pub struct Watch {
    /// Its watch descriptor.
    pub wd: i32,
    /// Its mask.
    pub mask: u32,
    /// The inode watched.
    pub ino: u64,
    /// Its path.
    pub path: CString,
}

/// An inotify instance to make again, with its watches (by watch descriptor).
#[derive(Debug)]
pub struct InotifyFile {
    /// `O_NONBLOCK`.
    pub flags: i32,
    /// The watches, by ascending watch descriptor.
    pub watches: Vec<Watch>,
}

impl RestoreFile for InotifyFile {
    fn fd_type(&self) -> FdTypes {
        FdTypes::Inotify
    }

    fn made_by_engine(&self) -> bool {
        true
    }

    fn make_in_task(&self, fd: i32) -> Result<Ends, TaskError> {
        super::engine_makes_it(fd)
    }

    fn make_in_engine(&self) -> Result<Vec<OwnedFd>, RestoreError> {
        // Non-blocking while it is made, to drain what making it queued.
        // SAFETY: inotify_init1 takes flags only.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        if fd < 0 {
            return Err(super::sys("inotify_init1"));
        }
        let fd = super::owned(fd);
        for w in &self.watches {
            let shown = String::from_utf8_lossy(w.path.to_bytes()).into_owned();
            let meta = std::fs::metadata(&shown).map_err(|source| RestoreError::MissingFile {
                path: shown.clone().into(),
                source,
            })?;
            if meta.ino() != w.ino {
                return Err(RestoreError::FileState {
                    kind: "inotify",
                    what: format!(
                        "inotify watch {} on {shown}: inode {} is now {}",
                        w.wd,
                        w.ino,
                        meta.ino()
                    ),
                });
            }
            add_watch_at(fd.as_raw_fd(), w, &shown)?;
        }
        // The watches removed on the way queued IN_IGNORED events: pending events are dropped.
        let mut buf = [0u8; 4096];
        // SAFETY: reads into a live local buffer from our own non-blocking instance.
        while unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
        // SAFETY: fcntl on our own descriptor.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, self.flags) } != 0 {
            return Err(super::sys("setting an inotify's flags"));
        }
        Ok(vec![fd])
    }
}

/// Adds watch `w` so that it gets its saved watch descriptor: descriptors are handed out in
/// increasing order, so watches are added and removed until the saved one comes up.
fn add_watch_at(fd: i32, w: &Watch, shown: &str) -> Result<(), RestoreError> {
    for _ in 0..MAX_WD_TRIES {
        // SAFETY: inotify_add_watch with a NUL-terminated path on our own instance.
        let wd = unsafe { libc::inotify_add_watch(fd, w.path.as_ptr(), w.mask) };
        if wd < 0 {
            return Err(super::sys("inotify_add_watch"));
        }
        if wd == w.wd {
            tracing::debug!(wd, path = shown, "inotify watch restored");
            return Ok(());
        }
        // SAFETY: removes the watch just added on our own instance.
        unsafe { libc::inotify_rm_watch(fd, wd) };
        if wd > w.wd {
            break;
        }
    }
    Err(RestoreError::FileState {
        kind: "inotify",
        what: format!("inotify watch {} on {shown}: descriptor not reached", w.wd),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_watch_line_and_resolves_its_handle() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("w");
        std::fs::write(&p, b"x").unwrap();
        let c = CString::new(p.to_str().unwrap()).unwrap();
        // SAFETY: inotify calls on our own new instance with a NUL-terminated path.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        assert!(fd >= 0);
        let fd = crate::files::owned(fd);
        // SAFETY: inotify_add_watch on our own new instance with a NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), libc::IN_MODIFY) };
        assert_eq!(wd, 1);
        let text =
            std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).unwrap();
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("inotify "))
            .unwrap();
        let w = parse_watch(line, 7).unwrap();
        assert_eq!((w.wd, w.mask, w.id), (1, libc::IN_MODIFY, 7));
        assert_eq!(w.i_ino, std::fs::metadata(&p).unwrap().ino());
        if nix::unistd::geteuid().is_root() {
            let got = resolve(&w.f_handle, w.s_dev).unwrap();
            assert_eq!(
                std::fs::canonicalize(got).unwrap(),
                std::fs::canonicalize(&p).unwrap()
            );
        }
    }
}
