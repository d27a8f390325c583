//! User namespaces: a tree whose root is root in a user namespace of its own (and unprivileged
//! outside) comes back in a new one with the same uid and gid maps (`userns-ID.img`, one
//! `userns_entry` as CRIU writes it).
//!
//! Dump: the maps from `/proc/PID/uid_map` and `gid_map` (as criu, in the initial namespace,
//! reads them: id inside, id outside, count). The credentials in the cores are then rewritten
//! to the ids the tasks have inside the namespace (what CRIU's images hold: the restorer sets
//! them from inside); an id the maps do not cover is refused by name.
//!
//! Restore: the root is cloned with `CLONE_NEWUSER`, so the kernel makes the user namespace
//! first and every namespace the root is cloned into (pid, uts) is owned by it; the engine
//! writes the maps from outside before the root runs any code of its own, and the restorer
//! sets each task's credentials inside it.
//!
//! `/proc/PID/setgroups` at `deny` is saved as `userns-ID.setgroups` (this criu's own file: CRIU
//! has no field for it and ignores the file) and written before the maps at restore, so the
//! tree still cannot call setgroups. Not kept: a namespace made beforehand and joined (ipc,
//! time, cgroup) stays owned by criu's.

use std::path::Path;

use criu_images::magic;
use criu_images::names;
use criu_images::pb::{CoreEntry, UidGidExtent, UsernsEntry};

use super::{DumpCtx, Kind, NsError, NsOps, Rebuilt, RestoreCtx};

/// The user kind's operations.
pub(crate) static OPS: NsOps = NsOps {
    kind: Kind::User,
    nested: false,
    dump,
    restore,
};

const K: Kind = Kind::User;

/// The kernel's limit of lines in a map (`UID_GID_MAP_MAX_EXTENTS`).
const MAX_EXTENTS: usize = 340;

/// `userns-ID.img`.
pub(crate) fn image_name(id: u32) -> String {
    format!("userns-{id}.img")
}

/// Parses a `uid_map`/`gid_map` text: `INSIDE OUTSIDE COUNT` per line.
fn parse_map(text: &str, what: &str) -> Result<Vec<UidGidExtent>, NsError> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<u32> = line
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|_| NsError::bad(K, what, format!("bad map line {line:?}")))?;
        let [first, lower_first, count] = f[..] else {
            return Err(NsError::bad(K, what, format!("bad map line {line:?}")));
        };
        out.push(UidGidExtent {
            first,
            lower_first,
            count,
        });
    }
    Ok(out)
}

/// The text written into `uid_map`/`gid_map` for `map`, after checking it is one the kernel
/// takes (at most 340 lines, counts not zero, no overflow).
fn map_text(map: &[UidGidExtent], file: &str) -> Result<String, NsError> {
    if map.is_empty() || map.len() > MAX_EXTENTS {
        return Err(NsError::bad(
            K,
            file,
            format!("{} map lines (1..={MAX_EXTENTS})", map.len()),
        ));
    }
    let mut text = String::new();
    for e in map {
        let ok = e.count != 0
            && e.first.checked_add(e.count - 1).is_some()
            && e.lower_first.checked_add(e.count - 1).is_some();
        if !ok {
            return Err(NsError::bad(
                K,
                file,
                format!(
                    "map line {} {} {} out of range",
                    e.first, e.lower_first, e.count
                ),
            ));
        }
        text.push_str(&format!("{} {} {}\n", e.first, e.lower_first, e.count));
    }
    Ok(text)
}

/// The id inside the namespace of `outer` (as criu sees it), CRIU's `userns_id`.
fn inside(map: &[UidGidExtent], outer: u32) -> Option<u32> {
    map.iter()
        .find(|e| e.lower_first <= outer && outer - e.lower_first < e.count)
        .map(|e| e.first + (outer - e.lower_first))
}

