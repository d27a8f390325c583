//! `criu dump`: checkpoint a live process tree (the process `-t PID`, its threads and its
//! descendants) into an images directory in CRIU's format.
//!
//! The flow, each step named in the error if it fails:
//!
//! 1. mark the images directory incomplete (an `inventory.img` left from an earlier dump is
//!    removed and a [`INCOMPLETE_MARKER`] file written; `inventory.img` is written last), run the
//!    `pre-dump` action scripts;
//! 2. seize the tree with compel, breadth first (every thread of every process stopped under
//!    `PTRACE_SEIZE`, each process before its children are listed; children that exit while
//!    they are seized are kept as zombies, auto-reaped ones skipped), then re-list the frozen
//!    tree until a pass finds nothing new ([`DumpError::Unstable`] after a few passes);
//! 3. collect: `/proc` (stat, status, smaps, fds, cwd/root, auxv, timers), registers with xsave
//!    and the blocked mask, rseq, the robust list, and what only the task may read about itself
//!    through remote syscalls ([`inside`]);
//! 4. write the images: per process `core` (one per thread), `mm`, `pagemap` + `pages` (memory
//!    read with `process_vm_readv`), `ids`, `fs`, `fdinfo`; for the tree `files` (one id per
//!    open file description, shared ones found with kcmp), ghost files, pipe data, shared
//!    anonymous memory once per object, `pstree`, `seccomp`, `timens`, `stats-dump`, and last
//!    `inventory`;
//! 5. run the `post-dump` scripts, then kill the tree (default), leave it running (`-R`) or
//!    stopped (`-s`), and detach.
//!
//! Whatever fails, every process is detached and runs on as it was (none is killed then), and
//! the images directory keeps no `inventory.img` and holds the marker with the error.
//!
//! ```no_run
//! let opts = criu::options::Options::parse(
//!     ["criu", "dump", "-t", "4242", "-D", "/tmp/img", "-R"].iter().map(|s| s.to_string()),
//! ).unwrap();
//! let dump_opts = criu::options::DumpOptions::from_options(&opts);
//! let summary = criu::dump::dump(&dump_opts, None).unwrap();
//! println!("{} pages written", summary.pages_written);
//! ```

pub mod core;
pub mod files;
pub mod inside;
pub mod mm;
pub mod proc;

use std::path::Path;
use std::time::Instant;

use compel::{InitialStop, Task, TaskError, TaskState};
use std::collections::HashMap;

use criu_images::pb::{
    DumpStatsEntry, FsEntry, InventoryEntry, Lsmtype, MmEntry, PluginsEntry, PstreeEntry,
    SeccompEntry, SeccompFilter, StatsEntry, TaskKobjIdsEntry, TimensEntry, Timespec,
};
use criu_images::{ImageDir, ImageError, magic, names};

use crate::options::{DumpOptions, FinalState, InsideMethod};
use crate::scripts::{Notify, ScriptAction, ScriptError};

/// The file a dump leaves in the images directory while it runs and when it fails (holding the
/// error); a complete dump has `inventory.img` and no marker.
pub const INCOMPLETE_MARKER: &str = "criu-dump-incomplete";

