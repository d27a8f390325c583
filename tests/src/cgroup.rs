//! A v2 cgroup a test makes for its victims, removed on drop.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// A v2 cgroup of the test's own, removed on drop (once its tasks are gone).
pub struct TestCgroup(pub PathBuf);

impl TestCgroup {
    /// Makes `crtest-TAG-PID` in the v2 hierarchy (`None`, said on stderr, when it cannot).
    pub fn make(tag: &str) -> Option<TestCgroup> {
        let unified = Path::new("/sys/fs/cgroup/unified");
        let root = if unified.join("cgroup.procs").exists() {
            unified
        } else {
            Path::new("/sys/fs/cgroup")
        };
        let dir = root.join(format!("crtest-{tag}-{}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => Some(TestCgroup(dir)),
            Err(e) => {
                eprintln!("skipped: cannot make a v2 cgroup: {e}");
                None
            }
        }
    }

    /// The path `/proc/PID/cgroup` shows for it.
    pub fn name(&self) -> String {
        format!("/{}", self.0.file_name().unwrap().to_string_lossy())
    }

    /// Removes it (waiting up to 5 s for its tasks to be gone).
    pub fn remove(&self) {
        let end = std::time::Instant::now() + Duration::from_secs(5);
        while self.0.exists() && std::fs::remove_dir(&self.0).is_err() {
            if std::time::Instant::now() > end {
                eprintln!("could not remove {}", self.0.display());
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        self.remove();
    }
}
