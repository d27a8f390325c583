//! `criu dump` refuses, by name, state it cannot save yet instead of dumping a tree that would
//! come back different; the refused tree runs on, untraced, and the images directory keeps no
//! `inventory.img`.
//!
//! Time namespaces: a process that called `unshare(CLONE_NEWTIME)` (its children enter a
//! namespace with clocks of their own: a nested time namespace). A tree whose root lives in a
//! time namespace of its own is dumped (`criu_ns_time`).

use std::path::Path;
use std::time::{Duration, Instant};

use compel_criu_tests::{Spawned, become_subreaper, criu_dump, test_lock, tracer_pid};

/// Lines of OUT that start with `who `.
fn count_of(out: &Path, who: &str) -> usize {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(who) && l[who.len()..].starts_with(' '))
        .count()
}

/// A running `criu-victim-timens-parent`: the parent (outside the new time namespace, which it
/// made for its children) and its child (inside it).
struct TimensTree {
    // Dropped in this order: the parent is killed and reaped first, so that its child is ours
    // (we are a subreaper) when its own guard kills and reaps it; the directory last.
    parent: Spawned,
    child: Spawned,
    dir: tempfile::TempDir,
}

impl TimensTree {
    /// Starts the victim and waits until both processes count; `None` (the test is skipped) where
    /// time namespaces cannot be made.
    fn start() -> Option<TimensTree> {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("count");
        let ready = dir.path().join("ready");
        let mut parent = Spawned::spawn_dying_with_us(
            env!("CARGO_BIN_EXE_criu-victim-timens-parent"),
            &[out.to_str().unwrap(), ready.to_str().unwrap()],
            &dir.path().join("victim.log"),
            None,
        );
        let end = Instant::now() + Duration::from_secs(10);
        let text = loop {
            if let Ok(s) = std::fs::read_to_string(&ready)
                && s.ends_with(['0', '1'])
            {
                break s;
            }
            if let Some(exit) = parent.wait(Duration::from_millis(5)) {
                let log = std::fs::read_to_string(dir.path().join("victim.log")).unwrap();
                eprintln!("skipped: no time namespace for the victim ({exit:?}): {log}");
                return None;
            }
            assert!(Instant::now() < end, "the victim did not get ready");
        };
        let f: Vec<i32> = text
            .split_whitespace()
            .skip(1)
            .map(|w| w.parse().unwrap())
            .collect();
        assert_eq!(f[0], parent.pid(), "{text}");
        let child = Spawned::guard(f[1]);
        assert_eq!(
            f[2], 1,
            "the child's monotonic clock runs a day ahead of its parent's: a time namespace of \
             its own ({text})"
        );
        Some(TimensTree { parent, child, dir })
    }

    fn images(&self) -> std::path::PathBuf {
        let p = self.dir.path().join("img");
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// Both processes are untraced and still counting.
    fn runs_on(&self) {
        let out = self.dir.path().join("count");
        for (pid, who) in [(self.parent.pid(), "parent"), (self.child.pid(), "child")] {
            assert_eq!(tracer_pid(pid), Some(0), "{who} {pid} still traced");
            let n = count_of(&out, who);
            let end = Instant::now() + Duration::from_secs(5);
            while count_of(&out, who) <= n {
                assert!(Instant::now() < end, "{who} {pid} stopped counting");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// The refusal: dump of `pid` fails naming `why`, leaves no inventory and says why in the
/// marker file.
fn refused(tree: &TimensTree, pid: i32, why: &str) {
    let img = tree.images();
    let o = criu_dump(pid, &img, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "dump of {pid} succeeded: {err}");
    assert!(err.contains(why), "{err}");
    assert!(!img.join("inventory.img").exists());
    let marker = std::fs::read_to_string(img.join(criu::INCOMPLETE_MARKER)).unwrap();
    assert!(marker.contains(why), "{marker}");
}

#[test]
fn time_namespace_made_for_children_is_refused_and_the_tree_runs_on() {
    let _g = test_lock();
    compel_criu_tests::skip_if_not_root!(
        "time_namespace_made_for_children_is_refused_and_the_tree_runs_on"
    );
    become_subreaper();
    let Some(tree) = TimensTree::start() else {
        return;
    };
    // The parent's own time namespace is criu's; the one it gives its children is not.
    refused(
        &tree,
        tree.parent.pid(),
        &format!(
            "{} made a time namespace for its children",
            tree.parent.pid()
        ),
    );
    tree.runs_on();
}
