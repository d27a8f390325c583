//! The rest of CRIU compel's host API (`<compel/infect.h>`, `<compel/ptrace.h>`): registers
//! (`compel_get_thread_regs`, `compel_get_leader_ip`/`_sp`, `compel_set_leader_ip`, ...),
//! running code in a seized task (`compel_run_at`, `compel_unmap`), the seize-time helpers
//! (`compel_interrupt_task`, `compel_wait_task`, `compel_parse_stop_signo`,
//! `compel_resume_task_sig`), and the ptrace memory helpers (`ptrace_peek_area`,
//! `ptrace_poke_area`, `ptrace_swap_area`, `ptrace_suspend_seccomp`).
//!
//! The model is this library's (see `<compel/infect.h>`): `compel_prepare()` seizes, so
//! `compel_interrupt_task()` only checks the task can be looked at and `compel_wait_task()`
//! reports its state and status without seizing. Registers are the task's as found: before
//! infection the live ones, after it the ones the cure puts back.
// Unsafe code: C callers hand over raw pointers (handles, register and memory buffers) and a
// callback; ptrace peek/poke on the caller's tracee.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_long, c_ulong, c_ulonglong, c_void};

use compel_rt::ptrace::Stop;
use compel_rt::{Resume, UserRegs};

use crate::criu::ThreadCtl;
use crate::{CompelCtl, ctl_mut, fail, task_errno};

/// `NATIVE_MAGIC`: `user_regs_struct_t.__is_native` of 64-bit registers.
const NATIVE_MAGIC: i16 = 0x0a;
/// `__NR_munmap` on x86_64.
const NR_MUNMAP: u64 = 11;
/// The size of CRIU's `user_fpregs_struct_t` (`struct xsave_struct`) a `save_regs_t` hook may
/// read: at least this much is passed, zero-filled past the task's own xsave area.
const FPREGS_MIN: usize = 4096;

/// CRIU's `user_regs_struct_t` on x86_64: the registers (or their 32-bit form) and a flag.
#[repr(C)]
struct CriuRegs {
    native: UserRegs,
    is_native: i16,
}

/// CRIU's `struct seize_task_status`.
#[repr(C)]
pub struct SeizeTaskStatus {
    sigpnd: c_ulonglong,
    shdpnd: c_ulonglong,
    sigblk: c_ulonglong,
    state: c_char,
    vpid: c_int,
    ppid: c_int,
    seccomp_mode: c_int,
}

/// A `get_status` hook of `compel_wait_task()`.
type GetStatus = unsafe extern "C" fn(c_int, *mut SeizeTaskStatus, *mut c_void) -> c_int;
/// A `free_status` hook of `compel_wait_task()`.
type FreeStatus = unsafe extern "C" fn(c_int, *mut SeizeTaskStatus, *mut c_void);
/// CRIU's `save_regs_t`: `(arg, user_regs_struct_t *, user_fpregs_struct_t *)`.
type SaveRegs = unsafe extern "C" fn(*mut c_void, *mut c_void, *mut c_void) -> c_int;

/// The registers the task of `ctl` will have when it runs on: the saved ones once infected.
fn leader_regs(ctl: &mut CompelCtl) -> Result<UserRegs, c_int> {
    if let Some(p) = ctl.parasite.as_ref() {
        return Ok(p.saved_state().regs);
    }
    let pid = ctl.pid;
    let Some(t) = ctl.task() else {
        return Err(fail(libc::ESRCH, format!("task {pid} is not seized")));
    };
    t.regs(pid)
        .map_err(|e| fail(task_errno(&e), format!("registers of {pid}: {e}")))
}

/// Runs `f` on the handle's live (not infected) task; errors as `-errno`.
fn with_seized<T>(
    ctl: &mut CompelCtl,
    what: &str,
    f: impl FnOnce(&mut compel_rt::Task, i32) -> Result<T, compel_rt::TaskError>,
) -> Result<T, c_int> {
    let pid = ctl.pid;
    if ctl.parasite.is_some() {
        return Err(fail(
            libc::EBUSY,
            format!("{what}: task {pid} runs its parasite (cure it first)"),
        ));
    }
    let Some(t) = ctl.task() else {
        return Err(fail(libc::ESRCH, format!("task {pid} is not seized")));
    };
    f(t, pid).map_err(|e| fail(task_errno(&e), format!("{what} in {pid}: {e}")))
}

