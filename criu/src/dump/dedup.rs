//! `criu dedup` and `--auto-dedup`: once a dump in a chain holds a page itself, the copies of
//! that page its parent images hold are never read again by a restore from this dump, so
//! their bytes in the parents' `pages-N.img` are given back to the file system
//! (`fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)`): offsets and pagemaps stay as
//! they are, the holes read as zeros. As with CRIU, the parents are then only good as part
//! of the chain: restore the newest dump.

use std::path::{Path, PathBuf};

use criu_images::Pagemap;
use criu_images::pagemap::{PE_PRESENT, PageRun};

/// Errors of a dedup.
#[derive(Debug, thiserror::Error)]
pub enum DedupError {
    /// A file could not be read, opened or punched.
    #[error("dedup: {what}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An image could not be read.
    #[error("dedup: {file}: {reason}")]
    Image {
        /// The image file.
        file: String,
        /// What is wrong.
        reason: String,
    },
}

impl DedupError {
    /// The errno an RPC reply carries.
    pub fn errno(&self) -> i32 {
        match self {
            DedupError::Io { source, .. } => crate::errno::io(source),
            DedupError::Image { .. } => libc::EBADMSG,
        }
    }
}

/// What a dedup did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DedupStats {
    /// Pagemaps of the top directory looked at.
    pub pagemaps: u64,
    /// Bytes punched out of parents' pages files.
    pub punched: u64,
}

/// Punches, in every parent of the images in `dir` (following `parent` links), the pages
/// that the pagemaps of `dir` hold themselves.
///
/// # Errors
/// [`DedupError`] if an image cannot be read or a pages file cannot be punched.
pub fn dedup(dir: &Path) -> Result<DedupStats, DedupError> {
    let mut st = DedupStats::default();
    let rd = std::fs::read_dir(dir).map_err(|e| DedupError::Io {
        what: format!("read {}", dir.display()),
        source: e,
    })?;
    let mut names: Vec<String> = rd
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("pagemap-") && n.ends_with(".img"))
        .collect();
    names.sort();
    for name in names {
        let pm = read(&dir.join(&name))?;
        let present: Vec<(u64, u64)> = runs(&pm, &name)?
            .iter()
            .filter(|r| r.flags & PE_PRESENT != 0)
            .map(|r| (r.vaddr, r.vaddr.saturating_add(r.len())))
            .collect();
        st.pagemaps += 1;
        if present.is_empty() {
            continue;
        }
        st.punched += punch_parents(dir, &name, &present)?;
    }
    tracing::info!(
        pagemaps = st.pagemaps,
        punched = st.punched,
        "parent images deduplicated"
    );
    Ok(st)
}

fn read(path: &Path) -> Result<Pagemap, DedupError> {
    Pagemap::read(path).map_err(|e| DedupError::Image {
        file: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn runs(pm: &Pagemap, name: &str) -> Result<Vec<PageRun>, DedupError> {
    pm.runs().map_err(|reason| DedupError::Image {
        file: name.to_string(),
        reason,
    })
}

/// Punches `ranges` (sorted) out of pagemap `name`'s pages in every parent level of `dir`.
fn punch_parents(dir: &Path, name: &str, ranges: &[(u64, u64)]) -> Result<u64, DedupError> {
    let mut punched = 0;
    let mut seen: Vec<PathBuf> = std::fs::canonicalize(dir).into_iter().collect();
    let mut level = dir.to_path_buf();
    for _ in 0..64 {
        let Ok(next) = std::fs::canonicalize(level.join("parent")) else {
            break;
        };
        if seen.contains(&next) {
            break;
        }
        seen.push(next.clone());
        level = next;
        let path = level.join(name);
        if !path.exists() {
            break;
        }
        let pm = read(&path)?;
        let pages = level.join(pm.pages_file_name());
        let Ok(f) = std::fs::OpenOptions::new().write(true).open(&pages) else {
            continue;
        };
        for r in runs(&pm, name)? {
            if r.flags & PE_PRESENT == 0 {
                continue;
            }
            let (a, b) = (r.vaddr, r.vaddr.saturating_add(r.len()));
            let first = ranges.partition_point(|x| x.1 <= a);
            for &(x, y) in &ranges[first..] {
                if x >= b {
                    break;
                }
                let (s, e) = (x.max(a), y.min(b));
                if s < e {
                    punch(&f, r.file_offset + (s - a), e - s).map_err(|source| DedupError::Io {
                        what: format!("punch {}", pages.display()),
                        source,
                    })?;
                    punched += e - s;
                }
            }
        }
    }
    Ok(punched)
}

fn punch(f: &std::fs::File, off: u64, len: u64) -> std::io::Result<()> {
    nix::fcntl::fallocate(
        f,
        nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
            | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
        off as libc::off_t,
        len as libc::off_t,
    )
    .map_err(std::io::Error::from)
}

/// `--auto-dedup` after a dump or pre-dump into `dir`: a failure leaves the parents as they
/// were (the new images are complete either way) and is logged.
pub(crate) fn after_dump(dir: &Path) {
    if !dir.join("parent").exists() {
        return;
    }
    if let Err(e) = dedup(dir) {
        tracing::warn!("--auto-dedup: {e}");
    }
}
