//! How every task of a tree gets its session and process group when its parent creates it:
//! worked out from the images before the first task is created.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::error::RestoreError;
use super::plan::{SessionOp, TaskPlan, TreePlan};

/// Adds a helper task for every process group of `tree` whose leader is not in it (it exited
/// and was reaped), as CRIU's `TASK_HELPER`: a task with the leader's pid, made by the nearest
/// common ancestor of the members that is not in the group itself (so the members are in its
/// subtree, and in its session), first among its children. It leads the group, ends, and its
/// parent reaps it once its subtree exists: the members keep the group, its leader gone again.
/// The root's own group is left alone (the root joins criu's unless it leads it).
///
/// # Errors
/// [`RestoreError::GroupUnreachable`] when no such ancestor is in the members' session.
pub fn add_group_helpers(tree: &mut TreePlan) -> Result<(), RestoreError> {
    let pids: HashSet<i32> = tree.tasks.iter().map(|t| t.pid).collect();
    let root_pgid = tree.root().pgid;
    let mut groups: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
    for (i, t) in tree.tasks.iter().enumerate() {
        if t.pgid > 0 && t.pgid != root_pgid && !pids.contains(&t.pgid) {
            groups.entry(t.pgid).or_default().push(i);
        }
    }
    for (pgid, members) in groups {
        let ancestors = |mut i: usize| {
            let mut up = vec![i];
            while let Some(p) = tree.parent.get(i).copied().flatten() {
                if up.contains(&p) {
                    break;
                }
                up.push(p);
                i = p;
            }
            up
        };
        let first = members[0];
        // The first member's ancestors, nearest first, that are everybody's.
        let mut common = ancestors(first);
        for &m in &members[1..] {
            let theirs = ancestors(m);
            common.retain(|a| theirs.contains(a));
        }
        let sid = tree.tasks[first].sid;
        let parent = common
            .into_iter()
            .find(|&a| tree.tasks[a].pgid != pgid)
            .filter(|&a| tree.tasks[a].sid == sid && tree.tasks[a].zombie.is_none())
            .ok_or(RestoreError::GroupUnreachable {
                pid: tree.tasks[first].pid,
                pgid,
            })?;
        tracing::info!(
            pgid,
            parent = tree.tasks[parent].pid,
            "a helper leads the group"
        );
        let h = tree.tasks.len();
        tree.tasks.push(TaskPlan {
            pid: pgid,
            ppid: tree.tasks[parent].pid,
            pgid,
            sid,
            zombie: Some(0),
            helper: true,
            ..TaskPlan::default()
        });
        tree.parent.push(Some(parent));
        tree.children.push(Vec::new());
        tree.children[parent].insert(0, h);
        let at = tree
            .order
            .iter()
            .position(|&x| x == parent)
            .map_or(0, |k| k + 1);
        tree.order.insert(at, h);
    }
    Ok(())
}

/// Works out how each task of `tree` gets its session and group when its parent creates it.
///
/// # Errors
/// [`RestoreError::SessionLeaderInGroup`], [`RestoreError::SessionUnreachable`],
/// [`RestoreError::GroupUnreachable`] for a task whose session or group cannot be reached that way
/// (a session led by no task of the tree, a group whose leader comes later).
pub fn session_ops(tree: &TreePlan, shell_job: bool) -> Result<Vec<SessionOp>, RestoreError> {
    let mut ops = vec![SessionOp::Inherit; tree.tasks.len()];
    let root = tree.root();
    ops[0] = if shell_job {
        // A shell job stays in criu's session and process group (the terminal's job).
        SessionOp::Inherit
    } else if root.sid == root.pid {
        SessionOp::Setsid
    } else if root.pgid == root.pid {
        SessionOp::Setpgid(0)
    } else {
        SessionOp::Inherit
    };
    if !shell_job && root.sid != root.pid {
        tracing::warn!(
            pid = root.pid,
            sid = root.sid,
            "the root was not a session leader; it joins criu's session"
        );
    }
    let position: HashMap<usize, usize> = tree
        .order
        .iter()
        .enumerate()
        .map(|(k, &i)| (i, k))
        .collect();
    let by_pid: HashMap<i32, usize> = tree
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.pid, i))
        .collect();
    for &i in tree.order.iter().skip(1) {
        let t = &tree.tasks[i];
        let Some(p) = tree.parent[i] else { continue };
        let parent = &tree.tasks[p];
        ops[i] = if t.sid == t.pid {
            if t.pgid != t.pid {
                return Err(RestoreError::SessionLeaderInGroup {
                    pid: t.pid,
                    sid: t.sid,
                    pgid: t.pgid,
                });
            }
            SessionOp::Setsid
        } else if t.sid != parent.sid {
            return Err(RestoreError::SessionUnreachable {
                pid: t.pid,
                sid: t.sid,
                parent: parent.pid,
                parent_sid: parent.sid,
            });
        } else if t.pgid == parent.pgid {
            SessionOp::Inherit
        } else if t.pgid == t.pid {
            SessionOp::Setpgid(0)
        } else {
            let leader = by_pid.get(&t.pgid).copied().filter(|&l| {
                position[&l] < position[&i]
                    && tree.tasks[l].pgid == t.pgid
                    && tree.tasks[l].sid == t.sid
            });
            if leader.is_none() {
                return Err(RestoreError::GroupUnreachable {
                    pid: t.pid,
                    pgid: t.pgid,
                });
            }
            SessionOp::Setpgid(t.pgid)
        };
    }
    Ok(ops)
}
