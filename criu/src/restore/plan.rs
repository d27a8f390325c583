//! What a restore will do, decoded and checked: the task's memory layout, page contents, files,
//! and the state the restorer installs. Built from the images ([`super::images`]) before anything
//! runs, so that every problem with the images shows up while nothing has been created yet.

use std::ffi::CString;
use std::path::PathBuf;
use std::sync::Arc;

use compel_arch::UserRegs;

use super::abi;
use crate::files::RestoreFile;

/// The kind of a memory area.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmaKind {
    /// Private anonymous memory (heap, stack, guard pages, ...).
    AnonPrivate,
    /// Shared anonymous memory; `shmid` names its content (`pagemap-shmem-SHMID.img`).
    AnonShared {
        /// The id of the shared object.
        shmid: u64,
    },
    /// A private mapping of a file (modified pages come from the images).
    FilePrivate {
        /// The file.
        path: CString,
    },
    /// A shared mapping of a file (the content lives in the file).
    FileShared {
        /// The file.
        path: CString,
        /// Open it for writing too.
        writable: bool,
    },
    /// The kernel's vDSO code.
    Vdso,
    /// The kernel's vDSO data (`[vvar]` and `[vvar_vclock]`).
    Vvar,
    /// `[vsyscall]` (fixed by the kernel, nothing to do).
    Vsyscall,
}

/// One memory area of the task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vma {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// File offset of `start` for file mappings.
    pub pgoff: u64,
    /// `PROT_*`.
    pub prot: i32,
    /// `MAP_*` flags as dumped (`MAP_PRIVATE`/`MAP_SHARED`, `MAP_ANONYMOUS`, `MAP_GROWSDOWN`).
    pub flags: i32,
    /// Bit `n` set: `madvise(MADV n)` applies.
    pub madv: u64,
    /// What it is.
    pub kind: VmaKind,
}

impl Vma {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the area is empty.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// Whether the area is rebuilt by premapping (as opposed to the kernel's special areas).
    pub fn premapped(&self) -> bool {
        !matches!(self.kind, VmaKind::Vdso | VmaKind::Vvar | VmaKind::Vsyscall)
    }
}

/// A run of saved pages: `nr_pages` pages for `vaddr..` stored at `offset` in page file `file`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRun {
    /// First address.
    pub vaddr: u64,
    /// Number of pages.
    pub nr_pages: u64,
    /// Index into [`TaskPlan::page_files`].
    pub file: usize,
    /// Byte offset in that file.
    pub offset: u64,
}

/// Where a descriptor comes from: an open file of some kind (see [`crate::files`]), or the
/// same open file as an earlier descriptor of the task.
#[derive(Clone, Debug)]
pub enum FdSource {
    /// The same open file as an earlier descriptor.
    Dup {
        /// That descriptor.
        of: i32,
    },
    /// An open file, parsed by its kind.
    File(Arc<dyn RestoreFile>),
}

/// One descriptor of the task.
#[derive(Clone, Debug)]
pub struct Fd {
    /// The descriptor number.
    pub fd: i32,
    /// The open file's id in `files.img` (descriptors of several tasks with one id share one
    /// open file).
    pub file_id: u32,
    /// `FD_CLOEXEC`.
    pub cloexec: bool,
    /// Where it comes from.
    pub source: FdSource,
    /// Status flags and owner of its open file (set on the first descriptor of the file).
    pub status: Option<crate::files::FileStatus>,
}

/// Credentials with the supplementary groups.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CredsPlan {
    /// Everything but the groups (`groups`/`ngroups` are filled when laid out).
    pub creds: abi::Creds,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

/// The FPU state as saved: the legacy fxsave area and the extended components.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FpuPlan {
    /// The 512-byte legacy area (x87, SSE).
    pub legacy: Vec<u8>,
    /// `XSTATE_BV`: which components hold state.
    pub xstate_bv: u64,
    /// Extended components: (component number, bytes).
    pub components: Vec<(u32, Vec<u8>)>,
}