/// `compel_get_leader_ip()`: the instruction pointer the task resumes at (0 on failure).
///
/// # Safety
/// `ctl` comes from `compel_prepare()`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_get_leader_ip(ctl: *mut CompelCtl) -> u64 {
    // SAFETY: `ctl` comes from `compel_prepare()`, as this function requires.
    let Ok(c) = (unsafe { ctl_mut(ctl) }) else {
        return 0;
    };
    leader_regs(c).map_or(0, |r| r.rip)
}

/// `compel_get_leader_sp()`: the stack pointer the task resumes with (0 on failure).
///
/// # Safety
/// `ctl` comes from `compel_prepare()`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_get_leader_sp(ctl: *mut CompelCtl) -> u64 {
    // SAFETY: `ctl` comes from `compel_prepare()`, as this function requires.
    let Ok(c) = (unsafe { ctl_mut(ctl) }) else {
        return 0;
    };
    leader_regs(c).map_or(0, |r| r.rsp)
}

/// `compel_set_leader_ip()`: the task resumes at `v`. Only before infection (after it the
/// cure puts the saved registers back; the failure is left in `compel_last_error()`).
///
/// # Safety
/// `ctl` comes from `compel_prepare()`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_set_leader_ip(ctl: *mut CompelCtl, v: u64) {
    // SAFETY: `ctl` comes from `compel_prepare()`, as this function requires.
    let Ok(c) = (unsafe { ctl_mut(ctl) }) else {
        return;
    };
    let _ = with_seized(c, "setting the ip", |t, pid| {
        let mut r = t.regs(pid)?;
        r.rip = v;
        t.set_regs(pid, &r)
    });
}

/// The live registers of the handle's thread.
fn thread_regs(t: &ThreadCtl) -> Result<UserRegs, c_int> {
    // SAFETY: t.ctl is alive (the callers' contract).
    let ctl = unsafe { ctl_mut(t.ctl) }?;
    let tid = t.tid;
    let Some(task) = ctl.task() else {
        return Err(fail(libc::ESRCH, format!("thread {tid} is not seized")));
    };
    task.regs(tid)
        .map_err(|e| fail(task_errno(&e), format!("registers of thread {tid}: {e}")))
}

/// `compel_get_thread_ip()` (0 on failure).
///
/// # Safety
/// `tctl` comes from `compel_prepare_thread()` and its `ctl` is alive.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_get_thread_ip(tctl: *mut ThreadCtl) -> u64 {
    // SAFETY: `tctl` comes from `compel_prepare_thread()` and its `ctl` is alive, as this function
    // requires.
    let Some(t) = (unsafe { tctl.as_ref() }) else {
        return 0;
    };
    thread_regs(t).map_or(0, |r| r.rip)
}

/// `compel_get_thread_sp()` (0 on failure).
///
/// # Safety
/// As [`compel_get_thread_ip`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_get_thread_sp(tctl: *mut ThreadCtl) -> u64 {
    // SAFETY: `tctl` is null or comes from `compel_prepare_thread()` and its `ctl` is alive, as
    // this function requires.
    let Some(t) = (unsafe { tctl.as_ref() }) else {
        return 0;
    };
    thread_regs(t).map_or(0, |r| r.rsp)
}

/// `compel_set_thread_ip()`: the thread resumes at `v`.
///
/// # Safety
/// As [`compel_get_thread_ip`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_set_thread_ip(tctl: *mut ThreadCtl, v: u64) {
    // SAFETY: `tctl` is null or comes from `compel_prepare_thread()` and its `ctl` is alive, as
    // this function requires.
    let Some(t) = (unsafe { tctl.as_ref() }) else {
        return;
    };
    let tid = t.tid;
    // SAFETY: t.ctl is alive (as this function requires).
    let Ok(ctl) = (unsafe { ctl_mut(t.ctl) }) else {
        return;
    };
    let Some(task) = ctl.task() else { return };
    let r = task.regs(tid).and_then(|mut r| {
        r.rip = v;
        task.set_regs(tid, &r)
    });
    if let Err(e) = r {
        fail(
            task_errno(&e),
            format!("setting the ip of thread {tid}: {e}"),
        );
    }
}

