//! What is read from one frozen task, before anything is written.

use compel::{InitialStop, Task};

use criu_images::task_state;

use crate::options::DumpOptions;

use super::{DumpError, core, files, ids, pages, proc, self_state, thread, vma};

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

pub(super) fn collect(
    task: &mut Task,
    pid: i32,
    opts: &DumpOptions,
    files: &mut files::FileTable,
    own_ns: &[(String, u64)],
    root_ns: &[(String, u64)],
) -> Result<Collected, DumpError> {
    // First, before anything runs in the task.
    thread::rseq_abort(task, pid)?;
    let stat = proc::read_stat(pid)?;
    let status = proc::read_status(pid)?;
    let ns = ids::ns_inodes(&pid.to_string());
    ids::refuse_own_namespaces(pid, &ns, own_ns, root_ns)?;
    let maps = proc::read_smaps(pid)?;
    let exe_id = files.add_exe(pid)?;
    let vmas = vma::classify(pid, &maps, files)?;
    let guards = pages::guard_regions(pid)?;
    let fdinfo = files.add_fds(pid, opts.shell_job)?;
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
    let auxv = proc::read_auxv(pid)?;
    let timers = proc::read_posix_timers(pid)?;
    let personality = proc::read_personality(pid)?;
    let loginuid = proc::read_number(pid, "loginuid").ok().map(|v| v as u32);
    let oom_score_adj = proc::read_number(pid, "oom_score_adj")
        .ok()
        .map(|v| v as i32);

    let (task_state, stop_signo) = match task.initial_stop(pid) {
        Some(InitialStop::GroupStopped(sig)) => (task_state::STOPPED, Some(sig as u32)),
        _ => (task_state::ALIVE, None),
    };
    let pending_shared = thread::pending_signals(pid, true)?;
    let timer_ids: Vec<i32> = timers.iter().map(|t| t.id).collect();
    let own = self_state::read(task, pid, &timer_ids, opts.timeout, opts.inside_method)?;

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
