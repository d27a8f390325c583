//! How every task of a tree gets its session and process group when its parent creates it:
//! worked out from the images before the first task is created.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::error::RestoreError;
use super::plan::{SessionOp, TaskPlan, TreePlan};

/// Adds a helper task for every session of `tree` whose leader is not in it (it exited), as
/// CRIU does: a task with the leader's pid, made by the members' parent, that calls `setsid`,
/// creates the members (they become its children while the tree is made), then ends. Its
/// parent, a child subreaper as it must have been to adopt them, adopts them again and reaps
/// it. Run before [`add_group_helpers`]: the helper also leads the session's first group, and
/// a group helper for a gone leader inside the session goes below it.
///
/// # Errors
/// [`RestoreError::SessionUnreachable`] when the members' parent was not a child subreaper
/// (it could not have adopted them) or members of one session have different parents.
pub fn add_session_helpers(tree: &mut TreePlan) -> Result<(), RestoreError> {
    let pids: HashSet<i32> = tree.tasks.iter().map(|t| t.pid).collect();
    // sid -> (the members' parent, the members).
    let mut sessions: BTreeMap<i32, (usize, Vec<usize>)> = BTreeMap::new();
    for &i in tree.order.iter().skip(1) {
        let Some(p) = tree.parent[i] else { continue };
        let (t, parent) = (&tree.tasks[i], &tree.tasks[p]);
        if t.sid <= 0 || t.sid == t.pid || t.sid == parent.sid || pids.contains(&t.sid) {
            continue;
        }
        let unreachable = RestoreError::SessionUnreachable {
            pid: t.pid,
            sid: t.sid,
            parent: parent.pid,
            parent_sid: parent.sid,
        };
        if parent.child_subreaper != Some(true) || parent.zombie.is_some() {
            return Err(unreachable);
        }
        let (at, members) = sessions.entry(t.sid).or_insert((p, Vec::new()));
        if *at != p {
            return Err(unreachable);
        }
        members.push(i);
    }
    for (sid, (p, members)) in sessions {
        tracing::info!(
            sid,
            parent = tree.tasks[p].pid,
            members = members.len(),
            "a helper leads the session"
        );
        let h = tree.tasks.len();
        tree.tasks.push(TaskPlan {
            pid: sid,
            ppid: tree.tasks[p].pid,
            pgid: sid,
            sid,
            zombie: Some(0),
            helper: true,
            ..TaskPlan::default()
        });
        tree.parent.push(Some(p));
        tree.children[p].retain(|c| !members.contains(c));
        tree.children[p].insert(0, h);
        for &m in &members {
            tree.parent[m] = Some(h);
        }
        tree.children.push(members);
    }
    relink_order(tree);
    Ok(())
}

/// The creation order again after the tree changed: depth first, parents before children.
fn relink_order(tree: &mut TreePlan) {
    let mut order = Vec::with_capacity(tree.tasks.len());
    let mut stack = vec![0usize];
    while let Some(i) = stack.pop() {
        if order.len() >= tree.tasks.len() {
            break;
        }
        order.push(i);
        stack.extend(tree.children[i].iter().rev());
    }
    tree.order = order;
}

