//! `criu restore`: bring a dumped process tree back from its images.
//!
//! The sequence:
//! 1. [`images::load`] reads and checks every image into a [`plan::TreePlan`] (one
//!    [`plan::TaskPlan`] per process, zombies included); then every task is checked against
//!    this machine (pids free, limits reachable, same vDSO layout, FPU state fits) and
//!    [`session::session_ops`] works out how each task gets its session and group. Nothing runs
//!    before all of that passed.
//! 2. The `pre-restore` action scripts run.
//! 3. [`shared::Shared`] makes what several tasks share (open files, pipes, shared anonymous
//!    memory) once, each open file through its kind's module in [`crate::files`]; [`prepare`] reserves, for each task, an address range free both here and in
//!    the task's layout, lays the restorer blob, its argument block and the final signal frames
//!    out in it, and prepares the task's work list.
//! 4. The root is cloned with its old pid (`clone3` with `set_tid`; `ns_last_pid` as a
//!    fallback); each task ([`child::run`]) waits until criu traces it, takes its session and
//!    group, creates its children the same way (one subtree after the other, synchronised
//!    through a shared page of futexes), then ends as a zombie or premaps and fills its memory,
//!    reopens its files and jumps into the restorer, which puts everything in place, starts the
//!    threads and reports.
//! 5. `post-restore` and `pre-resume` run once for the tree while every task waits; then
//!    [`trace`] lets each task return into its saved registers (children before parents),
//!    unmaps its restorer and detaches; `post-resume` runs.
//! 6. Without `--restore-detached` criu waits for the root and reports how it ended.
//!
//! ```no_run
//! use criu::{restore, RestoreOptions};
//! let opts = RestoreOptions::new("/tmp/img");
//! let outcome = restore(&opts, None).unwrap();
//! println!("{outcome:?}");
//! ```
// Unsafe code: the subreaper flag (prctl) and the forked root's exit path (getpid, _exit).
#![allow(unsafe_code)]

/// The restorer's ABI: the argument block and status records shared with the restorer blob.
pub use parasite_blobs::restorer::proto as abi;
pub mod child;
mod error;
pub mod fpu;
pub mod images;
pub mod layout;
mod mem;
pub mod ops;
pub mod plan;
pub mod preflight;
pub mod prepare;
mod restorer;
pub mod session;
pub mod shared;
pub mod sync;
pub mod trace;
pub mod trust;

pub use error::RestoreError;

use std::os::fd::OwnedFd;
use std::path::Path;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

pub use crate::options::{PidMethod, RestoreOptions};
use crate::scripts::{Notify, ScriptAction};

/// How a restore ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreOutcome {
    /// The task runs on its own (`-d`).
    Detached {
        /// Its pid.
        pid: i32,
    },
    /// The task ran and exited with `code`.
    Exited {
        /// Its pid.
        pid: i32,
        /// Exit code.
        code: i32,
    },
    /// The task was killed by `signal`.
    Killed {
        /// Its pid.
        pid: i32,
        /// The signal.
        signal: i32,
    },
}

impl RestoreOutcome {
    /// The exit code `criu restore` reports for this outcome (CRIU's convention for a killed
    /// task: 128 + signal).
    pub fn exit_code(&self) -> i32 {
        match *self {
            RestoreOutcome::Detached { .. } => 0,
            RestoreOutcome::Exited { code, .. } => code,
            RestoreOutcome::Killed { signal, .. } => 128 + signal,
        }
    }
}

fn run_scripts(
    scripts: Option<&dyn Notify>,
    action: ScriptAction,
    pid: Option<i32>,
) -> Result<(), RestoreError> {
    match scripts {
        Some(s) => Ok(s.notify(action, pid)?),
        None => Ok(()),
    }
}

