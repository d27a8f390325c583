//! `criu dump`: checkpoint a live process tree (the process `-t PID`, its threads and its
//! descendants) into an images directory in CRIU's format.
//!
//! The flow, each step named in the error if it fails (this module keeps the flow; each job
//! has a module of its own):
//!
//! 1. mark the images directory incomplete (an `inventory.img` left from an earlier dump is
//!    removed and a [`INCOMPLETE_MARKER`] file written; `inventory.img` is written last), run the
//!    `pre-dump` action scripts;
//! 2. seize the tree with compel (`seize`), breadth first (every thread of every process stopped
//!    under `PTRACE_SEIZE`, each process before its children are listed; children that exit
//!    while they are seized are kept as zombies, auto-reaped ones skipped), then re-list the
//!    frozen tree until a pass finds nothing new ([`DumpError::Unstable`] after a few passes);
//! 3. collect each process: `/proc` ([`proc`]: stat, status, smaps, fds, cwd/root, auxv,
//!    timers); its namespaces against criu's (`ids`: one of its own, or a time namespace made
//!    for its children, is refused by name); its VMAs classified ([`vma`]) and its open files
//!    ([`files`]); what only the task can read about itself, through the dump parasite or
//!    remote syscalls ([`self_state`]); per thread (`thread`): registers with xsave and the
//!    blocked mask, rseq, the robust list, queued signals, the alternate signal stack, and the
//!    seccomp filters (`seccomp`);
//! 4. write the images: per process `core` ([`core`], one per thread), `mm`, `pagemap` +
//!    `pages` ([`pages`] picks the pages, `pages_file` copies them, read with
//!    `process_vm_readv`), `ids` (`ids`: mm, fd table, fs
//!    and signal handlers shared between processes found with kcmp), `fs`, `fdinfo`; for the
//!    tree `files` (one id per open file description, shared ones found with kcmp), ghost
//!    files, pipe data, shared anonymous memory once per object, `pstree`, `seccomp` (each
//!    filter once), `timens`, `stats-dump`, and last `inventory`;
//! 5. run the `post-dump` scripts, then kill the tree (default), leave it running (`-R`) or
//!    stopped (`-s`), and detach.
//!
//! Whatever fails, every process is detached and runs on as it was (none is killed then), and
//! the images directory keeps no `inventory.img` and holds the marker with the error.
//!
//! ```no_run
//! let opts = criu::Options::parse(
//!     ["criu", "dump", "-t", "4242", "-D", "/tmp/img", "-R"].iter().map(|s| s.to_string()),
//! ).unwrap();
//! let dump_opts = criu::DumpOptions::from_options(&opts);
//! let summary = criu::dump(&dump_opts, None).unwrap();
//! println!("{} pages written", summary.pages_written);
//! ```

pub mod core;
pub mod files;
mod ids;
pub mod pages;
mod pages_file;
mod predump;
pub mod proc;
mod seccomp;
mod seize;
pub mod self_state;
mod thread;
pub(crate) mod track;
pub mod vma;

pub(crate) use ids::kcmp;

/// Refuses a descriptor table or fs info shared by processes that are not parent and child
/// along the tree (`(pid, ppid, files_id, fs_id)` per live process): a restore creates each
/// process from its parent, so only a parent can hand its own to a child.
fn check_sharing(procs: &[(i32, i32, u32, u32)]) -> Result<(), DumpError> {
    let of = |pid: i32| procs.iter().find(|p| p.0 == pid);
    for &(pid, ppid, files, fs) in procs {
        let parent = of(ppid);
        for (what, id, pick) in [
            ("descriptor table (CLONE_FILES)", files, 2usize),
            ("fs info (CLONE_FS)", fs, 3usize),
        ] {
            let key = |p: &(i32, i32, u32, u32)| if pick == 2 { p.2 } else { p.3 };
            let Some(other) = procs.iter().find(|p| p.0 != pid && key(p) == id) else {
                continue;
            };
            if parent.is_some_and(|p| key(p) == id) {
                continue;
            }
            // The one that shares no parent's must be the top of its group: no other member
            // may be its ancestor-less peer.
            if procs
                .iter()
                .any(|p| p.0 != pid && key(p) == id && of(p.1).is_none_or(|pp| key(pp) != id))
            {
                return Err(DumpError::SharedTable {
                    pid,
                    table: what,
                    other: other.0,
                });
            }
        }
    }
    Ok(())
}
pub use predump::pre_dump;
pub use self_state::INSIDE_METHOD_ENV;

