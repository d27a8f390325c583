//! The contract between criu's restore engine and the restorer blob: the argument block the
//! engine lays out in the restored task and the status records the restorer sends back.
//!
//! This one `no_std` module is compiled by both sides (the restorer crate owns it; the engine
//! uses it as `parasite_blobs::restorer::proto`, like every parasite's `proto`), every type is
//! `#[repr(C)]` with its size pinned by a `const` assertion, and every address is a plain `u64`
//! in the restored task's address space.

#![allow(dead_code)]

use core::mem::size_of;

/// `RestorerArgs::magic`: "RSTORER1" (little-endian bytes).
pub const ARGS_MAGIC: u64 = u64::from_le_bytes(*b"RSTORER1");
/// `RestorerArgs::version`: bumped on every layout change.
pub const ARGS_VERSION: u32 = 4;
/// The most address ranges the restorer keeps while it unmaps everything else.
pub const MAX_KEEP: usize = 8;
/// The most special mappings (`[vvar]`, `[vvar_vclock]`, `[vdso]`) moved into place.
pub const MAX_VDSO: usize = 4;
/// Signals 1..=64.
pub const NSIG: usize = 64;
/// `RLIM_NLIMITS` on Linux.
pub const NRLIMITS: usize = 16;
/// Size of a `siginfo_t`.
pub const SIGINFO_SIZE: usize = 128;
/// "Leave this setting as it is" for the `i32` settings of [`RestorerArgs`].
pub const KEEP: i32 = -1;

/// A half-open address range `[start, end)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Range {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

/// One `mremap`: `len` bytes from `from` to `to`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Move {
    /// Current address (premapped).
    pub from: u64,
    /// Final address.
    pub to: u64,
    /// Length in bytes (page multiple).
    pub len: u64,
}

/// The kernel's `struct sigaction` for `rt_sigaction` on x86_64.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KSigaction {
    /// Handler address, or 0 (`SIG_DFL`) / 1 (`SIG_IGN`).
    pub handler: u64,
    /// `SA_*` flags.
    pub flags: u64,
    /// `sa_restorer`.
    pub restorer: u64,
    /// Signals blocked while the handler runs.
    pub mask: u64,
}

/// `struct rlimit64`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rlimit {
    /// Soft limit.
    pub cur: u64,
    /// Hard limit.
    pub max: u64,
}

/// `struct itimerval` (two `struct timeval`: interval then value).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Itimerval {
    /// Interval seconds.
    pub interval_sec: i64,
    /// Interval microseconds.
    pub interval_usec: i64,
    /// Remaining seconds.
    pub value_sec: i64,
    /// Remaining microseconds.
    pub value_usec: i64,
}

/// One POSIX timer to recreate with its id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PosixTimer {
    /// The timer id the task knows.
    pub id: i32,
    /// `CLOCK_*`.
    pub clock_id: i32,
    /// `SIGEV_*`.
    pub notify: i32,
    /// Signal sent on expiry.
    pub signo: i32,
    /// Thread for `SIGEV_THREAD_ID`.
    pub notify_tid: i32,
    /// Padding.
    pub pad: i32,
    /// `sigev_value`.
    pub value: u64,
    /// Interval seconds.
    pub interval_sec: i64,
    /// Interval nanoseconds.
    pub interval_nsec: i64,
    /// Remaining seconds.
    pub value_sec: i64,
    /// Remaining nanoseconds.
    pub value_nsec: i64,
}

/// Credentials to install.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Creds {
    /// Real uid.
    pub uid: u32,
    /// Effective uid.
    pub euid: u32,
    /// Saved uid.
    pub suid: u32,
    /// Filesystem uid.
    pub fsuid: u32,
    /// Real gid.
    pub gid: u32,
    /// Effective gid.
    pub egid: u32,
    /// Saved gid.
    pub sgid: u32,
    /// Filesystem gid.
    pub fsgid: u32,
    /// `SECBIT_*` securebits.
    pub secbits: u32,
    /// Number of supplementary groups at `groups`.
    pub ngroups: u32,
    /// Address of `ngroups` `u32` gids.
    pub groups: u64,
    /// Inheritable capabilities (low, high word).
    pub cap_inh: [u32; 2],
    /// Permitted capabilities.
    pub cap_prm: [u32; 2],
    /// Effective capabilities.
    pub cap_eff: [u32; 2],
    /// Bounding set.
    pub cap_bnd: [u32; 2],
    /// Ambient set.
    pub cap_amb: [u32; 2],
}

/// The kernel's `struct prctl_mm_map` (for `PR_SET_MM_MAP`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct MmMap {
    pub start_code: u64,
    pub end_code: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub brk: u64,
    pub start_stack: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
    /// Address of the saved auxv words.
    pub auxv: u64,
    /// Size of the auxv in bytes.
    pub auxv_size: u32,
    /// An fd of the executable, or `u32::MAX` to leave `/proc/PID/exe` alone.
    pub exe_fd: u32,
}

