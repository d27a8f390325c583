//! Comparing a tree's cgroups with criu's: [`differing`] finds the tasks of a tree whose cgroups
//! are not criu's own (a tool's question; the membership itself is dumped and restored by
//! `namespaces::cgroup`).
//!
//! ```no_run
//! for d in criu::differing_cgroups(1234) {
//!     eprintln!("pid {} is in {}:{}, criu in {}", d.pid, d.controllers, d.theirs, d.ours);
//! }
//! ```

use std::collections::BTreeMap;

/// A task whose cgroup in one hierarchy differs from criu's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Differs {
    /// The task.
    pub pid: i32,
    /// The hierarchy's controllers as `/proc/PID/cgroup` names them (empty for cgroup v2).
    pub controllers: String,
    /// The task's cgroup in it.
    pub theirs: String,
    /// criu's cgroup in it (empty if criu is not in that hierarchy).
    pub ours: String,
}

/// `/proc/PID/cgroup` (or `self`) as controllers → path; `None` if it cannot be read.
fn cgroups_of(who: &str) -> Option<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(format!("/proc/{who}/cgroup")).ok()?;
    Some(
        text.lines()
            .filter_map(|l| {
                let mut it = l.splitn(3, ':');
                let _id = it.next()?;
                let ctl = it.next()?;
                let path = it.next()?;
                Some((ctl.to_string(), path.to_string()))
            })
            .collect(),
    )
}

/// `root` and its descendants, as `/proc/*/task/*/children` lists them now.
pub fn tree_pids(root: i32) -> Vec<i32> {
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let pid = out[i];
        i += 1;
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let Ok(kids) = std::fs::read_to_string(t.path().join("children")) else {
                continue;
            };
            for k in kids
                .split_whitespace()
                .filter_map(|k| k.parse::<i32>().ok())
            {
                if !out.contains(&k) {
                    out.push(k);
                }
            }
        }
    }
    out
}

/// The tasks of the tree under `root` whose cgroups differ from criu's own, one entry per task
/// and hierarchy. Tasks that vanish meanwhile are skipped.
pub fn differing(root: i32) -> Vec<Differs> {
    let Some(ours) = cgroups_of("self") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for pid in tree_pids(root) {
        let Some(theirs) = cgroups_of(&pid.to_string()) else {
            continue;
        };
        for (ctl, path) in theirs {
            let mine = ours.get(&ctl).cloned().unwrap_or_default();
            if mine != path {
                out.push(Differs {
                    pid,
                    controllers: ctl,
                    theirs: path,
                    ours: mine,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn we_do_not_differ_from_ourselves() {
        let me = std::process::id() as i32;
        assert!(tree_pids(me).contains(&me));
        assert!(differing(me).is_empty());
    }
}
