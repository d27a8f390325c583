//! Namespaces of the dumped tree: one module per kind, each holding its dump and its restore
//! side behind one table of operations ([`OPS`]), as [`crate::files`] does for open files.
//!
//! The layout taken is CRIU's: each namespace of the root task is either criu's own (not dumped;
//! the restored tree inherits criu's) or the root's own, dumped once as `KIND-ID` images and
//! rebuilt before the root task exists. The other tasks of the tree live in the root's
//! namespaces; a task in one of its own is refused by name (except the kinds whose module says
//! it takes several, [`NsOps::nested`]).
//!
//! Ids: criu's own namespaces are numbered 1..=8 in [`Kind::ALL`] order (the inventory's
//! `root_ids`), the root's own ones from 9 on in the same order, as CRIU numbers them.
//!
//! # Adding a kind
//! One module with a `pub(crate) static OPS: NsOps` and one line in [`OPS`]:
//! - `dump` writes the images of one namespace, reading it through the root task;
//! - `restore` rebuilds it before the root is created and says how the root gets into it
//!   ([`Rebuilt`]): the engine enters a namespace made beforehand around the clone of the root
//!   (`join`), the root is cloned with a flag (`clone_flags`), or a step runs once the root
//!   exists but before it runs any code of its own (`after_clone`).
//!
//! Helpers shared by the kinds: [`in_ns_of`] runs a closure in a thread that entered a task's
//! namespaces, [`in_fresh_ns`] in a thread that made new ones (and hands back their descriptors).
// Unsafe code: setns/unshare in a helper thread (they change only that thread's namespaces).
#![allow(unsafe_code)]

pub(crate) mod ipc;
pub(crate) mod time;
pub(crate) mod uts;

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;

/// A namespace kind, in the order CRIU numbers them (`ids`: pid, net, ipc, uts, time, mnt,
/// user, cgroup).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Pid,
    Net,
    Ipc,
    Uts,
    Time,
    Mnt,
    User,
    Cgroup,
}

impl Kind {
    /// Every kind, in id order.
    pub(crate) const ALL: [Kind; 8] = [
        Kind::Pid,
        Kind::Net,
        Kind::Ipc,
        Kind::Uts,
        Kind::Time,
        Kind::Mnt,
        Kind::User,
        Kind::Cgroup,
    ];

    /// The name under `/proc/PID/ns/`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Pid => "pid",
            Kind::Net => "net",
            Kind::Ipc => "ipc",
            Kind::Uts => "uts",
            Kind::Time => "time",
            Kind::Mnt => "mnt",
            Kind::User => "user",
            Kind::Cgroup => "cgroup",
        }
    }

    /// Its `CLONE_NEW*` flag.
    pub(crate) fn cflag(self) -> i32 {
        match self {
            Kind::Pid => libc::CLONE_NEWPID,
            Kind::Net => libc::CLONE_NEWNET,
            Kind::Ipc => libc::CLONE_NEWIPC,
            Kind::Uts => libc::CLONE_NEWUTS,
            Kind::Time => libc::CLONE_NEWTIME,
            Kind::Mnt => libc::CLONE_NEWNS,
            Kind::User => libc::CLONE_NEWUSER,
            Kind::Cgroup => libc::CLONE_NEWCGROUP,
        }
    }

    /// The kind named `name` (`/proc/PID/ns/` names).
    pub(crate) fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Its position in [`Kind::ALL`].
    pub(crate) fn index(self) -> usize {
        Kind::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }
}