/// Errors of a dump.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// No `-t PID`.
    #[error("no pid to dump: use -t PID")]
    NoPid,
    /// The pid does not exist.
    #[error("no process {pid} to dump")]
    NoProcess {
        /// The pid.
        pid: i32,
    },
    /// The process is a zombie.
    #[error("process {pid} is a zombie")]
    Zombie {
        /// The pid.
        pid: i32,
    },
    /// The tree kept changing while it was being frozen.
    #[error("process tree of {pid} not stable: {what}")]
    Unstable {
        /// The process where the change was seen.
        pid: i32,
        /// What changed.
        what: String,
    },
    /// Seizing failed.
    #[error("cannot seize process {pid}")]
    Seize {
        /// The pid.
        pid: i32,
        /// Why.
        #[source]
        source: TaskError,
    },
    /// Registers could not be read.
    #[error("cannot read the registers of {pid}")]
    Registers {
        /// The pid.
        pid: i32,
        /// Why.
        #[source]
        source: TaskError,
    },
    /// A ptrace request criu makes itself (rseq, pending signals) failed.
    #[error("ptrace {what} on {pid}")]
    Ptrace {
        /// The thread.
        pid: i32,
        /// The request.
        what: &'static str,
        /// The kernel's error.
        #[source]
        source: nix::errno::Errno,
    },
    /// A remote syscall could not run.
    #[error("remote {what} in {pid}")]
    Remote {
        /// The pid.
        pid: i32,
        /// Which call.
        what: &'static str,
        /// Why.
        #[source]
        source: TaskError,
    },
    /// A remote syscall failed.
    #[error("remote {what} in {pid} failed with errno {errno}")]
    RemoteFailed {
        /// The pid.
        pid: i32,
        /// Which call.
        what: &'static str,
        /// The errno.
        errno: i32,
    },
    /// `/proc` reading failed.
    #[error(transparent)]
    Proc(#[from] proc::ProcError),
    /// A file operation failed.
    #[error("{what}")]
    File {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// State criu cannot dump yet.
    #[error("unsupported: {what}")]
    Unsupported {
        /// What.
        what: String,
    },
    /// The task's memory could not be read.
    #[error("cannot read memory of {pid} at {addr:#x}")]
    Memory {
        /// The pid.
        pid: i32,
        /// Where.
        addr: u64,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Writing an image failed.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// An action script failed.
    #[error(transparent)]
    Script(#[from] ScriptError),
    /// A step of the dump failed.
    #[error("{step} failed")]
    Step {
        /// The step.
        step: &'static str,
        /// Why.
        #[source]
        source: Box<DumpError>,
    },
}

impl DumpError {
    fn at(self, step: &'static str) -> DumpError {
        DumpError::Step {
            step,
            source: Box::new(self),
        }
    }
}

/// What a successful dump did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DumpSummary {
    /// The dumped pid.
    pub pid: i32,
    /// Pages scanned in private VMAs.
    pub pages_scanned: u64,
    /// Pages written into `pages-1.img`.
    pub pages_written: u64,
    /// Time the task was frozen, in microseconds.
    pub frozen_us: u64,
}

fn file_err(what: String) -> impl FnOnce(std::io::Error) -> DumpError {
    move |source| DumpError::File { what, source }
}

/// Dumps the process `opts.tree` into `opts.images_dir` (see the module docs for the steps).
///
/// # Errors
/// [`DumpError::Step`] naming the step that failed; the task then runs on.
pub fn dump(opts: &DumpOptions, notify: Option<&dyn Notify>) -> Result<DumpSummary, DumpError> {
    let pid = opts.tree.ok_or(DumpError::NoPid)?;
    let dir = opts.images_dir.clone();
    let marker = dir.join(INCOMPLETE_MARKER);
    let result = (|| {
        begin_images(&dir).map_err(|e| e.at("preparing the images directory"))?;
        let quiet = |_: ScriptAction, _: Option<i32>| -> Result<(), ScriptError> { Ok(()) };
        dump_inner(opts, pid, &dir, notify.unwrap_or(&quiet))
    })();
    match &result {
        Ok(s) => {
            let _ = std::fs::remove_file(&marker);
            tracing::info!(pid, pages = s.pages_written, "dump finished");
        }
        Err(e) => {
            let _ = std::fs::remove_file(dir.join(names::INVENTORY));
            let _ = std::fs::write(&marker, format!("dump of {pid} failed: {}\n", chain(e)));
            tracing::debug!("dump of {pid} failed: {}", chain(e));
        }
    }
    result
}

/// The error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn begin_images(dir: &Path) -> Result<(), DumpError> {
    let md =
        std::fs::metadata(dir).map_err(file_err(format!("images directory {}", dir.display())))?;
    if !md.is_dir() {
        return Err(DumpError::Unsupported {
            what: format!("images directory {} is not a directory", dir.display()),
        });
    }
    std::fs::write(dir.join(INCOMPLETE_MARKER), "dump in progress\n").map_err(file_err(
        format!("write {}", dir.join(INCOMPLETE_MARKER).display()),
    ))?;
    match std::fs::remove_file(dir.join(names::INVENTORY)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(file_err(format!("remove old {}", names::INVENTORY))(e)),
    }
}

fn dump_inner(
    opts: &DumpOptions,
    pid: i32,
    dir: &Path,
    scripts: &dyn Notify,
) -> Result<DumpSummary, DumpError> {
    match compel::classify(pid) {
        Ok(TaskState::Dead) | Err(_) => {
            return Err(DumpError::NoProcess { pid }.at("checking the process"));
        }
        Ok(TaskState::Zombie) => return Err(DumpError::Zombie { pid }.at("checking the process")),
        Ok(_) => {}
    }
    scripts
        .notify(ScriptAction::PreDump, Some(pid))
        .map_err(|e| DumpError::from(e).at("pre-dump action script"))?;

    let t0 = Instant::now();
    // Every process of the tree, the root first; each detaches on every return path (compel's
    // Task does on drop), so the tree runs on if anything fails.
    let (mut tasks, zombie_pids) = seize_tree(pid).map_err(|e| e.at("seizing the process tree"))?;
    tracing::info!(
        pid,
        processes = tasks.len(),
        zombies = zombie_pids.len(),
        "seized"
    );
    let mut zombies = Vec::with_capacity(zombie_pids.len());
    for z in zombie_pids {
        zombies.push((
            z,
            proc::read_stat(z)
                .map_err(|e| DumpError::from(e).at("collecting the process state"))?,
        ));
    }
    let mut files = files::FileTable::new(opts.ghost_limit);
    let mut procs = Vec::with_capacity(tasks.len());
    // criu's own namespaces, read once for the whole tree.
    let own_ns = ns_inodes("self");
    for (p, task) in tasks.iter_mut() {
        procs.push(
            collect(task, *p, opts, &mut files, &own_ns)
                .map_err(|e| e.at("collecting the process state"))?,
        );
    }
    let stats =
        write_images(dir, &procs, &zombies, &files).map_err(|e| e.at("writing the images"))?;
    let frozen_us = t0.elapsed().as_micros() as u64;
    write_stats(dir, &stats, frozen_us).map_err(|e| e.at("writing the images"))?;
    write_inventory(dir, &procs[0]).map_err(|e| e.at("writing the images"))?;

    if let Err(e) = scripts.notify(ScriptAction::PostDump, Some(pid)) {
        // The tree resumes (dropping the tasks detaches them) and the dump fails.
        drop(tasks);
        return Err(DumpError::from(e).at("post-dump action script"));
    }
    for (p, task) in tasks {
        match opts.final_state {
            FinalState::Dead => {
                tracing::info!(pid = p, "killing the dumped process");
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            FinalState::Stopped => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGSTOP,
                );
            }
            FinalState::Alive => {}
        }
        if let Err(e) = task.detach()
            && opts.final_state != FinalState::Dead
        {
            tracing::warn!(pid = p, "detaching after the dump: {e}");
        }
    }
    Ok(DumpSummary {
        pid,
        pages_scanned: stats.scanned,
        pages_written: stats.written,
        frozen_us,
    })
}

