//! What is lazy in a task's images, and where its saved pages are: read from `mm-PID.img`
//! and `pagemap-PID.img` (and the pagemaps of the parent chain) alone, so that the restore,
//! the daemon and the page server decide alike.

use std::path::{Path, PathBuf};

use criu_images::pagemap::{PE_LAZY, PE_PARENT, PE_PRESENT};
use criu_images::vma::status;
use criu_images::{ImageDir, Pagemap, names};

use super::LazyError;

/// The lazy part of one task's memory, in the task's (image) addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskLazy {
    /// Areas to register, `(start, end)`: private anonymous areas that hold lazy pages.
    pub areas: Vec<(u64, u64)>,
    /// Lazy pages with saved data, `(start, end)`, sorted and merged.
    pub pages: Vec<(u64, u64)>,
}

impl TaskLazy {
    /// Bytes of lazy pages.
    pub fn bytes(&self) -> u64 {
        self.pages.iter().map(|p| p.1 - p.0).sum()
    }
}

fn bad(file: &str, reason: impl Into<String>) -> LazyError {
    LazyError::Image {
        file: file.into(),
        reason: reason.into(),
    }
}

/// Whether an area of `mm-PID.img` may be restored lazily.
fn eligible(v: &criu_images::pb::VmaEntry) -> bool {
    let st = v.status;
    let flags = v.flags as i32;
    st & status::REGULAR != 0
        && st & status::ANON_PRIVATE != 0
        && st
            & (status::VDSO
                | status::VVAR
                | status::VSYSCALL
                | status::GUARD
                | status::MEMFD
                | status::ANON_SHARED)
            == 0
        && flags & (libc::MAP_GROWSDOWN | libc::MAP_LOCKED) == 0
        && v.start < v.end
}

/// The lazy part of task `pid` of the images in `dir`.
///
/// # Errors
/// [`LazyError::Image`] when `mm-PID.img` or `pagemap-PID.img` cannot be read.
pub fn task_lazy(dir: &Path, pid: i32) -> Result<TaskLazy, LazyError> {
    let d = ImageDir::new(dir);
    let mm_name = names::mm(pid as u32);
    let mm = d
        .read_mm(pid as u32)
        .map_err(|e| bad(&mm_name, e.to_string()))?;
    let pm_name = names::pagemap(pid as u32);
    let pm = d
        .read_pagemap(pid as u32)
        .map_err(|e| bad(&pm_name, e.to_string()))?;
    let areas: Vec<(u64, u64)> = mm
        .vmas
        .iter()
        .filter(|v| eligible(v))
        .map(|v| (v.start, v.end))
        .collect();
    let mut out = TaskLazy::default();
    for e in &pm.entries {
        if e.effective_flags() & PE_LAZY == 0 {
            continue;
        }
        let end = e
            .end()
            .ok_or_else(|| bad(&pm_name, format!("entry at {:#x} overflows", e.vaddr)))?;
        for &(s, t) in &areas {
            let (a, b) = (e.vaddr.max(s), end.min(t));
            if a < b {
                match out.pages.last_mut() {
                    Some(l) if l.1 == a => l.1 = b,
                    _ => out.pages.push((a, b)),
                }
                if out.areas.last() != Some(&(s, t)) {
                    out.areas.push((s, t));
                }
            }
        }
    }
    out.areas.sort_unstable();
    out.areas.dedup();
    Ok(out)
}

/// Removes `lazy` (sorted ranges) from page runs `(vaddr, pages, rest)`: what stays is what
/// the restore fills at once. `split` makes the piece of a run starting `skip` bytes in.
pub fn subtract<T: Clone>(
    runs: &[T],
    lazy: &[(u64, u64)],
    range: impl Fn(&T) -> (u64, u64),
    piece: impl Fn(&T, u64, u64) -> T,
) -> Vec<T> {
    let mut out = Vec::with_capacity(runs.len());
    for r in runs {
        let (mut a, b) = range(r);
        let start = a;
        let first = lazy.partition_point(|l| l.1 <= a);
        for l in &lazy[first..] {
            if l.0 >= b {
                break;
            }
            if l.0 > a {
                out.push(piece(r, a - start, l.0 - a));
            }
            a = a.max(l.1);
            if a >= b {
                break;
            }
        }
        if a < b {
            out.push(piece(r, a - start, b - a));
        }
    }
    out
}

/// Where the saved pages of one task are: runs `(vaddr, end, file index, offset)` sorted by
/// address, through the parent chain.
#[derive(Debug, Default)]
pub struct LocalPages {
    runs: Vec<(u64, u64, usize, u64)>,
    files: Vec<(PathBuf, Option<std::fs::File>)>,
}

