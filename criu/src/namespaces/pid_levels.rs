//! Nested pid namespaces: a task of the tree that lives in a pid namespace below the root's has a
//! pid at every level from the root's namespace down to its own.
//!
//! Dump: every task's `NSpid` (`/proc/PID/status`, criu's pid first) is cut to the levels from the
//! root's pid namespace down; `pstree.img` and the per-task images keep the pid in the root's
//! namespace (unique in the tree), and the tasks with more than one level are listed in
//! [`FILE`] (this criu's own: CRIU 4.2 has no image for them and refuses such trees), each with
//! its pids from the root's namespace down to its own.
//!
//! Restore: a task one level below its parent with pid 1 there is the init of a namespace its
//! parent made: it is cloned with `CLONE_NEWPID`; every task is cloned with `set_tid` holding its
//! pids from its own namespace out to the root's, so it gets the same pid at every level.
//!
//! Refused by name (at dump): a task that entered a pid namespace made by another task (one
//! level below its parent but not pid 1 there), and multi-threaded tasks below the root's
//! namespace.

use std::collections::HashMap;
use std::path::Path;

use criu_images::pb::PstreeEntry;
use serde_json::{Value, json};

use super::{Kind, NsError};
use crate::restore::ops::Node;
use crate::restore::plan::SessionOp;

/// This criu's own image: the tasks below the root's pid namespace and their pids at each level.
pub(crate) const FILE: &str = "pstree-nspid.json";

const K: Kind = Kind::Pid;

/// The `NSpid` of `path` (`/proc/PID` or `/proc/PID/task/TID`): criu's pid first, the
/// innermost last.
pub(crate) fn nspid(path: &str) -> Option<Vec<i32>> {
    let text = std::fs::read_to_string(format!("{path}/status")).ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    line.split_whitespace().map(|w| w.parse().ok()).collect()
}

/// The pids of every task and thread of `tree` (keyed by the pid criu sees) from the root's pid
/// namespace (`root_depth` levels below criu's, counting criu's as 1) down to its own.
///
/// # Errors
/// [`NsError::Io`] when a task's `NSpid` cannot be read or is shallower than the root's.
pub(crate) fn collect(
    tree: &[PstreeEntry],
    root_depth: usize,
) -> Result<HashMap<u32, Vec<u32>>, NsError> {
    let mut out = HashMap::new();
    for t in tree {
        for &tid in std::iter::once(&t.pid).chain(t.threads.iter()) {
            let v = nspid(&format!("/proc/{}/task/{tid}", t.pid))
                .or_else(|| nspid(&format!("/proc/{tid}")))
                .filter(|v| v.len() >= root_depth && root_depth > 0)
                .ok_or_else(|| {
                    NsError::io(
                        K,
                        format!("reading the NSpid of {tid}"),
                        std::io::Error::from_raw_os_error(libc::ESRCH),
                    )
                })?;
            out.insert(tid, v[root_depth - 1..].iter().map(|&p| p as u32).collect());
        }
    }
    Ok(out)
}

/// Checks that every task of `tree` (pids as criu sees them) can be cloned at its levels: in its
/// parent's namespace, or as the init (pid 1) of a namespace one level below it; and that a task
/// below the root's namespace has one thread.
///
/// # Errors
/// [`NsError::Unsupported`] naming the task.
pub(crate) fn check(tree: &[PstreeEntry], levels: &HashMap<u32, Vec<u32>>) -> Result<(), NsError> {
    let depth = |pid: u32| levels.get(&pid).map_or(1, Vec::len);
    for t in tree.iter().skip(1) {
        let (mine, theirs) = (depth(t.pid), depth(t.ppid));
        let inner = levels.get(&t.pid).and_then(|l| l.last()).copied();
        if mine == theirs + 1 && inner != Some(1) {
            return Err(NsError::unsupported(
                K,
                format!(
                    "{} is pid {} of a pid namespace its parent {} is not in, nor its init: a \
                     task that entered a pid namespace made by another is not restored",
                    t.pid,
                    inner.unwrap_or(0),
                    t.ppid
                ),
            ));
        }
        if mine != theirs && mine != theirs + 1 {
            return Err(NsError::unsupported(
                K,
                format!(
                    "{} is {mine} pid namespaces below the root's and its parent {} is \
                     {theirs}: not restored",
                    t.pid, t.ppid
                ),
            ));
        }
        if mine > 1 && t.threads.len() > 1 {
            return Err(NsError::unsupported(
                K,
                format!(
                    "{} has {} threads: multi-threaded processes in a nested pid namespace are \
                     not restored",
                    t.pid,
                    t.threads.len()
                ),
            ));
        }
    }
    Ok(())
}

