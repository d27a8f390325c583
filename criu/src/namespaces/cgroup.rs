//! Cgroup membership: which cgroup each task is in, in every hierarchy (v1 controllers and the
//! v2 unified one side by side, as on hybrid layouts), in CRIU's `cgroup.img`.
//!
//! Dump: each task's `/proc/PID/cgroup` becomes a `cg_set_entry` (set 1 is criu's own, the
//! others numbered from 2, one per distinct membership), the task's core names its set
//! (`tc.cg_set`), and `cgroup.img` lists the sets and the hierarchies (`cg_controller_entry`).
//! Cgroup properties (limits) are not saved.
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

use super::{Kind, NsError};
use crate::options::{CgroupMode, CgroupRoot};

const K: Kind = Kind::Cgroup;

/// `/proc/WHO/cgroup` as (controllers, path) pairs (controllers "" for the v2 hierarchy).
fn membership(who: &str) -> Result<Vec<(String, String)>, NsError> {
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

/// Writes `cgroup.img` for the tasks of `pstree.img` (pids as criu sees them) and sets each
/// live task's `tc.cg_set` in its core.
///
/// # Errors
/// [`NsError::Io`], [`NsError::Image`].
pub(crate) fn dump(dir: &Path) -> Result<(), NsError> {
    let d = criu_images::ImageDir::new(dir);
    let tree = d
        .read_pstree()
        .map_err(|e| NsError::image(K, names::PSTREE, e))?;
    let own = membership("self")?;
    let mut sets: Vec<Vec<(String, String)>> = vec![own.clone()];
    for t in &tree {
        let core_name = names::core(t.pid);
        let mut core: CoreEntry = d
            .read_core(t.pid)
            .map_err(|e| NsError::image(K, core_name.clone(), e))?;
        let Some(tc) = core.tc.as_mut() else { continue };
        // A zombie has no cgroups any more: it keeps criu's set.
        let m = membership(&t.pid.to_string()).unwrap_or_else(|_| own.clone());
        let id = match sets.iter().position(|s| *s == m) {
            Some(k) => k + 1,
            None => {
                sets.push(m);
                sets.len()
            }
        };
        tc.cg_set = Some(id as u32);
        d.write_core(t.pid, &core)
            .map_err(|e| NsError::image(K, core_name, e))?;
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
                cnames: if c.is_empty() {
                    Vec::new()
                } else {
                    c.split(',').map(str::to_string).collect()
                },
                dirs: Vec::new(),
                is_threaded: None,
            })
            .collect(),
    };
    tracing::info!(sets = entry.sets.len(), "cgroups");
    criu_images::write_all(dir.join(names::CGROUP), magic::CGROUP, [&entry])
        .map_err(|e| NsError::image(K, names::CGROUP, e))
}

/// Where each hierarchy is mounted here: controllers ("" for v2, else the comma list as
/// `/proc/PID/cgroup` shows it, sorted) → mount point.
pub(crate) fn mounts() -> Result<HashMap<String, PathBuf>, NsError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| NsError::io(K, "reading /proc/self/mountinfo", e))?;
    let mut out = HashMap::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split_whitespace().collect();
        let r: Vec<&str> = right.split_whitespace().collect();
        let (Some(point), Some(fstype), Some(sopts)) = (l.get(4), r.first(), r.get(2)) else {
            continue;
        };
        // Only whole hierarchies (root "/").
        if l.get(3) != Some(&"/") {
            continue;
        }
        let key = match *fstype {
            "cgroup2" => String::new(),
            "cgroup" => {
                let mut c: Vec<&str> = sopts
                    .split(',')
                    .filter(|o| {
                        !matches!(*o, "rw" | "ro")
                            && !o.starts_with("release_agent")
                            && *o != "clone_children"
                            && *o != "noprefix"
                            && *o != "xattr"
                    })
                    .collect();
                c.sort();
                c.join(",")
            }
            _ => continue,
        };
        out.entry(key).or_insert_with(|| PathBuf::from(point));
    }
    Ok(out)
}

pub(crate) fn sorted_key(controllers: &str) -> String {
    let mut c: Vec<&str> = controllers.split(',').filter(|s| !s.is_empty()).collect();
    c.sort();
    c.join(",")
}

/// Where the restored tasks go, made ready before any task exists.
#[derive(Default)]
pub(crate) struct Placement {
    /// Task pid (as in the images) → the `cgroup.procs` files to write it into.
    procs: HashMap<u32, Vec<PathBuf>>,
}

/// Reads `cgroup.img` and the cores, and makes ready the cgroups the tasks go into (by `mode`;
/// CRIU's default is `soft`), mapping the root's cgroup to `roots`.
///
/// # Errors
/// [`NsError::Image`], [`NsError::BadImage`]; [`NsError::Unsupported`] for a missing cgroup
/// with `strict` or a hierarchy not mounted here; [`NsError::Io`] when a directory cannot be
/// made.
pub(crate) fn prepare_restore(
    dir: &Path,
    mode: Option<CgroupMode>,
    roots: &[CgroupRoot],
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
    let here = mounts()?;
    let d = criu_images::ImageDir::new(dir);
    let tree = d
        .read_pstree()
        .map_err(|e| NsError::image(K, names::PSTREE, e))?;
    // Cgroups this restore made.
    let mut made: Vec<PathBuf> = Vec::new();
    // The root's saved path per hierarchy, for --cgroup-root.
    let mut root_paths: HashMap<String, String> = HashMap::new();
    for (n, t) in tree.iter().enumerate() {
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
            if n == 0 {
                root_paths.insert(key.clone(), m.path.clone());
            }
            let mut path = m.path.clone();
            let wanted_root = roots
                .iter()
                .find(|r| {
                    r.controller
                        .as_deref()
                        .is_some_and(|c| sorted_key(c) == key)
                })
                .or_else(|| roots.iter().find(|r| r.controller.is_none()));
            if let (Some(r), Some(rp)) = (wanted_root, root_paths.get(&key)) {
                let below = path.strip_prefix(rp.as_str()).unwrap_or("");
                path = format!(
                    "{}{}",
                    r.path.to_string_lossy().trim_end_matches('/'),
                    below
                );
                if path.is_empty() {
                    path = "/".into();
                }
            }
            if own.get(&key) == Some(&path) {
                continue;
            }
            if path.split('/').any(|c| c == "..") {
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
                        "pid {}: cgroup hierarchy {:?} is not mounted here",
                        t.pid,
                        if key.is_empty() {
                            "cgroup2"
                        } else {
                            key.as_str()
                        }
                    ),
                ));
            };
            let cg = mnt.join(path.trim_start_matches('/'));
            let exists = cg.is_dir();
            let made_here = made.contains(&cg);
            if mode == CgroupMode::Strict && exists && !made_here {
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
                made.push(cg.clone());
                std::fs::create_dir_all(&cg)
                    .map_err(|e| NsError::io(K, format!("making cgroup {}", cg.display()), e))?;
                tracing::info!(cgroup = %cg.display(), "cgroup made");
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
}
