//! Cgroup directories and their properties (limits), in `cgroup.img`'s controller entries
//! (CRIU's `cg_controller_entry.dirs`: `cgroup_dir_entry` trees of `cgroup_prop_entry`).
//!
//! Dump: for every hierarchy in which a task of the tree is not in criu's own cgroup, the
//! task's cgroup and every directory below it (or below `--cgroup-root`) are saved with their
//! owner and mode and the properties CRIU's lists name for the hierarchy's controllers
//! (`cpu.shares`, `cpu.cfs_quota_us`, `memory.limit_in_bytes`, `pids.max`, `cpuset.cpus`, ...;
//! changed by `--cgroup-props`/`--cgroup-props-file`, limited to the `--cgroup-dump-controller`
//! ones), the hierarchy's own (`notify_on_release`, `cgroup.clone_children`; on v2
//! `cgroup.subtree_control`, `cgroup.max.*`, `cgroup.type`) and, on v2, the limits of the
//! controllers enabled there (`memory.max`, `pids.max`, `cpu.max`, `cpu.weight`, ...; CRIU
//! saves none of these). A hierarchy in which every task shares criu's cgroup is not walked
//! (CRIU walks it from the task's cgroup, which may be the hierarchy's root).
//!
//! Restore (by `--manage-cgroups` mode): directories are made parent first before any task
//! exists (`none`, `props`: they must exist; `strict`: none may exist), the properties that
//! must be set before a task enters (`cpuset.cpus`, `cpuset.mems`, `devices.list`,
//! `memory.use_hierarchy`, ...) right when a directory is made, the others once every task is
//! in its cgroups: `props`, `full` and `strict` on every directory, `soft` on those it made,
//! `none` on none. A value equal to the current one is not written.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use criu_images::pb::{CgroupDirEntry, CgroupEntry, CgroupPerms, CgroupPropEntry};
use criu_images::{magic, names};

use super::cgroup_proplists::{GLOBAL_V1, GLOBAL_V2, PropLists, SPECIAL, V2_LIMITS};
use super::{Kind, NsError};
use crate::options::{CgroupMode, CgroupPropsOpts, CgroupRoot};

const K: Kind = Kind::Cgroup;

/// What a dump of directories needs.
pub(crate) struct DumpCfg<'a> {
    /// `--manage-cgroups`: `ignore` saves no directories.
    pub(crate) mode: Option<CgroupMode>,
    /// `--cgroup-root`: the walk starts there.
    pub(crate) roots: &'a [CgroupRoot],
    /// The property lists and controller filter.
    pub(crate) props: &'a CgroupPropsOpts,
    /// `--cgroup-yard`.
    pub(crate) yard: Option<&'a Path>,
}

impl crate::options::DumpOptions {
    /// What the cgroup directory dump takes of these options.
    pub(crate) fn cgroup_dump_cfg(&self) -> DumpCfg<'_> {
        DumpCfg {
            mode: self.manage_cgroups,
            roots: &self.cgroup_roots,
            props: &self.cgroup_props,
            yard: self.cgroup_yard.as_deref(),
        }
    }
}

/// Where each hierarchy is reached: `yard/NAME` with `--cgroup-yard` (CRIU's names: the
/// controllers, `unified` for v2, the name of a named hierarchy), else its mount here.
///
/// # Errors
/// [`NsError::Io`] if `/proc/self/mountinfo` cannot be read.
pub(crate) fn hierarchies(
    yard: Option<&Path>,
    keys: impl Iterator<Item = String>,
) -> Result<HashMap<String, PathBuf>, NsError> {
    match yard {
        None => super::cgroup_mounts::mounts(),
        Some(y) => Ok(keys
            .map(|k| {
                let name = if k.is_empty() {
                    "unified".to_string()
                } else {
                    k.split(',')
                        .map(|c| c.strip_prefix("name=").unwrap_or(c))
                        .collect::<Vec<_>>()
                        .join(",")
                };
                (k, y.join(name))
            })
            .filter(|(_, p)| p.is_dir())
            .collect()),
    }
}

/// Writes `cgroup.img`: the tree's sets (`entry`, from the membership in `cgroup.rs`) with
/// the directories and properties of the tree's cgroups added.
///
/// # Errors
/// [`NsError::Image`], [`NsError::BadImage`] for a malformed `--cgroup-props`; [`NsError::Io`]
/// naming the directory or property that cannot be read.
pub(crate) fn dump(dir: &Path, cfg: &DumpCfg<'_>, mut entry: CgroupEntry) -> Result<(), NsError> {
    if cfg.mode != Some(CgroupMode::Ignore) {
        add_dirs(cfg, &mut entry)?;
    }
    criu_images::write_all(dir.join(names::CGROUP), magic::CGROUP, [&entry])
        .map_err(|e| NsError::image(K, names::CGROUP, e))
}

