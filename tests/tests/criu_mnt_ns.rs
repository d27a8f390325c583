//! A counter in a mount namespace of its own, made like a container's: a root bound from a
//! directory, `/usr` and the test binaries bound from the host (external mounts), proc, a tmpfs
//! holding the counter's output, shared between two places, with a slave bind of a subtree, a
//! read-only bind and an unbindable tmpfs, the root pivoted. `criu dump` saves the table and
//! the tmpfs content; `criu restore --root` rebuilds it in a new namespace: the count carries
//! on, the mount table reads the same modulo ids, the propagation is the same, and criu's own
//! namespace is untouched. Twice. A host bind not named external is refused by name and the
//! counter runs on.

use std::path::{Path, PathBuf};
use std::time::Duration;

use compel_criu_tests::mounts::table;
use compel_criu_tests::{
    Spawned, become_subreaper, criu_dump, dump_and_reap, is_root, pid_exists, restore_detached,
    test_lock, wait_file,
};

/// Starts the counter in its own mount namespace with `root` as its root; returns it and the
/// host path of its tmpfs as seen through its root.
fn spawn_in_ns(d: &Path, root: &Path) -> Spawned {
    let bins = PathBuf::from(env!("CARGO_BIN_EXE_criu-victim-counter"))
        .parent()
        .unwrap()
        .to_path_buf();
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

fn counts(pid: i32) -> Vec<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/root/data/count"))
        .unwrap()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect()
}

fn assert_counts_on(pid: i32, at_dump: usize) {
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

fn yards() -> usize {
    std::fs::read_dir("/tmp")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(".criu.mntns."))
        .count()
}

#[test]
fn mount_namespace_round_trips_twice() {
    if !is_root() {
        eprintln!("skipped: mount namespaces need root");
        return;
    }
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("rootfs");
    let bins = PathBuf::from(env!("CARGO_BIN_EXE_criu-victim-counter"))
        .parent()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let ours = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let yards_before = yards();
    let mut v = spawn_in_ns(d.path(), &root);
    let want = table(v.pid());
    assert_eq!(want.len(), 9, "{want:#?}");
    let mut pid = v.pid();
    for round in 0..2 {
        let img = d.path().join(format!("img{round}"));
        let at_dump = counts(pid).len();
        dump_and_reap(
            &mut v,
            &img,
            &["--external", "mnt[/usr]:usr", "--external", "mnt[/t]:bins"],
        );
        let names: Vec<String> = std::fs::read_dir(&img)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().any(|n| n.starts_with("mountpoints-")),
            "{names:?}"
        );
        assert_eq!(
            names.iter().filter(|n| n.starts_with("tmpfs-dev-")).count(),
            2,
            "{names:?}"
        );
        let restored = restore_detached(
            &img,
            &[
                "--root",
                root.to_str().unwrap(),
                "--external",
                "mnt[usr]:/usr",
                "--external",
                &format!("mnt[bins]:{bins}"),
            ],
        );
        v = Spawned::guard(restored);
        pid = restored;
        assert_counts_on(pid, at_dump);
        assert_eq!(table(pid), want, "round {round}: the mount table differs");
        let r = format!("/proc/{pid}/root");
        assert_eq!(
            std::fs::read_to_string(format!("{r}/data/hello")).unwrap(),
            "hello\n"
        );
        assert_eq!(
            std::fs::read_to_string(format!("{r}/slave/f")).unwrap(),
            "sub\n"
        );
        let e = std::fs::write(format!("{r}/ro/x"), "x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS));
        assert_eq!(
            std::fs::read_to_string("/proc/self/mountinfo").unwrap(),
            ours,
            "criu's namespace changed"
        );
        assert_eq!(yards(), yards_before, "a mount yard was left in /tmp");
    }
    drop(v);
}

#[test]
fn a_host_bind_not_named_external_is_refused_and_the_tree_runs_on() {
    if !is_root() {
        eprintln!("skipped: mount namespaces need root");
        return;
    }
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let v = spawn_in_ns(d.path(), &d.path().join("rootfs"));
    let img = d.path().join("img");
    std::fs::create_dir_all(&img).unwrap();
    let o = criu_dump(
        v.pid(),
        &img,
        &["-o", "dump.log", "--external", "mnt[/usr]:usr"],
    );
    assert!(!o.status.success(), "a host bind was dumped");
    let log = std::fs::read_to_string(img.join("dump.log")).unwrap_or_default();
    let text = format!("{}{log}", String::from_utf8_lossy(&o.stderr));
    assert!(
        text.contains("mount") && text.contains("at /t") && text.contains("--external mnt[/t]:KEY"),
        "the refusal does not name the mount: {text}"
    );
    assert!(pid_exists(v.pid()), "the victim died");
    let n = counts(v.pid()).len();
    std::thread::sleep(Duration::from_millis(100));
    assert!(counts(v.pid()).len() > n, "the victim stopped counting");
}
