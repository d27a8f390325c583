//! A tree in a user namespace of its own that also has its own mount or network namespace:
//! the user namespace is made first, with its maps, and the tree's other namespaces are made
//! inside it, so that it owns them (the tree, root only inside, may then mount, configure its
//! links and change its host name as before the dump).
//!
//! Before anything else of the restore ([`prepare`]), a helper process forked from criu
//! unshares a user namespace, criu writes its `setgroups`, `uid_map` and `gid_map`, then the
//! helper unshares the tree's mount, network, uts and ipc namespaces (each kind the root had of
//! its own) from inside it. criu keeps descriptors of them all and ends the helper. The kinds'
//! restores then use these instead of making namespaces of their own: criu's main thread
//! enters the mount and network ones ([`super::mnt`], [`super::net`]) and rebuilds them as
//! before, [`super::in_fresh_ns`] enters the uts and ipc ones to fill them, and each task enters
//! the user namespace once it has made its children ([`task_enter`]).
//!
//! Not owned by the user namespace: the pid namespace. The kernel shows a pid namespace made
//! by `unshare` only once its init exists, so the root is cloned into a new one by criu, which
//! owns it; the tasks make their children with their pids (which needs a capability in that
//! owner) before they enter the user namespace. The tree forks as before, but cannot mount a
//! new proc (neither could it make a pid namespace's init again, which CRIU's tree could).
//!
//! The namespaces go away with the last descriptor: if the restore fails before the root
//! exists, dropping the [`Held`] guard is all that is left to do.
// Unsafe code: fork, unshare and pipe I/O of the helper (async-signal-safe calls only), setns
// of the restored tasks.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::errno::Errno;

use super::{Kind, NsError};

const K: Kind = Kind::User;

/// The namespaces made inside the tree's user namespace, by kind, while a restore runs.
static PREMADE: Mutex<Vec<(Kind, OwnedFd)>> = Mutex::new(Vec::new());

/// The user namespace's descriptor the tasks enter (-1: none).
static ROOT_USERNS: AtomicI32 = AtomicI32::new(-1);

/// The ids outside of root inside the user namespace (uid, gid), when mapped.
static NS_ROOT: Mutex<Option<(u32, u32)>> = Mutex::new(None);

/// Makes the calling thread (a helper thread that ends afterwards) act as root of the tree's
/// user namespace: its effective ids become those of root inside, its capabilities kept. The
/// kernel lets only that uid write an ipc namespace's `kernel/*` limits.
///
/// # Errors
/// [`NsError::Sys`].
pub(crate) fn act_as_ns_root() -> Result<(), NsError> {
    let Some((uid, gid)) = *NS_ROOT.lock().unwrap_or_else(|e| e.into_inner()) else {
        return Ok(());
    };
    const SECBIT_NO_SETUID_FIXUP: libc::c_ulong = 1 << 2;
    // SAFETY: prctl and the raw setres[ug]id system calls change the credentials of this
    // thread only (glibc's wrappers would change every thread's); the thread ends after its
    // one job.
    let r = unsafe {
        if libc::prctl(libc::PR_SET_SECUREBITS, SECBIT_NO_SETUID_FIXUP, 0, 0, 0) != 0 {
            -1
        } else if libc::syscall(libc::SYS_setresgid, -1i64, gid as i64, -1i64) != 0 {
            -2
        } else {
            libc::syscall(libc::SYS_setresuid, -1i64, uid as i64, -1i64)
        }
    };
    if r != 0 {
        return Err(NsError::sys(
            K,
            format!("acting as uid {uid} gid {gid} (root inside)"),
            Errno::last(),
        ));
    }
    Ok(())
}

/// The kinds made inside the user namespace, when the root has one of its own.
const INSIDE: [Kind; 4] = [Kind::Mnt, Kind::Net, Kind::Uts, Kind::Ipc];

/// The premade namespaces, for as long as the restore runs; dropped, they are forgotten (and
/// go away unless the tree lives in them).
#[derive(Debug)]
pub(crate) struct Held(());

