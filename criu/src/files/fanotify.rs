//! fanotify groups (`FANOTIFY` entries) with their marks, as CRIU writes them: the group's
//! `fanotify_init` flags and event flags, and per mark its kind (inode, mount or filesystem),
//! mark flags, mask and ignored mask; an inode mark with the inode's number, device and file
//! handle (and the path found for it), a mount mark with its mount id and mount point. A
//! filesystem mark (`FAN_MARK_FILESYSTEM`), which CRIU's format has no kind for, is written as
//! mark type `FILESYSTEM` (3, ours) with its device in `s_dev` and a mount of that device (id
//! and mount point) in the mount part. Pending events are dropped, as CRIU does (said at
//! `-v3`).
//!
//! Dump: the `fanotify` lines of the descriptor's fdinfo; an inode mark's path is found as an
//! inotify watch's is ([`super::inotify::find_path`]: by file handle, else by a path scan); a
//! mark on a file removed since is refused by name. Restore: the engine makes the group
//! (`fanotify_init`) and adds each mark on its path (an inode mark's inode, a filesystem mark's
//! device checked against the saved one); the tasks inherit it.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use criu_images::pb::{
    FanotifyFileEntry, FanotifyInodeMarkEntry, FanotifyMarkEntry, FanotifyMountMarkEntry, FdTypes,
    FhEntry, FileEntry, MarkType,
};

use super::{DumpFd, Ends, FileKind, ImageCtx, Parsed, RestoreFile, TaskError, fown_zero};
use crate::dump::error::DumpError;
use crate::restore::error::RestoreError;
use crate::restore::images::entry::{bad, cpath, kind_entry};

/// The longest file handle CRIU keeps (16 words).
const MAX_HANDLE: usize = 128;

/// The most marks of one group brought back.
const MAX_MARKS: usize = 1 << 16;

/// Mark flags a saved mark may carry (what fdinfo's `mflags` shows: ignored mask surviving
/// modification, evictable, the new-style ignore).
const MFLAGS_KNOWN: u32 =
    libc::FAN_MARK_IGNORED_SURV_MODIFY | libc::FAN_MARK_EVICTABLE | libc::FAN_MARK_IGNORE;

/// The fanotify kind.
#[derive(Debug, Default)]
pub struct Fanotify;

impl FileKind for Fanotify {
    fn fd_type(&self) -> FdTypes {
        FdTypes::Fanotify
    }

    fn claims(&self, fd: &DumpFd<'_>) -> bool {
        fd.name == "anon_inode:[fanotify]"
    }

