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
fn ino_of(ns: &[(String, u64)], name: &str) -> Option<u64> {
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
) -> Result<(), NsError> {
    // Membership first: it reads the tasks by the pids criu sees, which a pid namespace's
    // dump then rewrites.
    cgroup::dump(dir)?;
    let ids = ns_ids(root_ns, own_ns);
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
        (ops.dump)(&DumpCtx { pid, id, dir })?;
    }
    Ok(())
}

/// The namespaces a restore rebuilds, made before the root task exists.
#[derive(Default)]
pub(crate) struct Prepared {
    /// One per rebuilt namespace, in [`Kind::ALL`] order.
    rebuilt: Vec<(Kind, Rebuilt)>,
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
pub(crate) fn prepare_restore(dir: &Path, join_ns: &[String]) -> Result<Prepared, NsError> {
    // A network namespace is joined by criu's main thread ([`net::NetNs::prepare_for`]).
    let joins = join_ns
        .iter()
        .map(|j| parse_join(j))
        .filter(|j| !matches!(j, Ok((Kind::Net, _))))
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
    let mut out = Prepared::default();
    for (kind, fd) in joins {
        tracing::info!(kind = kind.name(), "joining a namespace (--join-ns)");
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
        let mut r = (ops.restore)(&RestoreCtx { id, dir })?;
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
            return parse_join(j).map(|(_, fd)| Some(fd));
        }
    }
    Ok(None)
}

/// `--join-ns NS:{PID|FILE}[,EXTRA]`: the kind and a descriptor of the namespace. Kinds this
/// criu joins: uts, ipc, time, cgroup, net; others are refused by name.
///
/// # Errors
/// [`NsError::Unsupported`] for another kind or extra options, [`NsError::Io`] when the
/// namespace cannot be opened or is not of that kind.
fn parse_join(spec: &str) -> Result<(Kind, OwnedFd), NsError> {
    let bad =
        |kind: Kind, why: String| NsError::unsupported(kind, format!("--join-ns {spec}: {why}"));
    let Some((name, rest)) = spec.split_once(':') else {
        return Err(bad(Kind::Uts, "expected NS:PID or NS:FILE".into()));
    };
    let (target, extra) = rest
        .split_once(',')
        .map_or((rest, None), |(t, e)| (t, Some(e)));
    let kind = match name {
        "uts" => Kind::Uts,
        "ipc" => Kind::Ipc,
        "time" => Kind::Time,
        "cgroup" => Kind::Cgroup,
        "net" => Kind::Net,
        "user" | "pid" | "mnt" => {
            let k = Kind::ALL
                .into_iter()
                .find(|k| k.name() == name)
                .unwrap_or(Kind::Uts);
            return Err(bad(
                k,
                format!("joining a {name} namespace is not supported"),
            ));
        }
        _ => return Err(bad(Kind::Uts, format!("unknown namespace kind {name:?}"))),
    };
    if extra.is_some() {
        return Err(bad(kind, "extra options are for user namespaces".into()));
    }
    let path = if !target.is_empty() && target.bytes().all(|b| b.is_ascii_digit()) {
        format!("/proc/{target}/ns/{name}")
    } else {
        target.to_string()
    };
    let f =
        std::fs::File::open(&path).map_err(|e| NsError::io(kind, format!("opening {path}"), e))?;
    // The descriptor must be a namespace of that kind (NS_GET_NSTYPE).
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    // SAFETY: an ioctl on a descriptor we own, with no argument.
    let t = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&f), NS_GET_NSTYPE) };
    if t != kind.cflag() {
        return Err(bad(kind, format!("{path} is not a {name} namespace")));
    }
    Ok((kind, OwnedFd::from(f)))
}

impl Prepared {
    /// Whether the tree gets a pid namespace of its own (its pids are free there).
    pub(crate) fn new_pid_ns(&self) -> bool {
        self.clone_flags() & libc::CLONE_NEWPID as u64 != 0
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
