//! More of CRIU compel's x86 host API: the TLS descriptors of a task or thread
//! (`compel_arch_get_tls_task`/`_thread`, `<compel/asm/infect-types.h>`), hardware
//! breakpoints (`ptrace_set_breakpoint`, `ptrace_flush_breakpoints`,
//! `<compel/asm/breakpoints.h>`), following tracees to the end of a syscall
//! (`compel_stop_on_syscall`) and relocating a blob copy (`compel_relocs_apply`).
// Unsafe code: raw ptrace requests on the caller's tracees and C buffers to fill.
#![allow(unsafe_code)]

use std::ffi::{c_int, c_void};

use crate::criu::{ParasiteBlobDesc, ThreadCtl};
use crate::{CompelCtl, ctl_mut, fail};

/// `GDT_ENTRY_TLS_MIN`, `GDT_ENTRY_TLS_NUM`: the three TLS slots of the GDT on x86_64.
const GDT_ENTRY_TLS_MIN: u32 = 12;
const GDT_ENTRY_TLS_NUM: usize = 3;
/// `PTRACE_GET_THREAD_AREA`.
const PTRACE_GET_THREAD_AREA: libc::c_uint = 25;
/// The flags word of a `struct user_desc` for a slot in no use: `read_exec_only` (bit 3) and
/// `seg_not_present` (bit 5).
const DESC_EMPTY_FLAGS: u32 = (1 << 3) | (1 << 5);

/// The kernel's `struct user_desc` (the bit fields as one word).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct UserDesc {
    entry_number: u32,
    base_addr: u32,
    limit: u32,
    flags: u32,
}

/// CRIU's `tls_t` on x86: the three GDT TLS descriptors.
#[repr(C)]
pub struct Tls {
    desc: [UserDesc; GDT_ENTRY_TLS_NUM],
}

const _: () = assert!(std::mem::size_of::<Tls>() == 48);

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// The TLS descriptors of the caller's stopped tracee `tid`: a slot the kernel cannot report
/// (no 32-bit emulation: `EIO`) stays "not present".
fn read_tls(tid: c_int) -> Result<[UserDesc; GDT_ENTRY_TLS_NUM], c_int> {
    let mut out = [UserDesc::default(); GDT_ENTRY_TLS_NUM];
    for (i, d) in out.iter_mut().enumerate() {
        let entry = GDT_ENTRY_TLS_MIN + i as u32;
        *d = UserDesc {
            entry_number: entry,
            flags: DESC_EMPTY_FLAGS,
            ..UserDesc::default()
        };
        // SAFETY: PTRACE_GET_THREAD_AREA writes one struct user_desc into `d`.
        let r = unsafe {
            libc::ptrace(
                PTRACE_GET_THREAD_AREA,
                tid,
                entry as usize as *mut c_void,
                std::ptr::from_mut(d).cast::<c_void>(),
            )
        };
        if r < 0 {
            let e = errno();
            if e == libc::EIO {
                return Ok(out);
            }
            return Err(fail(e, format!("thread area {entry} of {tid}: errno {e}")));
        }
    }
    Ok(out)
}

/// Writes `descs` (or "not present" slots on failure) to `out`.
///
/// # Safety
/// `out` is NULL or a writable `tls_t`.
unsafe fn put_tls(out: *mut Tls, descs: Result<[UserDesc; GDT_ENTRY_TLS_NUM], c_int>) {
    let desc = descs.unwrap_or_else(|_| {
        std::array::from_fn(|i| UserDesc {
            entry_number: GDT_ENTRY_TLS_MIN + i as u32,
            flags: DESC_EMPTY_FLAGS,
            ..UserDesc::default()
        })
    });
    // SAFETY: NULL or writable (as this function requires).
    if let Some(o) = unsafe { out.as_mut() } {
        o.desc = desc;
    }
}

