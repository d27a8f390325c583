//! The dump parasite's commands and payloads, shared with the host
//! (`parasite_blobs::dump::proto`): what criu's dump reads from inside the task, because only
//! the task itself may read it (or because one command beats a hundred remote syscalls).

use compel_proto::Plain;
use compel_proto::rpc::CMD_USER;

/// Reads the task's signal handlers, interval and POSIX timers, alternate signal stack,
/// resource limits, parent-death signal, dumpable flag, child-subreaper flag, securebits, THP
/// flag, clear-tid address and program break into a [`Misc`]. The host fills in
/// [`Misc::n_timers`] and [`Misc::timer_ids`] (from `/proc/PID/timers`).
pub const CMD_DUMP_MISC: u32 = CMD_USER;

/// The most POSIX timers one [`CMD_DUMP_MISC`] reads.
pub const MAX_TIMERS: usize = 64;

/// Arguments and results of [`CMD_DUMP_MISC`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Misc {
    /// `(handler, flags, restorer, mask)` of signal `n` at index `n - 1` (SIGKILL and SIGSTOP
    /// are left zero).
    pub sigactions: [[u64; 4]; 64],
    /// `ITIMER_REAL`, `ITIMER_VIRTUAL`, `ITIMER_PROF`: interval sec, usec, value sec, usec.
    pub itimers: [[u64; 4]; 3],
    /// POSIX timers (in): how many ids are in [`Misc::timer_ids`].
    pub n_timers: u32,
    /// Padding (zero).
    pub pad0: u32,
    /// POSIX timers (in): their ids.
    pub timer_ids: [i32; MAX_TIMERS],
    /// POSIX timers (out): interval sec, nsec, value sec, nsec of each id.
    pub timers: [[u64; 4]; MAX_TIMERS],
    /// POSIX timers (out): `timer_getoverrun` of each id.
    pub overruns: [u32; MAX_TIMERS],
    /// `sigaltstack`: sp, flags, size.
    pub sas: [u64; 3],
    /// `(soft, hard)` of `RLIMIT_*` 0..16.
    pub rlimits: [[u64; 2]; 16],
    /// `PR_GET_PDEATHSIG`.
    pub pdeath_sig: u32,
    /// `PR_GET_DUMPABLE`.
    pub dumpable: u32,
    /// `PR_GET_CHILD_SUBREAPER`.
    pub child_subreaper: u32,
    /// `PR_GET_SECUREBITS`.
    pub securebits: u32,
    /// `PR_GET_THP_DISABLE`.
    pub thp_disabled: u32,
    /// `membarrier(MEMBARRIER_CMD_GET_REGISTRATIONS)`: the registration commands this
    /// process's memory is registered for (0 where the kernel lacks the query).
    pub membarrier_mask: u32,
    /// `PR_GET_TID_ADDRESS` (0 where the kernel lacks it).
    pub clear_tid_addr: u64,
    /// `brk(0)`.
    pub brk: u64,
}

/// The size of [`Misc`]: 64*32 + 3*32 + 8 + 64*4 + 64*32 + 64*4 + 24 + 16*16 + 24 + 16.
pub const MISC_SIZE: usize = 2048 + 96 + 8 + 256 + 2048 + 256 + 24 + 256 + 24 + 16;
const _: () = assert!(core::mem::size_of::<Misc>() == MISC_SIZE);

impl Default for Misc {
    fn default() -> Self {
        Misc {
            sigactions: [[0; 4]; 64],
            itimers: [[0; 4]; 3],
            n_timers: 0,
            pad0: 0,
            timer_ids: [0; MAX_TIMERS],
            timers: [[0; 4]; MAX_TIMERS],
            overruns: [0; MAX_TIMERS],
            sas: [0; 3],
            rlimits: [[0; 2]; 16],
            pdeath_sig: 0,
            dumpable: 0,
            child_subreaper: 0,
            securebits: 0,
            thp_disabled: 0,
            membarrier_mask: 0,
            clear_tid_addr: 0,
            brk: 0,
        }
    }
}

// SAFETY: repr(C), only integers and arrays of integers, laid out without padding (the size
// assertion above sums the fields), so every byte pattern is a valid value.
unsafe impl Plain for Misc {}
