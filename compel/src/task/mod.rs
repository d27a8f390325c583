//! Seizing a task and keeping it consistent while we work on it: [`Task`].

mod state;
mod syscall;
mod xsave;

use std::marker::PhantomData;
use std::sync::OnceLock;

use compel_arch::{SYSCALL_INSN, UserRegs};
use nix::errno::Errno;

use crate::mem::RemoteMem;
use crate::ptrace::{self, Stop};
use crate::{RemoteAddr, TaskError, proc};
pub use state::{TaskState, classify};
use syscall::{SiteKind, SyscallSite};

pub use xsave::Xsave;

/// How a thread was stopped when it was seized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitialStop {
    /// Stopped by our `PTRACE_INTERRUPT` (it was running or sleeping).
    Interrupted,
    /// It was (or just became) job-control stopped by this signal.
    GroupStopped(i32),
    /// A signal was being delivered to it at that moment; it is kept and delivered on detach.
    Signal(i32),
}

/// Where remote syscalls are executed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyscallMethod {
    /// The vDSO's own `syscall` instruction if there is a vDSO, else [`SyscallMethod::PatchCode`].
    #[default]
    Auto,
    /// Only the vDSO's `syscall` instruction (single-stepped over); nothing is written into the
    /// task.
    Vdso,
    /// Plant `syscall; int3` at the start of the task's first executable mapping for the
    /// duration of each call (all threads are stopped), restoring the bytes afterwards.
    PatchCode,
}

/// Options of [`Task::seize_with`].
#[derive(Clone, Copy, Debug)]
pub struct SeizeOptions {
    /// Seize every thread of the process (default), or only the one given.
    pub all_threads: bool,
    /// Where remote syscalls run.
    pub method: SyscallMethod,
}

impl Default for SeizeOptions {
    fn default() -> Self {
        SeizeOptions {
            all_threads: true,
            method: SyscallMethod::Auto,
        }
    }
}

#[derive(Debug)]
struct ThreadCtl {
    tid: i32,
    initial: InitialStop,
    /// We saw it stop and have not resumed it since.
    stopped: bool,
    /// The current stop is a signal-delivery-stop (so a signal can be injected on detach).
    in_signal_stop: bool,
    /// Registers as found (or as last set through `set_regs`), once read.
    regs: Option<UserRegs>,
    /// Blocked-signal mask as found (or as last set), once read.
    sigmask: Option<u64>,
    /// Signals taken from the thread while we held it, to deliver again on detach.
    reinject: Vec<libc::siginfo_t>,
}

/// How to resume a thread in [`Task::resume`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    /// `PTRACE_CONT`.
    Continue,
    /// `PTRACE_SINGLESTEP`.
    SingleStep,
    /// `PTRACE_SYSCALL`.
    Syscall,
}

/// A seized task: every thread of a process stopped under `PTRACE_SEIZE`.
///
/// While a `Task` exists its threads stay stopped (except inside the calls that run them). It
/// must be used from the thread that created it (ptrace attaches a tracee to one tracer thread),
/// so it is neither `Send` nor `Sync`. Dropping it detaches like [`Task::detach`], logging
/// errors instead of returning them.
///
/// Putting the task back as found: registers and signal mask are restored after each remote
/// syscall; a signal that was being delivered when we seized the task (or that arrived and could
/// not be blocked while we ran code in it) is delivered again, with its original siginfo, when
/// we detach; a task that was job-control stopped stays stopped; a thread interrupted inside a
/// syscall restarts (or completes) it as the kernel would after any stop.
#[derive(Debug)]
pub struct Task {
    pid: i32,
    state: TaskState,
    threads: Vec<ThreadCtl>,
    mem: RemoteMem,
    site: Option<SyscallSite>,
    opts: SeizeOptions,
    seccomp_suspended: bool,
    released: bool,
    _not_send: PhantomData<*const ()>,
}

fn privileged() -> bool {
    static CAP: OnceLock<bool> = OnceLock::new();
    *CAP.get_or_init(proc::self_has_cap_sys_admin)
}

fn how(stop: Stop) -> String {
    match stop {
        Stop::Exited(c) => format!("exited with status {c}"),
        Stop::Killed(s) => format!("killed by signal {s}"),
        other => format!("{other:?}"),
    }
}