use std::path::{Path, PathBuf};
use std::time::Instant;

use compel::{InitialStop, Task, TaskError, TaskState};

use criu_images::pb::{
    DumpStatsEntry, FsEntry, InventoryEntry, Lsmtype, MmEntry, PluginsEntry, PstreeEntry,
    SeccompEntry, StatsEntry,
};
use criu_images::{ImageDir, ImageError, magic, names, task_state};

use crate::options::{DumpOptions, FinalState};
use crate::scripts::{Notify, ScriptAction, ScriptError};

/// The file a dump leaves in the images directory while it runs and when it fails (holding the
/// error); a complete dump has `inventory.img` and no marker.
pub const INCOMPLETE_MARKER: &str = "criu-dump-incomplete";

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
    /// Anonymous `MAP_HUGETLB` memory.
    #[error(
        "unsupported: anonymous MAP_HUGETLB mapping {start:#x}-{end:#x} of {pid} (hugetlb memory \
         is not dumped yet)"
    )]
    Hugetlb {
        /// The process.
        pid: i32,
        /// Start of the area.
        start: u64,
        /// End of the area.
        end: u64,
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
        "unsupported: deleted special file {} (only regular files, directories and device nodes)",
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
    /// A process whose group leader is gone (restoring it needs a helper leader).
    #[error(
        "unsupported: pid {pid} is in process group {pgid}, whose leader {}: restoring it needs a \
         helper group leader, which is not supported yet",
        if *zombie { "is a zombie" } else { "has exited" }
    )]
    GroupLeaderGone {
        /// The process.
        pid: i32,
        /// Its group.
        pgid: i32,
        /// Whether the leader is a zombie (else it has exited).
        zombie: bool,
    },
    /// A process in a namespace of its own.
    #[error(
        "unsupported: {pid} is in a {kind} namespace of its own (namespaces are not dumped yet)"
    )]
    OwnNamespace {
        /// The process.
        pid: i32,
        /// The namespace kind (`net`, `mnt`, ...).
        kind: String,
    },
    /// A process that made a time namespace for its children.
    #[error(
        "unsupported: {pid} made a time namespace for its children (unshare(CLONE_NEWTIME)); \
         namespaces are not dumped yet"
    )]
    TimeNsForChildren {
        /// The process.
        pid: i32,
    },
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
            DumpError::Step { source, .. } => source.errno(),
            DumpError::Socket(e) => e.errno(),
            DumpError::SeccompUnreadable { errno, .. } => *errno as i32,
            DumpError::ImagesNotDir { .. } => libc::ENOTDIR,
            DumpError::SharedTable { .. }
            | DumpError::Hugetlb { .. }
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
            | DumpError::GroupLeaderGone { .. }
            | DumpError::OwnNamespace { .. }
            | DumpError::TimeNsForChildren { .. }
            | DumpError::Uprobes { .. }
            | DumpError::SharedAnon { .. }
            | DumpError::SysvShm { .. }
            | DumpError::ShmemOutside { .. }
            | DumpError::SeccompUserNotif { .. } => libc::EOPNOTSUPP,
        }
    }

    fn at(self, step: &'static str) -> DumpError {
        DumpError::Step {
            step,
            source: Box::new(self),
        }
    }
}