    fn dump(&mut self, fd: &DumpFd<'_>, id: u32) -> Result<FileEntry, DumpError> {
        let text = fd.fdinfo_text()?;
        let refuse = |why: String| DumpError::FileState {
            kind: "fanotify",
            what: format!("fd {} of {} (fanotify): {why}", fd.fd, fd.pid),
        };
        let mut group = None;
        let mut marks = Vec::new();
        for line in text.text.lines() {
            let Some(rest) = line.strip_prefix("fanotify ") else {
                continue;
            };
            let f = Fields(rest);
            if rest.starts_with("flags:") {
                group = Some((
                    f.hex("flags")
                        .ok_or_else(|| text.bad("fanotify", "flags"))? as u32,
                    f.hex("event-flags")
                        .ok_or_else(|| text.bad("fanotify", "event-flags"))?
                        as u32,
                ));
                continue;
            }
            let m = parse_mark(&f, id).ok_or_else(|| text.bad("fanotify", "a mark"))?;
            let m = match m {
                MarkLine::Inode(mut m) => {
                    let (ino, s_dev) = (m.ie.as_ref().map_or(0, |i| i.i_ino), m.s_dev);
                    if let Some(ie) = m.ie.as_mut() {
                        let (path, how) = super::inotify::find_path(&ie.f_handle, s_dev, ino)
                            .map_err(|why| {
                                refuse(format!("mark on inode {ino} of device {s_dev:#x}: {why}"))
                            })?;
                        tracing::info!(pid = fd.pid, fd = fd.fd, mask = m.mask, path = %path, "fanotify inode mark (path found by {how})");
                        ie.f_handle.path = Some(path);
                    }
                    m
                }
                MarkLine::Mount(mut m) => {
                    let mnt_id = m.me.as_ref().map_or(0, |me| me.mnt_id);
                    let (path, s_dev) = mount_point(fd.pid, mnt_id).ok_or_else(|| {
                        refuse(format!(
                            "mark on mount {mnt_id}: no such mount of {}",
                            fd.pid
                        ))
                    })?;
                    tracing::debug!(pid = fd.pid, fd = fd.fd, mask = m.mask, path = %path, "fanotify mount mark");
                    m.s_dev = s_dev;
                    if let Some(me) = m.me.as_mut() {
                        me.path = Some(path);
                    }
                    m
                }
                MarkLine::Filesystem(mut m) => {
                    let s_dev = m.s_dev;
                    let (mnt_id, path) = mount_of_dev(fd.pid, s_dev).ok_or_else(|| {
                        refuse(format!(
                            "filesystem mark on device {s_dev:#x}: no mount of it in {}",
                            fd.pid
                        ))
                    })?;
                    tracing::info!(pid = fd.pid, fd = fd.fd, mask = m.mask, s_dev, path = %path, "fanotify filesystem mark");
                    m.me = Some(FanotifyMountMarkEntry {
                        mnt_id,
                        path: Some(path),
                    });
                    m
                }
            };
            marks.push(m);
        }
        let (faflags, evflags) = group.ok_or_else(|| text.bad("fanotify", "flags"))?;
        tracing::info!(
            pid = fd.pid,
            fd = fd.fd,
            marks = marks.len(),
            "fanotify (pending events are dropped)"
        );
        Ok(FileEntry {
            id,
            r#type: FdTypes::Fanotify as i32,
            ffy: Some(FanotifyFileEntry {
                id,
                flags: fd.flags(),
                fown: fown_zero(),
                faflags,
                evflags,
                mark: marks,
            }),
            ..FileEntry::default()
        })
    }

    fn parse(&mut self, _img: &ImageCtx<'_>, e: &FileEntry, fd: i32) -> Parsed {
        let f = kind_entry(&e.ffy, fd, "fanotify")?;
        let bad_mark = |why: String| {
            bad(
                criu_images::names::FILES,
                format!("fanotify fd {fd}: {why}"),
            )
        };
        if f.mark.len() > MAX_MARKS {
            return Err(bad_mark(format!("{} marks", f.mark.len())));
        }
        let mut marks = Vec::with_capacity(f.mark.len());
        for m in &f.mark {
            if m.mflags & !MFLAGS_KNOWN != 0 {
                return Err(bad_mark(format!("mark flags {:#x}", m.mflags)));
            }
            let (path, ino, mount, fs_dev) = match (MarkType::try_from(m.r#type), &m.ie, &m.me) {
                (Ok(MarkType::Inode), Some(ie), _) => {
                    let p = ie
                        .f_handle
                        .path
                        .as_deref()
                        .ok_or_else(|| RestoreError::FileState {
                            kind: "fanotify",
                            what: format!(
                                "fanotify fd {fd}: a mark on inode {} without a path",
                                ie.i_ino
                            ),
                        })?;
                    (p, Some(ie.i_ino), false, None)
                }
                (Ok(MarkType::Mount), _, Some(me)) => {
                    let p = me.path.as_deref().ok_or_else(|| RestoreError::FileState {
                        kind: "fanotify",
                        what: format!(
                            "fanotify fd {fd}: a mark on mount {} without a path",
                            me.mnt_id
                        ),
                    })?;
                    (p, None, true, None)
                }
                (Ok(MarkType::Filesystem), _, Some(me)) => {
                    let p = me.path.as_deref().ok_or_else(|| RestoreError::FileState {
                        kind: "fanotify",
                        what: format!(
                            "fanotify fd {fd}: a filesystem mark on device {:#x} without a path",
                            m.s_dev
                        ),
                    })?;
                    (p, None, false, Some(m.s_dev))
                }
                _ => {
                    return Err(bad_mark(format!(
                        "a mark of type {} without its part",
                        m.r#type
                    )));
                }
            };
            marks.push(Mark {
                path: cpath(path)?,
                ino,
                mount,
                fs_dev,
                mflags: m.mflags,
                mask: m.mask,
                ignored: m.ignored_mask,
            });
        }
        Ok(Arc::new(FanotifyFile {
            faflags: f.faflags & !(libc::FAN_CLOEXEC | libc::FAN_NONBLOCK),
            evflags: f.evflags,
            nonblock: f.flags as i32 & libc::O_NONBLOCK != 0,
            marks,
        }))
    }
}

/// The `key:hex` fields of one fdinfo line.
struct Fields<'a>(&'a str);

