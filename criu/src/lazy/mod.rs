//! Lazy restore (post-copy): `criu restore --lazy-pages` and `criu lazy-pages`.
//!
//! A lazy restore leaves the saved pages of the tree's private anonymous memory where they
//! are (the images, or a remote `criu page-server --lazy-pages` / `criu dump --lazy-pages`)
//! and registers those areas of every restored task with a userfaultfd in missing-page mode
//! instead. The tasks resume at once; the first touch of such a page stops the thread until
//! `criu lazy-pages` has copied the page in, and the daemon pushes every other page in the
//! background once the restore has finished, then exits.
//!
//! What is lazy is decided the same way on both sides, from `mm-PID.img` and
//! `pagemap-PID.img` alone ([`images::TaskLazy`]): the pages of entries marked `PE_LAZY` that
//! lie in private anonymous areas which neither grow down (the main stack is restored at once)
//! nor are locked. Whole areas holding such pages are registered; a fault on a page of theirs
//! that holds no saved data gets a zero page, as it would have without the restore.
//!
//! The restore hands each task's userfaultfd to the daemon over `lazy-pages.socket` in the
//! work directory with CRIU's message layout: a native `i32` pid, then one byte carrying the
//! descriptor as `SCM_RIGHTS`; a negative pid (a zombie) carries none; the restore ends with
//! the `u32` [`RESTORE_FINISHED`]. Unlike CRIU, each task sends on a connection of its own (so
//! the tasks of a tree need no lock among them); the daemon takes any number of connections.
//!
//! If the daemon dies before every page is in, the tasks would otherwise read zeros where
//! their data was (the kernel drops the registration with the last descriptor): a watchdog
//! process the daemon forks holds a copy of every descriptor and, when the daemon is gone
//! without having said it finished, kills the restored tasks and everything they forked
//! before letting go. So a task either gets its page or dies of `SIGKILL`; it never hangs on
//! a fault and never runs on with wrong memory. See [`daemon`].

pub mod daemon;
pub(crate) mod images;
mod recv;
pub(crate) mod restore;
mod source;
mod task;
pub(crate) mod uffd;
mod watchdog;

pub use daemon::{LazyOptions, run_lazy_pages, run_lazy_pages_with};

/// The socket's name in the work directory (CRIU's `LAZY_PAGES_SOCK_NAME`).
pub const SOCKET_NAME: &str = "lazy-pages.socket";

/// Sent by the restore once every task is restored (CRIU's `LAZY_PAGES_RESTORE_FINISHED`).
pub const RESTORE_FINISHED: u32 = 0x5253_5446;

/// Errors of lazy restore and of the lazy-pages daemon.
#[derive(Debug, thiserror::Error)]
pub enum LazyError {
    /// A socket or file operation failed.
    #[error("lazy pages: {what}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An image is missing or wrong.
    #[error("lazy pages: {file}: {reason}")]
    Image {
        /// The image file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// The other side broke the protocol.
    #[error("lazy pages: {0}")]
    Protocol(String),
    /// A userfaultfd operation on a task failed.
    #[error("lazy pages: {what} of task {pid}: errno {errno}")]
    Uffd {
        /// What was being done.
        what: &'static str,
        /// The task (its pid in the images).
        pid: i32,
        /// The errno.
        errno: i32,
    },
    /// The remote page server failed.
    #[error(transparent)]
    PageServer(#[from] crate::pageserver::PageServerError),
    /// An action script failed at `status-ready`.
    #[error("lazy pages: status-ready")]
    StatusReady(#[source] crate::scripts::ScriptError),
}

impl LazyError {
    /// The errno an RPC reply carries.
    pub fn errno(&self) -> i32 {
        match self {
            LazyError::Io { source, .. } => crate::errno::io(source),
            LazyError::Image { .. } => libc::EINVAL,
            LazyError::Protocol(_) => libc::EPROTO,
            LazyError::Uffd { errno, .. } => *errno,
            LazyError::PageServer(e) => e.errno(),
            LazyError::StatusReady(e) => e.errno(),
        }
    }
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LazyError {
    let what = what.into();
    move |source| LazyError::Io { what, source }
}
