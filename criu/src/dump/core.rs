//! Building `core-PID.img`: registers (mapped by `crate::regs`), TLS, the task
//! and thread core (signals, timers, rlimits, creds, rseq, ...).

use compel::{UserRegs, Xsave};
use criu_images::pb::{
    CoreEntry, CoreEntryMarch, CredsEntry, ItimerEntry, PosixTimerEntry, RlimitEntry, RseqEntry,
    SaEntry, SiginfoEntry, SignalQueueEntry, TaskCoreEntry, TaskRlimitsEntry, TaskTimersEntry,
    ThreadCoreEntry, ThreadInfoX86, ThreadSasEntry, UserDescT,
};

use criu_images::task_state;

use super::proc::{PosixTimerInfo, ProcStat, ProcStatus};
use super::self_state::{SelfState, ThreadSelfState};

/// `__NR_restart_syscall`.
/// The registers to save for a thread stopped in the kernel: a syscall interrupted by our stop
/// with a restart code is rewound so that it runs again when the task resumes (as the kernel
/// would have done on the way out), like CRIU saves them.
pub fn saved_regs(r: &UserRegs) -> UserRegs {
    let mut r = *r;
    r.rewind_restart();
    r
}

/// The three GDT TLS slots of a 64-bit task that never called `set_thread_area` (CRIU saves
/// them as empty, not-present entries).
pub fn empty_tls() -> Vec<UserDescT> {
    (12..15)
        .map(|n| UserDescT {
            entry_number: n,
            base_addr: 0,
            limit: 0,
            seg_32bit: false,
            contents_h: false,
            contents_l: false,
            read_exec_only: true,
            limit_in_pages: false,
            seg_not_present: true,
            usable: false,
        })
        .collect()
}

fn split_caps(v: u64) -> Vec<u32> {
    vec![v as u32, (v >> 32) as u32]
}

/// Credentials as `creds_entry`.
pub fn creds(st: &ProcStatus, securebits: u32) -> CredsEntry {
    CredsEntry {
        uid: st.uids[0],
        gid: st.gids[0],
        euid: st.uids[1],
        egid: st.gids[1],
        suid: st.uids[2],
        sgid: st.gids[2],
        fsuid: st.uids[3],
        fsgid: st.gids[3],
        cap_inh: split_caps(st.cap_inh),
        cap_prm: split_caps(st.cap_prm),
        cap_eff: split_caps(st.cap_eff),
        cap_bnd: split_caps(st.cap_bnd),
        secbits: securebits,
        groups: st.groups.clone(),
        lsm_profile: None,
        lsm_sockcreate: None,
        apparmor_data: None,
        no_new_privs: st.no_new_privs.then_some(1),
        cap_amb: split_caps(st.cap_amb),
    }
}

/// What the cores of every thread of one process share.
pub struct ProcessInput<'a> {
    /// What the process reads about itself.
    pub self_state: &'a SelfState,
    /// `/proc/PID/timers`.
    pub timers: &'a [PosixTimerInfo],
    /// `/proc/PID/personality`.
    pub personality: u32,
    /// `/proc/PID/loginuid`.
    pub loginuid: Option<u32>,
    /// `/proc/PID/oom_score_adj`.
    pub oom_score_adj: Option<i32>,
    /// [`task_state`] value.
    pub task_state: u32,
    /// The stop signal of a stopped task.
    pub stop_signo: Option<u32>,
    /// Signals pending for the process, raw `siginfo_t`s.
    pub pending_shared: Vec<Vec<u8>>,
}

/// Everything [`core_entry`] needs for one thread.
pub struct CoreInput<'a> {
    /// What the thread's process gives every core.
    pub process: &'a ProcessInput<'a>,
    /// Registers as found.
    pub regs: &'a UserRegs,
    /// Extended state.
    pub xsave: &'a Xsave,
    /// Blocked signals.
    pub sigmask: u64,
    /// `/proc/TID/stat`.
    pub stat: &'a ProcStat,
    /// `/proc/TID/status`.
    pub status: &'a ProcStatus,
    /// `get_robust_list`.
    pub robust_list: (u64, u32),
    /// `PTRACE_GET_RSEQ_CONFIGURATION`: `(pointer, size, signature)` when registered.
    pub rseq: Option<(u64, u32, u32)>,
    /// Signals pending for the thread, raw `siginfo_t`s.
    pub pending_thread: Vec<Vec<u8>>,
    /// Whether this is the thread-group leader (whose core also holds the process-wide `tc`).
    pub leader: bool,
    /// What this thread keeps for itself (alternate signal stack, parent-death signal,
    /// clear-tid address).
    pub thread: ThreadSelfState,
}

fn queue(sigs: &[Vec<u8>]) -> SignalQueueEntry {
    SignalQueueEntry {
        signals: sigs
            .iter()
            .map(|s| SiginfoEntry { siginfo: s.clone() })
            .collect(),
    }
}