/// The seized processes of a tree, the root first, and the pids of its zombies.
type SeizedTree = (Vec<(i32, Task)>, Vec<i32>);

/// Seizes `root` and, breadth first, every descendant: each process is seized before its
/// children are listed, so none can fork unseen.
fn seize_tree(root: i32) -> Result<SeizedTree, DumpError> {
    let mut out: Vec<(i32, Task)> = Vec::new();
    let mut zombies: Vec<i32> = Vec::new();
    let mut queue = std::collections::VecDeque::from([root]);
    while let Some(p) = queue.pop_front() {
        let task = match Task::seize(p) {
            Ok(t) => t,
            // A child that exited and was not reaped yet is saved as a zombie (it has no
            // children of its own: they went to a reaper).
            Err(TaskError::Zombie { .. }) if p != root => {
                zombies.push(p);
                continue;
            }
            // A child listed while its parent was frozen can still vanish before we get to it:
            // it exited and the kernel reaped it at once (SIGCHLD ignored or SA_NOCLDWAIT).
            // Its parent cannot see it any more, so the frozen tree does not hold it.
            Err(TaskError::NoSuchTask { .. }) if p != root => {
                tracing::debug!(pid = p, "child gone before it was seized (auto-reaped)");
                continue;
            }
            // A child that exited while it was being seized: its parent is frozen, so it stays
            // a zombie (and is saved as one) unless the kernel reaped it at once.
            Err(TaskError::Died { .. }) if p != root => {
                if matches!(compel::classify(p), Ok(TaskState::Zombie)) {
                    zombies.push(p);
                }
                continue;
            }
            Err(source) => {
                return Err(match source {
                    TaskError::NoSuchTask { .. } => DumpError::NoProcess { pid: p },
                    TaskError::Zombie { .. } => DumpError::Zombie { pid: p },
                    source => DumpError::Seize { pid: p, source },
                });
            }
        };
        let kids = children(p)?;
        out.push((p, task));
        for k in kids {
            if !out.iter().any(|(q, _)| *q == k) && !zombies.contains(&k) && !queue.contains(&k) {
                queue.push_back(k);
            }
        }
    }
    settle_tree(&mut out, &mut zombies)?;
    Ok((out, zombies))
}

/// How many times [`settle_tree`] re-lists the frozen tree before it gives up.
const SETTLE_ROUNDS: usize = 8;

/// Re-lists the children and threads of every seized process until the listing matches what
/// is seized: a child that turned up (a fork that completed while its parent was being
/// stopped) is seized with its own descendants, a thread that turned up is refused clearly.
/// Each round lists every process again; the tree is stable once a round finds nothing new.
fn settle_tree(out: &mut Vec<(i32, Task)>, zombies: &mut Vec<i32>) -> Result<(), DumpError> {
    for round in 0..SETTLE_ROUNDS {
        let mut fresh = Vec::new();
        for (p, task) in out.iter() {
            let known = task.threads();
            let listed = compel_threads(*p)?;
            if let Some(tid) = listed.iter().find(|t| !known.contains(t)) {
                return Err(DumpError::Unstable {
                    pid: *p,
                    what: format!("thread {tid} appeared after the process was frozen"),
                });
            }
            for k in children(*p)? {
                if !out.iter().any(|(q, _)| *q == k) && !zombies.contains(&k) && !fresh.contains(&k)
                {
                    fresh.push(k);
                }
            }
        }
        if fresh.is_empty() {
            return Ok(());
        }
        tracing::info!(
            round,
            new = fresh.len(),
            "tree changed while it was seized; seizing newcomers"
        );
        let mut queue = std::collections::VecDeque::from(fresh);
        while let Some(p) = queue.pop_front() {
            let task = match Task::seize(p) {
                Ok(t) => t,
                Err(TaskError::Zombie { .. }) => {
                    zombies.push(p);
                    continue;
                }
                Err(TaskError::NoSuchTask { .. }) => continue,
                Err(TaskError::Died { .. }) => {
                    if matches!(compel::classify(p), Ok(TaskState::Zombie)) {
                        zombies.push(p);
                    }
                    continue;
                }
                Err(source) => return Err(DumpError::Seize { pid: p, source }),
            };
            let kids = children(p)?;
            out.push((p, task));
            for k in kids {
                if !out.iter().any(|(q, _)| *q == k) && !zombies.contains(&k) && !queue.contains(&k)
                {
                    queue.push_back(k);
                }
            }
        }
    }
    Err(DumpError::Unstable {
        pid: out.first().map_or(0, |(p, _)| *p),
        what: format!("still changing after {SETTLE_ROUNDS} rounds of seizing"),
    })
}