/// Adds to `entry` the directories (and their properties) below the tree's cgroups that are
/// not criu's own, in each hierarchy mounted here.
fn add_dirs(cfg: &DumpCfg<'_>, entry: &mut CgroupEntry) -> Result<(), NsError> {
    let lists = PropLists::from_options(cfg.props)?;
    // Set 1 is criu's own.
    let own: HashMap<String, String> = entry
        .sets
        .iter()
        .find(|s| s.id == 1)
        .map(|s| {
            s.ctls
                .iter()
                .map(|m| (super::cgroup_mounts::sorted_key(&m.name), m.path.clone()))
                .collect()
        })
        .unwrap_or_default();
    // Per hierarchy, the cgroups to walk from.
    let mut starts: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in entry.sets.iter().filter(|s| s.id != 1) {
        for m in &s.ctls {
            let key = super::cgroup_mounts::sorted_key(&m.name);
            if own.get(&key) == Some(&m.path) || !wanted(&key, &cfg.props.dump_controllers) {
                continue;
            }
            let root = cfg
                .roots
                .iter()
                .find(|r| {
                    r.controller
                        .as_deref()
                        .is_some_and(|c| super::cgroup_mounts::sorted_key(c) == key)
                })
                .or_else(|| cfg.roots.iter().find(|r| r.controller.is_none()));
            let start = match root {
                Some(r) => r.path.to_string_lossy().into_owned(),
                None => m.path.clone(),
            };
            starts.entry(key).or_default().insert(start);
        }
    }
    if starts.is_empty() {
        // The tree is in criu's own cgroups: nothing to walk (and no mount table to read).
        tracing::info!(dirs = 0, "cgroup directories saved");
        return Ok(());
    }
    let here = hierarchies(cfg.yard, starts.keys().cloned())?;
    let mut dirs_total = 0usize;
    for ctl in &mut entry.controllers {
        let key = super::cgroup_mounts::sorted_key(&ctl.cnames.join(","));
        let Some(from) = starts.get(&key) else {
            continue;
        };
        let Some(mnt) = here.get(&key) else {
            tracing::warn!(
                hierarchy = key,
                "cgroup hierarchy not mounted here: its directories are not saved"
            );
            continue;
        };
        let mut paths = BTreeSet::new();
        for s in from {
            if s.split('/').any(|c| c == "..") {
                return Err(NsError::bad(K, names::CGROUP, format!("cgroup path {s:?}")));
            }
            walk(mnt, &norm(s), &mut paths)?;
        }
        let v2 = key.is_empty();
        let mut threaded = !v2;
        let mut saved: BTreeMap<String, CgroupDirEntry> = BTreeMap::new();
        for p in &paths {
            let full = mnt.join(p.trim_start_matches('/'));
            let md = std::fs::metadata(&full)
                .map_err(|e| NsError::io(K, format!("reading {}", full.display()), e))?;
            let mut props = Vec::new();
            let mut names_: Vec<&str> = Vec::new();
            for c in &ctl.cnames {
                names_.extend(lists.get(c).iter().map(String::as_str));
            }
            if v2 {
                names_.extend(GLOBAL_V2);
                names_.extend(V2_LIMITS);
            } else {
                names_.extend(GLOBAL_V1);
            }
            for n in names_ {
                if props.iter().any(|p: &CgroupPropEntry| p.name == n) {
                    continue;
                }
                if let Some(p) = read_prop(&full, n)? {
                    if p.name == "cgroup.type" && p.value == "threaded" {
                        threaded = true;
                    }
                    props.push(p);
                }
            }
            dirs_total += 1;
            saved.insert(
                p.clone(),
                CgroupDirEntry {
                    dir_name: String::new(),
                    children: Vec::new(),
                    properties: props,
                    dir_perms: Some(perms(&md)),
                },
            );
        }
        ctl.dirs = nest(saved);
        ctl.is_threaded = Some(threaded);
    }
    tracing::info!(dirs = dirs_total, "cgroup directories saved");
    Ok(())
}

fn wanted(key: &str, only: &[String]) -> bool {
    only.is_empty()
        || only.iter().any(|c| {
            let c = if c == "unified" { "" } else { c.as_str() };
            key == c || key.split(',').any(|k| k == c)
        })
}

