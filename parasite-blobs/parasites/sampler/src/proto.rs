//! The sampler parasite's command, shared with the host (`parasite_blobs::sampler::proto`).

use compel_proto::Plain;
use compel_proto::rpc::CMD_USER;

/// Takes one sample from inside the task into a [`Sample`].
pub const CMD_SAMPLE: u32 = CMD_USER;

/// Arguments and results of [`CMD_SAMPLE`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// An address in the task to read a `u64` from, or 0 for none (argument).
    pub addr: u64,
    /// The `u64` at `addr`.
    pub value: u64,
    /// 0, or the errno of reading `addr` (a bad address is `EFAULT`, never a crash).
    pub value_errno: i32,
    /// The pid the task sees for itself.
    pub pid: i32,
    /// CPU time the whole process used, in nanoseconds (`CLOCK_PROCESS_CPUTIME_ID`).
    pub cpu_ns: u64,
    /// Peak resident set size in KiB (`getrusage(RUSAGE_SELF)`).
    pub maxrss_kib: u64,
}
const _: () = assert!(core::mem::size_of::<Sample>() == 40);
// SAFETY: repr(C), integers only, no padding (8 + 8 + 4 + 4 + 8 + 8).
unsafe impl Plain for Sample {}
