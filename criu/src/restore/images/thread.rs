//! One thread's state from its core image: registers and FPU state, signal mask and pending
//! signals, robust list, rseq, creds, seccomp; and, from the leader's core, the task-wide
//! part (sigactions, limits, timers, personality, ...).

use criu_images::pb::{self, CoreEntry};
use criu_images::{names, sigaction_slot};

use super::super::abi;
use super::super::error::RestoreError;
use super::super::plan::*;
use super::entry::bad;

/// The state of a thread other than the leader, from its own core. A thread's core may lack
/// the task core: the leader's stands in for what a thread takes from it (the blocked-signal
/// mask of old images, the checks).
pub(super) fn thread_plan(
    leader: &CoreEntry,
    core: &CoreEntry,
    tid: u32,
    file: &str,
) -> Result<ThreadPlan, RestoreError> {
    let tid = i32::try_from(tid).map_err(|_| bad(names::PSTREE, format!("tid {tid}")))?;
    let ti = x86_info(core, file)?;
    let tc = core
        .tc
        .as_ref()
        .or(leader.tc.as_ref())
        .ok_or_else(|| bad(file, "no task core"))?;
    let mut thr = thread_state(core, ti, tc, tid, file)?;
    thr.comm = core.thread_core.as_ref().and_then(|t| t.comm.clone());
    Ok(thr)
}

/// The leader's thread and, from the leader's core alone, the task-wide state.
pub(super) fn task_state(
    plan: &mut TaskPlan,
    core: &CoreEntry,
    file: &str,
) -> Result<ThreadPlan, RestoreError> {
    let ti = x86_info(core, file)?;
    let tc = core.tc.as_ref().ok_or_else(|| bad(file, "no task core"))?;
    let leader = thread_state(core, ti, tc, plan.pid, file)?;
    task_wide(plan, &leader, core, tc, file)?;
    Ok(leader)
}

/// The x86-64 thread info of `core`, refusing other architectures.
fn x86_info<'a>(core: &'a CoreEntry, file: &str) -> Result<&'a pb::ThreadInfoX86, RestoreError> {
    if core.mtype != pb::CoreEntryMarch::X8664 as i32 {
        return Err(RestoreError::Arch {
            mtype: core.mtype,
            file: file.into(),
        });
    }
    core.thread_info
        .as_ref()
        .ok_or_else(|| bad(file, "no x86 thread info"))
}

/// One thread's own state: registers and FPU, signal mask and pending signals, robust list,
/// altstack, rseq, seccomp, creds. `tc` is the task core that goes with `core`.
fn thread_state(
    core: &CoreEntry,
    ti: &pb::ThreadInfoX86,
    tc: &pb::TaskCoreEntry,
    tid: i32,
    file: &str,
) -> Result<ThreadPlan, RestoreError> {
    let th = core.thread_core.as_ref();
    // Seccomp state in the task core is the layout of old images (per thread since CRIU 3.x).
    if let Some(m) = tc.old_seccomp_mode.filter(|m| *m != 0) {
        return Err(RestoreError::OldSeccomp {
            mode: m,
            file: file.into(),
        });
    }
    let mut thr = ThreadPlan {
        tid,
        ..ThreadPlan::default()
    };
    let g = &ti.gpregs;
    if g.mode.unwrap_or(1) != 1 {
        return Err(RestoreError::Compat);
    }
    thr.regs = crate::regs::user_regs(g);
    thr.fpu = crate::regs::fpu_plan(&ti.fpregs).map_err(|why| bad(file, why))?;
    if !matches!(
        tc.task_state,
        criu_images::task_state::ALIVE | criu_images::task_state::STOPPED
    ) {
        return Err(RestoreError::TaskState {
            state: tc.task_state,
            file: file.into(),
        });
    }
    thr.clear_tid_addr = ti.clear_tid_addr;
    thr.sigmask = th.and_then(|t| t.blk_sigset).unwrap_or(tc.blk_sigset);
    if let Some(th) = th {
        thr.pending = siginfos(th.signals_p.as_ref(), file)?;
        thr.robust_list = RobustList {
            head: th.futex_rla,
            len: th.futex_rla_len as u64,
        };
        let nice = th.sched_nice.unwrap_or(0);
        if !(-20..=19).contains(&nice) {
            return Err(bad(file, format!("nice value {nice}")));
        }
        thr.pdeath_sig = th.pdeath_sig.map(|s| s as i32);
        if let Some(sas) = &th.sas {
            thr.altstack = Some(AltStack {
                sp: sas.ss_sp,
                flags: sas.ss_flags as i32,
                size: sas.ss_size,
            });
        }
        if let Some(r) = &th.rseq_entry
            && r.rseq_abi_pointer != 0
        {
            thr.rseq = Some(Rseq {
                area: r.rseq_abi_pointer,
                len: r.rseq_abi_size,
                sig: r.signature,
            });
        }
        match (th.seccomp_mode.unwrap_or(0), th.seccomp_filter) {
            (0, _) => {}
            (1, _) => {
                thr.seccomp = Some(SeccompPlan {
                    mode: 1,
                    ..SeccompPlan::default()
                })
            }
            (2, Some(newest)) => {
                thr.seccomp = Some(SeccompPlan {
                    mode: 2,
                    newest: Some(newest),
                    filters: Vec::new(),
                })
            }
            (2, None) => return Err(bad(file, "seccomp filter mode without a filter")),
            (m, _) => return Err(bad(file, format!("seccomp mode {m}"))),
        }
        if let Some(c) = &th.creds {
            let two = |v: &[u32]| {
                [
                    v.first().copied().unwrap_or(0),
                    v.get(1).copied().unwrap_or(0),
                ]
            };
            thr.no_new_privs = c.no_new_privs.unwrap_or(0) != 0;
            thr.creds = Some(CredsPlan {
                creds: abi::Creds {
                    uid: c.uid,
                    euid: c.euid,
                    suid: c.suid,
                    fsuid: c.fsuid,
                    gid: c.gid,
                    egid: c.egid,
                    sgid: c.sgid,
                    fsgid: c.fsgid,
                    secbits: c.secbits,
                    ngroups: 0,
                    groups: 0,
                    cap_inh: two(&c.cap_inh),
                    cap_prm: two(&c.cap_prm),
                    cap_eff: two(&c.cap_eff),
                    cap_bnd: two(&c.cap_bnd),
                    cap_amb: two(&c.cap_amb),
                },
                groups: c.groups.clone(),
            });
        }
    }
    Ok(thr)
}