/// Rewrites the credentials of core image `path` with the ids inside the namespace.
fn translate_core(
    path: &Path,
    uids: &[UidGidExtent],
    gids: &[UidGidExtent],
) -> Result<(), NsError> {
    let name = path.display().to_string();
    let mut core: CoreEntry = criu_images::read_single(path, magic::CORE)
        .map_err(|e| NsError::image(K, name.clone(), e))?;
    let Some(c) = core.thread_core.as_mut().and_then(|t| t.creds.as_mut()) else {
        return Ok(());
    };
    let map = |v: &mut u32, m: &[UidGidExtent], what: &str| {
        inside(m, *v).map(|x| *v = x).ok_or_else(|| {
            NsError::unsupported(
                K,
                format!(
                    "{name}: {what} {} is not mapped in the task's user namespace",
                    *v
                ),
            )
        })
    };
    for (v, what) in [
        (&mut c.uid, "uid"),
        (&mut c.euid, "euid"),
        (&mut c.suid, "suid"),
        (&mut c.fsuid, "fsuid"),
    ] {
        map(v, uids, what)?;
    }
    for (v, what) in [
        (&mut c.gid, "gid"),
        (&mut c.egid, "egid"),
        (&mut c.sgid, "sgid"),
        (&mut c.fsgid, "fsgid"),
    ] {
        map(v, gids, what)?;
    }
    for g in c.groups.iter_mut() {
        map(g, gids, "supplementary group")?;
    }
    criu_images::write_all(path, magic::CORE, [&core]).map_err(|e| NsError::image(K, name, e))
}

fn dump(ctx: &DumpCtx<'_>) -> Result<(), NsError> {
    let read = |what: &str| {
        let path = format!("/proc/{}/{what}", ctx.pid);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| NsError::io(K, format!("reading {path}"), e))?;
        parse_map(&text, &path)
    };
    let e = UsernsEntry {
        uid_map: read("uid_map")?,
        gid_map: read("gid_map")?,
    };
    let file = image_name(ctx.id);
    // A namespace without maps cannot be made again with the same ids.
    map_text(&e.uid_map, &file)?;
    map_text(&e.gid_map, &file)?;
    tracing::info!(
        id = ctx.id,
        uid_lines = e.uid_map.len(),
        gid_lines = e.gid_map.len(),
        "user namespace"
    );
    // The cores hold the ids criu sees; CRIU's images hold those inside the namespace.
    let d = criu_images::ImageDir::new(ctx.dir);
    let tree = d
        .read_pstree()
        .map_err(|er| NsError::image(K, names::PSTREE, er))?;
    // The tasks clone their children with their old pids, which needs a capability in the
    // user namespace that owns the pid namespace: theirs only when it is a new one.
    let ino = |p: String| std::fs::metadata(p).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
    let same_pid_ns =
        ino(format!("/proc/{}/ns/pid", ctx.pid)).ok() == ino("/proc/self/ns/pid".into()).ok();
    if same_pid_ns && tree.iter().filter(|t| t.pid != 0).count() > 1 {
        return Err(NsError::unsupported(
            K,
            format!(
                "{} is in a user namespace of its own with {} processes but in criu's pid \
                 namespace: a tree of several processes in a user namespace needs a pid \
                 namespace of its own",
                ctx.pid,
                tree.len()
            ),
        ));
    }
    for t in &tree {
        let mut tids = t.threads.clone();
        tids.push(t.pid);
        tids.sort_unstable();
        tids.dedup();
        for tid in tids {
            let path = ctx.dir.join(names::core(tid));
            if path.exists() {
                translate_core(&path, &e.uid_map, &e.gid_map)?;
            }
        }
    }
    let setgroups = format!("/proc/{}/setgroups", ctx.pid);
    let state = std::fs::read_to_string(&setgroups)
        .map_err(|er| NsError::io(K, format!("reading {setgroups}"), er))?;
    if state.trim() == "deny" {
        let name = setgroups_name(ctx.id);
        std::fs::write(ctx.dir.join(&name), "deny\n")
            .map_err(|er| NsError::io(K, format!("writing {name}"), er))?;
    }
    criu_images::write_all(ctx.dir.join(&file), magic::USERNS, [&e])
        .map_err(|er| NsError::image(K, file, er))
}

/// `userns-ID.setgroups`: present (holding `deny`) when the namespace denied setgroups.
fn setgroups_name(id: u32) -> String {
    format!("userns-{id}.setgroups")
}