/// What a successful dump did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DumpSummary {
    /// The dumped pid.
    pub pid: i32,
    /// Pages scanned in private VMAs.
    pub pages_scanned: u64,
    /// Pages written into `pages-1.img`.
    pub pages_written: u64,
    /// Time the task was frozen, in microseconds.
    pub frozen_us: u64,
}

fn file_err(what: String) -> impl FnOnce(std::io::Error) -> DumpError {
    move |source| DumpError::File { what, source }
}

/// Dumps the process `opts.tree` into `opts.images_dir` (see the module docs for the steps).
///
/// # Errors
/// [`DumpError::Step`] naming the step that failed; the task then runs on.
pub fn dump(opts: &DumpOptions, notify: Option<&dyn Notify>) -> Result<DumpSummary, DumpError> {
    let pid = opts.tree.ok_or(DumpError::NoPid)?;
    let dir = opts.images_dir.clone();
    let marker = dir.join(INCOMPLETE_MARKER);
    let result = (|| {
        begin_images(&dir).map_err(|e| e.at("preparing the images directory"))?;
        let quiet = |_: ScriptAction, _: Option<i32>| -> Result<(), ScriptError> { Ok(()) };
        dump_inner(opts, pid, &dir, notify.unwrap_or(&quiet))
    })();
    match &result {
        Ok(s) => {
            let _ = std::fs::remove_file(&marker);
            tracing::info!(pid, pages = s.pages_written, "dump finished");
        }
        Err(e) => {
            let _ = std::fs::remove_file(dir.join(names::INVENTORY));
            let _ = std::fs::write(&marker, format!("dump of {pid} failed: {}\n", chain(e)));
            tracing::debug!("dump of {pid} failed: {}", chain(e));
        }
    }
    result
}

/// The error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn begin_images(dir: &Path) -> Result<(), DumpError> {
    let md =
        std::fs::metadata(dir).map_err(file_err(format!("images directory {}", dir.display())))?;
    if !md.is_dir() {
        return Err(DumpError::ImagesNotDir {
            dir: dir.to_path_buf(),
        });
    }
    std::fs::write(dir.join(INCOMPLETE_MARKER), "dump in progress\n").map_err(file_err(
        format!("write {}", dir.join(INCOMPLETE_MARKER).display()),
    ))?;
    match std::fs::remove_file(dir.join(names::INVENTORY)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(file_err(format!("remove old {}", names::INVENTORY))(e)),
    }
}

/// Refuses a tree with a process in a group whose leader has exited and is gone (a zombie of
/// the tree leads it again at restore): restoring it needs a helper task to lead the group for
/// it, which the restore does not make yet. The root's own group is exempt (it may be a shell's job).
fn refuse_leaderless_groups(
    root: i32,
    alive: impl Iterator<Item = i32>,
    zombies: &[(i32, proc::ProcStat)],
) -> Result<(), DumpError> {
    let mut pgids: Vec<(i32, i32)> = Vec::new();
    for p in alive {
        pgids.push((p, proc::read_stat(p)?.pgid));
    }
    let root_pgid = pgids.iter().find(|(p, _)| *p == root).map(|(_, g)| *g);
    for &(p, g) in &pgids {
        if p == root || g == p || Some(g) == root_pgid {
            continue;
        }
        // A zombie of the tree leads its group again: it is restored as a zombie (after
        // setting up its group), and the group lives on while it is not reaped.
        let leader_here =
            pgids.iter().any(|&(q, _)| q == g) || zombies.iter().any(|(z, _)| *z == g);
        if !leader_here {
            return Err(DumpError::GroupLeaderGone {
                pid: p,
                pgid: g,
                zombie: false,
            });
        }
    }
    Ok(())
}

