//! `--freeze-cgroup PATH`: the tree's cgroup (v2) is frozen before the tree is seized, so no
//! process of it can fork while the tree is walked, and thawed once every process is seized
//! (the seized tasks stay stopped by ptrace). On any error the cgroup is thawed and the tree
//! runs on. A cgroup that was frozen already is left frozen. A v1 freezer directory
//! (`freezer.state`, as runc passes on a v1 host) is not used: the tree is seized task by task,
//! with a warning.
//!
//! The v2 freezer lets ptrace stops through: `PTRACE_INTERRUPT` of a frozen task makes it leave
//! the freezer trap and stop for the tracer.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::options::DumpOptions;

use super::error::{DumpError, file_err};
use super::seize::{SeizedTree, seize_tree};

/// Seizes the tree of `pid` as [`seize_tree`] does, inside a frozen `opts.freeze_cgroup` if
/// one is given.
pub(super) fn seize(pid: i32, opts: &DumpOptions) -> Result<SeizedTree, DumpError> {
    let Some(cg) = &opts.freeze_cgroup else {
        return seize_tree(pid);
    };
    if !cg.join("cgroup.freeze").exists() && cg.join("freezer.state").exists() {
        // A v1 freezer (runc passes one on hosts with the v1 hierarchy): its frozen tasks
        // do not stop for ptrace until thawed, so the tree is seized task by task instead.
        tracing::warn!(
            cgroup = %cg.display(),
            "--freeze-cgroup: the v1 freezer is not used; the tree is seized task by task"
        );
        return seize_tree(pid);
    }
    let frozen = Frozen::freeze(cg, opts.timeout)?;
    // On an error `frozen` drops and thaws the cgroup; the seized tasks detach.
    let tree = seize_tree(pid)?;
    frozen.thaw()?;
    Ok(tree)
}

/// A cgroup frozen by us; thawed on drop unless [`Frozen::thaw`] did already.
struct Frozen {
    dir: PathBuf,
    /// False when the cgroup was frozen before (it is then left frozen).
    ours: bool,
}

impl Frozen {
    /// Freezes the cgroup v2 `dir` and waits (up to `timeout` seconds, 10 if 0) until the
    /// kernel reports every task of it frozen.
    fn freeze(dir: &Path, timeout: u32) -> Result<Frozen, DumpError> {
        let knob = dir.join("cgroup.freeze");
        let before = std::fs::read_to_string(&knob).map_err(file_err(format!(
            "read {} (--freeze-cgroup needs a cgroup v2 directory)",
            knob.display()
        )))?;
        let ours = before.trim() != "1";
        let frozen = Frozen {
            dir: dir.to_path_buf(),
            ours,
        };
        if ours {
            std::fs::write(&knob, "1").map_err(file_err(format!("write {}", knob.display())))?;
        }
        let limit = Duration::from_secs(u64::from(if timeout == 0 { 10 } else { timeout }));
        let t0 = Instant::now();
        let mut pause = Duration::from_micros(100);
        while !frozen.is_frozen()? {
            if t0.elapsed() > limit {
                return Err(file_err(format!("freeze cgroup {}", dir.display()))(
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("not frozen after {}s", limit.as_secs()),
                    ),
                ));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(10));
        }
        tracing::info!(
            cgroup = %dir.display(),
            us = t0.elapsed().as_micros() as u64,
            "cgroup frozen"
        );
        Ok(frozen)
    }

    /// Whether `cgroup.events` reports `frozen 1`.
    fn is_frozen(&self) -> Result<bool, DumpError> {
        let events = self.dir.join("cgroup.events");
        let text = std::fs::read_to_string(&events)
            .map_err(file_err(format!("read {}", events.display())))?;
        Ok(frozen_in_events(&text))
    }

    /// Thaws the cgroup (if we froze it), reporting a failure.
    fn thaw(mut self) -> Result<(), DumpError> {
        let res = self.write_thaw();
        self.ours = false;
        res
    }

    fn write_thaw(&self) -> Result<(), DumpError> {
        if !self.ours {
            return Ok(());
        }
        let knob = self.dir.join("cgroup.freeze");
        std::fs::write(&knob, "0").map_err(file_err(format!("write {}", knob.display())))?;
        tracing::info!(cgroup = %self.dir.display(), "cgroup thawed");
        Ok(())
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if let Err(e) = self.write_thaw() {
            tracing::error!(cgroup = %self.dir.display(), error = %e, "cannot thaw the cgroup");
        }
    }
}

/// Whether a `cgroup.events` text has the line `frozen 1`.
fn frozen_in_events(text: &str) -> bool {
    text.lines().any(|l| {
        let mut w = l.split_whitespace();
        w.next() == Some("frozen") && w.next() == Some("1")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_frozen_line() {
        assert!(frozen_in_events("populated 1\nfrozen 1\n"));
        assert!(!frozen_in_events("populated 1\nfrozen 0\n"));
        assert!(!frozen_in_events("populated 1\n"));
        assert!(!frozen_in_events("frozen\n"));
    }
}
