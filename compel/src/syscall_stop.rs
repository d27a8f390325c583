//! A system call run in a stopped thread from syscall stop to syscall stop (`PTRACE_SYSCALL`),
//! through a `syscall` instruction the caller knows, in steps, so that one caller can run a
//! call in many threads at once and overlap their round trips.
//!
//! Unlike [`crate::Task::remote_syscall_in`] (which single-steps and keeps a whole task
//! consistent), this works on threads held by any code of this process, e.g. threads a restore
//! engine seized from their first instruction. The threads must be traced with
//! [`crate::ptrace::options::TRACESYSGOOD`] (without it a syscall stop cannot be told from a
//! `SIGTRAP`); no signal is forced on them.
//!
//! ```no_run
//! # use compel::syscall_stop::SyscallRun;
//! # use compel::RemoteAddr;
//! # fn f(tids: &[i32], insn: RemoteAddr) -> Result<(), compel::TaskError> {
//! let mut runs = tids
//!     .iter()
//!     .map(|&t| SyscallRun::start(t, insn, compel_arch::nr::GETPID, [0; 6]))
//!     .collect::<Result<Vec<_>, _>>()?;
//! for r in &mut runs {
//!     r.enter()?;
//! }
//! for r in runs {
//!     let _pid = r.finish()?;
//! }
//! # Ok(()) }
//! ```

use compel_arch::UserRegs;

use crate::ptrace::{self, Stop};
use crate::{RemoteAddr, TaskError};

/// One system call in flight in one thread; see the module docs.
#[derive(Debug)]
pub struct SyscallRun {
    tid: i32,
    regs: UserRegs,
    sigmask: u64,
    entered: bool,
}

impl SyscallRun {
    /// Saves thread `tid`'s registers and signal mask, blocks every signal, loads system call
    /// `nr` with `args` and the instruction pointer `insn` (a `syscall` instruction in the
    /// thread's memory), and lets it run to the syscall-entry stop. The thread must be in a
    /// ptrace-stop of this process.
    ///
    /// # Errors
    /// [`TaskError::Ptrace`]; the thread's state is put back when a step after saving fails.
    pub fn start(
        tid: i32,
        insn: RemoteAddr,
        nr: usize,
        args: [u64; 6],
    ) -> Result<SyscallRun, TaskError> {
        let regs = ptrace::get_regs(tid).map_err(TaskError::ptrace("GETREGS", tid))?;
        let sigmask = ptrace::get_sigmask(tid).map_err(TaskError::ptrace("GETSIGMASK", tid))?;
        let run = SyscallRun {
            tid,
            regs,
            sigmask,
            entered: false,
        };
        let mut r = regs;
        r.set_syscall(nr as u64, args);
        r.set_ip(insn.0);
        // No single step and no breakpoint here, so no SIGTRAP is forced on the thread: every
        // signal can stay blocked.
        let go = ptrace::set_sigmask(tid, u64::MAX)
            .map_err(TaskError::ptrace("SETSIGMASK", tid))
            .and_then(|()| ptrace::set_regs(tid, &r).map_err(TaskError::ptrace("SETREGS", tid)))
            .and_then(|()| resume(tid, 0));
        if let Err(e) = go {
            let _ = run.put_back();
            return Err(e);
        }
        Ok(run)
    }

    /// The thread.
    pub fn tid(&self) -> i32 {
        self.tid
    }

    /// Waits for the syscall-entry stop and lets the call run to its exit stop. Signal stops on
    /// the way are passed on to the thread.
    ///
    /// # Errors
    /// [`TaskError::Died`], [`TaskError::Wait`], [`TaskError::Ptrace`].
    pub fn enter(&mut self) -> Result<(), TaskError> {
        if !self.entered {
            await_syscall_stop(self.tid)?;
            resume(self.tid, 0)?;
            self.entered = true;
        }
        Ok(())
    }

    /// Waits for the syscall-exit stop (entering first if [`SyscallRun::enter`] was not
    /// called), puts the saved registers and signal mask back, and returns the call's raw
    /// result (`-errno` on failure). The thread stays stopped.
    ///
    /// # Errors
    /// As [`SyscallRun::enter`].
    pub fn finish(mut self) -> Result<i64, TaskError> {
        self.enter()?;
        await_syscall_stop(self.tid)?;
        let ret = ptrace::get_regs(self.tid)
            .map_err(TaskError::ptrace("GETREGS", self.tid))?
            .syscall_ret();
        self.put_back()?;
        Ok(ret)
    }

    fn put_back(&self) -> Result<(), TaskError> {
        let tid = self.tid;
        ptrace::set_regs(tid, &self.regs).map_err(TaskError::ptrace("SETREGS", tid))?;
        ptrace::set_sigmask(tid, self.sigmask).map_err(TaskError::ptrace("SETSIGMASK", tid))
    }
}

fn resume(tid: i32, sig: i32) -> Result<(), TaskError> {
    ptrace::syscall(tid, sig).map_err(TaskError::ptrace("SYSCALL", tid))
}

/// Waits for the next syscall stop of `tid` (let run with `PTRACE_SYSCALL`, traced with
/// `TRACESYSGOOD`); a signal stop on the way passes the signal on, other stops are resumed.
///
/// # Errors
/// [`TaskError::Died`], [`TaskError::Wait`], [`TaskError::Ptrace`].
pub fn await_syscall_stop(tid: i32) -> Result<(), TaskError> {
    loop {
        match ptrace::wait(tid).map_err(|source| TaskError::Wait { tid, source })? {
            Stop::Syscall => return Ok(()),
            Stop::Signal(sig) => resume(tid, sig)?,
            Stop::Exited(c) => {
                return Err(TaskError::Died {
                    tid,
                    how: format!("exited with status {c}"),
                });
            }
            Stop::Killed(s) => {
                return Err(TaskError::Died {
                    tid,
                    how: format!("killed by signal {s}"),
                });
            }
            Stop::Group(_) | Stop::Interrupt | Stop::Event(_) => resume(tid, 0)?,
        }
    }
}
