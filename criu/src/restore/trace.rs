//! Tracing the task while it restores itself: from its first instruction (so that no signal
//! stop is lost) to its final `rt_sigreturn`, after which the restorer's area is unmapped by a
//! system call run through ptrace (nothing inside the task can unmap the code it runs on).

use std::os::fd::{AsRawFd, OwnedFd};

use compel_arch::nr;
use nix::errno::Errno;
use nix::sys::ptrace::{self, Options};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::abi::{self, Status};
use super::{RestoreError, child};

const PTRACE_GETSIGMASK: libc::c_uint = 0x420a;
const PTRACE_SETSIGMASK: libc::c_uint = 0x420b;
const PTRACE_GET_SYSCALL_INFO: libc::c_uint = 0x420e;
const SYSCALL_INFO_ENTRY: u8 = 1;
const SYSCALL_INFO_EXIT: u8 = 2;

fn terr(pid: i32, what: &'static str) -> impl Fn(Errno) -> RestoreError {
    move |errno| RestoreError::Trace { pid, what, errno }
}

/// Attaches to the new task (it waits on its go pipe, so it has done nothing yet). The task
/// dies with us if criu dies while tracing it.
///
/// # Errors
/// [`RestoreError::Trace`].
///
/// With `suspend_seccomp` (a task whose threads go back under seccomp), the filters the
/// restorer installs bind only once the task is let go (`PTRACE_O_SUSPEND_SECCOMP`, which needs
/// CAP_SYS_ADMIN): the restorer's own last steps and the engine's remote calls stay free.
pub fn seize(pid: i32, suspend_seccomp: bool) -> Result<(), RestoreError> {
    let mut opts =
        Options::PTRACE_O_TRACESYSGOOD | Options::PTRACE_O_EXITKILL | Options::PTRACE_O_TRACECLONE;
    if suspend_seccomp {
        opts |= Options::from_bits_retain(libc::PTRACE_O_SUSPEND_SECCOMP);
    }
    ptrace::seize(Pid::from_raw(pid), opts).map_err(|e| match e {
        Errno::EPERM if suspend_seccomp => RestoreError::Unsupported {
            what: format!(
                "task {pid} runs under seccomp: restoring it needs CAP_SYS_ADMIN \
                 (PTRACE_O_SUSPEND_SECCOMP)"
            ),
        },
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
                                let _ = ptrace::cont(p, sig);
                            }
                            Ok(_) | Err(Errno::EINTR) => {
                                let _ = ptrace::cont(p, None);
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
                ptrace::cont(p, sig).map_err(terr(pid, "PTRACE_CONT"))?;
            }
            Ok(_) => {
                // Clone events of the leader and the like.
                ptrace::cont(p, None).map_err(terr(pid, "PTRACE_CONT"))?;
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
                    ptrace::cont(t, sig).map_err(terr(tid, "PTRACE_CONT"))?;
                }
                Ok(ws @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                    return Err(died(pid, ws));
                }
                Ok(_) => {
                    ptrace::cont(t, None).map_err(terr(tid, "PTRACE_CONT"))?;
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
                fd: super::owned(fd),
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
        Ok(WaitStatus::Stopped(_, sig)) => ptrace::cont(t, sig).map_err(terr(tid, "PTRACE_CONT")),
        // The leader reports how the task ended.
        Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => Ok(()),
        Ok(_) => ptrace::cont(t, None).map_err(terr(tid, "PTRACE_CONT")),
        Err(e) => Err(terr(tid, "waitpid")(e)),
    }
}

/// `struct ptrace_syscall_info`, the parts we read.
#[repr(C)]
#[derive(Default)]
struct SyscallInfo {
    op: u8,
    pad: [u8; 3],
    arch: u32,
    instruction_pointer: u64,
    stack_pointer: u64,
    /// entry: nr, args[6]; exit: rval, is_error.
    data: [u64; 7],
}

fn syscall_info(pid: i32) -> Result<SyscallInfo, RestoreError> {
    let mut info = SyscallInfo::default();
    // SAFETY: the kernel writes at most size_of::<SyscallInfo>() bytes into a live local.
    let r = unsafe {
        libc::ptrace(
            PTRACE_GET_SYSCALL_INFO,
            pid,
            std::mem::size_of::<SyscallInfo>(),
            &raw mut info,
        )
    };
    if r < 0 {
        return Err(terr(pid, "PTRACE_GET_SYSCALL_INFO")(Errno::last()));
    }
    Ok(info)
}

/// Continues to the next syscall stop, passing on signals.
/// Waits for the next syscall stop of `tid`, which the caller let run with `PTRACE_SYSCALL`;
/// a signal stop on the way is passed on to the thread, which is let run on.
fn await_syscall_stop(tid: i32) -> Result<(), RestoreError> {
    let p = Pid::from_raw(tid);
    loop {
        match waitpid(p, Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::PtraceSyscall(_)) => return Ok(()),
            Ok(WaitStatus::Stopped(_, s)) => {
                ptrace::syscall(p, Some(s)).map_err(terr(tid, "PTRACE_SYSCALL"))?
            }
            Ok(ws @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                return Err(died(tid, ws));
            }
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(terr(tid, "waitpid")(e)),
        }
    }
}

