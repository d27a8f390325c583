//! Cgroup namespaces: a tree whose root unshared its cgroup namespace comes back in a new one
//! rooted at the same cgroups, so `/proc/self/cgroup` inside reads as it did.
//!
//! Dump: the root task's `/proc/PID/cgroup` as criu sees it (full paths) against the same file
//! read from inside the task's cgroup namespace (paths below the namespace's root); the part
//! the inner path does not cover is the namespace's root in that hierarchy, saved as CRIU does:
//! `cgns_prefix` (its length) on the root's set in `cgroup.img`. A task outside its namespace's
//! root (an inner path with `..`) is refused by name.
//!
//! Restore: a helper process moves itself into each saved root (`cgroup.procs`; the hierarchy's
//! root where nothing was saved), unshares its cgroup namespace there and waits; criu keeps a
//! descriptor of that namespace, ends the helper, and enters the namespace around the clone of
//! the root. The membership module then puts each task into its own cgroup as usual.
//! Not handled: `--cgroup-root` moving the namespace's root along with the tree.
// Unsafe code: the helper process between fork and _exit (raw system calls only).
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use criu_images::pb::{CgroupEntry, CoreEntry};
use criu_images::{magic, names};
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork};

use super::{DumpCtx, Kind, NsError, NsOps, Rebuilt, RestoreCtx};

/// The cgroup namespace kind's operations.
pub(crate) static OPS: NsOps = NsOps {
    kind: Kind::Cgroup,
    nested: false,
    dump,
    restore,
};

const K: Kind = Kind::Cgroup;

/// `/proc/PID/cgroup` as controllers → path, read by the calling thread (whose cgroup namespace
/// decides how the paths read).
fn membership(pid: i32) -> Result<HashMap<String, String>, NsError> {
    Ok(super::cgroup::membership(&pid.to_string())?
        .into_iter()
        .collect())
}

/// CRIU's `cgns_prefix`: the length of the part of `outer` that is the namespace's root, given
/// the task's `inner` path (`None` when they are equal: no namespace of its own there).
fn prefix(outer: &str, inner: &str) -> Option<Result<u32, String>> {
    if outer == inner {
        return None;
    }
    let tail = inner.trim_start_matches('/');
    if inner.split('/').any(|c| c == "..") || !outer.ends_with(tail) {
        return Some(Err(format!(
            "its cgroup {outer} is outside its cgroup namespace's root ({inner} inside)"
        )));
    }
    let mut at = outer.len() - tail.len();
    if !tail.is_empty() && outer.as_bytes().get(at.wrapping_sub(1)) != Some(&b'/') {
        return Some(Err(format!(
            "its cgroup {outer} is not below its cgroup namespace's root ({inner} inside)"
        )));
    }
    if at > 1 && outer.as_bytes()[at - 1] == b'/' {
        at -= 1;
    }
    Some(Ok(at as u32))
}

/// Nothing to write of its own: the namespace's roots are the `cgns_prefix` of the root's set
/// in `cgroup.img`, which [`add_prefixes`] sets before that image is written.
fn dump(_ctx: &DumpCtx<'_>) -> Result<(), NsError> {
    Ok(())
}

/// Sets `cgns_prefix` on the root's set (`set_id`) of the tree's cgroup sets `entry` when the
/// root (`pid`, namespaces `root_ns`) has a cgroup namespace other than criu's (`own_ns`).
///
/// # Errors
/// [`NsError::BadImage`] if `set_id` is not in `entry`; [`NsError::Unsupported`] naming the
/// task when its cgroup is outside its namespace's root.
pub(crate) fn add_prefixes(
    pid: i32,
    root_ns: &[(String, u64)],
    own_ns: &[(String, u64)],
    entry: &mut CgroupEntry,
    set_id: Option<u32>,
) -> Result<(), NsError> {
    if super::ino_of(root_ns, K.name()) == super::ino_of(own_ns, K.name()) {
        return Ok(());
    }
    let Some(set_id) = set_id else {
        return Err(NsError::bad(K, names::core(pid as u32), "no cgroup set"));
    };
    let outer = membership(pid)?;
    let inner = super::in_ns_of(pid, &[K], move || membership(pid))?;
    let Some(set) = entry.sets.iter_mut().find(|s| s.id == set_id) else {
        return Err(NsError::bad(
            K,
            names::CGROUP,
            format!("no set {set_id} for the root"),
        ));
    };
    for m in &mut set.ctls {
        let (Some(o), Some(i)) = (outer.get(&m.name), inner.get(&m.name)) else {
            continue;
        };
        match prefix(o, i) {
            None => {}
            Some(Ok(p)) => {
                tracing::info!(
                    controllers = %m.name,
                    root = &o[..p as usize],
                    "cgroup namespace root"
                );
                m.cgns_prefix = Some(p);
            }
            Some(Err(why)) => {
                return Err(NsError::unsupported(K, format!("{pid}: {why}")));
            }
        }
    }
    Ok(())
}

