//! Pages of an incremental dump kept in its parents: a `PE_PARENT` entry of
//! `pagemap-PID.img` is looked up in the `parent` link's images, whose entry may point further
//! up, as far as the chain goes. Each level's pagemap is read once per task. A missing link, a
//! parent without the task's pagemap, a loop, or a range no parent holds is a clear error.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use criu_images::Pagemap;
use criu_images::names::PARENT_LINK;
use criu_images::pagemap::{PAGE_SIZE, PE_PARENT, PE_PRESENT, PageRun};

use super::super::error::RestoreError;

/// Pages found in a parent: `(vaddr, pages, pages file, offset in it)`.
pub(super) type Found = (u64, u64, PathBuf, u64);

/// The parents of one task's images, read as far as needed.
pub(super) struct Parents {
    pid: u32,
    top: PathBuf,
    levels: Vec<Level>,
    seen: HashSet<PathBuf>,
}

struct Level {
    dir: PathBuf,
    runs: Vec<PageRun>,
    pages: PathBuf,
}

fn broken(dir: &Path, reason: String) -> RestoreError {
    RestoreError::ParentChain {
        dir: dir.to_path_buf(),
        reason,
    }
}

impl Parents {
    /// The parents of the images in `top` for task `pid`.
    pub(super) fn new(top: &Path, pid: u32) -> Self {
        Parents {
            pid,
            top: top.to_path_buf(),
            levels: Vec::new(),
            // The top itself goes in once a parent is looked up (most tasks never need one).
            seen: HashSet::new(),
        }
    }

    fn load(&mut self, depth: usize) -> Result<(), RestoreError> {
        if self.seen.is_empty()
            && let Ok(c) = std::fs::canonicalize(&self.top)
        {
            self.seen.insert(c);
        }
        while self.levels.len() <= depth {
            let base = self
                .levels
                .last()
                .map_or(self.top.clone(), |l| l.dir.clone());
            let link = base.join(PARENT_LINK);
            if std::fs::symlink_metadata(&link).is_err() {
                return Err(broken(
                    &base,
                    format!(
                        "pagemap-{}.img has pages in the parent images, but there is no parent link",
                        self.pid
                    ),
                ));
            }
            let dir = std::fs::canonicalize(&link)
                .map_err(|e| broken(&base, format!("the parent link leads nowhere ({e})")))?;
            if !self.seen.insert(dir.clone()) {
                return Err(broken(
                    &base,
                    format!("the parent chain loops back to {}", dir.display()),
                ));
            }
            let name = criu_images::names::pagemap(self.pid);
            let pm = Pagemap::read(dir.join(&name)).map_err(|e| {
                broken(
                    &dir,
                    format!("parent images without a readable {name}: {e}"),
                )
            })?;
            let runs = pm
                .runs()
                .map_err(|what| broken(&dir, format!("{name}: {what}")))?;
            let pages = dir.join(pm.pages_file_name());
            self.levels.push(Level { dir, runs, pages });
        }
        Ok(())
    }

    /// Appends to `out` where the pages `[a, b)` are, looking from parent level `depth` (0: the
    /// top's parent) upwards.
    ///
    /// # Errors
    /// [`RestoreError::ParentChain`] if the chain is broken or no parent holds some page.
    pub(super) fn resolve(
        &mut self,
        depth: usize,
        a: u64,
        b: u64,
        out: &mut Vec<Found>,
    ) -> Result<(), RestoreError> {
        self.load(depth)?;
        let mut at = a;
        let mut deeper: Vec<(u64, u64)> = Vec::new();
        {
            let lvl = &self.levels[depth];
            let first = lvl
                .runs
                .partition_point(|r| r.vaddr.saturating_add(r.len()) <= at);
            for r in &lvl.runs[first..] {
                if at >= b || r.vaddr >= b {
                    break;
                }
                let end = r.vaddr.saturating_add(r.len());
                if r.vaddr > at {
                    break;
                }
                let e = end.min(b);
                if r.flags & PE_PRESENT != 0 {
                    out.push((
                        at,
                        (e - at) / PAGE_SIZE,
                        lvl.pages.clone(),
                        r.file_offset + (at - r.vaddr),
                    ));
                } else if r.flags & PE_PARENT != 0 {
                    deeper.push((at, e));
                } else {
                    break;
                }
                at = e;
            }
            if at < b {
                return Err(broken(
                    &lvl.dir,
                    format!(
                        "pages {at:#x}-{b:#x} of {} are not in its pagemap-{}.img",
                        self.pid, self.pid
                    ),
                ));
            }
        }
        // Ranges that are further up, resolved in order (they go after this level's runs; the
        // caller sorts what it needs sorted).
        for (x, y) in deeper {
            self.resolve(depth + 1, x, y, out)?;
        }
        Ok(())
    }
}