fn dump_inner(
    opts: &DumpOptions,
    pid: i32,
    dir: &Path,
    scripts: &dyn Notify,
) -> Result<DumpSummary, DumpError> {
    match compel::classify(pid) {
        Ok(TaskState::Dead) | Err(_) => {
            return Err(DumpError::NoProcess { pid }.at("checking the process"));
        }
        Ok(TaskState::Zombie) => return Err(DumpError::Zombie { pid }.at("checking the process")),
        Ok(_) => {}
    }
    scripts
        .notify(ScriptAction::PreDump, Some(pid))
        .map_err(|e| DumpError::from(e).at("pre-dump action script"))?;

    if let Some(prev) = &opts.prev_images_dir {
        track::link_parent(dir, prev).map_err(|e| e.at("linking the parent images"))?;
    }
    let prev = track::parent_record(dir, opts.prev_images_dir.as_deref());
    let t0 = Instant::now();
    // Every process of the tree, the root first; each detaches on every return path (compel's
    // Task does on drop), so the tree runs on if anything fails.
    let (mut tasks, zombie_pids) =
        seize::seize_tree(pid).map_err(|e| e.at("seizing the process tree"))?;
    tracing::info!(
        pid,
        processes = tasks.len(),
        zombies = zombie_pids.len(),
        "seized"
    );
    let mut zombies = Vec::with_capacity(zombie_pids.len());
    for z in zombie_pids {
        zombies.push((
            z,
            proc::read_stat(z)
                .map_err(|e| DumpError::from(e).at("collecting the process state"))?,
        ));
    }
    refuse_leaderless_groups(pid, tasks.iter().map(|(p, _)| *p), &zombies)
        .map_err(|e| e.at("checking the process tree"))?;
    let mut files = files::FileTable::new(opts.ghost_limit);
    files.tcp_established = opts.tcp_established;
    files.skip_uffd = prev.values().map(|r| r.ino).collect();
    let mut procs = Vec::with_capacity(tasks.len());
    // criu's own namespaces, read once for the whole tree.
    let own_ns = ids::ns_inodes("self");
    for (p, task) in tasks.iter_mut() {
        procs.push(
            collect(task, *p, opts, &mut files, &own_ns)
                .map_err(|e| e.at("collecting the process state"))?,
        );
    }
    files
        .finish_sockets(opts.ext_unix_sk.then_some(&[][..]))
        .map_err(|e| e.at("collecting the process state"))?;
    let trackers = if opts.track_mem {
        track::open_all(&mut tasks, &prev).map_err(|e| e.at("tracking memory changes"))?
    } else {
        track::Trackers::default()
    };
    let mut ps = match &opts.page_server {
        Some((a, p)) => Some(
            crate::pageserver::PageClient::connect(a, *p)
                .map_err(|e| DumpError::from(e).at("connecting to the page server"))?,
        ),
        None => None,
    };
    let stats = write_images(dir, &procs, &zombies, &files, &trackers, ps.as_mut())
        .map_err(|e| e.at("writing the images"))?;
    if let Some(ps) = ps {
        ps.close()
            .map_err(|e| DumpError::from(e).at("closing the page server session"))?;
    }
    if opts.track_mem {
        track::write_record(dir, &trackers).map_err(|e| e.at("writing the images"))?;
    } else if opts.final_state != FinalState::Dead {
        track::close_recorded(&mut tasks, &prev);
    }
    let frozen_us = t0.elapsed().as_micros() as u64;
    write_stats(dir, &stats, frozen_us).map_err(|e| e.at("writing the images"))?;
    write_inventory(dir, &procs[0]).map_err(|e| e.at("writing the images"))?;

    if let Err(e) = scripts.notify(ScriptAction::PostDump, Some(pid)) {
        // The tree resumes (dropping the tasks detaches them) and the dump fails.
        drop(tasks);
        return Err(DumpError::from(e).at("post-dump action script"));
    }
    // Saved TCP connections stay in repair mode when the tree dies (closing sends nothing).
    files.dump_done(opts.final_state == FinalState::Dead);
    for (p, task) in tasks {
        match opts.final_state {
            FinalState::Dead => {
                tracing::info!(pid = p, "killing the dumped process");
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            FinalState::Stopped => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGSTOP,
                );
            }
            FinalState::Alive => {}
        }
        if let Err(e) = task.detach()
            && opts.final_state != FinalState::Dead
        {
            tracing::warn!(pid = p, "detaching after the dump: {e}");
        }
    }
    Ok(DumpSummary {
        pid,
        pages_scanned: stats.scanned,
        pages_written: stats.written,
        frozen_us,
    })
}

