//! What can go wrong: talking to a running parasite ([`RpcError`]) and infecting or curing
//! a task ([`InfectError`]).

use std::time::Duration;

use compel_proto::blob::BlobError;
use nix::errno::Errno;

use crate::TaskError;

/// Errors of the RPC layer: talking to a running parasite.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The parasite closed its control socket (it died, or cured itself).
    #[error("task {pid}: parasite closed the control socket")]
    Closed {
        /// The task.
        pid: i32,
    },
    /// No answer in time.
    #[error("task {pid}: no {what} from the parasite within {after:?}")]
    Timeout {
        /// The task.
        pid: i32,
        /// What was awaited.
        what: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// A socket operation failed.
    #[error("task {pid}: control socket {op} failed")]
    Socket {
        /// The task.
        pid: i32,
        /// `"send"`, `"recv"`, `"poll"`.
        op: &'static str,
        /// The kernel's error.
        #[source]
        source: Errno,
    },
    /// The parasite ran the command and it failed with this errno.
    #[error("task {pid}: parasite command {cmd} failed: {errno}")]
    Failed {
        /// The task.
        pid: i32,
        /// The command.
        cmd: u32,
        /// The errno the parasite reported.
        errno: Errno,
    },
    /// The parasite answered something that is not the answer to the command.
    #[error("task {pid}: bad answer to command {cmd}: {what}")]
    BadReply {
        /// The task.
        pid: i32,
        /// The command.
        cmd: u32,
        /// What was wrong.
        what: &'static str,
    },
    /// An fd message was malformed.
    #[error("task {pid}: bad fd message: {what}")]
    BadFds {
        /// The task.
        pid: i32,
        /// What was wrong.
        what: &'static str,
    },
    /// The thread running the parasite stopped or died instead of answering (a fault in the
    /// parasite, a signal it could not block).
    #[error("task {pid}: parasite thread {tid} stopped ({stop})")]
    ThreadStopped {
        /// The task.
        pid: i32,
        /// The thread.
        tid: i32,
        /// How it stopped.
        stop: String,
    },
    /// Arguments or results do not fit the payload area.
    #[error("task {pid}: {need} bytes do not fit the {have}-byte payload area")]
    PayloadTooSmall {
        /// The task.
        pid: i32,
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// A trap-mode command failed in a way other than its own errno.
    #[error("task {pid}: trap-mode run in thread {tid} failed")]
    Trap {
        /// The task.
        pid: i32,
        /// The thread.
        tid: i32,
        /// Why.
        #[source]
        source: TaskError,
    },
    /// The parasite was already cured (or never started).
    #[error("task {pid}: no parasite is running")]
    NotRunning {
        /// The task.
        pid: i32,
    },
}

impl RpcError {
    /// The errno a failed command reported, if that is what happened.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            RpcError::Failed { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// Errors of infecting and curing.
#[derive(Debug, thiserror::Error)]
pub enum InfectError {
    /// Task control (ptrace, remote memory, remote syscalls) failed.
    #[error(transparent)]
    Task(#[from] TaskError),
    /// A syscall run inside the task failed.
    #[error("task {pid}: remote {call} failed")]
    RemoteSyscall {
        /// The task.
        pid: i32,
        /// The syscall.
        call: &'static str,
        /// Its errno.
        #[source]
        source: Errno,
    },
    /// An fd of the task could not be copied here.
    #[error("task {pid}: cannot take its fd {fd}")]
    TakeFd {
        /// The task.
        pid: i32,
        /// The fd number in the task.
        fd: i32,
        /// The error.
        #[source]
        source: Errno,
    },
    /// Shared memory could not be set up on the host side.
    #[error("task {pid}: cannot map the shared region here ({what})")]
    HostMap {
        /// The task.
        pid: i32,
        /// Which step.
        what: &'static str,
        /// The error.
        #[source]
        source: Errno,
    },
    /// The blob is malformed or lacks something.
    #[error("blob: {0}")]
    Blob(BlobError),
    /// The saved state cannot be turned into a signal frame.
    #[error("task {pid}: cannot build the signal frame ({what})")]
    Sigframe {
        /// The task.
        pid: i32,
        /// Why.
        what: &'static str,
    },
    /// Talking to the parasite failed.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The parasite did not return into the task as expected; the host restored the state
    /// itself.
    #[error("task {pid}: parasite did not return through its frame ({what})")]
    Cure {
        /// The task.
        pid: i32,
        /// What happened instead.
        what: String,
    },
}
