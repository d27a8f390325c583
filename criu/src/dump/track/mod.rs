//! Memory-change tracking without soft-dirty bits: asynchronous userfaultfd write-protection
//! (`UFFD_FEATURE_WP_ASYNC`) read back with `PAGEMAP_SCAN`.
//!
//! At the first tracked dump (a `criu pre-dump`, or `criu dump --track-mem`) a userfaultfd is
//! created *inside* each task with a remote `userfaultfd(2)` and moved to a high descriptor
//! ([`TRACK_FD_FLOOR`] below the task's `RLIMIT_NOFILE`), so that it belongs to the task's mm and
//! lives as long as the task keeps it: criu itself is a new process at every run. criu takes a
//! copy with `pidfd_getfd(2)` and, from outside, enables `UFFD_FEATURE_WP_ASYNC`, registers
//! every area whose pages it dumps (`UFFDIO_REGISTER_MODE_WP`) and write-protects it
//! (`UFFDIO_WRITEPROTECT`). From then on the kernel clears a page's write-protect bit on the
//! first write without stopping the task. The images directory names each task's descriptor
//! and the userfaultfd's inode in [`RECORD`], so the next run (given `--prev-images-dir`) finds
//! it again.
//!
//! At the next dump one `PAGEMAP_SCAN` per area (`PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC`,
//! category `PAGE_IS_WRITTEN`) returns the pages written since and write-protects them again
//! in the same call. Pages present but not written are the parent's (`PE_PARENT`). Private file
//! mappings are copied whole each time (see `trackable`). An area the
//! kernel no longer tracks (created, grown into a new area, or moved with `mremap` since: the
//! scan fails with `EPERM` under `PM_SCAN_CHECK_WPASYNC`) is copied whole, then registered. The
//! descriptor is never dumped (the fd listing skips it by inode), so a restored task does not
//! have it; a dump that leaves the tree running without `--track-mem` closes it.
// Unsafe code: userfaultfd ioctls on criu's copy of the task's userfaultfd.
#![allow(unsafe_code)]

mod record;
mod uffd;

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use compel::Task;
use criu_images::pagemap::PAGE_SIZE;
use criu_images::vma::status;

use super::error::DumpError;
use super::pagemap_scan::{
    PAGE_IS_GUARD, PAGE_IS_PFNZERO, PAGE_IS_PRESENT, PAGE_IS_WRITTEN, PM_SCAN_CHECK_WPASYNC,
    PM_SCAN_WP_MATCHING, PmScanArg, pm_scan,
};
use super::vma::Vma;
pub use record::{Recorded, link_parent, parent_record, write_record};
pub(crate) use uffd::probe;
use uffd::*;

/// The file in an images directory naming each task's tracking userfaultfd: lines of
/// `PID FD INODE`.
pub const RECORD: &str = "criu-track-mem";

/// The tracking descriptor is placed at the lowest free descriptor from this many below the
/// task's `RLIMIT_NOFILE` (CRIU keeps its service descriptors there too).
pub const TRACK_FD_FLOOR: u64 = 64;

// /proc/PID/pagemap: a swap entry's type is in the low 5 bits of its frame field, and pte
// markers (userfaultfd write-protect of an empty entry) use the last type.
const PM_SWAP: u64 = 1 << 62;
const SWP_TYPE_MASK: u64 = 0x1f;
const SWP_PTE_MARKER: u64 = 0x1f;

/// The trackers of a tree, by pid.
#[derive(Debug, Default)]
pub struct Trackers {
    tasks: HashMap<i32, TaskTracker>,
}

impl Trackers {
    /// The tracker of `pid`.
    pub fn get(&self, pid: i32) -> Option<&TaskTracker> {
        self.tasks.get(&pid)
    }

    /// Adds the tracker of `pid`.
    pub fn insert(&mut self, pid: i32, t: TaskTracker) {
        self.tasks.insert(pid, t);
    }

