//! The mount table of a namespace as CRIU's `MntEntry` list, both ways: built from a parsed
//! mountinfo at dump time ([`entries`], which refuses by name what cannot be brought back),
//! and turned into an ordered list of [`Step`]s at restore time ([`steps`]), each mount made
//! after its parent and after the mount it is bound from, with its propagation. Pure: no
//! system call here, so every refusal comes before anything is made.

use std::collections::{HashMap, HashSet};

use criu_images::pb::MntEntry;

use super::mountinfo::{MountInfo, mount_flags, sb_flags};
use super::overlay::{self, OVERLAY};

/// CRIU's `fstype` codes (images/mnt.proto) with the kernel's names.
pub const FSTYPES: &[(u32, &str)] = &[
    (1, "proc"),
    (2, "sysfs"),
    (3, "devtmpfs"),
    (4, "binfmt_misc"),
    (5, "tmpfs"),
    (6, "devpts"),
    (8, "pstore"),
    (9, "securityfs"),
    (10, "fusectl"),
    (11, "debugfs"),
    (12, "cgroup"),
    (14, "mqueue"),
    (17, "overlay"),
    (19, "tracefs"),
    (23, "cgroup2"),
];

/// `fstype` of tmpfs.
pub const TMPFS: u32 = 5;

/// The file systems a restore mounts afresh (a new superblock of the same kind and options):
/// the kernel's own (proc, sysfs, ...), tmpfs (its content comes from its tarball), devpts
/// (a new instance), mqueue, cgroup hierarchies. Not devtmpfs (the host's devices); overlayfs
/// is mounted again too, with its layers ([`super::overlay`]).
pub fn fresh_mountable(fstype: u32) -> bool {
    matches!(
        fstype,
        1 | 2 | 4 | 5 | 6 | 8 | 9 | 10 | 11 | 12 | 14 | 19 | 23
    )
}

/// The kernel name of `fstype`.
pub fn fs_name(fstype: u32) -> Option<&'static str> {
    FSTYPES.iter().find(|f| f.0 == fstype).map(|f| f.1)
}

/// A mount table that cannot be saved or brought back, by mount.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// No mount is the root of the namespace, or several are.
    #[error("the mount table has {0} roots (expected one)")]
    Roots(usize),
    /// A mount whose parent is not in the table.
    #[error("mount {id} at {at}: parent {parent} is not in the table")]
    Orphan {
        /// Mount id.
        id: u32,
        /// Mount point.
        at: String,
        /// The missing parent.
        parent: u32,
    },
    /// Two mounts at one place (an overmount).
    #[error(
        "unsupported: mount {id} at {at} is mounted over another one (overmounts are not restored)"
    )]
    Overmount {
        /// Mount id.
        id: u32,
        /// Mount point.
        at: String,
    },
    /// A mount neither made afresh, nor bound from another mount of the namespace, nor named
    /// external.
    #[error(
        "unsupported: mount {id} at {at} ({fstype} {src}, root {root}) cannot be made again; \
         name it with --external mnt[{at}]:KEY and give it back with --external mnt[KEY]:PATH"
    )]
    NotRestorable {
        /// Mount id.
        id: u32,
        /// Mount point.
        at: String,
        /// File system type.
        fstype: String,
        /// Source.
        src: String,
        /// Its root in the file system.
        root: String,
    },
    /// A mount that receives mounts from a peer group outside the namespace.
    #[error(
        "unsupported: mount {id} at {at} is a slave of peer group {group}, which is outside the \
         namespace (external masters are not restored)"
    )]
    ExternalMaster {
        /// Mount id.
        id: u32,
        /// Mount point.
        at: String,
        /// The master group.
        group: u32,
    },
    /// A mount named external at restore time that no `--external mnt[KEY]:PATH` gives.
    #[error("mount {id} at {at} is external (key {key}): give it with --external mnt[{key}]:PATH")]
    NoExternal {
        /// Mount id.
        id: u32,
        /// Mount point.
        at: String,
        /// Its key.
        key: String,
    },
    /// The root mount without `--root`.
    #[error("the root mount ({fstype} {src}) of the mount namespace needs --root")]
    NoRoot {
        /// File system type of the root mount.
        fstype: String,
        /// Its source.
        src: String,
    },
    /// An entry of the image that makes no sense.
    #[error("mountpoints image: mount {id}: {what}")]
    Bad {
        /// Mount id.
        id: u32,
        /// What is wrong.
        what: &'static str,
    },
    /// A task of the tree in a mount namespace other than its root's.
    #[error("unsupported: {pid} is in a mount namespace other than the tree root's")]
    OtherNamespace {
        /// The task.
        pid: i32,
    },
    /// An overlay whose layer the dump cannot find, in the namespace or on the host.
    #[error(
        "unsupported: overlay mount {id} at {at}: layer {layer} is neither in the mount \
         namespace nor on the host"
    )]
    OverlayLayer {
        /// Mount id.
        id: u32,
        /// Mount point.
        at: String,
        /// The layer path as the kernel shows it.
        layer: String,
    },
    /// Mounts that wait for each other (a bind source that is never made).
    #[error("mount {id} at {at}: the mount it is bound from cannot be made first")]
    Stuck {
        /// Mount id.
        id: u32,
        /// Mount point.
        at: String,
    },
}