/// Everything collected from a frozen task.
struct Collected {
    pid: i32,
    stat: proc::ProcStat,
    vmas: Vec<vma::Vma>,
    /// `MADV_GUARD_INSTALL` ranges.
    guards: Vec<(u64, u64)>,
    fdinfo: Vec<criu_images::pb::FdinfoEntry>,
    exe_id: u32,
    cwd_id: u32,
    root_id: u32,
    umask: u32,
    auxv: Vec<u64>,
    /// Every thread, the leader first.
    threads: Vec<thread::ThreadDump>,
    dumpable: i32,
    thp_disabled: bool,
    brk: u64,
    ns: Vec<(String, u64)>,
    own_ns: Vec<(String, u64)>,
}

fn collect(
    task: &mut Task,
    pid: i32,
    opts: &DumpOptions,
    files: &mut files::FileTable,
    own_ns: &[(String, u64)],
) -> Result<Collected, DumpError> {
    // First, before anything runs in the task.
    thread::rseq_abort(task, pid)?;
    let stat = proc::read_stat(pid)?;
    let status = proc::read_status(pid)?;
    let ns = ids::ns_inodes(&pid.to_string());
    ids::refuse_own_namespaces(pid, &ns, own_ns)?;
    let maps = proc::read_smaps(pid)?;
    let exe_id = files.add_exe(pid)?;
    let vmas = vma::classify(pid, &maps, files)?;
    let guards = pages::guard_regions(pid)?;
    let fdinfo = files.add_fds(pid, opts.shell_job)?;
    if !opts.file_locks
        && let Some(l) = files.locks().first()
    {
        return Err(DumpError::FileLocks {
            pid: l.pid,
            fd: l.fd,
        });
    }
    let cwd_id = files.add_dir_link(pid, "cwd")?;
    let root_id = files.add_dir_link(pid, "root")?;
    let auxv = proc::read_auxv(pid)?;
    let timers = proc::read_posix_timers(pid)?;
    let personality = proc::read_personality(pid)?;
    let loginuid = proc::read_number(pid, "loginuid").ok().map(|v| v as u32);
    let oom_score_adj = proc::read_number(pid, "oom_score_adj")
        .ok()
        .map(|v| v as i32);

    let (task_state, stop_signo) = match task.initial_stop(pid) {
        Some(InitialStop::GroupStopped(sig)) => (task_state::STOPPED, Some(sig as u32)),
        _ => (task_state::ALIVE, None),
    };
    let pending_shared = thread::pending_signals(pid, true)?;
    let timer_ids: Vec<i32> = timers.iter().map(|t| t.id).collect();
    let own = self_state::read(task, pid, &timer_ids, opts.timeout, opts.inside_method)?;

    let threads = thread::dump_threads(
        task,
        pid,
        &stat,
        &status,
        &core::ProcessInput {
            self_state: &own,
            timers: &timers,
            personality,
            loginuid,
            oom_score_adj,
            task_state,
            stop_signo,
            pending_shared,
        },
    )?;
    Ok(Collected {
        pid,
        stat,
        vmas,
        guards,
        fdinfo,
        exe_id,
        cwd_id,
        root_id,
        umask: status.umask,
        auxv,
        threads,
        dumpable: own.dumpable,
        thp_disabled: own.thp_disabled,
        brk: own.brk,
        ns,
        own_ns: own_ns.to_vec(),
    })
}