fn syscall_on(tid: i32) -> Result<(), RestoreError> {
    ptrace::syscall(Pid::from_raw(tid), None).map_err(terr(tid, "PTRACE_SYSCALL"))
}

fn sigmask(pid: i32, req: libc::c_uint, mask: &mut u64) -> Result<(), RestoreError> {
    // SAFETY: the kernel reads or writes one 8-byte mask in a live local.
    let r = unsafe { libc::ptrace(req, pid, 8usize, mask as *mut u64) };
    if r < 0 {
        return Err(terr(pid, "PTRACE_{GET,SET}SIGMASK")(Errno::last()));
    }
    Ok(())
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
            await_syscall_stop(*tid)?;
            let info = syscall_info(*tid)?;
            match info.op {
                SYSCALL_INFO_ENTRY => *last_nr = info.data[0],
                SYSCALL_INFO_EXIT if *last_nr == nr::RT_SIGRETURN as u64 => {
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
    let mut saved = Vec::with_capacity(tasks.len());
    for t in tasks {
        let (pid, p) = (t.pid, Pid::from_raw(t.pid));
        let regs = ptrace::getregs(p).map_err(terr(pid, "PTRACE_GETREGS"))?;
        let mut mask = 0u64;
        sigmask(pid, PTRACE_GETSIGMASK, &mut mask)?;
        let mut all = !0u64;
        sigmask(pid, PTRACE_SETSIGMASK, &mut all)?;
        let mut r = regs;
        r.rip = t.syscall_insn;
        r.rax = nr::MUNMAP as u64;
        r.orig_rax = u64::MAX;
        r.rdi = t.restorer.0;
        r.rsi = t.restorer.1;
        ptrace::setregs(p, r).map_err(terr(pid, "PTRACE_SETREGS"))?;
        syscall_on(pid)?;
        saved.push((regs, mask));
    }
    for t in tasks {
        await_syscall_stop(t.pid)?; // entry of munmap
        syscall_on(t.pid)?;
    }
    for (t, (regs, mut mask)) in tasks.iter().zip(saved) {
        let (pid, p) = (t.pid, Pid::from_raw(t.pid));
        await_syscall_stop(pid)?; // exit of munmap
        let after = ptrace::getregs(p).map_err(terr(pid, "PTRACE_GETREGS"))?;
        if after.rax != 0 {
            tracing::warn!(pid, ret = after.rax as i64, "unmapping the restorer failed");
        }
        ptrace::setregs(p, regs).map_err(terr(pid, "PTRACE_SETREGS"))?;
        sigmask(pid, PTRACE_SETSIGMASK, &mut mask)?;
    }
    for t in tasks {
        for &tid in &t.threads {
            ptrace::detach(Pid::from_raw(tid), None).map_err(terr(tid, "PTRACE_DETACH"))?;
        }
        let sig = t.stop_signal.and_then(|s| Signal::try_from(s).ok());
        ptrace::detach(Pid::from_raw(t.pid), sig).map_err(terr(t.pid, "PTRACE_DETACH"))?;
    }
    Ok(())
}