/// `compel_get_thread_regs()`: calls `save(arg, regs, fpregs)` with the thread's registers in
/// CRIU's `user_regs_struct_t` and its xsave area (`user_fpregs_struct_t`); returns what
/// `save` returns, or `-errno` when the registers cannot be read.
///
/// # Safety
/// `tctl` comes from `compel_prepare_thread()` and its `ctl` is alive; `save` is a valid
/// function that only reads the two buffers during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_get_thread_regs(
    tctl: *mut ThreadCtl,
    save: Option<SaveRegs>,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: `tctl` comes from `compel_prepare_thread()` and its `ctl` is alive; `save` is a valid
    // function that only reads the two buffers during the call, as this function requires.
    let Some(t) = (unsafe { tctl.as_ref() }) else {
        return fail(libc::EINVAL, "null parasite_thread_ctl".into());
    };
    let Some(save) = save else {
        return fail(libc::EINVAL, "no save_regs hook".into());
    };
    let tid = t.tid;
    let regs = match thread_regs(t) {
        Ok(r) => r,
        Err(e) => return e,
    };
    // SAFETY: t.ctl is alive (as this function requires).
    let ctl = match unsafe { ctl_mut(t.ctl) } {
        Ok(c) => c,
        Err(e) => return e,
    };
    let Some(task) = ctl.task() else {
        return fail(libc::ESRCH, format!("thread {tid} is not seized"));
    };
    let xsave = match task.xsave(tid) {
        Ok(x) => x,
        Err(e) => return fail(task_errno(&e), format!("xsave of thread {tid}: {e}")),
    };
    let mut fp = vec![0u8; xsave.bytes().len().max(FPREGS_MIN)];
    fp[..xsave.bytes().len()].copy_from_slice(xsave.bytes());
    let mut cr = CriuRegs {
        native: regs,
        is_native: NATIVE_MAGIC,
    };
    // SAFETY: the hook gets two live buffers of the sizes CRIU's types have, for the call only.
    unsafe {
        save(
            arg,
            (&raw mut cr).cast::<c_void>(),
            fp.as_mut_ptr().cast::<c_void>(),
        )
    }
}

/// `compel_run_at()`: runs the seized (not infected) task from `ip`, with its registers
/// otherwise as found, until it traps (`int3`); the registers at the trap go to `ret_regs`
/// (CRIU's `user_regs_struct_t`, may be NULL) and the task's own are put back. A task that
/// stops with another signal (a fault) fails the call with `-EFAULT`, registers put back.
///
/// # Safety
/// `ctl` comes from `compel_prepare()`; `ret_regs` is NULL or points to a writable
/// `user_regs_struct_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_run_at(
    ctl: *mut CompelCtl,
    ip: c_ulong,
    ret_regs: *mut c_void,
) -> c_int {
    // SAFETY: `ctl` comes from `compel_prepare()`; `ret_regs` is NULL or points to a writable
    // `user_regs_struct_t`, as this function requires.
    let c = match unsafe { ctl_mut(ctl) } {
        Ok(c) => c,
        Err(e) => return e,
    };
    let r = with_seized(c, "running code", |t, pid| {
        let orig = t.regs(pid)?;
        let mut r = orig;
        r.rip = ip;
        // Not in a syscall: no restart logic may move the ip.
        r.orig_rax = u64::MAX;
        t.set_regs(pid, &r)?;
        t.resume(pid, Resume::Continue)?;
        let out = loop {
            match t.wait_stop(pid)? {
                Stop::Signal(libc::SIGTRAP) => break Ok(t.regs(pid)?),
                Stop::Signal(sig) => break Err(sig),
                // A group stop or interrupt on the way: go on.
                _ => t.resume(pid, Resume::Continue)?,
            }
        };
        t.set_regs(pid, &orig)?;
        Ok(out)
    });
    match r {
        Ok(Ok(regs)) => {
            // SAFETY: `ret_regs` is NULL or a writable user_regs_struct_t, as this function
            // requires.
            if let Some(out) = unsafe { ret_regs.cast::<CriuRegs>().as_mut() } {
                *out = CriuRegs {
                    native: regs,
                    is_native: NATIVE_MAGIC,
                };
            }
            0
        }
        Ok(Err(sig)) => fail(
            libc::EFAULT,
            format!("code at {ip:#x} stopped with signal {sig}, not a trap"),
        ),
        Err(e) => e,
    }
}