/// One thread of a task: its registers and what the kernel keeps per thread.
#[derive(Clone, Debug, Default)]
pub struct ThreadPlan {
    /// Its thread id.
    pub tid: i32,
    /// General registers.
    pub regs: UserRegs,
    /// FPU state.
    pub fpu: FpuPlan,
    /// Blocked signals.
    pub sigmask: u64,
    /// Alternate signal stack (`ss_sp`, `ss_flags`, `ss_size`).
    pub altstack: Option<AltStack>,
    /// `set_tid_address` value.
    pub clear_tid_addr: u64,
    /// Robust futex list (head, len).
    pub robust_list: RobustList,
    /// rseq registration (area, len, signature).
    pub rseq: Option<Rseq>,
    /// Pending signals of this thread.
    pub pending: Vec<[u8; abi::SIGINFO_SIZE]>,
    /// Credentials.
    pub creds: Option<CredsPlan>,
    /// no_new_privs.
    pub no_new_privs: bool,
    /// Parent-death signal.
    pub pdeath_sig: Option<i32>,
    /// Its name.
    pub comm: Option<String>,
    /// Its seccomp mode and filters.
    pub seccomp: Option<SeccompPlan>,
}

impl TaskPlan {
    /// Whether a thread goes back under seccomp.
    pub fn under_seccomp(&self) -> bool {
        self.threads.iter().any(|t| t.seccomp.is_some())
    }

    /// The leader thread (`None` only for a zombie).
    pub fn leader(&self) -> Option<&ThreadPlan> {
        self.threads.first()
    }

    /// The threads besides the leader.
    pub fn others(&self) -> &[ThreadPlan] {
        self.threads.get(1..).unwrap_or(&[])
    }
}

/// A thread's seccomp state: strict mode, or filter mode with its filters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SeccompPlan {
    /// `SECCOMP_MODE_STRICT` (1) or `SECCOMP_MODE_FILTER` (2).
    pub mode: u32,
    /// In filter mode, the index of the thread's newest filter in `seccomp.img`.
    pub newest: Option<u32>,
    /// Its filters, oldest first (resolved from `newest` once `seccomp.img` is read): the
    /// program (`struct sock_filter`s, 8 bytes each) and the `SECCOMP_FILTER_FLAG_*`s.
    pub filters: Vec<(Vec<u8>, u32)>,
}

/// Everything needed to bring back one task: what the whole process shares here, what each
/// thread has of its own in [`TaskPlan::threads`] (the leader first).
#[derive(Clone, Debug, Default)]
pub struct TaskPlan {
    /// The pid to recreate.
    pub pid: i32,
    /// Deleted directories made again for its cwd or root, removed once the plan is dropped.
    pub ghosts: Vec<std::sync::Arc<crate::files::regular::GhostFile>>,
    /// memfds its areas map (made by the engine, reached through its descriptors), kept until
    /// the plan is dropped.
    pub memfds: Vec<std::sync::Arc<crate::files::memfd::MemfdInode>>,
    /// Its parent's pid (0 for the root of the tree).
    pub ppid: i32,
    /// A zombie: the raw exit status it ends with (`exit_code` of its core); nothing else of
    /// the plan is used then.
    pub zombie: Option<u32>,
    /// Not a task of the images but a helper with the pid of a group leader that had exited:
    /// it makes the group for the tree's members of it, then ends and its parent reaps it
    /// (with [`TaskPlan::zombie`] set, as it ends like a zombie).
    pub helper: bool,
    /// Its process group.
    pub pgid: i32,
    /// Its session.
    pub sid: i32,
    /// Its name.
    pub comm: String,
    /// All memory areas, sorted by address.
    pub vmas: Vec<Vma>,
    /// Saved page contents.
    pub pages: Vec<PageRun>,
    /// The page files the runs point into.
    pub page_files: Vec<PathBuf>,
    /// Descriptors, sorted by number.
    pub fds: Vec<Fd>,
    /// Working directory.
    pub cwd: Option<CString>,
    /// Root directory.
    pub root: Option<CString>,
    /// umask.
    pub umask: u32,
    /// The executable (for `/proc/PID/exe`).
    pub exe: Option<CString>,
    /// mm descriptors (auxv, exe fd are filled when laid out).
    pub mm: Option<abi::MmMap>,
    /// Saved auxiliary vector words.
    pub auxv: Vec<u64>,
    /// Handlers of signals 1..=64 (empty: leave).
    pub sigactions: Vec<abi::KSigaction>,
    /// Resource limits (resource `i` at index `i`).
    pub rlimits: Vec<abi::Rlimit>,
    /// Interval timers real, virtual, prof (None: leave).
    pub itimers: [Option<abi::Itimerval>; 3],
    /// POSIX timers.
    pub posix_timers: Vec<abi::PosixTimer>,
    /// Personality.
    pub personality: Option<u32>,
    /// Dumpable.
    pub dumpable: Option<i32>,
    /// File locks to take once its descriptors are in place.
    pub locks: Vec<LockOp>,
    /// THP disabled.
    pub thp_disabled: Option<bool>,
    /// AIO rings: the area's start (the context id) and `io_setup`'s request count.
    pub aio: Vec<(u64, u32)>,
    /// Packet socket rings the task maps: the area's start and the socket's file id.
    pub packet_rings: Vec<(u64, u32)>,
    /// Child subreaper.
    pub child_subreaper: Option<bool>,
    /// Process-wide pending signals (raw `siginfo_t`s).
    pub pending_shared: Vec<[u8; abi::SIGINFO_SIZE]>,
    /// `oom_score_adj`.
    pub oom_score_adj: Option<i32>,
    /// The audit login uid (`/proc/PID/loginuid`; `u32::MAX` is unset).
    pub loginuid: Option<u32>,
    /// The `membarrier` registration commands its memory is registered for.
    pub membarrier: u32,
    /// `MADV_GUARD_INSTALL` ranges `(start, end)` inside its areas.
    pub guards: Vec<(u64, u64)>,
    /// The task was job-control stopped by this signal: it is stopped again after the restore.
    pub stop_signal: Option<i32>,
    /// Scheduling: nice value, policy and real-time priority.
    pub sched: Option<Sched>,
    /// Its threads, the leader first (none for a zombie).
    pub threads: Vec<ThreadPlan>,
    /// The id of its descriptor table (`ids-PID.img`; equal ids: one table, `CLONE_FILES`).
    pub files_id: u32,
    /// The id of its fs info (cwd, root, umask; equal ids: one, `CLONE_FS`).
    pub fs_id: u32,
}