/// Adds a helper task for every process group of `tree` whose leader is not in it (it exited
/// and was reaped), as CRIU's `TASK_HELPER`: a task with the leader's pid, made by the nearest
/// common ancestor of the members that is not in the group itself (so the members are in its
/// subtree, and in its session), first among its children. It leads the group, ends, and its
/// parent reaps it once its subtree exists: the members keep the group, its leader gone again.
/// The root's own group is left alone (the root joins criu's unless it leads it).
///
/// # Errors
/// [`RestoreError::GroupUnreachable`] when no such ancestor is in the members' session, or
/// the leader led the members' session too.
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
        // A leader that led the session too: its session cannot be made again for others
        // by a helper (a new session gets new members only by fork).
        if sid == pgid {
            return Err(RestoreError::GroupUnreachable {
                pid: tree.tasks[first].pid,
                pgid,
            });
        }
        let parent = common
            .into_iter()
            .find(|&a| tree.tasks[a].pgid != pgid)
            .filter(|&a| {
                let a = &tree.tasks[a];
                a.sid == sid && (a.zombie.is_none() || a.helper)
            })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn task(pid: i32, ppid: i32, pgid: i32, sid: i32) -> TaskPlan {
        TaskPlan {
            pid,
            ppid,
            pgid,
            sid,
            ..TaskPlan::default()
        }
    }

    /// Root 100; its child 101 and grandchild 102 in group 200, whose leader is gone.
    fn tree(sid: i32) -> TreePlan {
        TreePlan {
            tasks: vec![
                task(100, 0, 100, 100),
                task(101, 100, 200, sid),
                task(102, 101, 200, sid),
            ],
            parent: vec![None, Some(0), Some(1)],
            children: vec![vec![1], vec![2], vec![]],
            order: vec![0, 1, 2],
        }
    }

    #[test]
    fn a_gone_leader_gets_a_helper_under_the_members_common_ancestor() {
        let mut t = tree(100);
        add_group_helpers(&mut t).unwrap();
        assert_eq!(t.tasks.len(), 4);
        let h = &t.tasks[3];
        assert_eq!(
            (h.pid, h.ppid, h.pgid, h.zombie, h.helper),
            (200, 100, 200, Some(0), true)
        );
        assert_eq!(t.children[0], [3, 1]);
        assert_eq!(t.order, [0, 3, 1, 2]);
        let ops = session_ops(&t, false).unwrap();
        assert_eq!(ops[3], SessionOp::Setpgid(0));
        assert_eq!(ops[1], SessionOp::Setpgid(200));
        assert_eq!(ops[2], SessionOp::Inherit);
    }

    #[test]
    fn a_gone_leader_of_the_session_too_is_refused() {
        let mut t = tree(200);
        assert!(matches!(
            add_group_helpers(&mut t),
            Err(RestoreError::GroupUnreachable {
                pid: 101,
                pgid: 200
            })
        ));
    }

    /// Root 100 (a child subreaper) with children 101 and 102 in session 200, whose leader
    /// is gone; 101 in group 200, 102 leading its own, 102's child 103 in group 200.
    fn orphans(subreaper: bool) -> TreePlan {
        let mut root = task(100, 0, 100, 100);
        root.child_subreaper = Some(subreaper);
        TreePlan {
            tasks: vec![
                root,
                task(101, 100, 200, 200),
                task(102, 100, 102, 200),
                task(103, 102, 200, 200),
            ],
            parent: vec![None, Some(0), Some(0), Some(2)],
            children: vec![vec![1, 2], vec![], vec![3], vec![]],
            order: vec![0, 1, 2, 3],
        }
    }

    #[test]
    fn a_gone_session_leader_gets_a_helper_that_makes_the_members() {
        let mut t = orphans(true);
        add_session_helpers(&mut t).unwrap();
        add_group_helpers(&mut t).unwrap();
        assert_eq!(t.tasks.len(), 5);
        let h = &t.tasks[4];
        assert_eq!(
            (h.pid, h.ppid, h.pgid, h.sid, h.zombie, h.helper),
            (200, 100, 200, 200, Some(0), true)
        );
        assert_eq!(t.children[0], [4]);
        assert_eq!(t.children[4], [1, 2]);
        assert_eq!(t.parent[1], Some(4));
        assert_eq!(t.order, [0, 4, 1, 2, 3]);
        let ops = session_ops(&t, false).unwrap();
        assert_eq!(ops[4], SessionOp::Setsid);
        assert_eq!(ops[1], SessionOp::Inherit);
        assert_eq!(ops[2], SessionOp::Setpgid(0));
        assert_eq!(ops[3], SessionOp::Setpgid(200));
    }

    #[test]
    fn a_gone_session_leader_under_a_parent_that_adopts_nothing_is_refused() {
        let mut t = orphans(false);
        assert!(matches!(
            add_session_helpers(&mut t),
            Err(RestoreError::SessionUnreachable {
                pid: 101,
                sid: 200,
                ..
            })
        ));
    }
}