/// The inode of `/proc/PID/ns/NAME`.
fn ns_ino(pid: u32, name: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/{name}"))
        .ok()
        .map(|m| m.ino())
}

/// Tasks of `tree` (pids as criu sees them) whose pid namespace for children is not their own
/// (`unshare(CLONE_NEWPID)`) but that of a child of theirs, the init of that namespace: task →
/// that child. Another such task (none of its children is the init) is only warned about: its
/// children made after a restore go to its own namespace.
fn for_children(tree: &[PstreeEntry]) -> HashMap<u32, u32> {
    let mut out = HashMap::new();
    for t in tree {
        let Some(fc) = ns_ino(t.pid, "pid_for_children") else {
            continue;
        };
        if Some(fc) == ns_ino(t.pid, "pid") {
            continue;
        }
        match tree
            .iter()
            .find(|c| c.ppid == t.pid && ns_ino(c.pid, "pid") == Some(fc))
        {
            Some(c) => {
                out.insert(t.pid, c.pid);
            }
            None => tracing::warn!(
                pid = t.pid,
                "its pid namespace for children is none of its children's: not kept"
            ),
        }
    }
    out
}

/// Writes [`FILE`] for the tasks of `tree` with more than one level (none: no file), and the
/// tasks whose pid namespace for children is a child's.
///
/// # Errors
/// [`NsError::Io`].
pub(crate) fn write(
    dir: &Path,
    tree: &[PstreeEntry],
    levels: &HashMap<u32, Vec<u32>>,
) -> Result<(), NsError> {
    let top = |p: u32| levels.get(&p).and_then(|l| l.first()).copied().unwrap_or(p);
    let fc: Vec<Value> = for_children(tree)
        .into_iter()
        .map(|(t, c)| json!({ "pid": top(t), "child": top(c) }))
        .collect();
    let tasks: Vec<Value> = tree
        .iter()
        .filter_map(|t| levels.get(&t.pid).filter(|l| l.len() > 1))
        .map(|l| json!({ "pid": l[0], "nspid": l }))
        .collect();
    if tasks.is_empty() {
        return Ok(());
    }
    tracing::info!(tasks = tasks.len(), "tasks in nested pid namespaces");
    let text = serde_json::to_vec_pretty(&json!({ "tasks": tasks, "for_children": fc }))
        .map_err(|e| NsError::bad(K, FILE, format!("encoding: {e}")))?;
    std::fs::write(dir.join(FILE), text).map_err(|e| NsError::io(K, format!("writing {FILE}"), e))
}

/// What [`FILE`] says: the pid in the root's namespace → the pids from there down, and the
/// tasks whose pid namespace for children is a child's (task → child, pids in the root's
/// namespace).
#[derive(Default)]
pub(crate) struct Nested {
    pub(crate) levels: HashMap<u32, Vec<u32>>,
    pub(crate) for_children: HashMap<u32, u32>,
}

/// Reads [`FILE`] (empty when the images have none).
///
/// # Errors
/// [`NsError::Io`], [`NsError::BadImage`] for a malformed file (a pid of 0, a list whose first
/// entry is not the task's pid, deeper than the kernel allows).
pub(crate) fn read(dir: &Path) -> Result<Nested, NsError> {
    let path = dir.join(FILE);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Nested::default()),
        Err(e) => return Err(NsError::io(K, format!("reading {FILE}"), e)),
    };
    let bad = |why: String| NsError::bad(K, FILE, why);
    let v: Value = serde_json::from_slice(&text).map_err(|e| bad(format!("decoding: {e}")))?;
    let mut out = HashMap::new();
    for t in v
        .get("tasks")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no tasks".into()))?
    {
        let pid = t
            .get("pid")
            .and_then(Value::as_u64)
            .and_then(|p| u32::try_from(p).ok())
            .filter(|&p| p > 0)
            .ok_or_else(|| bad("a task without a pid".into()))?;
        let levels: Vec<u32> = t
            .get("nspid")
            .and_then(Value::as_array)
            .ok_or_else(|| bad(format!("pid {pid}: no nspid")))?
            .iter()
            .map(|p| {
                p.as_u64()
                    .and_then(|p| u32::try_from(p).ok())
                    .filter(|&p| p > 0)
            })
            .collect::<Option<_>>()
            .ok_or_else(|| bad(format!("pid {pid}: a pid that is not a positive number")))?;
        // The kernel nests 32 levels at most (MAX_PID_NS_LEVEL).
        if levels.first() != Some(&pid) || levels.len() > 32 {
            return Err(bad(format!(
                "pid {pid}: nspid {levels:?} does not start with it"
            )));
        }
        out.insert(pid, levels);
    }
    let mut for_children = HashMap::new();
    for e in v
        .get("for_children")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let num = |k: &str| {
            e.get(k)
                .and_then(Value::as_u64)
                .and_then(|p| u32::try_from(p).ok())
                .filter(|&p| p > 0)
        };
        let (Some(p), Some(c)) = (num("pid"), num("child")) else {
            return Err(bad("a for_children entry without pid and child".into()));
        };
        for_children.insert(p, c);
    }
    Ok(Nested {
        levels: out,
        for_children,
    })
}

