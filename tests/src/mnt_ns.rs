//! A counter in a mount namespace of its own, made like a container's (see
//! `tests/tests/criu_mnt_ns.rs`): its root bound from a directory, `/usr` and the test binaries
//! bound from the host (external mounts `/usr` and `/t`), proc, a shared tmpfs at `/data`
//! holding the count, a slave, a read-only bind and an unbindable tmpfs, the root pivoted.

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::mounts::table;
use crate::{Spawned, wait_file};

/// Starts the counter in its own mount namespace with `root` as its root; returns it and the
/// host path of its tmpfs as seen through its root.
pub fn spawn_in_ns(d: &Path, root: &Path) -> Spawned {
    let bins = crate::bin_dir();
    for dir in [
        "usr", "proc", "data", "peer", "slave", "ro", "priv", "t", "old",
    ] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    for l in ["bin", "lib", "lib64"] {
        let _ = std::os::unix::fs::symlink(format!("usr/{l}"), root.join(l));
    }
    let script = r#"set -e
R="$1"; B="$2"
mount --bind "$R" "$R"
mount --bind /usr "$R/usr"; mount -o remount,bind,ro "$R/usr"
mount --bind "$B" "$R/t"
mount -t proc proc "$R/proc"
mount -t tmpfs -o size=1m,mode=755 data "$R/data"
echo hello > "$R/data/hello"; mkdir "$R/data/sub"; echo sub > "$R/data/sub/f"
mount --make-shared "$R/data"
mount --bind "$R/data" "$R/peer"
mount --bind "$R/data/sub" "$R/slave"; mount --make-slave "$R/slave"
mount --bind "$R/data/sub" "$R/ro"; mount --make-private "$R/ro"; mount -o remount,bind,ro "$R/ro"
mount -t tmpfs -o size=64k priv "$R/priv"; mount --make-unbindable "$R/priv"
cd "$R"; pivot_root . old; umount -l /old
exec /t/criu-victim-counter /data/count /data/ready </data/hello >/data/log 2>&1
"#;
    // Spawned closes every inherited descriptor but 0..2, which the script replaces.
    let v = Spawned::spawn(
        "/usr/bin/unshare",
        &[
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            root.to_str().unwrap(),
            bins.to_str().unwrap(),
        ],
        &d.join("victim.log"),
        None,
    );
    let ready = PathBuf::from(format!("/proc/{}/root/data/ready", v.pid()));
    wait_file(&ready, Duration::from_secs(10));
    v
}

pub fn counts(pid: i32) -> Vec<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/root/data/count"))
        .unwrap()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect()
}

pub fn assert_counts_on(pid: i32, at_dump: usize) {
    std::thread::sleep(Duration::from_millis(300));
    let c = counts(pid);
    assert!(
        c.len() > at_dump + 10,
        "the count did not go on: {} at dump, {} now",
        at_dump,
        c.len()
    );
    for (i, n) in c.iter().enumerate() {
        assert_eq!(*n, i as u64 + 1, "the count is broken at line {}", i + 1);
    }
}
