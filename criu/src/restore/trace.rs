//! Tracing the task while it restores itself: from its first instruction (so that no signal
//! stop is lost) to its final `rt_sigreturn`, after which the restorer's area is unmapped by a
//! system call run through ptrace (nothing inside the task can unmap the code it runs on).

use std::os::fd::{AsRawFd, OwnedFd};

use compel::ptrace::{self as cptrace, SyscallInfo, options};
use compel::syscall_stop::{SyscallRun, await_syscall_stop};
use compel::{RemoteAddr, TaskError};
use compel_arch::nr;
use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::abi::{self, Status};
use super::child;
use super::error::RestoreError;

fn terr(pid: i32, what: &'static str) -> impl Fn(Errno) -> RestoreError {
    move |errno| RestoreError::Trace { pid, what, errno }
}

/// A failure of compel's tracing runtime, as the restore reports it.
fn compel_err(e: TaskError) -> RestoreError {
    match e {
        TaskError::Died { tid, how } => RestoreError::Died {
            pid: tid,
            status: how,
        },
        TaskError::Ptrace { op, tid, source } => RestoreError::Trace {
            pid: tid,
            what: op,
            errno: source,
        },
        TaskError::Wait { tid, source } => RestoreError::Trace {
            pid: tid,
            what: "waitpid",
            errno: source,
        },
        other => RestoreError::Trace {
            pid: 0,
            what: "tracing",
            errno: match other {
                TaskError::NoSuchTask { .. } => Errno::ESRCH,
                _ => Errno::EIO,
            },
        },
    }
}

/// Attaches to the new task (it waits on its go pipe, so it has done nothing yet). The task
/// dies with us if criu dies while tracing it.
///
/// # Errors
/// [`RestoreError::Trace`], [`RestoreError::SeccompSuspend`].
///
/// With `suspend_seccomp` (a task whose threads go back under seccomp), the filters the
/// restorer installs bind only once the task is let go (`PTRACE_O_SUSPEND_SECCOMP`, which needs
/// CAP_SYS_ADMIN): the restorer's own last steps and the engine's remote calls stay free.
pub fn seize(pid: i32, suspend_seccomp: bool) -> Result<(), RestoreError> {
    let mut opts = options::TRACESYSGOOD | options::EXITKILL | options::TRACECLONE;
    if suspend_seccomp {
        opts |= options::SUSPEND_SECCOMP;
    }
    cptrace::seize(pid, opts).map_err(|e| match e {
        Errno::EPERM if suspend_seccomp => RestoreError::SeccompSuspend { pid },
        e => terr(pid, "PTRACE_SEIZE")(e),
    })
}

fn died(pid: i32, ws: WaitStatus) -> RestoreError {
    let status = match ws {
        WaitStatus::Exited(_, c) => format!("exited with {c}"),
        WaitStatus::Signaled(_, s, _) => format!("killed by {s}"),
        other => format!("{other:?}"),
    };
    RestoreError::Died { pid, status }
}

fn read_status(fd: &OwnedFd) -> Result<Option<Status>, Errno> {
    let mut st = Status::default();
    // SAFETY: reads at most size_of::<Status>() bytes into a live repr(C) value of integers.
    let n = unsafe {
        libc::read(
            fd.as_raw_fd(),
            (&raw mut st).cast(),
            std::mem::size_of::<Status>(),
        )
    };
    if n < 0 {
        return Err(Errno::last());
    }
    Ok((n as usize == std::mem::size_of::<Status>()).then_some(st))
}

fn task_error(pid: i32, st: &Status) -> RestoreError {
    RestoreError::Task {
        pid,
        stage: child::stage_name(st.stage),
        errno: Errno::from_raw(st.errno),
        detail: st.detail,
    }
}

