//! Running commands in a started parasite: over the control socket in the daemon thread, as
//! a syscall from the daemon thread, or once in another thread (trap mode).

use std::borrow::BorrowMut;
use std::os::fd::{BorrowedFd, OwnedFd};

use compel_arch::{UserRegs, nr};
use compel_proto::rpc::{CtlMsg, MODE_DAEMON, MODE_TRAP};
use compel_proto::{Plain, read_plain, write_plain};
use nix::errno::Errno;

use super::{EFLAGS_TF_DF, InfectError, Parasite, RpcError, Stage, daemon_quiet, rsys, tk};
use crate::ptrace::Stop;
use crate::{Resume, Task, TaskError};

impl<T: BorrowMut<Task>> Parasite<T> {
    /// Runs command `cmd` in the daemon with the arguments already in the payload area; the
    /// results are in the payload area afterwards.
    ///
    /// # Errors
    /// [`RpcError::Failed`] with the parasite's errno, or a transport error. After a transport
    /// error (not after `Failed`) the parasite is cured at once.
    pub fn call(&mut self, cmd: u32) -> Result<(), RpcError> {
        self.call_fds(cmd, &[]).map(drop)
    }

    /// Writes `args` at the start of the payload, runs `cmd`, and reads an `R` from the start
    /// of the payload.
    ///
    /// # Errors
    /// As for [`Parasite::call`], and [`RpcError::PayloadTooSmall`].
    pub fn call_with<A: Plain, R: Plain>(&mut self, cmd: u32, args: &A) -> Result<R, RpcError> {
        let have = self.layout.payload_size;
        let need = std::mem::size_of::<A>().max(std::mem::size_of::<R>());
        if need > have {
            return Err(RpcError::PayloadTooSmall {
                pid: self.pid,
                need,
                have,
            });
        }
        write_plain(self.payload_mut(), args);
        self.call(cmd)?;
        read_plain(self.payload()).ok_or(RpcError::PayloadTooSmall {
            pid: self.pid,
            need,
            have,
        })
    }