/// Everything the restorer needs, laid out by the engine inside the restorer's data area.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RestorerArgs {
    /// [`ARGS_MAGIC`].
    pub magic: u64,
    /// [`ARGS_VERSION`].
    pub version: u32,
    /// `size_of::<RestorerArgs>()` as the engine saw it.
    pub size: u32,
    /// Where [`Status`] records go (a pipe to the engine); closed before the final return.
    pub status_fd: i32,
    /// Number of entries of `keep`.
    pub n_keep: u32,
    /// Ranges left mapped while everything else below `task_size` is unmapped.
    pub keep: [Range; MAX_KEEP],
    /// The top of the user address space.
    pub task_size: u64,
    /// The rseq area the engine's thread had registered (unregistered first), address or 0.
    pub old_rseq: u64,
    /// Its length.
    pub old_rseq_len: u32,
    /// Its signature.
    pub old_rseq_sig: u32,
    /// Number of entries of `vdso`.
    pub n_vdso: u32,
    /// Padding.
    pub pad0: u32,
    /// This kernel's special mappings: from where they are to where the task had them.
    pub vdso: [Move; MAX_VDSO],
    /// A reserved range, large enough for all of `vdso`, used as a stepping stone.
    pub vdso_scratch: u64,
    /// Address of `n_vmas` [`Move`]s: premapped areas to their final places.
    pub vmas: u64,
    /// Number of VMA moves.
    pub n_vmas: u64,
    /// Memory-map descriptors and the executable; applied when `set_mm` is nonzero.
    pub mm: MmMap,
    /// Whether to apply `mm`.
    pub set_mm: u32,
    /// Whether `sigactions` is to be applied.
    pub set_sigactions: u32,
    /// Handlers of signals 1..=64 (index `sig - 1`); SIGKILL and SIGSTOP are skipped.
    pub sigactions: [KSigaction; NSIG],
    /// Number of `rlimits` to apply (resource `i` at index `i`).
    pub n_rlimits: u32,
    /// Bit `i` set: apply itimer `i` (`ITIMER_REAL`, `_VIRTUAL`, `_PROF`).
    pub itimers_mask: u32,
    /// Resource limits.
    pub rlimits: [Rlimit; NRLIMITS],
    /// Interval timers.
    pub itimers: [Itimerval; 3],
    /// Address of `n_posix_timers` [`PosixTimer`]s.
    pub posix_timers: u64,
    /// Number of POSIX timers.
    pub n_posix_timers: u32,
    /// `personality(2)` value, or [`KEEP`].
    pub personality: i32,
    /// `PR_SET_DUMPABLE` value, or [`KEEP`].
    pub dumpable: i32,
    /// `PR_SET_THP_DISABLE` value, or [`KEEP`].
    pub thp_disabled: i32,
    /// `PR_SET_CHILD_SUBREAPER` value, or [`KEEP`].
    pub child_subreaper: i32,
    /// Stop (`SIGSTOP` to itself) after reporting [`STAGE_READY`], so that the engine, which
    /// traces the task, can run its hooks and catch the final `rt_sigreturn`.
    pub stop_before_return: u32,
    /// Address of the process-wide pending signals' `siginfo_t`s ([`SIGINFO_SIZE`] bytes each).
    pub shared_siginfo: u64,
    /// How many.
    pub n_siginfo_shared: u32,
    /// Number of [`ThreadState`]s at `threads` (every thread, the leader first: at least one).
    pub n_threads: u32,
    /// Address of the threads' [`ThreadState`]s, the leader's first.
    pub threads: u64,
    /// How many threads besides the leader are in place (each adds one; a futex word for the
    /// leader).
    pub threads_ready: u32,
    /// Padding.
    pub pad2: u32,
}

/// A thread's seccomp state. Installed while the engine traces the task with
/// `PTRACE_O_SUSPEND_SECCOMP`, so the filters bind only once it lets the task go.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Seccomp {
    /// 0: none, 1: `SECCOMP_MODE_STRICT`, 2: `SECCOMP_MODE_FILTER`.
    pub mode: u32,
    /// Number of [`SeccompFilter`]s at `filters`.
    pub n_filters: u32,
    /// Address of the filters, oldest first.
    pub filters: u64,
}

/// One seccomp filter program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SeccompFilter {
    /// Address of its `struct sock_filter`s.
    pub prog: u64,
    /// How many.
    pub len: u32,
    /// `SECCOMP_FILTER_FLAG_*`.
    pub flags: u32,
}