/// What failed with a namespace.
#[derive(Debug, thiserror::Error)]
pub enum NsError {
    /// A system call failed.
    #[error("{kind} namespace: {what}: {errno}")]
    Sys {
        /// The namespace kind.
        kind: &'static str,
        /// What was done.
        what: String,
        /// The error.
        errno: Errno,
    },
    /// A file could not be read or written.
    #[error("{kind} namespace: {what}: {error}")]
    Io {
        /// The namespace kind.
        kind: &'static str,
        /// What was done.
        what: String,
        /// The error.
        #[source]
        error: std::io::Error,
    },
    /// An image could not be read or written.
    #[error("{kind} namespace: {file}: {error}")]
    Image {
        /// The namespace kind.
        kind: &'static str,
        /// The image file.
        file: String,
        /// The error.
        #[source]
        error: criu_images::ImageError,
    },
    /// An image decodes but its content is wrong.
    #[error("{kind} namespace: image {file}: {reason}")]
    BadImage {
        /// The namespace kind.
        kind: &'static str,
        /// The image file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// Something this criu does not dump or restore, named.
    #[error("unsupported: {kind} namespace: {what}")]
    Unsupported {
        /// The namespace kind.
        kind: &'static str,
        /// What, naming the object or setting.
        what: String,
    },
}

impl NsError {
    /// The errno this error stands for (`EOPNOTSUPP` for a refusal).
    pub fn errno(&self) -> i32 {
        match self {
            NsError::Sys { errno, .. } => *errno as i32,
            NsError::Io { error, .. } => error.raw_os_error().unwrap_or(libc::EIO),
            NsError::Image { .. } | NsError::BadImage { .. } => libc::EINVAL,
            NsError::Unsupported { .. } => libc::EOPNOTSUPP,
        }
    }

    pub(crate) fn sys(kind: Kind, what: impl Into<String>, errno: Errno) -> NsError {
        NsError::Sys {
            kind: kind.name(),
            what: what.into(),
            errno,
        }
    }

    pub(crate) fn io(kind: Kind, what: impl Into<String>, error: std::io::Error) -> NsError {
        NsError::Io {
            kind: kind.name(),
            what: what.into(),
            error,
        }
    }

    pub(crate) fn image(
        kind: Kind,
        file: impl Into<String>,
        error: criu_images::ImageError,
    ) -> NsError {
        NsError::Image {
            kind: kind.name(),
            file: file.into(),
            error,
        }
    }