/// `compel_arch_get_tls_task()`: the main thread's TLS descriptors, read while the task is
/// seized and not infected (while a parasite runs, its daemon thread is not in a ptrace stop:
/// the slots read "not present" and `compel_last_error()` says why).
///
/// # Safety
/// `ctl` comes from `compel_prepare()`; `out` is NULL or a writable `tls_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_arch_get_tls_task(ctl: *mut CompelCtl, out: *mut Tls) {
    // SAFETY: `ctl` comes from `compel_prepare()`; `out` is NULL or a writable `tls_t`, as this
    // function requires.
    let descs = match unsafe { ctl_mut(ctl) } {
        Ok(c) if c.parasite.is_some() => Err(fail(
            libc::EBUSY,
            format!("task {} runs its parasite: no thread area", c.pid),
        )),
        Ok(c) => read_tls(c.pid),
        Err(e) => Err(e),
    };
    // SAFETY: `ctl` comes from `compel_prepare()`; `out` is NULL or a writable `tls_t`, as this
    // function requires.
    unsafe { put_tls(out, descs) };
}

/// `compel_arch_get_tls_thread()`: the TLS descriptors of the handle's (seized) thread.
///
/// # Safety
/// `tctl` comes from `compel_prepare_thread()`; `out` is NULL or a writable `tls_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_arch_get_tls_thread(tctl: *mut ThreadCtl, out: *mut Tls) {
    // SAFETY: `tctl` comes from `compel_prepare_thread()`; `out` is NULL or a writable `tls_t`, as
    // this function requires.
    let descs = match unsafe { tctl.as_ref() } {
        Some(t) => read_tls(t.tid),
        None => Err(fail(libc::EINVAL, "null parasite_thread_ctl".into())),
    };
    // SAFETY: `tctl` comes from `compel_prepare_thread()`; `out` is NULL or a writable `tls_t`, as
    // this function requires.
    unsafe { put_tls(out, descs) };
}

/// `offsetof(struct user, u_debugreg[i])` on x86_64.
fn debugreg(i: usize) -> usize {
    std::mem::offset_of!(libc::user, u_debugreg) + i * 8
}

fn poke_user(pid: c_int, off: usize, v: usize) -> Result<(), i32> {
    // SAFETY: PTRACE_POKEUSER writes a word of the tracee's user area; no memory of ours.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_POKEUSER,
            pid,
            off as *mut c_void,
            v as *mut c_void,
        )
    };
    if r < 0 { Err(errno()) } else { Ok(()) }
}

/// `ptrace_set_breakpoint()`: a hardware execution breakpoint at `addr` in the caller's
/// stopped tracee `pid` (debug register 0, enabled locally), every signal but `SIGTRAP`
/// blocked, and the tracee continued. Returns 1 (the breakpoint is set and the tracee runs),
/// or `-errno`. The caller waits for the `SIGTRAP` stop, then calls
/// [`ptrace_flush_breakpoints`] and puts the signal mask back.
#[unsafe(no_mangle)]
pub extern "C" fn ptrace_set_breakpoint(pid: c_int, addr: *mut c_void) -> c_int {
    if let Err(e) = poke_user(pid, debugreg(0), addr as usize) {
        return fail(e, format!("breakpoint at {addr:p} in {pid}: errno {e}"));
    }
    // DR7: local enable of DR0 (bit 0); R/W and LEN bits 0: break on execution.
    if let Err(e) = poke_user(pid, debugreg(7), 1) {
        return fail(e, format!("enabling the breakpoint in {pid}: errno {e}"));
    }
    let block: u64 = !(1u64 << (libc::SIGTRAP - 1));
    // SAFETY: PTRACE_SETSIGMASK reads 8 bytes from `block`.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_SETSIGMASK,
            pid,
            8usize as *mut c_void,
            std::ptr::from_ref(&block).cast::<c_void>(),
        )
    };
    if r < 0 {
        let e = errno();
        return fail(e, format!("blocking signals of {pid}: errno {e}"));
    }
    // SAFETY: PTRACE_CONT takes no memory.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_CONT,
            pid,
            std::ptr::null_mut::<c_void>(),
            std::ptr::null_mut::<c_void>(),
        )
    };
    if r < 0 {
        let e = errno();
        return fail(e, format!("continuing {pid}: errno {e}"));
    }
    1
}

