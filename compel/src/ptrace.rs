//! Thin, safe wrappers over the raw ptrace requests and the per-pid wait that the task layer
//! uses. All the `unsafe` of the task-control runtime lives here: each call passes the kernel a
//! pointer to a local, correctly sized value.
//!
//! These are building blocks; most users want [`crate::Task`], which keeps the task consistent
//! (registers and signal mask restored, signals re-delivered) around them.
// Unsafe code: the ptrace requests, each passing the kernel a pointer to a local.
#![allow(unsafe_code)]

use compel_arch::UserRegs;
use nix::errno::Errno;

/// `PTRACE_SEIZE` options compel uses.
pub mod options {
    /// Suspend the tracee's seccomp filters while it is traced (needs `CAP_SYS_ADMIN`).
    pub const SUSPEND_SECCOMP: u64 = 1 << 21;
    /// Report syscall stops with `SIGTRAP | 0x80`.
    pub const TRACESYSGOOD: u64 = 1;
    /// Trace new threads and children made with `clone` (they start seized).
    pub const TRACECLONE: u64 = 1 << 3;
    /// Kill the tracee if the tracer exits.
    pub const EXITKILL: u64 = 1 << 20;
}

/// `PTRACE_EVENT_STOP`: the event of group-stops and `PTRACE_INTERRUPT` stops under
/// `PTRACE_SEIZE`.
pub const PTRACE_EVENT_STOP: i32 = 128;

/// The signal mask a thread gets while compel runs code in it (a remote syscall, the parasite):
/// every signal blocked except `SIGTRAP`.
///
/// Single-stepping and `int3` make the kernel force a `SIGTRAP` on the thread, and forcing a
/// signal the thread blocks (or ignores) resets its handler to `SIG_DFL`: with `SIGTRAP`
/// blocked, a program's own `SIGTRAP` handler would be gone after compel let go of it, and its
/// next `raise(SIGTRAP)` would kill it. Left unblocked, the forced `SIGTRAP` only reaches the
/// tracer (a signal-delivery-stop), which discards it.
pub const REMOTE_CODE_SIGMASK: u64 = !(1 << (libc::SIGTRAP - 1));

const PTRACE_GETSIGMASK: libc::c_uint = 0x420a;
const PTRACE_SETSIGMASK: libc::c_uint = 0x420b;

/// `NT_X86_XSTATE` (and its twins on other arches): the regset of the extended FPU state.
pub const NT_XSTATE: libc::c_int = 0x202;

fn check(rc: libc::c_long) -> Result<libc::c_long, Errno> {
    if rc == -1 { Err(Errno::last()) } else { Ok(rc) }
}

fn req(request: libc::c_uint, tid: i32, addr: usize, data: usize) -> Result<libc::c_long, Errno> {
    Errno::clear();
    // SAFETY: callers pass either plain integers or pointers to live locals sized for the
    // request, so the kernel only reads or writes memory we own.
    check(unsafe {
        libc::ptrace(
            request,
            tid,
            addr as *mut libc::c_void,
            data as *mut libc::c_void,
        )
    })
}

/// `PTRACE_SEIZE` with `opts` (bits of [`options`]).
pub fn seize(tid: i32, opts: u64) -> Result<(), Errno> {
    req(libc::PTRACE_SEIZE, tid, 0, opts as usize).map(drop)
}

/// `PTRACE_INTERRUPT`: asks a seized tracee to stop.
pub fn interrupt(tid: i32) -> Result<(), Errno> {
    req(libc::PTRACE_INTERRUPT, tid, 0, 0).map(drop)
}

/// `PTRACE_CONT`, delivering `sig` (0 for none).
pub fn cont(tid: i32, sig: i32) -> Result<(), Errno> {
    req(libc::PTRACE_CONT, tid, 0, sig as usize).map(drop)
}

/// `PTRACE_SINGLESTEP`, delivering `sig` (0 for none).
pub fn single_step(tid: i32, sig: i32) -> Result<(), Errno> {
    req(libc::PTRACE_SINGLESTEP, tid, 0, sig as usize).map(drop)
}