/// `path` is `base` or below it.
pub fn is_under(path: &str, base: &str) -> bool {
    base == "/"
        || path == base
        || (path.starts_with(base) && path.as_bytes().get(base.len()) == Some(&b'/'))
}

/// `path` relative to `base` (which it is under), without a leading slash.
fn rel<'a>(path: &'a str, base: &str) -> &'a str {
    if base == "/" {
        path.trim_start_matches('/')
    } else {
        path[base.len()..].trim_start_matches('/')
    }
}

/// The root of a table: the one mount whose parent is not listed.
fn root_of<T>(
    v: &[T],
    id: impl Fn(&T) -> u32,
    parent: impl Fn(&T) -> u32,
) -> Result<usize, PlanError> {
    let ids: HashSet<u32> = v.iter().map(&id).collect();
    let roots: Vec<usize> = (0..v.len())
        .filter(|&i| !ids.contains(&parent(&v[i])))
        .collect();
    match roots.as_slice() {
        [r] => Ok(*r),
        r => Err(PlanError::Roots(r.len())),
    }
}

/// The image entries of a namespace's mounts (`mounts` as the namespace's root task reads its
/// mountinfo); `externals` maps mount points named `--external mnt[MOUNTPOINT]:KEY` to keys.
///
/// # Errors
/// [`PlanError`] for a table that cannot be brought back: an overmount, a mount neither made
/// afresh nor bound from another mount of the namespace nor named external, a slave of a group
/// outside the namespace.
pub fn entries(
    mounts: &[MountInfo],
    externals: &HashMap<String, String>,
) -> Result<Vec<MntEntry>, PlanError> {
    let root = root_of(mounts, |m| m.id, |m| m.parent)?;
    let mut seen_at: HashSet<&str> = HashSet::new();
    for m in mounts {
        if !seen_at.insert(&m.mountpoint) {
            return Err(PlanError::Overmount {
                id: m.id,
                at: m.mountpoint.clone(),
            });
        }
    }
    let groups: HashSet<u32> = mounts.iter().filter_map(|m| m.shared).collect();
    let mut out = Vec::with_capacity(mounts.len());
    for (i, m) in mounts.iter().enumerate() {
        let code = FSTYPES.iter().find(|f| f.1 == m.fstype).map_or(0, |f| f.0);
        let ext = externals.get(&m.mountpoint);
        if let Some(g) = m.master
            && !groups.contains(&g)
            && ext.is_none()
            && i != root
        {
            return Err(PlanError::ExternalMaster {
                id: m.id,
                at: m.mountpoint.clone(),
                group: g,
            });
        }
        // An overlay is mounted again with its layers (checked by the dump, mnt.rs).
        let fresh = m.root == "/" && (fresh_mountable(code) || code == OVERLAY);
        // Bound from another mount of the namespace: one of the same file system whose root
        // holds this one's, itself made afresh, external or the namespace's root.
        let bound = mounts.iter().enumerate().any(|(j, o)| {
            j != i
                && o.dev == m.dev
                && is_under(&m.root, &o.root)
                && (j == root
                    || externals.contains_key(&o.mountpoint)
                    || (o.root == "/" && fresh_mountable(code)))
        });
        if i != root && ext.is_none() && !fresh && !bound {
            return Err(PlanError::NotRestorable {
                id: m.id,
                at: m.mountpoint.clone(),
                fstype: m.fstype.clone(),
                src: m.source.clone(),
                root: m.root.clone(),
            });
        }
        let (sbf, options) = sb_flags(&m.super_opts);
        let mut flags = mount_flags(&m.mnt_opts);
        if m.unbindable {
            flags |= libc::MS_UNBINDABLE as u32;
        }
        out.push(MntEntry {
            fstype: code,
            mnt_id: m.id,
            root_dev: m.kdev(),
            parent_mnt_id: m.parent,
            flags,
            root: m.root.clone(),
            mountpoint: m.mountpoint.clone(),
            source: m.source.clone(),
            options,
            shared_id: Some(m.shared.unwrap_or(0)),
            master_id: Some(m.master.unwrap_or(0)),
            ext_mount: ext.map(|_| true),
            ext_key: ext.cloned(),
            sb_flags: Some(sbf),
            ..MntEntry::default()
        });
    }
    Ok(out)
}

