//! The errors of a dump, and the errno an RPC reply carries for each.

use std::path::PathBuf;

use compel::TaskError;

use criu_images::ImageError;

use crate::scripts::ScriptError;

use super::proc;

/// Errors of a dump.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// No `-t PID`.
    #[error("no pid to dump: use -t PID")]
    NoPid,
    /// The pid does not exist.
    #[error("no process {pid} to dump")]
    NoProcess {
        /// The pid.
        pid: i32,
    },
    /// The process is a zombie.
    #[error("process {pid} is a zombie")]
    Zombie {
        /// The pid.
        pid: i32,
    },
    /// The tree kept changing while it was being frozen.
    #[error("process tree of {pid} not stable: {what}")]
    Unstable {
        /// The process where the change was seen.
        pid: i32,
        /// What changed.
        what: String,
    },
    /// Seizing failed.
    #[error("cannot seize process {pid}")]
    Seize {
        /// The pid.
        pid: i32,
        /// Why.
        #[source]
        source: TaskError,
    },
    /// Registers could not be read.
    #[error("cannot read the registers of {pid}")]
    Registers {
        /// The pid.
        pid: i32,
        /// Why.
        #[source]
        source: TaskError,
    },
    /// A ptrace request criu makes itself (rseq, pending signals) failed.
    #[error("ptrace {what} on {pid}")]
    Ptrace {
        /// The thread.
        pid: i32,
        /// The request.
        what: &'static str,
        /// The kernel's error.
        #[source]
        source: nix::errno::Errno,
    },
    /// A remote syscall could not run.
    #[error("remote {what} in {pid}")]
    Remote {
        /// The pid.
        pid: i32,
        /// Which call.
        what: &'static str,
        /// Why.
        #[source]
        source: TaskError,
    },
    /// A remote syscall failed.
    #[error("remote {what} in {pid} failed with errno {errno}")]
    RemoteFailed {
        /// The pid.
        pid: i32,
        /// Which call.
        what: &'static str,
        /// The errno.
        errno: i32,
    },
    /// `/proc` reading failed.
    #[error(transparent)]
    Proc(#[from] proc::ProcError),
    /// A file operation failed.
    #[error("{what}")]
    File {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A process sharing its descriptor table or fs info with one that is not its parent or
    /// child (the restore can only share them along the tree).
    #[error("unsupported: {pid} shares its {table} with {other}, which is not its parent or child")]
    SharedTable {
        /// The process.
        pid: i32,
        /// What it shares: its descriptor table or its fs info.
        table: &'static str,
        /// The process it shares it with.
        other: i32,
    },
    /// An open file in a state its kind does not handle (a memfd that is mapped, a FIFO removed
    /// while open, a pidfd of a process outside the holder's subtree, ...).
    #[error("unsupported: {what}")]
    FileState {
        /// The file kind (`memfd`, `fifo`, `inotify`, `pidfd`, `nsfs`, ...).
        kind: &'static str,
        /// What, naming the process, the descriptor and the state.
        what: String,
    },
    // Files: a kind, a state or a sharing of an open file that is not handled.
    /// A descriptor no file kind takes.
    #[error("unsupported: {}", refused_fd(*pid, *fd, name))]
    FdKind {
        /// The process.
        pid: i32,
        /// The descriptor.
        fd: i32,
        /// What `/proc/PID/fd/FD` links to.
        name: String,
    },
    /// A descriptor's fdinfo has a value its kind cannot parse.
    #[error("unsupported: fd {fd} of {pid} ({kind}): cannot parse {what} in its fdinfo")]
    Fdinfo {
        /// The process.
        pid: i32,
        /// The descriptor.
        fd: i32,
        /// The kind (`[eventfd]`, ...).
        kind: String,
        /// The value.
        what: String,
    },
    /// A descriptor the socket kind was asked to dump without claiming it.
    #[error("unsupported: fd {fd} of {pid}: not claimed by the socket kind")]
    NotClaimed {
        /// The process.
        pid: i32,
        /// The descriptor.
        fd: i32,
    },
    /// A deleted file that is neither regular, a directory nor a device node.
    #[error(
        "unsupported: deleted special file {} (only regular files, directories, device nodes and fifos)",
        path.display()
    )]
    DeletedSpecial {
        /// The file.
        path: PathBuf,
    },
    /// A deleted file too large to be saved in the images.
    #[error(
        "unsupported: deleted file {} of {size} bytes is over the ghost limit {limit} (--ghost-limit)",
        path.display()
    )]
    GhostLimit {
        /// The file.
        path: PathBuf,
        /// Its size on disk.
        size: u64,
        /// `--ghost-limit`.
        limit: u64,
    },
    /// A file mapped into memory that is not a regular file.
    #[error("unsupported: mapping of non-regular file {name} at {start:#x}")]
    MappedNotRegular {
        /// The file's name in `/proc/PID/maps`.
        name: String,
        /// The start of the mapping.
        start: compel::RemoteAddr,
    },
    /// A file lock of a class that is not dumped (a lease, ...).
    #[error(
        "unsupported: fd {fd} of {pid} holds a {class} lock (only flock, POSIX and OFD locks are dumped)"
    )]
    LockClass {
        /// The process.
        pid: i32,
        /// The descriptor.
        fd: i32,
        /// The class in fdinfo.
        class: String,
    },
    /// A file lock of a type that is not dumped.
    #[error("unsupported: fd {fd} of {pid} holds a {class} lock of type {ty}")]
    LockType {
        /// The process.
        pid: i32,
        /// The descriptor.
        fd: i32,
        /// The class in fdinfo.
        class: String,
        /// The type in fdinfo.
        ty: String,
    },
    /// File locks held without `--file-locks`.
    #[error("unsupported: pid {pid} holds file locks (fd {fd} first); dump them with --file-locks")]
    FileLocks {
        /// The process.
        pid: i32,
        /// Its first descriptor with a lock.
        fd: i32,
    },
    /// An epoll instance watches a file that no descriptor holds any more.
    #[error(
        "unsupported: fd {fd} of {pid} (epoll) watches a file no descriptor holds (added as fd {target})"
    )]
    EpollTarget {
        /// The process.
        pid: i32,
        /// The epoll descriptor.
        fd: i32,
        /// The descriptor number the target was added with.
        target: u32,
    },
    /// A socket in a state that is not dumped (the socket error says which).
    #[error("unsupported: {0}")]
    Socket(crate::files::socket::SocketError),
    // Tree shape, namespaces.
    /// A namespace that cannot be dumped, or failed to (the error names the kind and task).
    #[error(transparent)]
    Namespace(#[from] crate::namespaces::NsError),
    // Memory.
    /// A uprobes area.
    #[error("unsupported: uprobes vma {start:#x}-{end:#x}")]
    Uprobes {
        /// Start.
        start: compel::RemoteAddr,
        /// End.
        end: compel::RemoteAddr,
    },
    /// A shared anonymous mapping of a kind not dumped.
    #[error("unsupported: shared anonymous mapping {start:#x}-{end:#x} of {pid}")]
    SharedAnon {
        /// The process.
        pid: i32,
        /// Start.
        start: compel::RemoteAddr,
        /// End.
        end: compel::RemoteAddr,
    },
    /// A System V shared memory mapping.
    #[error("unsupported: shared memory mapping {name} at {start:#x} of {pid}")]
    SysvShm {
        /// The process.
        pid: i32,
        /// The name in `/proc/PID/maps`.
        name: String,
        /// Start.
        start: compel::RemoteAddr,
    },
    /// Shared anonymous memory with pages outside every mapping of it.
    #[error(
        "unsupported: shared anonymous memory {shmid} holds pages at offset {offset:#x}, \
         outside every mapping of it (a mapping shrunk with mremap)"
    )]
    ShmemOutside {
        /// The object's id.
        shmid: u64,
        /// The offset of the first such page.
        offset: u64,
    },
    // Seccomp.
    /// The seccomp filters of a thread cannot be read.
    #[error(
        "unsupported: thread {tid} runs under seccomp filters and {request} failed: {}{}",
        std::io::Error::from(*errno),
        if *errno == nix::errno::Errno::EACCES { " (reading them needs CAP_SYS_ADMIN)" } else { "" }
    )]
    SeccompUnreadable {
        /// The thread.
        tid: i32,
        /// The ptrace request.
        request: &'static str,
        /// The kernel's error.
        errno: nix::errno::Errno,
    },
    /// A seccomp filter that notifies a supervisor.
    #[error(
        "unsupported: thread {tid}: seccomp filter {filter} hands system calls to a supervisor \
         (SECCOMP_RET_USER_NOTIF), whose listener cannot be dumped"
    )]
    SeccompUserNotif {
        /// The thread.
        tid: i32,
        /// The filter's index.
        filter: u64,
    },
    // The images directory.
    /// The images directory is not a directory.
    #[error("unsupported: images directory {} is not a directory", dir.display())]
    ImagesNotDir {
        /// The path given.
        dir: PathBuf,
    },
    /// The task's memory could not be read.
    #[error("cannot read memory of {pid} at {addr:#x}")]
    Memory {
        /// The pid.
        pid: i32,
        /// Where.
        addr: u64,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Writing an image failed.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// Sending pages to the page server failed.
    #[error(transparent)]
    PageServer(#[from] crate::pageserver::PageServerError),
    /// An action script failed.
    #[error(transparent)]
    Script(#[from] ScriptError),
    /// The mount namespace could not be saved.
    #[error(transparent)]
    Mount(#[from] crate::namespaces::mnt::MntError),
    /// The network namespace could not be saved.
    #[error(transparent)]
    Net(#[from] crate::namespaces::net::NetError),
    /// A step of the dump failed.
    #[error("{step} failed")]
    Step {
        /// The step.
        step: &'static str,
        /// Why.
        #[source]
        source: Box<DumpError>,
    },
}

/// What a refused descriptor is, for [`DumpError::FdKind`].
fn refused_fd(pid: i32, n: i32, name: &str) -> String {
    if let Some(kind) = name.strip_prefix("anon_inode:") {
        format!("fd {n} of {pid}: anon_inode:{kind}")
    } else if name.starts_with("/memfd:") {
        format!("fd {n} of {pid} is a memfd ({name})")
    } else {
        format!(
            "fd {n} of {pid}: {name} (only files, directories and character devices are supported)"
        )
    }
}

impl DumpError {
    /// The errno an RPC reply carries for this error (`cr_errno`): `EOPNOTSUPP` for state criu
    /// does not dump, `ESRCH` for a process that is gone, the OS error where one is carried,
    /// `EBADMSG` for an image that does not decode.
    pub fn errno(&self) -> i32 {
        match self {
            DumpError::NoPid => libc::EINVAL,
            DumpError::NoProcess { .. } | DumpError::Zombie { .. } => libc::ESRCH,
            DumpError::Unstable { .. } => libc::EAGAIN,
            DumpError::Seize { source, .. }
            | DumpError::Registers { source, .. }
            | DumpError::Remote { source, .. } => crate::errno::task(source),
            DumpError::Ptrace { source, .. } => *source as i32,
            DumpError::RemoteFailed { errno, .. } => *errno,
            DumpError::Proc(e) => e.errno(),
            DumpError::File { source, .. } | DumpError::Memory { source, .. } => {
                crate::errno::io(source)
            }
            DumpError::Image(e) => crate::errno::image(e),
            DumpError::PageServer(e) => e.errno(),
            DumpError::Script(e) => e.errno(),
            DumpError::Mount(e) => e.errno(),
            DumpError::Net(e) => e.errno(),
            DumpError::Step { source, .. } => source.errno(),
            DumpError::Socket(e) => e.errno(),
            DumpError::Namespace(e) => e.errno(),
            DumpError::SeccompUnreadable { errno, .. } => *errno as i32,
            DumpError::ImagesNotDir { .. } => libc::ENOTDIR,
            DumpError::SharedTable { .. }
            | DumpError::FileState { .. }
            | DumpError::FdKind { .. }
            | DumpError::Fdinfo { .. }
            | DumpError::NotClaimed { .. }
            | DumpError::DeletedSpecial { .. }
            | DumpError::GhostLimit { .. }
            | DumpError::MappedNotRegular { .. }
            | DumpError::LockClass { .. }
            | DumpError::LockType { .. }
            | DumpError::FileLocks { .. }
            | DumpError::EpollTarget { .. }
            | DumpError::Uprobes { .. }
            | DumpError::SharedAnon { .. }
            | DumpError::SysvShm { .. }
            | DumpError::ShmemOutside { .. }
            | DumpError::SeccompUserNotif { .. } => libc::EOPNOTSUPP,
        }
    }

    pub(super) fn at(self, step: &'static str) -> DumpError {
        DumpError::Step {
            step,
            source: Box::new(self),
        }
    }
}
pub(super) fn file_err(what: String) -> impl FnOnce(std::io::Error) -> DumpError {
    move |source| DumpError::File { what, source }
}

#[cfg(test)]
mod error_tests {
    use super::*;

    #[test]
    fn refusals_say_not_supported_and_read_as_before() {
        let e = DumpError::FdKind {
            pid: 7,
            fd: 3,
            name: "anon_inode:[io_uring]".into(),
        };
        assert_eq!(e.errno(), libc::EOPNOTSUPP);
        assert_eq!(
            e.to_string(),
            "unsupported: fd 3 of 7: anon_inode:[io_uring]"
        );
        let e = DumpError::FileLocks { pid: 7, fd: 4 };
        assert!(e.to_string().contains("holds file locks (fd 4 first)"));
        assert_eq!(e.errno(), libc::EOPNOTSUPP);
    }

    #[test]
    fn a_failed_step_carries_the_errno_of_its_cause() {
        let e = DumpError::Seize {
            pid: 7,
            source: TaskError::NoSuchTask { pid: 7 },
        }
        .at("seizing");
        assert_eq!(e.errno(), libc::ESRCH);
        assert_eq!(DumpError::NoProcess { pid: 7 }.errno(), libc::ESRCH);
        let e = DumpError::SeccompUnreadable {
            tid: 7,
            request: "PTRACE_SECCOMP_GET_FILTER",
            errno: nix::errno::Errno::EACCES,
        };
        assert_eq!(e.errno(), libc::EACCES);
        assert!(
            e.to_string()
                .ends_with("(reading them needs CAP_SYS_ADMIN)"),
            "{e}"
        );
        let e = DumpError::File {
            what: "opening".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        };
        assert_eq!(e.errno(), libc::ENOSPC);
        assert_eq!(DumpError::NoPid.errno(), libc::EINVAL);
    }
}
