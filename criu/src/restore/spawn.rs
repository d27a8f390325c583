//! Creating the tree: the per-task nodes handed to [`super::child::run`], and the root cloned
//! with its old pid (`clone3` with `set_tid`, `ns_last_pid` as the fallback).
// Unsafe code: the forked root's exit path (getpid, _exit).
#![allow(unsafe_code)]

use std::os::fd::OwnedFd;
use std::path::Path;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

use super::error::RestoreError;
use super::{child, ops, plan, prepare, shared, sync};
use crate::options::{PidMethod, RestoreOptions};

/// The tree once its root exists: the root's pid and, for each live task, the parent's end of
/// its status pipe and what resuming it needs.
pub(super) struct Created {
    pub(super) root: i32,
    pub(super) tasks: Vec<Option<Resumable>>,
    /// Files the engine opens once every task is born, for the tasks to take.
    pub(super) late: Vec<shared::Late>,
    /// The files the engine made, for their work once every task is born.
    pub(super) after: Vec<std::sync::Arc<dyn crate::files::RestoreFile>>,
    /// When to give up waiting for the tasks to restore themselves.
    pub(super) deadline: std::time::Instant,
}

pub(super) struct Resumable {
    pub(super) status_r: OwnedFd,
    pub(super) syscall_insn: u64,
    pub(super) restorer: (u64, u64),
}

/// Marks the live tasks that share their live parent's descriptor table or fs info (equal
/// ids in the images), and has such a parent keep the sharing child's service descriptors
/// (they live in the one table) when it closes everything else.
fn share_with_parents(tree: &plan::TreePlan, nodes: &mut [ops::Node]) {
    // Children first: a chain of sharing tasks hands its service descriptors up to the top.
    for &i in tree.order.iter().rev() {
        let Some(p) = tree.parent[i] else { continue };
        let (t, pt) = (&tree.tasks[i], &tree.tasks[p]);
        if nodes[i].plan.is_none() || nodes[p].plan.is_none() {
            continue;
        }
        nodes[i].share_files = t.files_id != 0 && t.files_id == pt.files_id;
        nodes[i].share_fs = t.fs_id != 0 && t.fs_id == pt.fs_id;
        if !nodes[i].share_files {
            continue;
        }
        let (theirs, inherited) = nodes[i]
            .plan
            .as_ref()
            .map(|c| (c.service_fds.clone(), c.inherited.clone()))
            .unwrap_or_default();
        if let Some(pp) = nodes[p].plan.as_mut() {
            pp.service_fds.extend(theirs);
            // The engine's copies of shared files the child would have closed.
            pp.inherited.extend(inherited);
            pp.inherited.sort_unstable();
            pp.inherited.dedup();
            pp.service_fds.sort_unstable();
            pp.service_fds.dedup();
            if let Some(&last) = pp.service_fds.last() {
                pp.tmp_fd_base = pp.tmp_fd_base.max(last + 1);
            }
        }
    }
}

pub(super) fn spawn(
    tree: &plan::TreePlan,
    sessions: &[plan::SessionOp],
    preps: Vec<Option<prepare::Prepared>>,
    mut shared: shared::Shared,
    sync: &sync::SyncPage,
    opts: &RestoreOptions,
    namespaces: &mut crate::namespaces::Prepared,
) -> Result<Created, RestoreError> {
    let (pid_method, sibling) = (opts.pid_method, opts.sibling);
    let late = std::mem::take(&mut shared.late);
    let after = std::mem::take(&mut shared.after);
    let mut nodes = Vec::with_capacity(preps.len());
    let mut rest = Vec::with_capacity(preps.len());
    let mut keep = Vec::new();
    let mut resvs = Vec::new();
    for (i, p) in preps.into_iter().enumerate() {
        let t = &tree.tasks[i];
        let mut resv = (0, 0);
        let (plan, r) = match p {
            Some(p) => {
                keep.push(p.child_only);
                resvs.push(p.resv);
                resv = p.resv;
                (
                    Some(p.child),
                    Some(Resumable {
                        status_r: p.status_r,
                        syscall_insn: p.syscall_insn,
                        restorer: p.restorer,
                    }),
                )
            }
            None => (None, None),
        };
        let leader = match sessions[i] {
            plan::SessionOp::Setpgid(g) if g != 0 && g != t.pid => {
                tree.tasks.iter().position(|l| l.pid == g)
            }
            _ => None,
        };
        nodes.push(ops::Node {
            pid: t.pid,
            tids: vec![t.pid],
            enter_child_ns: None,
            join: if i == 0 {
                namespaces.root_joins()
            } else {
                Vec::new()
            },
            session: sessions[i],
            leader,
            children: tree.children[i].clone(),
            zombie: t.zombie,
            helper: t.helper,
            adopts: tree.children[i]
                .iter()
                .any(|&c| tree.tasks[c].helper && !tree.children[c].is_empty()),
            plan,
            resv,
            pre: 0,
            size: 1,
            share_files: false,
            share_fs: false,
        });
        rest.push(r);
    }
    share_with_parents(tree, &mut nodes);
    crate::namespaces::pid_levels::apply(&mut nodes, &tree.parent, namespaces.levels())?;
    // Subtree sizes, children after parents in `order`: add each task's size to its parent's.
    for (k, &i) in tree.order.iter().enumerate() {
        nodes[i].pre = k;
    }
    for &i in tree.order.iter().rev() {
        if let Some(p) = tree.parent[i] {
            nodes[p].size += nodes[i].size;
        }
    }
    let slots = sync.slots();
    // A new task starts with every signal blocked (inherited from this thread around the
    // clone): a signal sent to it while it restores stays pending and reaches the task's own
    // handlers once its mask is back, instead of criu's.
    let all = nix::sys::signal::SigSet::all();
    let mut old = nix::sys::signal::SigSet::empty();
    let blocked = nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&all),
        Some(&mut old),
    )
    .is_ok();
    // The tasks take the files that need the tree from this process.
    slots.slot(slots.n).detail.store(
        std::process::id() as u64,
        std::sync::atomic::Ordering::SeqCst,
    );
    // `--restore-sibling` (RPC `rst_sibling`): the root becomes a child of criu's parent, the
    // client that asked (CLONE_PARENT). criu watches it as its tracer from its first step.
    let parent_flag = if sibling {
        libc::CLONE_PARENT as u64
    } else {
        0
    };
    // The root inherits the rebuilt namespaces the engine enters around its clone.
    let cloned = namespaces
        .enter()
        .map_err(RestoreError::from)
        .and_then(|entered| {
            let r = clone_task(
                tree.root().pid,
                pid_method,
                parent_flag | namespaces.clone_flags(),
            );
            if matches!(r, Ok(0)) {
                // The new root stays in them.
                std::mem::forget(entered);
            }
            r
        });
    if let Ok(0) = cloned {
        child::run(&nodes, &tree.order, slots, 0);
    }
    if blocked {
        let _ = nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_SETMASK,
            Some(&old),
            None,
        );
    }
    // The tasks have their copies of all of this now.
    drop(keep);
    drop(shared);
    for r in resvs {
        prepare::unmap(r);
    }
    let pid = cloned?;
    tracing::debug!(pid, "root created");
    if let Err(e) = namespaces.after_clone(pid) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::__WALL));
        return Err(e.into());
    }
    // Generous: a minute, plus a second per 100 MiB of pages to read.
    let pages: u64 = tree
        .tasks
        .iter()
        .flat_map(|t| t.pages.iter())
        .map(|r| r.nr_pages)
        .sum();
    Ok(Created {
        root: pid,
        tasks: rest,
        late,
        after,
        deadline: std::time::Instant::now()
            + std::time::Duration::from_secs(60 + pages * 4096 / (100 << 20)),
    })
}