    /// Closes each task's tracking descriptor (in the task, with a remote `close`): the tree
    /// runs on untracked. Failures are logged.
    pub fn close_in(&mut self, tasks: &mut [(i32, Task)]) {
        for (pid, task) in tasks.iter_mut() {
            if let Some(t) = self.tasks.remove(pid) {
                match task.remote_syscall(
                    libc::SYS_close as usize,
                    [t.remote_fd as u64, 0, 0, 0, 0, 0],
                ) {
                    Ok(0) => tracing::debug!(pid, fd = t.remote_fd, "tracking descriptor closed"),
                    r => tracing::warn!(
                        pid,
                        fd = t.remote_fd,
                        "closing the tracking descriptor: {r:?}"
                    ),
                }
            }
        }
    }
}

/// One task's userfaultfd: criu's copy and where it is in the task.
#[derive(Debug)]
pub struct TaskTracker {
    pid: i32,
    uffd: OwnedFd,
    /// The descriptor in the task.
    pub remote_fd: i32,
    ino: u64,
    /// Whether the write-protect state is relative to the parent images (else every page is
    /// copied, as at a first dump).
    pub has_parent: bool,
}

fn uffd_err(pid: i32, what: &str, source: std::io::Error) -> DumpError {
    DumpError::File {
        what: format!("memory tracking of {pid}: {what}"),
        source,
    }
}

/// Whether descriptor `fd` of `pid` is a userfaultfd with inode `ino`.
fn is_our_uffd(pid: i32, fd: i32, ino: u64) -> bool {
    let link = format!("/proc/{pid}/fd/{fd}");
    std::fs::read_link(&link).is_ok_and(|t| t.as_os_str() == "anon_inode:[userfaultfd]")
        && std::fs::metadata(&link).is_ok_and(|m| m.ino() == ino)
}

/// Whether descriptor `fd` of `pid` is a tracking descriptor an earlier run of criu left: a
/// userfaultfd with write-protect tracking (`UFFD_FEATURE_WP_ASYNC` in its fdinfo) at the
/// descriptors criu places them at (the [`TRACK_FD_FLOOR`] below `RLIMIT_NOFILE`). A pre-dump
/// whose images no later run names leaves one; it is criu's, not the program's.
pub fn is_stale_tracker(pid: i32, fd: i32) -> bool {
    tracker_at(pid, fd, nofile_limit(pid))
}

/// [`is_stale_tracker`] with the task's `RLIMIT_NOFILE` read already.
fn tracker_at(pid: i32, fd: i32, limit: u64) -> bool {
    let floor = limit.saturating_sub(TRACK_FD_FLOOR).max(3);
    if fd < 0 || (fd as u64) < floor || (fd as u64) >= limit {
        return false;
    }
    if std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .map_or(true, |t| t.as_os_str() != "anon_inode:[userfaultfd]")
    {
        return false;
    }
    // "API:\t<api>:<features>:<ioctls>", hexadecimal.
    std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
        .ok()
        .and_then(|info| {
            let api = info
                .lines()
                .find_map(|l| l.strip_prefix("API:"))?
                .trim()
                .to_string();
            u64::from_str_radix(api.split(':').nth(1)?, 16).ok()
        })
        .is_some_and(|features| features & UFFD_FEATURE_WP_ASYNC != 0)
}

/// The tracking descriptors an earlier run left in `pid` ([`is_stale_tracker`]).
fn stale_trackers(pid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let limit = nofile_limit(pid);
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&fd| tracker_at(pid, fd, limit))
        .collect()
}

/// Closes in `task` (`pid`) the tracking descriptors an earlier run left there and no record
/// names ([`stale_trackers`]).
fn close_stale(task: &mut Task, pid: i32) {
    for fd in stale_trackers(pid) {
        match task.remote_syscall(libc::SYS_close as usize, [fd as u64, 0, 0, 0, 0, 0]) {
            Ok(0) => tracing::info!(
                pid,
                fd,
                "a tracking descriptor an earlier pre-dump left is closed"
            ),
            r => tracing::warn!(pid, fd, "closing an earlier tracking descriptor: {r:?}"),
        }
    }
}