fn write_images(
    dir: &Path,
    procs: &[Collected],
    zombies: &[(i32, proc::ProcStat)],
    files: &files::FileTable,
    trackers: &track::Trackers,
    mut ps: Option<&mut crate::pageserver::PageClient>,
) -> Result<pages::PageStats, DumpError> {
    let img = ImageDir::new(dir);
    let mut stats = pages::PageStats::default();
    let mut shared = pages::SharedObjects::default();
    let mut kobj_ids = ids::KobjIds::default();
    let mut seccomp_table = seccomp::SeccompTable::default();
    let mut fdinfo_written = Vec::new();
    let mut sharing = Vec::with_capacity(procs.len());
    let own_ns = &procs[0].own_ns;
    let in_tree = |pid: i32| procs.iter().any(|p| p.pid == pid);
    let mut tree = Vec::with_capacity(procs.len());
    for (n, process) in procs.iter().enumerate() {
        let pid = process.pid;
        let upid = pid as u32;
        let private = match ps.as_deref_mut() {
            // The pages go to the page server; the other images stay here.
            Some(ps) => {
                let (pm, _, st) =
                    pages::plan_private_pages(pid, &process.vmas, 1 + n as u32, trackers.get(pid))?;
                ps.send_pagemap(pid, &pm)?;
                st
            }
            None => {
                pages::dump_private_pages(pid, &process.vmas, dir, 1 + n as u32, trackers.get(pid))?
            }
        };
        stats.scanned += private.scanned;
        stats.written += private.written;
        stats.parent += private.parent;
        shared.add(pid, &process.vmas)?;
        let heap_end = process
            .vmas
            .iter()
            .find(|v| v.is(criu_images::vma::status::HEAP))
            .map(|v| v.entry.end);
        let mm_entry = MmEntry {
            mm_start_code: process.stat.start_code,
            mm_end_code: process.stat.end_code,
            mm_start_data: process.stat.start_data,
            mm_end_data: process.stat.end_data,
            mm_start_stack: process.stat.start_stack,
            mm_start_brk: process.stat.start_brk,
            mm_brk: if process.brk != 0 {
                process.brk
            } else {
                heap_end.unwrap_or(process.stat.start_brk)
            },
            mm_arg_start: process.stat.arg_start,
            mm_arg_end: process.stat.arg_end,
            mm_env_start: process.stat.env_start,
            mm_env_end: process.stat.env_end,
            exe_file_id: process.exe_id,
            mm_saved_auxv: process.auxv.clone(),
            // Guard ranges after every real area, as CRIU writes them.
            vmas: process
                .vmas
                .iter()
                .map(|v| v.entry.clone())
                .chain(
                    process
                        .guards
                        .iter()
                        .map(|&(start, end)| criu_images::pb::VmaEntry {
                            start,
                            end,
                            status: criu_images::vma::status::GUARD,
                            fd: -1,
                            ..Default::default()
                        }),
                )
                .collect(),
            dumpable: Some(process.dumpable),
            aios: Vec::new(),
            thp_disabled: Some(process.thp_disabled),
        };
        img.write_mm(upid, &mm_entry)?;
        for t in &process.threads {
            let mut core = t.core.clone();
            if let Some(th) = core.thread_core.as_mut()
                && t.seccomp_mode != 0
            {
                th.seccomp_mode = Some(t.seccomp_mode as i32);
                th.seccomp_filter = seccomp_table.add(&t.seccomp_filters);
            }
            img.write_core(t.tid as u32, &core)?;
        }
        let mut task_ids = ids::task_ids(&process.ns, own_ns, 0);
        kobj_ids.assign(pid, &mut task_ids);
        img.write_ids(upid, &task_ids)?;
        img.write_fs(
            upid,
            &FsEntry {
                cwd_id: process.cwd_id,
                root_id: process.root_id,
                umask: Some(process.umask),
            },
        )?;
        // Processes sharing one descriptor table (CLONE_FILES) share one fdinfo image.
        if !fdinfo_written.contains(&task_ids.files_id) {
            img.write_fdinfo(task_ids.files_id, &process.fdinfo)?;
            fdinfo_written.push(task_ids.files_id);
        }
        let ppid = if n == 0 || !in_tree(process.stat.ppid) {
            0
        } else {
            process.stat.ppid as u32
        };
        sharing.push((pid, ppid as i32, task_ids.files_id, task_ids.fs_id));
        tree.push(PstreeEntry {
            pid: upid,
            ppid,
            pgid: process.stat.pgid as u32,
            sid: process.stat.sid as u32,
            threads: process.threads.iter().map(|t| t.tid as u32).collect(),
        });
    }
    check_sharing(&sharing)?;
    // Zombies: a pstree entry and a core with the task's end, as CRIU saves them.
    for (z, st) in zombies {
        tree.push(PstreeEntry {
            pid: *z as u32,
            ppid: if in_tree(st.ppid) { st.ppid as u32 } else { 0 },
            pgid: st.pgid as u32,
            sid: st.sid as u32,
            threads: vec![*z as u32],
        });
        img.write_core(*z as u32, &core::zombie_core(st))?;
    }
    shared.check_unmapped()?;
    let shared_stats = shared.write(dir, 1 + procs.len() as u32)?;
    stats.scanned += shared_stats.scanned;
    stats.written += shared_stats.written;
    files.write(dir)?;
    img.write_pstree(&tree)?;
    if !files.locks().is_empty() {
        criu_images::write_all(
            dir.join(names::FILE_LOCKS),
            magic::FILE_LOCKS,
            files.locks(),
        )?;
    }
    img.write_seccomp(&SeccompEntry {
        seccomp_filters: seccomp_table.filters,
    })?;
    img.write_timens(0, &ids::timens_now())?;
    Ok(stats)
}