/// `ptrace_flush_breakpoints()`: disables the hardware breakpoints of the caller's stopped
/// tracee `pid`; 0 or `-errno`.
#[unsafe(no_mangle)]
pub extern "C" fn ptrace_flush_breakpoints(pid: c_int) -> c_int {
    match poke_user(pid, debugreg(7), 0) {
        Ok(()) => 0,
        Err(e) => fail(e, format!("disabling the breakpoints of {pid}: errno {e}")),
    }
}

/// `compel_stop_on_syscall()`: lets `tasks` of the caller's tracees, already continued with
/// `PTRACE_SYSCALL` (or towards a breakpoint, which is flushed when hit), run until each has
/// finished system call `sys_nr` (`sys_nr_compat` is for 32-bit tasks, not infected here);
/// each is left in the stop at the exit of that call. 0, or `-errno` when a tracee stops
/// otherwise or ends. Unlike CRIU's it waits for ptrace stops only, so it never reaps an
/// exited child of the caller that is not its tracee.
#[unsafe(no_mangle)]
pub extern "C" fn compel_stop_on_syscall(
    tasks: c_int,
    sys_nr: c_int,
    _sys_nr_compat: c_int,
) -> c_int {
    let mut left = tasks;
    // One tracee (the common case) can be told its syscall entries from exits by the
    // alternation; with several, the entry is recognised by `rax == -ENOSYS`.
    while left > 0 {
        let (pid, sig) = match wait_traced(None) {
            Ok(v) => v,
            Err(e) => return e,
        };
        if !is_syscall_stop(pid, sig) {
            if sig != libc::SIGTRAP {
                return fail(
                    libc::EIO,
                    format!("task {pid} stopped with signal {sig}, not a trap"),
                );
            }
            // A breakpoint: flush it and go on syscall by syscall.
            let r = ptrace_flush_breakpoints(pid);
            if r < 0 {
                return r;
            }
        } else {
            let regs = match get_regs(pid) {
                Ok(r) => r,
                Err(e) => return e,
            };
            let entering = regs.rax as i64 == -(libc::ENOSYS as i64);
            if entering && regs.orig_rax as i64 == i64::from(sys_nr) {
                if let Err(e) = resume(pid, libc::PTRACE_SYSCALL) {
                    return e;
                }
                match wait_traced(Some(pid)) {
                    Ok((_, s)) if is_syscall_stop(pid, s) => {
                        left -= 1;
                        continue;
                    }
                    Ok((_, s)) => {
                        return fail(
                            libc::EIO,
                            format!("task {pid} stopped with {s} in syscall {sys_nr}"),
                        );
                    }
                    Err(e) => return e,
                }
            }
        }
        if let Err(e) = resume(pid, libc::PTRACE_SYSCALL) {
            return e;
        }
    }
    0
}

/// A syscall stop: `SIGTRAP | 0x80` under `PTRACE_O_TRACESYSGOOD`, else a `SIGTRAP` whose
/// siginfo has `si_code` `SIGTRAP` or `SIGTRAP | 0x80` (a breakpoint's is `TRAP_HWBKPT`).
fn is_syscall_stop(pid: c_int, sig: i32) -> bool {
    if sig == libc::SIGTRAP | 0x80 {
        return true;
    }
    sig == libc::SIGTRAP
        && compel_rt::ptrace::get_siginfo(pid)
            .is_ok_and(|si| si.si_code == libc::SIGTRAP || si.si_code == libc::SIGTRAP | 0x80)
}