impl Fields<'_> {
    fn get(&self, k: &str) -> Option<&str> {
        self.0
            .split_whitespace()
            .find_map(|t| t.strip_prefix(k).and_then(|v| v.strip_prefix(':')))
    }

    fn hex(&self, k: &str) -> Option<u64> {
        self.get(k).and_then(|v| u64::from_str_radix(v, 16).ok())
    }
}

/// What one mark line is.
enum MarkLine {
    Inode(FanotifyMarkEntry),
    Mount(FanotifyMarkEntry),
    Filesystem(FanotifyMarkEntry),
}

/// One `fanotify ino:.. sdev:.. mflags:.. mask:.. ignored_mask:.. fhandle-bytes:..
/// fhandle-type:.. f_handle:..`, `fanotify mnt_id:.. mflags:.. ...` or `fanotify sdev:..
/// mflags:.. ...` line (hex), without its prefix.
fn parse_mark(f: &Fields<'_>, id: u32) -> Option<MarkLine> {
    let mflags = f.hex("mflags")? as u32;
    let mask = f.hex("mask")? as u32;
    let ignored_mask = f.hex("ignored_mask")? as u32;
    let entry = |ty: MarkType, s_dev: u32| FanotifyMarkEntry {
        id,
        r#type: ty as i32,
        mflags,
        mask,
        ignored_mask,
        s_dev,
        ie: None,
        me: None,
    };
    if let Some(ino) = f.hex("ino") {
        let bytes = f.hex("fhandle-bytes")? as usize;
        let raw = f.get("f_handle")?;
        if bytes > MAX_HANDLE || raw.len() != bytes * 2 {
            return None;
        }
        let mut handle = vec![0u64; MAX_HANDLE / 8];
        for i in 0..bytes {
            let b = u8::from_str_radix(raw.get(2 * i..2 * i + 2)?, 16).ok()?;
            handle[i / 8] |= u64::from(b) << (8 * (i % 8));
        }
        let mut m = entry(MarkType::Inode, f.hex("sdev")? as u32);
        m.ie = Some(FanotifyInodeMarkEntry {
            i_ino: ino,
            f_handle: FhEntry {
                bytes: bytes as u32,
                r#type: f.hex("fhandle-type")? as u32,
                handle,
                path: None,
                mnt_id: None,
            },
        });
        return Some(MarkLine::Inode(m));
    }
    if let Some(mnt_id) = f.hex("mnt_id") {
        let mut m = entry(MarkType::Mount, 0);
        m.me = Some(FanotifyMountMarkEntry {
            mnt_id: mnt_id as u32,
            path: None,
        });
        return Some(MarkLine::Mount(m));
    }
    Some(MarkLine::Filesystem(entry(
        MarkType::Filesystem,
        f.hex("sdev")? as u32,
    )))
}

