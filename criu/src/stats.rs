//! Dump and restore statistics, as CRIU keeps them: the times and page counts of one run,
//! written into the images directory (`stats-dump`, `stats-restore`: CRIU's `stats_entry`, read
//! by `crit`) and printed at the end by `--display-stats` in CRIU's words.
//!
//! The memory times are sums over the threads that copy pages (the copy pipeline reads the task
//! on one thread while it writes the file on another, so the two can add up to more than the
//! wall time of the memory phase): `memdump_time` is the time spent reading task memory
//! (`process_vm_readv`, `/proc/PID/mem`, or filling a mapped pages file straight from the
//! task), `memwrite_time` the time spent writing pages files. They are process-wide counters,
//! reset at the start of each dump: two dumps run at once by one process share them.
//!
//! A dump or restore with a lot of memory can also report its progress (pages written out of
//! pages to write, pages restored out of pages to restore) through a callback the binary
//! installs ([`set_progress`]); the library prints nothing.
//!
//! ```
//! use criu_images::pb::{DumpStatsEntry, StatsEntry};
//! let e = StatsEntry {
//!     dump: Some(DumpStatsEntry { pages_written: 3, ..Default::default() }),
//!     restore: None,
//! };
//! assert!(criu::stats::display(&e).contains("Memory pages written: 3 (0x3)"));
//! ```

use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criu_images::pb::{DumpStatsEntry, RestoreStatsEntry, StatsEntry};
use criu_images::{ImageError, magic, names};

static MEMDUMP_NS: AtomicU64 = AtomicU64::new(0);
static MEMWRITE_NS: AtomicU64 = AtomicU64::new(0);
/// Shared-memory pages (memfd content) scanned and written outside the task page dump.
static SHPAGES_SCANNED: AtomicU64 = AtomicU64::new(0);
static SHPAGES_WRITTEN: AtomicU64 = AtomicU64::new(0);
/// Time spent finding watched inodes' paths by scanning (CRIU's irmap).
static IRMAP_NS: AtomicU64 = AtomicU64::new(0);

/// Sets the counters of this process back to zero (at the start of a dump).
pub(crate) fn reset() {
    for c in [
        &MEMDUMP_NS,
        &MEMWRITE_NS,
        &SHPAGES_SCANNED,
        &SHPAGES_WRITTEN,
        &IRMAP_NS,
    ] {
        c.store(0, Ordering::Relaxed);
    }
}

/// Counts shared-memory pages a file kind scanned and wrote into the images (memfd content):
/// `shpages_scanned`/`shpages_written` of `stats-dump`, as CRIU counts them.
pub(crate) fn add_shpages(scanned: u64, written: u64) {
    SHPAGES_SCANNED.fetch_add(scanned, Ordering::Relaxed);
    SHPAGES_WRITTEN.fetch_add(written, Ordering::Relaxed);
}

/// The pages counted with [`add_shpages`] since the last [`reset`]: (scanned, written).
pub(crate) fn shpages() -> (u64, u64) {
    (
        SHPAGES_SCANNED.load(Ordering::Relaxed),
        SHPAGES_WRITTEN.load(Ordering::Relaxed),
    )
}

/// Runs `f`, counting its time as reading task memory.
pub(crate) fn memdump<T>(f: impl FnOnce() -> T) -> T {
    timed(&MEMDUMP_NS, f)
}

/// Runs `f`, counting its time as finding a path by a scan (`irmap_resolve`).
pub(crate) fn irmap<T>(f: impl FnOnce() -> T) -> T {
    timed(&IRMAP_NS, f)
}

/// Runs `f`, counting its time as writing pages.
pub(crate) fn memwrite<T>(f: impl FnOnce() -> T) -> T {
    timed(&MEMWRITE_NS, f)
}

fn timed<T>(counter: &AtomicU64, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let r = f();
    counter.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
    r
}

/// Microseconds in CRIU's `u32` fields (saturating: 71 minutes and more read as the maximum).
fn us(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

fn us_of(counter: &AtomicU64) -> u32 {
    us(Duration::from_nanos(counter.load(Ordering::Relaxed)))
}

/// What a dump counted, besides the memory times kept in this module.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DumpCounts {
    /// From the first seize to the whole tree frozen.
    pub freezing: Duration,
    /// From the tree frozen to the images written.
    pub frozen: Duration,
    /// Private pages looked at in the tasks' memory.
    pub pages_scanned: u64,
    /// Private pages left to the parent images (incremental dumps).
    pub pages_skipped_parent: u64,
    /// Private pages written into pages files.
    pub pages_written: u64,
    /// Shared memory (`shmem` objects): pages scanned and written.
    pub shpages: (u64, u64),
}

