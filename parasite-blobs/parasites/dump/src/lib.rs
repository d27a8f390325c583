//! criu's dump parasite: reads, from inside the task, the state only the task itself may read
//! (signal handlers, timers, the alternate signal stack, resource limits without
//! `CAP_SYS_RESOURCE`, prctl flags, the program break) in one command. Its commands are in
//! `proto.rs`, shared with the host.
#![no_std]

mod proto;

use compel_arch::{nr, syscall1, syscall2, syscall3, syscall4, syscall5};
use compel_plugins::std::{Errno, read_args, sys, write_args};
use proto::{CMD_DUMP_MISC, MAX_TIMERS, Misc};

compel_plugins::parasite_handler!(handle);

fn handle(cmd: u32, payload: &mut [u8]) -> Result<(), Errno> {
    match cmd {
        CMD_DUMP_MISC => {
            let mut m: Misc = read_args(payload)?;
            dump_misc(&mut m)?;
            write_args(payload, &m)
        }
        _ => Err(Errno::ENOSYS),
    }
}

// prctl options (linux/prctl.h).
const PR_GET_PDEATHSIG: usize = 2;
const PR_GET_DUMPABLE: usize = 3;
const PR_GET_SECUREBITS: usize = 27;
const PR_GET_CHILD_SUBREAPER: usize = 37;
const PR_GET_TID_ADDRESS: usize = 40;
const PR_GET_THP_DISABLE: usize = 42;
const MEMBARRIER_CMD_GET_REGISTRATIONS: usize = 1 << 9;

/// `prctl(option, arg2, 0, 0, 0)`: some options insist that unused arguments are zero.
///
/// # Safety
/// `arg2` must be what `option` expects (0, or a pointer to a live value of the right type).
unsafe fn prctl(option: usize, arg2: usize) -> isize {
    // SAFETY: forwarded from the caller; the other arguments are zero.
    unsafe { syscall5(nr::PRCTL, option, arg2, 0, 0, 0) }
}

fn dump_misc(m: &mut Misc) -> Result<(), Errno> {
    for sig in 1..=64usize {
        if sig == 9 || sig == 19 {
            continue;
        }
        let mut act = [0u64; 4];
        // SAFETY: rt_sigaction with no new action writes one kernel sigaction (32 bytes, the
        // sigset size 8 given) into `act`, a live local.
        let r = unsafe { syscall4(nr::RT_SIGACTION, sig, 0, act.as_mut_ptr() as usize, 8) };
        sys::result(r)?;
        m.sigactions[sig - 1] = act;
    }
    for (i, which) in [0usize, 1, 2].into_iter().enumerate() {
        let mut it = [0u64; 4];
        // SAFETY: getitimer writes one itimerval (4 longs) into `it`.
        let r = unsafe { syscall2(nr::GETITIMER, which, it.as_mut_ptr() as usize) };
        sys::result(r)?;
        m.itimers[i] = it;
    }
    let n = (m.n_timers as usize).min(MAX_TIMERS);
    for i in 0..n {
        let id = m.timer_ids[i] as usize;
        let mut its = [0u64; 4];
        // SAFETY: timer_gettime writes one itimerspec (4 longs) into `its`.
        let r = unsafe { syscall2(nr::TIMER_GETTIME, id, its.as_mut_ptr() as usize) };
        sys::result(r)?;
        m.timers[i] = its;
        // SAFETY: timer_getoverrun takes only the id.
        let o = unsafe { syscall1(nr::TIMER_GETOVERRUN, id) };
        m.overruns[i] = sys::result(o)? as u32;
    }
    let mut ss = [0u64; 3];
    // SAFETY: sigaltstack with no new stack writes one stack_t (sp, flags, size: 24 bytes) into
    // `ss`.
    let r = unsafe { syscall2(nr::SIGALTSTACK, 0, ss.as_mut_ptr() as usize) };
    sys::result(r)?;
    // stack_t is { void *ss_sp; int ss_flags; size_t ss_size; }: flags in the low half of the
    // second word.
    m.sas = [ss[0], ss[1] & 0xffff_ffff, ss[2]];
    for res in 0..16usize {
        let mut rl = [0u64; 2];
        // SAFETY: prlimit64 on ourselves with no new limit writes one rlimit64 into `rl`.
        let r = unsafe { syscall4(nr::PRLIMIT64, 0, res, 0, rl.as_mut_ptr() as usize) };
        sys::result(r)?;
        m.rlimits[res] = rl;
    }
    let mut v: u32 = 0;
    // SAFETY: PR_GET_PDEATHSIG writes one int into `v`.
    sys::result(unsafe { prctl(PR_GET_PDEATHSIG, &mut v as *mut u32 as usize) })?;
    m.pdeath_sig = v;
    // SAFETY: PR_GET_DUMPABLE returns the flag and touches no memory.
    m.dumpable = sys::result(unsafe { prctl(PR_GET_DUMPABLE, 0) })? as u32;
    let mut sub: u32 = 0;
    // SAFETY: PR_GET_CHILD_SUBREAPER writes one int into `sub`.
    sys::result(unsafe {
        syscall2(
            nr::PRCTL,
            PR_GET_CHILD_SUBREAPER,
            &mut sub as *mut u32 as usize,
        )
    })?;
    m.child_subreaper = sub;
    // SAFETY: PR_GET_SECUREBITS returns the bits and touches no memory.
    m.securebits = sys::result(unsafe { prctl(PR_GET_SECUREBITS, 0) })? as u32;
    // SAFETY: PR_GET_THP_DISABLE returns the flag and touches no memory.
    m.thp_disabled = sys::result(unsafe { prctl(PR_GET_THP_DISABLE, 0) })? as u32;
    // SAFETY: MEMBARRIER_CMD_GET_REGISTRATIONS returns a mask and touches no memory; a kernel
    // without it fails and the mask stays 0.
    let r = unsafe { syscall3(nr::MEMBARRIER, MEMBARRIER_CMD_GET_REGISTRATIONS, 0, 0) };
    m.membarrier_mask = if r >= 0 { r as u32 } else { 0 };
    let mut tid_addr: u64 = 0;
    // SAFETY: PR_GET_TID_ADDRESS writes one pointer into `tid_addr`; without
    // CONFIG_CHECKPOINT_RESTORE it fails and the address stays 0.
    let r = unsafe {
        syscall2(
            nr::PRCTL,
            PR_GET_TID_ADDRESS,
            &mut tid_addr as *mut u64 as usize,
        )
    };
    m.clear_tid_addr = if r == 0 { tid_addr } else { 0 };
    // SAFETY: brk(0) only reports the current break.
    m.brk = unsafe { syscall1(nr::BRK, 0) } as u64;
    Ok(())
}