impl Task {
    /// Seizes every thread of process `pid` with default options.
    ///
    /// # Errors
    /// [`TaskError::NoSuchTask`], [`TaskError::Zombie`], [`TaskError::TracedByOther`],
    /// [`TaskError::PermissionDenied`], [`TaskError::SeccompNeedsCapSysAdmin`], or a ptrace/wait
    /// failure. On error every thread seized so far is released as it was.
    pub fn seize(pid: i32) -> Result<Task, TaskError> {
        Task::seize_with(pid, SeizeOptions::default())
    }

    /// Seizes process `pid` (or only thread `pid`, see [`SeizeOptions::all_threads`]):
    /// `PTRACE_SEIZE` + `PTRACE_INTERRUPT` on each thread, then waits for each of them only,
    /// re-listing `/proc/PID/task` until no new thread appears. Seccomp filters are suspended
    /// for the duration when we have `CAP_SYS_ADMIN`.
    ///
    /// # Errors
    /// As for [`Task::seize`].
    pub fn seize_with(pid: i32, opts: SeizeOptions) -> Result<Task, TaskError> {
        if pid <= 0 {
            return Err(TaskError::NoSuchTask { pid });
        }
        // No /proc look-up up front: a failed PTRACE_SEIZE is classified afterwards, and a
        // job-control stop shows as a group-stop when we wait.
        let mut task = Task {
            pid,
            state: TaskState::Running,
            threads: Vec::new(),
            mem: RemoteMem::new(pid),
            site: None,
            opts,
            seccomp_suspended: privileged(),
            released: false,
            _not_send: PhantomData,
        };
        let mut pending = vec![pid];
        loop {
            for &tid in &pending {
                task.attach(tid)?;
            }
            for &tid in &pending {
                task.wait_initial(tid)?;
            }
            if !opts.all_threads {
                break;
            }
            let all = proc::threads(pid)?;
            pending = all
                .into_iter()
                .filter(|t| task.index(*t).is_none())
                .collect();
            if pending.is_empty() {
                break;
            }
        }
        if !task.seccomp_suspended {
            for th in &task.threads {
                // Filter (2) or strict (1) mode: either would filter or kill our syscalls.
                if proc::seccomp_mode(th.tid).unwrap_or(0) != 0 {
                    return Err(TaskError::SeccompNeedsCapSysAdmin { tid: th.tid });
                }
            }
        }
        if task
            .threads
            .iter()
            .any(|t| matches!(t.initial, InitialStop::GroupStopped(_)))
        {
            task.state = TaskState::Stopped;
        }
        tracing::debug!(pid, threads = task.threads.len(), state = %task.state, "seized");
        Ok(task)
    }

    /// Takes over process `pid`, whose threads `tids` this process already traces (seized by
    /// other code, e.g. a restore engine that seized them at their first instruction with
    /// [`ptrace::seize`]) and which are all in a ptrace-stop now: no `PTRACE_SEIZE`, no
    /// interrupt. `ptrace_options` (bits of [`ptrace::options`], e.g. `TRACESYSGOOD |
    /// EXITKILL | TRACECLONE`, with `SUSPEND_SECCOMP` for a task under seccomp) are set on
    /// every thread, so the task is traced the way the caller needs whatever its seizer chose.
    /// [`Task::detach`] lets the threads go as it does for seized ones.
    ///
    /// # Errors
    /// [`TaskError::NoSuchTask`] when `tids` does not hold `pid` or holds a thread this process
    /// does not trace in a stop (`SETOPTIONS` fails with `ESRCH`), or a ptrace failure.
    pub fn adopt(
        pid: i32,
        tids: &[i32],
        ptrace_options: u64,
        opts: SeizeOptions,
    ) -> Result<Task, TaskError> {
        if pid <= 0 || !tids.contains(&pid) {
            return Err(TaskError::NoSuchTask { pid });
        }
        let mut task = Task {
            pid,
            state: TaskState::Running,
            threads: Vec::new(),
            mem: RemoteMem::new(pid),
            site: None,
            opts,
            seccomp_suspended: ptrace_options & ptrace::options::SUSPEND_SECCOMP != 0,
            released: false,
            _not_send: PhantomData,
        };
        // The thread the task is known by comes first, as after a seize.
        let order = std::iter::once(pid).chain(tids.iter().copied().filter(|&t| t != pid));
        for tid in order {
            ptrace::set_options(tid, ptrace_options).map_err(|e| match e {
                Errno::ESRCH => TaskError::NoSuchTask { pid: tid },
                source => TaskError::Ptrace {
                    op: "SETOPTIONS",
                    tid,
                    source,
                },
            })?;
            task.threads.push(ThreadCtl {
                tid,
                initial: InitialStop::Interrupted,
                stopped: true,
                in_signal_stop: false,
                regs: None,
                sigmask: None,
                reinject: Vec::new(),
            });
        }
        tracing::debug!(pid, threads = task.threads.len(), "adopted");
        Ok(task)
    }

