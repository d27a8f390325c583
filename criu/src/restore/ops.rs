//! The work list of one restored task, as plain data: what [`super::prepare`] builds in the
//! engine and [`super::child`] carries out in the new task (stages, premaps, page runs,
//! descriptors, the fill helper, where the restorer is). Imports nothing of its siblings but
//! the plan's plain types.

use std::ffi::CString;
use std::sync::Arc;

use super::abi;
use super::plan::{LockOp, Rseq, Sched, SessionOp};
use crate::files::{MAX_ENDS, RestoreFile};

/// Child stages, reported in [`abi::Status::stage`] (the restorer's own stages are below 100).
pub const CHILD_SESSION: u32 = 100;
/// Premapping an area.
pub const CHILD_PREMAP: u32 = 101;
/// Reading page contents.
pub const CHILD_FILL: u32 = 102;
/// Final protections and madvise.
pub const CHILD_PROTECT: u32 = 103;
/// Reopening descriptors.
pub const CHILD_FDS: u32 = 104;
/// Root, cwd, umask.
pub const CHILD_FS: u32 = 105;
/// oom_score_adj.
pub const CHILD_OOM: u32 = 106;
/// Scheduling policy and nice value.
pub const CHILD_SCHED: u32 = 107;
/// Creating a child with its pid.
pub const CHILD_CLONE: u32 = 108;
/// Waiting for a zombie child to end.
pub const CHILD_ZOMBIE: u32 = 109;
/// Taking file locks.
pub const CHILD_LOCKS: u32 = 110;
/// Writing the audit login uid.
pub const CHILD_LOGINUID: u32 = 111;
/// Registering for `membarrier`.
pub const CHILD_MEMBARRIER: u32 = 112;
/// Handing lazy memory to the lazy-pages daemon.
pub const CHILD_LAZY: u32 = 113;
/// Making AIO rings again.
pub const CHILD_AIO: u32 = 114;
/// Mapping packet socket rings again.
pub const CHILD_PACKET_RING: u32 = 115;
/// Entering a namespace given with `--join-ns` (the root, before anything else).
pub const CHILD_JOIN_NS: u32 = 116;

/// A short name for a child stage.
pub fn stage_name(stage: u32) -> &'static str {
    match stage {
        CHILD_SESSION => "session setup",
        CHILD_PREMAP => "premapping memory",
        CHILD_FILL => "reading page contents",
        CHILD_PROTECT => "memory protections",
        CHILD_FDS => "reopening files",
        CHILD_FS => "root, cwd and umask",
        CHILD_OOM => "oom_score_adj",
        CHILD_SCHED => "scheduling policy and nice value",
        CHILD_CLONE => "creating a child with its pid",
        CHILD_ZOMBIE => "making a zombie child",
        CHILD_LOCKS => "taking file locks",
        CHILD_LOGINUID => "audit login uid",
        CHILD_MEMBARRIER => "membarrier registration",
        CHILD_LAZY => "handing memory to the lazy-pages daemon",
        CHILD_AIO => "making an AIO ring again",
        CHILD_PACKET_RING => "mapping a packet socket's rings again",
        CHILD_JOIN_NS => "entering a namespace given with --join-ns",
        s => abi::stage_name(s),
    }
}

/// One area to premap.
#[derive(Debug)]
pub struct PremapOp {
    /// Address inside the reservation.
    pub addr: u64,
    /// Length.
    pub len: u64,
    /// Final protection.
    pub prot: i32,
    /// `MAP_*` flags (without `MAP_FIXED`).
    pub map_flags: i32,
    /// File to map: path and open flags.
    pub file: Option<(CString, i32)>,
    /// File offset.
    pub pgoff: u64,
    /// Pages will be written into it (map it writable first).
    pub fill: bool,
    /// madvise advice bits.
    pub madv: u64,
    /// Instead of mapping: share `len` bytes at this address of a shared object mapped earlier
    /// (`mremap` with old size 0), so that several areas map one object.
    pub dup_of: Option<u64>,
    /// A whole shared object mapped only to be filled and shared by `dup_of` areas; unmapped
    /// before the jump.
    pub temporary: bool,
    /// Instead of mapping: take over the parent's premapped copy of the same area, inherited
    /// at the fork at this address (`mremap`), so that the pages both hold stay shared
    /// copy-on-write; only the pages that differ are written ([`ChildPlan::cow_fills`]).
    pub inherit_from: Option<u64>,
}

