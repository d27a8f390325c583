//! After the tree exists: tracing each task as it is born, waiting for every task to restore
//! itself, the scripts around resuming, resuming the tree, and killing it when something failed.

use std::path::Path;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::error::RestoreError;
use super::spawn::Created;
use super::{ops, plan, sync, trace};
use crate::options::RestoreOptions;
use crate::scripts::{Notify, ScriptAction};

/// The error a task recorded in its slot, if any.
fn slot_error(tree: &plan::TreePlan, slots: sync::Slots) -> Option<RestoreError> {
    use std::sync::atomic::Ordering;
    (0..tree.tasks.len()).find_map(|i| {
        let s = slots.slot(i);
        (s.failed.load(Ordering::SeqCst) != 0).then(|| RestoreError::Task {
            pid: tree.tasks[i].pid,
            stage: ops::stage_name(s.stage.load(Ordering::SeqCst)),
            errno: Errno::from_raw(s.errno.load(Ordering::SeqCst) as i32),
            detail: s.detail.load(Ordering::SeqCst),
        })
    })
}

/// Waits for `word` of task `i`, watching for failures of any task and for the root's death.
fn await_word(
    tree: &plan::TreePlan,
    slots: sync::Slots,
    word: &std::sync::atomic::AtomicU32,
    root: i32,
    deadline: std::time::Instant,
) -> Result<(), RestoreError> {
    while !sync::wait_word(word, 20) {
        check_creation(tree, slots, root, deadline)?;
    }
    Ok(())
}

/// Fails when a task recorded a failure, the root died or the deadline passed.
fn check_creation(
    tree: &plan::TreePlan,
    slots: sync::Slots,
    root: i32,
    deadline: std::time::Instant,
) -> Result<(), RestoreError> {
    if let Some(e) = slot_error(tree, slots) {
        return Err(e);
    }
    match waitpid(
        Pid::from_raw(root),
        Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG),
    ) {
        Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => {}
        Ok(WaitStatus::Exited(_, c)) => {
            return Err(slot_error(tree, slots).unwrap_or(RestoreError::Died {
                pid: root,
                status: format!("exited with {c}"),
            }));
        }
        Ok(WaitStatus::Signaled(_, sig, _)) => {
            return Err(RestoreError::Died {
                pid: root,
                status: format!("killed by {sig}"),
            });
        }
        Ok(WaitStatus::Stopped(_, sig)) => {
            let _ = compel::ptrace::cont(root, sig as i32);
        }
        Ok(_) => {
            let _ = compel::ptrace::cont(root, 0);
        }
        Err(errno) => {
            return Err(RestoreError::Sys {
                what: "watching the root task",
                errno,
            });
        }
    }
    if std::time::Instant::now() > deadline {
        return Err(RestoreError::Timeout { pid: root });
    }
    Ok(())
}

/// What the tree's namespaces and cgroups bring to [`finish`]: the mount namespace to pivot
/// into once every task waits, the pids inside a pid namespace against the host's, and the
/// cgroups each task goes into before it runs.
pub(super) struct TreeNs<'a> {
    pub(super) mntns: Option<&'a mut crate::namespaces::mnt::MountNs>,
    pub(super) pids: &'a crate::namespaces::pid::PidMap,
    pub(super) cgroups: &'a crate::namespaces::cgroup::Placement,
}

