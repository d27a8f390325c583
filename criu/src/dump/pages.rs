//! The contents of a task's memory: which pages of its VMAs ([`super::vma`]) are saved, written
//! as `pagemap-PID.img` + `pages-N.img`, and shared anonymous memory once per object as
//! `pagemap-shmem-SHMID.img`. This is where incremental dumps (pre-dump, a parent's pages) go.
//!
//! Pages are dumped for private VMAs only: every present or swapped page of an anonymous private
//! VMA, and the copied-on-write (anonymous) pages of a private file mapping; shared file mappings
//! live in their files and `[vvar]` is the kernel's. Which pages of a VMA hold data comes from the
//! `PAGEMAP_SCAN` ioctl (or `/proc/PID/pagemap`); their contents are copied into the pages files
//! by the `pages_file` module.
// Unsafe code: maps the scratch area that page contents are read into (mmap).
#![allow(unsafe_code)]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use criu_images::pagemap::{PAGE_SIZE, PE_LAZY, PE_PARENT, PE_PRESENT};
use criu_images::vma::{TASK_SIZE, status};
use criu_images::{Pagemap, names};

use super::error::DumpError;
use super::pagemap_scan::{
    PAGE_IS_FILE, PAGE_IS_GUARD, PAGE_IS_PFNZERO, PAGE_IS_PRESENT, PAGE_IS_SWAPPED, PmScanArg,
    pm_scan,
};
use super::pages_file::{self, Segment};
use super::vma::Vma;

/// Page bits of `/proc/PID/pagemap`.
const PM_PRESENT: u64 = 1 << 63;
const PM_SWAP: u64 = 1 << 62;
const PM_FILE: u64 = 1 << 61;
const PM_GUARD: u64 = 1 << 58;
const PM_PFN: u64 = (1 << 55) - 1;

/// Counters of one page dump.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageStats {
    /// Pages looked at.
    pub scanned: u64,
    /// Pages written.
    pub written: u64,
    /// Pages left in the parent images (`PE_PARENT`).
    pub parent: u64,
}

fn open_pagemap(pid: i32) -> Result<File, DumpError> {
    File::open(format!("/proc/{pid}/pagemap")).map_err(|e| DumpError::Memory {
        pid,
        addr: 0,
        source: e,
    })
}

/// Writes `pagemap-PID.img` and `pages-PAGES_ID.img` for the private pages of `vmas` of `pid`;
/// with `track`, only the pages written since the parent dump (see [`super::track`]).
///
/// # Errors
/// As [`dump_pages`].
pub fn dump_private_pages(
    pid: i32,
    vmas: &[Vma],
    dir: &Path,
    pages_id: u32,
    track: Option<&super::track::TaskTracker>,
) -> Result<PageStats, DumpError> {
    let (pm, segs, stats) = plan_private_pages(pid, vmas, pages_id, track)?;
    pages_file::write_one(pid, &segs, dir, pages_id)?;
    pm.write(dir.join(names::pagemap(pid as u32)))?;
    Ok(stats)
}

/// The pagemap of the private pages of `vmas` of `pid` and the memory runs to copy into
/// `pages-PAGES_ID.img`, in order. With `track`, pages not written since the parent dump are
/// `PE_PARENT` entries, and the tracker is armed for the next dump.
///
/// # Errors
/// [`DumpError::Memory`] if the pagemap cannot be read.
pub(super) fn plan_private_pages(
    pid: i32,
    vmas: &[Vma],
    pages_id: u32,
    track: Option<&super::track::TaskTracker>,
) -> Result<(Pagemap, Vec<Segment>, PageStats), DumpError> {
    let pagemap = open_pagemap(pid)?;
    let mut stats = PageStats::default();
    let mut pm = Pagemap {
        pages_id,
        entries: Vec::new(),
    };
    let mut segs: Vec<Segment> = Vec::new();
    let mut tracked: Vec<u64> = Vec::new();
    for v in vmas.iter().filter(|v| v.dumps_pages()) {
        let lazy = if v.is(status::ANON_PRIVATE) && !v.is(status::VDSO) {
            PE_LAZY
        } else {
            0
        };
        let written = match track {
            Some(t) => t.written(&pagemap, v)?,
            None => None,
        };
        let mut runs = select_pages(pid, &pagemap, v, &mut stats)?;
        if let Some(t) = track {
            runs = t.without_markers(&pagemap, v, runs)?;
        }
        let parts = match &written {
            Some(w) => {
                tracked.push(v.entry.start);
                super::track::split(&runs, w)
            }
            None => runs
                .iter()
                .map(|&(start, pages)| super::track::Part {
                    start,
                    pages,
                    dirty: true,
                })
                .collect(),
        };
        for super::track::Part {
            start,
            pages: n,
            dirty,
        } in parts
        {
            if !dirty {
                pm.push(start, n, PE_PARENT | lazy);
                stats.parent += n;
                continue;
            }
            pm.push(start, n, PE_PRESENT | lazy);
            stats.written += n;
            segs.push(Segment {
                readable: v.readable,
                addr: start,
                len: n * PAGE_SIZE,
            });
        }
    }
    if let Some(t) = track {
        t.arm(vmas, &tracked);
    }
    Ok((pm, segs, stats))
}

