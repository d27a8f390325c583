//! Cgroups a test makes for itself under a name no other test or process uses
//! (`crtest-TAG-PID` at the top of each hierarchy), removed, children first, on drop or
//! [`TestCgroups::remove_all`]. Nothing else is touched: every path it writes or removes is
//! below one of its own names.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the cgroup hierarchies are mounted on this machine.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// A test's own cgroups in some hierarchies.
pub struct TestCgroups {
    /// The test-unique top-level name.
    pub name: String,
    /// The hierarchy directories (`cpu`, `memory`, `unified`, ...) it made `name` in.
    used: Vec<String>,
}

impl TestCgroups {
    /// A new set named `crtest-TAG-PID` (nothing made yet).
    pub fn new(tag: &str) -> TestCgroups {
        TestCgroups {
            name: format!("crtest-{tag}-{}", std::process::id()),
            used: Vec::new(),
        }
    }

    /// The v2 hierarchy's directory under `/sys/fs/cgroup`: `unified` on a hybrid layout like
    /// these machines', `""` where v2 is mounted on `/sys/fs/cgroup` itself; `None` (said on
    /// stderr) without one.
    pub fn v2() -> Option<&'static str> {
        let h = ["unified", ""].into_iter().find(|h| TestCgroups::have(h));
        if h.is_none() {
            eprintln!("skipped: no v2 cgroup hierarchy here");
        }
        h
    }

    /// Whether hierarchy `h` (a directory of `/sys/fs/cgroup`) is mounted here.
    pub fn have(h: &str) -> bool {
        Path::new(CGROUP_ROOT).join(h).join("cgroup.procs").exists()
    }

    /// `/sys/fs/cgroup/H/NAME/SUB` (SUB may be empty).
    pub fn path(&self, h: &str, sub: &str) -> PathBuf {
        let p = Path::new(CGROUP_ROOT).join(h).join(&self.name);
        if sub.is_empty() { p } else { p.join(sub) }
    }

    /// The path `/proc/PID/cgroup` shows for `NAME/SUB`.
    pub fn shown(&self, sub: &str) -> String {
        if sub.is_empty() {
            format!("/{}", self.name)
        } else {
            format!("/{}/{sub}", self.name)
        }
    }

    /// Makes `NAME/SUB` in hierarchy `h` (and `NAME` first).
    ///
    /// # Panics
    /// If the directory cannot be made.
    pub fn make(&mut self, h: &str, sub: &str) -> PathBuf {
        if !self.used.iter().any(|u| u == h) {
            self.used.push(h.to_string());
        }
        let p = self.path(h, sub);
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("make {}: {e}", p.display()));
        p
    }

    /// Writes `value` into `file` of `NAME/SUB` in hierarchy `h`.
    ///
    /// # Panics
    /// If the write fails.
    pub fn set(&self, h: &str, sub: &str, file: &str, value: &str) {
        let p = self.path(h, sub).join(file);
        std::fs::write(&p, value)
            .unwrap_or_else(|e| panic!("write {value} to {}: {e}", p.display()));
    }

    /// The trimmed content of `file` of `NAME/SUB` in hierarchy `h` (empty if unreadable).
    pub fn get(&self, h: &str, sub: &str, file: &str) -> String {
        std::fs::read_to_string(self.path(h, sub).join(file))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// Moves `pid` into `NAME/SUB` of hierarchy `h`.
    pub fn enter(&self, h: &str, sub: &str, pid: i32) {
        self.set(h, sub, "cgroup.procs", &pid.to_string());
    }

    /// Removes `NAME` (with everything below it) from every hierarchy it was made in; waits up
    /// to 5 s for dying tasks to leave.
    pub fn remove_all(&self) {
        for h in &self.used {
            let top = self.path(h, "");
            remove_tree(&top, Instant::now() + Duration::from_secs(5));
        }
    }
}

fn remove_tree(dir: &Path, until: Instant) {
    if !dir.is_dir() {
        return;
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path(), until);
            }
        }
    }
    while let Err(e) = std::fs::remove_dir(dir) {
        if e.kind() == std::io::ErrorKind::NotFound {
            return;
        }
        if Instant::now() > until {
            eprintln!("could not remove {}: {e}", dir.display());
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for TestCgroups {
    fn drop(&mut self) {
        self.remove_all();
    }
}

/// The cgroup of `pid` in the hierarchy whose controllers (as `/proc/PID/cgroup` lists them)
/// include `ctl` (`""`: the v2 hierarchy); `None` if unreadable.
pub fn cgroup_of(pid: impl std::fmt::Display, ctl: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines().find_map(|l| {
        let mut it = l.splitn(3, ':');
        let _ = it.next()?;
        let c = it.next()?;
        let p = it.next()?;
        let hit = if ctl.is_empty() {
            c.is_empty()
        } else {
            c.split(',').any(|x| x == ctl)
        };
        hit.then(|| p.to_string())
    })
}