/// Restores the process tree in `opts.images_dir`.
///
/// # Errors
/// Any [`RestoreError`]. Errors found in the images or on this machine come before anything
/// was created; a failure after the first task was created kills and reaps every task.
pub fn restore(
    opts: &RestoreOptions,
    scripts: Option<&dyn Notify>,
) -> Result<RestoreOutcome, RestoreError> {
    let started = std::time::Instant::now();
    trust::warn_untrusted(&opts.images_dir);
    // The inventory first: it says whether this is an images directory at all.
    images::check_inventory(&opts.images_dir)?;
    // The tree's own mount namespace, rebuilt first: its files are opened there.
    let mut mntns = crate::namespaces::mnt::MountNs::prepare(
        &opts.images_dir,
        opts.root.as_deref(),
        &opts.external,
    )?;
    let mut netns = crate::namespaces::net::NetNs::prepare(
        &opts.images_dir,
        &opts.external,
        opts.empty_ns & libc::CLONE_NEWNET as u32 != 0,
    )?;
    let mut tree = images::load_under(
        &opts.images_dir,
        opts.shell_job,
        mntns.as_ref().map(|m| m.yard()),
    )?;
    session::add_group_helpers(&mut tree)?;
    tracing::info!(
        root = tree.root().pid,
        tasks = tree.tasks.len(),
        zombies = tree.tasks.iter().filter(|t| t.zombie.is_some()).count(),
        "images read"
    );
    // The tree's own namespaces, rebuilt before any of its tasks exists.
    let mut namespaces = crate::namespaces::prepare_restore(&opts.images_dir, &opts.join_ns)?;
    // In a new pid namespace every pid is free.
    let own_pids = namespaces.new_pid_ns();
    let cgroups = crate::namespaces::cgroup::prepare_restore(
        &opts.images_dir,
        opts.manage_cgroups,
        &opts.cgroup_roots,
    )?;
    let ours = layout::Special::from_maps(&layout::self_maps()?);
    for (_, t) in tree.alive() {
        preflight::preflight_against(t, &ours, !opts.no_fpu_check, !own_pids)?;
    }
    for t in tree
        .tasks
        .iter()
        .filter(|t| t.zombie.is_some() && !own_pids)
    {
        if Path::new(&format!("/proc/{}", t.pid)).exists() {
            return Err(RestoreError::PidBusy { pid: t.pid });
        }
    }
    let sessions = session::session_ops(&tree, opts.shell_job)?;
    run_scripts(scripts, ScriptAction::PreRestore, None)?;
    raise_nofile();
    let shared = shared::Shared::build(&tree)?;
    // The fill helpers can be turned off (to measure what they bring).
    let no_helpers = !opts.fill_helpers;
    // Only tasks with that much saved memory can use one: a pid for each of them.
    let big = |t: &plan::TaskPlan| {
        t.pages.iter().map(|r| r.nr_pages).sum::<u64>() * layout::PAGE >= prepare::HELPER_MIN_FILL
    };
    let helper_count = if no_helpers {
        0
    } else {
        tree.tasks.iter().filter(|t| big(t)).count()
    };
    let mut helpers = shared::helper_pids(&tree, helper_count).into_iter();
    let huge_pages = huge_pages_allowed(opts.huge_pages);
    // Without: fault pages in and read into them instead (to measure).
    let uffd = opts.uffd;
    let mut preps: Vec<Option<prepare::Prepared>> = Vec::with_capacity(tree.tasks.len());
    for (i, t) in tree.tasks.iter().enumerate() {
        if t.zombie.is_some() {
            preps.push(None);
            continue;
        }
        let ctx = ops::TaskCtx {
            root: i == 0,
            fd_floor: shared.fd_floor,
            shared_fds: shared.fds[i].clone(),
            late_fds: shared.late_fds(),
            shm: shared.shm.clone(),
            helper_pid: if big(t) { helpers.next() } else { None },
            huge_pages,
            uffd,
        };
        match prepare::prepare(t, opts, &ctx) {
            Ok(p) => {
                tracing::debug!(pid = t.pid, "task prepared");
                preps.push(Some(p));
            }
            Err(e) => {
                for p in preps.into_iter().flatten() {
                    prepare::unmap(p.resv);
                }
                return Err(e);
            }
        }
    }
    let sync = sync::SyncPage::new(tree.tasks.len())?;
    let subreaper = Subreaper::set();
    let forking = std::time::Instant::now();
    let created = spawn(
        &tree,
        &sessions,
        preps,
        shared,
        &sync,
        opts,
        &mut namespaces,
    )?;
    let forking = forking.elapsed();
    let root = created.root;
    let pids = namespaces.pid_map(root);
    // The tasks are in the tree's network namespace now.
    if let Some(ns) = netns.as_mut()
        && let Err(e) = ns.finish()
    {
        kill_tree(&tree, &sync, root, &pids);
        return Err(e.into());
    }
    let pid = match finish(
        &tree,
        &created,
        &sync,
        opts,
        scripts,
        TreeNs {
            mntns: mntns.as_mut(),
            pids: &pids,
            cgroups: &cgroups,
        },
    ) {
        Ok(pid) => pid,
        Err(e) => {
            kill_tree(&tree, &sync, root, &pids);
            drop(subreaper);
            return Err(e);
        }
    };
    drop(subreaper);
    let pages = tree
        .alive()
        .flat_map(|(_, t)| &t.pages)
        .map(|r| r.nr_pages)
        .sum();
    crate::stats::write_restore(&opts.images_dir, forking, started.elapsed(), pages);
    if let Err(e) = run_scripts(scripts, ScriptAction::PostResume, Some(pid)) {
        tracing::warn!(error = %e, "post-resume scripts failed");
    }
    if opts.detach {
        return Ok(RestoreOutcome::Detached { pid });
    }
    wait_exit(pid)
}

