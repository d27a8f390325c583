//! Per-thread state of a frozen process: registers (general and xsave), the blocked mask, rseq,
//! the robust list, queued signals, and what each thread keeps for itself (alternate signal
//! stack, parent-death signal, clear-tid address, read in that thread through a scratch page);
//! one `core` entry per thread, the leader first, with its seccomp mode and filters.
// Unsafe code: reads a thread's robust futex list with the raw get_robust_list system call.
#![allow(unsafe_code)]

use compel::Task;
use criu_images::pb::{CoreEntry, SeccompFilter};

use super::core::{self, CoreInput, ProcessInput};
use super::error::DumpError;
use super::proc::{self, ProcStat, ProcStatus};
use super::seccomp;
use super::self_state::{self, Scratch, ThreadSelfState};

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
/// [`DumpError::Proc`], [`DumpError::SeccompUnreadable`], [`DumpError::SeccompUserNotif`].
pub(super) fn dump_threads(
    task: &mut Task,
    pid: i32,
    leader_stat: &ProcStat,
    leader_status: &ProcStatus,
    process: &ProcessInput<'_>,
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
            (leader_stat.clone(), leader_status.clone())
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
            process.self_state.leader
        } else {
            others
                .iter()
                .find(|(t, _)| *t == tid)
                .map(|(_, st)| *st)
                .unwrap_or_default()
        };
        let core = core::core_entry(&CoreInput {
            process,
            regs: &regs,
            xsave: &xsave,
            sigmask,
            stat: &stat,
            status: &status,
            robust_list: robust_list(tid),
            rseq: rseq_configuration(tid),
            pending_thread: pending_signals(tid, false)?,
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

/// The rseq registration of a thread we hold stopped under ptrace (compel's
/// `PTRACE_GET_RSEQ_CONFIGURATION`): `(pointer, size, signature)`, `None` when it has none or
/// the kernel cannot say.
fn rseq_configuration(tid: i32) -> Option<(u64, u32, u32)> {
    compel::ptrace::rseq_configuration(tid)
        .ok()
        .flatten()
        .map(|c| (c.abi_pointer, c.abi_size, c.signature))
}

/// The pending signals of thread `tid` (held under ptrace): its own queue, or with `shared` the
/// process-wide one, as raw 128-byte `siginfo_t`s, read without dequeuing them (compel's
/// `PTRACE_PEEKSIGINFO`).
pub(super) fn pending_signals(tid: i32, shared: bool) -> Result<Vec<Vec<u8>>, DumpError> {
    let queue = if shared {
        compel::ptrace::SigQueue::Shared
    } else {
        compel::ptrace::SigQueue::Thread
    };
    compel::ptrace::peek_siginfo(tid, queue)
        .map(|v| v.iter().map(|si| si.to_vec()).collect())
        .map_err(|e| DumpError::Ptrace {
            pid: tid,
            what: "PEEKSIGINFO",
            source: e,
        })
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