/// Gives each node of the tree (its pid in the root's namespace in [`Node::pid`], `parent` its
/// parent's index) its pids at every level: [`Node::tids`] from its own namespace out to the
/// root's (what `clone3`'s `set_tid` takes), [`Node::pid`] the pid its parent sees, and a group
/// to join ([`SessionOp::Setpgid`]) numbered as the task sees it.
///
/// # Errors
/// [`NsError::Unsupported`] for a task shallower than its parent or more than one level below
/// it, or a group leader the task cannot see.
pub(crate) fn apply(
    nodes: &mut [Node],
    parent: &[Option<usize>],
    nested: &Nested,
) -> Result<(), NsError> {
    let levels = &nested.levels;
    if levels.is_empty() {
        return Ok(());
    }
    // A task whose pid namespace for children is a child's enters it once its children exist.
    let tops: Vec<i32> = nodes.iter().map(|n| n.pid).collect();
    for (i, n) in nodes.iter_mut().enumerate() {
        n.enter_child_ns = nested
            .for_children
            .get(&(tops[i] as u32))
            .and_then(|&c| tops.iter().position(|&p| p == c as i32))
            .filter(|&c| parent.get(c).copied().flatten() == Some(i));
    }
    let at = |pid: i32| -> Vec<i32> {
        levels
            .get(&(pid as u32))
            .map(|l| l.iter().map(|&p| p as i32).collect())
            .unwrap_or_else(|| vec![pid])
    };
    let all: Vec<Vec<i32>> = nodes.iter().map(|n| at(n.pid)).collect();
    for (i, n) in nodes.iter_mut().enumerate() {
        let mine = &all[i];
        let depth = mine.len() - 1;
        if let Some(p) = parent.get(i).copied().flatten() {
            let theirs = all.get(p).map_or(0, |l| l.len() - 1);
            if depth != theirs && depth != theirs + 1 {
                return Err(NsError::unsupported(
                    K,
                    format!(
                        "pid {} is {depth} pid namespaces below the root's and its parent \
                         {theirs}: not restored",
                        n.pid
                    ),
                ));
            }
            // The pid the parent sees (its own level).
            n.pid = mine[theirs];
        }
        if let SessionOp::Setpgid(g) = n.session
            && g != 0
            && depth > 0
        {
            let leader = all
                .iter()
                .find(|l| l[0] == g)
                .and_then(|l| l.get(depth))
                .ok_or_else(|| {
                    NsError::unsupported(
                        K,
                        format!(
                            "pid {} joins group {g}, which its pid namespace does not see",
                            mine[0]
                        ),
                    )
                })?;
            n.session = SessionOp::Setpgid(*leader);
        }
        n.tids = mine.iter().rev().copied().collect();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_refuses_a_list_not_starting_with_the_pid() {
        let d = tempdir();
        std::fs::write(d.join(FILE), r#"{"tasks":[{"pid":5,"nspid":[6,1]}]}"#).unwrap();
        assert!(read(&d).is_err());
        std::fs::write(
            d.join(FILE),
            r#"{"tasks":[{"pid":5,"nspid":[5,1]}],"for_children":[{"pid":4,"child":5}]}"#,
        )
        .unwrap();
        let n = read(&d).unwrap();
        assert_eq!(n.levels[&5], [5, 1]);
        assert_eq!(n.for_children[&4], 5);
        std::fs::remove_dir_all(&d).unwrap();
    }

    fn tempdir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("criu-pid-levels-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
