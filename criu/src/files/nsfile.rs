//! Namespace descriptors (`NS` entries): a `/proc/PID/ns/*` file a task opened.
//!
//! A namespace descriptor is taken when it refers to one of criu's namespaces (its inode is
//! that of `/proc/self/ns/KIND` of criu) or to the namespace of that kind the holder lives in
//! (the tree's own, which the restore makes again), and refused by name otherwise (a namespace
//! no task of the tree is restored in, or another task's nested one). The entry records the
//! namespace's kind (`ns_cflag`, its `CLONE_NEW*` flag) and, as its `ns_id`, the number CRIU
//! gives it in `ids-PID.img` (criu's own 1..=8 by kind, the tree's from 9 on, as
//! [`crate::namespaces::ns_ids`] numbers them). Restore: a descriptor of criu's namespace is
//! opened by the engine (`/proc/self/ns/KIND`, criu's) and inherited; one of the tree's
//! namespace is opened by the task itself, which lives in it by then. Older images with the
//! inode as `ns_id` read as the tree's namespace (the task's own, as before).
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use criu_images::pb::{FdTypes, FileEntry, NsFileEntry};

use super::{DumpFd, Ends, FileKind, ImageCtx, Parsed, RestoreFile, TaskError};
use crate::dump::error::DumpError;
use crate::restore::error::RestoreError;
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
        let inodes = |pid: &str| -> Vec<(String, u64)> {
            crate::namespaces::Kind::ALL
                .iter()
                .filter_map(|k| {
                    let m = std::fs::metadata(format!("/proc/{pid}/ns/{}", k.name())).ok()?;
                    Some((k.name().to_string(), m.ino()))
                })
                .collect()
        };
        let (holder, mine) = (inodes(&fd.pid.to_string()), inodes("self"));
        let at = crate::namespaces::Kind::ALL
            .iter()
            .position(|k| k.name() == file);
        let holder_ino = holder.iter().find(|(k, _)| k == file).map(|e| e.1);
        let ns_id = match at {
            Some(i) if ino == own || Some(ino) == holder_ino => {
                crate::namespaces::ns_ids(&holder, &mine)[i]
                    .filter(|_| ino == holder_ino.unwrap_or(0))
                    .unwrap_or(i as u32 + 1)
            }
            _ => {
                return Err(DumpError::FileState {
                    kind: "nsfs",
                    what: format!(
                        "fd {} of {}: {} is a namespace other than criu's or its own",
                        fd.fd, fd.pid, fd.name
                    ),
                });
            }
        };
        tracing::debug!(
            pid = fd.pid,
            fd = fd.fd,
            ns = fd.name,
            ns_id,
            criu_own = ino == own,
            "namespace fd"
        );
        Ok(FileEntry {
            id,
            r#type: FdTypes::Ns as i32,
            nsf: Some(NsFileEntry {
                id,
                ns_id,
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
        let i = crate::namespaces::Kind::ALL
            .iter()
            .position(|k| k.name() == *file)
            .unwrap_or(usize::MAX);
        Ok(Arc::new(NsFileOpen {
            path: cpath(&format!("/proc/self/ns/{file}"))?,
            flags: n.flags as i32 & libc::O_ACCMODE,
            criu_own: n.ns_id as usize == i.wrapping_add(1),
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
    /// A namespace of criu's (opened by the engine), not the tree's (opened by the task).
    pub criu_own: bool,
}

impl RestoreFile for NsFileOpen {
    fn fd_type(&self) -> FdTypes {
        FdTypes::Ns
    }

    fn made_by_engine(&self) -> bool {
        self.criu_own
    }

    fn make_in_engine(&self) -> Result<Vec<std::os::fd::OwnedFd>, RestoreError> {
        // SAFETY: open with a NUL-terminated path; the engine lives in criu's namespaces.
        let r = unsafe { libc::open(self.path.as_ptr(), self.flags | libc::O_CLOEXEC) };
        if r < 0 {
            return Err(super::sys("opening a namespace of criu's"));
        }
        Ok(vec![super::owned(r)])
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
