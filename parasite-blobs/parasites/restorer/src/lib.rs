//! criu's restorer: the last code a restored task runs before it becomes itself again.
//!
//! criu's restore engine clones the task with its old pid, reopens its files and premaps its
//! memory at addresses free in the final layout, then jumps here with the stack pointer inside
//! this blob's own area and the address of a [`abi::RestorerArgs`] block in the first argument
//! register. From here on only raw system calls run: unmap everything that belonged to the engine,
//! move the vDSO and the premapped memory into place, install the mm descriptors, handlers,
//! limits, timers, credentials and thread settings, queue pending signals, report to the engine
//! and `rt_sigreturn` into the saved registers.
//!
//! Failures are reported as a [`abi::Status`] on the engine's pipe and end the task: once the
//! engine's memory is gone there is nothing to return to.
#![no_std]

// The plugin crate brings the parasite runtime: memcpy & co and the panic handler.
use compel_plugins as _;

pub mod proto;
/// The restorer's ABI under the name the rest of this crate uses.
use proto as abi;

use abi::*;
use compel_arch::nr;
use compel_arch::{syscall1, syscall2, syscall3, syscall4, syscall5};

const PAGE: u64 = 4096;
const MREMAP_MAYMOVE: usize = 1;
const MREMAP_FIXED: usize = 2;
const SIGKILL: usize = 9;
const SIGSTOP: usize = 19;
const PR_SET_PDEATHSIG: usize = 1;
const PR_SET_DUMPABLE: usize = 4;
const PR_SET_NAME: usize = 15;
const PR_CAPBSET_READ: usize = 23;
const PR_CAPBSET_DROP: usize = 24;
const PR_GET_SECUREBITS: usize = 27;
const PR_SET_SECUREBITS: usize = 28;
const PR_SET_MM: usize = 35;
const PR_SET_MM_MAP: usize = 14;
const PR_SET_CHILD_SUBREAPER: usize = 36;
const PR_SET_NO_NEW_PRIVS: usize = 38;
const PR_SET_THP_DISABLE: usize = 41;
const PR_CAP_AMBIENT: usize = 47;
const PR_CAP_AMBIENT_RAISE: usize = 2;
const PR_CAP_AMBIENT_CLEAR_ALL: usize = 4;
const PR_TIMER_CREATE_RESTORE_IDS: usize = 77;
const SECBIT_NO_SETUID_FIXUP: usize = 1 << 2;
const ARCH_SET_GS: usize = 0x1001;
const ARCH_SET_FS: usize = 0x1002;
const RSEQ_FLAG_UNREGISTER: usize = 1;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
const FUTEX_WAIT_PRIVATE: usize = 128;
const FUTEX_WAKE_PRIVATE: usize = 129;
const THREAD_FLAGS: u64 = 0x100 | 0x200 | 0x400 | 0x800 | 0x1_0000 | 0x4_0000; // VM FS FILES SIGHAND THREAD SYSVSEM

/// The argument block, for the other threads (which get only their own [`ThreadState`]).
static ARGS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// A failed step: the stage, the errno and a detail.
struct Fail(u32, isize, u64);

type Res = Result<(), Fail>;

fn check(stage: u32, ret: isize, detail: u64) -> Res {
    if (-4095..0).contains(&ret) {
        Err(Fail(stage, -ret, detail))
    } else {
        Ok(())
    }
}

fn report(fd: i32, st: &Status) {
    // SAFETY: `st` is a live `repr(C)` value of exactly `size_of::<Status>()` bytes; a failed
    // write only loses the report.
    unsafe {
        syscall3(
            nr::WRITE,
            fd as usize,
            (st as *const Status) as usize,
            core::mem::size_of::<Status>(),
        );
    }
}

fn die(fd: i32, f: Fail) -> ! {
    report(
        fd,
        &Status {
            stage: f.0,
            errno: f.1 as i32,
            detail: f.2,
        },
    );
    loop {
        // SAFETY: exit_group ends the task; nothing of it is used afterwards.
        unsafe {
            syscall1(nr::EXIT_GROUP, 128 + f.0 as usize);
        }
    }
}

