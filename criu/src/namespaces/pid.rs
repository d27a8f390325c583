//! Pid namespaces: a tree whose root is the init of a pid namespace of its own comes back in a
//! new one with the same pids inside it; a tree in an external pid namespace (`--external
//! pid[INO]:KEY`) is forked into the one given at restore (`--inherit-fd fd[N]:KEY`).
//!
//! A pid namespace has no state of its own to save (no image, as in CRIU, but for an external
//! one's key in `pidns-ID.img`); what changes is which pids the images hold: those the tasks
//! have in the root's namespace (the field of `NSpid` in `/proc/PID/status` at the root's
//! level), so the root is pid 1 (of an external namespace: any). Tasks in pid namespaces below
//! the root's get their pids at every level from [`super::pid_levels`]. The dump writes its images with the pids
//! criu sees, then [`dump`] rewrites them: the per-task images are renamed (`core-`, `ids-`,
//! `mm-`, `fs-`, `pagemap-`) and every pid field of `pstree.img`, `files.img` (owners, pidfds),
//! `filelocks.img`, `tty-info.img` and the cores (timer targets) is translated.
//!
//! Restore: the root is cloned with `CLONE_NEWPID` and `set_tid` 1, each task then creates its
//! children with their pids inside the namespace as usual; the engine, outside, finds a task's
//! pid as it sees it through [`PidMap`].
//!
//! Refused by name: a root that is not the init of its namespace (unless the namespace is
//! external), and (for now) multi-threaded tasks in a pid namespace of their own.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;

use criu_images::names;
use serde_json::Value;

use super::{DumpCtx, Kind, NsError, NsOps, Rebuilt, RestoreCtx};

/// The pid kind's operations.
pub(crate) static OPS: NsOps = NsOps {
    kind: Kind::Pid,
    // Tasks in pid namespaces below the root's: [`super::pid_levels`].
    nested: true,
    dump,
    restore,
};

const K: Kind = Kind::Pid;

use super::pid_levels::nspid;

