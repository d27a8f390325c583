//! Cgroup membership: which cgroup each task is in, in every hierarchy (v1 controllers and the
//! v2 unified one side by side, as on hybrid layouts), in CRIU's `cgroup.img`.
//!
//! Dump: each task's `/proc/PID/cgroup` becomes a `cg_set_entry` (set 1 is criu's own, the
//! others numbered from 2, one per distinct membership), read before the images are written
//! ([`collect`]) so that the task's core names its set (`tc.cg_set`) when it is written; the
//! sets and the hierarchies (`cg_controller_entry`) go to `cgroup.img` with the directories
//! and their properties (limits), which [`super::cgroup_props`] adds.
//!
//! Restore (`--manage-cgroups`, CRIU's modes): `ignore` leaves the tasks in criu's cgroups;
//! every other mode puts each task into its saved cgroup in each hierarchy where that differs
//! from criu's: `none` and `props` require the cgroup to exist, `soft` (the default) and `full`
//! make a missing one, `strict` makes them all and refuses one that exists already. `--cgroup-root [CTL:]PATH` puts the root task's cgroup at
//! PATH (for CTL, or every hierarchy) and the others below it as they were below the root's.
//! Directories are made and checked before any task exists; a task is moved in by the engine
//! before it runs any code of its own (its children, made after, start there too).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use criu_images::pb::{CgControllerEntry, CgMemberEntry, CgSetEntry, CgroupEntry, CoreEntry};
use criu_images::{magic, names};

use super::cgroup_mounts::sorted_key;
use super::{Kind, NsError, cgroup_props};
use crate::options::{CgroupMode, CgroupRoot};

const K: Kind = Kind::Cgroup;