impl Drop for Held {
    fn drop(&mut self) {
        let old = ROOT_USERNS.swap(-1, Ordering::SeqCst);
        if old >= 0 {
            // SAFETY: the descriptor [`prepare`] leaked into ROOT_USERNS, closed once.
            unsafe { libc::close(old) };
        }
        PREMADE.lock().unwrap_or_else(|e| e.into_inner()).clear();
        *NS_ROOT.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// A copy of the premade namespace of `kind`, if the restore made one inside the tree's user
/// namespace.
pub(crate) fn premade(kind: Kind) -> Option<OwnedFd> {
    let m = PREMADE.lock().unwrap_or_else(|e| e.into_inner());
    let fd = m.iter().find(|(k, _)| *k == kind)?;
    fd.1.try_clone().ok()
}

/// Whether this restore made the tree's namespaces inside its user namespace.
pub(crate) fn active() -> bool {
    ROOT_USERNS.load(Ordering::SeqCst) >= 0
}

/// Adapts kind `kind`'s rebuilt namespace `r` to the premade ones: the user namespace needs no
/// flag and no maps (written already: each task enters it, [`task_enter`]).
pub(crate) fn adopt(kind: Kind, r: &mut super::Rebuilt) {
    if active() && kind == Kind::User {
        r.clone_flags &= !(libc::CLONE_NEWUSER as u64);
        r.after_clone = None;
    }
}

/// In each task of the tree, once it has made its children: enters the tree's user namespace
/// when the restore made it beforehand (the descriptor, inherited from criu, is closed with the
/// task's other unknown ones). Returns 0, or -1 with errno set (a raw result, for the child's
/// stage reporting).
pub(crate) fn task_enter() -> libc::c_long {
    let fd = ROOT_USERNS.load(Ordering::SeqCst);
    if fd < 0 {
        return 0;
    }
    // SAFETY: setns of this task (single-threaded: its threads come later) into the user
    // namespace whose descriptor it inherited from criu.
    unsafe { libc::setns(fd, libc::CLONE_NEWUSER) as libc::c_long }
}

/// Namespace ids in [`Kind::ALL`] order.
type Ids = [Option<u32>; 8];

/// The root's namespace ids (`ids-PID.img`) and the dumping criu's (`root_ids`), in
/// [`Kind::ALL`] order.
fn ids(dir: &Path) -> Result<Option<(Ids, Ids)>, NsError> {
    let d = criu_images::ImageDir::new(dir);
    let img = |e| NsError::image(K, "ids", e);
    let inv = d.read_inventory().map_err(img)?;
    let Some(criu) = inv.root_ids.as_ref().map(super::entry_ids) else {
        return Ok(None);
    };
    let Some(pid) = d.read_pstree().map_err(img)?.first().map(|t| t.pid) else {
        return Ok(None);
    };
    if !d.file(&criu_images::names::ids(pid)).exists() {
        return Ok(None);
    }
    let root = super::entry_ids(&d.read_ids(pid).map_err(img)?);
    Ok(Some((root, criu)))
}

/// When the images' root had a user namespace of its own together with its own mount or
/// network namespace, makes the user namespace with the saved maps and the root's other
/// namespaces inside it (see the module's text); `None` otherwise (the user namespace is then
/// made by the root's clone, [`super::user`]). `join_ns` kinds are not made.
///
/// # Errors
/// [`NsError`]: unreadable images, a map the kernel does not take, a helper that failed (what
/// was made is gone again).
pub(crate) fn prepare(dir: &Path, join_ns: &[String]) -> Result<Option<Held>, NsError> {
    let Some((root, criu)) = ids(dir)? else {
        return Ok(None);
    };
    let own = |k: Kind| {
        let i = Kind::ALL.iter().position(|x| *x == k).unwrap_or(0);
        root[i].is_some_and(|r| criu[i].is_some_and(|c| c != r))
    };
    if !own(Kind::User) || !(own(Kind::Mnt) || own(Kind::Net)) {
        return Ok(None);
    }
    let joined = |k: Kind| {
        join_ns
            .iter()
            .any(|j| j.split_once(':').is_some_and(|(n, _)| n == k.name()))
    };
    let kinds: Vec<Kind> = INSIDE
        .into_iter()
        .filter(|k| own(*k) && !joined(*k))
        .collect();
    let i = Kind::ALL.iter().position(|x| *x == Kind::User).unwrap_or(6);
    let user_id = root[i].unwrap_or(0);
    let maps = super::user::maps_for(dir, user_id)?;
    *NS_ROOT.lock().unwrap_or_else(|e| e.into_inner()) = maps.root_ids();
    let fds = make(&kinds, &maps)?;
    tracing::info!(
        kinds = ?kinds.iter().map(|k| k.name()).collect::<Vec<_>>(),
        "made the tree's namespaces inside its user namespace"
    );
    let mut it = fds.into_iter();
    let Some(user) = it.next() else {
        return Err(NsError::sys(K, "no user namespace made", Errno::EINVAL));
    };
    {
        let mut m = PREMADE.lock().unwrap_or_else(|e| e.into_inner());
        m.clear();
        m.extend(kinds.iter().copied().zip(it));
    }
    let held = Held(());
    // The tasks inherit this descriptor; [`Held`]'s drop closes criu's.
    let raw = std::os::fd::IntoRawFd::into_raw_fd(user);
    ROOT_USERNS.store(raw, Ordering::SeqCst);
    Ok(Some(held))
}

/// Runs the helper: a user namespace with `maps` written by criu, then `kinds` unshared
/// inside it. Returns the user namespace's descriptor, then one per kind in order.
fn make(kinds: &[Kind], maps: &super::user::Maps) -> Result<Vec<OwnedFd>, NsError> {
    let flags = kinds.iter().fold(0, |a, k| a | k.cflag());
    let (to_child, from_child) = (pipe()?, pipe()?);
    // SAFETY: after fork the child only makes async-signal-safe calls (unshare, read, write,
    // _exit) on descriptors it inherited, then ends; the parent goes on as before.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(NsError::sys(
            K,
            "forking the namespace helper",
            Errno::last(),
        ));
    }
    if pid == 0 {
        // SAFETY: as above: raw system calls only, on the inherited pipe ends.
        unsafe {
            let (rd, wr) = (to_child.0.as_raw_fd(), from_child.1.as_raw_fd());
            // Our copies of criu's ends: the last read ends when criu closes its own.
            libc::close(to_child.1.as_raw_fd());
            libc::close(from_child.0.as_raw_fd());
            let mut b = [0u8; 1];
            let step = |f: libc::c_int| -> bool {
                libc::unshare(f) == 0 && libc::write(wr, b"k".as_ptr().cast(), 1) == 1
            };
            if !step(libc::CLONE_NEWUSER) || libc::read(rd, b.as_mut_ptr().cast(), 1) != 1 {
                libc::_exit(1);
            }
            if !step(flags) {
                libc::_exit(2);
            }
            // Until criu closes its end.
            libc::read(rd, b.as_mut_ptr().cast(), 1);
            libc::_exit(0);
        }
    }
    let (to_child_w, from_child_r) = (to_child.1, from_child.0);
    drop(to_child.0);
    drop(from_child.1);
    let out = talk(pid, kinds, maps, &to_child_w, &from_child_r);
    drop(to_child_w);
    if out.is_err() {
        // SAFETY: kill of our own helper child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    out
}