/// The entry point: `args` is the argument block the engine laid out in this blob's data area.
///
/// # Safety
/// Called only by criu's engine on its own stack inside the blob area, with a valid block.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __export_restorer_main(args: *const RestorerArgs) -> ! {
    // SAFETY: the engine passes the address of a complete, live argument block.
    let a = unsafe { &*args };
    if let Err(f) = restore(a) {
        die(a.status_fd, f);
    }
    // SAFETY: `restore` checked that the block holds at least one thread record (the leader's)
    // at `threads`, inside the argument area.
    let l = unsafe { &*(a.threads as *const ThreadState) };
    report(a.status_fd, &Status::default());
    // SAFETY: closing our own status pipe; the engine sees end of file after the report.
    unsafe {
        syscall1(nr::CLOSE, a.status_fd as usize);
    }
    if a.stop_before_return != 0 {
        // SAFETY: stopping this thread (not any thread of the process); the tracing engine
        // resumes us.
        unsafe {
            let pid = syscall1(nr::GETPID, 0);
            syscall3(nr::TGKILL, pid as usize, pid as usize, SIGSTOP);
        }
    }
    // SAFETY: from here on no code of ours uses the thread pointer; the bases are the task's.
    unsafe {
        syscall2(nr::ARCH_PRCTL, ARCH_SET_FS, l.fs_base as usize);
        if l.gs_base != 0 {
            syscall2(nr::ARCH_PRCTL, ARCH_SET_GS, l.gs_base as usize);
        }
    }
    // SAFETY: the engine built a complete frame at `sigframe_sp` (with `write_rt_sigframe`).
    unsafe { compel_arch::rt_sigreturn(l.sigframe_sp as usize) }
}

/// Every thread's record, the leader's first (at least one: checked by [`restore`]).
fn thread_states(a: &RestorerArgs) -> &[ThreadState] {
    // SAFETY: the engine placed `n_threads` records at `threads`, inside the argument area.
    unsafe { core::slice::from_raw_parts(a.threads as *const ThreadState, a.n_threads as usize) }
}

fn restore(a: &RestorerArgs) -> Res {
    if a.magic != ARGS_MAGIC
        || a.version != ARGS_VERSION
        || a.size as usize != core::mem::size_of::<RestorerArgs>()
        || a.n_keep as usize > MAX_KEEP
        || a.n_vdso as usize > MAX_VDSO
        || a.n_threads == 0
        || a.threads == 0
    {
        return Err(Fail(STAGE_ARGS, 22, a.magic));
    }
    // Block everything: the engine's handlers are about to lose their code.
    let all: u64 = !0;
    // SAFETY: rt_sigprocmask reads one 8-byte mask from a live local.
    let r = unsafe { syscall4(nr::RT_SIGPROCMASK, 2, (&raw const all) as usize, 0, 8) };
    check(STAGE_ARGS, r, 0)?;
    if a.old_rseq != 0 {
        // SAFETY: unregistering the area the kernel has for this thread; no memory is touched.
        let r = unsafe {
            syscall4(
                nr::RSEQ,
                a.old_rseq as usize,
                a.old_rseq_len as usize,
                RSEQ_FLAG_UNREGISTER,
                a.old_rseq_sig as usize,
            )
        };
        check(STAGE_OLD_RSEQ, r, a.old_rseq)?;
    }
    unmap_host(a)?;
    move_vdso(a)?;
    move_vmas(a)?;
    if a.set_mm != 0 {
        // SAFETY: `mm` is a complete prctl_mm_map whose auxv points into the argument area.
        let r = unsafe {
            syscall5(
                nr::PRCTL,
                PR_SET_MM,
                PR_SET_MM_MAP,
                (&raw const a.mm) as usize,
                core::mem::size_of::<MmMap>(),
                0,
            )
        };
        check(STAGE_MM, r, a.mm.start_code)?;
        if a.mm.exe_fd != u32::MAX {
            // SAFETY: the engine opened this fd only for PR_SET_MM_MAP.
            unsafe {
                syscall1(nr::CLOSE, a.mm.exe_fd as usize);
            }
        }
    }
    sigactions(a)?;
    rlimits(a)?;
    // The other threads, created while this one still has the capabilities clone3 with set_tid
    // needs; each then installs its own credentials.
    threads(a)?;
    // After the threads: a timer that signals one thread (`SIGEV_THREAD_ID`, as glibc's
    // `SIGEV_THREAD` timers do) needs that thread to exist. Every thread blocks all signals
    // until its own mask comes back with its registers, so none fires early.
    timers(a)?;
    let l = &thread_states(a)[0];
    // Before the credentials: installing a filter takes CAP_SYS_ADMIN or no_new_privs.
    seccomp(&l.seccomp, 0)?;
    if l.set_creds != 0 {
        creds(&l.creds)?;
    }
    process_settings(a)?;
    thread_settings(l)?;
    sigqueue_shared(a)?;
    sigqueue_own(l)?;
    wait_threads(a);
    Ok(())
}