fn write_stats(dir: &Path, s: &pages::PageStats, frozen_us: u64) -> Result<(), DumpError> {
    let e = StatsEntry {
        dump: Some(DumpStatsEntry {
            freezing_time: 0,
            frozen_time: frozen_us as u32,
            memdump_time: 0,
            memwrite_time: 0,
            pages_scanned: s.scanned,
            pages_skipped_parent: s.parent,
            pages_written: s.written,
            ..DumpStatsEntry::default()
        }),
        restore: None,
    };
    criu_images::write_all(dir.join(names::STATS_DUMP), magic::STATS, [&e])?;
    Ok(())
}

fn write_inventory(dir: &Path, root: &Collected) -> Result<(), DumpError> {
    let inv = InventoryEntry {
        img_version: magic::IMAGES_V1_1,
        fdinfo_per_id: Some(true),
        root_ids: Some(ids::task_ids(&root.own_ns, &root.own_ns, 1)),
        ns_per_id: Some(true),
        root_cg_set: None,
        lsmtype: Some(Lsmtype::NoLsm as i32),
        dump_uptime: None,
        pre_dump_mode: None,
        tcp_close: None,
        network_lock_method: Some(0),
        plugins_entry: Some(PluginsEntry::default()),
        dump_criu_run_id: Some(run_id()),
        allow_uprobes: None,
    };
    ImageDir::new(dir).write_inventory(&inv)?;
    Ok(())
}

/// A random UUID-shaped run id, as CRIU writes into the inventory.
fn run_id() -> String {
    let mut b = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b = t.to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
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
        let e = DumpError::GroupLeaderGone {
            pid: 8,
            pgid: 5,
            zombie: true,
        };
        assert_eq!(
            e.to_string(),
            "unsupported: pid 8 is in process group 5, whose leader is a zombie: restoring it \
             needs a helper group leader, which is not supported yet"
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