    /// Runs `cmd`, sending `send` to the parasite right after the command (it receives them
    /// with the fds plugin), and returns the fds the parasite sent before answering.
    ///
    /// # Errors
    /// As for [`Parasite::call`].
    pub fn call_fds(
        &mut self,
        cmd: u32,
        send: &[BorrowedFd<'_>],
    ) -> Result<Vec<OwnedFd>, RpcError> {
        let res = self.call_fds_inner(cmd, send);
        if let Err(e) = &res
            && e.errno().is_none()
        {
            tracing::warn!(pid = self.pid, cmd, error = %e, "parasite failed; curing");
            if let Err(c) = self.cure_inner() {
                tracing::error!(pid = self.pid, error = %c, "cure after a failed call");
            }
        }
        res
    }

    fn call_fds_inner(
        &mut self,
        cmd: u32,
        send: &[BorrowedFd<'_>],
    ) -> Result<Vec<OwnedFd>, RpcError> {
        self.send_command(cmd)?;
        if !send.is_empty() {
            self.ctl()?.send_fds(send)?;
        }
        self.wait_answer(cmd)
    }

    /// Sends command `cmd` without waiting for its answer (then exchange fds with
    /// [`Parasite::send_fds`]/[`Parasite::recv_fds`] as the command expects, and finish with
    /// [`Parasite::wait_answer`]). [`Parasite::call`] does all of that in one go.
    ///
    /// # Errors
    /// A transport error.
    pub fn send_command(&mut self, cmd: u32) -> Result<(), RpcError> {
        self.in_flight = true;
        self.ctl()?.send(&CtlMsg::cmd(cmd), &[])?;
        self.stage(Stage::CommandSent(cmd));
        Ok(())
    }

    /// Waits for the answer to `cmd` (sent with [`Parasite::send_command`]) and returns the fds
    /// the parasite sent before answering.
    ///
    /// # Errors
    /// [`RpcError::Failed`] with the parasite's errno, or a transport error.
    pub fn wait_answer(&mut self, cmd: u32) -> Result<Vec<OwnedFd>, RpcError> {
        let res = self.collect_answer(cmd);
        if matches!(res, Ok(_) | Err(RpcError::Failed { .. })) {
            self.in_flight = false;
        }
        res
    }

    fn collect_answer(&mut self, cmd: u32) -> Result<Vec<OwnedFd>, RpcError> {
        // The checks on what the parasite sends back live in `answer`.
        self.ctl()?.collect_answer(cmd)
    }

    /// Sends fds to the parasite outside a command (for a handler that is already waiting for
    /// them).
    ///
    /// # Errors
    /// A transport error.
    pub fn send_fds(&mut self, fds: &[BorrowedFd<'_>]) -> Result<(), RpcError> {
        self.ctl()?.send_fds(fds)
    }

    /// Receives one batch of fds the parasite sends outside a command's answer.
    ///
    /// # Errors
    /// A transport error.
    pub fn recv_fds(&mut self) -> Result<Vec<OwnedFd>, RpcError> {
        self.ctl()?.recv_fds()
    }

    /// Runs syscall `nr` in the daemon thread while the parasite is idle (the thread is
    /// interrupted, runs the call, and goes back to waiting for commands).
    ///
    /// # Errors
    /// A task-control error; if the daemon was not idle, the parasite is cured.
    pub fn syscall(&mut self, nr: usize, args: [u64; 6]) -> Result<i64, RpcError> {
        if !self.running {
            return Err(RpcError::NotRunning { pid: self.pid });
        }
        let tid = self.tid;
        let pid = self.pid;
        let trap = |source| RpcError::Trap { pid, tid, source };
        let (stop, now) = self.stop_daemon().map_err(trap)?;
        if !daemon_quiet(stop, now.ip(), self.region(), self.in_flight) {
            let e = RpcError::ThreadStopped {
                pid,
                tid,
                stop: format!("{stop:?} at {:#x}", now.ip()),
            };
            if let Err(c) = self.cure_stopped(stop) {
                tracing::error!(pid, error = %c, "cure after finding the daemon busy");
            }
            return Err(e);
        }
        let task = tk(&mut self.task);
        // Tell the task layer what the registers really are now (parasite code).
        task.set_regs(tid, &now).map_err(trap)?;
        let ret = task.remote_syscall_in(tid, nr, args).map_err(trap);
        task.resume(tid, Resume::Continue).map_err(trap)?;
        ret
    }

    /// Interrupts the daemon thread and returns its stop and registers.
    pub(super) fn stop_daemon(&mut self) -> Result<(Stop, UserRegs), TaskError> {
        let tid = self.tid;
        crate::ptrace::interrupt(tid).map_err(TaskError::ptrace("INTERRUPT", tid))?;
        let task = tk(&mut self.task);
        let stop = task.wait_stop(tid)?;
        let regs = crate::ptrace::get_regs(tid).map_err(TaskError::ptrace("GETREGS", tid))?;
        Ok((stop, regs))
    }

    /// Runs command `cmd` once in thread `tid` (any seized thread but the daemon's), with the
    /// payload area as for [`Parasite::call`] and on a stack of its own; the thread's registers,
    /// xsave state and signal mask are put back afterwards.
    ///
    /// # Errors
    /// [`RpcError::Failed`] with the command's errno, or [`RpcError::Trap`].
    pub fn run_in_thread(&mut self, tid: i32, cmd: u32) -> Result<(), RpcError> {
        if !self.running {
            return Err(RpcError::NotRunning { pid: self.pid });
        }
        let pid = self.pid;
        let trap = |source| RpcError::Trap { pid, tid, source };
        if tid == self.tid {
            return Err(trap(TaskError::NotOurThread { pid, tid }));
        }
        if !self.trap_guarded {
            let (off, len, prot) = self.layout.trap_guard();
            let addr = self.base.offset(off as u64).0;
            let task = tk(&mut self.task);
            match rsys(
                task,
                tid,
                "mprotect",
                nr::MPROTECT,
                [addr, len as u64, prot as u64, 0, 0, 0],
            ) {
                Ok(_) => self.trap_guarded = true,
                Err(InfectError::Task(e)) => return Err(trap(e)),
                Err(e) => {
                    tracing::warn!(pid, tid, error = %e, "no guard page below the trap stack")
                }
            }
        }
        let mut init = self.init_mut();
        init.mode = MODE_TRAP;
        init.trap_cmd = cmd;
        init.trap_ret = 0;
        self.write_init(&init);
        let entry = self.base.offset(self.entry as u64).0;
        let args = self.base.offset(self.layout.args_off as u64).0;
        let stack = self.base.offset(self.layout.tstack_top() as u64).0;
        let (lo, hi) = (self.base.0, self.base.0 + self.layout.len as u64);
        let task = tk(&mut self.task);
        let result = run_trap(task, tid, entry, args, stack, (lo, hi));
        let mut init = self.init_mut();
        let ret = init.trap_ret;
        init.mode = MODE_DAEMON;
        init.trap_cmd = 0;
        self.write_init(&init);
        result.map_err(trap)?;
        if ret < 0 {
            return Err(RpcError::Failed {
                pid,
                cmd,
                errno: Errno::from_raw(-ret),
            });
        }
        Ok(())
    }
}

/// Runs the blob's entry in trap mode in thread `tid` and puts its state back.
fn run_trap(
    task: &mut Task,
    tid: i32,
    entry: u64,
    args: u64,
    stack: u64,
    blob: (u64, u64),
) -> Result<(), TaskError> {
    let regs = task.regs(tid)?;
    let xsave = task.xsave(tid)?;
    let mask = task.sigmask(tid)?;
    let mut r = regs;
    r.clear_syscall_nr();
    r.set_ip(entry);
    r.set_sp(stack);
    r.rdi = args;
    r.rax = 0;
    r.eflags &= !(EFLAGS_TF_DF);
    task.set_sigmask(tid, crate::ptrace::REMOTE_CODE_SIGMASK)?;
    task.set_regs(tid, &r)?;
    let mut result = Ok(());
    loop {
        if let Err(e) = task.resume(tid, Resume::Continue) {
            result = Err(e);
            break;
        }
        match task.wait_stop(tid) {
            Ok(Stop::Signal(libc::SIGTRAP)) => {
                let ip = crate::ptrace::get_regs(tid)
                    .map_err(TaskError::ptrace("GETREGS", tid))?
                    .ip();
                if (blob.0..blob.1).contains(&ip) {
                    break; // the entry's int3
                }
                result = Err(TaskError::UnexpectedStop {
                    tid,
                    stop: format!("SIGTRAP at {ip:#x}"),
                    during: "trap-mode command",
                });
                break;
            }
            Ok(Stop::Interrupt) => continue,
            Ok(stop) => {
                if let Stop::Signal(_) = stop {
                    task.discard_last_kept_signal(tid);
                }
                result = Err(TaskError::UnexpectedStop {
                    tid,
                    stop: format!("{stop:?}"),
                    during: "trap-mode command",
                });
                break;
            }
            Err(e) => return Err(e),
        }
    }
    task.set_regs(tid, &regs)?;
    task.set_xsave(tid, &xsave)?;
    task.set_sigmask(tid, mask)?;
    result
}