/// Lifts our soft descriptor limit to the hard one: the engine holds a few descriptors per
/// task of the tree until it is created (the tasks get their own limits back).
fn raise_nofile() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a live local.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

/// criu is a child subreaper while it restores: tasks orphaned by a failed restore come to it
/// and are reaped. The old setting comes back on drop.
struct Subreaper {
    old: libc::c_int,
}

impl Subreaper {
    fn set() -> Subreaper {
        let mut old: libc::c_int = 0;
        // SAFETY: prctl reads our flag into a live local, then sets it.
        unsafe {
            libc::prctl(libc::PR_GET_CHILD_SUBREAPER, &raw mut old);
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1);
        }
        Subreaper { old }
    }
}

impl Drop for Subreaper {
    fn drop(&mut self) {
        // SAFETY: prctl on our own flag.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, self.old) };
    }
}

/// The tree once its root exists: the root's pid and, for each live task, the parent's end of
/// its status pipe and what resuming it needs.
struct Created {
    root: i32,
    tasks: Vec<Option<Resumable>>,
    /// Files the engine opens once every task is born, for the tasks to take.
    late: Vec<shared::Late>,
    /// When to give up waiting for the tasks to restore themselves.
    deadline: std::time::Instant,
}

struct Resumable {
    status_r: OwnedFd,
    syscall_insn: u64,
    restorer: (u64, u64),
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

fn spawn(
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
            session: sessions[i],
            leader,
            children: tree.children[i].clone(),
            zombie: t.zombie,
            helper: t.helper,
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
        deadline: std::time::Instant::now()
            + std::time::Duration::from_secs(60 + pages * 4096 / (100 << 20)),
    })
}

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
            let _ = nix::sys::ptrace::cont(Pid::from_raw(root), sig);
        }
        Ok(_) => {
            let _ = nix::sys::ptrace::cont(Pid::from_raw(root), None);
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
struct TreeNs<'a> {
    mntns: Option<&'a mut crate::namespaces::mnt::MountNs>,
    pids: &'a crate::namespaces::pid::PidMap,
    cgroups: &'a crate::namespaces::cgroup::Placement,
}

fn finish(
    tree: &plan::TreePlan,
    c: &Created,
    sync: &sync::SyncPage,
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
    // Every task is born (zombies too): files under their /proc directories exist now.
    if !c.late.is_empty() {
        for i in 0..tree.tasks.len() {
            await_word(tree, slots, &slots.slot(i).born, root, create_by)?;
        }
        for l in &c.late {
            l.open()?;
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
    run_scripts(scripts, ScriptAction::PostRestore, Some(root))?;
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
fn kill_tree(
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
    let mut left = pids;
    while !left.is_empty() && std::time::Instant::now() < until {
        left.retain(|&p| {
            let reaped = waitpid(
                Pid::from_raw(p),
                Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG),
            );
            // A root restored as a sibling is its own parent's to reap once dead.
            !(reaped == Err(Errno::ECHILD) && is_zombie(p))
                && Path::new(&format!("/proc/{p}")).exists()
        });
        if !left.is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
    if !left.is_empty() {
        tracing::warn!(?left, "tasks of the failed restore could not be reaped");
    }
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

/// Whether `pid` is dead and waits for its parent to reap it.
fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .and_then(|e| s.get(e + 1..))
                .map(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn wait_exit(pid: i32) -> Result<RestoreOutcome, RestoreError> {
    loop {
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(RestoreOutcome::Exited { pid, code }),
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                return Ok(RestoreOutcome::Killed {
                    pid,
                    signal: sig as i32,
                });
            }
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(errno) => {
                return Err(RestoreError::Sys {
                    what: "waiting for the restored task",
                    errno,
                });
            }
        }
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

pub(crate) use crate::files::owned;

/// Whether wholly saved 2 MiB blocks of private anonymous memory are given huge pages when
/// they are filled: not when the administrator turned transparent huge pages off
/// (`never`), nor when the options turn them off (`wanted`).
fn huge_pages_allowed(wanted: bool) -> bool {
    if !wanted {
        return false;
    }
    std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .is_ok_and(|s| !s.contains("[never]"))
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