    pub(crate) fn bad(kind: Kind, file: impl Into<String>, reason: impl Into<String>) -> NsError {
        NsError::BadImage {
            kind: kind.name(),
            file: file.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn unsupported(kind: Kind, what: impl Into<String>) -> NsError {
        NsError::Unsupported {
            kind: kind.name(),
            what: what.into(),
        }
    }
}

/// What a kind's dump gets: one namespace of the root task.
pub(crate) struct DumpCtx<'a> {
    /// The root task (as criu sees its pid); the namespace is entered through it.
    pub pid: i32,
    /// The namespace's id in the images.
    pub id: u32,
    /// The images directory.
    pub dir: &'a Path,
}

/// What a kind's restore gets: one namespace to rebuild.
pub(crate) struct RestoreCtx<'a> {
    /// The namespace's id in the images.
    pub id: u32,
    /// The images directory.
    pub dir: &'a Path,
}

/// A step run once the root task exists (its pid as criu sees it), before it runs any code of
/// its own.
pub(crate) type AfterClone = Box<dyn FnOnce(i32) -> Result<(), NsError>>;

/// How the root task gets into a rebuilt namespace.
#[derive(Default)]
pub(crate) struct Rebuilt {
    /// The engine enters this namespace (`setns`) around the clone of the root, which inherits
    /// it; the engine's own comes back right after.
    pub join: Option<OwnedFd>,
    /// `CLONE_NEW*` flags the root is cloned with.
    pub clone_flags: u64,
    /// Run once the root exists, before it runs any code of its own.
    pub after_clone: Option<AfterClone>,
}

/// One kind's operations.
pub(crate) struct NsOps {
    /// The kind.
    pub kind: Kind,
    /// Whether tasks of the tree may be in namespaces of this kind other than the root's.
    pub nested: bool,
    /// Writes the images of one namespace of the root.
    pub dump: fn(&DumpCtx<'_>) -> Result<(), NsError>,
    /// Rebuilds one namespace from the images, before the root task exists.
    pub restore: fn(&RestoreCtx<'_>) -> Result<Rebuilt, NsError>,
}

/// The kinds dumped and restored, one line each.
pub(crate) static OPS: &[&NsOps] = &[&uts::OPS];

/// The operations of `kind`, if this criu dumps it.
pub(crate) fn ops(kind: Kind) -> Option<&'static NsOps> {
    OPS.iter().copied().find(|o| o.kind == kind)
}

/// Runs `f` in a new thread that first entered the namespaces `kinds` of task `pid` (setns:
/// only that thread moves), and returns what `f` returns.
///
/// # Errors
/// [`NsError::Io`] when a namespace cannot be opened, [`NsError::Sys`] when setns fails, and
/// whatever `f` returns.
pub(crate) fn in_ns_of<T: Send + 'static>(
    pid: i32,
    kinds: &[Kind],
    f: impl FnOnce() -> Result<T, NsError> + Send + 'static,
) -> Result<T, NsError> {
    let mut fds = Vec::new();
    for &k in kinds {
        let path = format!("/proc/{pid}/ns/{}", k.name());
        let fd =
            std::fs::File::open(&path).map_err(|e| NsError::io(k, format!("opening {path}"), e))?;
        fds.push((k, OwnedFd::from(fd)));
    }
    let worker = std::thread::spawn(move || {
        for (k, fd) in &fds {
            setns(fd, *k)?;
        }
        f()
    });
    worker.join().unwrap_or_else(|_| {
        Err(NsError::sys(
            kinds.first().copied().unwrap_or(Kind::Uts),
            "namespace helper thread panicked",
            Errno::EFAULT,
        ))
    })
}

/// Runs `f` in a new thread that first made new namespaces of `kinds` (`unshare`: only that
/// thread moves), then returns what `f` returned and descriptors of the new namespaces
/// (`/proc/thread-self/ns/KIND`, in `kinds` order), which keep them alive.
///
/// # Errors
/// [`NsError::Sys`] when unshare fails, [`NsError::Io`] when a namespace cannot be opened, and
/// whatever `f` returns.
pub(crate) fn in_fresh_ns<T: Send + 'static>(
    kinds: &[Kind],
    f: impl FnOnce() -> Result<T, NsError> + Send + 'static,
) -> Result<(T, Vec<OwnedFd>), NsError> {
    let kinds = kinds.to_vec();
    let worker = std::thread::spawn(move || {
        let flags = kinds.iter().fold(0, |a, k| a | k.cflag());
        // SAFETY: unshare changes only this helper thread's namespaces (uts, ipc, net, time
        // for children: all per-thread), and the thread ends when `f` is done.
        if unsafe { libc::unshare(flags) } != 0 {
            return Err(NsError::sys(
                kinds.first().copied().unwrap_or(Kind::Uts),
                "unshare",
                Errno::last(),
            ));
        }
        let out = f()?;
        let mut fds = Vec::new();
        for &k in &kinds {
            let name = if k == Kind::Time {
                "time_for_children"
            } else {
                k.name()
            };
            let path = format!("/proc/thread-self/ns/{name}");
            let fd = std::fs::File::open(&path)
                .map_err(|e| NsError::io(k, format!("opening {path}"), e))?;
            fds.push(OwnedFd::from(fd));
        }
        Ok((out, fds))
    });
    worker.join().unwrap_or_else(|_| {
        Err(NsError::sys(
            Kind::Uts,
            "namespace helper thread panicked",
            Errno::EFAULT,
        ))
    })
}

/// Enters namespace `fd` of kind `kind` (the calling thread only, for the per-thread kinds).
///
/// # Errors
/// [`NsError::Sys`].
pub(crate) fn setns(fd: &impl AsRawFd, kind: Kind) -> Result<(), NsError> {
    // SAFETY: setns on a namespace descriptor we hold; it changes only the namespaces of the
    // calling thread (or process, for time), as the caller intends.
    if unsafe { libc::setns(fd.as_raw_fd(), kind.cflag()) } != 0 {
        return Err(NsError::sys(kind, "setns", Errno::last()));
    }
    Ok(())
}