/// `/a/b/` → `/a/b`; `` → `/`.
fn norm(p: &str) -> String {
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        "/".into()
    } else if t.starts_with('/') {
        t.to_string()
    } else {
        format!("/{t}")
    }
}

fn join(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// `path` (under `mnt`) and every directory below it.
fn walk(mnt: &Path, path: &str, out: &mut BTreeSet<String>) -> Result<(), NsError> {
    if !out.insert(path.to_string()) {
        return Ok(());
    }
    let full = mnt.join(path.trim_start_matches('/'));
    let rd = std::fs::read_dir(&full)
        .map_err(|e| NsError::io(K, format!("reading cgroup {}", full.display()), e))?;
    for e in rd.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk(mnt, &join(path, &e.file_name().to_string_lossy()), out)?;
        }
    }
    Ok(())
}

fn perms(md: &std::fs::Metadata) -> CgroupPerms {
    CgroupPerms {
        mode: md.mode(),
        uid: md.uid(),
        gid: md.gid(),
    }
}

/// One property of cgroup `dir`, `None` if this kernel has no such file.
fn read_prop(dir: &Path, name: &str) -> Result<Option<CgroupPropEntry>, NsError> {
    let f = dir.join(name);
    let md = match std::fs::metadata(&f) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(NsError::io(K, format!("reading {}", f.display()), e)),
    };
    let value = if matches!(name, "cgroup.procs" | "tasks") {
        String::new()
    } else {
        let raw = std::fs::read_to_string(&f)
            .map_err(|e| NsError::io(K, format!("reading {}", f.display()), e))?;
        let v = raw.trim().to_string();
        if name == "memory.oom_control" {
            // "oom_kill_disable N\n..." is saved as N.
            v.lines()
                .find_map(|l| l.strip_prefix("oom_kill_disable "))
                .map(|n| n.trim().to_string())
                .ok_or_else(|| NsError::bad(K, f.display().to_string(), "no oom_kill_disable"))?
        } else if saturates(&v) {
            // "unlimited" as CRIU writes it.
            "-1".into()
        } else {
            v
        }
    };
    Ok(Some(CgroupPropEntry {
        name: name.to_string(),
        value,
        perms: Some(perms(&md)),
    }))
}

/// Whether `v` starts with a number that reaches `i64::MAX` (what `strtoll` saturates to).
fn saturates(v: &str) -> bool {
    let digits: String = v
        .strip_prefix('+')
        .unwrap_or(v)
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    !digits.is_empty() && digits.parse::<i64>().map_or(true, |n| n == i64::MAX)
}

/// Full paths → CRIU's trees: a directory whose parent is saved is its child (named by its
/// last component), the others are heads named by their path without the leading `/`.
fn nest(mut dirs: BTreeMap<String, CgroupDirEntry>) -> Vec<CgroupDirEntry> {
    // Deepest first, so that children are complete before they move into their parent.
    let mut keys: Vec<String> = dirs.keys().cloned().collect();
    keys.sort_by_key(|k| std::cmp::Reverse(if k == "/" { 0 } else { k.matches('/').count() }));
    let mut heads = Vec::new();
    for k in keys {
        let Some(mut d) = dirs.remove(&k) else {
            continue;
        };
        let parent = k.rsplit_once('/').map(|(p, _)| norm(p));
        match parent.filter(|p| *p != k).and_then(|p| dirs.get_mut(&p)) {
            Some(pd) => {
                d.dir_name = k.rsplit('/').next().unwrap_or("").to_string();
                pd.children.push(d);
            }
            None => {
                d.dir_name = k.trim_start_matches('/').to_string();
                heads.push(d);
            }
        }
    }
    for h in &mut heads {
        sort_tree(h);
    }
    heads.sort_by(|a, b| a.dir_name.cmp(&b.dir_name));
    heads
}

fn sort_tree(d: &mut CgroupDirEntry) {
    d.children.sort_by(|a, b| a.dir_name.cmp(&b.dir_name));
    for c in &mut d.children {
        sort_tree(c);
    }
}

/// A directory of the images, by its full path in its hierarchy, parents before children.
pub(crate) struct SavedDir<'a> {
    pub(crate) path: String,
    pub(crate) entry: &'a CgroupDirEntry,
}