/// How one mount is made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum How {
    /// Bind (recursively) the `--root` directory: the namespace's root.
    Root(String),
    /// A new mount of file system `fs` from `source` with `data`.
    Fresh {
        /// Kernel file system name.
        fs: String,
        /// Source.
        source: String,
        /// Options.
        data: String,
    },
    /// Bind `from`: a path under the yard (relative, no leading slash) when `in_yard`, else a
    /// path of the host (an external mount).
    Bind {
        /// The source path.
        from: String,
        /// Whether `from` is relative to the yard.
        in_yard: bool,
    },
}

/// What to do to a mount once it exists, in this order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Propagation {
    /// Make it a slave (it was bound from a member of its master group).
    pub slave: bool,
    /// Make it shared (the first of its peer group).
    pub shared: bool,
    /// Make it private (neither shared nor slave).
    pub private: bool,
    /// Make it unbindable (done last, once nothing more is bound from it).
    pub unbindable: bool,
}

/// One mount to make, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// Its mount id in the image.
    pub mnt_id: u32,
    /// Its mount point (absolute inside the namespace).
    pub at: String,
    /// How it is made.
    pub how: How,
    /// Per-mount flags (`MS_RDONLY`, `MS_NOSUID`, ...) without propagation bits.
    pub flags: u64,
    /// Fill it from the tmpfs tarball of this device (kernel encoding).
    pub tar_dev: Option<u32>,
    /// Propagation to set.
    pub prop: Propagation,
    /// Its device in the image (a mount that shows up there on its own through propagation
    /// is not made twice).
    pub dev: u32,
}