/// The thread ids listed in `/proc/PID/task`.
fn compel_threads(pid: i32) -> Result<Vec<i32>, DumpError> {
    let dir = format!("/proc/{pid}/task");
    let rd = std::fs::read_dir(&dir).map_err(file_err(format!("list {dir}")))?;
    Ok(rd
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect())
}

/// The children of every thread of `pid` (`/proc/PID/task/TID/children`).
fn children(pid: i32) -> Result<Vec<i32>, DumpError> {
    let dir = format!("/proc/{pid}/task");
    let rd = std::fs::read_dir(&dir).map_err(file_err(format!("list {dir}")))?;
    let mut kids = Vec::new();
    for e in rd.flatten() {
        let path = e.path().join("children");
        // A thread that exited meanwhile has no file any more.
        let Ok(text) = compel::proc::read_text(&path) else {
            continue;
        };
        kids.extend(
            text.split_whitespace()
                .filter_map(|w| w.parse::<i32>().ok()),
        );
    }
    kids.sort_unstable();
    kids.dedup();
    Ok(kids)
}

/// Everything collected from a frozen task.
struct Collected {
    pid: i32,
    stat: proc::ProcStat,
    vmas: Vec<mm::Vma>,
    fdinfo: Vec<criu_images::pb::FdinfoEntry>,
    exe_id: u32,
    cwd_id: u32,
    root_id: u32,
    umask: u32,
    auxv: Vec<u64>,
    /// Every thread's core, the leader first.
    cores: Vec<(i32, criu_images::pb::CoreEntry)>,
    /// Every thread's seccomp mode and filters (oldest first), in the order of `cores`.
    seccomp: Vec<(u32, Vec<SeccompFilter>)>,
    dumpable: i32,
    thp_disabled: bool,
    brk: u64,
    ns: Vec<(String, u64)>,
    own_ns: Vec<(String, u64)>,
}

/// Namespace kinds in the order CRIU numbers them in `ids`.
const NS_KINDS: [&str; 8] = ["pid", "net", "ipc", "uts", "time", "mnt", "user", "cgroup"];

fn ns_inodes(pid: &str) -> Vec<(String, u64)> {
    use std::os::unix::fs::MetadataExt;
    NS_KINDS
        .iter()
        .filter_map(|k| {
            let md = std::fs::metadata(format!("/proc/{pid}/ns/{k}")).ok()?;
            Some(((*k).to_string(), md.ino()))
        })
        .collect()
}