/// Unmaps every range below `task_size` that is not in `keep` (nor the current special
/// mappings, which `vdso` moves later).
fn unmap_host(a: &RestorerArgs) -> Res {
    // Gather the kept ranges: `keep` plus the sources of the vdso moves, sorted by start.
    let mut ranges = [Range::default(); MAX_KEEP + MAX_VDSO];
    let mut n = 0;
    for r in &a.keep[..a.n_keep as usize] {
        ranges[n] = *r;
        n += 1;
    }
    for m in &a.vdso[..a.n_vdso as usize] {
        ranges[n] = Range {
            start: m.from,
            end: m.from + m.len,
        };
        n += 1;
    }
    // Insertion sort: at most a dozen entries.
    for i in 1..n {
        let mut j = i;
        while j > 0 && ranges[j - 1].start > ranges[j].start {
            ranges.swap(j - 1, j);
            j -= 1;
        }
    }
    let mut cursor = PAGE;
    for r in &ranges[..n] {
        if r.start > cursor {
            munmap(cursor, r.start)?;
        }
        if r.end > cursor {
            cursor = r.end;
        }
    }
    if a.task_size > cursor {
        munmap(cursor, a.task_size)?;
    }
    Ok(())
}

fn munmap(start: u64, end: u64) -> Res {
    // SAFETY: the range holds only the engine's memory, which nothing below uses any more
    // (the blob, its stack and the premapped memory are in kept ranges).
    let r = unsafe { syscall2(nr::MUNMAP, start as usize, (end - start) as usize) };
    check(STAGE_UNMAP, r, start)
}

fn mremap(stage: u32, m: &Move) -> Res {
    // SAFETY: both ranges were set up by the engine: the source holds only this move's
    // mapping and the destination is either free or a reservation meant to be replaced.
    let r = unsafe {
        syscall5(
            nr::MREMAP,
            m.from as usize,
            m.len as usize,
            m.len as usize,
            MREMAP_MAYMOVE | MREMAP_FIXED,
            m.to as usize,
        )
    };
    check(stage, r, m.to)
}

/// Moves this kernel's vvar/vdso onto the saved addresses, through the scratch area so that a
/// source overlapping a destination does no harm.
fn move_vdso(a: &RestorerArgs) -> Res {
    let mut off = 0;
    let mut scratch = [0u64; MAX_VDSO];
    for (i, m) in a.vdso[..a.n_vdso as usize].iter().enumerate() {
        scratch[i] = a.vdso_scratch + off;
        mremap(
            STAGE_VDSO,
            &Move {
                from: m.from,
                to: scratch[i],
                len: m.len,
            },
        )?;
        off += m.len;
    }
    for (i, m) in a.vdso[..a.n_vdso as usize].iter().enumerate() {
        mremap(
            STAGE_VDSO,
            &Move {
                from: scratch[i],
                to: m.to,
                len: m.len,
            },
        )?;
    }
    Ok(())
}

fn move_vmas(a: &RestorerArgs) -> Res {
    if a.n_vmas == 0 {
        return Ok(());
    }
    // SAFETY: the engine placed `n_vmas` moves at `vmas`, inside the kept argument area.
    let moves = unsafe { core::slice::from_raw_parts(a.vmas as *const Move, a.n_vmas as usize) };
    for m in moves {
        if m.from != m.to {
            mremap(STAGE_VMA, m)?;
        }
    }
    Ok(())
}

