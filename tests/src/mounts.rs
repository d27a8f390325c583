//! Mount tables of test processes, compared before a dump and after the restore.

use std::collections::BTreeMap;

/// A process's mount table modulo ids: mount point -> (fs type, per-mount options, root,
/// propagation with peer groups renumbered by first appearance).
pub fn table(pid: i32) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let mut groups: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for l in text.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        let sep = f.iter().position(|x| *x == "-").unwrap();
        let mut prop: Vec<String> = f[6..sep]
            .iter()
            .map(|o| match o.split_once(':') {
                Some((k, g)) => {
                    let n = groups.len();
                    format!("{k}:{}", groups.entry(g.to_string()).or_insert(n))
                }
                None => o.to_string(),
            })
            .collect();
        prop.sort();
        // The root's file system root is where it was bound from: the same in both.
        out.insert(
            f[4].to_string(),
            format!("{} {} {} {}", f[sep + 1], f[5], f[3], prop.join(",")),
        );
    }
    out
}