    /// Makes remote syscalls go through the `syscall` instruction at `addr` (one the caller
    /// knows, e.g. in code it mapped into the task) instead of searching the vDSO. The bytes
    /// there are decoded first.
    ///
    /// # Errors
    /// [`TaskError::NoSyscallSite`] if no `syscall` instruction starts at `addr`, or a memory
    /// read failure.
    pub fn use_syscall_insn(&mut self, addr: RemoteAddr) -> Result<(), TaskError> {
        let mut code = [0u8; SYSCALL_INSN.len()];
        self.mem.read(addr, &mut code)?;
        if !compel_arch::is_syscall_insn(&code) {
            return Err(TaskError::NoSyscallSite {
                pid: self.pid,
                why: "no syscall instruction at the address given",
            });
        }
        self.site = Some(SyscallSite {
            addr,
            kind: SiteKind::Existing,
        });
        Ok(())
    }

    fn attach(&mut self, tid: i32) -> Result<(), TaskError> {
        let mut opts = 0;
        if self.seccomp_suspended {
            opts |= ptrace::options::SUSPEND_SECCOMP;
        }
        let mut res = ptrace::seize(tid, opts);
        if res == Err(Errno::EPERM) && self.seccomp_suspended {
            // Our own seccomp state (or an LSM) may forbid suspending: try plainly, and check
            // for filters afterwards.
            res = ptrace::seize(tid, 0);
            if res.is_ok() {
                tracing::debug!(tid, "seize with SUSPEND_SECCOMP refused; seized without");
                self.seccomp_suspended = false;
            }
        }
        match res {
            Ok(()) => {}
            Err(Errno::ESRCH) if tid != self.pid => return Ok(()), // the thread just exited
            Err(Errno::ESRCH) => return Err(TaskError::NoSuchTask { pid: tid }),
            Err(source @ Errno::EPERM) => {
                let state = classify(tid)?;
                if tid != self.pid && matches!(state, TaskState::Zombie | TaskState::Dead) {
                    // A thread that is exiting refuses to be seized: it is gone.
                    return Ok(());
                }
                return Err(match state {
                    TaskState::Zombie => TaskError::Zombie { pid: tid },
                    TaskState::Dead => TaskError::NoSuchTask { pid: tid },
                    TaskState::Traced { tracer } => TaskError::TracedByOther { pid: tid, tracer },
                    _ => TaskError::PermissionDenied { pid: tid, source },
                });
            }
            Err(source) => {
                return Err(TaskError::Ptrace {
                    op: "SEIZE",
                    tid,
                    source,
                });
            }
        }
        self.threads.push(ThreadCtl {
            tid,
            initial: InitialStop::Interrupted,
            stopped: false,
            in_signal_stop: false,
            regs: None,
            sigmask: None,
            reinject: Vec::new(),
        });
        match ptrace::interrupt(tid) {
            Ok(()) => Ok(()),
            // A thread exiting right after the seize: waiting for it sees it exit.
            Err(Errno::ESRCH) if tid != self.pid => Ok(()),
            Err(source) => Err(TaskError::Ptrace {
                op: "INTERRUPT",
                tid,
                source,
            }),
        }
    }