/// A user namespace's maps as the restore writes them.
pub(crate) struct Maps {
    uid_map: String,
    gid_map: String,
    deny: bool,
}

impl Maps {
    /// The ids outside that are uid and gid 0 inside, when the maps cover them.
    pub(crate) fn root_ids(&self) -> Option<(u32, u32)> {
        let zero = |text: &str| {
            text.lines().find_map(|l| {
                let f: Vec<u32> = l
                    .split_whitespace()
                    .filter_map(|w| w.parse().ok())
                    .collect();
                (f.len() == 3 && f[0] == 0).then(|| f[1])
            })
        };
        Some((zero(&self.uid_map)?, zero(&self.gid_map)?))
    }

    /// Writes `setgroups` (when denied) and the maps of task `pid`'s user namespace.
    ///
    /// # Errors
    /// [`NsError::Io`] naming the file and the text.
    pub(crate) fn write(&self, pid: i32) -> Result<(), NsError> {
        // Before gid_map: the kernel takes `deny` only while the map is unwritten.
        if self.deny {
            let path = format!("/proc/{pid}/setgroups");
            std::fs::write(&path, "deny")
                .map_err(|er| NsError::io(K, format!("writing {path}"), er))?;
        }
        for (what, text) in [("uid_map", &self.uid_map), ("gid_map", &self.gid_map)] {
            let path = format!("/proc/{pid}/{what}");
            std::fs::write(&path, text)
                .map_err(|er| NsError::io(K, format!("writing {path} ({text:?})"), er))?;
        }
        Ok(())
    }
}

/// The maps of user namespace `id` in `dir`, checked.
///
/// # Errors
/// [`NsError`]: unreadable image, a map the kernel would not take.
pub(crate) fn maps_for(dir: &Path, id: u32) -> Result<Maps, NsError> {
    let file = image_name(id);
    let e: UsernsEntry = criu_images::read_single(dir.join(&file), magic::USERNS)
        .map_err(|er| NsError::image(K, file.clone(), er))?;
    let uid_map = map_text(&e.uid_map, &file)?;
    let gid_map = map_text(&e.gid_map, &file)?;
    let sg = setgroups_name(id);
    let deny = match std::fs::read_to_string(dir.join(&sg)) {
        Ok(t) if t.trim() == "deny" => true,
        Ok(_) => {
            return Err(NsError::BadImage {
                kind: K.name(),
                file: sg,
                reason: "expected deny".into(),
            });
        }
        Err(er) if er.kind() == std::io::ErrorKind::NotFound => false,
        Err(er) => return Err(NsError::io(K, format!("reading {sg}"), er)),
    };
    Ok(Maps {
        uid_map,
        gid_map,
        deny,
    })
}

fn restore(ctx: &RestoreCtx<'_>) -> Result<Rebuilt, NsError> {
    let maps = maps_for(ctx.dir, ctx.id)?;
    Ok(Rebuilt {
        clone_flags: libc::CLONE_NEWUSER as u64,
        after_clone: Some(Box::new(move |root| {
            maps.write(root)?;
            tracing::debug!(root, "user namespace maps written");
            Ok(())
        })),
        ..Rebuilt::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_parse_translate_and_refuse_bad_lines() {
        let m = parse_map("         0     100000      65536\n", "x").unwrap();
        assert_eq!(
            (m[0].first, m[0].lower_first, m[0].count),
            (0, 100000, 65536)
        );
        assert_eq!(inside(&m, 100000), Some(0));
        assert_eq!(inside(&m, 101000), Some(1000));
        assert_eq!(inside(&m, 165536), None);
        assert_eq!(inside(&m, 0), None);
        assert_eq!(map_text(&m, "x").unwrap(), "0 100000 65536\n");
        assert!(parse_map("0 1\n", "x").is_err());
        assert!(parse_map("a b c\n", "x").is_err());
        assert!(map_text(&[], "x").is_err());
        let over = [UidGidExtent {
            first: u32::MAX,
            lower_first: 0,
            count: 2,
        }];
        assert!(map_text(&over, "x").is_err());
    }
}
