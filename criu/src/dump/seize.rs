//! Freezing a process tree: every process seized with compel (all its threads stopped), breadth
//! first, each before its children are listed, then the frozen tree re-listed until a pass finds
//! nothing new. Children that exit meanwhile are kept as zombies; auto-reaped ones are skipped.

use compel::{Task, TaskError, TaskState};

use super::error::{DumpError, file_err};

/// The seized processes of a tree, the root first, and the pids of its zombies.
pub(super) type SeizedTree = (Vec<(i32, Task)>, Vec<i32>);

/// Seizes `root` and, breadth first, every descendant: each process is seized before its
/// children are listed, so none can fork unseen.
pub(super) fn seize_tree(root: i32) -> Result<SeizedTree, DumpError> {
    let mut out: Vec<(i32, Task)> = Vec::new();
    let mut zombies: Vec<i32> = Vec::new();
    let mut queue = std::collections::VecDeque::from([root]);
    while let Some(p) = queue.pop_front() {
        let task = match Task::seize(p) {
            Ok(t) => t,
            // A child that exited and was not reaped yet is saved as a zombie (it has no
            // children of its own: they went to a reaper).
            Err(TaskError::Zombie { .. }) if p != root => {
                zombies.push(p);
                continue;
            }
            // A child listed while its parent was frozen can still vanish before we get to it:
            // it exited and the kernel reaped it at once (SIGCHLD ignored or SA_NOCLDWAIT).
            // Its parent cannot see it any more, so the frozen tree does not hold it.
            Err(TaskError::NoSuchTask { .. }) if p != root => {
                tracing::debug!(pid = p, "child gone before it was seized (auto-reaped)");
                continue;
            }
            // A child that exited while it was being seized: its parent is frozen, so it stays
            // a zombie (and is saved as one) unless the kernel reaped it at once.
            Err(TaskError::Died { .. }) if p != root => {
                if matches!(compel::classify(p), Ok(TaskState::Zombie)) {
                    zombies.push(p);
                }
                continue;
            }
            Err(source) => {
                return Err(match source {
                    TaskError::NoSuchTask { .. } => DumpError::NoProcess { pid: p },
                    TaskError::Zombie { .. } => DumpError::Zombie { pid: p },
                    source => DumpError::Seize { pid: p, source },
                });
            }
        };
        let kids = children(p)?;
        out.push((p, task));
        for k in kids {
            if !out.iter().any(|(q, _)| *q == k) && !zombies.contains(&k) && !queue.contains(&k) {
                queue.push_back(k);
            }
        }
    }
    settle_tree(&mut out, &mut zombies)?;
    Ok((out, zombies))
}

/// How many times [`settle_tree`] re-lists the frozen tree before it gives up.
const SETTLE_ROUNDS: usize = 8;

/// Re-lists the children and threads of every seized process until the listing matches what
/// is seized: a child that turned up (a fork that completed while its parent was being
/// stopped) is seized with its own descendants, a thread that turned up is refused clearly.
/// Each round lists every process again; the tree is stable once a round finds nothing new.
fn settle_tree(out: &mut Vec<(i32, Task)>, zombies: &mut Vec<i32>) -> Result<(), DumpError> {
    for round in 0..SETTLE_ROUNDS {
        let mut fresh = Vec::new();
        for (p, task) in out.iter() {
            let known = task.threads();
            let listed = listed_threads(*p)?;
            if let Some(tid) = listed.iter().find(|t| !known.contains(t)) {
                return Err(DumpError::Unstable {
                    pid: *p,
                    what: format!("thread {tid} appeared after the process was frozen"),
                });
            }
            for k in children(*p)? {
                if !out.iter().any(|(q, _)| *q == k) && !zombies.contains(&k) && !fresh.contains(&k)
                {
                    fresh.push(k);
                }
            }
        }
        if fresh.is_empty() {
            return Ok(());
        }
        tracing::info!(
            round,
            new = fresh.len(),
            "tree changed while it was seized; seizing newcomers"
        );
        let mut queue = std::collections::VecDeque::from(fresh);
        while let Some(p) = queue.pop_front() {
            let task = match Task::seize(p) {
                Ok(t) => t,
                Err(TaskError::Zombie { .. }) => {
                    zombies.push(p);
                    continue;
                }
                Err(TaskError::NoSuchTask { .. }) => continue,
                Err(TaskError::Died { .. }) => {
                    if matches!(compel::classify(p), Ok(TaskState::Zombie)) {
                        zombies.push(p);
                    }
                    continue;
                }
                Err(source) => return Err(DumpError::Seize { pid: p, source }),
            };
            let kids = children(p)?;
            out.push((p, task));
            for k in kids {
                if !out.iter().any(|(q, _)| *q == k) && !zombies.contains(&k) && !queue.contains(&k)
                {
                    queue.push_back(k);
                }
            }
        }
    }
    Err(DumpError::Unstable {
        pid: out.first().map_or(0, |(p, _)| *p),
        what: format!("still changing after {SETTLE_ROUNDS} rounds of seizing"),
    })
}

/// The thread ids listed in `/proc/PID/task`.
fn listed_threads(pid: i32) -> Result<Vec<i32>, DumpError> {
    let dir = format!("/proc/{pid}/task");
    let rd = std::fs::read_dir(&dir).map_err(file_err(format!("list {dir}")))?;
    Ok(rd
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect())
}

/// The children of every thread of `pid` (`/proc/PID/task/TID/children`).
fn children(pid: i32) -> Result<Vec<i32>, DumpError> {
    let dir = format!("/proc/{pid}/task");
    let rd = std::fs::read_dir(&dir).map_err(file_err(format!("list {dir}")))?;
    let mut kids = Vec::new();
    for e in rd.flatten() {
        let path = e.path().join("children");
        // A thread that exited meanwhile has no file any more.
        let Ok(text) = compel::proc::read_text(&path) else {
            continue;
        };
        kids.extend(
            text.split_whitespace()
                .filter_map(|w| w.parse::<i32>().ok()),
        );
    }
    kids.sort_unstable();
    kids.dedup();
    Ok(kids)
}