/// One thread's own state, the same record for every thread: the leader installs its own after
/// the process-wide state; each other thread is created by the leader with its old tid on its
/// own stack, installs its state and returns into its own registers.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ThreadState {
    /// The thread id to recreate.
    pub tid: i32,
    /// Whether `creds` is to be applied.
    pub set_creds: u32,
    /// Top of the thread's restorer stack (16-byte aligned; the leader runs on the restorer's
    /// own stack).
    pub stack_top: u64,
    /// Its size.
    pub stack_size: u64,
    /// The stack pointer for its final `rt_sigreturn`.
    pub sigframe_sp: u64,
    /// Its fs base.
    pub fs_base: u64,
    /// Its gs base.
    pub gs_base: u64,
    /// `set_tid_address` value, or 0.
    pub clear_tid_addr: u64,
    /// `set_robust_list` head, or 0.
    pub robust_list: u64,
    /// Its length.
    pub robust_list_len: u64,
    /// Its rseq area, or 0.
    pub rseq: u64,
    /// Its length.
    pub rseq_len: u32,
    /// Its signature.
    pub rseq_sig: u32,
    /// Address of its pending signals' `siginfo_t`s.
    pub siginfo: u64,
    /// How many.
    pub n_siginfo: u32,
    /// `PR_SET_PDEATHSIG` value, or [`KEEP`].
    pub pdeath_sig: i32,
    /// Its name (`PR_SET_NAME`), NUL-padded; empty: keep.
    pub comm: [u8; 16],
    /// Its credentials.
    pub creds: Creds,
    /// 1: set no_new_privs.
    pub no_new_privs: i32,
    /// Padding.
    pub pad: u32,
    /// Its seccomp state.
    pub seccomp: Seccomp,
}

/// The address of `RestorerArgs::threads_ready` relative to the block (for the futex).
pub const THREADS_READY_OFFSET: usize = core::mem::offset_of!(RestorerArgs, threads_ready);

/// What the restorer writes to `status_fd`: a stage and, on failure, the errno.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// One of the `STAGE_*` values.
    pub stage: u32,
    /// 0 on success (only with [`STAGE_READY`]), else the positive errno.
    pub errno: i32,
    /// A stage-specific detail (the address, signal or resource that failed).
    pub detail: u64,
}

/// Everything is in place; only the final return is left.
pub const STAGE_READY: u32 = 0;
/// The argument block is not what this restorer understands.
pub const STAGE_ARGS: u32 = 1;
/// Unregistering the engine's rseq area.
pub const STAGE_OLD_RSEQ: u32 = 2;
/// Unmapping the engine's own memory.
pub const STAGE_UNMAP: u32 = 3;
/// Moving the vDSO/vvar.
pub const STAGE_VDSO: u32 = 4;
/// Moving premapped memory into place.
pub const STAGE_VMA: u32 = 5;
/// `PR_SET_MM_MAP`.
pub const STAGE_MM: u32 = 6;
/// Signal handlers.
pub const STAGE_SIGACTION: u32 = 7;
/// Resource limits.
pub const STAGE_RLIMIT: u32 = 8;
/// Interval timers.
pub const STAGE_ITIMER: u32 = 9;
/// POSIX timers.
pub const STAGE_POSIX_TIMER: u32 = 10;
/// Credentials.
pub const STAGE_CREDS: u32 = 11;
/// Personality and prctl settings.
pub const STAGE_PRCTL: u32 = 12;
/// Thread settings (tid address, robust list, rseq).
pub const STAGE_THREAD: u32 = 13;
/// Queueing pending signals.
pub const STAGE_SIGQUEUE: u32 = 14;
/// Creating the other threads.
pub const STAGE_THREADS: u32 = 15;
/// Installing seccomp filters.
pub const STAGE_SECCOMP: u32 = 16;

/// A short name for a stage, for error messages.
pub fn stage_name(stage: u32) -> &'static str {
    match stage {
        STAGE_READY => "ready",
        STAGE_ARGS => "argument check",
        STAGE_OLD_RSEQ => "rseq unregistration",
        STAGE_UNMAP => "unmapping the restorer's host",
        STAGE_VDSO => "vdso move",
        STAGE_VMA => "memory move",
        STAGE_MM => "mm descriptors",
        STAGE_SIGACTION => "signal handlers",
        STAGE_RLIMIT => "resource limits",
        STAGE_ITIMER => "interval timers",
        STAGE_POSIX_TIMER => "posix timers",
        STAGE_CREDS => "credentials",
        STAGE_PRCTL => "personality and prctl settings",
        STAGE_THREAD => "thread settings",
        STAGE_SIGQUEUE => "pending signals",
        STAGE_THREADS => "creating threads",
        STAGE_SECCOMP => "seccomp filters",
        _ => "unknown stage",
    }
}

const _: () = assert!(size_of::<Range>() == 16);
const _: () = assert!(size_of::<Move>() == 24);
const _: () = assert!(size_of::<KSigaction>() == 32);
const _: () = assert!(size_of::<Rlimit>() == 16);
const _: () = assert!(size_of::<Itimerval>() == 32);
const _: () = assert!(size_of::<PosixTimer>() == 64);
const _: () = assert!(size_of::<Creds>() == 88);
const _: () = assert!(size_of::<MmMap>() == 104);
const _: () = assert!(size_of::<Status>() == 16);
const _: () = assert!(size_of::<Seccomp>() == 16);
const _: () = assert!(size_of::<SeccompFilter>() == 16);
const _: () = assert!(size_of::<RestorerArgs>() == 2888);
const _: () = assert!(size_of::<ThreadState>() == 232);
