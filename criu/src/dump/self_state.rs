//! What only the task itself can read about itself, read from inside it: signal handlers,
//! interval and POSIX timers, alternate signal stack, resource limits (so a dumper without
//! `CAP_SYS_RESOURCE` can dump another uid's task), parent-death signal, dumpable,
//! child-subreaper, securebits, THP, the clear-tid address, and the program break.
//!
//! Two ways, same result ([`SelfState`]), chosen by [`read`]:
//!
//! - [`read_by_parasite`]: infect the task with criu's dump parasite
//!   (`parasite-blobs/parasites/dump`) through compel, run its one `CMD_DUMP_MISC` command, cure.
//! - [`read_by_syscalls`]: compel remote syscalls, one per value; results the kernel writes into
//!   memory land in a scratch page mapped in the task for the duration ([`Scratch`]). The dump
//!   falls back to this when infection is not possible.
//!
//! What each thread keeps for itself ([`ThreadSelfState`]) is read in that thread with
//! [`read_thread`].

use compel::infect::{InfectError, InfectOptions, Parasite, RpcError};
use compel::{RemoteAddr, Task, TaskError};
use compel_arch::nr;
use parasite_blobs::dump::proto::{CMD_DUMP_MISC, MAX_TIMERS, Misc};

use super::error::DumpError;
use crate::errno::chain;
use crate::options::InsideMethod;

/// A page mapped in the task for syscall results.
#[derive(Debug)]
pub struct Scratch {
    addr: u64,
}

/// A thread's alternate signal stack (`stack_t`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AltStack {
    /// `ss_sp`.
    pub sp: u64,
    /// `ss_flags`.
    pub flags: u32,
    /// `ss_size`.
    pub size: u64,
}

/// What each thread keeps for itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadSelfState {
    /// `sigaltstack`.
    pub altstack: AltStack,
    /// `PR_GET_PDEATHSIG`.
    pub pdeath_sig: u32,
    /// `PR_GET_TID_ADDRESS`.
    pub clear_tid_addr: u64,
}

/// One POSIX timer as `timer_gettime` and `timer_getoverrun` give it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PosixTimerState {
    /// Timer id.
    pub id: i32,
    /// Interval sec, nsec, value sec, nsec.
    pub times: [u64; 4],
    /// Overrun count.
    pub overrun: u32,
}

/// What the task reads about itself, process-wide (and its leader's own thread state).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SelfState {
    /// `(handler, flags, restorer, mask)` of signals 1..=64 in CRIU's order (SIGKILL and SIGSTOP
    /// skipped: 62 entries).
    pub sigactions: Vec<[u64; 4]>,
    /// `ITIMER_REAL`, `ITIMER_VIRTUAL`, `ITIMER_PROF` as `(interval sec, usec, value sec, usec)`.
    pub itimers: [[u64; 4]; 3],
    /// POSIX timers.
    pub posix_timers: Vec<PosixTimerState>,
    /// `(soft, hard)` for each `RLIMIT_*`, 0..16.
    pub rlimits: Vec<(u64, u64)>,
    /// `PR_GET_DUMPABLE`.
    pub dumpable: i32,
    /// `PR_GET_CHILD_SUBREAPER`.
    pub child_subreaper: bool,
    /// `PR_GET_SECUREBITS`.
    pub securebits: u32,
    /// `PR_GET_THP_DISABLE`.
    pub thp_disabled: bool,
    /// `MEMBARRIER_CMD_GET_REGISTRATIONS`: the registration commands in effect.
    pub membarrier_mask: u32,
    /// `brk(0)`.
    pub brk: u64,
    /// The leader's own thread state.
    pub leader: ThreadSelfState,
}

/// Environment variable the `criu` binary maps into [`DumpOptions::inside_method`]: `parasite`
/// (the default: the dump parasite, falling back to remote syscalls if infection fails) or
/// `syscalls` (compel remote syscalls only).
///
/// [`DumpOptions::inside_method`]: crate::options::DumpOptions::inside_method
pub const INSIDE_METHOD_ENV: &str = "CRIU_DUMP_INSIDE";