/// Builds `core-PID.img`'s entry.
pub fn core_entry(c: &CoreInput<'_>) -> CoreEntry {
    let process = c.process;
    let own = process.self_state;
    let it = |v: [u64; 4]| ItimerEntry {
        isec: v[0],
        iusec: v[1],
        vsec: v[2],
        vusec: v[3],
    };
    let posix = process
        .timers
        .iter()
        .filter_map(|t| {
            let s = own.posix_timers.iter().find(|s| s.id == t.id)?;
            let v = s.times;
            Some(PosixTimerEntry {
                it_id: t.id as u32,
                clock_id: t.clock_id as u32,
                si_signo: t.signo as u32,
                it_sigev_notify: t.notify as u32,
                sival_ptr: t.sigev_value,
                overrun: s.overrun,
                isec: v[0],
                insec: v[1],
                vsec: v[2],
                vnsec: v[3],
                notify_thread_id: (t.notify & 4 != 0).then_some(t.notify_thread),
            })
        })
        .collect();
    let sigactions = own
        .sigactions
        .iter()
        .map(|a| SaEntry {
            sigaction: a[0],
            flags: a[1],
            restorer: a[2],
            mask: a[3],
            compat_sigaction: Some(false),
            mask_extended: None,
        })
        .collect();
    let tc = TaskCoreEntry {
        task_state: process.task_state,
        exit_code: 0,
        personality: process.personality,
        flags: c.stat.flags,
        blk_sigset: c.sigmask,
        comm: c.stat.comm.clone(),
        timers: Some(TaskTimersEntry {
            real: it(own.itimers[0]),
            virt: it(own.itimers[1]),
            prof: it(own.itimers[2]),
            posix,
        }),
        rlimits: Some(TaskRlimitsEntry {
            rlimits: own
                .rlimits
                .iter()
                .map(|&(cur, max)| RlimitEntry { cur, max })
                .collect(),
        }),
        cg_set: None,
        signals_s: Some(queue(&process.pending_shared)),
        old_seccomp_mode: None,
        old_seccomp_filter: None,
        loginuid: process.loginuid,
        oom_score_adj: process.oom_score_adj,
        sigactions,
        child_subreaper: Some(own.child_subreaper),
        blk_sigset_extended: None,
        stop_signo: process.stop_signo,
        membarrier_registration_mask: (own.membarrier_mask != 0).then_some(own.membarrier_mask),
    };
    let thread_core = ThreadCoreEntry {
        futex_rla: c.robust_list.0,
        futex_rla_len: c.robust_list.1,
        sched_nice: Some(c.stat.nice),
        sched_policy: Some(c.stat.policy),
        sched_prio: (c.stat.policy != 0).then_some(c.stat.rt_priority),
        blk_sigset: (!c.leader).then_some(c.sigmask),
        sas: Some(ThreadSasEntry {
            ss_sp: c.thread.altstack.sp,
            ss_size: c.thread.altstack.size,
            ss_flags: c.thread.altstack.flags,
        }),
        pdeath_sig: (c.thread.pdeath_sig != 0).then_some(c.thread.pdeath_sig),
        signals_p: Some(queue(&c.pending_thread)),
        creds: Some(creds(c.status, own.securebits)),
        seccomp_mode: None,
        seccomp_filter: None,
        comm: Some(c.stat.comm.clone()),
        blk_sigset_extended: None,
        rseq_entry: c.rseq.map(|(p, size, sig)| RseqEntry {
            rseq_abi_pointer: p,
            rseq_abi_size: size,
            signature: sig,
            rseq_cs_pointer: None,
        }),
        cg_set: None,
    };
    CoreEntry {
        mtype: CoreEntryMarch::X8664 as i32,
        thread_info: Some(ThreadInfoX86 {
            clear_tid_addr: c.thread.clear_tid_addr,
            gpregs: crate::regs::gpregs_entry(&saved_regs(c.regs)),
            fpregs: crate::regs::fpregs_entry(c.xsave),
            tls: empty_tls(),
        }),
        tc: c.leader.then_some(tc),
        ids: None,
        thread_core: Some(thread_core),
        ..CoreEntry::default()
    }
}

/// The core of a zombie: only its end (state, exit status as the kernel reports it, comm).
pub fn zombie_core(st: &ProcStat) -> CoreEntry {
    CoreEntry {
        mtype: CoreEntryMarch::X8664 as i32,
        tc: Some(TaskCoreEntry {
            task_state: task_state::DEAD,
            exit_code: st.exit_code,
            personality: 0,
            flags: st.flags,
            blk_sigset: 0,
            comm: st.comm.clone(),
            ..TaskCoreEntry::default()
        }),
        ..CoreEntry::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_rewinds() {
        let r = UserRegs {
            rax: (-(compel_arch::restart::ERESTARTNOHAND)) as u64,
            orig_rax: 34,
            rip: 0x1002,
            ..UserRegs::default()
        };
        let s = saved_regs(&r);
        assert_eq!((s.rax, s.rip), (34, 0x1000));
        let r = UserRegs {
            rax: (-(compel_arch::restart::ERESTART_RESTARTBLOCK)) as u64,
            orig_rax: 35,
            rip: 0x2002,
            ..UserRegs::default()
        };
        let s = saved_regs(&r);
        assert_eq!((s.rax, s.rip), (compel_arch::RESTART_SYSCALL_NR, 0x2000));
        // Not in a syscall, or a syscall that returned: untouched.
        let r = UserRegs {
            rax: (-4i64) as u64,
            orig_rax: u64::MAX,
            rip: 0x3000,
            ..UserRegs::default()
        };
        assert_eq!(saved_regs(&r), r);
        let r = UserRegs {
            rax: 5,
            orig_rax: 0,
            rip: 0x3000,
            ..UserRegs::default()
        };
        assert_eq!(saved_regs(&r), r);
    }
}