/// The directories of one controller entry, flattened, parents first.
pub(crate) fn flatten(dirs: &[CgroupDirEntry]) -> Vec<SavedDir<'_>> {
    fn go<'a>(parent: Option<&str>, dirs: &'a [CgroupDirEntry], out: &mut Vec<SavedDir<'a>>) {
        for d in dirs {
            let path = match parent {
                None => norm(&d.dir_name),
                Some(p) => join(p, &d.dir_name),
            };
            out.push(SavedDir {
                path: path.clone(),
                entry: d,
            });
            go(Some(&path), &d.children, out);
        }
    }
    let mut out = Vec::new();
    go(None, dirs, &mut out);
    out
}

/// The properties to write once every task is in its cgroups.
#[derive(Default)]
pub(crate) struct LateProps {
    items: Vec<(PathBuf, CgroupPropEntry)>,
}

/// Makes (by `mode`) the saved directory `cg`, which is `made` if it did not exist: sets its
/// owner and mode and, when made, its special properties; queues the other properties in `late`
/// where `mode` restores them. Returns whether it was made.
///
/// # Errors
/// [`NsError::Unsupported`] for a missing directory with `none`/`props`, an existing one with
/// `strict`; [`NsError::Io`] naming the directory or property.
pub(crate) fn prepare_dir(
    cg: &Path,
    d: &SavedDir<'_>,
    mode: CgroupMode,
    made_before: bool,
    late: &mut LateProps,
) -> Result<bool, NsError> {
    let exists = cg.is_dir();
    if exists && !made_before && mode == CgroupMode::Strict {
        return Err(NsError::unsupported(
            K,
            format!(
                "cgroup {} exists already (--manage-cgroups=strict makes them all)",
                cg.display()
            ),
        ));
    }
    let made = !exists;
    if made {
        if matches!(mode, CgroupMode::None | CgroupMode::Props) {
            return Err(NsError::unsupported(
                K,
                format!(
                    "cgroup {} does not exist (--manage-cgroups={} needs it)",
                    cg.display(),
                    mode.word()
                ),
            ));
        }
        std::fs::create_dir(cg)
            .map_err(|e| NsError::io(K, format!("making cgroup {}", cg.display()), e))?;
        tracing::info!(cgroup = %cg.display(), "cgroup made");
    }
    if mode != CgroupMode::None || made {
        set_perms(cg, d.entry.dir_perms.as_ref())?;
    }
    // The hierarchy's root keeps its properties.
    if d.path == "/" {
        return Ok(made);
    }
    let props_too = match mode {
        CgroupMode::Ignore | CgroupMode::None => false,
        CgroupMode::Soft => made || made_before,
        CgroupMode::Props | CgroupMode::Full | CgroupMode::Strict => true,
    };
    if !props_too {
        return Ok(made);
    }
    for p in &d.entry.properties {
        if SPECIAL.contains(&p.name.as_str()) {
            write_special(cg, p)?;
        } else {
            late.items.push((cg.to_path_buf(), p.clone()));
        }
    }
    Ok(made)
}

impl LateProps {
    /// Writes the queued properties, parents first.
    ///
    /// # Errors
    /// [`NsError::Io`] naming the property that cannot be written.
    pub(crate) fn apply(&self) -> Result<(), NsError> {
        for (cg, p) in &self.items {
            write_prop(cg, p)?;
        }
        Ok(())
    }

    /// Whether nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

fn set_perms(path: &Path, p: Option<&CgroupPerms>) -> Result<(), NsError> {
    let Some(p) = p else { return Ok(()) };
    let md = std::fs::metadata(path)
        .map_err(|e| NsError::io(K, format!("reading {}", path.display()), e))?;
    if md.uid() != p.uid || md.gid() != p.gid {
        std::os::unix::fs::chown(path, Some(p.uid), Some(p.gid))
            .map_err(|e| NsError::io(K, format!("chown {}", path.display()), e))?;
    }
    if md.mode() & 0o7777 != p.mode & 0o7777 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(p.mode & 0o7777))
            .map_err(|e| NsError::io(K, format!("chmod {}", path.display()), e))?;
    }
    Ok(())
}

fn current(f: &Path) -> Option<String> {
    std::fs::read_to_string(f)
        .ok()
        .map(|s| s.trim().to_string())
}

fn write(f: &Path, value: &str) -> Result<(), NsError> {
    std::fs::write(f, value)
        .map_err(|e| NsError::io(K, format!("writing {value:?} to {}", f.display()), e))
}

