//! Thin, safe wrappers over the raw ptrace requests and the per-pid wait that the task layer
//! uses. All the `unsafe` of the task-control runtime lives here: each call passes the kernel a
//! pointer to a local, correctly sized value.
//!
//! These are building blocks; most users want [`crate::Task`], which keeps the task consistent
//! (registers and signal mask restored, signals re-delivered) around them.

use compel_arch::UserRegs;
use nix::errno::Errno;

/// `PTRACE_SEIZE` options compel uses.
pub mod options {
    /// Suspend the tracee's seccomp filters while it is traced (needs `CAP_SYS_ADMIN`).
    pub const SUSPEND_SECCOMP: u64 = 1 << 21;
    /// Report syscall stops with `SIGTRAP | 0x80`.
    pub const TRACESYSGOOD: u64 = 1;
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
