//! Ids of the kernel objects a task holds: its mm, fd table, fs and signal handlers (shared ones
//! found with kcmp) and its namespaces (numbered against criu's own), as `ids-PID.img` and the
//! inventory's root ids record them, and the time namespace's clocks (`timens-0.img`).
//! Which namespaces a task may be in is [`crate::namespaces`]'s to say.
// Unsafe code: a forked helper waits in pause() until it is killed.
#![allow(unsafe_code)]

use criu_images::pb::{TaskKobjIdsEntry, TimensEntry, Timespec};

use super::error::DumpError;

/// Namespace kinds in the order CRIU numbers them in `ids`.
pub(super) const NS_KINDS: [&str; 8] =
    ["pid", "net", "ipc", "uts", "time", "mnt", "user", "cgroup"];

/// The namespace a task gives the children it creates from now on, where `unshare` can make it
/// differ from its own (`/proc/PID/ns/time_for_children` after `unshare(CLONE_NEWTIME)`).
const TIME_FOR_CHILDREN: &str = "time_for_children";

/// The inodes of a task's namespaces ([`NS_KINDS`], then [`TIME_FOR_CHILDREN`]), each kind the
/// kernel shows; `pid` is a pid or `self`.
pub(super) fn ns_inodes(pid: &str) -> Vec<(String, u64)> {
    use std::os::unix::fs::MetadataExt;
    NS_KINDS
        .iter()
        .chain(&[TIME_FOR_CHILDREN])
        .filter_map(|k| {
            let md = std::fs::metadata(format!("/proc/{pid}/ns/{k}")).ok()?;
            Some(((*k).to_string(), md.ino()))
        })
        .collect()
}

/// Refuses a process whose namespaces the dump cannot bring back: the root in a namespace of
/// its own of a kind no module dumps, any other task in a namespace other than the root's (of a
/// kind whose module does not take several), and a task that made a time namespace for its
/// children (`unshare(CLONE_NEWTIME)`): the children it creates after a restore would come back
/// in the wrong one, silently. `root_ns` is the root's (the root's own check passes it its own).
///
/// # Errors
/// [`DumpError::Namespace`] with a refusal naming the task and the kind.
pub(super) fn refuse_own_namespaces(
    pid: i32,
    ns: &[(String, u64)],
    own_ns: &[(String, u64)],
    root_ns: &[(String, u64)],
) -> Result<(), DumpError> {
    crate::namespaces::check_task(pid, ns, own_ns, root_ns).map_err(DumpError::from)
}

/// Numbers the mm, fd table, fs and signal handlers of each process from 2 on (criu's own are
/// 1), giving the same number to processes that share one (kcmp).
///
/// kcmp also orders objects (consistently for a boot), so each kind keeps its representatives
/// sorted and a new process is placed by binary search: a few calls each instead of one per
/// process seen (a 50-process tree took 4,900 kcmp calls, each a trip into the kernel).
#[derive(Default)]
pub(super) struct KobjIds {
    /// For each kind (vm, files, fs, sighand): `(representative pid, id)` in kcmp order.
    seen: [Vec<(i32, u32)>; 4],
    next: [u32; 4],
    /// Kinds kcmp gave no order for once: those are searched one by one from then on.
    linear: [bool; 4],
}

/// kcmp of `kind` between object `ia` of `a` and `ib` of `b` (the indexes are descriptor
/// numbers for `KCMP_FILE`, unused for the per-task kinds): `Some(Equal)` when they are one
/// object, the kernel's order otherwise, `None` when it cannot tell.
pub(crate) fn kcmp(
    a: i32,
    b: i32,
    kind: libc::c_long,
    ia: i32,
    ib: i32,
) -> Option<std::cmp::Ordering> {
    // SAFETY: kcmp compares kernel objects by ids and touches no memory of ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            a as libc::c_long,
            b as libc::c_long,
            kind,
            ia as libc::c_long,
            ib as libc::c_long,
        )
    };
    match r {
        0 => Some(std::cmp::Ordering::Equal),
        1 => Some(std::cmp::Ordering::Less),
        2 => Some(std::cmp::Ordering::Greater),
        _ => None,
    }
}

