//! Where the cgroup hierarchies are mounted here, and the key each is known by (its sorted
//! controller list): shared by the cgroup membership dump/restore (`cgroup.rs`) and the
//! directories and properties (`cgroup_props.rs`), so neither imports the other for them.

use std::collections::HashMap;
use std::path::PathBuf;

use super::{Kind, NsError};

const K: Kind = Kind::Cgroup;

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

/// The controller list sorted, the way the images and `/proc/PID/cgroup` name a hierarchy.
pub(crate) fn sorted_key(controllers: &str) -> String {
    let mut c: Vec<&str> = controllers.split(',').filter(|s| !s.is_empty()).collect();
    c.sort();
    c.join(",")
}