    /// Waits for the first stop of a freshly seized thread and records how it stopped.
    fn wait_initial(&mut self, tid: i32) -> Result<(), TaskError> {
        let Some(i) = self.index(tid) else {
            return Ok(());
        };
        let stop = ptrace::wait(tid).map_err(|source| TaskError::Wait { tid, source })?;
        let th = &mut self.threads[i];
        match stop {
            Stop::Interrupt | Stop::Syscall | Stop::Event(_) => {
                th.initial = InitialStop::Interrupted
            }
            Stop::Group(sig) => th.initial = InitialStop::GroupStopped(sig),
            Stop::Signal(sig) => {
                let si = ptrace::get_siginfo(tid).map_err(TaskError::ptrace("GETSIGINFO", tid))?;
                tracing::debug!(
                    tid,
                    sig,
                    "seized in signal-delivery-stop; signal kept for detach"
                );
                th.initial = InitialStop::Signal(sig);
                th.in_signal_stop = true;
                th.reinject.push(si);
            }
            Stop::Exited(_) | Stop::Killed(_) => {
                self.threads.remove(i);
                if tid == self.pid {
                    return Err(TaskError::Died {
                        tid,
                        how: how(stop),
                    });
                }
                return Ok(());
            }
        }
        th.stopped = true;
        Ok(())
    }

    fn index(&self, tid: i32) -> Option<usize> {
        self.threads.iter().position(|t| t.tid == tid)
    }

    fn thread_index(&self, tid: i32) -> Result<usize, TaskError> {
        self.index(tid)
            .ok_or(TaskError::NotOurThread { pid: self.pid, tid })
    }

    /// The id the task was seized by: a process id, or the id of one of its threads (then that
    /// thread is the one [`Task::remote_syscall`] uses and [`Task::threads`] lists first).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// [`TaskState::Running`] or [`TaskState::Stopped`]: what the task was doing when seized
    /// (and what it goes back to on detach).
    pub fn state(&self) -> TaskState {
        self.state
    }

    /// The seized threads' ids, the one given to [`Task::seize`] first.
    pub fn threads(&self) -> Vec<i32> {
        let mut tids: Vec<i32> = self.threads.iter().map(|t| t.tid).collect();
        tids.sort_by_key(|&t| (t != self.pid, t));
        tids
    }

    /// Forgets the signal most recently kept for delivery at detach on thread `tid` and
    /// returns its number: for a fault raised by code we injected (a parasite), which the task
    /// itself never caused and must never see.
    pub fn discard_last_kept_signal(&mut self, tid: i32) -> Option<i32> {
        let i = self.index(tid)?;
        self.threads[i].reinject.pop().map(|si| si.si_signo)
    }

    /// How thread `tid` was stopped when seized.
    pub fn initial_stop(&self, tid: i32) -> Option<InitialStop> {
        self.index(tid).map(|i| self.threads[i].initial)
    }

    /// Whether seccomp filters are suspended for this task (we had `CAP_SYS_ADMIN`).
    pub fn seccomp_suspended(&self) -> bool {
        self.seccomp_suspended
    }

    /// Thread `tid`'s general registers: as found at seize, or as last set with
    /// [`Task::set_regs`], or as the thread left them after the last [`Task::resume`]. Remote
    /// syscalls leave them unchanged. Read once and cached while the thread stays stopped.
    ///
    /// # Errors
    /// [`TaskError::NotOurThread`] or a ptrace failure.
    pub fn regs(&mut self, tid: i32) -> Result<UserRegs, TaskError> {
        let i = self.thread_index(tid)?;
        if let Some(r) = self.threads[i].regs {
            return Ok(r);
        }
        let r = ptrace::get_regs(tid).map_err(TaskError::ptrace("GETREGS", tid))?;
        self.threads[i].regs = Some(r);
        Ok(r)
    }

    /// Sets thread `tid`'s general registers (they stay set after detach).
    ///
    /// # Errors
    /// [`TaskError::NotOurThread`] or a ptrace failure.
    pub fn set_regs(&mut self, tid: i32, regs: &UserRegs) -> Result<(), TaskError> {
        let i = self.thread_index(tid)?;
        ptrace::set_regs(tid, regs).map_err(TaskError::ptrace("SETREGS", tid))?;
        self.threads[i].regs = Some(*regs);
        Ok(())
    }

    /// Thread `tid`'s complete extended register state (FPU, SSE, AVX, AVX-512, ... as the
    /// kernel's `NT_X86_XSTATE` regset holds it).
    ///
    /// # Errors
    /// [`TaskError::NotOurThread`] or a ptrace failure.
    pub fn xsave(&mut self, tid: i32) -> Result<Xsave, TaskError> {
        self.thread_index(tid)?;
        let mut bytes = vec![0u8; compel_arch::XSAVE_MAX_SIZE];
        let n = ptrace::get_regset(tid, ptrace::NT_XSTATE, &mut bytes)
            .map_err(TaskError::ptrace("GETREGSET(NT_X86_XSTATE)", tid))?;
        bytes.truncate(n);
        Ok(Xsave { bytes })
    }