/// `PTRACE_SYSCALL`: run to the next syscall entry or exit, delivering `sig` (0 for none).
pub fn syscall(tid: i32, sig: i32) -> Result<(), Errno> {
    req(libc::PTRACE_SYSCALL, tid, 0, sig as usize).map(drop)
}

/// `PTRACE_DETACH`, delivering `sig` (0 for none) if the tracee is in a signal-delivery-stop.
pub fn detach(tid: i32, sig: i32) -> Result<(), Errno> {
    req(libc::PTRACE_DETACH, tid, 0, sig as usize).map(drop)
}

/// `PTRACE_LISTEN`: let a tracee in group-stop wait for `SIGCONT` while staying traced.
pub fn listen(tid: i32) -> Result<(), Errno> {
    req(libc::PTRACE_LISTEN, tid, 0, 0).map(drop)
}

/// `PTRACE_GETREGS`.
pub fn get_regs(tid: i32) -> Result<UserRegs, Errno> {
    let mut regs = UserRegs::default();
    req(
        libc::PTRACE_GETREGS,
        tid,
        0,
        &mut regs as *mut UserRegs as usize,
    )?;
    Ok(regs)
}

/// `PTRACE_SETREGS`.
pub fn set_regs(tid: i32, regs: &UserRegs) -> Result<(), Errno> {
    req(
        libc::PTRACE_SETREGS,
        tid,
        0,
        regs as *const UserRegs as usize,
    )
    .map(drop)
}

/// `PTRACE_GETREGSET` of `note` into `buf`; returns how many bytes the kernel filled.
pub fn get_regset(tid: i32, note: libc::c_int, buf: &mut [u8]) -> Result<usize, Errno> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    req(
        libc::PTRACE_GETREGSET,
        tid,
        note as usize,
        &mut iov as *mut libc::iovec as usize,
    )?;
    Ok(iov.iov_len)
}

/// `PTRACE_SETREGSET` of `note` from `buf`.
pub fn set_regset(tid: i32, note: libc::c_int, buf: &[u8]) -> Result<(), Errno> {
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    req(
        libc::PTRACE_SETREGSET,
        tid,
        note as usize,
        &mut iov as *mut libc::iovec as usize,
    )
    .map(drop)
}

/// `PTRACE_GETSIGMASK`: the blocked-signal mask (bit `n-1` for signal `n`).
pub fn get_sigmask(tid: i32) -> Result<u64, Errno> {
    let mut mask = 0u64;
    req(PTRACE_GETSIGMASK, tid, 8, &mut mask as *mut u64 as usize)?;
    Ok(mask)
}

/// `PTRACE_SETSIGMASK`.
pub fn set_sigmask(tid: i32, mask: u64) -> Result<(), Errno> {
    req(PTRACE_SETSIGMASK, tid, 8, &mask as *const u64 as usize).map(drop)
}

/// `PTRACE_GETSIGINFO`: the siginfo of the signal (or event) the tracee is stopped for.
pub fn get_siginfo(tid: i32) -> Result<libc::siginfo_t, Errno> {
    // SAFETY: siginfo_t is plain old data; all-zero is a valid value.
    let mut si: libc::siginfo_t = unsafe { std::mem::zeroed() };
    req(
        libc::PTRACE_GETSIGINFO,
        tid,
        0,
        &mut si as *mut libc::siginfo_t as usize,
    )?;
    Ok(si)
}

/// `PTRACE_SETSIGINFO`: replaces the siginfo of the signal the tracee is stopped for.
pub fn set_siginfo(tid: i32, si: &libc::siginfo_t) -> Result<(), Errno> {
    req(
        libc::PTRACE_SETSIGINFO,
        tid,
        0,
        si as *const libc::siginfo_t as usize,
    )
    .map(drop)
}

/// `PTRACE_SETOPTIONS`: replaces the options of a tracee this process already traces (for
/// a task seized by someone else's code, e.g. [`crate::Task::adopt`]).
pub fn set_options(tid: i32, opts: u64) -> Result<(), Errno> {
    req(libc::PTRACE_SETOPTIONS, tid, 0, opts as usize).map(drop)
}