/// The dump's `stats_entry`, with the memory times counted so far.
pub(crate) fn dump_entry(c: &DumpCounts) -> StatsEntry {
    StatsEntry {
        dump: Some(DumpStatsEntry {
            freezing_time: us(c.freezing),
            frozen_time: us(c.frozen),
            memdump_time: us_of(&MEMDUMP_NS),
            memwrite_time: us_of(&MEMWRITE_NS),
            pages_scanned: c.pages_scanned,
            pages_skipped_parent: c.pages_skipped_parent,
            pages_written: c.pages_written,
            // As CRIU writes them: every optional field present (no page pipes here).
            irmap_resolve: Some(us_of(&IRMAP_NS)),
            pages_lazy: 0,
            page_pipes: Some(0),
            page_pipe_bufs: Some(0),
            shpages_scanned: Some(c.shpages.0),
            shpages_skipped_parent: Some(0),
            shpages_written: Some(c.shpages.1),
        }),
        restore: None,
    }
}

/// Writes `stats-dump` into `dir`.
///
/// # Errors
/// I/O errors of the image.
pub(crate) fn write_dump(dir: &Path, c: &DumpCounts) -> Result<(), ImageError> {
    criu_images::write_all(dir.join(names::STATS_DUMP), magic::STATS, [&dump_entry(c)])
}

/// Writes `stats-restore` into `dir`: the time the tasks took to be created (`forking`), the
/// whole restore (`restore`) and the pages brought back into memory (private pages, and shared
/// ones once per mapping of them). A failure is logged, not fatal: the
/// tree is restored by then, and the images directory may be read-only.
pub(crate) fn write_restore(dir: &Path, forking: Duration, restore: Duration, pages: u64) {
    let e = StatsEntry {
        dump: None,
        restore: Some(RestoreStatsEntry {
            pages_compared: 0,
            pages_skipped_cow: 0,
            forking_time: us(forking),
            restore_time: us(restore),
            pages_restored: Some(pages),
        }),
    };
    if let Err(e) = criu_images::write_all(dir.join(names::STATS_RESTORE), magic::STATS, [&e]) {
        tracing::warn!("writing {}: {e}", names::STATS_RESTORE);
    }
}

/// Which statistics to read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `stats-dump` (also written by `pre-dump`).
    Dump,
    /// `stats-restore`.
    Restore,
}

/// Reads `stats-dump` or `stats-restore` from `dir`.
///
/// # Errors
/// The file is missing or is not a stats image.
pub fn read(dir: &Path, kind: Kind) -> Result<StatsEntry, ImageError> {
    let name = match kind {
        Kind::Dump => names::STATS_DUMP,
        Kind::Restore => names::STATS_RESTORE,
    };
    criu_images::read_single(dir.join(name), magic::STATS)
}

/// `--display-stats` (and `display_stats` of an RPC request): prints the statistics of `kind`
/// in `dir` on criu's standard output, as CRIU does (in `swrk` mode that is the client's). A
/// missing or unreadable file is logged, not fatal: the run itself succeeded.
pub fn show(dir: &Path, kind: Kind) {
    use std::io::Write;
    match read(dir, kind) {
        Ok(e) => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(display(&e).as_bytes());
            let _ = out.flush();
        }
        Err(e) => tracing::warn!("cannot display the statistics: {e}"),
    }
}

/// The statistics as `criu --display-stats` prints them at the end of a run, one per line, in
/// CRIU's words and order (page counts in decimal and hex).
pub fn display(e: &StatsEntry) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let pages = |s: &mut String, what: &str, n: u64| {
        let _ = writeln!(s, "{what}: {n} ({n:#x})");
    };
    if let Some(d) = &e.dump {
        s.push_str("Displaying dump stats:\n");
        let _ = writeln!(s, "Freezing time: {} us", d.freezing_time);
        let _ = writeln!(s, "Frozen time: {} us", d.frozen_time);
        let _ = writeln!(s, "Memory dump time: {} us", d.memdump_time);
        let _ = writeln!(s, "Memory write time: {} us", d.memwrite_time);
        if let Some(t) = d.irmap_resolve {
            let _ = writeln!(s, "IRMAP resolve time: {t} us");
        }
        pages(&mut s, "Memory pages scanned", d.pages_scanned);
        pages(
            &mut s,
            "Memory pages skipped from parent",
            d.pages_skipped_parent,
        );
        pages(&mut s, "Memory pages written", d.pages_written);
        pages(&mut s, "Lazy memory pages", d.pages_lazy);
    }
    if let Some(r) = &e.restore {
        s.push_str("Displaying restore stats:\n");
        pages(&mut s, "Pages compared", r.pages_compared);
        pages(&mut s, "Pages skipped COW", r.pages_skipped_cow);
        if let Some(n) = r.pages_restored {
            pages(&mut s, "Pages restored", n);
        }
        let _ = writeln!(s, "Restore time: {} us", r.restore_time);
        let _ = writeln!(s, "Forking time: {} us", r.forking_time);
    }
    s
}

