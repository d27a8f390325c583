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

pub(crate) mod cgroup;
pub(crate) mod cgroup_mounts;
pub(crate) mod cgroup_ns;
pub(crate) mod cgroup_proplists;
pub(crate) mod cgroup_props;
pub(crate) mod ipc;
pub mod mnt;
pub mod mounts;
pub(crate) mod mqueue;
pub mod net;
pub(crate) mod pid;
pub(crate) mod pid_levels;
pub(crate) mod time;
pub(crate) mod user;
pub(crate) mod user_owned;
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
    /// Something this criu does not dump or restore, named (`what` names the kind).
    #[error("unsupported: {what}")]
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
    /// `--external` (a kind's namespace named external: only its key is saved).
    pub external: &'a [crate::options::External],
}

/// A namespace the root enters itself (`setns`) before it does anything else: those that a
/// multi-threaded engine cannot enter for it (`--join-ns mnt`, `--join-ns user[,UID,GID]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JoinNs {
    /// The engine's descriptor of the namespace (inherited by the root, closed once entered).
    pub fd: i32,
    /// Its `CLONE_NEW*` type.
    pub nstype: i32,
    /// Ids taken right after entering a user namespace (`setresgid`, `setresuid`).
    pub ids: Option<(u32, u32)>,
}

/// What a kind's restore gets: one namespace to rebuild.
pub(crate) struct RestoreCtx<'a> {
    /// The namespace's id in the images.
    pub id: u32,
    /// The images directory.
    pub dir: &'a Path,
    /// `--inherit-fd fd[N]:KEY`: descriptors of external namespaces.
    pub inherit_fds: &'a [crate::options::InheritFd],
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
pub(crate) static OPS: &[&NsOps] = &[
    &pid::OPS,
    &uts::OPS,
    &ipc::OPS,
    &time::OPS,
    &user::OPS,
    &cgroup_ns::OPS,
];

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
    // Made inside the tree's user namespace already ([`user_owned`]): entered instead.
    let premade: Option<Vec<OwnedFd>> = kinds.iter().map(|k| user_owned::premade(*k)).collect();
    let worker = std::thread::spawn(move || {
        if let Some(fds) = &premade {
            for (fd, k) in fds.iter().zip(&kinds) {
                setns(fd, *k)?;
            }
            user_owned::act_as_ns_root()?;
        }
        let flags = if premade.is_some() {
            0
        } else {
            kinds.iter().fold(0, |a, k| a | k.cflag())
        };
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

/// The inode of namespace `kind` in a list read by `dump::ids::ns_inodes`.
pub(crate) fn ino_of(ns: &[(String, u64)], name: &str) -> Option<u64> {
    ns.iter().find(|(k, _)| k == name).map(|e| e.1)
}

/// Checks that task `pid` (namespaces `ns`) lives where the restore can bring it back: each
/// of its namespaces is the root's (`root_ns`) unless the kind takes several, a namespace of the
/// root that is not criu's (`own_ns`) is of a kind some module dumps, and it did not make a
/// time namespace for its children.
///
/// # Errors
/// [`NsError::Unsupported`] naming the task and the kind.
pub(crate) fn check_task(
    pid: i32,
    ns: &[(String, u64)],
    own_ns: &[(String, u64)],
    root_ns: &[(String, u64)],
) -> Result<(), NsError> {
    let time = ino_of(ns, "time");
    let for_children = ino_of(ns, "time_for_children");
    if for_children.is_some() && for_children != time {
        return Err(NsError::unsupported(
            Kind::Time,
            format!(
                "{pid} made a time namespace for its children (unshare(CLONE_NEWTIME)); \
                 nested time namespaces are not restored"
            ),
        ));
    }
    for kind in Kind::ALL {
        // The tree's mount and network namespaces are dumped by [`mnt`] and [`net`] directly.
        if matches!(kind, Kind::Mnt | Kind::Net) {
            continue;
        }
        let Some(mine) = ino_of(ns, kind.name()) else {
            continue;
        };
        let ops = ops(kind);
        let root = ino_of(root_ns, kind.name());
        if root != Some(mine) && !ops.is_some_and(|o| o.nested) {
            return Err(NsError::unsupported(
                kind,
                format!(
                    "{pid} is in a {} namespace other than the root's (nested {} namespaces \
                     are not restored)",
                    kind.name(),
                    kind.name()
                ),
            ));
        }
        if ino_of(own_ns, kind.name()) != Some(mine) && ops.is_none() {
            return Err(NsError::unsupported(
                kind,
                format!(
                    "{pid} is in a {} namespace of its own ({} namespaces are not dumped yet)",
                    kind.name(),
                    kind.name()
                ),
            ));
        }
    }
    Ok(())
}

/// The namespace ids of a task in [`Kind::ALL`] order (`None` for a kind the kernel does not
/// show): criu's own namespaces are 1..=8 by kind, the others numbered from 9 on in kind order,
/// as CRIU numbers them (criu's first, then the root's as they are met).
pub(crate) fn ns_ids(ns: &[(String, u64)], own_ns: &[(String, u64)]) -> [Option<u32>; 8] {
    let mut out = [None; 8];
    let mut next = Kind::ALL.len() as u32 + 1;
    for (i, kind) in Kind::ALL.into_iter().enumerate() {
        let Some(mine) = ino_of(ns, kind.name()) else {
            continue;
        };
        if ino_of(own_ns, kind.name()) == Some(mine) {
            out[i] = Some(i as u32 + 1);
        } else {
            out[i] = Some(next);
            next += 1;
        }
    }
    out
}

/// Dumps every namespace of the root (`pid`, namespaces `root_ns`) that is not criu's
/// (`own_ns`), through its kind's module.
///
/// # Errors
/// The kind's [`NsError`]; [`NsError::Unsupported`] for a kind no module dumps.
pub(crate) fn dump_all(
    pid: i32,
    root_ns: &[(String, u64)],
    own_ns: &[(String, u64)],
    dir: &Path,
    external: &[crate::options::External],
) -> Result<(), NsError> {
    let ids = ns_ids(root_ns, own_ns);
    // The root in criu's pid namespace: tasks below it are listed by [`pid_levels`].
    if ids[0] == Some(1) {
        pid::dump_nested(dir)?;
    }
    for (i, kind) in Kind::ALL.into_iter().enumerate() {
        let Some(id) = ids[i] else { continue };
        // Criu's own, or dumped by [`mnt`] and [`net`] directly.
        if id as usize == i + 1 || matches!(kind, Kind::Mnt | Kind::Net) {
            continue;
        }
        // The tree's mount and network namespaces are dumped by [`mnt`] and [`net`] directly.
        if matches!(kind, Kind::Mnt | Kind::Net) {
            continue;
        }
        let Some(ops) = ops(kind) else {
            return Err(NsError::unsupported(
                kind,
                format!("{pid} is in a {} namespace of its own", kind.name()),
            ));
        };
        tracing::info!(pid, id, kind = kind.name(), "dumping a namespace");
        (ops.dump)(&DumpCtx {
            pid,
            id,
            dir,
            external,
        })?;
    }
    Ok(())
}

/// The namespaces a restore rebuilds, made before the root task exists.
#[derive(Default)]
pub(crate) struct Prepared {
    /// One per rebuilt namespace, in [`Kind::ALL`] order.
    rebuilt: Vec<(Kind, Rebuilt)>,
    /// Namespaces the root enters itself (`--join-ns mnt|user`), with the ids taken in a user
    /// namespace.
    root_join: Vec<Join>,
    /// Tasks in pid namespaces below the root's: their pids at every level.
    levels: pid_levels::Nested,
}

/// The kind ids of a `TaskKobjIdsEntry` in [`Kind::ALL`] order.
fn entry_ids(e: &criu_images::pb::TaskKobjIdsEntry) -> [Option<u32>; 8] {
    [
        e.pid_ns_id,
        e.net_ns_id,
        e.ipc_ns_id,
        e.uts_ns_id,
        e.time_ns_id,
        e.mnt_ns_id,
        e.user_ns_id,
        e.cgroup_ns_id,
    ]
}

/// Reads which namespaces the images' tree lives in (the inventory's `root_ids` are the dumping
/// criu's, each task's `ids-PID.img` its own) and rebuilds those of the root that were not the
/// dumping criu's, each through its kind's module. Nothing of the tree runs yet.
///
/// # Errors
/// [`NsError::Unsupported`] for a task in a namespace other than the root's of a kind that does
/// not take several, or a kind no module restores; [`NsError::Image`] for unreadable images;
/// the kind's error when a namespace cannot be rebuilt (what was made before is dropped).
pub(crate) fn prepare_restore(
    dir: &Path,
    join_ns: &[String],
    inherit_fds: &[crate::options::InheritFd],
) -> Result<Prepared, NsError> {
    // A network namespace is joined by criu's main thread ([`net::NetNs::prepare_for`]).
    let joins = join_ns
        .iter()
        .map(|j| parse_join(j))
        .filter(|j| !matches!(j, Ok((Kind::Net, _, _))))
        .collect::<Result<Vec<_>, _>>()?;
    let d = criu_images::ImageDir::new(dir);
    let file = criu_images::names::INVENTORY;
    let inv = d
        .read_inventory()
        .map_err(|e| NsError::image(Kind::Pid, file, e))?;
    let criu_ids = inv.root_ids.as_ref().map(entry_ids).unwrap_or_default();
    let tree = d
        .read_pstree()
        .map_err(|e| NsError::image(Kind::Pid, criu_images::names::PSTREE, e))?;
    let mut root_ids: Option<[Option<u32>; 8]> = None;
    for t in &tree {
        let name = criu_images::names::ids(t.pid);
        let path = d.file(&name);
        // Zombies have no ids image.
        if !path.exists() {
            continue;
        }
        let ids = entry_ids(
            &d.read_ids(t.pid)
                .map_err(|e| NsError::image(Kind::Pid, name, e))?,
        );
        let Some(root) = root_ids else {
            root_ids = Some(ids);
            continue;
        };
        for (i, kind) in Kind::ALL.into_iter().enumerate() {
            if ids[i] != root[i] && !ops(kind).is_some_and(|o| o.nested) {
                return Err(NsError::unsupported(
                    kind,
                    format!(
                        "pid {} is in a {} namespace other than the root's (nested {} \
                         namespaces are not restored)",
                        t.pid,
                        kind.name(),
                        kind.name()
                    ),
                ));
            }
        }
    }
    let mut out = Prepared {
        levels: pid_levels::read(dir)?,
        ..Prepared::default()
    };
    for (kind, fd, ids) in joins {
        tracing::info!(kind = kind.name(), "joining a namespace (--join-ns)");
        if kind == Kind::Pid && tree.first().is_some_and(|t| t.pid == 1) {
            return Err(NsError::unsupported(
                kind,
                "--join-ns pid: the tree's root was the init (pid 1) of its pid namespace, and \
                 an existing namespace cannot be given its init again"
                    .to_string(),
            ));
        }
        let own_ns = root_ids
            .zip(Kind::ALL.iter().position(|k| *k == kind))
            .is_some_and(|(r, i)| r[i].is_some_and(|id| criu_ids[i].is_some_and(|c| c != id)));
        if kind == Kind::Mnt && own_ns {
            return Err(NsError::unsupported(
                kind,
                "--join-ns mnt: the tree has a mount namespace of its own in the images, which \
                 is rebuilt instead"
                    .to_string(),
            ));
        }
        // Mount and user namespaces are entered by the root itself (a process with threads,
        // as criu may be, cannot enter them); the others by the engine around the root's clone.
        if matches!(kind, Kind::Mnt | Kind::User) {
            out.root_join.push((kind, fd, ids));
            out.rebuilt.push((kind, Rebuilt::default()));
            continue;
        }
        out.rebuilt.push((
            kind,
            Rebuilt {
                join: Some(fd),
                ..Rebuilt::default()
            },
        ));
    }
    let Some(root) = root_ids else {
        return Ok(out);
    };
    for (i, kind) in Kind::ALL.into_iter().enumerate() {
        let Some(id) = root[i] else { continue };
        // Joined instead.
        if out.rebuilt.iter().any(|(k, _)| *k == kind) {
            continue;
        }
        // Images without root ids, or the namespace the dumping criu was in; the mount and
        // network namespaces are rebuilt by [`mnt`] and [`net`] directly (restore/mod.rs).
        if criu_ids[i].is_none_or(|c| c == id) || matches!(kind, Kind::Mnt | Kind::Net) {
            continue;
        }
        let Some(ops) = ops(kind) else {
            return Err(NsError::unsupported(
                kind,
                format!(
                    "the tree's root is in a {} namespace of its own ({}), which this criu \
                     does not restore",
                    kind.name(),
                    id
                ),
            ));
        };
        tracing::info!(id, kind = kind.name(), "rebuilding a namespace");
        let mut r = (ops.restore)(&RestoreCtx {
            id,
            dir,
            inherit_fds,
        })?;
        // In a user namespace of its own the uts namespace is the one the root is cloned
        // with (a copy of the rebuilt one, names and all), so that the new user namespace
        // owns it and the tree may change its names.
        if kind == Kind::Uts
            && !user_owned::active()
            && root[6].is_some_and(|u| criu_ids[6].is_some_and(|c| c != u))
        {
            r.clone_flags |= libc::CLONE_NEWUTS as u64;
        }
        user_owned::adopt(kind, &mut r);
        out.rebuilt.push((kind, r));
    }
    Ok(out)
}

/// The namespace of kind `name` that `--join-ns` options `join_ns` name, if any.
///
/// # Errors
/// As [`parse_join`].
pub(crate) fn join_fd(join_ns: &[String], name: &str) -> Result<Option<OwnedFd>, NsError> {
    for j in join_ns {
        if j.split_once(':').is_some_and(|(k, _)| k == name) {
            return parse_join(j).map(|(_, fd, _)| Some(fd));
        }
    }
    Ok(None)
}

/// A namespace given with `--join-ns`: its kind, a descriptor of it, and for a user namespace
/// the ids taken in it.
type Join = (Kind, OwnedFd, Option<(u32, u32)>);

/// `--join-ns NS:{PID|FILE}[,EXTRA]`: the kind, a descriptor of the namespace and, for a user
/// namespace, the ids taken in it (`EXTRA` is `UID[,GID]`; as CRIU, criu's own by default).
/// Kinds this criu joins: uts, ipc, time, cgroup, net, pid, mnt, user.
///
/// # Errors
/// [`NsError::Unsupported`] for another kind or extra options for a kind other than user,
/// [`NsError::Io`] when the namespace cannot be opened or is not of that kind.
fn parse_join(spec: &str) -> Result<Join, NsError> {
    let bad =
        |kind: Kind, why: String| NsError::unsupported(kind, format!("--join-ns {spec}: {why}"));
    let Some((name, rest)) = spec.split_once(':') else {
        return Err(bad(Kind::Uts, "expected NS:PID or NS:FILE".into()));
    };
    let (target, extra) = rest
        .split_once(',')
        .map_or((rest, None), |(t, e)| (t, Some(e)));
    let Some(kind) = Kind::ALL.into_iter().find(|k| k.name() == name) else {
        return Err(bad(Kind::Uts, format!("unknown namespace kind {name:?}")));
    };
    let ids = match extra {
        None => None,
        Some(_) if kind != Kind::User => {
            return Err(bad(kind, "extra options are for user namespaces".into()));
        }
        Some(e) => {
            let (u, g) = e.split_once(',').map_or((e, None), |(u, g)| (u, Some(g)));
            let id = |w: &str, own: u32| -> Result<u32, NsError> {
                if w.is_empty() {
                    return Ok(own);
                }
                w.parse::<u32>()
                    .ok()
                    .filter(|&v| v <= 65535)
                    .ok_or_else(|| bad(kind, format!("{w:?} is not an id (0..=65535)")))
            };
            // SAFETY: getuid/getgid have no preconditions.
            let (own_u, own_g) = unsafe { (libc::getuid(), libc::getgid()) };
            Some((id(u, own_u)?, id(g.unwrap_or(""), own_g)?))
        }
    };
    let path = if !target.is_empty() && target.bytes().all(|b| b.is_ascii_digit()) {
        format!("/proc/{target}/ns/{name}")
    } else {
        target.to_string()
    };
    let f =
        std::fs::File::open(&path).map_err(|e| NsError::io(kind, format!("opening {path}"), e))?;
    if ns_type(&f) != kind.cflag() {
        return Err(bad(kind, format!("{path} is not a {name} namespace")));
    }
    Ok((kind, OwnedFd::from(f), ids))
}

/// Whether namespace descriptor `fd` is criu's own namespace `name`.
fn same_ns(fd: &OwnedFd, name: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let theirs = fd
        .try_clone()
        .ok()
        .and_then(|f| std::fs::File::from(f).metadata().ok())
        .map(|m| m.ino());
    let mine = std::fs::metadata(format!("/proc/self/ns/{name}"))
        .ok()
        .map(|m| m.ino());
    theirs.is_some() && theirs == mine
}

/// The `CLONE_NEW*` type of namespace descriptor `f` (`NS_GET_NSTYPE`), -1 if it is none.
fn ns_type(f: &impl AsRawFd) -> i32 {
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    // SAFETY: an ioctl on a descriptor the caller holds, with no argument.
    unsafe { libc::ioctl(f.as_raw_fd(), NS_GET_NSTYPE) }
}

/// A copy of criu's descriptor `fd` (given with `--inherit-fd`), which must be a namespace of
/// kind `kind`.
///
/// # Errors
/// [`NsError::Sys`] when it cannot be duplicated, [`NsError::Unsupported`] when it is not a
/// namespace of that kind.
pub(crate) fn ns_fd_of(kind: Kind, fd: i32) -> Result<OwnedFd, NsError> {
    // SAFETY: duplicates a descriptor the caller passed to criu; the copy is ours alone.
    let d = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if d < 0 {
        return Err(NsError::sys(
            kind,
            format!("duplicating inherited descriptor {fd}"),
            Errno::last(),
        ));
    }
    // SAFETY: d is a new descriptor owned by nothing else.
    let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(d) };
    if ns_type(&owned) != kind.cflag() {
        return Err(NsError::unsupported(
            kind,
            format!(
                "inherited descriptor {fd} is not a {} namespace",
                kind.name()
            ),
        ));
    }
    Ok(owned)
}

impl Prepared {
    /// Whether the tree gets a pid namespace other than criu's: a new one, or one it joins
    /// (`--join-ns pid`, an external one); its pids are not criu's to check.
    pub(crate) fn new_pid_ns(&self) -> bool {
        self.rebuilt.iter().any(|(k, _)| *k == Kind::Pid)
    }

    /// Tasks in pid namespaces below the root's: the pid in the root's namespace → the pids
    /// from there down.
    pub(crate) fn levels(&self) -> &pid_levels::Nested {
        &self.levels
    }

    /// The namespaces the root enters itself, mount before user.
    pub(crate) fn root_joins(&self) -> Vec<JoinNs> {
        let mut v: Vec<_> = self
            .root_join
            .iter()
            .map(|(k, fd, ids)| JoinNs {
                // criu's own user namespace cannot be entered again (as CRIU, only the ids
                // are taken).
                fd: if *k == Kind::User && same_ns(fd, "user") {
                    -1
                } else {
                    fd.as_raw_fd()
                },
                nstype: k.cflag(),
                ids: *ids,
            })
            .collect();
        v.sort_by_key(|j| j.nstype == libc::CLONE_NEWUSER);
        v
    }

    /// The engine's view of the tree's pids once the root (`root` as the engine sees it) exists.
    pub(crate) fn pid_map(&self, root: i32) -> pid::PidMap {
        if self.new_pid_ns() {
            pid::PidMap::under(root)
        } else {
            pid::PidMap::identity()
        }
    }

    /// Whether the root gets any namespace rebuilt here (cloned with, or joined before the
    /// clone), CRIU's non-zero `root_ns_mask` short of the mount and network namespaces.
    pub(crate) fn any(&self) -> bool {
        !self.rebuilt.is_empty()
    }

    /// The `CLONE_NEW*` flags the root is cloned with.
    pub(crate) fn clone_flags(&self) -> u64 {
        self.rebuilt.iter().fold(0, |a, (_, r)| a | r.clone_flags)
    }

    /// Enters the rebuilt namespaces the root inherits; the guard returns the engine to its own
    /// when dropped (right after the clone).
    ///
    /// # Errors
    /// [`NsError::Io`], [`NsError::Sys`] (what was entered is left again).
    pub(crate) fn enter(&self) -> Result<Entered, NsError> {
        let mut back = Entered { old: Vec::new() };
        for (kind, r) in &self.rebuilt {
            let Some(fd) = &r.join else { continue };
            let name = if *kind == Kind::Time {
                "time_for_children"
            } else {
                kind.name()
            };
            let path = format!("/proc/thread-self/ns/{name}");
            let old = std::fs::File::open(&path)
                .map_err(|e| NsError::io(*kind, format!("opening {path}"), e))?;
            setns(fd, *kind)?;
            back.old.push((*kind, OwnedFd::from(old)));
        }
        Ok(back)
    }

    /// Runs the steps that wait for the root to exist (`root` as criu sees it).
    ///
    /// # Errors
    /// The kind's error.
    pub(crate) fn after_clone(&mut self, root: i32) -> Result<(), NsError> {
        // The user namespace's maps first: the other steps may act as ids inside it.
        self.rebuilt.sort_by_key(|(k, _)| *k != Kind::User);
        for (_, r) in &mut self.rebuilt {
            if let Some(f) = r.after_clone.take() {
                f(root)?;
            }
        }
        Ok(())
    }
}

/// The engine inside rebuilt namespaces; back in its own on drop.
pub(crate) struct Entered {
    old: Vec<(Kind, OwnedFd)>,
}

impl Drop for Entered {
    fn drop(&mut self) {
        for (kind, fd) in self.old.drain(..).rev() {
            if let Err(e) = setns(&fd, kind) {
                tracing::error!(kind = kind.name(), "returning to criu's namespace: {e}");
            }
        }
    }
}
