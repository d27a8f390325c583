//! What is read from one frozen task, before anything is written.

use compel::{InitialStop, Task};

use criu_images::task_state;

use crate::options::DumpOptions;

use super::error::DumpError;
use super::{core, files, ids, pages, proc, self_state, thread, vma};

/// Everything collected from a frozen task.
pub(super) struct Collected {
    pub(super) pid: i32,
    pub(super) stat: proc::ProcStat,
    pub(super) vmas: Vec<vma::Vma>,
    /// `MADV_GUARD_INSTALL` ranges.
    pub(super) guards: Vec<(u64, u64)>,
    pub(super) fdinfo: Vec<criu_images::pb::FdinfoEntry>,
    pub(super) exe_id: u32,
    pub(super) cwd_id: u32,
    pub(super) root_id: u32,
    pub(super) umask: u32,
    pub(super) auxv: Vec<u64>,
    /// Every thread, the leader first.
    pub(super) threads: Vec<thread::ThreadDump>,
    pub(super) dumpable: i32,
    pub(super) thp_disabled: bool,
    pub(super) brk: u64,
    pub(super) ns: Vec<(String, u64)>,
    pub(super) own_ns: Vec<(String, u64)>,
}

/// What is read about a frozen task from `/proc` alone (no ptrace, no file table), before
/// [`collect`] takes the task.
pub(super) struct ProcView {
    stat: proc::ProcStat,
    status: proc::ProcStatus,
    ns: Vec<(String, u64)>,
    maps: Vec<proc::Mapping>,
    guards: Vec<(u64, u64)>,
    /// Read after the files in the order of [`collect`]; their errors are reported then.
    auxv: Result<Vec<u64>, DumpError>,
    timers: Result<Vec<proc::PosixTimerInfo>, DumpError>,
    personality: Result<u32, DumpError>,
    loginuid: Option<u32>,
    oom_score_adj: Option<i32>,
}

/// Reads the [`ProcView`] of `pid`, refusing its namespaces first as [`collect`] did before it
/// read its memory map; the first error in that order.
pub(super) fn read_proc(
    pid: i32,
    own_ns: &[(String, u64)],
    root_ns: &[(String, u64)],
) -> Result<ProcView, DumpError> {
    let stat = proc::read_stat(pid)?;
    let status = proc::read_status(pid)?;
    let ns = ids::ns_inodes(&pid.to_string());
    ids::refuse_own_namespaces(pid, &ns, own_ns, root_ns)?;
    let maps = proc::read_smaps(pid)?;
    let guards = pages::guard_regions(pid)?;
    Ok(ProcView {
        stat,
        status,
        ns,
        maps,
        guards,
        auxv: proc::read_auxv(pid).map_err(DumpError::from),
        timers: proc::read_posix_timers(pid).map_err(DumpError::from),
        personality: proc::read_personality(pid).map_err(DumpError::from),
        loginuid: proc::read_number(pid, "loginuid").ok().map(|v| v as u32),
        oom_score_adj: proc::read_number(pid, "oom_score_adj")
            .ok()
            .map(|v| v as i32),
    })
}

/// Collects every seized task into `procs`, in order, on this thread (the tracer: ptrace
/// requests must come from the thread that attached).
///
/// Reading the [`ProcView`]s ahead on a second thread was measured slower on this 2-CPU
/// machine kind: the infect cycle already keeps both CPUs busy (the tracer on one, the tracee
/// on the other), and a reader on either delays the tracee's wake-ups.
pub(super) fn collect_all(
    tasks: &mut [(i32, Task)],
    procs: &mut Vec<Collected>,
    opts: &DumpOptions,
    files: &mut files::FileTable,
    own_ns: &[(String, u64)],
    root_ns: &[(String, u64)],
) -> Result<(), DumpError> {
    for (p, task) in tasks.iter_mut() {
        let view = read_proc(*p, own_ns, root_ns);
        procs.push(collect(task, *p, opts, files, own_ns, view)?);
    }
    Ok(())
}

/// Collects one frozen task: `view` is its [`read_proc`] (or that function's error, reported
/// after the task's restartable sequence was aborted, as before anything else), read after
/// the tasks before it were cured.
pub(super) fn collect(
    task: &mut Task,
    pid: i32,
    opts: &DumpOptions,
    files: &mut files::FileTable,
    own_ns: &[(String, u64)],
    view: Result<ProcView, DumpError>,
) -> Result<Collected, DumpError> {
    let t0 = std::time::Instant::now();
    // First, before anything runs in the task.
    thread::rseq_abort(task, pid)?;
    let ProcView {
        stat,
        status,
        ns,
        maps,
        guards,
        auxv,
        timers,
        personality,
        loginuid,
        oom_score_adj,
    } = view?;
    let exe_id = files.add_exe(pid)?;
    let mut vmas = vma::classify(pid, &maps, files)?;
    let fdinfo = files.add_fds(pid, opts.shell_job)?;
    crate::files::packet::ring_areas(pid, vmas.iter_mut().map(|v| &mut v.entry), &fdinfo)?;
    if !opts.file_locks
        && let Some(l) = files.locks().first()
    {
        return Err(DumpError::FileLocks {
            pid: l.pid,
            fd: l.fd,
        });
    }
    let cwd_id = files.add_dir_link(pid, "cwd")?;
    let root_id = files.add_dir_link(pid, "root")?;
    let auxv = auxv?;
    let timers = timers?;
    let personality = personality?;

    let (task_state, stop_signo) = match task.initial_stop(pid) {
        Some(InitialStop::GroupStopped(sig)) => (task_state::STOPPED, Some(sig as u32)),
        _ => (task_state::ALIVE, None),
    };
    let pending_shared = thread::pending_signals(pid, true)?;
    let timer_ids: Vec<i32> = timers.iter().map(|t| t.id).collect();
    let t_proc = t0.elapsed();
    let own = self_state::read(task, pid, &timer_ids, opts.timeout, opts.inside_method)?;
    let t_inside = t0.elapsed();

    let threads = thread::dump_threads(
        task,
        pid,
        &stat,
        &status,
        &core::ProcessInput {
            self_state: &own,
            timers: &timers,
            personality,
            loginuid,
            oom_score_adj,
            task_state,
            stop_signo,
            pending_shared,
        },
    )?;
    tracing::debug!(
        pid,
        proc_us = t_proc.as_micros() as u64,
        inside_us = (t_inside - t_proc).as_micros() as u64,
        threads_us = (t0.elapsed() - t_inside).as_micros() as u64,
        "collected"
    );
    Ok(Collected {
        pid,
        stat,
        vmas,
        guards,
        fdinfo,
        exe_id,
        cwd_id,
        root_id,
        umask: status.umask,
        auxv,
        threads,
        dumpable: own.dumpable,
        thp_disabled: own.thp_disabled,
        brk: own.brk,
        ns,
        own_ns: own_ns.to_vec(),
    })
}