    /// Writes thread `tid`'s extended register state (as returned by [`Task::xsave`],
    /// possibly modified).
    ///
    /// # Errors
    /// [`TaskError::NotOurThread`], [`TaskError::XsaveSize`] if the area is too small to hold
    /// the header, or a ptrace failure (the kernel rejects inconsistent headers with `EINVAL`).
    pub fn set_xsave(&mut self, tid: i32, xsave: &Xsave) -> Result<(), TaskError> {
        self.thread_index(tid)?;
        let min = compel_arch::XSAVE_HDR_OFFSET + compel_arch::XSAVE_HDR_SIZE;
        if xsave.bytes.len() < min {
            return Err(TaskError::XsaveSize {
                tid,
                got: xsave.bytes.len(),
                expected: min,
            });
        }
        ptrace::set_regset(tid, ptrace::NT_XSTATE, &xsave.bytes)
            .map_err(TaskError::ptrace("SETREGSET(NT_X86_XSTATE)", tid))
    }

    /// Thread `tid`'s TLS base (`fs_base` on x86_64).
    ///
    /// # Errors
    /// As for [`Task::regs`].
    pub fn tls(&mut self, tid: i32) -> Result<u64, TaskError> {
        Ok(self.regs(tid)?.tls())
    }

    /// Thread `tid`'s blocked-signal mask (bit `n-1` for signal `n`), cached like
    /// [`Task::regs`].
    ///
    /// # Errors
    /// [`TaskError::NotOurThread`] or a ptrace failure.
    pub fn sigmask(&mut self, tid: i32) -> Result<u64, TaskError> {
        let i = self.thread_index(tid)?;
        if let Some(m) = self.threads[i].sigmask {
            return Ok(m);
        }
        let m = ptrace::get_sigmask(tid).map_err(TaskError::ptrace("GETSIGMASK", tid))?;
        self.threads[i].sigmask = Some(m);
        Ok(m)
    }

    /// Sets thread `tid`'s blocked-signal mask (it stays set after detach).
    ///
    /// # Errors
    /// [`TaskError::NotOurThread`] or a ptrace failure.
    pub fn set_sigmask(&mut self, tid: i32, mask: u64) -> Result<(), TaskError> {
        let i = self.thread_index(tid)?;
        ptrace::set_sigmask(tid, mask).map_err(TaskError::ptrace("SETSIGMASK", tid))?;
        self.threads[i].sigmask = Some(mask);
        Ok(())
    }

    /// Reads `buf.len()` bytes of the task's memory at `addr`.
    ///
    /// # Errors
    /// [`TaskError::Memory`] if any byte is unreadable.
    pub fn read_mem(&mut self, addr: RemoteAddr, buf: &mut [u8]) -> Result<(), TaskError> {
        self.mem.read(addr, buf)
    }

    /// Reads up to `buf.len()` bytes at `addr`, stopping at the first unreadable page; returns
    /// how many bytes were read.
    ///
    /// # Errors
    /// [`TaskError::Memory`] if not even the first byte is readable.
    pub fn read_mem_partial(
        &mut self,
        addr: RemoteAddr,
        buf: &mut [u8],
    ) -> Result<usize, TaskError> {
        self.mem.read_partial(addr, buf)
    }

    /// Writes `data` into the task's memory at `addr` (read-only pages included, through
    /// `/proc/PID/mem`).
    ///
    /// # Errors
    /// [`TaskError::Memory`] if the range is not writable even that way.
    pub fn write_mem(&mut self, addr: RemoteAddr, data: &[u8]) -> Result<(), TaskError> {
        self.mem.write(addr, data)
    }

    /// The task's memory mappings.
    ///
    /// # Errors
    /// If `/proc/PID/maps` cannot be read.
    pub fn maps(&self) -> Result<Vec<proc::Mapping>, TaskError> {
        proc::maps(self.pid)
    }