/// A mount of kernel device `s_dev` in `pid`'s mountinfo: its id and mount point (the first
/// one mounting the file system's root, else the first one).
fn mount_of_dev(pid: i32, s_dev: u32) -> Option<(u32, String)> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).ok()?;
    let mut found: Vec<(u32, String, bool)> = info
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (maj, min) = f.get(2)?.split_once(':')?;
            let dev = (maj.parse::<u32>().ok()? << 20) | min.parse::<u32>().ok()?;
            if dev != s_dev {
                return None;
            }
            let id = f.first()?.parse::<u32>().ok()?;
            let path = String::from_utf8(super::inotify::unescape(f.get(4)?)).ok()?;
            Some((id, path, *f.get(3)? == "/"))
        })
        .collect();
    found.sort_by_key(|(_, _, whole)| !*whole);
    found.into_iter().next().map(|(id, p, _)| (id, p))
}

/// The mount point of mount `mnt_id` in `pid`'s mountinfo and its device (the kernel's
/// encoding, as fdinfo's `sdev`).
fn mount_point(pid: i32, mnt_id: u32) -> Option<(String, u32)> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).ok()?;
    info.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.first()?.parse::<u32>().ok()? != mnt_id {
            return None;
        }
        let (maj, min) = f.get(2)?.split_once(':')?;
        let dev = (maj.parse::<u32>().ok()? << 20) | min.parse::<u32>().ok()?;
        let path = String::from_utf8(super::inotify::unescape(f.get(4)?)).ok()?;
        Some((path, dev))
    })
}

/// One mark to add again.
#[derive(Debug)]
pub struct Mark {
    /// The marked file or mount point.
    pub path: CString,
    /// The inode an inode mark is on (checked before marking it again).
    pub ino: Option<u64>,
    /// A mount mark.
    pub mount: bool,
    /// A filesystem mark: the kernel device of its file system (checked before marking it).
    pub fs_dev: Option<u32>,
    /// Mark flags (`FAN_MARK_IGNORED_SURV_MODIFY`, `FAN_MARK_EVICTABLE`, `FAN_MARK_IGNORE`).
    pub mflags: u32,
    /// The events.
    pub mask: u32,
    /// The ignored events.
    pub ignored: u32,
}

/// A fanotify group to make again, with its marks.
#[derive(Debug)]
pub struct FanotifyFile {
    /// `fanotify_init` flags (without close-on-exec and non-blocking).
    pub faflags: u32,
    /// `fanotify_init` event flags.
    pub evflags: u32,
    /// `O_NONBLOCK`.
    pub nonblock: bool,
    /// The marks.
    pub marks: Vec<Mark>,
}

impl RestoreFile for FanotifyFile {
    fn fd_type(&self) -> FdTypes {
        FdTypes::Fanotify
    }

    fn made_by_engine(&self) -> bool {
        true
    }

    fn make_in_task(&self, fd: i32) -> Result<Ends, TaskError> {
        super::engine_makes_it(fd)
    }

    fn make_in_engine(&self) -> Result<Vec<OwnedFd>, RestoreError> {
        let mut flags = self.faflags | libc::FAN_CLOEXEC;
        if self.nonblock {
            flags |= libc::FAN_NONBLOCK;
        }
        // SAFETY: fanotify_init takes flags only.
        let fd = unsafe { libc::fanotify_init(flags, self.evflags) };
        if fd < 0 {
            return Err(super::sys("fanotify_init"));
        }
        let fd = super::owned(fd);
        // The kernel lists a group's marks newest first: added oldest first (the last listed
        // first), they are listed again in the saved order.
        for m in self.marks.iter().rev() {
            let shown = String::from_utf8_lossy(m.path.to_bytes()).into_owned();
            if let Some(ino) = m.ino {
                let meta =
                    std::fs::metadata(&shown).map_err(|source| RestoreError::MissingFile {
                        path: shown.clone().into(),
                        source,
                    })?;
                if meta.ino() != ino {
                    return Err(RestoreError::FileState {
                        kind: "fanotify",
                        what: format!(
                            "fanotify mark on {shown}: inode {ino} is now {}",
                            meta.ino()
                        ),
                    });
                }
            }
            if let Some(dev) = m.fs_dev {
                let meta =
                    std::fs::metadata(&shown).map_err(|source| RestoreError::MissingFile {
                        path: shown.clone().into(),
                        source,
                    })?;
                let now = (libc::major(meta.dev()) << 20) | libc::minor(meta.dev());
                if now != dev {
                    return Err(RestoreError::FileState {
                        kind: "fanotify",
                        what: format!(
                            "fanotify filesystem mark on {shown}: device {dev:#x} is now {now:#x}"
                        ),
                    });
                }
            }
            mark(fd.as_raw_fd(), m)?;
            tracing::debug!(
                path = shown,
                mask = m.mask,
                ignored = m.ignored,
                "fanotify mark restored"
            );
        }
        Ok(vec![fd])
    }
}