/// A private anonymous area of a task, premapped and filled before it creates its children,
/// which a child with the same area takes over instead of filling its own.
#[derive(Clone, Debug, Default)]
pub struct CowArea {
    /// First address (final).
    pub start: u64,
    /// One past the last address (final).
    pub end: u64,
    /// `MAP_*` flags as dumped.
    pub flags: i32,
    /// Where the task premaps it.
    pub addr: u64,
    /// The runs `[start, end)` (final addresses, sorted) of the task's saved pages in it.
    pub pages: Vec<(u64, u64)>,
}

/// One run of page contents to read.
#[derive(Debug)]
pub struct FillOp {
    /// Index into [`ChildPlan::page_files`].
    pub file: usize,
    /// Offset in that file.
    pub offset: u64,
    /// Destination (premapped address).
    pub addr: u64,
    /// Length.
    pub len: u64,
    /// The destination is private anonymous memory (it can be filled with `UFFDIO_COPY`).
    pub anon: bool,
}

/// One descriptor to create.
#[derive(Debug)]
pub enum FdOp {
    /// Make an open file of some kind (all of its ends at once) and place the ends this task
    /// holds; the others are closed.
    Make {
        /// What to make.
        file: Arc<dyn RestoreFile>,
        /// For each end: its target fd and `FD_CLOEXEC`.
        at: [Option<(i32, bool)>; MAX_ENDS],
        /// The first target fd, for reports.
        first: i32,
    },
    /// Open again, as a new open file, the object an fd created earlier is open on (through
    /// `path`, `/proc/self/fd/N`).
    Reopen {
        /// Target fd.
        fd: i32,
        /// `/proc/self/fd/N` of the earlier fd.
        path: std::ffi::CString,
        /// Access mode.
        flags: i32,
        /// `FD_CLOEXEC`.
        cloexec: bool,
    },
    /// Take descriptor `of` of the engine (`pidfd_getfd`) once the engine opened there a file
    /// that exists only with the tree (a file under `/proc/PID` several tasks hold).
    FromEngine {
        /// Target fd.
        fd: i32,
        /// The engine's descriptor.
        of: i32,
        /// `FD_CLOEXEC`.
        cloexec: bool,
    },
    /// Duplicate an fd created earlier, or one the engine made for several tasks and this
    /// task inherited (same open file description).
    Dup {
        /// Target fd.
        fd: i32,
        /// The fd it shares its file with.
        of: i32,
        /// `FD_CLOEXEC`.
        cloexec: bool,
    },
}