fn collect(
    task: &mut Task,
    pid: i32,
    opts: &DumpOptions,
    files: &mut files::FileTable,
    own_ns: &[(String, u64)],
) -> Result<Collected, DumpError> {
    let stat = proc::read_stat(pid)?;
    let status = proc::read_status(pid)?;
    // Namespaces are not dumped yet: a process in namespaces of its own would come back in
    // criu's, silently. The time namespace only shifts clocks and is recorded in timens-0.img.
    let ns = ns_inodes(&pid.to_string());
    for (kind, ino) in &ns {
        if kind != "time"
            && let Some((_, mine)) = own_ns.iter().find(|(k, _)| k == kind)
            && mine != ino
        {
            return Err(DumpError::Unsupported {
                what: format!(
                    "{pid} is in a {kind} namespace of its own (namespaces are not dumped yet)"
                ),
            });
        }
    }
    let maps = proc::read_smaps(pid)?;
    let exe_id = files.add_exe(pid)?;
    let vmas = mm::classify(pid, &maps, files)?;
    let fdinfo = files.add_fds(pid, opts.shell_job)?;
    if !opts.file_locks
        && let Some(l) = files.locks().first()
    {
        return Err(DumpError::Unsupported {
            what: format!(
                "pid {} holds file locks (fd {} first); dump them with --file-locks",
                l.pid, l.fd
            ),
        });
    }
    let cwd_id = files.add_dir_link(pid, "cwd")?;
    let root_id = files.add_dir_link(pid, "root")?;
    let auxv = proc::read_auxv(pid)?;
    let timers = proc::read_posix_timers(pid)?;
    let personality = proc::read_personality(pid)?;
    let loginuid = proc::read_number(pid, "loginuid").ok().map(|v| v as u32);
    let oom_score_adj = proc::read_number(pid, "oom_score_adj")
        .ok()
        .map(|v| v as i32);

    let (task_state, stop_signo) = match task.initial_stop(pid) {
        Some(InitialStop::GroupStopped(sig)) => (core::task_state::STOPPED, Some(sig as u32)),
        _ => (core::task_state::ALIVE, None),
    };
    let pending_shared = pending_signals(pid, true)?;
    let timer_ids: Vec<i32> = timers.iter().map(|t| t.id).collect();
    let inside = read_inside(task, pid, &timer_ids, opts.timeout, opts.inside_method)?;

    // The leader first, then the other threads in /proc/PID/task order.
    let mut tids = task.threads();
    tids.sort_by_key(|&t| t != pid);
    // What each other thread keeps for itself is read in that thread, through a scratch page.
    let others: Vec<(i32, inside::ThreadInside)> = if tids.len() > 1 {
        let scratch = inside::Scratch::map(task, pid)?;
        let mut v = Vec::new();
        let mut err = None;
        for &tid in tids.iter().filter(|&&t| t != pid) {
            match inside::read_thread_inside(task, tid, &scratch) {
                Ok(st) => v.push((tid, st)),
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        let unmapped = scratch.unmap(task, pid);
        if let Some(e) = err {
            return Err(e);
        }
        unmapped?;
        v
    } else {
        Vec::new()
    };
    let mut cores = Vec::with_capacity(tids.len());
    let mut seccomp = Vec::with_capacity(tids.len());
    for &tid in &tids {
        let leader = tid == pid;
        let (tstat, tstatus) = if leader {
            (stat.clone(), status.clone())
        } else {
            (proc::read_stat(tid)?, proc::read_status(tid)?)
        };
        let regs = task
            .regs(tid)
            .map_err(|source| DumpError::Registers { pid: tid, source })?;
        let xsave = task
            .xsave(tid)
            .map_err(|source| DumpError::Registers { pid: tid, source })?;
        let sigmask = task
            .sigmask(tid)
            .map_err(|source| DumpError::Registers { pid: tid, source })?;
        let (sas, pdeath_sig, clear_tid_addr) = if leader {
            (inside.sas, inside.pdeath_sig, inside.clear_tid_addr)
        } else {
            others
                .iter()
                .find(|(t, _)| *t == tid)
                .map(|(_, st)| *st)
                .unwrap_or_default()
        };
        let core = core::core_entry(&core::CoreInput {
            regs: &regs,
            xsave: &xsave,
            sigmask,
            stat: &tstat,
            status: &tstatus,
            inside: &inside,
            timers: &timers,
            personality,
            loginuid,
            oom_score_adj,
            robust_list: robust_list(tid),
            rseq: rseq_configuration(tid),
            task_state,
            stop_signo,
            pending_thread: pending_signals(tid, false)?,
            pending_shared: if leader {
                pending_shared.clone()
            } else {
                Vec::new()
            },
            leader,
            sas,
            pdeath_sig,
            clear_tid_addr,
        });
        cores.push((tid, core));
        let mode = tstatus.seccomp;
        let filters = if mode == 2 {
            seccomp_filters(tid)?
        } else {
            Vec::new()
        };
        seccomp.push((mode, filters));
    }
    Ok(Collected {
        pid,
        stat,
        vmas,
        fdinfo,
        exe_id,
        cwd_id,
        root_id,
        umask: status.umask,
        auxv,
        cores,
        seccomp,
        dumpable: inside.dumpable,
        thp_disabled: inside.thp_disabled,
        brk: inside.brk,
        ns,
        own_ns: own_ns.to_vec(),
    })
}

/// Environment variable the `criu` binary maps into [`DumpOptions::inside_method`]: `parasite`
/// (the default: the dump parasite, falling back to remote syscalls if infection fails) or
/// `syscalls` (compel remote syscalls only).
pub const INSIDE_METHOD_ENV: &str = "CRIU_DUMP_INSIDE";

fn read_inside(
    task: &mut Task,
    pid: i32,
    timer_ids: &[i32],
    timeout_s: u32,
    method: InsideMethod,
) -> Result<inside::InsideState, DumpError> {
    if method == InsideMethod::Parasite {
        let timeout = std::time::Duration::from_secs(u64::from(timeout_s.max(1)));
        match inside::read_inside_parasite(task, pid, timer_ids, timeout) {
            Ok(st) => {
                tracing::debug!(pid, "inside state read by the dump parasite");
                return Ok(st);
            }
            Err(e) => {
                tracing::warn!(
                    pid,
                    "dump parasite failed, reading with remote syscalls: {}",
                    chain(&e)
                );
            }
        }
    }
    let scratch = inside::Scratch::map(task, pid)?;
    let st = inside::read_inside(task, pid, &scratch, timer_ids);
    // Unmap before returning either way, so the task keeps no trace of us.
    let unmapped = scratch.unmap(task, pid);
    let st = st?;
    unmapped?;
    tracing::debug!(pid, "inside state read with remote syscalls");
    Ok(st)
}

/// `PTRACE_GET_RSEQ_CONFIGURATION` for a thread we hold stopped under ptrace.
fn rseq_configuration(tid: i32) -> Option<(u64, u32, u32)> {
    const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;
    #[repr(C)]
    #[derive(Default)]
    struct RseqConf {
        rseq_abi_pointer: u64,
        rseq_abi_size: u32,
        signature: u32,
        flags: u32,
        pad: u32,
    }
    let mut conf = RseqConf::default();
    // SAFETY: the request writes at most `size_of::<RseqConf>()` bytes (the size passed) into
    // `conf`, which lives for the call; `tid` is a thread this process holds under ptrace.
    let r = unsafe {
        libc::ptrace(
            PTRACE_GET_RSEQ_CONFIGURATION,
            tid,
            std::mem::size_of::<RseqConf>(),
            &mut conf as *mut RseqConf,
        )
    };
    (r > 0 && conf.rseq_abi_pointer != 0).then_some((
        conf.rseq_abi_pointer,
        conf.rseq_abi_size,
        conf.signature,
    ))
}

/// The pending signals of thread `tid` (held under ptrace): its own queue, or with `shared` the
/// process-wide one, as raw 128-byte `siginfo_t`s, read with `PTRACE_PEEKSIGINFO` without
/// dequeuing them.
fn pending_signals(tid: i32, shared: bool) -> Result<Vec<Vec<u8>>, DumpError> {
    const PTRACE_PEEKSIGINFO: libc::c_uint = 0x4209;
    const PTRACE_PEEKSIGINFO_SHARED: u32 = 1;
    const SIGINFO_SIZE: usize = 128;
    const BATCH: usize = 32;
    #[repr(C)]
    struct PeekArgs {
        off: u64,
        flags: u32,
        nr: i32,
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; SIGINFO_SIZE * BATCH];
    loop {
        let args = PeekArgs {
            off: out.len() as u64,
            flags: if shared { PTRACE_PEEKSIGINFO_SHARED } else { 0 },
            nr: BATCH as i32,
        };
        // SAFETY: the kernel reads `args` and writes at most `nr` siginfos (128 bytes each)
        // into `buf`, which holds BATCH of them; both live for the call, and `tid` is a thread
        // this process holds under ptrace.
        let n = unsafe {
            libc::ptrace(
                PTRACE_PEEKSIGINFO,
                tid,
                &args as *const PeekArgs,
                buf.as_mut_ptr(),
            )
        };
        if n < 0 {
            return Err(DumpError::Ptrace {
                pid: tid,
                what: "PEEKSIGINFO",
                source: nix::errno::Errno::last(),
            });
        }
        let n = n as usize;
        for i in 0..n.min(BATCH) {
            out.push(buf[i * SIGINFO_SIZE..(i + 1) * SIGINFO_SIZE].to_vec());
        }
        if n < BATCH {
            return Ok(out);
        }
    }
}

/// `get_robust_list(tid)`: the head address and its length.
fn robust_list(tid: i32) -> (u64, u32) {
    let mut head: u64 = 0;
    let mut len: libc::size_t = 0;
    // SAFETY: the kernel writes one pointer into `head` and one size into `len`, both locals.
    let r = unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            tid as libc::c_long,
            &mut head as *mut u64,
            &mut len as *mut libc::size_t,
        )
    };
    if r == 0 { (head, len as u32) } else { (0, 0) }
}