fn write_special(cg: &Path, p: &CgroupPropEntry) -> Result<(), NsError> {
    match (p.name.as_str(), p.value.as_str()) {
        // Kernel defaults (CRIU skips them too).
        ("memory.swappiness", "60") | ("memory.oom_control", "0") => return Ok(()),
        // Only a threaded cgroup's type is written.
        ("cgroup.type", v) if v != "threaded" => return Ok(()),
        _ => {}
    }
    if p.name == "devices.list" {
        let list = cg.join("devices.list");
        if current(&list).as_deref() == Some(p.value.as_str()) {
            return Ok(());
        }
        // Deny everything, then allow each saved line (the kernel reads one rule a write).
        write(&cg.join("devices.deny"), "a")?;
        for l in p.value.lines().filter(|l| !l.trim().is_empty()) {
            write(&cg.join("devices.allow"), l)?;
        }
        return Ok(());
    }
    write_prop(cg, p)
}

fn write_prop(cg: &Path, p: &CgroupPropEntry) -> Result<(), NsError> {
    if p.name.contains('/') || p.name.starts_with('.') {
        return Err(NsError::bad(
            K,
            names::CGROUP,
            format!("property {:?}", p.name),
        ));
    }
    let f = cg.join(&p.name);
    if !f.exists() {
        if V2_LIMITS.contains(&p.name.as_str()) || p.name == "memory.kmem.limit_in_bytes" {
            tracing::warn!(file = %f.display(), "cgroup property not here: not restored");
            return Ok(());
        }
        return Err(NsError::unsupported(
            K,
            format!("cgroup property {} does not exist here", f.display()),
        ));
    }
    set_perms(&f, p.perms.as_ref())?;
    let name = p.name.as_str();
    if matches!(name, "cgroup.procs" | "tasks") {
        return Ok(());
    }
    let now = current(&f);
    if now.as_deref() == Some(p.value.as_str())
        || (p.value == "-1" && now.as_deref().is_some_and(saturates))
    {
        return Ok(());
    }
    match name {
        "cgroup.subtree_control" => {
            let mut ops: Vec<String> = now
                .unwrap_or_default()
                .split_whitespace()
                .filter(|c| !p.value.split_whitespace().any(|w| w == *c))
                .map(|c| format!("-{c}"))
                .collect();
            ops.extend(p.value.split_whitespace().map(|c| format!("+{c}")));
            write(&f, &ops.join(" "))
        }
        "net_prio.ifpriomap" => {
            // One interface a write; a missing interface is skipped (as CRIU).
            for l in p.value.lines() {
                let prio = l.split_whitespace().nth(1).unwrap_or("0");
                if prio != "0"
                    && let Err(e) = write(&f, l)
                {
                    tracing::warn!(error = %e, "ifpriomap entry not restored");
                }
            }
            Ok(())
        }
        "memory.oom_control" | "memory.kmem.limit_in_bytes" => match std::fs::write(&f, &p.value) {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(()),
            r => r.map_err(|e| {
                NsError::io(K, format!("writing {:?} to {}", p.value, f.display()), e)
            }),
        },
        _ => write(&f, &p.value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trees_nest_and_flatten_back() {
        let d = |_: &str| CgroupDirEntry {
            dir_name: String::new(),
            children: vec![],
            properties: vec![],
            dir_perms: None,
        };
        let m: BTreeMap<String, CgroupDirEntry> = ["/a", "/a/b", "/a/b/c", "/x/y", "/x/y/z"]
            .iter()
            .map(|p| (p.to_string(), d(p)))
            .collect();
        let heads = nest(m);
        assert_eq!(heads.len(), 2);
        assert_eq!(heads[0].dir_name, "a");
        assert_eq!(heads[0].children[0].dir_name, "b");
        assert_eq!(heads[1].dir_name, "x/y");
        let flat: Vec<String> = flatten(&heads).into_iter().map(|s| s.path).collect();
        assert_eq!(flat, ["/a", "/a/b", "/a/b/c", "/x/y", "/x/y/z"]);
        let root: BTreeMap<String, CgroupDirEntry> =
            ["/", "/k"].iter().map(|p| (p.to_string(), d(p))).collect();
        let heads = nest(root);
        assert_eq!(heads[0].dir_name, "");
        assert_eq!(heads[0].children[0].dir_name, "k");
        let flat: Vec<String> = flatten(&heads).into_iter().map(|s| s.path).collect();
        assert_eq!(flat, ["/", "/k"]);
    }

    #[test]
    fn unlimited_values_saturate() {
        assert!(saturates("9223372036854775807"));
        assert!(saturates("99999999999999999999"));
        assert!(!saturates("9223372036854771712"));
        assert!(!saturates("max"));
        assert!(!saturates("-1"));
    }
}