/// How a task gets its session and process group when it is created (by its parent, which has
/// its own already).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionOp {
    /// Keep the parent's (or, for the root, criu's) session and group.
    Inherit,
    /// `setsid()`: lead a new session (and its group).
    Setsid,
    /// `setpgid(0, pgid)` (0: lead a new group).
    Setpgid(i32),
}

/// A whole tree to restore: its tasks in `pstree.img` order, the root first.
#[derive(Clone, Debug, Default)]
pub struct TreePlan {
    /// The tasks; zombies have only their ids and exit status.
    pub tasks: Vec<TaskPlan>,
    /// For each task, the index of its parent (`None` for the root).
    pub parent: Vec<Option<usize>>,
    /// For each task, its children's indices in image order.
    pub children: Vec<Vec<usize>>,
    /// Task indices in the order they are created: depth first, parents before children.
    pub order: Vec<usize>,
}

impl TreePlan {
    /// The root task.
    pub fn root(&self) -> &TaskPlan {
        &self.tasks[0]
    }

    /// Every pid and thread id the tree needs.
    pub fn all_ids(&self) -> impl Iterator<Item = i32> + '_ {
        self.tasks
            .iter()
            .flat_map(|t| std::iter::once(t.pid).chain(t.others().iter().map(|th| th.tid)))
    }

    /// The tasks that come back alive (not zombies).
    pub fn alive(&self) -> impl Iterator<Item = (usize, &TaskPlan)> + '_ {
        self.tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| t.zombie.is_none())
    }
}

/// A file lock to take through a descriptor of the new task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockOp {
    /// `flock` (2), a POSIX record lock (1) or an OFD record lock (4): CRIU's kinds.
    pub kind: u32,
    /// `F_RDLCK` or `F_WRLCK`.
    pub ltype: u32,
    /// The descriptor.
    pub fd: i32,
    /// First byte (record locks).
    pub start: i64,
    /// Length, 0 for "to the end" (record locks).
    pub len: i64,
}

/// An rseq registration: the area, its length and the signature of its abort handlers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rseq {
    /// The `struct rseq` area.
    pub area: u64,
    /// Its registered length.
    pub len: u32,
    /// The signature.
    pub sig: u32,
}

/// An alternate signal stack (`sigaltstack`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AltStack {
    /// `ss_sp`.
    pub sp: u64,
    /// `ss_flags`.
    pub flags: i32,
    /// `ss_size`.
    pub size: u64,
}

/// A robust futex list (`set_robust_list`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RobustList {
    /// The list head.
    pub head: u64,
    /// Its length.
    pub len: u64,
}

/// Scheduling: nice value, policy and real-time priority.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sched {
    /// The nice value.
    pub nice: i32,
    /// `SCHED_*`.
    pub policy: u32,
    /// Real-time priority.
    pub prio: u32,
}
