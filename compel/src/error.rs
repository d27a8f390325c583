//! The task-control error type.

use nix::errno::Errno;

use crate::RemoteAddr;

/// Everything that can go wrong while seizing, inspecting, driving or releasing a task.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// No task with this pid exists.
    #[error("no such task {pid}")]
    NoSuchTask {
        /// The pid asked for.
        pid: i32,
    },
    /// The task has exited and waits to be reaped: there is nothing left to seize.
    #[error("task {pid} is a zombie")]
    Zombie {
        /// The task.
        pid: i32,
    },
    /// The task is already traced by another process.
    #[error("task {pid} is already traced by pid {tracer}")]
    TracedByOther {
        /// The task.
        pid: i32,
        /// Its tracer.
        tracer: i32,
    },
    /// The kernel refused to let us trace the task (other user, not dumpable, Yama, LSM...).
    #[error("permission denied to trace task {pid}")]
    PermissionDenied {
        /// The task.
        pid: i32,
        /// The error of the refused request.
        #[source]
        source: Errno,
    },
    /// The task is under seccomp (a filter, or strict mode) and suspending it (`PTRACE_O_SUSPEND_SECCOMP`) needs
    /// `CAP_SYS_ADMIN`, which we lack; remote syscalls would otherwise be filtered.
    #[error("task {tid} is under seccomp; suspending it needs CAP_SYS_ADMIN (run as root)")]
    SeccompNeedsCapSysAdmin {
        /// The thread with the filter.
        tid: i32,
    },
    /// The task died while we worked on it. compel's wait saw the death; if the task was a
    /// child of this process, that wait also reaped it, and `how` is all that is left of its
    /// exit status.
    #[error("task {tid} died ({how})")]
    Died {
        /// The thread that was found dead.
        tid: i32,
        /// "exited with status N" or "killed by signal N".
        how: String,
    },
    /// A thread id that is not one of this task's seized threads.
    #[error("thread {tid} is not a seized thread of task {pid}")]
    NotOurThread {
        /// The task.
        pid: i32,
        /// The thread asked for.
        tid: i32,
    },
    /// A ptrace request failed.
    #[error("ptrace {op} on thread {tid}")]
    Ptrace {
        /// The request, e.g. `"GETREGS"`.
        op: &'static str,
        /// The thread.
        tid: i32,
        /// The kernel's error.
        #[source]
        source: Errno,
    },
    /// waitpid on a thread failed.
    #[error("waitpid on thread {tid}")]
    Wait {
        /// The thread.
        tid: i32,
        /// The kernel's error.
        #[source]
        source: Errno,
    },
    /// The thread stopped in a way the operation did not expect.
    #[error("thread {tid}: unexpected stop {stop} during {during}")]
    UnexpectedStop {
        /// The thread.
        tid: i32,
        /// The stop, as [`crate::ptrace::Stop`] prints it.
        stop: String,
        /// What we were doing.
        during: &'static str,
    },
    /// Reading or writing the task's memory failed.
    #[error("task {pid}: cannot {op} {len} bytes at {addr}")]
    Memory {
        /// The task.
        pid: i32,
        /// `"read"` or `"write"`.
        op: &'static str,
        /// Where.
        addr: RemoteAddr,
        /// How many bytes.
        len: usize,
        /// The error of the last method tried.
        #[source]
        source: std::io::Error,
    },
    /// A /proc file of the task could not be read or made no sense.
    #[error("cannot read {path}")]
    Proc {
        /// The file.
        path: String,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// No executable `syscall` instruction could be found or planted in the task.
    #[error("task {pid}: no place to run a syscall from ({why})")]
    NoSyscallSite {
        /// The task.
        pid: i32,
        /// Why.
        why: &'static str,
    },
    /// The thread runs in a mode compel does not drive (e.g. a 32-bit compat task).
    #[error("thread {tid}: {why}")]
    Unsupported {
        /// The thread.
        tid: i32,
        /// What is not supported.
        why: &'static str,
    },
    /// The kernel's xsave area for the thread has an unexpected size.
    #[error("thread {tid}: xsave area of {got} bytes, expected {expected}")]
    XsaveSize {
        /// The thread.
        tid: i32,
        /// What the caller gave or the kernel returned.
        got: usize,
        /// What was expected.
        expected: usize,
    },
}

impl TaskError {
    pub(crate) fn ptrace(op: &'static str, tid: i32) -> impl FnOnce(Errno) -> TaskError {
        move |source| TaskError::Ptrace { op, tid, source }
    }

    /// Whether the error means the task (or thread) no longer exists.
    pub fn is_gone(&self) -> bool {
        matches!(
            self,
            TaskError::NoSuchTask { .. }
                | TaskError::Zombie { .. }
                | TaskError::Died { .. }
                | TaskError::Ptrace {
                    source: Errno::ESRCH,
                    ..
                }
        )
    }
}