/// `compel_unmap()`: runs the seized (not infected) task from `addr` until its `munmap` system
/// call returns (code that unmaps itself, as CRIU's restorer does), then puts its registers
/// back.
///
/// # Safety
/// `ctl` comes from `compel_prepare()`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_unmap(ctl: *mut CompelCtl, addr: c_ulong) -> c_int {
    // SAFETY: `ctl` comes from `compel_prepare()`, as this function requires.
    let c = match unsafe { ctl_mut(ctl) } {
        Ok(c) => c,
        Err(e) => return e,
    };
    let r = with_seized(c, "unmapping", |t, pid| {
        let orig = t.regs(pid)?;
        let mut r = orig;
        r.rip = addr;
        r.orig_rax = u64::MAX;
        t.set_regs(pid, &r)?;
        // Syscall stops come in pairs (entry, exit): the exit after munmap's entry ends it.
        let mut entering = true;
        let mut in_munmap = false;
        let out = loop {
            t.resume(pid, Resume::Syscall)?;
            match t.wait_stop(pid)? {
                Stop::Syscall | Stop::Signal(libc::SIGTRAP) => {
                    let now = t.regs(pid)?;
                    if entering {
                        in_munmap = now.orig_rax == NR_MUNMAP;
                    } else if in_munmap {
                        break Ok(now.rax as i64);
                    }
                    entering = !entering;
                }
                Stop::Signal(sig) => break Err(sig),
                _ => {}
            }
        };
        t.set_regs(pid, &orig)?;
        Ok(out)
    });
    match r {
        Ok(Ok(ret)) if ret < 0 => fail(-ret as i32, format!("munmap from {addr:#x} failed")),
        Ok(Ok(_)) => 0,
        Ok(Err(sig)) => fail(
            libc::EFAULT,
            format!("code at {addr:#x} stopped with signal {sig} before munmap"),
        ),
        Err(e) => e,
    }
}

/// `compel_mode_native()`: 1, the task runs 64-bit code (32-bit tasks are not infected here).
///
/// # Safety
/// `ctl` comes from `compel_prepare()`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_mode_native(ctl: *mut CompelCtl) -> c_int {
    // SAFETY: `ctl` comes from `compel_prepare()`, as this function requires.
    let Ok(c) = (unsafe { ctl_mut(ctl) }) else {
        return 0;
    };
    // The 64-bit user code segment.
    leader_regs(c).map_or(0, |r| c_int::from(r.cs == 0x33))
}

/// `compel_task_size()`: the top of the user address space (4-level page tables).
#[unsafe(no_mangle)]
pub extern "C" fn compel_task_size() -> c_ulong {
    (1 << 47) - 4096
}

/// `compel_interrupt_task()`: 0 when task `pid` exists and may be traced by the caller, else
/// `-errno`. The task is seized by `compel_prepare()`, not here.
#[unsafe(no_mangle)]
pub extern "C" fn compel_interrupt_task(pid: c_int) -> c_int {
    match crate::criu::proc_task_state(pid) {
        e if e < 0 => e,
        0x02 | 0x06 => fail(libc::ESRCH, format!("task {pid} is dead")),
        _ => 0,
    }
}