/// Adds mark `m` to group `fd`: its mask, then its ignored mask.
fn mark(fd: i32, m: &Mark) -> Result<(), RestoreError> {
    let mut base = libc::FAN_MARK_ADD | (m.mflags & libc::FAN_MARK_EVICTABLE);
    if m.mount {
        base |= libc::FAN_MARK_MOUNT;
    }
    if m.fs_dev.is_some() {
        base |= libc::FAN_MARK_FILESYSTEM;
    }
    if m.mask != 0 {
        // SAFETY: fanotify_mark on our own group with a NUL-terminated path.
        let r = unsafe {
            libc::fanotify_mark(fd, base, u64::from(m.mask), libc::AT_FDCWD, m.path.as_ptr())
        };
        if r != 0 {
            return Err(super::sys("fanotify_mark (mask)"));
        }
    }
    if m.ignored != 0 {
        let ignore = if m.mflags & libc::FAN_MARK_IGNORE != 0 {
            libc::FAN_MARK_IGNORE
        } else {
            libc::FAN_MARK_IGNORED_MASK
        };
        let flags = base | ignore | (m.mflags & libc::FAN_MARK_IGNORED_SURV_MODIFY);
        // SAFETY: fanotify_mark on our own group with a NUL-terminated path.
        let r = unsafe {
            libc::fanotify_mark(
                fd,
                flags,
                u64::from(m.ignored),
                libc::AT_FDCWD,
                m.path.as_ptr(),
            )
        };
        if r != 0 {
            return Err(super::sys("fanotify_mark (ignored mask)"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The group line and an inode mark line of a real group parse; a mount line too.
    #[test]
    fn parses_fdinfo_lines() {
        let m = parse_mark(
            &Fields(
                "ino:4f969 sdev:800013 mflags:0 mask:3b ignored_mask:40000000 fhandle-bytes:8 fhandle-type:1 f_handle:69f90400c275b5b4",
            ),
            3,
        );
        let Some(MarkLine::Inode(m)) = m else {
            panic!("not an inode mark");
        };
        assert_eq!(
            (m.id, m.mask, m.ignored_mask, m.s_dev),
            (3, 0x3b, 0x4000_0000, 0x80_0013)
        );
        let ie = m.ie.unwrap();
        assert_eq!(ie.i_ino, 0x4f969);
        assert_eq!((ie.f_handle.bytes, ie.f_handle.r#type), (8, 1));
        assert_eq!(ie.f_handle.handle[0], 0xb4b5_75c2_0004_f969);
        let Some(MarkLine::Mount(m)) =
            parse_mark(&Fields("mnt_id:1f mflags:0 mask:8 ignored_mask:0"), 4)
        else {
            panic!("not a mount mark");
        };
        assert_eq!(m.me.unwrap().mnt_id, 0x1f);
        assert!(matches!(
            parse_mark(&Fields("sdev:800013 mflags:0 mask:8 ignored_mask:0"), 5),
            Some(MarkLine::Filesystem(m)) if m.s_dev == 0x80_0013 && m.r#type == MarkType::Filesystem as i32
        ));
    }
}