/// A thread's restartable-sequences registration (`PTRACE_GET_RSEQ_CONFIGURATION`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RseqConfig {
    /// Address of the thread's `struct rseq`.
    pub abi_pointer: u64,
    /// Its registered size.
    pub abi_size: u32,
    /// The signature abort handlers are marked with.
    pub signature: u32,
    /// Registration flags.
    pub flags: u32,
}

/// `PTRACE_GET_RSEQ_CONFIGURATION`: the rseq area thread `tid` registered, or `None` if it has
/// none.
///
/// # Errors
/// The ptrace error (`EIO` on kernels before 5.13).
pub fn rseq_configuration(tid: i32) -> Result<Option<RseqConfig>, Errno> {
    const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;
    #[repr(C)]
    #[derive(Default)]
    struct Raw {
        rseq_abi_pointer: u64,
        rseq_abi_size: u32,
        signature: u32,
        flags: u32,
        pad: u32,
    }
    let mut raw = Raw::default();
    let n = req(
        PTRACE_GET_RSEQ_CONFIGURATION,
        tid,
        std::mem::size_of::<Raw>(),
        &mut raw as *mut Raw as usize,
    )?;
    Ok((n > 0 && raw.rseq_abi_pointer != 0).then_some(RseqConfig {
        abi_pointer: raw.rseq_abi_pointer,
        abi_size: raw.rseq_abi_size,
        signature: raw.signature,
        flags: raw.flags,
    }))
}

/// The size of a raw `siginfo_t`.
pub const SIGINFO_SIZE: usize = 128;

/// Which queue of pending signals [`peek_siginfo`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigQueue {
    /// The thread's own queue (signals sent to the thread).
    Thread,
    /// The process-wide queue (signals sent to the process), shared by its threads.
    Shared,
}

/// `PTRACE_PEEKSIGINFO`: the signals pending in `queue` of thread `tid`, oldest first, as raw
/// `siginfo_t`s, without dequeuing them.
///
/// # Errors
/// The ptrace error.
pub fn peek_siginfo(tid: i32, queue: SigQueue) -> Result<Vec<[u8; SIGINFO_SIZE]>, Errno> {
    const PTRACE_PEEKSIGINFO: libc::c_uint = 0x4209;
    const PTRACE_PEEKSIGINFO_SHARED: u32 = 1;
    const BATCH: usize = 32;
    #[repr(C)]
    struct PeekArgs {
        off: u64,
        flags: u32,
        nr: i32,
    }
    let mut out = Vec::new();
    let mut buf = [[0u8; SIGINFO_SIZE]; BATCH];
    loop {
        let args = PeekArgs {
            off: out.len() as u64,
            flags: match queue {
                SigQueue::Thread => 0,
                SigQueue::Shared => PTRACE_PEEKSIGINFO_SHARED,
            },
            nr: BATCH as i32,
        };
        // The kernel reads `args` and writes at most `nr` siginfos into `buf`, which holds
        // BATCH of them.
        let n = req(
            PTRACE_PEEKSIGINFO,
            tid,
            &args as *const PeekArgs as usize,
            buf.as_mut_ptr() as usize,
        )?;
        let n = (n as usize).min(BATCH);
        out.extend_from_slice(&buf[..n]);
        if n < BATCH {
            return Ok(out);
        }
    }
}

/// `PTRACE_SECCOMP_GET_FILTER`: the classic-BPF program (8-byte `struct sock_filter`s) of
/// seccomp filter `index` of thread `tid`, counted from the first one installed (0 is the
/// oldest). Needs `CAP_SYS_ADMIN`.
///
/// # Errors
/// `ENOENT` past the last filter, `EACCES` without the capability, `EINVAL` for a thread that
/// has no filter; [`Errno::EAGAIN`] if the filter changed size between the two reads.
pub fn seccomp_filter(tid: i32, index: u64) -> Result<Vec<u8>, Errno> {
    const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;
    // With no buffer the kernel only says how many instructions the program has.
    let n = req(PTRACE_SECCOMP_GET_FILTER, tid, index as usize, 0)? as usize;
    let mut prog = vec![0u8; n * 8];
    let m = req(
        PTRACE_SECCOMP_GET_FILTER,
        tid,
        index as usize,
        prog.as_mut_ptr() as usize,
    )? as usize;
    if m != n {
        return Err(Errno::EAGAIN);
    }
    Ok(prog)
}