impl LocalPages {
    /// Reads the pagemap of `pid` in `dir` and of its parents as far as its entries point.
    ///
    /// # Errors
    /// [`LazyError::Image`] for a missing or broken pagemap or parent chain.
    pub fn open(dir: &Path, pid: i32) -> Result<LocalPages, LazyError> {
        let mut lp = LocalPages::default();
        let mut want: Vec<(u64, u64)> = Vec::new();
        let mut level = dir.to_path_buf();
        let mut first = true;
        for _depth in 0..64 {
            let name = names::pagemap(pid as u32);
            let path = level.join(&name);
            let pm = Pagemap::read(&path)
                .map_err(|e| bad(&name, format!("{}: {e}", level.display())))?;
            let runs = pm.runs().map_err(|w| bad(&name, w))?;
            let fi = lp.files.len();
            let pages = level.join(pm.pages_file_name());
            // A pagemap whose pages are all elsewhere (a dump with --lazy-pages) may have
            // no pages file.
            let f = std::fs::File::open(&pages).ok();
            lp.files.push((pages, f));
            let mut deeper = Vec::new();
            for r in runs {
                let (a, b) = (r.vaddr, r.vaddr.saturating_add(r.len()));
                // The parts of this run a level below asked for (all of them at the top).
                let parts: Vec<(u64, u64)> = if first {
                    vec![(a, b)]
                } else {
                    want.iter()
                        .map(|w| (w.0.max(a), w.1.min(b)))
                        .filter(|p| p.0 < p.1)
                        .collect()
                };
                for (x, y) in parts {
                    if r.flags & PE_PRESENT != 0 {
                        lp.runs.push((x, y, fi, r.file_offset + (x - a)));
                    } else if r.flags & PE_PARENT != 0 {
                        deeper.push((x, y));
                    }
                }
            }
            if deeper.is_empty() {
                lp.runs.sort_unstable();
                return Ok(lp);
            }
            want = deeper;
            first = false;
            level = std::fs::canonicalize(level.join("parent")).map_err(|e| {
                bad(
                    &name,
                    format!(
                        "{}: pages are in the parent images, but the parent link is broken ({e})",
                        level.display()
                    ),
                )
            })?;
        }
        Err(bad(
            &names::pagemap(pid as u32),
            "the parent chain is longer than 64 levels (a loop?)",
        ))
    }

    /// Reads up to `buf.len()` bytes of saved pages from `addr` on (stopping where the saved
    /// run ends); returns how many were read, 0 when `addr` holds no saved page.
    ///
    /// # Errors
    /// [`LazyError::Io`] if the pages file cannot be read.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<usize, LazyError> {
        use std::os::unix::fs::FileExt;
        let i = self.runs.partition_point(|r| r.1 <= addr);
        let Some(&(a, b, fi, off)) = self.runs.get(i) else {
            return Ok(0);
        };
        if a > addr {
            return Ok(0);
        }
        let n = ((b - addr) as usize).min(buf.len());
        let (path, f) = &self.files[fi];
        let f = f.as_ref().ok_or_else(|| LazyError::Image {
            file: path.display().to_string(),
            reason: "missing".into(),
        })?;
        f.read_exact_at(&mut buf[..n], off + (addr - a))
            .map_err(super::io_err(format!(
                "read {} at {:#x}",
                path.display(),
                addr
            )))?;
        Ok(n)
    }

    /// Whether every page of `[a, b)` is saved here.
    pub fn holds(&self, a: u64, b: u64) -> bool {
        let mut at = a;
        let i = self.runs.partition_point(|r| r.1 <= at);
        for r in &self.runs[i..] {
            if r.0 > at {
                break;
            }
            at = r.1;
            if at >= b {
                return true;
            }
        }
        at >= b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtract_cuts_runs_around_lazy_ranges() {
        let runs = vec![(0x1000u64, 0x9000u64), (0x10000, 0x12000)];
        let lazy = vec![(0x2000, 0x3000), (0x5000, 0x11000)];
        let out = subtract(
            &runs,
            &lazy,
            |r| *r,
            |r, skip, len| (r.0 + skip, r.0 + skip + len),
        );
        assert_eq!(
            out,
            vec![(0x1000, 0x2000), (0x3000, 0x5000), (0x11000, 0x12000)]
        );
        assert_eq!(
            subtract(&runs, &[], |r| *r, |r, s, l| (r.0 + s, r.0 + s + l)),
            runs
        );
    }
}
