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
pub(crate) mod error;
mod finish;
pub mod fpu;
pub mod images;
pub mod layout;
mod mem;
pub mod ops;
pub mod plan;
pub mod preflight;
pub mod prepare;
mod progress;
mod restorer;
pub mod session;
pub mod shared;
mod spawn;
pub mod sync;
pub mod trace;
pub mod trust;

pub use error::RestoreError;

use finish::{TreeNs, finish, kill_tree, run_scripts};
use spawn::spawn;

use std::path::Path;

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

pub use crate::options::RestoreOptions;
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
    // A user namespace of the tree's own first when its other namespaces are made inside it.
    let _userns = crate::namespaces::user_owned::prepare(&opts.images_dir, &opts.join_ns)?;
    // The tree's own mount namespace, rebuilt first: its files are opened there.
    let mut mntns = crate::namespaces::mnt::MountNs::prepare(
        &opts.images_dir,
        opts.root.as_deref(),
        &opts.external,
    )?;
    let mut netns = crate::namespaces::net::NetNs::prepare_for(opts)?;
    let files_opts = crate::files::FileOpts {
        shell_job: opts.shell_job,
        tcp_close: opts.tcp_close,
        orphan_pts_master: opts.orphan_pts_master,
        inherit_fds: opts
            .inherit_fds
            .iter()
            .map(|i| (i.key.clone(), i.fd))
            .collect(),
    };
    let mut tree = images::load_under(
        &opts.images_dir,
        &files_opts,
        mntns.as_ref().map(|m| m.yard()),
    )?;
    // Lazy restore: the lazy pages are left out of the fill, for the daemon.
    let mut lazy = match &opts.lazy_pages {
        Some(sock) => Some(crate::lazy::restore::LazyRestore::prepare(
            &opts.images_dir,
            sock,
            &mut tree,
        )?),
        None => None,
    };
    session::add_session_helpers(&mut tree)?;
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
        opts.cgroup_yard.as_deref(),
    )?;
    let ours = layout::Special::from_maps(&layout::self_maps()?);
    for (_, t) in tree.alive() {
        preflight::preflight_against(t, &ours, opts.cpu_cap.fpu(), !own_pids)?;
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
    // `--orphan-pts-master`: each new master goes to the notification (the scripts' stdin, or
    // the RPC client).
    for (index, m) in crate::files::tty::take_orphan_masters() {
        tracing::info!(index, "orphan-pts-master");
        if let Some(s) = scripts {
            s.notify_fd(
                ScriptAction::OrphanPtsMaster,
                None,
                std::os::fd::AsFd::as_fd(&m),
            )?;
        }
    }
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
            // A parent prepared before its child: the child may take its areas over. Not in
            // a lazy restore: there the pages arrive later, per task, through its own uffd.
            cow_from: match lazy {
                Some(_) => Vec::new(),
                None => tree.parent[i]
                    .and_then(|p| preps.get(p)?.as_ref())
                    .map(|p| p.cow_areas.clone())
                    .unwrap_or_default(),
            },
            lazy: match lazy.as_mut() {
                Some(l) => l.task(t.pid)?,
                None => None,
            },
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
    prepare::mark_cow_sources(&tree, &mut preps);
    let fill_bytes: u64 = preps
        .iter()
        .flatten()
        .flat_map(|p| p.child.fills.iter().chain(&p.child.cow_fills))
        .map(|f| f.len)
        .sum();
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
    // A tree with namespaces of its own: the root is in them and waits (`setup-namespaces`,
    // then `post-setup-namespaces` once criu is out of the network one, with the root's pid).
    if namespaces.any() || mntns.is_some() || netns.is_some() {
        for action in [
            ScriptAction::SetupNamespaces,
            ScriptAction::PostSetupNamespaces,
        ] {
            if let Err(e) = run_scripts(scripts, action, Some(root)) {
                kill_tree(&tree, &sync, root, &pids);
                return Err(e);
            }
        }
    }
    let filling = progress::watch(sync.slots(), root, fill_bytes);
    let pid = match finish(
        &tree,
        &created,
        &sync,
        filling,
        opts,
        scripts,
        TreeNs {
            mntns: mntns.as_mut(),
            pids: &pids,
            cgroups: &cgroups,
        },
    ) {
        Ok(pid) => {
            cgroups.keep();
            pid
        }
        Err(e) => {
            kill_tree(&tree, &sync, root, &pids);
            drop(subreaper);
            return Err(e);
        }
    };
    if let Some(l) = lazy.as_mut()
        && let Err(e) = l.finish()
    {
        // The daemon's watchdog kills the tree when the daemon is gone.
        tracing::error!(error = %e, "the lazy-pages daemon went away");
    }
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
