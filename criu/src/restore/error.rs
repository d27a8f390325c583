//! The error of a restore.

use std::path::PathBuf;

use nix::errno::Errno;

use crate::scripts::ScriptError;

/// `": CAUSE"` for an image error that has an underlying (OS) error.
fn os_cause(e: &criu_images::ImageError) -> String {
    std::error::Error::source(e).map_or(String::new(), |c| format!(": {c}"))
}

/// What went wrong in a restore.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// An image cannot be read or decoded (the reader's message names the file, and the
    /// message ends with the OS error, if any: it is not a separate cause, so that a printed
    /// chain of causes does not say it twice).
    #[error("reading images: {error}{}", os_cause(error))]
    Image {
        /// The image file.
        file: String,
        /// The reader's error.
        error: criu_images::ImageError,
    },
    /// An image decodes but its content is wrong.
    #[error("image {file}: {reason}")]
    BadImage {
        /// The image file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// The images hold state this restore cannot bring back.
    #[error("unsupported: {what}")]
    Unsupported {
        /// What.
        what: String,
    },
    /// A file the task had open or mapped is missing.
    #[error("file {path} is missing")]
    MissingFile {
        /// The file.
        path: PathBuf,
        /// The lookup error.
        #[source]
        source: std::io::Error,
    },
    /// A file the task mapped changed since the dump.
    #[error("file {path} changed since the dump: {found} bytes, {expected} expected")]
    FileChanged {
        /// The file.
        path: PathBuf,
        /// The size at dump time.
        expected: u64,
        /// The size now.
        found: u64,
    },
    /// The pid is taken.
    #[error("pid {pid} is in use")]
    PidBusy {
        /// The pid.
        pid: i32,
    },
    /// A resource limit cannot be restored here.
    #[error(
        "rlimit {resource}: hard limit {wanted} is above ours ({have}) and we lack CAP_SYS_RESOURCE"
    )]
    Rlimit {
        /// The resource number.
        resource: usize,
        /// The saved hard limit.
        wanted: u64,
        /// Our hard limit.
        have: u64,
    },
    /// The FPU state does not fit this CPU.
    #[error("fpu state: {reason}")]
    Fpu {
        /// Why.
        reason: String,
    },
    /// The vDSO of this kernel does not match the task's.
    #[error("vdso: {reason}")]
    Vdso {
        /// Why.
        reason: String,
    },
    /// No free address range for the restorer and the premapped memory.
    #[error("no free address range of {size:#x} bytes for the restore")]
    NoRoom {
        /// The size needed.
        size: u64,
    },
    /// The restorer blob is unusable.
    #[error("restorer blob: {reason}")]
    Blob {
        /// Why.
        reason: String,
    },
    /// An I/O error in criu itself (the OS error is part of the message, not a separate cause).
    #[error("{what}: {error}")]
    Io {
        /// What criu was doing.
        what: String,
        /// The error.
        error: std::io::Error,
    },
    /// A system call in criu itself failed.
    #[error("{what}: {errno}")]
    Sys {
        /// What criu was doing.
        what: &'static str,
        /// The error.
        errno: Errno,
    },
    /// The task could not be created with its pid.
    #[error("cannot create pid {pid}: {errno}")]
    Clone {
        /// The pid.
        pid: i32,
        /// The error.
        errno: Errno,
    },
    /// The task failed while restoring itself.
    #[error("pid {pid}: {stage} failed: {errno} (detail {detail:#x})")]
    Task {
        /// The pid.
        pid: i32,
        /// The step.
        stage: &'static str,
        /// The error.
        errno: Errno,
        /// The address, fd or signal involved.
        detail: u64,
    },
    /// The task did not finish restoring itself in time (it was killed).
    #[error("pid {pid} did not finish restoring in time")]
    Timeout {
        /// The pid.
        pid: i32,
    },
    /// The task died while being restored.
    #[error("pid {pid} died during restore: {status}")]
    Died {
        /// The pid.
        pid: i32,
        /// How.
        status: String,
    },
    /// Tracing the task at the end of the restore failed.
    #[error("pid {pid}: {what}: {errno}")]
    Trace {
        /// The pid.
        pid: i32,
        /// The step.
        what: &'static str,
        /// The error.
        errno: Errno,
    },
    /// An action script failed.
    #[error(transparent)]
    Script(#[from] ScriptError),
    /// The pidfile could not be written.
    #[error(transparent)]
    Pidfile(#[from] crate::pidfile::PidfileError),
}

impl RestoreError {
    /// A failed system call of the engine: `what` it did, with the last errno.
    pub(crate) fn last_sys(what: &'static str) -> RestoreError {
        RestoreError::Sys {
            what,
            errno: Errno::last(),
        }
    }
}