fn sigactions(a: &RestorerArgs) -> Res {
    if a.set_sigactions == 0 {
        return Ok(());
    }
    for (i, act) in a.sigactions.iter().enumerate() {
        let sig = i + 1;
        if sig == SIGKILL || sig == SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction reads one kernel sigaction from the argument area.
        let r = unsafe {
            syscall4(
                nr::RT_SIGACTION,
                sig,
                act as *const KSigaction as usize,
                0,
                8,
            )
        };
        check(STAGE_SIGACTION, r, sig as u64)?;
    }
    Ok(())
}

fn rlimits(a: &RestorerArgs) -> Res {
    for (res, l) in a.rlimits[..(a.n_rlimits as usize).min(NRLIMITS)]
        .iter()
        .enumerate()
    {
        // SAFETY: prlimit64 on ourselves reads one rlimit64 from the argument area.
        let r = unsafe { syscall4(nr::PRLIMIT64, 0, res, l as *const Rlimit as usize, 0) };
        check(STAGE_RLIMIT, r, res as u64)?;
    }
    Ok(())
}

fn timers(a: &RestorerArgs) -> Res {
    for (which, it) in a.itimers.iter().enumerate() {
        if a.itimers_mask & (1 << which) == 0 {
            continue;
        }
        // SAFETY: setitimer reads one itimerval from the argument area.
        let r = unsafe { syscall3(nr::SETITIMER, which, it as *const Itimerval as usize, 0) };
        check(STAGE_ITIMER, r, which as u64)?;
    }
    if a.n_posix_timers == 0 {
        return Ok(());
    }
    // SAFETY: the engine placed `n_posix_timers` entries at `posix_timers`.
    let timers = unsafe {
        core::slice::from_raw_parts(
            a.posix_timers as *const PosixTimer,
            a.n_posix_timers as usize,
        )
    };
    // SAFETY: a prctl that only switches how timer_create picks ids for this process.
    let r = unsafe { syscall5(nr::PRCTL, PR_TIMER_CREATE_RESTORE_IDS, 1, 0, 0, 0) };
    check(STAGE_POSIX_TIMER, r, 0)?;
    for t in timers {
        // struct sigevent: value, signo, notify, tid, padding to 64 bytes.
        let mut sev = [0u64; 8];
        sev[0] = t.value;
        sev[1] = (t.signo as u32 as u64) | ((t.notify as u32 as u64) << 32);
        sev[2] = t.notify_tid as u32 as u64;
        let mut id: i32 = t.id;
        // SAFETY: timer_create reads the local sigevent and reads/writes the local id.
        let r = unsafe {
            syscall3(
                nr::TIMER_CREATE,
                t.clock_id as usize,
                sev.as_ptr() as usize,
                (&raw mut id) as usize,
            )
        };
        check(STAGE_POSIX_TIMER, r, t.id as u64)?;
        if id != t.id {
            return Err(Fail(STAGE_POSIX_TIMER, 17, t.id as u64));
        }
        let spec = [t.interval_sec, t.interval_nsec, t.value_sec, t.value_nsec];
        // SAFETY: timer_settime reads one itimerspec from a live local.
        let r = unsafe { syscall4(nr::TIMER_SETTIME, id as usize, 0, spec.as_ptr() as usize, 0) };
        check(STAGE_POSIX_TIMER, r, t.id as u64)?;
    }
    // SAFETY: prctl with integer arguments only, switching the timer id mode back.
    let r = unsafe { syscall5(nr::PRCTL, PR_TIMER_CREATE_RESTORE_IDS, 0, 0, 0, 0) };
    check(STAGE_POSIX_TIMER, r, 0)
}

/// The most supplementary groups compared before a `setgroups` (more are always set).
const GROUPS_COMPARED: usize = 64;