/// Shared anonymous objects met in one or more processes: for each object (by shmid) the pages
/// present in any of its mappings, by offset in the object, with where to read each.
#[derive(Debug, Default)]
pub struct SharedObjects {
    objects: std::collections::BTreeMap<u64, std::collections::BTreeMap<u64, (i32, u64, bool)>>,
    /// Each object's file (opened through a `map_files` link) and the windows
    /// `(offset, end)` its mappings cover.
    files: std::collections::BTreeMap<u64, (File, Vec<(u64, u64)>)>,
    stats: PageStats,
}

/// The data ranges `(start, end)` of `f` within `from..to` (`SEEK_DATA`/`SEEK_HOLE`: pages the
/// object holds, in memory or swapped out, whether or not anyone maps them now).
fn data_ranges(f: &File, from: u64, to: u64) -> std::io::Result<Vec<(u64, u64)>> {
    use std::os::fd::AsRawFd;
    let mut out = Vec::new();
    let mut at = from;
    while at < to {
        // SAFETY: lseek on a descriptor we own.
        let d = unsafe { libc::lseek(f.as_raw_fd(), at as i64, libc::SEEK_DATA) };
        if d < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break;
            }
            return Err(e);
        }
        let d = d as u64;
        if d >= to {
            break;
        }
        // SAFETY: lseek on a descriptor we own; it takes plain values.
        let h = unsafe { libc::lseek(f.as_raw_fd(), d as i64, libc::SEEK_HOLE) };
        if h < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let h = (h as u64).min(to);
        out.push((d & !(PAGE_SIZE - 1), h.div_ceil(PAGE_SIZE) * PAGE_SIZE));
        at = h.max(d + PAGE_SIZE);
    }
    Ok(out)
}

impl SharedObjects {
    /// Adds the shared anonymous mappings of `vmas` of `pid`.
    ///
    /// # Errors
    /// [`DumpError::Memory`] if the pagemap cannot be read.
    pub fn add(&mut self, pid: i32, vmas: &[Vma]) -> Result<(), DumpError> {
        let shared: Vec<&Vma> = vmas.iter().filter(|v| v.is(status::ANON_SHARED)).collect();
        if shared.is_empty() {
            return Ok(());
        }
        let pagemap = open_pagemap(pid)?;
        for v in shared {
            let runs = select_pages(pid, &pagemap, v, &mut self.stats)?;
            let obj = self.objects.entry(v.entry.shmid).or_default();
            for (start, n) in runs {
                for i in 0..n {
                    let addr = start + i * PAGE_SIZE;
                    let off = v.entry.pgoff + (addr - v.entry.start);
                    obj.entry(off).or_insert((pid, addr, v.readable));
                }
            }
            // Pages of the object this process has not faulted in (another process wrote
            // them, or a mapping since shrunk did): found in the object itself, read through
            // this mapping.
            let (off, end) = (v.entry.pgoff, v.entry.pgoff + (v.entry.end - v.entry.start));
            let mem_err = |e: std::io::Error| DumpError::Memory {
                pid,
                addr: v.entry.start,
                source: e,
            };
            if let std::collections::btree_map::Entry::Vacant(slot) =
                self.files.entry(v.entry.shmid)
            {
                let link = format!(
                    "/proc/{pid}/map_files/{:x}-{:x}",
                    v.entry.start, v.entry.end
                );
                // Without CAP_CHECKPOINT_RESTORE the link cannot be opened: then only the
                // pages in page tables are saved, as before.
                match File::open(&link) {
                    Ok(f) => {
                        slot.insert((f, Vec::new()));
                    }
                    Err(e) => tracing::debug!(pid, %link, "shared object not opened: {e}"),
                }
            }
            if let Some((f, windows)) = self.files.get_mut(&v.entry.shmid) {
                windows.push((off, end));
                for (a, b) in data_ranges(f, off, end).map_err(mem_err)? {
                    for page in (a..b).step_by(PAGE_SIZE as usize) {
                        let addr = v.entry.start + (page - off);
                        obj.entry(page).or_insert((pid, addr, v.readable));
                    }
                }
            }
        }
        Ok(())
    }

