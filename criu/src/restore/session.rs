//! How every task of a tree gets its session and process group when its parent creates it:
//! worked out from the images before the first task is created.

use std::collections::HashMap;

use super::error::RestoreError;
use super::plan::{SessionOp, TreePlan};

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