pub(super) fn finish(
    tree: &plan::TreePlan,
    c: &Created,
    sync: &sync::SyncPage,
    filling: Option<super::progress::Watch>,
    opts: &RestoreOptions,
    scripts: Option<&dyn Notify>,
    ns: TreeNs<'_>,
) -> Result<i32, RestoreError> {
    let TreeNs {
        mntns,
        pids,
        cgroups,
    } = ns;
    let slots = sync.slots();
    let root = c.root;
    let create_by = std::time::Instant::now() + std::time::Duration::from_secs(30);
    // Trace every live task from its first step, as they are born, and let it go.
    let births = &slots.slot(slots.n).grouped;
    let mut waiting: Vec<usize> = tree.alive().map(|(i, _)| i).collect();
    while !waiting.is_empty() {
        let seen = births.load(std::sync::atomic::Ordering::SeqCst);
        let before = waiting.len();
        let mut k = 0;
        while k < waiting.len() {
            let i = waiting[k];
            let slot = slots.slot(i);
            if i == 0 || slot.born.load(std::sync::atomic::Ordering::SeqCst) != 0 {
                let host = pids.host(tree.tasks[i].pid);
                trace::seize(host, tree.tasks[i].under_seccomp())?;
                // Into its cgroups before it runs any code of its own.
                cgroups.place(tree.tasks[i].pid, host)?;
                sync::raise(&slot.go);
                waiting.swap_remove(k);
            } else {
                k += 1;
            }
        }
        if waiting.len() == before {
            sync::wait_change(births, seen, 20);
            check_creation(tree, slots, root, create_by)?;
        }
    }
    // Every task is in its cgroups: their limits now.
    cgroups.apply_props()?;
    // Every task is born (zombies too): files under their /proc directories exist now.
    if !c.late.is_empty() {
        for i in 0..tree.tasks.len() {
            await_word(tree, slots, &slots.slot(i).born, root, create_by)?;
        }
        for l in &c.late {
            l.open()?;
        }
    }
    // Every task is born: what the engine's files can do only now (queued credentials naming
    // a pid of the tree's own pid namespace).
    let after: Vec<_> = c.after.iter().filter(|f| f.has_after_tree()).collect();
    if !after.is_empty() {
        for i in 0..tree.tasks.len() {
            await_word(tree, slots, &slots.slot(i).born, root, create_by)?;
        }
        let host = |vpid: i32| {
            tree.tasks
                .iter()
                .any(|t| t.pid == vpid)
                .then(|| pids.host(vpid))
        };
        for f in after {
            f.after_tree(&host, root)?;
        }
    }
    sync::raise(&slots.slot(slots.n).settled);
    await_word(tree, slots, &slots.slot(0).created, root, create_by)?;
    tracing::debug!(root, "tree created");
    for (i, t) in tree.alive() {
        let Some(r) = &c.tasks[i] else { continue };
        let threads: Vec<i32> = t.others().iter().map(|t| t.tid).collect();
        trace::wait_ready(pids.host(t.pid), &threads, &r.status_r, c.deadline)?;
    }
    // Every task mapped its memfds: the seals that forbid writable mappings now.
    crate::files::memfd::seal_late(&opts.images_dir)?;
    // Every task's memory is in: the progress ends here, and criu is one thread again (a
    // mount namespace is entered only by a process that shares its fs info with no thread).
    drop(filling);
    tracing::info!(root, "tree restored, waiting to resume");
    if let Some(ns) = mntns {
        ns.finish()?;
    }
    if tracing::enabled!(tracing::Level::DEBUG) {
        for (_, t) in tree.alive() {
            log_memory(pids.host(t.pid));
        }
    }
    if let Some(p) = &opts.pidfile {
        crate::pidfile::write_pidfile(p, root)?;
    }
    // The namespace's rules came back locked when the dump locked it; made sure of here, lifted
    // (after the `network-unlock` scripts) before the tree runs.
    let net_lock =
        crate::namespaces::net::NetLock::take_restored(root, opts.network_lock, &opts.images_dir)?;
    run_scripts(scripts, ScriptAction::PostRestore, Some(root))?;
    if let Some(l) = net_lock {
        l.release(scripts)?;
    }
    run_scripts(scripts, ScriptAction::PreResume, Some(root))?;
    // Every thread of every task out of its restorer at once, then the restorers unmapped and the
    // tasks detached, children first: when a parent runs on, its children are back already.
    let stopped: Vec<i32> = tree
        .alive()
        .filter(|&(i, _)| c.tasks[i].is_some())
        .flat_map(|(_, t)| {
            t.others()
                .iter()
                .map(|t| t.tid)
                .chain(std::iter::once(pids.host(t.pid)))
        })
        .collect();
    trace::run_to_sigreturn(&stopped)?;
    // Every thread exists now: pidfds of threads replace their placeholders (one open file
    // for the tasks that share one).
    let mut thread_pidfds = crate::files::pidfd::ThreadPidfds::new();
    for (i, t) in tree.alive() {
        if let Some(r) = &c.tasks[i] {
            crate::files::pidfd::open_thread_pidfds(
                pids.host(t.pid),
                t.pid,
                r.syscall_insn,
                &t.fds,
                &mut thread_pidfds,
            )?;
        }
    }
    let resumable: Vec<trace::Resumable> = tree
        .order
        .iter()
        .rev()
        .filter_map(|&i| {
            let t = &tree.tasks[i];
            let r = c.tasks[i].as_ref()?;
            Some(trace::Resumable {
                pid: pids.host(t.pid),
                threads: t.others().iter().map(|t| t.tid).collect(),
                syscall_insn: r.syscall_insn,
                restorer: r.restorer,
                stop_signal: t.stop_signal,
            })
        })
        .collect();
    trace::unmap_and_detach(&resumable)?;
    tracing::info!(root, tasks = tree.tasks.len(), "tree resumed");
    Ok(root)
}