    /// Refuses objects holding pages outside every mapping of them (a mapping shrunk with
    /// `mremap` leaves its pages in the object, reachable again by growing it): the restore
    /// sizes each object by its mappings and could not bring them back.
    ///
    /// # Errors
    /// [`DumpError::ShmemOutside`], [`DumpError::Memory`].
    pub fn check_unmapped(&self) -> Result<(), DumpError> {
        for (shmid, (f, windows)) in &self.files {
            let size = f.metadata().map(|m| m.len()).unwrap_or(0);
            let ranges = data_ranges(f, 0, size).map_err(|e| DumpError::Memory {
                pid: 0,
                addr: 0,
                source: e,
            })?;
            for (a, b) in ranges {
                let mut page = a;
                while page < b {
                    if !windows.iter().any(|&(s, e)| s <= page && page < e) {
                        return Err(DumpError::ShmemOutside {
                            shmid: *shmid,
                            offset: page,
                        });
                    }
                    page += PAGE_SIZE;
                }
            }
        }
        Ok(())
    }

    /// Writes `pagemap-shmem-SHMID.img` and a pages file for each object, with pages ids from
    /// `first_pages_id` on; returns the pages counted.
    ///
    /// # Errors
    /// As [`dump_pages`].
    pub fn write(self, dir: &Path, first_pages_id: u32) -> Result<PageStats, DumpError> {
        let mut stats = self.stats;
        for (k, (shmid, pages)) in self.objects.iter().enumerate() {
            let pages_id = first_pages_id + k as u32;
            let mut spm = Pagemap {
                pages_id,
                entries: Vec::new(),
            };
            // Runs of pages readable from one process, in object order.
            let mut groups: Vec<(i32, Vec<Segment>)> = Vec::new();
            for (&off, &(pid, addr, readable)) in pages {
                spm.push(off, 1, PE_PRESENT);
                stats.written += 1;
                if groups.last().is_none_or(|g| g.0 != pid) {
                    groups.push((pid, Vec::new()));
                }
                let segs = match groups.last_mut() {
                    Some(g) => &mut g.1,
                    None => continue,
                };
                match segs.last_mut() {
                    Some(sg) if sg.readable == readable && sg.addr + sg.len == addr => {
                        sg.len += PAGE_SIZE
                    }
                    _ => segs.push(Segment {
                        readable,
                        addr,
                        len: PAGE_SIZE,
                    }),
                }
            }
            pages_file::write_many(&groups, dir, pages_id)?;
            spm.write(dir.join(names::pagemap_shmem(*shmid)))?;
        }
        Ok(stats)
    }
}

/// The runs `(start, pages)` of `v` whose pages the dump saves: every present or swapped page,
/// except the zero page, guard pages, and (in private file mappings) pages still the file's.
/// Uses the `PAGEMAP_SCAN` ioctl, which skips unpopulated ranges at once (a huge `PROT_NONE`
/// reservation costs nothing), and falls back to reading `/proc/PID/pagemap` in windows.
pub(super) fn select_pages(
    pid: i32,
    pagemap: &File,
    v: &Vma,
    stats: &mut PageStats,
) -> Result<Vec<(u64, u64)>, DumpError> {
    stats.scanned += (v.entry.end - v.entry.start) / PAGE_SIZE;
    match scan_pages(pagemap, v) {
        Ok(runs) => Ok(runs),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOTTY | libc::EINVAL | libc::EOPNOTSUPP)
            ) =>
        {
            read_pages(pid, pagemap, v)
        }
        Err(e) => Err(DumpError::Memory {
            pid,
            addr: v.entry.start,
            source: e,
        }),
    }
}