/// The task-wide part, from the leader's core (`core`, its task core `tc`) once the leader's
/// own state (`leader`) is read: name, personality, the stop the task was in, handlers,
/// limits, timers, shared pending signals, scheduling.
fn task_wide(
    plan: &mut TaskPlan,
    leader: &ThreadPlan,
    core: &CoreEntry,
    tc: &pb::TaskCoreEntry,
    file: &str,
) -> Result<(), RestoreError> {
    if tc.task_state == criu_images::task_state::STOPPED {
        let sig = tc.stop_signo.map_or(libc::SIGSTOP, |s| s as i32);
        // A stop signal the task blocks would only pend: stop it with SIGSTOP then. The
        // leader's mask is the one read from its core above.
        let blocked = sig > 0 && sig <= 64 && leader.sigmask & (1 << (sig - 1)) != 0;
        plan.stop_signal = Some(if blocked || !(1..=64).contains(&sig) {
            libc::SIGSTOP
        } else {
            sig
        });
    }
    plan.comm = tc.comm.clone();
    plan.personality = Some(tc.personality);
    // Handlers.
    if !tc.sigactions.is_empty() {
        let mut acts = vec![abi::KSigaction::default(); abi::NSIG];
        for sig in 1..=abi::NSIG as u32 {
            let Some(slot) = sigaction_slot(sig) else {
                continue;
            };
            if let Some(sa) = tc.sigactions.get(slot) {
                acts[sig as usize - 1] = abi::KSigaction {
                    handler: sa.sigaction,
                    flags: sa.flags,
                    restorer: sa.restorer,
                    mask: sa.mask,
                };
            }
        }
        plan.sigactions = acts;
    }
    if let Some(rl) = &tc.rlimits {
        if rl.rlimits.len() > abi::NRLIMITS {
            return Err(bad(file, format!("{} rlimits", rl.rlimits.len())));
        }
        plan.rlimits = rl
            .rlimits
            .iter()
            .map(|r| abi::Rlimit {
                cur: r.cur,
                max: r.max,
            })
            .collect();
    }
    if let Some(t) = &tc.timers {
        for (i, it) in [&t.real, &t.virt, &t.prof].into_iter().enumerate() {
            plan.itimers[i] = Some(abi::Itimerval {
                interval_sec: it.isec as i64,
                interval_usec: it.iusec as i64,
                value_sec: it.vsec as i64,
                value_usec: it.vusec as i64,
            });
        }
        for p in &t.posix {
            plan.posix_timers.push(abi::PosixTimer {
                id: p.it_id as i32,
                clock_id: p.clock_id as i32,
                notify: p.it_sigev_notify as i32,
                signo: p.si_signo as i32,
                notify_tid: p.notify_thread_id.unwrap_or(0),
                pad: 0,
                value: p.sival_ptr,
                interval_sec: p.isec as i64,
                interval_nsec: p.insec as i64,
                value_sec: p.vsec as i64,
                value_nsec: p.vnsec as i64,
            });
        }
    }
    plan.child_subreaper = tc.child_subreaper;
    plan.oom_score_adj = tc.oom_score_adj.filter(|v| *v != 0);
    plan.loginuid = tc.loginuid;
    plan.membarrier = tc.membarrier_registration_mask.unwrap_or(0);
    plan.pending_shared = siginfos(tc.signals_s.as_ref(), file)?;
    if let Some(th) = core.thread_core.as_ref() {
        let nice = th.sched_nice.unwrap_or(0);
        let policy = th.sched_policy.unwrap_or(0);
        if nice != 0 || policy != 0 {
            plan.sched = Some(Sched {
                nice,
                policy,
                prio: th.sched_prio.unwrap_or(0),
            });
        }
    }
    Ok(())
}

/// The siginfos of a queue of pending signals.
fn siginfos(q: Option<&pb::SignalQueueEntry>, file: &str) -> Result<Vec<[u8; 128]>, RestoreError> {
    let mut out = Vec::new();
    for s in q.map(|q| q.signals.as_slice()).unwrap_or(&[]) {
        let arr: [u8; 128] = s
            .siginfo
            .as_slice()
            .try_into()
            .map_err(|_| bad(file, format!("siginfo of {} bytes", s.siginfo.len())))?;
        out.push(arr);
    }
    Ok(out)
}