impl KobjIds {
    pub(super) fn assign(&mut self, pid: i32, ids: &mut TaskKobjIdsEntry) {
        // KCMP_VM, KCMP_FILES, KCMP_FS, KCMP_SIGHAND.
        const KINDS: [libc::c_long; 4] = [1, 2, 3, 4];
        let mut got = [0u32; 4];
        for (i, kind) in KINDS.into_iter().enumerate() {
            let seen = &mut self.seen[i];
            let mut at = None;
            if !self.linear[i] {
                let mut unordered = false;
                let found = seen.binary_search_by(|&(rep, _)| {
                    // The order of `rep` against `pid`, as binary_search_by wants it.
                    kcmp(rep, pid, kind, 0, 0).unwrap_or_else(|| {
                        unordered = true;
                        std::cmp::Ordering::Less
                    })
                });
                if unordered {
                    self.linear[i] = true;
                } else {
                    at = Some(found.map(|k| seen[k].1));
                }
            }
            // Without an order (an error, or none given), compare with each one.
            let at = at.unwrap_or_else(|| {
                match seen.iter().find(|&&(rep, _)| {
                    kcmp(pid, rep, kind, 0, 0) == Some(std::cmp::Ordering::Equal)
                }) {
                    Some(&(_, id)) => Ok(id),
                    None => Err(seen.len()),
                }
            });
            got[i] = match at {
                Ok(id) => id,
                Err(k) => {
                    let id = self.next[i].max(2);
                    self.next[i] = id + 1;
                    seen.insert(k, (pid, id));
                    id
                }
            };
        }
        ids.vm_id = got[0];
        ids.files_id = got[1];
        ids.fs_id = got[2];
        ids.sighand_id = got[3];
    }
}

/// Ids of a task's kernel objects: its own mm/files/fs/sighand get `own`, namespaces are
/// numbered as [`crate::namespaces::ns_ids`] does (criu's 1..=8, the tree's own from 9 on).
pub(super) fn task_ids(
    ns: &[(String, u64)],
    own_ns: &[(String, u64)],
    own: u32,
) -> TaskKobjIdsEntry {
    let ids = crate::namespaces::ns_ids(ns, own_ns);
    TaskKobjIdsEntry {
        vm_id: own,
        files_id: own,
        fs_id: own,
        sighand_id: own,
        pid_ns_id: ids[0],
        net_ns_id: ids[1],
        ipc_ns_id: ids[2],
        uts_ns_id: ids[3],
        time_ns_id: ids[4],
        mnt_ns_id: ids[5],
        user_ns_id: ids[6],
        cgroup_ns_id: ids[7],
    }
}

pub(super) fn timens_now() -> TimensEntry {
    let now = |clk| {
        let t = nix::time::clock_gettime(clk).unwrap_or(nix::sys::time::TimeSpec::new(0, 0));
        Timespec {
            tv_sec: t.tv_sec() as u64,
            tv_nsec: t.tv_nsec() as u64,
        }
    };
    TimensEntry {
        monotonic: now(nix::time::ClockId::CLOCK_MONOTONIC),
        boottime: now(nix::time::ClockId::CLOCK_BOOTTIME),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Starts a child with `clone(flags | SIGCHLD)` that only sleeps; returns its pid.
    fn sleeper(flags: libc::c_long) -> i32 {
        // SAFETY: without CLONE_VM the child runs in a copy of our memory and only makes raw
        // syscalls (pause) until it is killed.
        let pid = unsafe {
            libc::syscall(
                libc::SYS_clone,
                flags | libc::SIGCHLD as libc::c_long,
                0,
                0,
                0,
                0,
            )
        };
        if pid == 0 {
            loop {
                // SAFETY: pause has no arguments.
                unsafe { libc::pause() };
            }
        }
        assert!(pid > 0, "clone: {}", std::io::Error::last_os_error());
        pid as i32
    }

    fn ids(k: &mut KobjIds, pid: i32) -> [u32; 4] {
        let mut e = TaskKobjIdsEntry::default();
        k.assign(pid, &mut e);
        [e.vm_id, e.files_id, e.fs_id, e.sighand_id]
    }

    /// Plain children get objects of their own; a child made with CLONE_FILES | CLONE_FS shares
    /// our fd table and fs, whatever order the processes come in; asking again gives the same.
    #[test]
    fn kobj_ids_find_shared_objects_in_any_order() {
        let me = std::process::id() as i32;
        let mut kids: Vec<i32> = (0..6).map(|_| sleeper(0)).collect();
        let sharer = sleeper((libc::CLONE_FILES | libc::CLONE_FS) as libc::c_long);
        kids.push(sharer);
        let mut k = KobjIds::default();
        let mut got: Vec<[u32; 4]> = kids[..3].iter().map(|&p| ids(&mut k, p)).collect();
        let mine = ids(&mut k, me);
        got.extend(kids[3..].iter().map(|&p| ids(&mut k, p)));
        let again = ids(&mut k, me);
        let shared = ids(&mut k, sharer);
        for &p in &kids {
            // SAFETY: kill and reap our own children.
            unsafe {
                libc::kill(p, libc::SIGKILL);
                libc::waitpid(p, std::ptr::null_mut(), 0);
            }
        }
        assert_eq!(mine, again);
        assert_eq!(shared, got[6]);
        assert_eq!(
            (shared[1], shared[2]),
            (mine[1], mine[2]),
            "files and fs shared"
        );
        assert_ne!(shared[0], mine[0]);
        assert_ne!(shared[3], mine[3]);
        for (i, a) in got[..6].iter().enumerate() {
            for kind in 0..4 {
                assert_ne!(a[kind], mine[kind], "child {i}, kind {kind}");
                for b in &got[i + 1..6] {
                    assert_ne!(a[kind], b[kind], "kind {kind}");
                }
            }
        }
    }
}