/// Kills every task of the tree that exists (announced itself in its slot) and reaps them all:
/// the root as our child, the others as tracees or as orphans handed to us (we are a child
/// subreaper while restoring).
pub(super) fn kill_tree(
    tree: &plan::TreePlan,
    sync: &sync::SyncPage,
    root: i32,
    pids_of: &crate::namespaces::pid::PidMap,
) {
    use std::sync::atomic::Ordering;
    let slots = sync.slots();
    slots.abort();
    let mut pids = vec![root];
    for (i, t) in tree.tasks.iter().enumerate().skip(1) {
        if slots.slot(i).born.load(Ordering::SeqCst) != 0 {
            pids.push(pids_of.host(t.pid));
        }
    }
    for &p in &pids {
        let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
    }
    // A task is gone once its pid is: until then it is ours to reap, as a child, a tracee, or
    // an orphan handed to us when its parent died (not yet our child is no reason to stop).
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let ours = pids.clone();
    let mut left = pids;
    while !left.is_empty() && std::time::Instant::now() < until {
        left.retain(|&p| {
            let reaped = waitpid(
                Pid::from_raw(p),
                Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG),
            );
            // A zombie that is not ours to reap: a root restored as a sibling is its own
            // parent's once dead. A zombie whose parent is a dying task of the tree comes to
            // us when that parent is gone, so it is waited for.
            let others = reaped == Err(Errno::ECHILD)
                && zombie_parent(p).is_some_and(|pp| !ours.contains(&pp));
            !others && Path::new(&format!("/proc/{p}")).exists()
        });
        if !left.is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
    if !left.is_empty() {
        tracing::warn!(?left, "tasks of the failed restore could not be reaped");
    }
}

/// The parent of `pid` when `pid` is dead and waits for that parent to reap it.
fn zombie_parent(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = rest.split_whitespace();
    if fields.next()? != "Z" {
        return None;
    }
    fields.next()?.parse().ok()
}

/// Logs how a restored task's memory came back: resident and on huge pages.
fn log_memory(pid: i32) {
    let Ok(text) = compel::proc::read_text(format!("/proc/{pid}/smaps_rollup")) else {
        return;
    };
    let kb = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    tracing::debug!(
        pid,
        rss_kb = kb("Rss:"),
        anon_huge_kb = kb("AnonHugePages:"),
        "memory restored"
    );
}

/// Runs the action scripts (or the caller's notification) for `action`, if any.
pub(super) fn run_scripts(
    scripts: Option<&dyn Notify>,
    action: ScriptAction,
    pid: Option<i32>,
) -> Result<(), RestoreError> {
    match scripts {
        Some(s) => Ok(s.notify(action, pid)?),
        None => Ok(()),
    }
}