/// `PTRACE_SECCOMP_GET_METADATA`: the flags (`SECCOMP_FILTER_FLAG_*`) seccomp filter `index`
/// of thread `tid` was installed with.
///
/// # Errors
/// As [`seccomp_filter`].
pub fn seccomp_filter_flags(tid: i32, index: u64) -> Result<u64, Errno> {
    const PTRACE_SECCOMP_GET_METADATA: libc::c_uint = 0x420d;
    // struct seccomp_metadata { u64 filter_off; u64 flags; }
    let mut md = [index, 0u64];
    req(
        PTRACE_SECCOMP_GET_METADATA,
        tid,
        16,
        md.as_mut_ptr() as usize,
    )?;
    Ok(md[1])
}

/// One seccomp filter of a thread: its program and the flags it was installed with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeccompFilter {
    /// Classic-BPF instructions, 8 bytes each.
    pub prog: Vec<u8>,
    /// `SECCOMP_FILTER_FLAG_*`.
    pub flags: u64,
}

/// Every seccomp filter of thread `tid`, oldest first ([`seccomp_filter`] and
/// [`seccomp_filter_flags`] for each index until `ENOENT`).
///
/// # Errors
/// As [`seccomp_filter`], except `ENOENT` after the first filter, which ends the list.
pub fn seccomp_filters(tid: i32) -> Result<Vec<SeccompFilter>, Errno> {
    let mut out = Vec::new();
    for i in 0u64.. {
        let prog = match seccomp_filter(tid, i) {
            Ok(p) => p,
            Err(Errno::ENOENT) if i > 0 => break,
            Err(e) => return Err(e),
        };
        out.push(SeccompFilter {
            prog,
            flags: seccomp_filter_flags(tid, i)?,
        });
    }
    Ok(out)
}

/// Where a thread stopped for a syscall stands (`PTRACE_GET_SYSCALL_INFO`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyscallInfo {
    /// Not a syscall stop.
    None,
    /// Syscall-entry stop: the call about to run.
    Entry {
        /// The syscall number.
        nr: u64,
        /// Its arguments.
        args: [u64; 6],
    },
    /// Syscall-exit stop: the value it returns.
    Exit {
        /// The return value (`-errno` when `is_error`).
        rval: i64,
        /// Whether it failed.
        is_error: bool,
    },
    /// `PTRACE_EVENT_SECCOMP` stop: a filter returned `SECCOMP_RET_TRACE` for this call.
    Seccomp {
        /// The syscall number.
        nr: u64,
        /// Its arguments.
        args: [u64; 6],
        /// The filter's `SECCOMP_RET_DATA`.
        ret_data: u32,
    },
}

/// `PTRACE_GET_SYSCALL_INFO` for thread `tid`.
///
/// # Errors
/// The ptrace error (`EIO` on kernels before 5.3).
pub fn syscall_info(tid: i32) -> Result<SyscallInfo, Errno> {
    const PTRACE_GET_SYSCALL_INFO: libc::c_uint = 0x420e;
    // struct ptrace_syscall_info: u8 op, 3 pad, u32 arch, u64 ip, u64 sp, then the union
    // (entry: nr, args[6]; exit: s64 rval, u8 is_error; seccomp: nr, args[6], u32 ret_data).
    let mut raw = [0u64; 11];
    req(
        PTRACE_GET_SYSCALL_INFO,
        tid,
        std::mem::size_of_val(&raw),
        raw.as_mut_ptr() as usize,
    )?;
    let op = raw[0] as u8;
    let u = &raw[3..];
    let args = [u[1], u[2], u[3], u[4], u[5], u[6]];
    Ok(match op {
        1 => SyscallInfo::Entry { nr: u[0], args },
        2 => SyscallInfo::Exit {
            rval: u[0] as i64,
            is_error: u[1] as u8 != 0,
        },
        3 => SyscallInfo::Seccomp {
            nr: u[0],
            args,
            ret_data: u[7] as u32,
        },
        _ => SyscallInfo::None,
    })
}

