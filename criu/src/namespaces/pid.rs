//! Pid namespaces: a tree whose root is the init of a pid namespace of its own comes back in a
//! new one with the same pids inside it.
//!
//! A pid namespace has no state of its own to save (no image, as in CRIU); what changes is
//! which pids the images hold: those the tasks have inside their namespace (the last field of
//! `NSpid` in `/proc/PID/status`), so the root is pid 1. The dump writes its images with the pids
//! criu sees, then [`dump`] rewrites them: the per-task images are renamed (`core-`, `ids-`,
//! `mm-`, `fs-`, `pagemap-`) and every pid field of `pstree.img`, `files.img` (owners, pidfds),
//! `filelocks.img`, `tty-info.img` and the cores (timer targets) is translated.
//!
//! Restore: the root is cloned with `CLONE_NEWPID` and `set_tid` 1, each task then creates its
//! children with their pids inside the namespace as usual; the engine, outside, finds a task's
//! pid as it sees it through [`PidMap`].
//!
//! Refused by name: a root that is not the init of its namespace, tasks in nested pid
//! namespaces, and (for now) multi-threaded tasks in a pid namespace of their own.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;

use criu_images::names;
use serde_json::Value;

use super::{DumpCtx, Kind, NsError, NsOps, Rebuilt, RestoreCtx};

/// The pid kind's operations.
pub(crate) static OPS: NsOps = NsOps {
    kind: Kind::Pid,
    nested: false,
    dump,
    restore,
};

const K: Kind = Kind::Pid;

/// The `NSpid` of task `tid` as criu sees it (criu's pid first, the innermost last).
fn nspid(path: &str) -> Option<Vec<i32>> {
    let text = std::fs::read_to_string(format!("{path}/status")).ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    line.split_whitespace().map(|w| w.parse().ok()).collect()
}

/// The per-task images, named by pid.
const PER_TASK: [fn(u32) -> String; 5] = [
    names::core,
    names::ids,
    names::mm,
    names::fs,
    names::pagemap,
];

/// The images whose pid fields are translated, and the field names that hold pids.
const PID_FIELDS: [&str; 8] = [
    "pid",
    "ppid",
    "pgid",
    "sid",
    "pgrp",
    "nspid",
    "threads",
    "notify_thread_id",
];

/// Replaces every pid field of `v` found in `map`.
fn translate(v: &mut Value, map: &HashMap<i64, i64>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                if PID_FIELDS.contains(&k.as_str()) {
                    match x {
                        Value::Number(n) => {
                            if let Some(to) = n.as_i64().and_then(|n| map.get(&n)) {
                                *x = Value::from(*to);
                            }
                        }
                        Value::Array(a) => {
                            for e in a.iter_mut() {
                                if let Some(to) = e.as_i64().and_then(|n| map.get(&n)) {
                                    *e = Value::from(*to);
                                }
                            }
                        }
                        other => translate(other, map),
                    }
                } else {
                    translate(x, map);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| translate(x, map)),
        _ => {}
    }
}

/// Rewrites image `path` with its pid fields translated.
fn rewrite(path: &Path, map: &HashMap<i64, i64>) -> Result<(), NsError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| NsError::io(K, format!("reading {name}"), e))?;
    let opts = criu_images::json::DecodeOptions::default();
    let mut doc = criu_images::json::decode_image(&bytes, path, opts)
        .map_err(|e| NsError::bad(K, name.clone(), format!("decoding: {e}")))?;
    translate(&mut doc, map);
    let out = criu_images::json::encode_image(&doc, path)
        .map_err(|e| NsError::bad(K, name.clone(), format!("encoding: {e}")))?;
    std::fs::write(path, out).map_err(|e| NsError::io(K, format!("writing {name}"), e))
}