fn write_images(
    dir: &Path,
    procs: &[Collected],
    zombies: &[(i32, proc::ProcStat)],
    files: &files::FileTable,
) -> Result<mm::PageStats, DumpError> {
    let img = ImageDir::new(dir);
    let mut stats = mm::PageStats::default();
    let mut shared = mm::SharedObjects::default();
    let mut ids = KobjIds::default();
    let mut seccomp_table = SeccompTable::default();
    let mut fdinfo_written = Vec::new();
    let own_ns = &procs[0].own_ns;
    let in_tree = |p: i32| procs.iter().any(|c| c.pid == p);
    let mut tree = Vec::with_capacity(procs.len());
    for (k, c) in procs.iter().enumerate() {
        let pid = c.pid;
        let upid = pid as u32;
        let s = mm::dump_private_pages(pid, &c.vmas, dir, 1 + k as u32)?;
        stats.scanned += s.scanned;
        stats.written += s.written;
        shared.add(pid, &c.vmas)?;
        let heap_end = c
            .vmas
            .iter()
            .find(|v| v.entry.status & mm::status::HEAP != 0)
            .map(|v| v.entry.end);
        let mm_entry = MmEntry {
            mm_start_code: c.stat.start_code,
            mm_end_code: c.stat.end_code,
            mm_start_data: c.stat.start_data,
            mm_end_data: c.stat.end_data,
            mm_start_stack: c.stat.start_stack,
            mm_start_brk: c.stat.start_brk,
            mm_brk: if c.brk != 0 {
                c.brk
            } else {
                heap_end.unwrap_or(c.stat.start_brk)
            },
            mm_arg_start: c.stat.arg_start,
            mm_arg_end: c.stat.arg_end,
            mm_env_start: c.stat.env_start,
            mm_env_end: c.stat.env_end,
            exe_file_id: c.exe_id,
            mm_saved_auxv: c.auxv.clone(),
            vmas: c.vmas.iter().map(|v| v.entry.clone()).collect(),
            dumpable: Some(c.dumpable),
            aios: Vec::new(),
            thp_disabled: Some(c.thp_disabled),
        };
        img.write_mm(upid, &mm_entry)?;
        for ((tid, core), (mode, filters)) in c.cores.iter().zip(&c.seccomp) {
            let mut core = core.clone();
            if let Some(th) = core.thread_core.as_mut()
                && *mode != 0
            {
                th.seccomp_mode = Some(*mode as i32);
                th.seccomp_filter = seccomp_table.add(filters);
            }
            img.write_core(*tid as u32, &core)?;
        }
        let mut task_ids = task_ids(&c.ns, own_ns, 0);
        ids.assign(pid, &mut task_ids);
        img.write_ids(upid, &task_ids)?;
        img.write_fs(
            upid,
            &FsEntry {
                cwd_id: c.cwd_id,
                root_id: c.root_id,
                umask: Some(c.umask),
            },
        )?;
        // Processes sharing one descriptor table (CLONE_FILES) share one fdinfo image.
        if !fdinfo_written.contains(&task_ids.files_id) {
            img.write_fdinfo(task_ids.files_id, &c.fdinfo)?;
            fdinfo_written.push(task_ids.files_id);
        }
        let ppid = if k == 0 || !in_tree(c.stat.ppid) {
            0
        } else {
            c.stat.ppid as u32
        };
        tree.push(PstreeEntry {
            pid: upid,
            ppid,
            pgid: c.stat.pgid as u32,
            sid: c.stat.sid as u32,
            threads: c.cores.iter().map(|(t, _)| *t as u32).collect(),
        });
    }
    // Zombies: a pstree entry and a core with the task's end, as CRIU saves them.
    for (z, st) in zombies {
        tree.push(PstreeEntry {
            pid: *z as u32,
            ppid: if in_tree(st.ppid) { st.ppid as u32 } else { 0 },
            pgid: st.pgid as u32,
            sid: st.sid as u32,
            threads: vec![*z as u32],
        });
        img.write_core(*z as u32, &core::zombie_core(st))?;
    }
    let s = shared.write(dir, 1 + procs.len() as u32)?;
    stats.scanned += s.scanned;
    stats.written += s.written;
    files.write(dir)?;
    img.write_pstree(&tree)?;
    if !files.locks().is_empty() {
        criu_images::write_all(
            dir.join(names::FILE_LOCKS),
            magic::FILE_LOCKS,
            files.locks(),
        )?;
    }
    img.write_seccomp(&SeccompEntry {
        seccomp_filters: seccomp_table.filters,
    })?;
    img.write_timens(0, &timens_now())?;
    Ok(stats)
}