/// Waits until the task reports that everything is in place and has stopped itself before its
/// final return. Signals it receives meanwhile are passed on.
///
/// # Errors
/// [`RestoreError::Task`] with the failed step, [`RestoreError::Died`], [`RestoreError::Trace`],
/// [`RestoreError::Timeout`] after `deadline`.
pub fn wait_ready(
    pid: i32,
    threads: &[i32],
    status_r: &OwnedFd,
    deadline: std::time::Instant,
) -> Result<(), RestoreError> {
    let p = Pid::from_raw(pid);
    // Threads that stopped themselves for us (they may get there before the leader reports).
    let mut parked: Vec<i32> = Vec::new();
    // Each new thread holds the leader in a clone event until we see it: wake up on every
    // stop of a tracee (they come as SIGCHLD) as well as on the status pipe.
    let chld = ChldFd::new();
    loop {
        if std::time::Instant::now() > deadline {
            return Err(RestoreError::Timeout { pid });
        }
        let mut pfd = [
            libc::pollfd {
                fd: status_r.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: chld.as_ref().map_or(-1, |c| c.fd.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let poll_ms = if chld.is_some() { 50 } else { 1 };
        // SAFETY: polls two live pollfds (a negative fd is ignored).
        let n = unsafe { libc::poll(pfd.as_mut_ptr(), 2, poll_ms) };
        if let Some(c) = &chld {
            c.drain();
        }
        if n > 0 && pfd[0].revents != 0 {
            match read_status(status_r) {
                Ok(Some(st)) if st.stage == abi::STAGE_READY => break,
                Ok(Some(st)) => return Err(task_error(pid, &st)),
                Ok(None) => {
                    // End of file without a report: the task is gone.
                    loop {
                        match waitpid(p, Some(WaitPidFlag::__WALL)) {
                            Ok(ws @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                                return Err(died(pid, ws));
                            }
                            Ok(WaitStatus::Stopped(_, sig)) => {
                                let _ = cptrace::cont(p.as_raw(), sig as i32);
                            }
                            Ok(_) | Err(Errno::EINTR) => {
                                let _ = cptrace::cont(p.as_raw(), 0);
                            }
                            Err(e) => return Err(terr(pid, "waitpid")(e)),
                        }
                    }
                }
                Err(Errno::EINTR | Errno::EAGAIN) => {}
                Err(e) => return Err(terr(pid, "reading the status pipe")(e)),
            }
        }
        for &tid in threads {
            if !parked.contains(&tid) {
                poll_thread(tid, &mut parked)?;
            }
        }
        match waitpid(p, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(ws @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                if let Ok(Some(st)) = read_status(status_r)
                    && st.stage != abi::STAGE_READY
                {
                    return Err(task_error(pid, &st));
                }
                return Err(died(pid, ws));
            }
            Ok(WaitStatus::Stopped(_, Signal::SIGSTOP)) if ready_now(pid, status_r)? => {
                // The restorer's own stop, seen before its report (which it wrote first).
                parked.push(pid);
                break;
            }
            Ok(WaitStatus::Stopped(_, sig)) => {
                tracing::debug!(pid, ?sig, "signal during restore, passed on");
                cptrace::cont(p.as_raw(), sig as i32).map_err(terr(pid, "PTRACE_CONT"))?;
            }
            Ok(_) => {
                // Clone events of the leader and the like.
                cptrace::cont(p.as_raw(), 0).map_err(terr(pid, "PTRACE_CONT"))?;
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(terr(pid, "waitpid")(e)),
        }
    }
    // The leader and every thread stop themselves with SIGSTOP right after they are ready.
    for &tid in std::iter::once(&pid).chain(threads) {
        if parked.contains(&tid) {
            continue;
        }
        let t = Pid::from_raw(tid);
        loop {
            match waitpid(t, Some(WaitPidFlag::__WALL)) {
                Ok(WaitStatus::Stopped(_, Signal::SIGSTOP)) => break,
                Ok(WaitStatus::Stopped(_, sig)) => {
                    cptrace::cont(t.as_raw(), sig as i32).map_err(terr(tid, "PTRACE_CONT"))?;
                }
                Ok(ws @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                    return Err(died(pid, ws));
                }
                Ok(_) => {
                    cptrace::cont(t.as_raw(), 0).map_err(terr(tid, "PTRACE_CONT"))?;
                }
                Err(Errno::EINTR) => {}
                Err(e) => return Err(terr(tid, "waitpid")(e)),
            }
        }
    }
    Ok(())
}

/// Whether the task's report is waiting in the status pipe (read then): a stop with SIGSTOP
/// that comes after it is the restorer's own.
///
/// # Errors
/// [`RestoreError::Task`] when the report is a failure.
fn ready_now(pid: i32, status_r: &OwnedFd) -> Result<bool, RestoreError> {
    let mut pfd = libc::pollfd {
        fd: status_r.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: polls one live pollfd without waiting.
    if unsafe { libc::poll(&mut pfd, 1, 0) } != 1 || pfd.revents & libc::POLLIN == 0 {
        return Ok(false);
    }
    match read_status(status_r) {
        Ok(Some(st)) if st.stage == abi::STAGE_READY => Ok(true),
        Ok(Some(st)) => Err(task_error(pid, &st)),
        _ => Ok(false),
    }
}

/// A signalfd for `SIGCHLD` (blocked in this thread while it lives), so that a wait for the
/// status pipe also wakes up when a tracee stops.
struct ChldFd {
    fd: OwnedFd,
    old: libc::sigset_t,
}

impl ChldFd {
    fn new() -> Option<ChldFd> {
        // SAFETY: sigset manipulation on live locals; pthread_sigmask and signalfd only affect
        // this thread's mask and a new descriptor we own.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGCHLD);
            if libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) != 0 {
                return None;
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
            if fd < 0 {
                libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
                return None;
            }
            Some(ChldFd {
                fd: crate::files::owned(fd),
                old,
            })
        }
    }

    fn drain(&self) {
        let mut buf = [0u8; 128 * 8];
        // SAFETY: non-blocking reads into a live buffer from our signalfd.
        while unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
    }
}

impl Drop for ChldFd {
    fn drop(&mut self) {
        // SAFETY: restores this thread's mask as it was (a pending SIGCHLD is then delivered to
        // whatever criu's disposition is: the default ignores it).
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}

/// Looks at one thread without blocking: lets it run on, or parks it once it stopped itself.
fn poll_thread(tid: i32, parked: &mut Vec<i32>) -> Result<(), RestoreError> {
    let t = Pid::from_raw(tid);
    match waitpid(t, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)) {
        // Not created yet, or still running.
        Err(Errno::ECHILD) | Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => Ok(()),
        Ok(WaitStatus::Stopped(_, Signal::SIGSTOP)) => {
            parked.push(tid);
            Ok(())
        }
        Ok(WaitStatus::Stopped(_, sig)) => {
            cptrace::cont(t.as_raw(), sig as i32).map_err(terr(tid, "PTRACE_CONT"))
        }
        // The leader reports how the task ended.
        Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => Ok(()),
        Ok(_) => cptrace::cont(t.as_raw(), 0).map_err(terr(tid, "PTRACE_CONT")),
        Err(e) => Err(terr(tid, "waitpid")(e)),
    }
}

fn syscall_on(tid: i32) -> Result<(), RestoreError> {
    cptrace::syscall(tid, 0).map_err(terr(tid, "PTRACE_SYSCALL"))
}

/// Lets every thread of `tids` (the stopped threads of any number of tasks) run into its final
/// `rt_sigreturn` and stops it at the exit of that call, out of the restorer's code. Resuming
/// with signal 0 swallows the SIGSTOP each is stopped with; other signals are passed on.
///
/// All of them run at once: each is let go to its next syscall stop, and the stops are taken
/// in turn, so the ptrace round trips of different tasks overlap instead of adding up (a
/// restorer makes a few system calls after its release, two stops each).
///
/// # Errors
/// [`RestoreError::Trace`], [`RestoreError::Died`].
pub fn run_to_sigreturn(tids: &[i32]) -> Result<(), RestoreError> {
    // (tid, number of the syscall it last entered, whether it is at the exit of rt_sigreturn)
    let mut ts: Vec<(i32, u64, bool)> = tids.iter().map(|&t| (t, u64::MAX, false)).collect();
    for &(tid, ..) in &ts {
        syscall_on(tid)?;
    }
    let mut left = ts.len();
    while left > 0 {
        for (tid, last_nr, done) in ts.iter_mut().filter(|t| !t.2) {
            await_syscall_stop(*tid).map_err(compel_err)?;
            let info =
                cptrace::syscall_info(*tid).map_err(terr(*tid, "PTRACE_GET_SYSCALL_INFO"))?;
            match info {
                SyscallInfo::Entry { nr, .. } => *last_nr = nr,
                SyscallInfo::Exit { .. } if *last_nr == nr::RT_SIGRETURN as u64 => {
                    *done = true;
                    left -= 1;
                    continue;
                }
                _ => {}
            }
            syscall_on(*tid)?;
        }
    }
    Ok(())
}

/// A task stopped by [`run_to_sigreturn`], to be let go by [`unmap_and_detach`].
pub struct Resumable {
    /// The leader.
    pub pid: i32,
    /// The other threads.
    pub threads: Vec<i32>,
    /// A `syscall` instruction in the task, outside the restorer's area.
    pub syscall_insn: u64,
    /// The restorer's area `(start, len)`.
    pub restorer: (u64, u64),
    /// The signal to detach with (a task that was job-control stopped when dumped).
    pub stop_signal: Option<i32>,
}

/// For tasks whose threads [`run_to_sigreturn`] stopped at the exit of their `rt_sigreturn`:
/// unmaps each restorer's area through the task's `syscall` instruction (all tasks at once, with
/// every signal blocked meanwhile; registers and mask put back after), then detaches them in the
/// order given.
///
/// # Errors
/// [`RestoreError::Trace`], [`RestoreError::Died`].
pub fn unmap_and_detach(tasks: &[Resumable]) -> Result<(), RestoreError> {
    let mut runs = Vec::with_capacity(tasks.len());
    for t in tasks {
        let args = [t.restorer.0, t.restorer.1, 0, 0, 0, 0];
        let run = SyscallRun::start(t.pid, RemoteAddr(t.syscall_insn), nr::MUNMAP, args)
            .map_err(compel_err)?;
        runs.push(run);
    }
    for run in &mut runs {
        run.enter().map_err(compel_err)?; // entry of munmap
    }
    for run in runs {
        let pid = run.tid();
        let ret = run.finish().map_err(compel_err)?; // exit of munmap
        if ret != 0 {
            tracing::warn!(pid, ret, "unmapping the restorer failed");
        }
    }
    for t in tasks {
        for &tid in &t.threads {
            cptrace::detach(tid, 0).map_err(terr(tid, "PTRACE_DETACH"))?;
        }
        let sig = t.stop_signal.filter(|s| Signal::try_from(*s).is_ok());
        cptrace::detach(t.pid, sig.unwrap_or(0)).map_err(terr(t.pid, "PTRACE_DETACH"))?;
    }
    Ok(())
}