/// Everything the child does, prepared by the parent.
#[derive(Debug)]
pub struct ChildPlan {
    /// Areas to premap, in address order.
    pub premap: Vec<PremapOp>,
    /// Page runs.
    pub fills: Vec<FillOp>,
    /// Page runs into areas taken over from the parent: each page is written only where it
    /// differs from the parent's.
    pub cow_fills: Vec<FillOp>,
    /// Ranges (premapped addresses) of areas taken over from the parent that the parent saved
    /// pages for and this task did not: emptied (`MADV_DONTNEED`).
    pub cow_zero: Vec<(u64, u64)>,
    /// Premap and fill before creating the children: this task takes areas over from its
    /// parent or hands its own to children.
    pub early_memory: bool,
    /// Page files.
    pub page_files: Vec<CString>,
    /// Share the fill with a helper process.
    pub fill_helper: Option<FillHelper>,
    /// Sorted ranges of whole 2 MiB blocks that get a huge page each before they are filled.
    pub collapse: Vec<(u64, u64)>,
    /// Fill private anonymous memory with `UFFDIO_COPY` where it can.
    pub uffd: bool,
    /// Lazy restore: the areas the lazy-pages daemon fills (`--lazy-pages`).
    pub lazy: Option<crate::lazy::restore::ChildLazy>,
    /// AIO rings to make again over their premapped areas.
    pub aio: Vec<crate::files::aio::RingOp>,
    /// Packet socket rings to map again over their premapped areas, once the descriptors
    /// are in place.
    pub packet_rings: Vec<crate::files::packet::RingMap>,
    /// Descriptors, in creation order.
    pub fds: Vec<FdOp>,
    /// Descriptors kept open while the others are closed: the ones the restorer needs (status
    /// pipe, exe) and the shared ones in [`ChildPlan::inherited`].
    pub service_fds: Vec<i32>,
    /// Status flags and owner to give each open file once placed (at its first descriptor).
    pub settle: Vec<(i32, crate::files::FileStatus)>,
    /// The descriptor of this session leader's controlling terminal, with the foreground
    /// process group to give it (0: its own).
    pub ctty: Option<(i32, i32)>,
    /// The engine's descriptor of that terminal (made by the engine, inherited): the leader
    /// takes it as its terminal before creating its children, which then inherit it, as the
    /// members of the dumped session did (`TIOCSCTTY` gives it to the caller alone).
    pub ctty_early: Option<i32>,
    /// Open files made by the engine for several tasks, closed once placed.
    pub inherited: Vec<i32>,
    /// Temporary descriptors go at or above this number.
    pub tmp_fd_base: i32,
    /// chroot target.
    pub root: Option<CString>,
    /// chdir target.
    pub cwd: Option<CString>,
    /// umask.
    pub umask: u32,
    /// oom_score_adj to write.
    pub oom_score_adj: Option<CString>,
    /// The audit login uid to write (decimal), when it differs from the one inherited.
    pub loginuid: Option<CString>,
    /// `membarrier` registration commands to issue (one bit each).
    pub membarrier: u32,
    /// Guard pages to install once the areas are filled: (premapped address, length).
    pub guards: Vec<(u64, u64)>,
    /// Scheduling: nice value, policy, real-time priority.
    pub sched: Option<Sched>,
    /// File locks to take once the descriptors are in place.
    pub locks: Vec<LockOp>,
    /// Where the status pipe is.
    pub status_fd: i32,
    /// The engine's rseq registration to drop before the jump.
    pub old_rseq: Option<Rseq>,
    /// Restorer entry point.
    pub entry: u64,
    /// Restorer stack top (16-byte aligned).
    pub stack_top: u64,
    /// Argument block address.
    pub args: u64,
}

/// Where the fill helper runs: its pid (free, chosen by the engine) and its stack.
#[derive(Debug)]
pub struct FillHelper {
    /// The pid to create it with (`set_tid`), so that it cannot take a pid the tree needs.
    pub pid: i32,
    /// The top of a stack nothing else uses while it runs (16-byte aligned).
    pub stack_top: u64,
    /// Its share: the runs from this index on.
    pub from: usize,
}

