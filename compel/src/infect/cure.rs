//! Curing: ending the parasite and returning the task to its own code and state, through the
//! parasite's signal frame or, when it cannot get there, by ptrace.

use std::borrow::BorrowMut;

use compel_arch::{UserRegs, nr, restart};
use compel_proto::rpc::{CMD_FINI, CtlMsg, STOP_SIGNAL};

use super::{InfectError, Parasite, Stage, daemon_quiet, park, rsys, tk};
use crate::ptrace::{Stop, SyscallInfo};
use crate::{Resume, Task, TaskError};

/// The frame's registers: the saved ones, with an interrupted syscall set up to run again
/// (`rt_sigreturn` disables the kernel's own restart logic). A syscall interrupted with
/// `-ERESTART_RESTARTBLOCK` cannot be restarted through a frame (its restart state is
/// cleared by `rt_sigreturn`): it returns `EINTR`, as after a signal handler.
pub fn frame_regs(saved: &UserRegs) -> UserRegs {
    let mut r = *saved;
    r.rewind_restart_for_sigreturn();
    r
}

fn needs_restart_block(regs: &UserRegs) -> bool {
    regs.pending_restart() == Some(restart::ERESTART_RESTARTBLOCK)
}

impl<T: BorrowMut<Task>> Parasite<T> {
    /// Ends the parasite and returns the task to its own code and state: see the module
    /// documentation. The task stays seized.
    ///
    /// # Errors
    /// An [`InfectError`] if something could not be undone; the parts that could are undone.
    pub fn cure(mut self) -> Result<(), InfectError> {
        self.cure_inner()
    }

    /// Cures and gives the task back (still seized), e.g. an owned [`Task`] to detach.
    ///
    /// # Errors
    /// As for [`Parasite::cure`]; the task is dropped (detached) then.
    pub fn cure_into_task(mut self) -> Result<T, InfectError> {
        self.cure_inner()?;
        Ok(self
            .task
            .take()
            .expect("the task is taken only when the parasite is consumed"))
    }

    pub(super) fn cure_inner(&mut self) -> Result<(), InfectError> {
        if self.cured {
            return Ok(());
        }
        if self.running && !self.in_flight && self.ctl.is_some() {
            // The usual way: FINI, the parasite closes its sockets and stops, and the task's
            // state is put back here (no syscall-by-syscall following of the parasite).
            match self.fini_trap() {
                Ok(()) => return self.finish_cure(None),
                Err(e) => {
                    tracing::debug!(pid = self.pid, error = %e, "FINI did not end in the stop");
                    // Whatever the parasite is doing now, do not wait for it.
                    self.in_flight = true;
                }
            }
        }
        let known = if self.running {
            match self.stop_daemon() {
                Ok((stop, _)) => Some(stop),
                Err(e) => {
                    self.cured = true;
                    self.running = false;
                    return Err(e.into());
                }
            }
        } else {
            None
        };
        self.finish_cure(known)
    }

    /// Sends FINI and waits for the parasite's final stop (`INIT_FINI_TRAP`: it answered,
    /// closed its control socket and log fd, and raised `STOP_SIGNAL`), then restores the
    /// saved state with ptrace.
    /// On error the daemon thread is running or stopped in a stop not yet collected.
    fn fini_trap(&mut self) -> Result<(), InfectError> {
        let tid = self.tid;
        let ctl = self.ctl()?;
        ctl.send(&CtlMsg::cmd(CMD_FINI), &[])?;
        self.stage(Stage::FiniSent);
        self.in_flight = true;
        self.ctl()?.recv_ack(CMD_FINI)?;
        let stop = tk(&mut self.task).wait_stop(tid)?;
        let ip = crate::ptrace::get_regs(tid)
            .map_err(TaskError::ptrace("GETREGS", tid))?
            .ip();
        let text = (self.base.0, self.base.0 + self.layout.text_size as u64);
        self.in_flight = false;
        self.running = false;
        self.ctl_closed = true;
        if stop != Stop::Signal(STOP_SIGNAL) || !(text.0..text.1).contains(&ip) {
            return self.force_restore(stop);
        }
        // The parasite's own stop signal: never the task's to see.
        tk(&mut self.task).discard_last_kept_signal(tid);
        self.remote_log = -1; // closed by the parasite
        self.restore_by_ptrace()?;
        self.stage(Stage::Returned);
        Ok(())
    }