/// The seccomp filters of the tree as `seccomp.img` lists them: each once, naming the filter
/// installed before it (`prev`); chains that start alike share their entries.
#[derive(Default)]
struct SeccompTable {
    filters: Vec<SeccompFilter>,
    index: HashMap<FilterKey, u32>,
}

/// A filter as the table knows it: program, the filter before it, flags.
type FilterKey = (Vec<u8>, Option<u32>, Option<u32>);

impl SeccompTable {
    /// Adds a thread's chain (oldest first); returns the index of its newest filter.
    fn add(&mut self, chain: &[SeccompFilter]) -> Option<u32> {
        let mut prev = None;
        for f in chain {
            let key = (f.filter.clone(), prev, f.flags);
            let i = match self.index.get(&key) {
                Some(&i) => i,
                None => {
                    let i = self.filters.len() as u32;
                    self.filters.push(SeccompFilter {
                        filter: f.filter.clone(),
                        prev,
                        flags: f.flags,
                    });
                    self.index.insert(key, i);
                    i
                }
            };
            prev = Some(i);
        }
        prev
    }
}

/// The seccomp filters of the stopped thread `tid`, oldest first (the kernel numbers them from
/// the first installed), with their flags (`PTRACE_SECCOMP_GET_FILTER` and `_GET_METADATA`,
/// which need CAP_SYS_ADMIN).
fn seccomp_filters(tid: i32) -> Result<Vec<SeccompFilter>, DumpError> {
    const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;
    const PTRACE_SECCOMP_GET_METADATA: libc::c_uint = 0x420d;
    let fail = |what: &str, e: std::io::Error| DumpError::Unsupported {
        what: format!(
            "thread {tid} runs under seccomp filters and {what} failed: {e}{}",
            if e.raw_os_error() == Some(libc::EACCES) {
                " (reading them needs CAP_SYS_ADMIN)"
            } else {
                ""
            }
        ),
    };
    let mut out = Vec::new();
    for i in 0u64.. {
        // SAFETY: with a null buffer the kernel only returns the program's length.
        let n = unsafe {
            libc::ptrace(
                PTRACE_SECCOMP_GET_FILTER,
                tid,
                i as usize,
                std::ptr::null_mut::<u8>(),
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOENT) && i > 0 {
                break;
            }
            return Err(fail("PTRACE_SECCOMP_GET_FILTER", e));
        }
        let mut prog = vec![0u8; n as usize * 8];
        // SAFETY: the buffer holds the `n` 8-byte instructions the kernel said it has.
        let m = unsafe {
            libc::ptrace(
                PTRACE_SECCOMP_GET_FILTER,
                tid,
                i as usize,
                prog.as_mut_ptr(),
            )
        };
        if m != n {
            return Err(fail(
                "PTRACE_SECCOMP_GET_FILTER",
                std::io::Error::other(format!("filter {i} changed length")),
            ));
        }
        // struct seccomp_metadata { u64 filter_off; u64 flags; }
        let mut md = [i, 0u64];
        // SAFETY: the kernel reads the offset and writes the flags of the 16-byte record.
        let r = unsafe { libc::ptrace(PTRACE_SECCOMP_GET_METADATA, tid, 16usize, md.as_mut_ptr()) };
        if r < 0 {
            return Err(fail(
                "PTRACE_SECCOMP_GET_METADATA",
                std::io::Error::last_os_error(),
            ));
        }
        if notifies_user_space(&prog) {
            return Err(DumpError::Unsupported {
                what: format!(
                    "thread {tid}: seccomp filter {i} hands system calls to a supervisor \
                     (SECCOMP_RET_USER_NOTIF), whose listener cannot be dumped"
                ),
            });
        }
        out.push(SeccompFilter {
            filter: prog,
            prev: None,
            flags: (md[1] != 0).then_some(md[1] as u32),
        });
    }
    Ok(out)
}