/// One task of the tree as its creator sees it.
#[derive(Debug)]
pub struct Node {
    /// Its pid as its parent sees it.
    pub pid: i32,
    /// Its child (index) whose pid namespace it enters once its children exist: its pid namespace
    /// for children was that one (`unshare(CLONE_NEWPID)`, then the child, its init).
    pub enter_child_ns: Option<usize>,
    /// Namespaces it enters itself before anything else (the root: `--join-ns mnt|user`).
    pub join: Vec<JoinNs>,
    /// Its pids from its own pid namespace out to the root's (`clone3`'s `set_tid`): one unless
    /// it lives in a pid namespace below the root's (`namespaces::pid_levels`).
    pub tids: Vec<i32>,
    /// How it gets its session and group.
    pub session: SessionOp,
    /// For [`SessionOp::Setpgid`] of another task's group: that task (it must have its group
    /// before this one joins it).
    pub leader: Option<usize>,
    /// Its children (indices), created in this order.
    pub children: Vec<usize>,
    /// A zombie: ends at once with this raw wait status.
    pub zombie: Option<u32>,
    /// A helper leading a group for others (ends like a zombie; its parent reaps it once its
    /// subtree is created and the members joined the group).
    pub helper: bool,
    /// It becomes a child subreaper before creating its children: a helper among them leads
    /// a session for its members and ends, and this task adopts them.
    pub adopts: bool,
    /// What a live task does next (`None` for zombies).
    pub plan: Option<ChildPlan>,
    /// Its reservation `(start, len)` in the engine's address space (empty for zombies).
    pub resv: (u64, u64),
    /// Its position in the creation order (depth first: its subtree follows it).
    pub pre: usize,
    /// The size of its subtree, itself included.
    pub size: usize,
    /// It shares its parent's descriptor table (made with `CLONE_FILES`; the parent places
    /// the descriptors once this task's own setup is over).
    pub share_files: bool,
    /// It shares its parent's cwd, root and umask (made with `CLONE_FS`; set by the parent).
    pub share_fs: bool,
}

pub use crate::namespaces::JoinNs;

/// A failed step of a task before its restorer runs, as reported in its sync slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fail {
    /// The stage (`CHILD_*`).
    pub(crate) stage: u32,
    /// The errno.
    pub(crate) errno: i32,
    /// The address, fd or pid involved.
    pub(crate) detail: u64,
}

impl Fail {
    /// A failure of `stage` about `detail` with the last call's errno.
    pub(crate) fn last(stage: u32, detail: u64) -> Fail {
        Fail {
            stage,
            errno: errno(),
            detail,
        }
    }
}

/// The errno of the last failed call.
pub(crate) fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// `ret` when it is not negative, else a failure of `stage` about `detail`.
pub(crate) fn ok(stage: u32, ret: libc::c_long, detail: u64) -> Result<libc::c_long, Fail> {
    if ret < 0 {
        Err(Fail::last(stage, detail))
    } else {
        Ok(ret)
    }
}

/// What a task shares with the others of its tree, made by the engine before the first task
/// is created.
#[derive(Debug, Default)]
pub struct TaskCtx {
    /// The root of the tree (criu is its parent).
    pub root: bool,
    /// Service descriptors go at or above this number (above every task's descriptors and the
    /// shared ones).
    pub fd_floor: i32,
    /// Target fd -> the engine's descriptor of the open file it shares with other tasks.
    pub shared_fds: std::collections::HashMap<i32, i32>,
    /// Of those engine descriptors, the ones opened only once the tree exists
    /// ([`FdOp::FromEngine`]).
    pub late_fds: std::collections::HashSet<i32>,
    /// shmid -> the engine's mapping of a shared anonymous object other tasks map too (already
    /// filled).
    pub shm: std::collections::HashMap<u64, u64>,
    /// A free pid for a helper process that shares a big fill (none: the task fills alone).
    pub helper_pid: Option<i32>,
    /// Give wholly saved 2 MiB blocks of private anonymous memory a huge page each
    /// (`MADV_COLLAPSE`) before filling them.
    pub huge_pages: bool,
    /// Fill small pages of private anonymous memory with `UFFDIO_COPY` where it can.
    pub uffd: bool,
    /// The parent's areas this task may take over (see [`CowArea`]).
    pub cow_from: Vec<CowArea>,
    /// Lazy restore: the task's lazy areas at their final addresses and its connection.
    pub lazy: Option<crate::lazy::restore::ChildLazy>,
}
