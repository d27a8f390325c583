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
    /// A pagemap entry that starts before the one ahead of it ends: entries are in address
    /// order and disjoint, so one page is never filled twice.
    #[error(
        "image {file}: pages at {vaddr:#x} overlap the entry before, which ends at {prev_end:#x}"
    )]
    PagemapOverlap {
        /// The pagemap image.
        file: String,
        /// The entry's first page.
        vaddr: u64,
        /// Where the entry before it ends.
        prev_end: u64,
    },
    /// Pagemap pages outside every memory area of the task, or not page-aligned.
    #[error("image {file}: pages {vaddr:#x}-{end:#x} lie outside the task's areas")]
    PagemapOutside {
        /// The pagemap image.
        file: String,
        /// The entry's first page.
        vaddr: u64,
        /// Its end.
        end: u64,
    },
    /// An open file in the images in a state its kind cannot bring back (a hugetlb memfd, an
    /// inotify watch whose inode changed, a FIFO path that is no longer a FIFO, ...).
    #[error("unsupported: {what}")]
    FileState {
        /// The file kind (`memfd`, `fifo`, `inotify`, `pidfd`, ...).
        kind: &'static str,
        /// What, naming the file and the state.
        what: String,
    },
    // Image content this restore does not handle.
    /// A task of another architecture.
    #[error("unsupported: architecture {mtype} in {file}")]
    Arch {
        /// The `mtype` of the core image.
        mtype: i32,
        /// The core image.
        file: String,
    },
    /// A 32-bit (compat) task.
    #[error("unsupported: a 32-bit (compat) task")]
    Compat,
    /// A task state other than alive or stopped.
    #[error("unsupported: task state {state} in {file} (only alive and stopped tasks)")]
    TaskState {
        /// The state in the core image.
        state: u32,
        /// The core image.
        file: String,
    },
    /// Seccomp state in the old (per-task) layout.
    #[error("unsupported: seccomp mode {mode} in the task core of {file} (an old image layout)")]
    OldSeccomp {
        /// The mode.
        mode: i32,
        /// The core image.
        file: String,
    },
    /// The parent images of an incremental dump cannot give the pages it leaves to them.
    #[error("broken parent images chain at {}: {reason}", dir.display())]
    ParentChain {
        /// The images directory where the chain breaks.
        dir: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A memory area of a kind this restore does not make.
    #[error("unsupported: {what} at {start:#x}")]
    Vma {
        /// The kind of area.
        what: &'static str,
        /// Its start.
        start: u64,
    },
    // Files.
    /// A descriptor of a file type no kind restores.
    #[error("unsupported: fd {fd} of type {ty}")]
    FdType {
        /// The descriptor.
        fd: i32,
        /// The `fd_types` value.
        ty: i32,
    },
    /// A file lock of a kind this restore does not take again.
    #[error("unsupported: a file lock of kind {flag} in {file}")]
    LockKind {
        /// The kind in the image.
        flag: u32,
        /// The image.
        file: String,
    },
    /// An open file that depends on itself.
    #[error("unsupported: an open file of type {kind} that depends on itself")]
    SelfDependent {
        /// The kind's name.
        kind: String,
    },
    /// An epoll instance watching files, shared by several processes.
    #[error("unsupported: an epoll instance watching files, shared by several processes")]
    SharedEpoll,
    /// A shared epoll instance watching a descriptor its holder does not have.
    #[error(
        "bad image: epoll of {pid}, shared by several processes, watches fd {fd}, which {pid} does not hold"
    )]
    SharedEpollTarget {
        /// The first process holding the epoll instance.
        pid: i32,
        /// The target descriptor.
        fd: i32,
    },
    /// A unix socket the set of sockets did not make.
    #[error("unsupported: unix socket id {id} was not made")]
    UnixNotMade {
        /// The socket's id.
        id: u32,
    },
    /// A socket this restore cannot make again (the socket error says which).
    #[error("unsupported: {0}")]
    Socket(crate::files::socket::SocketError),
    // Tree shape.
    /// A session leader in a group it does not lead.
    #[error("unsupported: pid {pid} leads session {sid} but is in group {pgid}")]
    SessionLeaderInGroup {
        /// The task.
        pid: i32,
        /// Its session.
        sid: i32,
        /// Its group.
        pgid: i32,
    },
    /// A task in a session no task of the tree leads.
    #[error(
        "unsupported: pid {pid} is in session {sid}, its parent {parent} in session {parent_sid} \
         (no task of the tree leads it)"
    )]
    SessionUnreachable {
        /// The task.
        pid: i32,
        /// Its session.
        sid: i32,
        /// Its parent.
        parent: i32,
        /// The parent's session.
        parent_sid: i32,
    },
    /// A task in a group whose leader is not restored before it.
    #[error(
        "unsupported: pid {pid} is in process group {pgid}, which has no leader restored before it"
    )]
    GroupUnreachable {
        /// The task.
        pid: i32,
        /// Its group.
        pgid: i32,
    },
    // Seccomp.
    /// A task under seccomp, and criu lacks CAP_SYS_ADMIN.
    #[error("unsupported: task {pid} runs under seccomp: restoring it needs CAP_SYS_ADMIN")]
    SeccompNeedsAdmin {
        /// The task.
        pid: i32,
    },
    /// Tracing a task under seccomp was refused (`PTRACE_O_SUSPEND_SECCOMP`).
    #[error(
        "unsupported: task {pid} runs under seccomp: restoring it needs CAP_SYS_ADMIN \
         (PTRACE_O_SUSPEND_SECCOMP)"
    )]
    SeccompSuspend {
        /// The task.
        pid: i32,
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
    /// The tree's mount namespace could not be made.
    #[error(transparent)]
    Mount(#[from] crate::namespaces::mnt::MntError),
    /// The tree's network namespace could not be made.
    #[error(transparent)]
    Net(#[from] crate::namespaces::net::NetError),
    /// The pidfile could not be written.
    #[error(transparent)]
    Pidfile(#[from] crate::pidfile::PidfileError),
    /// A namespace of the images that cannot be rebuilt, or failed to be (the error names the
    /// kind).
    #[error(transparent)]
    Namespace(#[from] crate::namespaces::NsError),
    /// Lazy restore could not be set up (`--lazy-pages`).
    #[error(transparent)]
    Lazy(#[from] crate::lazy::LazyError),
}

impl RestoreError {
    /// The errno an RPC reply carries for this error (`cr_errno`): `EOPNOTSUPP` for state this
    /// restore does not bring back, `EBADMSG` for images that do not decode or contradict
    /// themselves, `EPERM` for a privilege criu lacks, `ESRCH` for a task that died, the OS
    /// error where one is carried.
    pub fn errno(&self) -> i32 {
        match self {
            RestoreError::Image { error, .. } => crate::errno::image(error),
            RestoreError::BadImage { .. }
            | RestoreError::PagemapOverlap { .. }
            | RestoreError::PagemapOutside { .. }
            | RestoreError::SharedEpollTarget { .. }
            | RestoreError::ParentChain { .. } => libc::EBADMSG,
            RestoreError::MissingFile { source, .. } => crate::errno::io(source),
            RestoreError::FileChanged { .. } => libc::ESTALE,
            RestoreError::PidBusy { .. } => libc::EEXIST,
            RestoreError::Rlimit { .. }
            | RestoreError::SeccompNeedsAdmin { .. }
            | RestoreError::SeccompSuspend { .. } => libc::EPERM,
            RestoreError::NoRoom { .. } => libc::ENOMEM,
            RestoreError::Blob { .. } => libc::EINVAL,
            RestoreError::Io { error, .. } => crate::errno::io(error),
            RestoreError::Sys { errno, .. }
            | RestoreError::Clone { errno, .. }
            | RestoreError::Task { errno, .. }
            | RestoreError::Trace { errno, .. } => *errno as i32,
            RestoreError::Timeout { .. } => libc::ETIMEDOUT,
            RestoreError::Died { .. } => libc::ESRCH,
            RestoreError::Namespace(e) => e.errno(),
            RestoreError::Lazy(e) => e.errno(),
            RestoreError::Script(e) => e.errno(),
            RestoreError::Mount(e) => e.errno(),
            RestoreError::Net(e) => e.errno(),
            RestoreError::Pidfile(e) => e.errno(),
            RestoreError::Socket(e) => e.errno(),
            RestoreError::FileState { .. }
            | RestoreError::Fpu { .. }
            | RestoreError::Vdso { .. }
            | RestoreError::Arch { .. }
            | RestoreError::Compat
            | RestoreError::TaskState { .. }
            | RestoreError::OldSeccomp { .. }
            | RestoreError::Vma { .. }
            | RestoreError::FdType { .. }
            | RestoreError::LockKind { .. }
            | RestoreError::SelfDependent { .. }
            | RestoreError::SharedEpoll
            | RestoreError::UnixNotMade { .. }
            | RestoreError::SessionLeaderInGroup { .. }
            | RestoreError::SessionUnreachable { .. }
            | RestoreError::GroupUnreachable { .. } => libc::EOPNOTSUPP,
        }
    }

    /// A failed system call of the engine: `what` it did, with the last errno.
    pub(crate) fn last_sys(what: &'static str) -> RestoreError {
        RestoreError::Sys {
            what,
            errno: Errno::last(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_say_not_supported_and_read_as_before() {
        let e = RestoreError::GroupUnreachable { pid: 7, pgid: 5 };
        assert_eq!(e.errno(), libc::EOPNOTSUPP);
        assert_eq!(
            e.to_string(),
            "unsupported: pid 7 is in process group 5, which has no leader restored before it"
        );
        let e = RestoreError::Vma {
            what: "an irregular area",
            start: 0x1000,
        };
        assert_eq!(e.to_string(), "unsupported: an irregular area at 0x1000");
        assert_eq!(RestoreError::Compat.errno(), libc::EOPNOTSUPP);
        assert_eq!(RestoreError::SharedEpoll.errno(), libc::EOPNOTSUPP);
    }

    #[test]
    fn privileges_bad_images_and_dead_tasks_have_their_own_errno() {
        assert_eq!(
            RestoreError::SeccompNeedsAdmin { pid: 1 }.errno(),
            libc::EPERM
        );
        let bad = RestoreError::BadImage {
            file: "core-1.img".into(),
            reason: "no task core".into(),
        };
        assert_eq!(bad.errno(), libc::EBADMSG);
        let died = RestoreError::Died {
            pid: 1,
            status: "killed by signal 9".into(),
        };
        assert_eq!(died.errno(), libc::ESRCH);
        assert_eq!(RestoreError::PidBusy { pid: 1 }.errno(), libc::EEXIST);
    }

    #[test]
    fn os_errors_carried_are_passed_on() {
        let e = RestoreError::Clone {
            pid: 1,
            errno: Errno::EEXIST,
        };
        assert_eq!(e.errno(), libc::EEXIST);
        let e = RestoreError::Io {
            what: "opening".into(),
            error: std::io::Error::from_raw_os_error(libc::EACCES),
        };
        assert_eq!(e.errno(), libc::EACCES);
        let e = RestoreError::Image {
            file: "inventory.img".into(),
            error: criu_images::ImageError::Io {
                file: "inventory.img".into(),
                op: "open",
                source: std::io::Error::from_raw_os_error(libc::ENOENT),
            },
        };
        assert_eq!(e.errno(), libc::ENOENT);
    }
}