    /// Resumes thread `tid` without delivering a signal. Low-level: the caller has set up
    /// registers (e.g. to run injected code), must wait with [`Task::wait_stop`], and is
    /// responsible for restoring registers it saved before (with [`Task::set_regs`]).
    ///
    /// # Errors
    /// [`TaskError::NotOurThread`] or a ptrace failure.
    pub fn resume(&mut self, tid: i32, how: Resume) -> Result<(), TaskError> {
        let i = self.thread_index(tid)?;
        let res = match how {
            Resume::Continue => ptrace::cont(tid, 0),
            Resume::SingleStep => ptrace::single_step(tid, 0),
            Resume::Syscall => ptrace::syscall(tid, 0),
        };
        res.map_err(TaskError::ptrace("resume", tid))?;
        let th = &mut self.threads[i];
        th.stopped = false;
        th.in_signal_stop = false;
        // The thread runs its own code now: what we cached is stale.
        th.regs = None;
        th.sigmask = None;
        Ok(())
    }

    /// Waits until thread `tid` stops again and returns how. Signal-delivery-stops for signals
    /// other than `SIGTRAP` are recorded for delivery at detach (the next resume suppresses
    /// them).
    ///
    /// # Errors
    /// [`TaskError::Died`] if the thread is gone, or a wait/ptrace failure.
    pub fn wait_stop(&mut self, tid: i32) -> Result<Stop, TaskError> {
        let i = self.thread_index(tid)?;
        let stop = ptrace::wait(tid).map_err(|source| TaskError::Wait { tid, source })?;
        if let Stop::Exited(_) | Stop::Killed(_) = stop {
            self.threads.remove(i);
            return Err(TaskError::Died {
                tid,
                how: how(stop),
            });
        }
        let th = &mut self.threads[i];
        th.stopped = true;
        if let Stop::Signal(sig) = stop {
            th.in_signal_stop = true;
            if sig != libc::SIGTRAP {
                let si = ptrace::get_siginfo(tid).map_err(TaskError::ptrace("GETSIGINFO", tid))?;
                th.reinject.push(si);
            }
        }
        Ok(stop)
    }

    /// Releases every thread: re-delivers kept signals and detaches. A task that was
    /// job-control stopped stays stopped.
    ///
    /// # Errors
    /// The first failure (every thread is still attempted).
    pub fn detach(mut self) -> Result<(), TaskError> {
        self.release()
    }

    fn release(&mut self) -> Result<(), TaskError> {
        if self.released {
            return Ok(());
        }
        self.released = true;
        let mut first = None;
        let threads = std::mem::take(&mut self.threads);
        for th in threads {
            if let Err(e) = self.release_thread(th)
                && first.is_none()
            {
                first = Some(e);
            }
        }
        tracing::debug!(pid = self.pid, ok = first.is_none(), "detached");
        first.map_or(Ok(()), Err)
    }

    fn release_thread(&mut self, mut th: ThreadCtl) -> Result<(), TaskError> {
        let tid = th.tid;
        if !th.stopped {
            // Seized and interrupted but never waited for (an error path): wait for the stop.
            match ptrace::wait(tid) {
                Ok(Stop::Exited(_) | Stop::Killed(_)) => return Ok(()),
                Ok(Stop::Signal(_)) => {
                    th.in_signal_stop = true;
                    if let Ok(si) = ptrace::get_siginfo(tid) {
                        th.reinject.push(si);
                    }
                }
                Ok(_) => {}
                Err(source) => return Err(TaskError::Wait { tid, source }),
            }
        }
        let mut pending = th.reinject.into_iter();
        let mut sig = 0;
        if th.in_signal_stop
            && let Some(si) = pending.next()
        {
            match ptrace::set_siginfo(tid, &si) {
                Ok(()) => sig = si.si_signo,
                Err(e) => tracing::warn!(tid, error = %e, "cannot restore siginfo"),
            }
        }
        match ptrace::detach(tid, sig) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(source) => {
                return Err(TaskError::Ptrace {
                    op: "DETACH",
                    tid,
                    source,
                });
            }
        }
        for si in pending {
            // More than one kept signal (rare): send the rest again; their siginfo is lost.
            tracing::warn!(
                tid,
                sig = si.si_signo,
                "re-sending kept signal without its siginfo"
            );
            let _ = ptrace::tgkill(self.pid, tid, si.si_signo);
        }
        Ok(())
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            tracing::error!(pid = self.pid, error = %e, "detaching on drop failed");
        }
    }
}