fn scan_pages(pagemap: &File, v: &Vma) -> std::io::Result<Vec<(u64, u64)>> {
    // Wanted: present or swapped; and none of: the zero page, a guard page, and (private file
    // mappings) a page that is still the file's.
    let mut unwanted = PAGE_IS_PFNZERO | PAGE_IS_GUARD;
    if v.is(status::FILE_PRIVATE) {
        unwanted |= PAGE_IS_FILE;
    }
    let want = PmScanArg {
        category_inverted: unwanted,
        category_mask: unwanted,
        category_anyof_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
        return_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
        ..PmScanArg::default()
    };
    let mut runs: Vec<(u64, u64)> = Vec::new();
    pm_scan(pagemap, v.entry.start, v.entry.end, want, |r| {
        let pages = (r.end - r.start) / PAGE_SIZE;
        match runs.last_mut() {
            Some((s, k)) if *s + *k * PAGE_SIZE == r.start => *k += pages,
            _ => runs.push((r.start, pages)),
        }
    })
    .map_err(|(_, e)| e)?;
    Ok(runs)
}

/// The ranges `(start, end)` of `MADV_GUARD_INSTALL` guard pages in `pid`'s address space,
/// found with `PAGEMAP_SCAN`'s `PAGE_IS_GUARD` (empty where the kernel has neither).
///
/// # Errors
/// [`DumpError::Memory`] if the pagemap cannot be scanned.
pub fn guard_regions(pid: i32) -> Result<Vec<(u64, u64)>, DumpError> {
    let pagemap = open_pagemap(pid)?;
    let want = PmScanArg {
        category_mask: PAGE_IS_GUARD,
        return_mask: PAGE_IS_GUARD,
        ..PmScanArg::default()
    };
    let mut out: Vec<(u64, u64)> = Vec::new();
    let scanned = pm_scan(&pagemap, 0, TASK_SIZE, want, |r| match out.last_mut() {
        Some((_, end)) if *end == r.start => *end = r.end,
        _ => out.push((r.start, r.end)),
    });
    if let Err((at, e)) = scanned {
        if matches!(
            e.raw_os_error(),
            Some(libc::ENOTTY | libc::EINVAL | libc::EOPNOTSUPP)
        ) {
            return Ok(Vec::new());
        }
        return Err(DumpError::Memory {
            pid,
            addr: at,
            source: e,
        });
    }
    Ok(out)
}

/// [`scan_pages`] the slow way: `/proc/PID/pagemap` words, 64 Ki pages at a time.
fn read_pages(pid: i32, pagemap: &File, v: &Vma) -> Result<Vec<(u64, u64)>, DumpError> {
    const WINDOW: u64 = 64 << 10;
    let file_backed = v.is(status::FILE_PRIVATE);
    // Anonymous pages only ever read are the kernel's shared zero page: nothing to save (the
    // restored area reads as zeros anyway), as CRIU skips them.
    let zero = if v.is(status::ANON_PRIVATE) {
        zero_pfn()
    } else {
        None
    };
    let mut runs: Vec<(u64, u64)> = Vec::new();
    let mut words = Vec::new();
    let mut first = v.entry.start / PAGE_SIZE;
    let last = v.entry.end / PAGE_SIZE;
    while first < last {
        let n = (last - first).min(WINDOW);
        words.resize(n as usize * 8, 0);
        pagemap
            .read_exact_at(&mut words, first * 8)
            .map_err(|e| DumpError::Memory {
                pid,
                addr: first * PAGE_SIZE,
                source: e,
            })?;
        for (i, w) in words.chunks_exact(8).enumerate() {
            let w = u64::from_le_bytes(w.try_into().unwrap_or([0; 8]));
            let is_zero_page = w & PM_PRESENT != 0 && zero == Some(w & PM_PFN);
            let wanted = (w & (PM_PRESENT | PM_SWAP) != 0)
                && w & PM_GUARD == 0
                && !is_zero_page
                && !(file_backed && w & PM_FILE != 0 && w & PM_SWAP == 0);
            if !wanted {
                continue;
            }
            let addr = (first + i as u64) * PAGE_SIZE;
            match runs.last_mut() {
                Some((s, k)) if *s + *k * PAGE_SIZE == addr => *k += 1,
                _ => runs.push((addr, 1)),
            }
        }
        first += n;
    }
    Ok(runs)
}