    /// Cures when the daemon thread is known to be stopped in `stop`.
    pub(super) fn cure_stopped(&mut self, stop: Stop) -> Result<(), InfectError> {
        self.finish_cure(Some(stop))
    }

    fn finish_cure(&mut self, stopped: Option<Stop>) -> Result<(), InfectError> {
        self.cured = true;
        let mut first: Option<InfectError> = None;
        if let Some(stop) = stopped {
            self.running = false;
            if let Err(e) = self.return_to_task(stop) {
                tracing::warn!(pid = self.pid, error = %e, "parasite did not end cleanly");
                first = Some(e);
            }
            self.stage(Stage::Returned);
        }
        if let Some(ctl) = self.ctl.as_mut() {
            ctl.drain_log();
        }
        self.ctl = None;
        let tid = self.tid;
        let (base, len) = (self.base, self.layout.len);
        let rctl = if self.ctl_closed { -1 } else { self.remote_ctl };
        let rlog = self.remote_log;
        let task = tk(&mut self.task);
        for fd in [rctl, rlog] {
            if fd >= 0
                && let Err(e) = rsys(task, tid, "close", nr::CLOSE, [fd as u64, 0, 0, 0, 0, 0])
            {
                first.get_or_insert(e);
            }
        }
        if let Err(e) = rsys(
            task,
            tid,
            "munmap",
            nr::MUNMAP,
            [base.0, len as u64, 0, 0, 0, 0],
        ) {
            first.get_or_insert(e);
        }
        if let Err(e) = park(task, tid) {
            first.get_or_insert(e);
        }
        self.stage(Stage::Cured);
        tracing::debug!(pid = self.pid, ok = first.is_none(), "cured");
        first.map_or(Ok(()), Err)
    }

    /// Ends the daemon, which is stopped in `stop`: through its frame if it is idle in its
    /// service loop, else by restoring the saved state with ptrace.
    fn return_to_task(&mut self, stop: Stop) -> Result<(), InfectError> {
        let tid = self.tid;
        let pid = self.pid;
        let now = crate::ptrace::get_regs(tid).map_err(TaskError::ptrace("GETREGS", tid))?;
        let (lo, hi) = (self.base.0, self.base.0 + self.layout.len as u64);
        if !(lo..hi).contains(&now.ip()) && !(lo..hi).contains(&now.sp()) {
            // The parasite already returned through its frame by itself (it panicked or lost
            // its socket) and the task runs its own code: keep that state, only tell the task
            // layer what it is.
            tracing::warn!(
                pid,
                ip = now.ip(),
                "parasite had already returned into the task"
            );
            self.ctl_closed = true;
            let mask =
                crate::ptrace::get_sigmask(tid).map_err(TaskError::ptrace("GETSIGMASK", tid))?;
            let task = tk(&mut self.task);
            task.set_regs(tid, &now)?;
            task.set_sigmask(tid, mask)?;
            return Ok(());
        }
        if !daemon_quiet(stop, now.ip(), self.region(), self.in_flight) {
            // Crashed, stuck, or busy in a command: do not wait for it.
            return self.force_restore(stop);
        }
        let keep_restart_block = needs_restart_block(&self.saved.regs);
        tk(&mut self.task).resume(tid, Resume::Syscall)?;
        if let Some(ctl) = self.ctl.as_mut()
            && let Err(e) = ctl.send(&CtlMsg::cmd(CMD_FINI), &[])
        {
            tracing::warn!(pid, error = %e, "cannot send FINI");
        }
        self.stage(Stage::FiniSent);
        // Follow the parasite's few remaining syscalls (recvmsg, sendmsg, close, maybe a log
        // write) to the entry of rt_sigreturn.
        let mut stops = 0;
        loop {
            let stop = tk(&mut self.task).wait_stop(tid)?;
            match stop {
                Stop::Syscall => {
                    let info = crate::ptrace::syscall_info(tid)
                        .map_err(TaskError::ptrace("GET_SYSCALL_INFO", tid))?;
                    if let SyscallInfo::Entry { nr: n, .. } = info
                        && n == nr::RT_SIGRETURN as u64
                    {
                        break;
                    }
                }
                Stop::Interrupt | Stop::Signal(libc::SIGTRAP) => {}
                other => return self.force_restore(other),
            }
            stops += 1;
            if stops > 64 {
                return self.force_restore(stop);
            }
            tk(&mut self.task).resume(tid, Resume::Syscall)?;
        }
        self.ctl_closed = true;
        let task = tk(&mut self.task);
        if keep_restart_block {
            // rt_sigreturn would cancel the pending restart of the interrupted call: skip it
            // and restore the same state through ptrace instead.
            let mut r = crate::ptrace::get_regs(tid).map_err(TaskError::ptrace("GETREGS", tid))?;
            r.clear_syscall_nr();
            task.set_regs(tid, &r)?;
        }
        task.resume(tid, Resume::Syscall)?;
        let stop = task.wait_stop(tid)?;
        if stop != Stop::Syscall {
            return self.force_restore(stop);
        }
        if keep_restart_block {
            self.restore_by_ptrace()?;
        } else {
            let got = crate::ptrace::get_regs(tid).map_err(TaskError::ptrace("GETREGS", tid))?;
            let want = frame_regs(&self.saved.regs);
            if got.rip != want.rip || got.rsp != want.rsp {
                tracing::warn!(pid, ?got, ?want, "frame returned elsewhere");
                return self.force_restore(stop);
            }
            // The exact registers as found (the kernel redoes the restart fix-up when the
            // thread leaves its last stop), and the task layer told about the restored mask.
            let task = tk(&mut self.task);
            task.set_regs(tid, &self.saved.regs)?;
            task.set_sigmask(tid, self.saved.sigmask)?;
        }
        if let Some(ctl) = self.ctl.as_mut()
            && let Err(e) = ctl.recv_ack(CMD_FINI)
        {
            tracing::debug!(pid, error = %e, "no FINI answer");
        }
        Ok(())
    }