fn talk(
    pid: i32,
    kinds: &[Kind],
    maps: &super::user::Maps,
    w: &OwnedFd,
    r: &OwnedFd,
) -> Result<Vec<OwnedFd>, NsError> {
    let wait = |what: &str| {
        let mut b = [0u8; 1];
        // SAFETY: a one-byte read into a live local from our pipe end.
        let n = unsafe { libc::read(r.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
        if n != 1 {
            return Err(NsError::sys(
                K,
                format!("the namespace helper failed to {what}"),
                Errno::EPERM,
            ));
        }
        Ok(())
    };
    wait("unshare a user namespace")?;
    maps.write(pid)?;
    let open = |name: &str| {
        let path = format!("/proc/{pid}/ns/{name}");
        std::fs::File::open(&path)
            .map(OwnedFd::from)
            .map_err(|e| NsError::io(K, format!("opening {path}"), e))
    };
    let mut out = vec![open("user")?];
    // SAFETY: a one-byte write from a static into our pipe end.
    if unsafe { libc::write(w.as_raw_fd(), b"g".as_ptr().cast(), 1) } != 1 {
        return Err(NsError::sys(
            K,
            "waking the namespace helper",
            Errno::last(),
        ));
    }
    wait("unshare the tree's namespaces")?;
    for k in kinds {
        out.push(open(k.name())?);
    }
    Ok(out)
}

fn pipe() -> Result<(OwnedFd, OwnedFd), NsError> {
    let mut p = [0; 2];
    // SAFETY: pipe2 writes two new descriptors into our array.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(NsError::sys(K, "pipe", Errno::last()));
    }
    // SAFETY: both are new descriptors owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) })
}
