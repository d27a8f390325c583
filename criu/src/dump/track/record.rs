//! What one tracked dump leaves for the next: the record naming each task's tracking
//! descriptor ([`RECORD`]) and the `parent` link to the previous images.

use std::collections::HashMap;
use std::path::Path;

use criu_images::names::PARENT_LINK;

use super::{RECORD, Trackers};
use crate::dump::error::DumpError;

/// One task's tracking descriptor as [`RECORD`] names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// The descriptor in the task.
    pub fd: i32,
    /// The userfaultfd's inode (each userfaultfd has its own).
    pub ino: u64,
    /// Whether the directory holding the record is a complete dump (has `inventory.img`), so
    /// that pages not written since can be left to it.
    pub complete: bool,
}

/// Reads [`RECORD`] of `dir` (empty when there is none; malformed lines are skipped with a
/// warning, which only costs a full copy of that task's memory).
pub fn read_record(dir: &Path) -> HashMap<i32, Recorded> {
    let mut out = HashMap::new();
    let Ok(text) = std::fs::read_to_string(dir.join(RECORD)) else {
        return out;
    };
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let f: Vec<&str> = line.split_whitespace().collect();
        match (
            f.first().and_then(|s| s.parse::<i32>().ok()),
            f.get(1).and_then(|s| s.parse::<i32>().ok()),
            f.get(2).and_then(|s| s.parse::<u64>().ok()),
        ) {
            (Some(pid), Some(fd), Some(ino)) if f.len() == 3 && fd >= 0 => {
                out.insert(
                    pid,
                    Recorded {
                        fd,
                        ino,
                        complete: true,
                    },
                );
            }
            _ => tracing::warn!("{}: malformed line {line:?} ignored", RECORD),
        }
    }
    out
}

/// Writes [`RECORD`] into `dir` for `trackers`.
///
/// # Errors
/// [`DumpError::File`].
pub fn write_record(dir: &Path, trackers: &Trackers) -> Result<(), DumpError> {
    let mut s = String::from("# criu memory tracking: pid fd userfaultfd-inode\n");
    let mut pids: Vec<&i32> = trackers.tasks.keys().collect();
    pids.sort();
    for pid in pids {
        let t = &trackers.tasks[pid];
        s.push_str(&format!("{pid} {} {}\n", t.remote_fd, t.ino));
    }
    std::fs::write(dir.join(RECORD), s).map_err(|source| DumpError::File {
        what: format!("write {}", dir.join(RECORD).display()),
        source,
    })
}

/// The tracking record of the parent images (`--prev-images-dir`, relative to `dir`), empty
/// without one.
pub fn parent_record(dir: &Path, prev: Option<&Path>) -> HashMap<i32, Recorded> {
    let Some(p) = prev else {
        return HashMap::new();
    };
    let pdir = dir.join(p);
    let mut r = read_record(&pdir);
    if !pdir.join(criu_images::names::INVENTORY).exists() {
        tracing::warn!(
            "{} is not a complete dump (no inventory): all pages are copied",
            pdir.display()
        );
        r.values_mut().for_each(|v| v.complete = false);
    }
    r
}

/// Opens (or makes) the tracker of every task of `tasks`, the recorded ones of `prev` first.
///
/// # Errors
/// Makes the `parent` link of `dir` point at `prev` (as given: relative to `dir`, as CRIU
/// writes it), after checking that it is an images directory.
///
/// # Errors
/// [`DumpError::File`] if `prev` is not a readable directory or the link cannot be made.
pub fn link_parent(dir: &Path, prev: &Path) -> Result<(), DumpError> {
    let target = dir.join(prev);
    let md = std::fs::metadata(&target).map_err(|source| DumpError::File {
        what: format!("previous images directory {}", target.display()),
        source,
    })?;
    if !md.is_dir() {
        return Err(DumpError::ImagesNotDir { dir: target });
    }
    if prev.is_absolute() {
        tracing::warn!(
            "absolute parent link {}: it may not work on restore elsewhere",
            prev.display()
        );
    }
    let link = dir.join(PARENT_LINK);
    match std::fs::symlink_metadata(&link) {
        Ok(m) if m.file_type().is_symlink() => {
            let _ = std::fs::remove_file(&link);
        }
        _ => {}
    }
    std::os::unix::fs::symlink(prev, &link).map_err(|source| DumpError::File {
        what: format!("link {} to {}", link.display(), prev.display()),
        source,
    })
}
