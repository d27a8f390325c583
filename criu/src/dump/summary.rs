//! What a dump reports when it succeeds, and the marker it leaves while it runs.

/// The file a dump leaves in the images directory while it runs and when it fails (holding the
/// error); a complete dump has `inventory.img` and no marker.
pub const INCOMPLETE_MARKER: &str = "criu-dump-incomplete";
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