/// The exit signal of a clone with `flags`: SIGCHLD for our child; none with `CLONE_PARENT`
/// (`clone3` refuses one: the child signals its parent as criu does to its own).
fn exit_signal(flags: u64) -> u64 {
    if flags & libc::CLONE_PARENT as u64 != 0 {
        0
    } else {
        libc::SIGCHLD as u64
    }
}

/// Forks this process into a child with pid `pid`. Returns 0 in the child.
/// How the pid is obtained: `clone3` with `set_tid`, unless `method` is
/// [`PidMethod::NsLastPid`] (the fallback for kernels without `set_tid`, also selectable to
/// exercise it).
/// `flags` are added to the clone (`CLONE_PARENT` for a sibling of criu, the `CLONE_NEW*` of
/// the namespaces the root is born into; with those there is no `ns_last_pid` fallback).
fn clone_task(pid: i32, method: PidMethod, flags: u64) -> Result<i32, RestoreError> {
    let ns_flags = flags & !(libc::CLONE_PARENT as u64);
    if method == PidMethod::NsLastPid && ns_flags == 0 {
        return clone_via_last_pid(pid, flags);
    }
    let tid = [pid];
    let args = child::CloneArgs {
        flags,
        exit_signal: exit_signal(flags),
        set_tid: tid.as_ptr() as u64,
        set_tid_size: 1,
        ..Default::default()
    };
    let r = child::fork3(&args);
    if r >= 0 {
        return Ok(r as i32);
    }
    match Errno::last() {
        Errno::EEXIST => Err(RestoreError::PidBusy { pid }),
        Errno::ENOSYS | Errno::E2BIG | Errno::EPERM | Errno::EINVAL if ns_flags == 0 => {
            clone_via_last_pid(pid, flags)
        }
        errno => Err(RestoreError::Clone { pid, errno }),
    }
}

/// The fallback: set `ns_last_pid` to `pid - 1` and fork; the kernel hands out `pid` next
/// unless another process forks in between (then the new task is killed and this fails).
fn clone_via_last_pid(pid: i32, flags: u64) -> Result<i32, RestoreError> {
    let path = Path::new("/proc/sys/kernel/ns_last_pid");
    std::fs::write(path, format!("{}", pid - 1)).map_err(|e| RestoreError::Io {
        what: format!("writing {}", path.display()),
        error: e,
    })?;
    let args = child::CloneArgs {
        flags,
        exit_signal: exit_signal(flags),
        ..Default::default()
    };
    let r = child::fork3(&args);
    if r < 0 {
        return Err(RestoreError::Clone {
            pid,
            errno: Errno::last(),
        });
    }
    if r == 0 {
        // SAFETY: getpid has no preconditions.
        if unsafe { libc::getpid() } != pid {
            // SAFETY: the wrong child ends at once without running any exit handlers.
            unsafe { libc::_exit(1) };
        }
        return Ok(0);
    }
    if r as i32 != pid {
        let _ = waitpid(Pid::from_raw(r as i32), None);
        return Err(RestoreError::PidBusy { pid });
    }
    Ok(r as i32)
}