/// `/proc/PID/status` as CRIU's `struct seize_task_status`.
fn read_status(pid: c_int) -> Option<SeizeTaskStatus> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mut st = SeizeTaskStatus {
        sigpnd: 0,
        shdpnd: 0,
        sigblk: 0,
        state: 0,
        vpid: pid,
        ppid: 0,
        seccomp_mode: 0,
    };
    let hex = |v: &str| u64::from_str_radix(v.trim(), 16).unwrap_or(0);
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        match k {
            "State" => st.state = v.trim().bytes().next().unwrap_or(b'?') as c_char,
            "PPid" => st.ppid = v.trim().parse().unwrap_or(0),
            "SigPnd" => st.sigpnd = hex(v),
            "ShdPnd" => st.shdpnd = hex(v),
            "SigBlk" => st.sigblk = hex(v),
            "Seccomp" => st.seccomp_mode = v.trim().parse().unwrap_or(0),
            "NSpid" => {
                st.vpid = v
                    .split_whitespace()
                    .last()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(pid);
            }
            _ => {}
        }
    }
    Some(st)
}

/// `compel_wait_task()`: the state of task `pid` (`COMPEL_TASK_*`), with its status in `st`
/// (from `get_status`, or from `/proc/PID/status` when it is NULL); `-ESRCH`-style errors, and
/// `-EINVAL` when `ppid` is not -1 and not the task's parent. `free_status` is called for
/// a status `get_status` filled.
///
/// # Safety
/// `st` points to a writable `struct seize_task_status`; the hooks are NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_wait_task(
    pid: c_int,
    ppid: c_int,
    get_status: Option<GetStatus>,
    free_status: Option<FreeStatus>,
    st: *mut SeizeTaskStatus,
    data: *mut c_void,
) -> c_int {
    // SAFETY: `st` points to a writable `struct seize_task_status`; the hooks are NULL or valid, as
    // this function requires.
    let Some(out) = (unsafe { st.as_mut() }) else {
        return fail(libc::EINVAL, "null seize_task_status".into());
    };
    let state = crate::criu::proc_task_state(pid);
    if state < 0 {
        return state;
    }
    match get_status {
        Some(get) => {
            // SAFETY: the hook fills the caller's structure (as this function requires).
            if unsafe { get(pid, out, data) } < 0 {
                return fail(libc::ESRCH, format!("no status of task {pid}"));
            }
        }
        None => match read_status(pid) {
            Some(s) => *out = s,
            None => return fail(libc::ESRCH, format!("no status of task {pid}")),
        },
    }
    let parent = out.ppid;
    if let (Some(free), Some(_)) = (free_status, get_status) {
        // SAFETY: the caller's hook, given back what its get_status filled.
        unsafe { free(pid, out, data) };
    }
    if ppid != -1 && parent != ppid {
        return fail(
            libc::EINVAL,
            format!("task {pid}: parent {parent}, expected {ppid}"),
        );
    }
    state
}

/// `compel_parse_stop_signo()`: the signal of the stop the caller's tracee `pid` is in, or
/// `-errno`.
#[unsafe(no_mangle)]
pub extern "C" fn compel_parse_stop_signo(pid: c_int) -> c_int {
    match compel_rt::ptrace::get_siginfo(pid) {
        Ok(si) => si.si_signo,
        Err(e) => fail(e as i32, format!("siginfo of {pid}: {e}")),
    }
}

/// `compel_resume_task_sig()`: as `compel_resume_task()`, nothing left to do (0).
#[unsafe(no_mangle)]
pub extern "C" fn compel_resume_task_sig(
    _pid: c_int,
    _orig_state: c_int,
    _state: c_int,
    _stop_signo: c_int,
) -> c_int {
    0
}

/// `ptrace_suspend_seccomp()`: `PTRACE_O_SUSPEND_SECCOMP | PTRACE_O_TRACESYSGOOD` on the
/// caller's tracee (needs `CAP_SYS_ADMIN`); 0 or `-errno`.
#[unsafe(no_mangle)]
pub extern "C" fn ptrace_suspend_seccomp(pid: c_int) -> c_int {
    let opts = libc::PTRACE_O_SUSPEND_SECCOMP | libc::PTRACE_O_TRACESYSGOOD;
    // SAFETY: PTRACE_SETOPTIONS takes no memory.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_SETOPTIONS,
            pid,
            std::ptr::null_mut::<c_void>(),
            opts as c_long,
        )
    };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        return fail(
            e.raw_os_error().unwrap_or(libc::EIO),
            format!("suspending seccomp of {pid}: {e}"),
        );
    }
    0
}