impl TaskTracker {
    /// The tracker of `pid` recorded by the previous run (`prev`), if the task still holds it;
    /// else a new one made in the task (then [`TaskTracker::has_parent`] is false), after
    /// closing any an earlier run left there.
    ///
    /// # Errors
    /// [`DumpError::Remote`]/[`DumpError::RemoteFailed`] if the userfaultfd cannot be made in
    /// the task, [`DumpError::File`] if criu cannot take it or enable write-protect tracking.
    pub fn open(
        task: &mut Task,
        pid: i32,
        prev: Option<&Recorded>,
    ) -> Result<TaskTracker, DumpError> {
        if let Some(r) = prev {
            if is_our_uffd(pid, r.fd, r.ino) {
                let uffd = steal(pid, r.fd)?;
                tracing::debug!(pid, fd = r.fd, "memory tracking continues");
                return Ok(TaskTracker {
                    pid,
                    uffd,
                    remote_fd: r.fd,
                    ino: r.ino,
                    has_parent: r.complete,
                });
            }
            tracing::info!(
                pid,
                fd = r.fd,
                "the tracking descriptor of the previous dump is gone: all pages are copied"
            );
        }
        close_stale(task, pid);
        Self::create(task, pid)
    }

    fn create(task: &mut Task, pid: i32) -> Result<TaskTracker, DumpError> {
        let mut call = |what: &'static str, nr: i64, args: [u64; 6]| -> Result<i64, DumpError> {
            let r = task
                .remote_syscall(nr as usize, args)
                .map_err(|source| DumpError::Remote { pid, what, source })?;
            if r < 0 {
                return Err(DumpError::RemoteFailed {
                    pid,
                    what,
                    errno: -r as i32,
                });
            }
            Ok(r)
        };
        let flags = (libc::O_CLOEXEC as u64) | UFFD_USER_MODE_ONLY;
        let fd = call("userfaultfd", libc::SYS_userfaultfd, [flags, 0, 0, 0, 0, 0])?;
        let floor = nofile_limit(pid).saturating_sub(TRACK_FD_FLOOR).max(3);
        let high = call(
            "fcntl(F_DUPFD_CLOEXEC)",
            libc::SYS_fcntl,
            [fd as u64, libc::F_DUPFD_CLOEXEC as u64, floor, 0, 0, 0],
        );
        let _ = call("close", libc::SYS_close, [fd as u64, 0, 0, 0, 0, 0]);
        let high = high? as i32;
        let uffd = steal(pid, high)?;
        let ino = std::fs::metadata(format!("/proc/{pid}/fd/{high}"))
            .map_err(|e| uffd_err(pid, "stat the userfaultfd", e))?
            .ino();
        let mut api = UffdioApi {
            api: UFFD_API,
            features: UFFD_FEATURE_WP_ASYNC,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_API reads and writes one `struct uffdio_api`, alive for the call.
        if unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_API, &mut api as *mut UffdioApi) } < 0 {
            return Err(uffd_err(
                pid,
                "UFFDIO_API with UFFD_FEATURE_WP_ASYNC",
                std::io::Error::last_os_error(),
            ));
        }
        tracing::debug!(pid, fd = high, ino, "memory tracking starts");
        Ok(TaskTracker {
            pid,
            uffd,
            remote_fd: high,
            ino,
            has_parent: false,
        })
    }

    /// The runs `(start, pages)` of `v` written since the previous tracked dump, write-protected
    /// again by the same `PAGEMAP_SCAN`; `None` when the area must be copied whole (no parent
    /// state, or the kernel does not track the area: it is new, or was moved).
    ///
    /// # Errors
    /// [`DumpError::Memory`] if the scan fails for another reason.
    pub fn written(&self, pagemap: &File, v: &Vma) -> Result<Option<Vec<(u64, u64)>>, DumpError> {
        if !self.has_parent || !trackable(v) {
            return Ok(None);
        }
        let want = PmScanArg {
            flags: PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
            category_mask: PAGE_IS_WRITTEN,
            return_mask: PAGE_IS_WRITTEN,
            ..PmScanArg::default()
        };
        let mut runs: Vec<(u64, u64)> = Vec::new();
        match pm_scan(pagemap, v.entry.start, v.entry.end, want, |r| {
            let n = (r.end - r.start) / PAGE_SIZE;
            match runs.last_mut() {
                Some((s, k)) if *s + *k * PAGE_SIZE == r.start => *k += n,
                _ => runs.push((r.start, n)),
            }
        }) {
            Ok(()) => Ok(Some(runs)),
            Err((_, e)) if e.raw_os_error() == Some(libc::EPERM) => {
                tracing::debug!(
                    pid = self.pid,
                    start = v.entry.start,
                    "area not tracked (new or moved): copied whole"
                );
                Ok(None)
            }
            Err((addr, source)) => Err(DumpError::Memory {
                pid: self.pid,
                addr,
                source,
            }),
        }
    }

    /// `runs` (present or swapped pages of `v`, as the dump selects them) without the
    /// userfaultfd markers: write-protecting an area marks its empty entries (a page never
    /// touched, or dropped since) with a swap-like entry that `PAGEMAP_SCAN` reports as swapped.
    /// A page that is present stays; a swapped one stays only if its pagemap entry is a real
    /// swap entry (swap type below the marker type, 31), and none does when no swap is on.
    ///
    /// # Errors
    /// [`DumpError::Memory`] if the pagemap cannot be read.
    pub fn without_markers(
        &self,
        pagemap: &File,
        v: &Vma,
        runs: Vec<(u64, u64)>,
    ) -> Result<Vec<(u64, u64)>, DumpError> {
        use std::os::unix::fs::FileExt;
        if !trackable(v) || runs.is_empty() {
            return Ok(runs);
        }
        let want = PmScanArg {
            category_inverted: PAGE_IS_PFNZERO | PAGE_IS_GUARD,
            category_mask: PAGE_IS_PFNZERO | PAGE_IS_GUARD | PAGE_IS_PRESENT,
            return_mask: PAGE_IS_PRESENT,
            ..PmScanArg::default()
        };
        let mut present: Vec<(u64, u64)> = Vec::new();
        pm_scan(pagemap, v.entry.start, v.entry.end, want, |r| {
            let n = (r.end - r.start) / PAGE_SIZE;
            match present.last_mut() {
                Some((s, k)) if *s + *k * PAGE_SIZE == r.start => *k += n,
                _ => present.push((r.start, n)),
            }
        })
        .map_err(|(addr, source)| DumpError::Memory {
            pid: self.pid,
            addr,
            source,
        })?;
        if !swap_on() {
            return Ok(present);
        }
        // Pages of `runs` that are not present: swapped, or markers.
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut add = |addr: u64| match out.last_mut() {
            Some((s, k)) if *s + *k * PAGE_SIZE == addr => *k += 1,
            _ => out.push((addr, 1)),
        };
        let mut word = [0u8; 8];
        for Part {
            start,
            pages: n,
            dirty: is_present,
        } in split(&runs, &present)
        {
            for i in 0..n {
                let addr = start + i * PAGE_SIZE;
                if is_present {
                    add(addr);
                    continue;
                }
                pagemap
                    .read_exact_at(&mut word, addr / PAGE_SIZE * 8)
                    .map_err(|source| DumpError::Memory {
                        pid: self.pid,
                        addr,
                        source,
                    })?;
                let w = u64::from_le_bytes(word);
                if w & PM_SWAP != 0 && w & SWP_TYPE_MASK != SWP_PTE_MARKER {
                    add(addr);
                }
            }
        }
        Ok(out)
    }

    /// Registers every trackable area of `vmas` not tracked yet (`fresh`: the starts of the
    /// areas [`TaskTracker::written`] found untracked, or all of them for a new tracker) and
    /// write-protects it. An area the kernel refuses stays untracked (copied whole next time).
    pub fn arm(&self, vmas: &[Vma], tracked: &[u64]) {
        for v in vmas.iter().filter(|v| trackable(v)) {
            if self.has_parent && tracked.contains(&v.entry.start) {
                continue;
            }
            let len = v.entry.end - v.entry.start;
            let mut reg = UffdioRegister {
                start: v.entry.start,
                len,
                mode: UFFDIO_REGISTER_MODE_WP,
                ioctls: 0,
            };
            // SAFETY: UFFDIO_REGISTER reads and writes one `struct uffdio_register`.
            let r = unsafe {
                libc::ioctl(
                    self.uffd.as_raw_fd(),
                    UFFDIO_REGISTER,
                    &mut reg as *mut UffdioRegister,
                )
            };
            if r < 0 {
                tracing::debug!(
                    pid = self.pid,
                    start = v.entry.start,
                    "area not registered for tracking: {}",
                    std::io::Error::last_os_error()
                );
                continue;
            }
            let mut wp = UffdioWriteprotect {
                start: v.entry.start,
                len,
                mode: UFFDIO_WRITEPROTECT_MODE_WP,
            };
            // SAFETY: UFFDIO_WRITEPROTECT reads one `struct uffdio_writeprotect`.
            let r = unsafe {
                libc::ioctl(
                    self.uffd.as_raw_fd(),
                    UFFDIO_WRITEPROTECT,
                    &mut wp as *mut UffdioWriteprotect,
                )
            };
            if r < 0 {
                tracing::debug!(
                    pid = self.pid,
                    start = v.entry.start,
                    "area not write-protected: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
}

/// Whether `v`'s pages are tracked: private anonymous areas whose pages the dump saves, but
/// the vDSO. Private file mappings are copied whole every time (their copied-on-write pages
/// are few): write-protecting a file mapping puts markers into its empty entries, which
/// `PAGEMAP_SCAN` and `/proc/PID/pagemap` report as swapped pages, so the pages the task
/// has would no longer be told from the ones it never touched.
fn trackable(v: &Vma) -> bool {
    v.dumps_pages() && v.is(status::ANON_PRIVATE) && !v.is(status::VDSO)
}

fn steal(pid: i32, fd: i32) -> Result<OwnedFd, DumpError> {
    crate::files::socket::steal(pid, fd).map_err(|e| {
        uffd_err(
            pid,
            &format!("take its userfaultfd (fd {fd})"),
            std::io::Error::other(e.to_string()),
        )
    })
}

/// Whether any swap area is on (`/proc/swaps` lists one).
fn swap_on() -> bool {
    std::fs::read_to_string("/proc/swaps").map_or(true, |s| s.lines().count() > 1)
}

/// The soft `RLIMIT_NOFILE` of `pid` (1024 when it cannot be read).
fn nofile_limit(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_string))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

/// A run of present pages, written since the parent dump (`dirty`: copied) or not (the
/// parent's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    /// The first page's address.
    pub start: u64,
    /// How many pages.
    pub pages: u64,
    /// Written since the parent dump.
    pub dirty: bool,
}

/// Splits `present` runs `(start, pages)` by `written` runs (both in address order) into
/// [`Part`]s: dirty parts are copied, the others are the parent's.
pub fn split(present: &[(u64, u64)], written: &[(u64, u64)]) -> Vec<Part> {
    let mut out: Vec<Part> = Vec::new();
    let mut push = |a: u64, b: u64, dirty: bool| {
        if a >= b {
            return;
        }
        match out.last_mut() {
            Some(p) if p.dirty == dirty && p.start + p.pages * PAGE_SIZE == a => {
                p.pages += (b - a) / PAGE_SIZE
            }
            _ => out.push(Part {
                start: a,
                pages: (b - a) / PAGE_SIZE,
                dirty,
            }),
        }
    };
    let mut w = 0usize;
    for &(ps, pn) in present {
        let pe = ps + pn * PAGE_SIZE;
        let mut at = ps;
        while w < written.len() && written[w].0 + written[w].1 * PAGE_SIZE <= at {
            w += 1;
        }
        let mut k = w;
        while at < pe {
            match written.get(k) {
                Some(&(ws, wn)) if ws < pe => {
                    if ws > at {
                        push(at, ws, false);
                        at = ws;
                    }
                    let we = ws + wn * PAGE_SIZE;
                    let e = we.min(pe);
                    push(at, e, true);
                    at = e;
                    if we <= pe {
                        k += 1;
                    }
                }
                _ => {
                    push(at, pe, false);
                    at = pe;
                }
            }
        }
    }
    out
}

/// As [`TaskTracker::open`].
pub fn open_all(
    tasks: &mut [(i32, Task)],
    prev: &HashMap<i32, Recorded>,
) -> Result<Trackers, DumpError> {
    let mut out = Trackers::default();
    for (pid, task) in tasks.iter_mut() {
        out.insert(*pid, TaskTracker::open(task, *pid, prev.get(pid))?);
    }
    Ok(out)
}

/// Closes, in each task of `tasks`, the tracking descriptor `prev` records for it, or those an
/// earlier run left there (a dump without `--track-mem` that leaves the tree running ends the
/// tracking).
pub fn close_recorded(tasks: &mut [(i32, Task)], prev: &HashMap<i32, Recorded>) {
    let mut t = Trackers::default();
    for (pid, task) in tasks.iter_mut() {
        if !prev.contains_key(pid) {
            close_stale(task, *pid);
        }
        if let Some(r) = prev.get(pid)
            && is_our_uffd(*pid, r.fd, r.ino)
            && let Ok(uffd) = steal(*pid, r.fd)
        {
            t.insert(
                *pid,
                TaskTracker {
                    pid: *pid,
                    uffd,
                    remote_fd: r.fd,
                    ino: r.ino,
                    has_parent: true,
                },
            );
        }
    }
    t.close_in(tasks);
}

#[cfg(test)]
mod tests {
    use super::record::read_record;
    use super::*;

    const P: u64 = PAGE_SIZE;

    fn tuples(parts: Vec<Part>) -> Vec<(u64, u64, bool)> {
        parts.iter().map(|p| (p.start, p.pages, p.dirty)).collect()
    }

    #[test]
    fn split_marks_written_pages_dirty() {
        // Present: pages 0..10 and 20..25; written: 2..4, 8..22.
        let present = [(0, 10), (20 * P, 5)];
        let written = [(2 * P, 2), (8 * P, 14)];
        assert_eq!(
            tuples(split(&present, &written)),
            vec![
                (0, 2, false),
                (2 * P, 2, true),
                (4 * P, 4, false),
                (8 * P, 2, true),
                (20 * P, 2, true),
                (22 * P, 3, false),
            ]
        );
        assert_eq!(
            tuples(split(&present, &[])),
            vec![(0, 10, false), (20 * P, 5, false)]
        );
        // Written pages that are not present (freed since) are not dumped.
        assert_eq!(
            tuples(split(&[(5 * P, 1)], &[(0, 4)])),
            vec![(5 * P, 1, false)]
        );
    }

    #[test]
    fn record_lines_are_parsed_strictly() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(RECORD),
            "# header\n12 1000 77\nbogus\n13 -1 5\n14 1 2 3\n",
        )
        .unwrap();
        let r = read_record(dir.path());
        assert_eq!(r.len(), 1);
        assert_eq!(
            r[&12],
            Recorded {
                fd: 1000,
                ino: 77,
                complete: true
            }
        );
    }
}