/// What a [`Progress`] report counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressKind {
    /// Pages of one process written into its pages file (dump, pre-dump).
    Written,
    /// Pages of a restored tree put back into its memory.
    Restored,
}

impl ProgressKind {
    /// The word for the pages counted: `written`, `restored`.
    pub fn word(self) -> &'static str {
        match self {
            ProgressKind::Written => "written",
            ProgressKind::Restored => "restored",
        }
    }
}

/// One report of a dump's or restore's progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// What is counted.
    pub kind: ProgressKind,
    /// The process whose pages are being written, or the root of the tree being restored.
    pub pid: i32,
    /// Pages done so far.
    pub done: u64,
    /// Pages to do.
    pub total: u64,
}

/// Where progress goes: set once per process by [`set_progress`].
type ProgressSink = Box<dyn Fn(Progress) + Send + Sync>;
static PROGRESS: OnceLock<ProgressSink> = OnceLock::new();

/// The least memory of one process whose copy (or of a tree whose restore) reports progress
/// (256 MiB).
pub const PROGRESS_MIN_BYTES: u64 = 256 << 20;

/// Installs `sink` to receive the progress of every pages file, and of every restored tree, of
/// at least [`PROGRESS_MIN_BYTES`]: a report about every 1 % and one at the end. The first call wins
/// (the binary calls it once, when it has a terminal to draw on).
pub fn set_progress(sink: impl Fn(Progress) + Send + Sync + 'static) {
    let _ = PROGRESS.set(Box::new(sink));
}

/// Counts the bytes written into one pages file (or put back into a restored tree) and
/// reports them to the installed sink.
pub(crate) struct ProgressMeter {
    kind: ProgressKind,
    pid: i32,
    total: u64,
    done: u64,
    next: u64,
}

impl ProgressMeter {
    /// A meter for `total` bytes of `pid`; `None` when nobody listens or the copy is small.
    pub(crate) fn new(pid: i32, total: u64) -> Option<ProgressMeter> {
        Self::of(ProgressKind::Written, pid, total)
    }

    /// A meter for `total` bytes restored into the tree of `root`; `None` as for [`Self::new`].
    pub(crate) fn restoring(root: i32, total: u64) -> Option<ProgressMeter> {
        Self::of(ProgressKind::Restored, root, total)
    }

    fn of(kind: ProgressKind, pid: i32, total: u64) -> Option<ProgressMeter> {
        (total >= PROGRESS_MIN_BYTES && PROGRESS.get().is_some()).then_some(ProgressMeter {
            kind,
            pid,
            total,
            done: 0,
            next: 0,
        })
    }

    /// Adds `n` bytes written.
    pub(crate) fn add(&mut self, n: u64) {
        self.done = (self.done + n).min(self.total);
        if self.done >= self.next || self.done == self.total {
            self.next = self.done + self.total / 100;
            if let Some(sink) = PROGRESS.get() {
                let page = criu_images::pagemap::PAGE_SIZE;
                sink(Progress {
                    kind: self.kind,
                    pid: self.pid,
                    done: self.done / page,
                    total: self.total / page,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_uses_criu_words() {
        let e = StatsEntry {
            dump: Some(DumpStatsEntry {
                freezing_time: 10,
                frozen_time: 20,
                memdump_time: 30,
                memwrite_time: 40,
                pages_scanned: 255,
                pages_written: 16,
                ..Default::default()
            }),
            restore: Some(RestoreStatsEntry {
                forking_time: 5,
                restore_time: 6,
                pages_restored: Some(7),
                ..Default::default()
            }),
        };
        let s = display(&e);
        for line in [
            "Displaying dump stats:",
            "Freezing time: 10 us",
            "Frozen time: 20 us",
            "Memory dump time: 30 us",
            "Memory write time: 40 us",
            "Memory pages scanned: 255 (0xff)",
            "Memory pages skipped from parent: 0 (0x0)",
            "Memory pages written: 16 (0x10)",
            "Lazy memory pages: 0 (0x0)",
            "Displaying restore stats:",
            "Pages restored: 7 (0x7)",
            "Restore time: 6 us",
            "Forking time: 5 us",
        ] {
            assert!(s.lines().any(|l| l == line), "{line:?} missing in {s}");
        }
        assert!(!s.contains("IRMAP"));
    }

    #[test]
    fn times_saturate() {
        assert_eq!(us(Duration::from_secs(1 << 40)), u32::MAX);
        assert_eq!(us(Duration::from_micros(7)), 7);
    }
}