const WORD: usize = std::mem::size_of::<c_long>();

/// Checks a ptrace area request: a whole number of words, non-negative.
fn words(bytes: c_long) -> Result<usize, c_int> {
    match usize::try_from(bytes) {
        Ok(n) if n % WORD == 0 => Ok(n / WORD),
        _ => Err(fail(
            libc::EINVAL,
            format!("{bytes} bytes is not a whole number of words"),
        )),
    }
}

/// `ptrace_peek_area()`: reads `bytes` (a multiple of the word size) at `addr` of the
/// caller's stopped tracee `pid` into `dst`; 0 or `-errno`.
///
/// # Safety
/// `dst` has room for `bytes` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ptrace_peek_area(
    pid: c_int,
    dst: *mut c_void,
    addr: *mut c_void,
    bytes: c_long,
) -> c_int {
    let n = match words(bytes) {
        Ok(n) => n,
        Err(e) => return e,
    };
    for i in 0..n {
        let at = (addr as usize).wrapping_add(i * WORD);
        // SAFETY: clear errno, then PEEKDATA (no memory of ours is touched).
        let w = unsafe {
            *libc::__errno_location() = 0;
            libc::ptrace(libc::PTRACE_PEEKDATA, pid, at as *mut c_void, 0 as c_long)
        };
        let e = std::io::Error::last_os_error();
        if w == -1 && e.raw_os_error().unwrap_or(0) != 0 {
            return fail(
                e.raw_os_error().unwrap_or(libc::EIO),
                format!("peek at {at:#x} of {pid}: {e}"),
            );
        }
        // SAFETY: dst has room for n words (as this function requires); unaligned writes are
        // allowed.
        unsafe { dst.cast::<c_long>().add(i).write_unaligned(w) };
    }
    0
}

/// `ptrace_poke_area()`: writes `bytes` (a multiple of the word size) from `src` at `addr` of
/// the caller's stopped tracee `pid`; 0 or `-errno`.
///
/// # Safety
/// `src` holds `bytes` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ptrace_poke_area(
    pid: c_int,
    src: *mut c_void,
    addr: *mut c_void,
    bytes: c_long,
) -> c_int {
    let n = match words(bytes) {
        Ok(n) => n,
        Err(e) => return e,
    };
    for i in 0..n {
        let at = (addr as usize).wrapping_add(i * WORD);
        // SAFETY: src holds n words (as this function requires).
        let w = unsafe { src.cast::<c_long>().add(i).read_unaligned() };
        // SAFETY: POKEDATA writes into the tracee only.
        let r = unsafe { libc::ptrace(libc::PTRACE_POKEDATA, pid, at as *mut c_void, w) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            return fail(
                e.raw_os_error().unwrap_or(libc::EIO),
                format!("poke at {at:#x} of {pid}: {e}"),
            );
        }
    }
    0
}

/// `ptrace_swap_area()`: writes `src` at `dst` in the tracee and hands back in `src` what was
/// there; on a failed write the old bytes are put back. 0 or `-errno`.
///
/// # Safety
/// `src` holds `bytes` readable and writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ptrace_swap_area(
    pid: c_int,
    dst: *mut c_void,
    src: *mut c_void,
    bytes: c_long,
) -> c_int {
    let n = match words(bytes) {
        Ok(n) => n,
        Err(e) => return e,
    };
    let mut old = vec![0 as c_long; n];
    // SAFETY: `old` has room for n words.
    let r = unsafe { ptrace_peek_area(pid, old.as_mut_ptr().cast(), dst, bytes) };
    if r < 0 {
        return r;
    }
    // SAFETY: src holds `bytes` bytes (as this function requires).
    let r = unsafe { ptrace_poke_area(pid, src, dst, bytes) };
    if r < 0 {
        // SAFETY: `old` holds what was there.
        let _ = unsafe { ptrace_poke_area(pid, old.as_mut_ptr().cast(), dst, bytes) };
        return r;
    }
    // SAFETY: src has room for n words (as this function requires).
    unsafe { std::ptr::copy_nonoverlapping(old.as_ptr().cast::<u8>(), src.cast::<u8>(), n * WORD) };
    0
}
