//! The descriptors a task makes, in the order it makes them.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;

use crate::files::MAX_ENDS;
use crate::restore::ops::FdOp;
use crate::restore::plan::{FdSource, TaskPlan};

/// The descriptors a task makes, in order: each open file once with all of its ends this task
/// holds (other descriptors of an end are dups of the first), the ones the engine made
/// (`shared_fds`: target fd -> inherited descriptor) as dups; files that need other
/// descriptors first ([`crate::files::RestoreFile::after_fds`], an epoll's targets), and dups of
/// them, after all the others.
///
/// Of the engine's descriptors, those in `after_tree` hold the file only once the tree exists: the
/// task takes them from the engine then ([`FdOp::FromEngine`]).
pub(super) fn fd_ops(
    plan: &TaskPlan,
    shared_fds: &HashMap<i32, i32>,
    after_tree: &HashSet<i32>,
) -> Vec<FdOp> {
    let mut fds = Vec::new();
    let mut late = Vec::new();
    let mut late_fds: Vec<i32> = Vec::new();
    // Groups made already: (kind, group).
    let mut groups_done: Vec<(i32, u64)> = Vec::new();
    for f in &plan.fds {
        if let Some(&from) = shared_fds.get(&f.fd) {
            fds.push(if after_tree.contains(&from) {
                FdOp::FromEngine {
                    fd: f.fd,
                    of: from,
                    cloexec: f.cloexec,
                }
            } else {
                FdOp::Dup {
                    fd: f.fd,
                    of: from,
                    cloexec: f.cloexec,
                }
            });
            continue;
        }
        let file = match &f.source {
            FdSource::Dup { of } => {
                let op = FdOp::Dup {
                    fd: f.fd,
                    of: *of,
                    cloexec: f.cloexec,
                };
                if late_fds.contains(of) {
                    late_fds.push(f.fd);
                    late.push(op);
                } else {
                    fds.push(op);
                }
                continue;
            }
            FdSource::File(file) => file,
        };
        let out = if file.after_fds().is_empty() {
            &mut fds
        } else {
            late_fds.push(f.fd);
            &mut late
        };
        let mut at = [None; MAX_ENDS];
        let Some(group) = file.group() else {
            at[0] = Some((f.fd, f.cloexec));
            out.push(FdOp::Make {
                file: file.clone(),
                at,
                first: f.fd,
            });
            continue;
        };
        let key = (file.fd_type() as i32, group);
        if groups_done.contains(&key) {
            continue;
        }
        groups_done.push(key);
        // Every descriptor of this task on the object: the first of each end is placed when
        // it is made, the others are dups of it.
        // A second open file on the same end (reopened through `/proc/self/fd/N`) is opened
        // again the same way, not shared.
        let mut dups = Vec::new();
        let mut ids = [None; MAX_ENDS];
        for g in &plan.fds {
            let FdSource::File(o) = &g.source else {
                continue;
            };
            if shared_fds.contains_key(&g.fd) {
                continue;
            }
            if o.group() != Some(group) || o.fd_type() != file.fd_type() {
                continue;
            }
            let end = o.end();
            match at.get_mut(end) {
                Some(slot @ None) => {
                    *slot = Some((g.fd, g.cloexec));
                    ids[end] = Some(g.file_id);
                }
                Some(Some((first, _))) if ids[end] == Some(g.file_id) => dups.push(FdOp::Dup {
                    fd: g.fd,
                    of: *first,
                    cloexec: g.cloexec,
                }),
                Some(Some((first, _))) => dups.push(FdOp::Reopen {
                    fd: g.fd,
                    path: CString::new(format!("/proc/self/fd/{first}")).unwrap_or_default(),
                    flags: g.status.map_or(0, |s| s.flags) & libc::O_ACCMODE,
                    cloexec: g.cloexec,
                }),
                None => {}
            }
        }
        let first = at.iter().flatten().next().map_or(f.fd, |&(fd, _)| fd);
        out.push(FdOp::Make {
            file: file.clone(),
            at,
            first,
        });
        out.extend(dups);
    }
    fds.extend(late);
    fds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_ops_make_each_object_once_and_epolls_after_their_targets() {
        use crate::files::epoll::{EpollFile, EpollTarget};
        use crate::files::eventfd::EventFdFile;
        use crate::files::pipe::PipeEnd;
        use crate::restore::plan::Fd;
        use std::sync::Arc;
        let end = |write| {
            FdSource::File(Arc::new(PipeEnd {
                id: 9,
                write,
                flags: 0,
                data: Vec::new(),
                size: 0,
            }))
        };
        let epoll = FdSource::File(Arc::new(EpollFile::new(
            0,
            vec![EpollTarget {
                fd: 5,
                events: 1,
                data: 7,
            }],
        )));
        let efd = FdSource::File(Arc::new(EventFdFile {
            counter: 0,
            flags: 0,
        }));
        let fd = |fd, file_id, source| Fd {
            fd,
            file_id,
            cloexec: false,
            source,
            status: None,
        };
        let plan = TaskPlan {
            fds: vec![
                fd(3, 1, end(false)),
                fd(4, 2, epoll),
                fd(5, 3, efd),
                fd(6, 2, FdSource::Dup { of: 4 }),
                fd(7, 4, end(true)),
                // A second open file on the read end (its own flags and offset): reopened
                // through the first, not a dup of it.
                fd(8, 5, end(false)),
                fd(9, 6, end(true)),
            ],
            ..TaskPlan::default()
        };
        // fd 9 was made by the engine for several tasks: inherited as engine fd 100.
        let shared = HashMap::from([(9, 100)]);
        let ops = fd_ops(&plan, &shared, &HashSet::new());
        let shape: Vec<String> = ops
            .iter()
            .map(|op| match op {
                FdOp::Make { file, at, first } => {
                    format!("make {:?} {at:?} first {first}", file.fd_type())
                }
                FdOp::Dup { fd, of, .. } => format!("dup {fd} of {of}"),
                FdOp::Reopen { fd, path, .. } => format!("reopen {fd} {path:?}"),
                FdOp::FromEngine { fd, of, .. } => format!("from engine {fd} of {of}"),
            })
            .collect();
        assert_eq!(
            shape,
            [
                "make Pipe [Some((3, false)), Some((7, false))] first 3",
                "reopen 8 \"/proc/self/fd/3\"",
                "make Eventfd [Some((5, false)), None] first 5",
                "dup 9 of 100",
                "make Eventpoll [Some((4, false)), None] first 4",
                "dup 6 of 4",
            ]
        );
        // Opened by the engine once the tree exists: taken from the engine, not inherited.
        let ops = fd_ops(&plan, &shared, &HashSet::from([100]));
        assert!(
            ops.iter()
                .any(|op| matches!(op, FdOp::FromEngine { fd: 9, of: 100, .. }))
        );
    }
}