/// The page frame number of the kernel's zero page, found once by reading a fresh anonymous
/// page of our own; `None` where `/proc/self/pagemap` hides frame numbers (no
/// `CAP_SYS_ADMIN`), and then no page is skipped.
fn zero_pfn() -> Option<u64> {
    static ZERO: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *ZERO.get_or_init(|| {
        // SAFETY: a fresh private read-only anonymous page, read once and unmapped; it aliases
        // no Rust object.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                PAGE_SIZE as usize,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if p == libc::MAP_FAILED {
                return None;
            }
            std::ptr::read_volatile(p as *const u8);
            let mut w = [0u8; 8];
            let ok = File::open("/proc/self/pagemap")
                .and_then(|f| f.read_exact_at(&mut w, p as u64 / PAGE_SIZE * 8))
                .is_ok();
            libc::munmap(p, PAGE_SIZE as usize);
            let w = u64::from_le_bytes(w);
            (ok && w & PM_PRESENT != 0 && w & PM_PFN != 0).then_some(w & PM_PFN)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dump::files::FileTable;
    use crate::dump::proc::read_smaps;
    use crate::dump::vma::classify;

    #[test]
    fn scan_and_pagemap_agree() {
        use std::os::fd::AsRawFd;
        let pid = std::process::id() as i32;
        let map = |len: usize, prot: i32, flags: i32, fd: i32| {
            // SAFETY: a fresh mapping chosen by the kernel, owned by this test.
            let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, 0) };
            assert_ne!(p, libc::MAP_FAILED);
            p as *mut u8
        };
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        let anon = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        // Anonymous: pages 0, 1, 5 written, 2 and 3 only read (zero page), the rest untouched.
        let a = map(16 * 4096, rw, anon, -1);
        // A private file mapping with its second page copied on write.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), vec![7u8; 4 * 4096]).unwrap();
        let f = File::options()
            .read(true)
            .write(true)
            .open(dir.path().join("f"))
            .unwrap();
        let fm = map(4 * 4096, rw, libc::MAP_PRIVATE, f.as_raw_fd());
        // SAFETY: all accesses are inside the mappings above.
        unsafe {
            for p in [0, 1, 5] {
                a.add(p * 4096).write_volatile(1);
            }
            for p in [2, 3] {
                a.add(p * 4096).read_volatile();
            }
            fm.read_volatile();
            fm.add(4096).write_volatile(9);
        }
        let maps = read_smaps(pid).unwrap();
        let mut files = FileTable::new(1 << 20);
        let vmas = classify(pid, &maps, &mut files).unwrap();
        let pagemap = File::open(format!("/proc/{pid}/pagemap")).unwrap();
        // Our mappings may have merged with neighbours: look at their own range only.
        let within = |addr: *mut u8, len: u64| {
            let (lo, hi) = (addr as u64, addr as u64 + len);
            let v = vmas
                .iter()
                .find(|v| v.entry.start <= lo && hi <= v.entry.end)
                .unwrap();
            let cut = |runs: Vec<(u64, u64)>| -> Vec<u64> {
                runs.into_iter()
                    .flat_map(|(s, n)| (0..n).map(move |i| s + i * 4096))
                    .filter(|&p| lo <= p && p < hi)
                    .map(|p| (p - lo) / 4096)
                    .collect()
            };
            (
                cut(scan_pages(&pagemap, v).unwrap()),
                cut(read_pages(pid, &pagemap, v).unwrap()),
            )
        };
        let (scan, read) = within(a, 16 * 4096);
        assert_eq!(scan, vec![0, 1, 5]);
        assert_eq!(read, scan);
        let (scan, read) = within(fm, 4 * 4096);
        assert_eq!(scan, vec![1]);
        assert_eq!(read, scan);
        // SAFETY: unmapping our own mappings.
        unsafe {
            libc::munmap(a as *mut libc::c_void, 16 * 4096);
            libc::munmap(fm as *mut libc::c_void, 4 * 4096);
        }
    }
}