/// The namespace's root in each hierarchy of the root task's set: `cgroup.procs` files here.
fn roots(dir: &Path) -> Result<Vec<CString>, NsError> {
    let d = criu_images::ImageDir::new(dir);
    let tree = d
        .read_pstree()
        .map_err(|e| NsError::image(K, names::PSTREE, e))?;
    let Some(root) = tree.first() else {
        return Err(NsError::bad(K, names::PSTREE, "no tasks"));
    };
    let core: CoreEntry = d
        .read_core(root.pid)
        .map_err(|e| NsError::image(K, names::core(root.pid), e))?;
    let Some(set_id) = core.tc.as_ref().and_then(|tc| tc.cg_set) else {
        return Err(NsError::bad(K, names::core(root.pid), "no cgroup set"));
    };
    let entry: CgroupEntry = criu_images::read_single(dir.join(names::CGROUP), magic::CGROUP)
        .map_err(|e| NsError::image(K, names::CGROUP, e))?;
    let Some(set) = entry.sets.iter().find(|s| s.id == set_id) else {
        return Err(NsError::bad(
            K,
            names::CGROUP,
            format!("no set {set_id} for the root"),
        ));
    };
    let here = super::cgroup_mounts::mounts()?;
    let mut out = Vec::new();
    for m in &set.ctls {
        let at = m.cgns_prefix.unwrap_or(0) as usize;
        let Some(ns_root) = m.path.get(..at) else {
            return Err(NsError::bad(
                K,
                names::CGROUP,
                format!("cgns_prefix {at} longer than {}", m.path),
            ));
        };
        if ns_root.split('/').any(|c| c == "..") {
            return Err(NsError::bad(
                K,
                names::CGROUP,
                format!("cgroup path {ns_root:?}"),
            ));
        }
        let key = super::cgroup_mounts::sorted_key(&m.name);
        let Some(mnt) = here.get(&key) else {
            return Err(NsError::unsupported(
                K,
                format!("cgroup hierarchy {:?} is not mounted here", m.name),
            ));
        };
        let file = mnt
            .join(ns_root.trim_start_matches('/'))
            .join("cgroup.procs");
        out.push(
            CString::new(file.to_string_lossy().into_owned())
                .map_err(|_| NsError::bad(K, names::CGROUP, "a path with a NUL"))?,
        );
    }
    Ok(out)
}

/// What the helper reports: 0 and the index of the file it could not move into, or 1.
const MOVED: u32 = 1;

fn restore(ctx: &RestoreCtx<'_>) -> Result<Rebuilt, NsError> {
    let files = roots(ctx.dir)?;
    let mut p = [0; 2];
    // SAFETY: pipe2 writes two descriptors into our array.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(NsError::sys(K, "pipe", Errno::last()));
    }
    // SAFETY: both descriptors were just made and are ours alone.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) };
    // SAFETY: the child runs only raw system calls on data made before the fork, then waits to
    // be killed or _exits; it never returns into criu's code.
    let child = match unsafe { fork() } {
        Err(e) => return Err(NsError::sys(K, "fork", e)),
        Ok(ForkResult::Child) => {
            let report = |v: [u32; 3]| {
                // SAFETY: writes 12 bytes of a live local into the pipe.
                unsafe { libc::write(w.as_raw_fd(), v.as_ptr().cast(), 12) };
            };
            for (i, f) in files.iter().enumerate() {
                // SAFETY: open/write/close on a NUL-terminated path made before the fork.
                let ok = unsafe {
                    let fd = libc::open(f.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    let ok = fd >= 0 && libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                    let errno = *libc::__errno_location();
                    if fd >= 0 {
                        libc::close(fd);
                    }
                    *libc::__errno_location() = errno;
                    ok
                };
                if !ok {
                    report([0, i as u32, Errno::last_raw() as u32]);
                    // SAFETY: ends the helper without running criu's exit handlers.
                    unsafe { libc::_exit(1) };
                }
            }
            // SAFETY: unshare of this helper's own cgroup namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWCGROUP) } != 0 {
                report([0, u32::MAX, Errno::last_raw() as u32]);
                // SAFETY: ends the forked helper without running criu's exit handlers.
                unsafe { libc::_exit(1) };
            }
            report([MOVED, 0, 0]);
            loop {
                // SAFETY: pause has no arguments; criu kills this helper.
                unsafe { libc::pause() };
            }
        }
        Ok(ForkResult::Parent { child }) => child,
    };
    drop(w);
    let mut v = [0u32; 3];
    // SAFETY: reads at most 12 bytes into a live local.
    let n = unsafe { libc::read(r.as_raw_fd(), v.as_mut_ptr().cast(), 12) };
    let out = if n != 12 {
        Err(NsError::sys(K, "the namespace helper ended", Errno::EPIPE))
    } else if v[0] != MOVED {
        let what = match files.get(v[1] as usize) {
            Some(f) => format!("moving into {}", f.to_string_lossy()),
            None => "unshare(CLONE_NEWCGROUP)".to_string(),
        };
        Err(NsError::sys(K, what, Errno::from_raw(v[2] as i32)))
    } else {
        let path = format!("/proc/{child}/ns/cgroup");
        std::fs::File::open(&path)
            .map(OwnedFd::from)
            .map_err(|e| NsError::io(K, format!("opening {path}"), e))
    };
    let _ = kill(child, Signal::SIGKILL);
    let _ = waitpid(Pid::from_raw(child.as_raw()), None);
    Ok(Rebuilt {
        join: Some(out?),
        ..Rebuilt::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_the_outer_path_the_inner_one_does_not_cover() {
        assert_eq!(prefix("/foo/bar", "/bar"), Some(Ok(4)));
        assert_eq!(prefix("/foo", "/"), Some(Ok(4)));
        assert_eq!(prefix("/", "/"), None);
        assert_eq!(prefix("/a/b/c", "/b/c"), Some(Ok(2)));
        assert!(matches!(prefix("/foo", "/../x"), Some(Err(_))));
        assert!(matches!(prefix("/foo", "/bar"), Some(Err(_))));
        assert!(matches!(prefix("/foobar", "/bar"), Some(Err(_))));
    }
}
