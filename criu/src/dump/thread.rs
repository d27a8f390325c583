//! Per-thread state of a frozen process: registers (general and xsave), the blocked mask, rseq,
//! the robust list, queued signals, and what each thread keeps for itself (alternate signal
//! stack, parent-death signal, clear-tid address, read in that thread through a scratch page);
//! one `core` entry per thread, the leader first, with its seccomp mode and filters.

use compel::Task;
use criu_images::pb::{CoreEntry, SeccompFilter};

use super::DumpError;
use super::core::{self, CoreInput};
use super::proc::{self, PosixTimerInfo, ProcStat, ProcStatus};
use super::seccomp;
use super::self_state::{self, Scratch, SelfState, ThreadSelfState};

/// What the threads of one process share: the leader's `/proc` files, the process-wide state
/// reads about itself, and the process-wide signal queue.
pub(super) struct ProcessState<'a> {
    /// The leader's `/proc/PID/stat`.
    pub stat: &'a ProcStat,
    /// The leader's `/proc/PID/status`.
    pub status: &'a ProcStatus,
    /// What the process reads about itself (the leader's own thread state included).
    pub self_state: &'a SelfState,
    /// `/proc/PID/timers`.
    pub timers: &'a [PosixTimerInfo],
    /// `/proc/PID/personality`.
    pub personality: u32,
    /// `/proc/PID/loginuid`.
    pub loginuid: Option<u32>,
    /// `/proc/PID/oom_score_adj`.
    pub oom_score_adj: Option<i32>,
    /// [`criu_images::task_state`] of the process.
    pub task_state: u32,
    /// The stop signal of a stopped process.
    pub stop_signo: Option<u32>,
    /// Signals pending for the process, raw `siginfo_t`s.
    pub pending_shared: Vec<Vec<u8>>,
}

/// One thread as the dump saves it.
pub(super) struct ThreadDump {
    /// Thread id.
    pub tid: i32,
    /// Its `core` entry (seccomp fields still unset: they index the tree's filter table).
    pub core: CoreEntry,
    /// Seccomp mode (0 none, 1 strict, 2 filter).
    pub seccomp_mode: u32,
    /// Its seccomp filters, oldest first.
    pub seccomp_filters: Vec<SeccompFilter>,
}

/// Reads every thread of the seized process `pid`, the leader first, then the others in
/// `/proc/PID/task` order.
///
/// # Errors
/// [`DumpError::Registers`], [`DumpError::Ptrace`], [`DumpError::Remote`],
/// [`DumpError::Proc`], [`DumpError::Unsupported`] for seccomp filters that cannot be read.
pub(super) fn dump_threads(
    task: &mut Task,
    pid: i32,
    p: &ProcessState<'_>,
) -> Result<Vec<ThreadDump>, DumpError> {
    let mut tids = task.threads();
    tids.sort_by_key(|&t| t != pid);
    // What each other thread keeps for itself is read in that thread, through a scratch page.
    let others: Vec<(i32, ThreadSelfState)> = if tids.len() > 1 {
        let scratch = Scratch::map(task, pid)?;
        let mut v = Vec::new();
        let mut err = None;
        for &tid in tids.iter().filter(|&&t| t != pid) {
            match self_state::read_thread(task, tid, &scratch) {
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
    let mut out = Vec::with_capacity(tids.len());
    for &tid in &tids {
        let leader = tid == pid;
        let (stat, status) = if leader {
            (p.stat.clone(), p.status.clone())
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
        let own = if leader {
            p.self_state.leader
        } else {
            others
                .iter()
                .find(|(t, _)| *t == tid)
                .map(|(_, st)| *st)
                .unwrap_or_default()
        };
        let core = core::core_entry(&CoreInput {
            regs: &regs,
            xsave: &xsave,
            sigmask,
            stat: &stat,
            status: &status,
            self_state: p.self_state,
            timers: p.timers,
            personality: p.personality,
            loginuid: p.loginuid,
            oom_score_adj: p.oom_score_adj,
            robust_list: robust_list(tid),
            rseq: rseq_configuration(tid),
            task_state: p.task_state,
            stop_signo: p.stop_signo,
            pending_thread: pending_signals(tid, false)?,
            pending_shared: if leader {
                p.pending_shared.clone()
            } else {
                Vec::new()
            },
            leader,
            thread: own,
        });
        let mode = status.seccomp;
        let filters = if mode == 2 {
            seccomp::filters(tid)?
        } else {
            Vec::new()
        };
        out.push(ThreadDump {
            tid,
            core,
            seccomp_mode: mode,
            seccomp_filters: filters,
        });
    }
    Ok(out)
}

/// Moves every thread of `pid` that was stopped inside an rseq critical section to the
/// section's abort handler, as the kernel does when it preempts or signals such a thread (and
/// clears `rseq_cs`, which it does by itself once the thread runs outside the section). Must
/// run before any code is run in the task: that makes the kernel clear `rseq_cs` and the
/// section could no longer be found. The new instruction pointer is both dumped and, for a
/// task left running, where it resumes.
///
/// # Errors
/// [`DumpError::Registers`] if a thread's registers cannot be read or set.
pub(super) fn rseq_abort(task: &mut Task, pid: i32) -> Result<(), DumpError> {
    for tid in task.threads() {
        let Some((area, _, _)) = rseq_configuration(tid) else {
            continue;
        };
        // struct rseq: cpu_id_start, cpu_id (u32 each), then the rseq_cs pointer (u64).
        let mut w = [0u8; 8];
        if task.read_mem(compel::RemoteAddr(area + 8), &mut w).is_err() {
            continue;
        }
        let cs = u64::from_le_bytes(w);
        if cs == 0 {
            continue;
        }
        // struct rseq_cs: version, flags (u32 each), start_ip, post_commit_offset, abort_ip.
        let mut b = [0u8; 32];
        if task.read_mem(compel::RemoteAddr(cs), &mut b).is_err() {
            continue;
        }
        let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let (start, len, abort) = (word(8), word(16), word(24));
        let mut regs = task
            .regs(tid)
            .map_err(|source| DumpError::Registers { pid: tid, source })?;
        if regs.rip >= start && regs.rip - start < len {
            tracing::info!(
                pid,
                tid,
                ip = regs.rip,
                abort,
                "thread inside an rseq critical section: restarting it at the abort handler"
            );
            regs.rip = abort;
            task.set_regs(tid, &regs)
                .map_err(|source| DumpError::Registers { pid: tid, source })?;
        }
    }
    Ok(())
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
pub(super) fn pending_signals(tid: i32, shared: bool) -> Result<Vec<Vec<u8>>, DumpError> {
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