/// How a traced task reported itself to `waitpid`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// It exited with this status (it is gone; a zombie if it was our child).
    Exited(i32),
    /// A signal killed it.
    Killed(i32),
    /// Signal-delivery-stop: signal `sig` is about to be delivered; resuming with `sig` delivers
    /// it, with 0 suppresses it.
    Signal(i32),
    /// Group-stop under `PTRACE_SEIZE` (`PTRACE_EVENT_STOP` with a stop signal): the task's
    /// thread group is job-control stopped by `sig`.
    Group(i32),
    /// `PTRACE_INTERRUPT` (or re-trap) stop: `PTRACE_EVENT_STOP` with `SIGTRAP`.
    Interrupt,
    /// Syscall-entry or -exit stop (`PTRACE_SYSCALL` with `TRACESYSGOOD`).
    Syscall,
    /// Another `PTRACE_EVENT_*` stop.
    Event(i32),
}

/// Decodes a `waitpid` status.
pub fn decode(status: i32) -> Stop {
    if libc::WIFEXITED(status) {
        return Stop::Exited(libc::WEXITSTATUS(status));
    }
    if libc::WIFSIGNALED(status) {
        return Stop::Killed(libc::WTERMSIG(status));
    }
    let sig = libc::WSTOPSIG(status);
    let event = status >> 16;
    match event {
        0 if sig == libc::SIGTRAP | 0x80 => Stop::Syscall,
        0 => Stop::Signal(sig),
        PTRACE_EVENT_STOP => match sig {
            libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU => Stop::Group(sig),
            _ => Stop::Interrupt,
        },
        e => Stop::Event(e),
    }
}

/// Waits for task `tid` only (`waitpid(tid, __WALL)`), retrying on `EINTR`.
pub fn wait(tid: i32) -> Result<Stop, Errno> {
    // A stop usually comes within microseconds: look without blocking first (see `spin`).
    let early = crate::spin::spin(|| {
        let mut status = 0;
        // SAFETY: status is a live local int; WNOHANG returns at once.
        let rc = unsafe { libc::waitpid(tid, &mut status, libc::__WALL | libc::WNOHANG) };
        match rc {
            0 => None,
            rc if rc == tid => Some(Ok(decode(status))),
            // EINTR and errors: the blocking wait below sees and reports them.
            _ => Some(Err(())),
        }
    });
    if let Some(Ok(stop)) = early {
        return Ok(stop);
    }
    loop {
        let mut status = 0;
        // SAFETY: status is a live local int.
        let rc = unsafe { libc::waitpid(tid, &mut status, libc::__WALL) };
        if rc == tid {
            return Ok(decode(status));
        }
        let e = Errno::last();
        if rc < 0 && e == Errno::EINTR {
            continue;
        }
        return Err(if rc < 0 { e } else { Errno::ECHILD });
    }
}

/// The tgkill syscall: sends `sig` to thread `tid` of process `pid`.
pub fn tgkill(pid: i32, tid: i32, sig: i32) -> Result<(), Errno> {
    // SAFETY: tgkill takes three integers.
    check(unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, sig) }).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_statuses() {
        assert_eq!(decode(0x0a00), Stop::Exited(10));
        assert_eq!(decode(9), Stop::Killed(9));
        assert_eq!(decode(0x057f), Stop::Signal(libc::SIGTRAP));
        assert_eq!(decode(0x857f), Stop::Syscall);
        assert_eq!(
            decode((PTRACE_EVENT_STOP << 16) | 0x137f),
            Stop::Group(libc::SIGSTOP)
        );
        assert_eq!(decode((PTRACE_EVENT_STOP << 16) | 0x057f), Stop::Interrupt);
        assert_eq!(decode((3 << 16) | 0x057f), Stop::Event(3));
    }
}