/// Reads the task's [`SelfState`] with the dump parasite or, if that fails or `method` says
/// [`InsideMethod::Syscalls`], with remote syscalls; `timer_ids` are the POSIX timer
/// ids listed in `/proc/PID/timers`, `timeout_s` bounds every wait for the parasite.
///
/// # Errors
/// As [`read_by_syscalls`] (the parasite's errors are logged and fall back).
pub fn read(
    task: &mut Task,
    pid: i32,
    timer_ids: &[i32],
    timeout_s: u32,
    method: InsideMethod,
) -> Result<SelfState, DumpError> {
    if method == InsideMethod::Parasite {
        let timeout = std::time::Duration::from_secs(u64::from(timeout_s.max(1)));
        match read_by_parasite(task, pid, timer_ids, timeout) {
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
    let scratch = Scratch::map(task, pid)?;
    let st = read_by_syscalls(task, pid, &scratch, timer_ids);
    // Unmap before returning either way, so the task keeps no trace of us.
    let unmapped = scratch.unmap(task, pid);
    let st = st?;
    unmapped?;
    tracing::debug!(pid, "inside state read with remote syscalls");
    Ok(st)
}

/// Runs syscall `nr` in thread `tid` (`what` names it in errors); the kernel's raw result.
fn remote(
    task: &mut Task,
    tid: i32,
    what: &'static str,
    nr: usize,
    args: [u64; 6],
) -> Result<i64, DumpError> {
    task.remote_syscall_in(tid, nr, args)
        .map_err(|source| DumpError::Remote {
            pid: tid,
            what,
            source,
        })
}

/// [`remote`] for a syscall that must succeed: a negative result is
/// [`DumpError::RemoteFailed`].
fn remote_ok(
    task: &mut Task,
    tid: i32,
    what: &'static str,
    nr: usize,
    args: [u64; 6],
) -> Result<i64, DumpError> {
    let r = remote(task, tid, what, nr, args)?;
    if r < 0 {
        return Err(DumpError::RemoteFailed {
            pid: tid,
            what,
            errno: -r as i32,
        });
    }
    Ok(r)
}

impl Scratch {
    /// Maps one read-write anonymous page in the task.
    ///
    /// # Errors
    /// [`DumpError::Remote`], [`DumpError::RemoteFailed`].
    pub fn map(task: &mut Task, pid: i32) -> Result<Scratch, DumpError> {
        let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
        let addr = remote_ok(
            task,
            pid,
            "mmap a scratch page",
            nr::MMAP,
            [0, 4096, prot, flags, u64::MAX, 0],
        )?;
        Ok(Scratch { addr: addr as u64 })
    }

    /// Unmaps the page.
    ///
    /// # Errors
    /// [`DumpError::Remote`], [`DumpError::RemoteFailed`].
    pub fn unmap(self, task: &mut Task, pid: i32) -> Result<(), DumpError> {
        remote_ok(
            task,
            pid,
            "munmap the scratch page",
            nr::MUNMAP,
            [self.addr, 4096, 0, 0, 0, 0],
        )?;
        Ok(())
    }

    fn read(&self, task: &mut Task, pid: i32, len: usize) -> Result<Vec<u8>, DumpError> {
        let mut buf = vec![0u8; len];
        task.read_mem(RemoteAddr(self.addr), &mut buf)
            .map_err(|source: TaskError| DumpError::Remote {
                pid,
                what: "read the scratch page",
                source,
            })?;
        Ok(buf)
    }

    fn clear(&self, task: &mut Task, pid: i32, len: usize) -> Result<(), DumpError> {
        task.write_mem(RemoteAddr(self.addr), &vec![0u8; len])
            .map_err(|source| DumpError::Remote {
                pid,
                what: "clear the scratch page",
                source,
            })
    }
}

fn words(b: &[u8]) -> Vec<u64> {
    b.chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect()
}

/// Reads the task's [`SelfState`] through remote syscalls; `timer_ids` are the POSIX timer ids
/// listed in `/proc/PID/timers`.
///
/// # Errors
/// [`DumpError::Remote`] if a remote syscall cannot run, [`DumpError::RemoteFailed`] if one
/// that must succeed fails.
pub fn read_by_syscalls(
    task: &mut Task,
    pid: i32,
    scratch: &Scratch,
    timer_ids: &[i32],
) -> Result<SelfState, DumpError> {
    let s = scratch.addr;
    let mut st = SelfState::default();
    for sig in 1..=64u64 {
        if sig == libc::SIGKILL as u64 || sig == libc::SIGSTOP as u64 {
            continue;
        }
        remote_ok(
            task,
            pid,
            "rt_sigaction",
            nr::RT_SIGACTION,
            [sig, 0, s, 8, 0, 0],
        )?;
        let w = words(&scratch.read(task, pid, 32)?);
        st.sigactions.push([w[0], w[1], w[2], w[3]]);
    }
    for (i, which) in [libc::ITIMER_REAL, libc::ITIMER_VIRTUAL, libc::ITIMER_PROF]
        .into_iter()
        .enumerate()
    {
        remote_ok(
            task,
            pid,
            "getitimer",
            nr::GETITIMER,
            [which as u64, s, 0, 0, 0, 0],
        )?;
        let w = words(&scratch.read(task, pid, 32)?);
        st.itimers[i] = [w[0], w[1], w[2], w[3]];
    }
    for &id in timer_ids {
        remote_ok(
            task,
            pid,
            "timer_gettime",
            nr::TIMER_GETTIME,
            [id as u64, s, 0, 0, 0, 0],
        )?;
        let w = words(&scratch.read(task, pid, 32)?);
        let overrun = remote_ok(
            task,
            pid,
            "timer_getoverrun",
            nr::TIMER_GETOVERRUN,
            [id as u64, 0, 0, 0, 0, 0],
        )?;
        st.posix_timers.push(PosixTimerState {
            id,
            times: [w[0], w[1], w[2], w[3]],
            overrun: overrun as u32,
        });
    }
    for res in 0..16u64 {
        remote_ok(task, pid, "prlimit64", nr::PRLIMIT64, [0, res, 0, s, 0, 0])?;
        let w = words(&scratch.read(task, pid, 16)?);
        st.rlimits.push((w[0], w[1]));
    }
    st.dumpable = remote_ok(
        task,
        pid,
        "prctl(PR_GET_DUMPABLE)",
        nr::PRCTL,
        [libc::PR_GET_DUMPABLE as u64, 0, 0, 0, 0, 0],
    )? as i32;
    scratch.clear(task, pid, 8)?;
    remote_ok(
        task,
        pid,
        "prctl(PR_GET_CHILD_SUBREAPER)",
        nr::PRCTL,
        [libc::PR_GET_CHILD_SUBREAPER as u64, s, 0, 0, 0, 0],
    )?;
    st.child_subreaper = words(&scratch.read(task, pid, 8)?)[0] as u32 != 0;
    st.securebits = remote_ok(
        task,
        pid,
        "prctl(PR_GET_SECUREBITS)",
        nr::PRCTL,
        [libc::PR_GET_SECUREBITS as u64, 0, 0, 0, 0, 0],
    )? as u32;
    st.thp_disabled = remote_ok(
        task,
        pid,
        "prctl(PR_GET_THP_DISABLE)",
        nr::PRCTL,
        [libc::PR_GET_THP_DISABLE as u64, 0, 0, 0, 0, 0],
    )? != 0;
    // MEMBARRIER_CMD_GET_REGISTRATIONS; a kernel without it leaves the mask 0.
    let r = remote(
        task,
        pid,
        "membarrier",
        nr::MEMBARRIER,
        [1 << 9, 0, 0, 0, 0, 0],
    )?;
    st.membarrier_mask = if r >= 0 { r as u32 } else { 0 };
    st.brk = remote_ok(task, pid, "brk", nr::BRK, [0; 6])? as u64;
    st.leader = read_thread(task, pid, scratch)?;
    Ok(st)
}

/// Why the dump parasite could not deliver.
#[derive(Debug, thiserror::Error)]
pub enum ParasiteError {
    /// Infection (or cure) failed.
    #[error("dump parasite in {pid}")]
    Infect {
        /// The task.
        pid: i32,
        /// Why.
        #[source]
        source: InfectError,
    },
    /// The command failed.
    #[error("dump parasite command in {pid}")]
    Rpc {
        /// The task.
        pid: i32,
        /// Why.
        #[source]
        source: RpcError,
    },
    /// More POSIX timers than one command carries.
    #[error("{pid} has {n} POSIX timers, the dump parasite reads at most {max}")]
    TooManyTimers {
        /// The task.
        pid: i32,
        /// How many.
        n: usize,
        /// The limit.
        max: usize,
    },
}

/// Reads the task's [`SelfState`] with the dump parasite: infect, one command, cure. The task
/// stays seized.
///
/// # Errors
/// [`ParasiteError`]; the task is cured (left as it was) in every case compel can cure it.
///
/// `timeout` bounds every wait for the parasite (`--timeout`).
pub fn read_by_parasite(
    task: &mut Task,
    pid: i32,
    timer_ids: &[i32],
    timeout: std::time::Duration,
) -> Result<SelfState, ParasiteError> {
    if timer_ids.len() > MAX_TIMERS {
        return Err(ParasiteError::TooManyTimers {
            pid,
            n: timer_ids.len(),
            max: MAX_TIMERS,
        });
    }
    let blob = parasite_blobs::dump::blob();
    let opts = InfectOptions {
        timeout,
        ..InfectOptions::default()
    };
    let mut p = Parasite::infect(&mut *task, &blob, opts)
        .map_err(|source| ParasiteError::Infect { pid, source })?;
    let mut args = Misc {
        n_timers: timer_ids.len() as u32,
        ..Misc::default()
    };
    args.timer_ids[..timer_ids.len()].copy_from_slice(timer_ids);
    let answer: Result<Misc, RpcError> = p.call_with(CMD_DUMP_MISC, &args);
    // Cure before looking at the answer, so the task is back in its own code either way.
    let cured = p.cure();
    let m = answer.map_err(|source| ParasiteError::Rpc { pid, source })?;
    cured.map_err(|source| ParasiteError::Infect { pid, source })?;
    let mut st = SelfState::default();
    for sig in 1..=64usize {
        if sig == libc::SIGKILL as usize || sig == libc::SIGSTOP as usize {
            continue;
        }
        st.sigactions.push(m.sigactions[sig - 1]);
    }
    st.itimers = m.itimers;
    for (i, &id) in timer_ids.iter().enumerate() {
        st.posix_timers.push(PosixTimerState {
            id,
            times: m.timers[i],
            overrun: m.overruns[i],
        });
    }
    st.leader.altstack = AltStack {
        sp: m.sas[0],
        flags: m.sas[1] as u32,
        size: m.sas[2],
    };
    st.rlimits = m.rlimits.iter().map(|r| (r[0], r[1])).collect();
    st.leader.pdeath_sig = m.pdeath_sig;
    st.dumpable = m.dumpable as i32;
    st.child_subreaper = m.child_subreaper != 0;
    st.securebits = m.securebits;
    st.thp_disabled = m.thp_disabled != 0;
    st.membarrier_mask = m.membarrier_mask;
    st.leader.clear_tid_addr = m.clear_tid_addr;
    st.brk = m.brk;
    Ok(st)
}

/// Reads the [`ThreadSelfState`] of thread `tid` with remote syscalls run in that thread.
///
/// # Errors
/// [`DumpError::Remote`], [`DumpError::RemoteFailed`].
pub fn read_thread(
    task: &mut Task,
    tid: i32,
    scratch: &Scratch,
) -> Result<ThreadSelfState, DumpError> {
    let s = scratch.addr;
    remote_ok(
        task,
        tid,
        "sigaltstack",
        nr::SIGALTSTACK,
        [0, s, 0, 0, 0, 0],
    )?;
    let b = scratch.read(task, tid, 24)?;
    let w = words(&b);
    let altstack = AltStack {
        sp: w[0],
        flags: u32::from_le_bytes(b[8..12].try_into().unwrap_or([0; 4])),
        size: w[2],
    };
    scratch.clear(task, tid, 8)?;
    remote_ok(
        task,
        tid,
        "prctl(PR_GET_PDEATHSIG)",
        nr::PRCTL,
        [libc::PR_GET_PDEATHSIG as u64, s, 0, 0, 0, 0],
    )?;
    let pdeath_sig = words(&scratch.read(task, tid, 8)?)[0] as u32;
    scratch.clear(task, tid, 8)?;
    // PR_GET_TID_ADDRESS needs CONFIG_CHECKPOINT_RESTORE; without it the address stays 0.
    let clear_tid_addr = if remote(
        task,
        tid,
        "prctl(PR_GET_TID_ADDRESS)",
        nr::PRCTL,
        [libc::PR_GET_TID_ADDRESS as u64, s, 0, 0, 0, 0],
    )? == 0
    {
        words(&scratch.read(task, tid, 8)?)[0]
    } else {
        0
    };
    Ok(ThreadSelfState {
        altstack,
        pdeath_sig,
        clear_tid_addr,
    })
}