    pub(super) fn force_restore(&mut self, stop: Stop) -> Result<(), InfectError> {
        let tid = self.tid;
        if let Stop::Signal(sig) = stop
            && sig != libc::SIGTRAP
        {
            // A fault of the parasite's own: it must not reach the task.
            tk(&mut self.task).discard_last_kept_signal(tid);
        }
        let at = crate::ptrace::get_regs(tid)
            .map(|r| {
                format!(
                    " at ip {:#x}, syscall {:?} returning {}",
                    r.ip(),
                    r.syscall_nr(),
                    r.syscall_ret()
                )
            })
            .unwrap_or_default();
        self.restore_by_ptrace()?;
        Err(InfectError::Cure {
            pid: self.pid,
            what: format!("{stop:?}{at}"),
        })
    }

    pub(super) fn restore_by_ptrace(&mut self) -> Result<(), InfectError> {
        let tid = self.tid;
        let task = tk(&mut self.task);
        task.set_regs(tid, &self.saved.regs)?;
        task.set_xsave(tid, &self.saved.xsave)?;
        task.set_sigmask(tid, self.saved.sigmask)?;
        Ok(())
    }
}

impl<T: BorrowMut<Task>> Drop for Parasite<T> {
    fn drop(&mut self) {
        if !self.cured
            && let Err(e) = self.cure_inner()
        {
            tracing::error!(pid = self.pid, error = %e, "cure on drop failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_regs_rewind_restartable_syscalls() {
        let mut r = UserRegs {
            rip: 0x1002,
            orig_rax: 0,
            rax: (-restart::ERESTARTSYS) as u64,
            ..UserRegs::default()
        };
        let f = frame_regs(&r);
        assert_eq!((f.rip, f.rax, f.orig_rax), (0x1000, 0, u64::MAX));
        r.rax = (-restart::ERESTART_RESTARTBLOCK) as u64;
        r.orig_rax = 35;
        let f = frame_regs(&r);
        assert_eq!(f.rip, 0x1002);
        assert_eq!(f.rax as i64, -(libc::EINTR as i64));
        assert!(needs_restart_block(&r));
        // Not in a syscall: untouched.
        r.orig_rax = u64::MAX;
        r.rax = 5;
        assert_eq!(frame_regs(&r).rax, 5);
        assert_eq!(frame_regs(&r).rip, 0x1002);
    }
}