fn dump(ctx: &DumpCtx<'_>) -> Result<(), NsError> {
    let root = nspid(&format!("/proc/{}", ctx.pid)).unwrap_or_default();
    if root.last() != Some(&1) {
        return Err(NsError::unsupported(
            K,
            format!(
                "{} is in a pid namespace of its own but is not its init (pid {:?} there): a pid \
                 namespace is dumped from its init",
                ctx.pid,
                root.last()
            ),
        ));
    }
    let d = criu_images::ImageDir::new(ctx.dir);
    let tree = d
        .read_pstree()
        .map_err(|e| NsError::image(K, names::PSTREE, e))?;
    // criu's pid → the pid inside the namespace, for every task and thread.
    let mut map = HashMap::new();
    for t in &tree {
        if t.threads.len() > 1 {
            return Err(NsError::unsupported(
                K,
                format!(
                    "{} has {} threads: multi-threaded processes in a pid namespace of their \
                     own are not restored yet",
                    t.pid,
                    t.threads.len()
                ),
            ));
        }
        for &tid in t.threads.iter().chain(std::iter::once(&t.pid)) {
            let v = nspid(&format!("/proc/{}/task/{tid}", t.pid))
                .or_else(|| nspid(&format!("/proc/{tid}")))
                .and_then(|v| v.last().copied())
                .ok_or_else(|| {
                    NsError::io(
                        K,
                        format!("reading the NSpid of {tid}"),
                        std::io::Error::from_raw_os_error(libc::ESRCH),
                    )
                })?;
            map.insert(tid as i64, v as i64);
        }
    }
    tracing::info!(
        tasks = tree.len(),
        "pid namespace: images get the pids inside it"
    );
    // Renames first (pid numbers inside may collide with other tasks' numbers outside: go
    // through temporary names).
    let mut renames = Vec::new();
    for t in &tree {
        for name_of in PER_TASK {
            let from = ctx.dir.join(name_of(t.pid));
            if !from.exists() {
                continue;
            }
            let vpid = map.get(&(t.pid as i64)).copied().unwrap_or(t.pid as i64) as u32;
            let tmp = ctx.dir.join(format!("{}.pidns", name_of(t.pid)));
            std::fs::rename(&from, &tmp)
                .map_err(|e| NsError::io(K, format!("renaming {}", from.display()), e))?;
            renames.push((tmp, ctx.dir.join(name_of(vpid))));
        }
    }
    for (tmp, to) in renames {
        std::fs::rename(&tmp, &to)
            .map_err(|e| NsError::io(K, format!("renaming {}", to.display()), e))?;
    }
    let mut files = vec![
        ctx.dir.join(names::PSTREE),
        ctx.dir.join(names::FILES),
        ctx.dir.join(names::FILE_LOCKS),
        ctx.dir.join(names::TTY_INFO),
    ];
    for v in map.values() {
        files.push(ctx.dir.join(names::core(*v as u32)));
    }
    for f in files.iter().filter(|f| f.exists()) {
        rewrite(f, &map)?;
    }
    // The senders' pids of queued unix messages (SCM_CREDENTIALS), which the dump read as
    // criu sees them.
    crate::files::unix::queued_pids_inside(ctx.dir, &map)
        .map_err(|e| NsError::bad(K, names::SK_QUEUES, e.to_string()))?;
    Ok(())
}

fn restore(ctx: &RestoreCtx<'_>) -> Result<Rebuilt, NsError> {
    let d = criu_images::ImageDir::new(ctx.dir);
    let tree = d
        .read_pstree()
        .map_err(|e| NsError::image(K, names::PSTREE, e))?;
    let Some(root) = tree.first() else {
        return Err(NsError::bad(K, names::PSTREE, "no tasks"));
    };
    if root.pid != 1 {
        return Err(NsError::unsupported(
            K,
            format!(
                "the root (pid {}) of a tree in a pid namespace of its own is not its init",
                root.pid
            ),
        ));
    }
    if let Some(t) = tree.iter().find(|t| t.threads.len() > 1) {
        return Err(NsError::unsupported(
            K,
            format!(
                "pid {} has {} threads: multi-threaded processes in a pid namespace of their own \
                 are not restored yet",
                t.pid,
                t.threads.len()
            ),
        ));
    }
    Ok(Rebuilt {
        clone_flags: libc::CLONE_NEWPID as u64,
        ..Rebuilt::default()
    })
}

/// The pids of a restored tree as the engine sees them: identity, or, for a tree in a pid
/// namespace of its own, found under the root by the last field of each task's `NSpid`.
pub(crate) struct PidMap {
    /// The root as the engine sees it, when the tree has a pid namespace of its own.
    root: Option<i32>,
    known: RefCell<HashMap<i32, i32>>,
}

impl PidMap {
    /// Pids as they are (the tree lives in criu's pid namespace).
    pub(crate) fn identity() -> PidMap {
        PidMap {
            root: None,
            known: RefCell::new(HashMap::new()),
        }
    }

    /// Pids of the tree under `root` (the engine's pid of the namespace's init).
    pub(crate) fn under(root: i32) -> PidMap {
        let m = PidMap {
            root: Some(root),
            known: RefCell::new(HashMap::new()),
        };
        m.known.borrow_mut().insert(1, root);
        m
    }

    /// The engine's pid of task `vpid` of the tree (itself when no namespace of its own, or when
    /// it cannot be found: the caller's next step then fails naming it).
    pub(crate) fn host(&self, vpid: i32) -> i32 {
        let Some(root) = self.root else {
            return vpid;
        };
        if let Some(&p) = self.known.borrow().get(&vpid) {
            return p;
        }
        // Walk the tree under the root and record every task's pid inside.
        let mut todo = vec![root];
        let mut known = self.known.borrow_mut();
        while let Some(p) = todo.pop() {
            if let Some(v) = nspid(&format!("/proc/{p}")).and_then(|v| v.last().copied()) {
                known.insert(v, p);
            }
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
                continue;
            };
            for t in tasks.flatten() {
                if let Ok(kids) = std::fs::read_to_string(t.path().join("children")) {
                    todo.extend(
                        kids.split_whitespace()
                            .filter_map(|k| k.parse::<i32>().ok()),
                    );
                }
            }
        }
        known.get(&vpid).copied().unwrap_or(vpid)
    }
}