/// `pidns-ID.img` (CRIU's `PidnsEntry`): written only for an external pid namespace.
fn pidns_image(id: u32) -> String {
    format!("pidns-{id}.img")
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
    // `--external pid[INO]:KEY`: the namespace is the caller's; the root need not be its init
    // and only the key is saved (CRIU's `pidns-ID.img`).
    let ino = std::fs::metadata(format!("/proc/{}/ns/pid", ctx.pid))
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .ok();
    let key = ctx.external.iter().find_map(|e| {
        (e.kind == "pid" && ino.is_some_and(|i| e.id == i.to_string()))
            .then(|| e.value.clone())
            .flatten()
    });
    if root.last() != Some(&1) && key.is_none() {
        return Err(NsError::unsupported(
            K,
            format!(
                "{} is in a pid namespace of its own but is not its init (pid {:?} there): a pid \
                 namespace is dumped from its init, or named with --external pid[{}]:KEY",
                ctx.pid,
                root.last(),
                ino.unwrap_or(0)
            ),
        ));
    }
    if let Some(key) = &key {
        tracing::info!(id = ctx.id, key, "the pid namespace is external");
        let e = criu_images::pb::PidnsEntry {
            ext_key: Some(key.clone()),
        };
        let path = ctx.dir.join(pidns_image(ctx.id));
        criu_images::write_all(&path, criu_images::magic::PIDNS, [&e])
            .map_err(|e| NsError::image(K, pidns_image(ctx.id), e))?;
    }
    let d = criu_images::ImageDir::new(ctx.dir);
    let tree = d
        .read_pstree()
        .map_err(|e| NsError::image(K, names::PSTREE, e))?;
    let levels = super::pid_levels::collect(&tree, root.len())?;
    super::pid_levels::check(&tree, &levels)?;
    if let Some(t) = tree.iter().find(|t| t.threads.len() > 1) {
        return Err(NsError::unsupported(
            K,
            format!(
                "{} has {} threads: multi-threaded processes in a pid namespace of their own \
                 are not restored yet",
                t.pid,
                t.threads.len()
            ),
        ));
    }
    // criu's pid → the pid in the root's namespace, for every task and thread.
    let map: HashMap<i64, i64> = levels
        .iter()
        .map(|(&k, v)| (k as i64, v.first().copied().unwrap_or(k) as i64))
        .collect();
    tracing::info!(
        tasks = tree.len(),
        "pid namespace: images get the pids inside it"
    );
    super::pid_levels::write(ctx.dir, &tree, &levels)?;
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

/// A tree whose root is in criu's pid namespace: its tasks below it (nested pid namespaces) are
/// checked and listed with their pids at every level ([`super::pid_levels`]); the images keep
/// the pids criu sees.
///
/// # Errors
/// As [`super::pid_levels::check`]; [`NsError::Image`], [`NsError::Io`].
pub(crate) fn dump_nested(dir: &Path) -> Result<(), NsError> {
    let tree = criu_images::ImageDir::new(dir)
        .read_pstree()
        .map_err(|e| NsError::image(K, names::PSTREE, e))?;
    let levels = super::pid_levels::collect(&tree, 1)?;
    super::pid_levels::check(&tree, &levels)?;
    super::pid_levels::write(dir, &tree, &levels)
}

fn restore(ctx: &RestoreCtx<'_>) -> Result<Rebuilt, NsError> {
    let d = criu_images::ImageDir::new(ctx.dir);
    let tree = d
        .read_pstree()
        .map_err(|e| NsError::image(K, names::PSTREE, e))?;
    let Some(root) = tree.first() else {
        return Err(NsError::bad(K, names::PSTREE, "no tasks"));
    };
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
    // An external namespace: the one given with `--inherit-fd fd[N]:KEY`, which the root is
    // forked into (setns, then clone).
    let img = ctx.dir.join(pidns_image(ctx.id));
    if img.exists() {
        let e: Vec<criu_images::pb::PidnsEntry> =
            criu_images::read_all(&img, criu_images::magic::PIDNS)
                .map_err(|e| NsError::image(K, pidns_image(ctx.id), e))?;
        if let Some(key) = e.first().and_then(|e| e.ext_key.clone()) {
            if root.pid == 1 {
                return Err(NsError::unsupported(
                    K,
                    format!(
                        "the external pid namespace {key:?}: the root is pid 1 in it, and a \
                         namespace cannot be given its init again"
                    ),
                ));
            }
            let Some(i) = ctx.inherit_fds.iter().find(|i| i.key == key) else {
                return Err(NsError::unsupported(
                    K,
                    format!(
                        "the tree lived in an external pid namespace {key:?}: give it with \
                         --inherit-fd fd[N]:{key}"
                    ),
                ));
            };
            let fd = super::ns_fd_of(K, i.fd)?;
            tracing::info!(key, fd = i.fd, "the external pid namespace");
            return Ok(Rebuilt {
                join: Some(fd),
                ..Rebuilt::default()
            });
        }
    }
    if root.pid != 1 {
        return Err(NsError::unsupported(
            K,
            format!(
                "the root (pid {}) of a tree in a pid namespace of its own is not its init",
                root.pid
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
    /// The levels of the root's `NSpid` (the images' pids are at the last of them).
    depth: usize,
    known: RefCell<HashMap<i32, i32>>,
}

impl PidMap {
    /// Pids as they are (the tree lives in criu's pid namespace).
    pub(crate) fn identity() -> PidMap {
        PidMap {
            root: None,
            depth: 0,
            known: RefCell::new(HashMap::new()),
        }
    }

    /// Pids of the tree under `root` (the engine's pid of the tree's root, which lives in a
    /// pid namespace other than criu's: the images' pids are those in that namespace).
    pub(crate) fn under(root: i32) -> PidMap {
        let depth = nspid(&format!("/proc/{root}")).map_or(0, |v| v.len());
        let m = PidMap {
            root: Some(root),
            depth,
            known: RefCell::new(HashMap::new()),
        };
        if let Some(v) = nspid(&format!("/proc/{root}")).and_then(|v| v.last().copied()) {
            m.known.borrow_mut().insert(v, root);
        }
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
            // The pid at the root's level (a task in a nested namespace has more).
            let at = self.depth.checked_sub(1);
            if let Some(v) = nspid(&format!("/proc/{p}")).and_then(|v| v.get(at?).copied()) {
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