/// Orders the entries of a mountpoints image into steps; `root` is `--root`, `externals` maps
/// keys to host paths (`--external mnt[KEY]:PATH`).
///
/// # Errors
/// [`PlanError`]: no `--root`, an external mount with no path given, a bind whose source is
/// never made, entries that make no sense.
pub fn steps(
    entries: &[MntEntry],
    root: Option<&str>,
    externals: &HashMap<String, String>,
) -> Result<Vec<Step>, PlanError> {
    let r = root_of(entries, |e| e.mnt_id, |e| e.parent_mnt_id)?;
    for e in entries {
        if !e.mountpoint.starts_with('/') || e.mountpoint.split('/').any(|c| c == "..") {
            return Err(PlanError::Bad {
                id: e.mnt_id,
                what: "mount point is not a plain absolute path",
            });
        }
        if !e.root.starts_with('/') || e.root.split('/').any(|c| c == "..") {
            return Err(PlanError::Bad {
                id: e.mnt_id,
                what: "root is not a plain absolute path",
            });
        }
    }
    let groups: HashSet<u32> = entries
        .iter()
        .filter_map(|e| e.shared_id)
        .filter(|g| *g != 0)
        .collect();
    let mut done: Vec<usize> = Vec::new();
    let mut is_done = vec![false; entries.len()];
    let mut group_first: HashMap<u32, usize> = HashMap::new();
    let mut out = Vec::new();
    let by_id: HashMap<u32, usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.mnt_id, i))
        .collect();
    loop {
        let mut progress = false;
        for i in 0..entries.len() {
            if is_done[i] {
                continue;
            }
            let e = &entries[i];
            if i != r && by_id.get(&e.parent_mnt_id).is_none_or(|&p| !is_done[p]) {
                continue;
            }
            let shared = e.shared_id.filter(|g| *g != 0);
            let master = e.master_id.filter(|g| *g != 0 && groups.contains(g));
            let ext = e.ext_key.as_ref().filter(|_| e.ext_mount.unwrap_or(true));
            // A bind source among the mounts made so far, in order of preference: a member
            // of its peer group, a member of its master group, any other.
            let source = |want: Option<u32>| {
                done.iter().copied().find(|&j| {
                    let o = &entries[j];
                    o.root_dev == e.root_dev
                        && is_under(&e.root, &o.root)
                        && want.is_none_or(|g| o.shared_id == Some(g))
                        && o.flags & libc::MS_UNBINDABLE as u32 == 0
                })
            };
            let peer = shared.and_then(|g| group_first.get(&g).copied());
            let how;
            let mut tar_dev = None;
            let mut from_group = None;
            if i == r {
                how = How::Root(root.map(str::to_string).ok_or_else(|| PlanError::NoRoot {
                    fstype: fs_name(e.fstype).unwrap_or("?").to_string(),
                    src: e.source.clone(),
                })?);
            } else if let Some(key) = ext {
                let path = externals.get(key).ok_or_else(|| PlanError::NoExternal {
                    id: e.mnt_id,
                    at: e.mountpoint.clone(),
                    key: key.clone(),
                })?;
                how = How::Bind {
                    from: path.clone(),
                    in_yard: false,
                };
            } else {
                let pick = peer
                    .and_then(|_| source(shared))
                    .or_else(|| master.and_then(|g| source(Some(g))))
                    .or_else(|| source(None));
                let fresh = e.root == "/" && (fresh_mountable(e.fstype) || e.fstype == OVERLAY);
                // An overlay after the mounts its layers are on.
                if e.fstype == OVERLAY
                    && pick.is_none()
                    && !overlay::layers(&e.options)
                        .iter()
                        .all(|l| holder(entries, l, i).is_none_or(|j| is_done[j]))
                {
                    continue;
                }
                match pick {
                    // A fresh mount of a file system seen already would be another superblock:
                    // bind instead (tmpfs content, peer groups).
                    Some(j)
                        if !fresh || peer.is_some() || master.is_some() || e.fstype == TMPFS =>
                    {
                        let o = &entries[j];
                        from_group = o.shared_id.filter(|g| *g != 0);
                        let src = match &how_of(&out, entries[j].mnt_id) {
                            Some(How::Bind {
                                from,
                                in_yard: false,
                            }) => (join(from, rel(&e.root, &o.root)), false),
                            _ => (
                                join(o.mountpoint.trim_start_matches('/'), rel(&e.root, &o.root)),
                                true,
                            ),
                        };
                        how = How::Bind {
                            from: src.0,
                            in_yard: src.1,
                        };
                    }
                    _ if fresh => {
                        let fs = fs_name(e.fstype).unwrap_or("none").to_string();
                        if e.fstype == TMPFS {
                            tar_dev = Some(e.root_dev);
                        }
                        how = How::Fresh {
                            fs,
                            source: e.source.clone(),
                            data: e.options.clone(),
                        };
                    }
                    _ => continue,
                }
            }
            let mut prop = Propagation {
                unbindable: e.flags & libc::MS_UNBINDABLE as u32 != 0,
                ..Propagation::default()
            };
            match (master, shared) {
                (Some(g), _) if from_group == Some(g) => prop.slave = true,
                (Some(_), _) => continue,
                _ => {}
            }
            if let Some(g) = shared {
                if peer.is_none() || from_group != Some(g) {
                    prop.shared = true;
                    group_first.entry(g).or_insert(i);
                }
            } else if !prop.slave {
                prop.private = true;
            }
            let prop_bits =
                (libc::MS_UNBINDABLE | libc::MS_SHARED | libc::MS_SLAVE | libc::MS_PRIVATE) as u32;
            out.push(Step {
                mnt_id: e.mnt_id,
                at: e.mountpoint.clone(),
                how,
                flags: u64::from(e.flags & !prop_bits) | u64::from(e.sb_flags.unwrap_or(0)),
                tar_dev,
                prop,
                dev: e.root_dev,
            });
            is_done[i] = true;
            done.push(i);
            progress = true;
        }
        if done.len() == entries.len() {
            return Ok(out);
        }
        if !progress {
            let i = (0..entries.len()).find(|&i| !is_done[i]).unwrap_or(0);
            return Err(PlanError::Stuck {
                id: entries[i].mnt_id,
                at: entries[i].mountpoint.clone(),
            });
        }
    }
}

/// The entry (other than `me`) whose mount point holds `path` most closely, if any.
fn holder(entries: &[MntEntry], path: &str, me: usize) -> Option<usize> {
    entries
        .iter()
        .enumerate()
        .filter(|(j, o)| *j != me && is_under(path, &o.mountpoint))
        .max_by_key(|(_, o)| o.mountpoint.len())
        .map(|(j, _)| j)
}

