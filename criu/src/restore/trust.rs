//! Images that ask for root, from a directory root does not own (issue 23).
//!
//! A restore run as root gives every task the credentials its core image names. When those
//! are root's (a uid 0, or any capability) and the images directory is owned by another user
//! or writable by everyone, whoever could write there chose what runs as root. criu warns,
//! naming the image and the directory, and goes on: root restoring its own dump from a
//! scratch directory is the common case, and the decision stays root's. (A non-root client of
//! `criu service` or `swrk` is refused such images outright, see `rpc::peer`.)

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use criu_images::{ImageDir, names};

/// The images in `dir` that ask for root, by file name (empty when `dir` is trusted, when
/// criu does not run as root, or when the images cannot be read: the restore proper then
/// reports that).
pub fn root_images_in_untrusted_dir(dir: &Path) -> Vec<String> {
    // SAFETY: geteuid only reads this process's credentials.
    if unsafe { libc::geteuid() } != 0 {
        return Vec::new();
    }
    let Ok(m) = std::fs::metadata(dir) else {
        return Vec::new();
    };
    if m.uid() == 0 && m.mode() & 0o002 == 0 {
        return Vec::new();
    }
    let d = ImageDir::new(dir);
    let Ok(tree) = d.read_pstree() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for t in &tree {
        let mut ids = vec![t.pid];
        ids.extend(t.threads.iter().copied().filter(|x| *x != t.pid));
        for tid in ids {
            let Ok(core) = d.read_core(tid) else { continue };
            let Some(c) = core.thread_core.as_ref().and_then(|t| t.creds.as_ref()) else {
                continue;
            };
            let root = [c.uid, c.euid, c.suid, c.fsuid].contains(&0)
                || c.cap_prm
                    .iter()
                    .chain(&c.cap_eff)
                    .chain(&c.cap_amb)
                    .any(|w| *w != 0);
            if root {
                out.push(names::core(tid));
            }
        }
    }
    out
}

/// Logs the warning for [`root_images_in_untrusted_dir`].
pub fn warn_untrusted(dir: &Path) {
    let found = root_images_in_untrusted_dir(dir);
    if found.is_empty() {
        return;
    }
    let (uid, mode) = std::fs::metadata(dir)
        .map(|m| (m.uid(), m.mode() & 0o7777))
        .unwrap_or((0, 0));
    tracing::warn!(
        "{} ask for root (uid 0 or capabilities) but the images directory {} is owned by uid \
         {uid} with mode {mode:o}: whoever can write there chose what runs as root",
        found.join(", "),
        dir.display()
    );
}
