//! Namespace descriptors (`NS` entries): a `/proc/PID/ns/*` file a task opened.
//!
//! The dump only takes trees that live in criu's own namespaces, so a namespace descriptor is
//! taken when it refers to one of criu's namespaces (its inode is that of `/proc/self/ns/KIND`
//! of criu), and refused by name otherwise (another namespace is not brought back yet). The
//! entry records the namespace's kind (`ns_cflag`, its `CLONE_NEW*` flag) and, as its `ns_id`,
//! its inode. Restore: the task opens `/proc/self/ns/KIND` again (it lives in the same
//! namespaces as criu).
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use criu_images::pb::{FdTypes, FileEntry, NsFileEntry};

use super::{DumpFd, Ends, FileKind, ImageCtx, Parsed, RestoreFile, TaskError};
use crate::dump::error::DumpError;
use crate::restore::images::entry::{bad, cpath, kind_entry};

/// The namespace kinds: link prefix, `/proc/self/ns` name, `CLONE_NEW*` flag.
const KINDS: [(&str, &str, i32); 8] = [
    ("net", "net", libc::CLONE_NEWNET),
    ("mnt", "mnt", libc::CLONE_NEWNS),
    ("uts", "uts", libc::CLONE_NEWUTS),
    ("ipc", "ipc", libc::CLONE_NEWIPC),
    ("pid", "pid", libc::CLONE_NEWPID),
    ("user", "user", libc::CLONE_NEWUSER),
    ("time", "time", 0x80),
    ("cgroup", "cgroup", libc::CLONE_NEWCGROUP),
];

/// The kind of a namespace link (`net:[4026531840]`): its entry in [`KINDS`].
fn kind_of(name: &str) -> Option<(&'static str, &'static str, i32)> {
    let (k, rest) = name.split_once(':')?;
    let ino = rest.strip_prefix('[')?.strip_suffix(']')?;
    if ino.is_empty() || !ino.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    KINDS.iter().find(|e| e.0 == k).copied()
}

/// The namespace-descriptor kind.
#[derive(Debug, Default)]
pub struct NsFile;

impl FileKind for NsFile {
    fn fd_type(&self) -> FdTypes {
        FdTypes::Ns
    }

    fn claims(&self, fd: &DumpFd<'_>) -> bool {
        kind_of(fd.name).is_some()
    }

    fn dump(&mut self, fd: &DumpFd<'_>, id: u32) -> Result<FileEntry, DumpError> {
        let Some((_, file, cflag)) = kind_of(fd.name) else {
            return Err(super::regular::refuse(fd));
        };
        let own = std::fs::metadata(format!("/proc/self/ns/{file}"))
            .map(|m| m.ino())
            .map_err(|source| DumpError::File {
                what: format!("stat /proc/self/ns/{file}"),
                source,
            })?;
        let ino = fd.meta.ino();
        if ino != own {
            return Err(DumpError::FileState {
                kind: "nsfs",
                what: format!(
                    "fd {} of {}: {} is a namespace other than criu's",
                    fd.fd, fd.pid, fd.name
                ),
            });
        }
        tracing::debug!(
            pid = fd.pid,
            fd = fd.fd,
            ns = fd.name,
            "namespace fd (criu's own)"
        );
        Ok(FileEntry {
            id,
            r#type: FdTypes::Ns as i32,
            nsf: Some(NsFileEntry {
                id,
                ns_id: ino as u32,
                ns_cflag: cflag as u32,
                flags: fd.flags(),
            }),
            ..FileEntry::default()
        })
    }

    fn parse(&mut self, _img: &ImageCtx<'_>, e: &FileEntry, fd: i32) -> Parsed {
        let n = kind_entry(&e.nsf, fd, "namespace")?;
        let (_, file, _) = KINDS
            .iter()
            .find(|k| k.2 as u32 == n.ns_cflag)
            .ok_or_else(|| {
                bad(
                    criu_images::names::FILES,
                    format!("namespace fd {fd}: kind {:#x}", n.ns_cflag),
                )
            })?;
        Ok(Arc::new(NsFileOpen {
            path: cpath(&format!("/proc/self/ns/{file}"))?,
            flags: n.flags as i32 & libc::O_ACCMODE,
        }))
    }
}

/// A namespace descriptor to open again.
#[derive(Debug)]
pub struct NsFileOpen {
    /// `/proc/self/ns/KIND`.
    pub path: CString,
    /// Access mode.
    pub flags: i32,
}

impl RestoreFile for NsFileOpen {
    fn fd_type(&self) -> FdTypes {
        FdTypes::Ns
    }

    fn make_in_task(&self, fd: i32) -> Result<Ends, TaskError> {
        // SAFETY: open with a NUL-terminated path made before the fork.
        let r = unsafe { libc::open(self.path.as_ptr(), self.flags | libc::O_CLOEXEC) };
        Ends::made(r as _, fd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_links_are_recognised() {
        assert_eq!(kind_of("net:[4026531840]").map(|k| k.0), Some("net"));
        assert_eq!(
            kind_of("cgroup:[4026531835]").map(|k| k.2),
            Some(libc::CLONE_NEWCGROUP)
        );
        assert!(kind_of("pipe:[12]").is_none());
        assert!(kind_of("net:[x]").is_none());
        assert!(kind_of("/net:[1]").is_none());
    }
}