/// Whether the task's supplementary groups are already `c`'s (an unprivileged restore, or a
/// user namespace with setgroups denied, cannot set them, and need not).
///
/// # Safety
/// `c.groups` points at `c.ngroups` gids in the argument area.
unsafe fn groups_match(c: &Creds) -> bool {
    let mut now = [0u32; GROUPS_COMPARED];
    // SAFETY: getgroups writes at most GROUPS_COMPARED gids into the live local.
    let n = unsafe { syscall2(nr::GETGROUPS, GROUPS_COMPARED, now.as_mut_ptr() as usize) };
    if n < 0 || n as u64 != c.ngroups as u64 {
        return false;
    }
    // SAFETY: the caller's contract: c.ngroups (== n <= GROUPS_COMPARED) gids at c.groups.
    let want = unsafe { core::slice::from_raw_parts(c.groups as *const u32, n as usize) };
    now[..n as usize] == *want
}

/// Whether the task's uids and gids are already `c`'s (then they are not set: setting them,
/// even to the same values, needs CAP_SETUID/CAP_SETGID an unprivileged restore lacks).
///
/// # Safety
/// Only reads this task's ids.
unsafe fn ids_match(c: &Creds) -> bool {
    let (mut u, mut g) = ([0u32; 3], [0u32; 3]);
    // SAFETY: each call reads one id of this task or writes three u32 into live locals;
    // setfs[ug]id(-1) changes nothing and returns the current value.
    unsafe {
        let fsuid = syscall1(nr::SETFSUID, u32::MAX as usize) as u32;
        let fsgid = syscall1(nr::SETFSGID, u32::MAX as usize) as u32;
        let ru = syscall3(
            nr::GETRESUID,
            u.as_mut_ptr() as usize,
            u.as_mut_ptr().add(1) as usize,
            u.as_mut_ptr().add(2) as usize,
        );
        let rg = syscall3(
            nr::GETRESGID,
            g.as_mut_ptr() as usize,
            g.as_mut_ptr().add(1) as usize,
            g.as_mut_ptr().add(2) as usize,
        );
        ru == 0
            && rg == 0
            && u == [c.uid, c.euid, c.suid]
            && g == [c.gid, c.egid, c.sgid]
            && fsuid == c.fsuid
            && fsgid == c.fsgid
    }
}