/// `/proc/WHO/cgroup` as (controllers, path) pairs (controllers "" for the v2 hierarchy).
pub(super) fn membership(who: &str) -> Result<Vec<(String, String)>, NsError> {
    let path = format!("/proc/{who}/cgroup");
    let text =
        std::fs::read_to_string(&path).map_err(|e| NsError::io(K, format!("reading {path}"), e))?;
    let mut out: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let _id = it.next()?;
            Some((it.next()?.to_string(), it.next()?.to_string()))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// The cgroup sets of a tree being dumped: `cgroup.img`'s entry (before
/// [`super::cgroup_props`] adds the directories) and the set each process is in.
pub(crate) struct CgroupSets {
    /// `cgroup.img`'s one entry: the sets and the hierarchies.
    pub(crate) entry: CgroupEntry,
    /// Process pid (as criu sees it) -> its set's id (`tc.cg_set` of its core).
    set_of: HashMap<i32, u32>,
}

impl CgroupSets {
    /// The set of process `pid` (the id its core's `tc.cg_set` names).
    pub(crate) fn set_of(&self, pid: i32) -> Option<u32> {
        self.set_of.get(&pid).copied()
    }
}

/// The cgroup sets of the processes `pids` (pids as criu sees them), read from each one's
/// `/proc/PID/cgroup`: set 1 is criu's own, the others numbered from 2, one per distinct
/// membership. A zombie, which has no cgroups any more, keeps criu's set.
///
/// # Errors
/// [`NsError::Io`] if criu's own membership cannot be read.
pub(crate) fn collect(pids: impl IntoIterator<Item = i32>) -> Result<CgroupSets, NsError> {
    let own = membership("self")?;
    let mut sets: Vec<Vec<(String, String)>> = vec![own.clone()];
    let mut set_of = HashMap::new();
    for pid in pids {
        let m = membership(&pid.to_string()).unwrap_or_else(|_| own.clone());
        let id = match sets.iter().position(|s| *s == m) {
            Some(k) => k + 1,
            None => {
                sets.push(m);
                sets.len()
            }
        };
        set_of.insert(pid, id as u32);
    }
    let mut controllers: Vec<String> = sets.iter().flatten().map(|(c, _)| c.clone()).collect();
    controllers.sort();
    controllers.dedup();
    let entry = CgroupEntry {
        sets: sets
            .iter()
            .enumerate()
            .map(|(k, s)| CgSetEntry {
                id: k as u32 + 1,
                ctls: s
                    .iter()
                    .map(|(c, p)| CgMemberEntry {
                        name: c.clone(),
                        path: p.clone(),
                        cgns_prefix: None,
                    })
                    .collect(),
            })
            .collect(),
        controllers: controllers
            .into_iter()
            .map(|c| CgControllerEntry {
                // CRIU names the v2 hierarchy "" (and needs a name in each entry).
                cnames: if c.is_empty() {
                    vec![String::new()]
                } else {
                    c.split(',').map(str::to_string).collect()
                },
                dirs: Vec::new(),
                is_threaded: None,
            })
            .collect(),
    };
    tracing::info!(sets = entry.sets.len(), "cgroups");
    Ok(CgroupSets { entry, set_of })
}

/// Where the restored tasks go, made ready before any task exists. Dropped before
/// [`Placement::keep`], it removes the cgroups it made (those still holding a task stay).
#[derive(Default)]
pub(crate) struct Placement {
    /// Task pid (as in the images) → the `cgroup.procs` files to write it into.
    procs: HashMap<u32, Vec<PathBuf>>,
    /// The cgroups this restore made, parents first.
    made: Vec<PathBuf>,
    /// Properties written once every task is in.
    late: cgroup_props::LateProps,
    kept: std::cell::Cell<bool>,
}

/// The root task's cgroup per hierarchy (sorted controllers → path).
fn root_paths(
    d: &criu_images::ImageDir,
    tree: &[criu_images::pb::PstreeEntry],
    sets: &BTreeMap<u32, &CgSetEntry>,
) -> Result<HashMap<String, String>, NsError> {
    let Some(root) = tree.first() else {
        return Ok(HashMap::new());
    };
    let core: CoreEntry = d
        .read_core(root.pid)
        .map_err(|e| NsError::image(K, names::core(root.pid), e))?;
    let set = core
        .tc
        .as_ref()
        .and_then(|tc| tc.cg_set)
        .and_then(|id| sets.get(&id));
    Ok(set
        .map(|s| {
            s.ctls
                .iter()
                .map(|m| (sorted_key(&m.name), m.path.clone()))
                .collect()
        })
        .unwrap_or_default())
}

/// `path` (of hierarchy `key`) moved by `--cgroup-root`: the root task's cgroup becomes the
/// given path, the cgroups below it follow.
fn rerooted(
    key: &str,
    path: &str,
    roots: &[CgroupRoot],
    root_paths: &HashMap<String, String>,
) -> String {
    let wanted_root = roots
        .iter()
        .find(|r| {
            r.controller
                .as_deref()
                .is_some_and(|c| sorted_key(c) == key)
        })
        .or_else(|| roots.iter().find(|r| r.controller.is_none()));
    let (Some(r), Some(rp)) = (wanted_root, root_paths.get(key)) else {
        return path.to_string();
    };
    let Some(below) = path.strip_prefix(rp.trim_end_matches('/')) else {
        return path.to_string();
    };
    if !below.is_empty() && !below.starts_with('/') {
        return path.to_string();
    }
    let out = format!(
        "{}{}",
        r.path.to_string_lossy().trim_end_matches('/'),
        below
    );
    if out.is_empty() { "/".into() } else { out }
}

fn hierarchy_name(key: &str) -> &str {
    if key.is_empty() { "cgroup2" } else { key }
}

/// Reads `cgroup.img` and the cores, and makes ready the cgroups the tasks go into (by `mode`;
/// CRIU's default is `soft`): the saved directories parents first with their owners, modes and
/// the properties that must precede the tasks, then each task's cgroups; the root's cgroup is
/// mapped to `roots`. Hierarchies are reached through `yard` (`--cgroup-yard`) or their mounts.
///
/// # Errors
/// [`NsError::Image`], [`NsError::BadImage`]; [`NsError::Unsupported`] for a missing cgroup
/// with `none`/`props`, an existing one with `strict`, or a hierarchy not mounted here;
/// [`NsError::Io`] when a directory or property cannot be made or written. What was made is
/// removed again.
pub(crate) fn prepare_restore(
    dir: &Path,
    mode: Option<CgroupMode>,
    roots: &[CgroupRoot],
    yard: Option<&Path>,
) -> Result<Placement, NsError> {
    let mode = mode.unwrap_or(CgroupMode::Soft);
    let mut out = Placement::default();
    if mode == CgroupMode::Ignore || !dir.join(names::CGROUP).exists() {
        return Ok(out);
    }
    let entry: CgroupEntry = criu_images::read_single(dir.join(names::CGROUP), magic::CGROUP)
        .map_err(|e| NsError::image(K, names::CGROUP, e))?;
    let sets: BTreeMap<u32, &CgSetEntry> = entry.sets.iter().map(|s| (s.id, s)).collect();
    let own: HashMap<String, String> = membership("self")?
        .into_iter()
        .map(|(c, p)| (sorted_key(&c), p))
        .collect();
    let d = criu_images::ImageDir::new(dir);
    let tree = d
        .read_pstree()
        .map_err(|e| NsError::image(K, names::PSTREE, e))?;
    let root_paths = root_paths(&d, &tree, &sets)?;
    let keys: Vec<String> = entry
        .sets
        .iter()
        .flat_map(|s| s.ctls.iter().map(|m| sorted_key(&m.name)))
        .chain(
            entry
                .controllers
                .iter()
                .map(|c| sorted_key(&c.cnames.join(","))),
        )
        .collect();
    let here = cgroup_props::hierarchies(yard, keys.into_iter())?;
    let bad_path = |path: &str| {
        path.split('/').any(|c| c == "..") || path.contains('\0') || !path.starts_with('/')
    };
    // The saved directories, parents first.
    for ctl in &entry.controllers {
        let key = sorted_key(&ctl.cnames.join(","));
        for sd in cgroup_props::flatten(&ctl.dirs) {
            let path = rerooted(&key, &sd.path, roots, &root_paths);
            if bad_path(&path) {
                return Err(NsError::bad(
                    K,
                    names::CGROUP,
                    format!("cgroup path {path:?}"),
                ));
            }
            // Criu's own cgroup and the hierarchy's root are left as they are.
            if path == "/" || own.get(&key) == Some(&path) {
                continue;
            }
            let Some(mnt) = here.get(&key) else {
                return Err(NsError::unsupported(
                    K,
                    format!(
                        "cgroup hierarchy {:?} is not {}",
                        hierarchy_name(&key),
                        if yard.is_some() {
                            "in the yard"
                        } else {
                            "mounted here"
                        }
                    ),
                ));
            };
            let cg = mnt.join(path.trim_start_matches('/'));
            let before = out.made.contains(&cg);
            if cgroup_props::prepare_dir(&cg, &sd, mode, before, &mut out.late)? {
                out.made.push(cg);
            }
        }
    }
    for t in &tree {
        let core_name = names::core(t.pid);
        let core: CoreEntry = d
            .read_core(t.pid)
            .map_err(|e| NsError::image(K, core_name.clone(), e))?;
        let Some(set_id) = core.tc.as_ref().and_then(|tc| tc.cg_set) else {
            continue;
        };
        let Some(set) = sets.get(&set_id) else {
            return Err(NsError::bad(
                K,
                core_name,
                format!("cgroup set {set_id} not in cgroup.img"),
            ));
        };
        let mut files = Vec::new();
        for m in &set.ctls {
            let key = sorted_key(&m.name);
            let path = rerooted(&key, &m.path, roots, &root_paths);
            if own.get(&key) == Some(&path) {
                continue;
            }
            if bad_path(&path) {
                return Err(NsError::bad(
                    K,
                    names::CGROUP,
                    format!("cgroup path {path:?}"),
                ));
            }
            let Some(mnt) = here.get(&key) else {
                return Err(NsError::unsupported(
                    K,
                    format!(
                        "pid {}: cgroup hierarchy {:?} is not {}",
                        t.pid,
                        hierarchy_name(&key),
                        if yard.is_some() {
                            "in the yard"
                        } else {
                            "mounted here"
                        }
                    ),
                ));
            };
            let cg = mnt.join(path.trim_start_matches('/'));
            let exists = cg.is_dir();
            let made_here = out.made.contains(&cg);
            if mode == CgroupMode::Strict && exists && !made_here && path != "/" {
                return Err(NsError::unsupported(
                    K,
                    format!(
                        "pid {}: cgroup {} exists already (--manage-cgroups=strict makes them \
                         all)",
                        t.pid,
                        cg.display()
                    ),
                ));
            }
            if !exists {
                if matches!(mode, CgroupMode::None | CgroupMode::Props) {
                    return Err(NsError::unsupported(
                        K,
                        format!(
                            "pid {}: cgroup {} does not exist (--manage-cgroups={} needs it)",
                            t.pid,
                            cg.display(),
                            mode.word()
                        ),
                    ));
                }
                // Parents first, each one recorded as made.
                let mut missing = Vec::new();
                let mut p = cg.as_path();
                while !p.is_dir() {
                    missing.push(p.to_path_buf());
                    match p.parent() {
                        Some(q) if q.starts_with(mnt) => p = q,
                        _ => break,
                    }
                }
                for m in missing.into_iter().rev() {
                    std::fs::create_dir(&m)
                        .map_err(|e| NsError::io(K, format!("making cgroup {}", m.display()), e))?;
                    tracing::info!(cgroup = %m.display(), "cgroup made");
                    out.made.push(m);
                }
            }
            files.push(cg.join("cgroup.procs"));
        }
        if !files.is_empty() {
            out.procs.insert(t.pid, files);
        }
    }
    Ok(out)
}

impl Placement {
    /// Puts task `pid` (as in the images; `host` as the engine sees it) into its cgroups.
    ///
    /// # Errors
    /// [`NsError::Io`] naming the cgroup.
    pub(crate) fn place(&self, pid: i32, host: i32) -> Result<(), NsError> {
        for f in self.procs.get(&(pid as u32)).into_iter().flatten() {
            std::fs::write(f, host.to_string())
                .map_err(|e| NsError::io(K, format!("moving {pid} into {}", f.display()), e))?;
        }
        Ok(())
    }

    /// Writes the properties that wait until every task is in its cgroups (limits such as
    /// `pids.max` that would stop the tree from being made).
    ///
    /// # Errors
    /// [`NsError::Io`] naming the property.
    pub(crate) fn apply_props(&self) -> Result<(), NsError> {
        if !self.late.is_empty() {
            self.late.apply()?;
            tracing::info!("cgroup properties restored");
        }
        Ok(())
    }

    /// The restore succeeded: the cgroups made stay.
    pub(crate) fn keep(&self) {
        self.kept.set(true);
    }
}

impl Drop for Placement {
    fn drop(&mut self) {
        if self.kept.get() {
            return;
        }
        // Children first; the tasks of a failed restore may take a moment to leave.
        for cg in self.made.iter().rev() {
            let end = std::time::Instant::now() + std::time::Duration::from_secs(1);
            loop {
                match std::fs::remove_dir(cg) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY)
                            && std::time::Instant::now() < end =>
                    {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    Err(e) => {
                        tracing::warn!(cgroup = %cg.display(), error = %e, "cgroup made by the failed restore left");
                        break;
                    }
                }
            }
        }
    }
}