/// Whether a seccomp program (`struct sock_filter`s: u16 code, u8 jt, u8 jf, u32 k) can
/// return `SECCOMP_RET_USER_NOTIF`: a `BPF_RET | BPF_K` with that action.
fn notifies_user_space(prog: &[u8]) -> bool {
    const BPF_RET_K: u16 = 0x06;
    const SECCOMP_RET_USER_NOTIF: u32 = 0x7fc0_0000;
    const SECCOMP_RET_ACTION_FULL: u32 = 0xffff_0000;
    prog.chunks_exact(8).any(|i| {
        let code = u16::from_le_bytes([i[0], i[1]]);
        let k = u32::from_le_bytes([i[4], i[5], i[6], i[7]]);
        code == BPF_RET_K && k & SECCOMP_RET_ACTION_FULL == SECCOMP_RET_USER_NOTIF
    })
}

/// Numbers the mm, fd table, fs and signal handlers of each process from 2 on (criu's own are
/// 1), giving the same number to processes that share one (kcmp).
///
/// kcmp also orders objects (consistently for a boot), so each kind keeps its representatives
/// sorted and a new process is placed by binary search: a few calls each instead of one per
/// process seen (a 50-process tree took 4,900 kcmp calls, each a trip into the kernel).
#[derive(Default)]
struct KobjIds {
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
    fn assign(&mut self, pid: i32, ids: &mut TaskKobjIdsEntry) {
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
/// numbered 1.. in [`NS_KINDS`] order after criu's own (a namespace shared with criu gets the
/// same number criu's has).
fn task_ids(ns: &[(String, u64)], own_ns: &[(String, u64)], own: u32) -> TaskKobjIdsEntry {
    let id_of = |kind: &str| -> Option<u32> {
        let ino = ns.iter().find(|(k, _)| k == kind)?.1;
        let mut next = 1u32;
        for k in NS_KINDS {
            let criu_ino = own_ns.iter().find(|(kk, _)| kk == k).map(|e| e.1);
            if k == kind && criu_ino == Some(ino) {
                return Some(next);
            }
            next += 1;
        }
        // A namespace of its own: numbered after criu's.
        Some(next + NS_KINDS.iter().position(|k| *k == kind).unwrap_or(0) as u32)
    };
    TaskKobjIdsEntry {
        vm_id: own,
        files_id: own,
        fs_id: own,
        sighand_id: own,
        pid_ns_id: id_of("pid"),
        net_ns_id: id_of("net"),
        ipc_ns_id: id_of("ipc"),
        uts_ns_id: id_of("uts"),
        mnt_ns_id: id_of("mnt"),
        user_ns_id: id_of("user"),
        cgroup_ns_id: id_of("cgroup"),
        time_ns_id: id_of("time"),
    }
}

fn timens_now() -> TimensEntry {
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

fn write_stats(dir: &Path, s: &mm::PageStats, frozen_us: u64) -> Result<(), DumpError> {
    let e = StatsEntry {
        dump: Some(DumpStatsEntry {
            freezing_time: 0,
            frozen_time: frozen_us as u32,
            memdump_time: 0,
            memwrite_time: 0,
            pages_scanned: s.scanned,
            pages_skipped_parent: 0,
            pages_written: s.written,
            ..DumpStatsEntry::default()
        }),
        restore: None,
    };
    criu_images::write_all(dir.join(names::STATS_DUMP), magic::STATS, [&e])?;
    Ok(())
}

fn write_inventory(dir: &Path, c: &Collected) -> Result<(), DumpError> {
    let inv = InventoryEntry {
        img_version: magic::IMAGES_V1_1,
        fdinfo_per_id: Some(true),
        root_ids: Some(task_ids(&c.own_ns, &c.own_ns, 1)),
        ns_per_id: Some(true),
        root_cg_set: None,
        lsmtype: Some(Lsmtype::NoLsm as i32),
        dump_uptime: None,
        pre_dump_mode: None,
        tcp_close: None,
        network_lock_method: Some(0),
        plugins_entry: Some(PluginsEntry::default()),
        dump_criu_run_id: Some(run_id()),
        allow_uprobes: None,
    };
    ImageDir::new(dir).write_inventory(&inv)?;
    Ok(())
}

/// A random UUID-shaped run id, as CRIU writes into the inventory.
fn run_id() -> String {
    let mut b = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b = t.to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
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

    #[test]
    fn user_notification_filters_are_recognised() {
        let insn = |code: u16, k: u32| {
            let mut b = code.to_le_bytes().to_vec();
            b.extend_from_slice(&[0, 0]);
            b.extend_from_slice(&k.to_le_bytes());
            b
        };
        let allow = [insn(0x20, 0), insn(0x06, 0x7fff_0000)].concat();
        let errno = [insn(0x20, 0), insn(0x06, 0x0005_0001)].concat();
        let notif = [
            insn(0x20, 0),
            insn(0x06, 0x7fc0_0000),
            insn(0x06, 0x7fff_0000),
        ]
        .concat();
        // A load whose constant looks like the action is no return.
        let load = insn(0x00, 0x7fc0_0000);
        assert!(!notifies_user_space(&allow));
        assert!(!notifies_user_space(&errno));
        assert!(!notifies_user_space(&load));
        assert!(notifies_user_space(&notif));
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