fn how_of(steps: &[Step], id: u32) -> Option<How> {
    steps.iter().find(|s| s.mnt_id == id).map(|s| s.how.clone())
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (_, true) => a.to_string(),
        (true, false) => b.to_string(),
        _ => format!("{}/{b}", a.trim_end_matches('/')),
    }
}

#[cfg(test)]
mod tests {
    use super::super::mountinfo::parse;
    use super::*;

    const NS: &str = "\
100 99 8:1 /srv/rootfs / rw,relatime - ext4 /dev/sda1 rw
101 100 0:40 / /proc rw,nosuid - proc proc rw
102 100 0:41 / /data rw shared:5 - tmpfs none rw,size=64k
103 100 0:41 / /peer rw shared:5 - tmpfs none rw,size=64k
104 100 0:41 /sub /slave ro master:5 - tmpfs none rw,size=64k
105 100 8:1 /srv/rootfs/etc /etc2 ro - ext4 /dev/sda1 rw
106 100 8:1 /usr /usr ro - ext4 /dev/sda1 rw
107 100 0:42 / /priv rw unbindable - tmpfs none rw
";

    fn ext(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn a_host_bind_must_be_named_external() {
        let m = parse(NS).unwrap();
        let e = entries(&m, &HashMap::new()).unwrap_err();
        assert!(matches!(e, PlanError::NotRestorable { id: 106, .. }), "{e}");
        assert!(e.to_string().contains("--external mnt[/usr]:KEY"));
        let v = entries(&m, &ext(&[("/usr", "usr")])).unwrap();
        assert_eq!(v.len(), 8);
        assert_eq!(v[6].ext_key.as_deref(), Some("usr"));
        assert_eq!(v[2].options, "size=64k");
        assert_eq!(v[4].flags, libc::MS_RDONLY as u32);
    }

    #[test]
    fn steps_order_binds_and_propagation() {
        let m = parse(NS).unwrap();
        let v = entries(&m, &ext(&[("/usr", "usr")])).unwrap();
        assert_eq!(
            steps(&v, None, &HashMap::new()).unwrap_err(),
            PlanError::NoRoot {
                fstype: "?".into(),
                src: "/dev/sda1".into()
            }
        );
        assert!(matches!(
            steps(&v, Some("/r"), &HashMap::new()).unwrap_err(),
            PlanError::NoExternal { id: 106, .. }
        ));
        let s = steps(&v, Some("/r"), &ext(&[("usr", "/usr")])).unwrap();
        let at = |p: &str| s.iter().find(|s| s.at == p).unwrap();
        assert_eq!(at("/").how, How::Root("/r".into()));
        assert!(matches!(at("/proc").how, How::Fresh { .. }));
        assert_eq!(at("/data").tar_dev, Some(41));
        assert!(at("/data").prop.shared);
        assert_eq!(
            at("/peer").how,
            How::Bind {
                from: "data".into(),
                in_yard: true
            }
        );
        assert!(!at("/peer").prop.shared && !at("/peer").prop.private);
        assert_eq!(
            at("/slave").how,
            How::Bind {
                from: "data/sub".into(),
                in_yard: true
            }
        );
        assert!(at("/slave").prop.slave);
        assert_eq!(
            at("/etc2").how,
            How::Bind {
                from: "etc".into(),
                in_yard: true
            }
        );
        assert_eq!(
            at("/usr").how,
            How::Bind {
                from: "/usr".into(),
                in_yard: false
            }
        );
        assert!(at("/priv").prop.unbindable && at("/priv").prop.private);
    }

    #[test]
    fn refusals() {
        let over = "1 0 8:1 / / rw - ext4 a rw\n2 1 0:5 / /x rw - tmpfs t rw\n3 2 0:6 / /x rw - tmpfs t rw\n";
        assert!(matches!(
            entries(&parse(over).unwrap(), &HashMap::new()),
            Err(PlanError::Overmount { id: 3, .. })
        ));
        let slave = "1 0 8:1 / / rw - ext4 a rw\n2 1 0:5 / /x rw master:9 - tmpfs t rw\n";
        assert!(matches!(
            entries(&parse(slave).unwrap(), &HashMap::new()),
            Err(PlanError::ExternalMaster { group: 9, .. })
        ));
        let two = "1 0 8:1 / / rw - ext4 a rw\n2 7 0:5 / /x rw - tmpfs t rw\n";
        assert_eq!(
            entries(&parse(two).unwrap(), &HashMap::new()),
            Err(PlanError::Roots(2))
        );
    }
}