/// The task's credentials, as CRIU sets them: each step that would change nothing is left
/// out, so that a process restored by its own (unprivileged) user gets back what it had.
fn creds(c: &Creds) -> Res {
    // SAFETY: each call changes only this task's credentials and reads nothing but live
    // locals or the argument area (c.groups holds c.ngroups gids).
    unsafe {
        if !groups_match(c) {
            check(
                STAGE_CREDS,
                syscall2(nr::SETGROUPS, c.ngroups as usize, c.groups as usize),
                2,
            )?;
        }
        if !ids_match(c) {
            // Keep the capabilities across the uid change; the final securebits come later.
            check(
                STAGE_CREDS,
                syscall5(
                    nr::PRCTL,
                    PR_SET_SECUREBITS,
                    SECBIT_NO_SETUID_FIXUP,
                    0,
                    0,
                    0,
                ),
                1,
            )?;
            check(
                STAGE_CREDS,
                syscall3(
                    nr::SETRESGID,
                    c.gid as usize,
                    c.egid as usize,
                    c.sgid as usize,
                ),
                3,
            )?;
            syscall1(nr::SETFSGID, c.fsgid as usize);
            check(
                STAGE_CREDS,
                syscall3(
                    nr::SETRESUID,
                    c.uid as usize,
                    c.euid as usize,
                    c.suid as usize,
                ),
                4,
            )?;
            syscall1(nr::SETFSUID, c.fsuid as usize);
        }
        let bnd = (c.cap_bnd[0] as u64) | ((c.cap_bnd[1] as u64) << 32);
        for cap in 0..64usize {
            if bnd & (1 << cap) != 0 {
                continue;
            }
            // Past the kernel's last capability (EINVAL), or already out of the set: dropping
            // it (again) would need CAP_SETPCAP, and answers EPERM before EINVAL.
            match syscall5(nr::PRCTL, PR_CAPBSET_READ, cap, 0, 0, 0) {
                r if r < 0 => break,
                0 => continue,
                _ => {}
            }
            let r = syscall5(nr::PRCTL, PR_CAPBSET_DROP, cap, 0, 0, 0);
            check(STAGE_CREDS, r, 0x500 | cap as u64)?;
        }
        if syscall5(nr::PRCTL, PR_GET_SECUREBITS, 0, 0, 0, 0) != c.secbits as isize {
            check(
                STAGE_CREDS,
                syscall5(nr::PRCTL, PR_SET_SECUREBITS, c.secbits as usize, 0, 0, 0),
                6,
            )?;
        }
        let hdr: [u32; 2] = [LINUX_CAPABILITY_VERSION_3, 0];
        let data: [u32; 6] = [
            c.cap_eff[0],
            c.cap_prm[0],
            c.cap_inh[0],
            c.cap_eff[1],
            c.cap_prm[1],
            c.cap_inh[1],
        ];
        check(
            STAGE_CREDS,
            syscall2(nr::CAPSET, hdr.as_ptr() as usize, data.as_ptr() as usize),
            7,
        )?;
        let amb = (c.cap_amb[0] as u64) | ((c.cap_amb[1] as u64) << 32);
        if amb != 0 {
            syscall5(nr::PRCTL, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
            for cap in 0..64usize {
                if amb & (1 << cap) != 0 {
                    check(
                        STAGE_CREDS,
                        syscall5(nr::PRCTL, PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0),
                        8,
                    )?;
                }
            }
        }
    }
    Ok(())
}

fn prctl2(opt: usize, v: i32) -> Res {
    if v == KEEP {
        return Ok(());
    }
    // SAFETY: a prctl that sets one integer attribute of this task.
    let r = unsafe { syscall5(nr::PRCTL, opt, v as usize, 0, 0, 0) };
    check(STAGE_PRCTL, r, opt as u64)
}

/// The process-wide settings (after the credentials, which reset some of them).
fn process_settings(a: &RestorerArgs) -> Res {
    if a.personality != KEEP {
        // SAFETY: personality only changes this task's execution domain flags.
        let r = unsafe { syscall1(nr::PERSONALITY, a.personality as u32 as usize) };
        check(STAGE_PRCTL, r, 0)?;
    }
    prctl2(PR_SET_DUMPABLE, a.dumpable)?;
    prctl2(PR_SET_THP_DISABLE, a.thp_disabled)?;
    prctl2(PR_SET_CHILD_SUBREAPER, a.child_subreaper)
}

/// A thread's own settings (after its credentials): name, parent-death signal,
/// no_new_privs, clear-tid address, robust list, rseq.
fn thread_settings(t: &ThreadState) -> Res {
    if t.comm[0] != 0 {
        // SAFETY: PR_SET_NAME reads at most 16 bytes of the thread's record.
        let r = unsafe { syscall5(nr::PRCTL, PR_SET_NAME, t.comm.as_ptr() as usize, 0, 0, 0) };
        check(STAGE_PRCTL, r, PR_SET_NAME as u64)?;
    }
    prctl2(PR_SET_PDEATHSIG, t.pdeath_sig)?;
    if t.no_new_privs == 1 {
        // SAFETY: no_new_privs is a one-way flag on this thread.
        let r = unsafe { syscall5(nr::PRCTL, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
        check(STAGE_PRCTL, r, PR_SET_NO_NEW_PRIVS as u64)?;
    }
    // SAFETY: these calls record the thread's own saved user addresses in the kernel; nothing
    // of ours is read or written.
    unsafe {
        if t.clear_tid_addr != 0 {
            syscall1(nr::SET_TID_ADDRESS, t.clear_tid_addr as usize);
        }
        if t.robust_list != 0 {
            let r = syscall2(
                nr::SET_ROBUST_LIST,
                t.robust_list as usize,
                t.robust_list_len as usize,
            );
            check(STAGE_THREAD, r, t.robust_list)?;
        }
        if t.rseq != 0 {
            let r = syscall4(
                nr::RSEQ,
                t.rseq as usize,
                t.rseq_len as usize,
                0,
                t.rseq_sig as usize,
            );
            check(STAGE_THREAD, r, t.rseq)?;
        }
    }
    Ok(())
}

/// Queues the process-wide pending signals.
fn sigqueue_shared(a: &RestorerArgs) -> Res {
    // SAFETY: getpid has no arguments.
    let pid = unsafe { syscall1(nr::GETPID, 0) };
    for i in 0..a.n_siginfo_shared as usize {
        let info = a.shared_siginfo + (i * SIGINFO_SIZE) as u64;
        // SAFETY: `info` is one siginfo_t in the argument area; its first word is si_signo.
        let sig = unsafe { *(info as *const i32) } as usize;
        // SAFETY: queueing a signal to ourselves with the saved siginfo (read by the kernel).
        let r = unsafe { syscall3(nr::RT_SIGQUEUEINFO, pid as usize, sig, info as usize) };
        check(STAGE_SIGQUEUE, r, sig as u64)?;
    }
    Ok(())
}

/// Queues a thread's own pending signals.
fn sigqueue_own(t: &ThreadState) -> Res {
    // SAFETY: getpid has no arguments.
    let pid = unsafe { syscall1(nr::GETPID, 0) };
    for i in 0..t.n_siginfo as usize {
        let info = t.siginfo + (i * SIGINFO_SIZE) as u64;
        // SAFETY: `info` is one siginfo_t in the argument area; its first word is si_signo.
        let sig = unsafe { *(info as *const i32) } as usize;
        // SAFETY: queues a signal to this thread with the saved siginfo (read by the kernel).
        let r = unsafe {
            syscall4(
                nr::RT_TGSIGQUEUEINFO,
                pid as usize,
                t.tid as usize,
                sig,
                info as usize,
            )
        };
        check(STAGE_SIGQUEUE, r, sig as u64)?;
    }
    Ok(())
}

fn threads_ready(a: &RestorerArgs) -> &core::sync::atomic::AtomicU32 {
    // SAFETY: `threads_ready` is an aligned u32 in the live argument block; all threads access
    // it atomically only.
    unsafe { core::sync::atomic::AtomicU32::from_ptr((&raw const a.threads_ready).cast_mut()) }
}

/// Creates the threads besides the leader with their old tids; each starts in
/// [`thread_main`].
fn threads(a: &RestorerArgs) -> Res {
    let others = &thread_states(a)[1..];
    if others.is_empty() {
        return Ok(());
    }
    ARGS.store(
        a as *const RestorerArgs as u64,
        core::sync::atomic::Ordering::SeqCst,
    );
    for t in others {
        let tid: [i32; 1] = [t.tid];
        // struct clone_args: flags, pidfd, child_tid, parent_tid, exit_signal, stack,
        // stack_size, tls, set_tid, set_tid_size, cgroup.
        let cargs: [u64; 11] = [
            THREAD_FLAGS,
            0,
            0,
            0,
            0,
            t.stack_top - t.stack_size,
            t.stack_size,
            0,
            tid.as_ptr() as u64,
            1,
            0,
        ];
        let r: isize;
        // SAFETY: clone3 creates a thread sharing this memory on the stack the engine reserved
        // for it; the new thread (rax 0) calls thread_main with its ThreadState (r12, preserved
        // by the kernel) and never comes back here; this thread gets the new tid and goes on.
        unsafe {
            core::arch::asm!(
                "syscall",
                "test rax, rax",
                "jnz 2f",
                "mov rdi, r12",
                "call {entry}",
                "ud2",
                "2:",
                entry = sym thread_main,
                inlateout("rax") nr::CLONE3 as isize => r,
                in("rdi") cargs.as_ptr(),
                in("rsi") core::mem::size_of_val(&cargs),
                in("r12") t as *const ThreadState,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        check(STAGE_THREADS, r, t.tid as u64)?;
    }
    Ok(())
}

/// Waits until every other thread is in place.
fn wait_threads(a: &RestorerArgs) {
    let ready = threads_ready(a);
    loop {
        let v = ready.load(core::sync::atomic::Ordering::SeqCst);
        if v >= a.n_threads - 1 {
            return;
        }
        // SAFETY: a futex wait on the live counter word; spurious wake-ups loop.
        unsafe {
            syscall4(
                nr::FUTEX,
                ready.as_ptr() as usize,
                FUTEX_WAIT_PRIVATE,
                v as usize,
                0,
            );
        }
    }
}

/// The life of every other thread: its credentials and settings, its pending signals, a stop
/// for the engine, then its own registers.
extern "C" fn thread_main(t: &ThreadState) -> ! {
    let a_addr = ARGS.load(core::sync::atomic::Ordering::SeqCst);
    // SAFETY: the leader stored the address of the live argument block before the clone.
    let a = unsafe { &*(a_addr as *const RestorerArgs) };
    if let Err(f) = thread_setup(t) {
        die(a.status_fd, Fail(f.0, f.1, t.tid as u64));
    }
    let ready = threads_ready(a);
    ready.fetch_add(1, core::sync::atomic::Ordering::SeqCst);
    // SAFETY: wakes the leader waiting on the counter; then this thread stops itself for the
    // engine (thread-directed SIGSTOP) and installs its fs/gs bases.
    unsafe {
        syscall3(
            nr::FUTEX,
            ready.as_ptr() as usize,
            FUTEX_WAKE_PRIVATE,
            i32::MAX as usize,
        );
        let pid = syscall1(nr::GETPID, 0);
        syscall3(nr::TGKILL, pid as usize, t.tid as usize, SIGSTOP);
        syscall2(nr::ARCH_PRCTL, ARCH_SET_FS, t.fs_base as usize);
        if t.gs_base != 0 {
            syscall2(nr::ARCH_PRCTL, ARCH_SET_GS, t.gs_base as usize);
        }
    }
    // SAFETY: the engine built a complete frame for this thread at `sigframe_sp`.
    unsafe { compel_arch::rt_sigreturn(t.sigframe_sp as usize) }
}

fn thread_setup(t: &ThreadState) -> Res {
    seccomp(&t.seccomp, t.tid as u64)?;
    if t.set_creds != 0 {
        creds(&t.creds)?;
    }
    thread_settings(t)?;
    sigqueue_own(t)
}

// A `syscall` instruction the engine points the restored task at, through ptrace, to unmap this
// blob once the task is back in its own registers (the task never returns here).
core::arch::global_asm!(
    ".pushsection .text.__export_restorer_syscall,\"ax\",@progbits",
    ".globl __export_restorer_syscall",
    ".type __export_restorer_syscall,@function",
    "__export_restorer_syscall:",
    "syscall",
    "ud2",
    ".popsection",
);

/// Puts this thread under seccomp as `s` says (strict mode, or each filter, oldest first).
/// `who` goes into a failure report (a thread id, or 0 for the leader).
fn seccomp(s: &Seccomp, who: u64) -> Res {
    const PR_SET_SECCOMP: usize = 22;
    const SECCOMP_MODE_STRICT: usize = 1;
    const SECCOMP_SET_MODE_FILTER: usize = 1;
    match s.mode {
        0 => Ok(()),
        1 => {
            // SAFETY: a prctl on this thread only; the tracing engine suspends it until the end.
            let r = unsafe { syscall5(nr::PRCTL, PR_SET_SECCOMP, SECCOMP_MODE_STRICT, 0, 0, 0) };
            check(STAGE_SECCOMP, r, who)
        }
        _ => {
            for i in 0..s.n_filters as usize {
                // SAFETY: the engine placed `n_filters` records at `filters` in the argument
                // area, each naming a program in that area.
                let f = unsafe { &*(s.filters as *const SeccompFilter).add(i) };
                // struct sock_fprog: u16 length, then (padded) a pointer to the program.
                let fprog: [u64; 2] = [f.len as u64, f.prog];
                // SAFETY: seccomp reads the fprog and the program it points to.
                let r = unsafe {
                    syscall3(
                        nr::SECCOMP,
                        SECCOMP_SET_MODE_FILTER,
                        f.flags as usize,
                        fprog.as_ptr() as usize,
                    )
                };
                check(STAGE_SECCOMP, r, who)?;
            }
            Ok(())
        }
    }
}