fn resume(pid: c_int, req: libc::c_uint) -> Result<(), c_int> {
    // SAFETY: a resume request takes no memory.
    let r = unsafe {
        libc::ptrace(
            req,
            pid,
            std::ptr::null_mut::<c_void>(),
            std::ptr::null_mut::<c_void>(),
        )
    };
    if r < 0 {
        let e = errno();
        return Err(fail(e, format!("resuming {pid}: errno {e}")));
    }
    Ok(())
}

fn get_regs(pid: c_int) -> Result<compel_rt::UserRegs, c_int> {
    let mut regs = compel_rt::UserRegs::default();
    // SAFETY: PTRACE_GETREGS fills one user_regs_struct, which UserRegs is.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGS,
            pid,
            std::ptr::null_mut::<c_void>(),
            std::ptr::from_mut(&mut regs).cast::<c_void>(),
        )
    };
    if r < 0 {
        let e = errno();
        return Err(fail(e, format!("registers of {pid}: errno {e}")));
    }
    Ok(regs)
}

/// The next ptrace stop of one of the caller's tracees (`pid`, or any): its pid and stop
/// signal. Exited children that are not tracees are not reaped (only stops are waited for);
/// a tracee that ends is an error.
fn wait_traced(pid: Option<c_int>) -> Result<(c_int, i32), c_int> {
    let (idtype, id) = match pid {
        Some(p) => (libc::P_PID, p as libc::id_t),
        None => (libc::P_ALL, 0),
    };
    loop {
        // SAFETY: a zeroed siginfo_t is valid for waitid to fill.
        let mut si: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid fills `si`.
        let r = unsafe { libc::waitid(idtype, id, &mut si, libc::WSTOPPED | libc::__WALL) };
        if r < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            return Err(fail(e, format!("waiting for a tracee: errno {e}")));
        }
        // SAFETY: waitid filled a SIGCHLD siginfo: si_pid and si_status are valid.
        let (who, status, code) = unsafe { (si.si_pid(), si.si_status(), si.si_code) };
        if code != libc::CLD_TRAPPED && code != libc::CLD_STOPPED {
            return Err(fail(libc::ESRCH, format!("task {who} ended (code {code})")));
        }
        return Ok((who, status));
    }
}

/// `compel_relocs_apply()`: relocates the copy of `pbd`'s blob at `mem` for running at
/// `vbase` (each relocation adds `vbase` to a 64-bit word of the image). Relocations that
/// fall outside the image are skipped (the descriptor is checked when it is infected).
///
/// # Safety
/// `mem` is writable for the descriptor's `image_size` bytes; `pbd` comes from
/// `compel_parasite_blob_desc()` filled by a generated header.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_relocs_apply(
    mem: *mut c_void,
    vbase: *mut c_void,
    pbd: *mut ParasiteBlobDesc,
) {
    // SAFETY: NULL or a filled descriptor (as this function requires).
    let Some(d) = (unsafe { pbd.as_ref() }) else {
        fail(libc::EINVAL, "null parasite_blob_desc".into());
        return;
    };
    let (size, relocs, nr) = (
        d.desc.image_size as usize,
        d.desc.relocs,
        d.desc.nr_relocs as usize,
    );
    if mem.is_null() || relocs.is_null() {
        return;
    }
    // SAFETY: mem is writable for image_size bytes and the relocation array holds nr entries
    // (as this function requires).
    let (img, rel) = unsafe {
        (
            std::slice::from_raw_parts_mut(mem.cast::<u8>(), size),
            std::slice::from_raw_parts(relocs, nr),
        )
    };
    for &off in rel {
        let off = off as usize;
        if let Some(w) = off.checked_add(8).and_then(|end| img.get_mut(off..end)) {
            let mut v = [0u8; 8];
            v.copy_from_slice(w);
            let nv = u64::from_le_bytes(v).wrapping_add(vbase as u64);
            w.copy_from_slice(&nv.to_le_bytes());
        }
    }
}
