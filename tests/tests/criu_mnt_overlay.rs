//! overlayfs in the tree's mount namespace: a counter whose namespace (root bound from a
//! directory and pivoted, `/usr` and the test binaries bound from the host) has a tmpfs at
//! `/data` and two overlays: `/ov`, mounted after the pivot with its lower layer on the root and
//! its upper and work directories on the tmpfs (paths of the namespace), and `/ov2`, mounted
//! before the pivot with its layers in directories of the host. The counter counts into
//! `/ov/count` (a file copied up) and reads from `/ov/base` (a file of the lower layer).
//! `criu dump` then `criu restore --root` twice: the count carries on, the mount table reads
//! the same modulo ids, what was written through each overlay is still there, and the
//! counter's files are open on the restored overlay mount (their `mnt_id`). A layer that is
//! gone at dump time is refused by name and the tree runs on.

use std::path::{Path, PathBuf};
use std::time::Duration;

use compel_criu_tests::mounts::table;
use compel_criu_tests::{
    Scratch, Spawned, become_subreaper, criu, dump_and_reap, restore_detached, skip_if_not_root,
    test_lock, wait_file,
};

fn counter_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_criu-victim-counter"))
}

/// Starts the counter in its namespace; `host` holds the layers of `/ov2`.
fn spawn(d: &Path, root: &Path, host: &Path) -> Spawned {
    let bins = counter_bin().parent().unwrap().to_path_buf();
    for dir in ["usr", "t", "proc", "data", "ov", "ov2", "lower", "old"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    for l in ["bin", "sbin", "lib", "lib64"] {
        let _ = std::os::unix::fs::symlink(format!("usr/{l}"), root.join(l));
    }
    std::fs::write(root.join("lower/base"), "base\n").unwrap();
    for dir in ["hl", "hu", "hw"] {
        std::fs::create_dir_all(host.join(dir)).unwrap();
    }
    std::fs::write(host.join("hl/hfile"), "host lower\n").unwrap();
    let script = r#"set -e
R="$1"; B="$2"; H="$3"
mount --bind "$R" "$R"
mount --bind /usr "$R/usr"
mount --bind "$B" "$R/t"
mount -t proc proc "$R/proc"
mount -t tmpfs -o size=1m data "$R/data"
mount -t overlay ov2 -o "lowerdir=$H/hl,upperdir=$H/hu,workdir=$H/hw" "$R/ov2"
echo upper > "$R/ov2/hup"
cd "$R"; pivot_root . old; umount -l /old
mkdir /data/up /data/work
mount -t overlay ov -o lowerdir=/lower,upperdir=/data/up,workdir=/data/work /ov
echo top > /ov/top
exec /t/criu-victim-counter /ov/count /ov/ready </ov/base >/data/log 2>&1
"#;
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
            host.to_str().unwrap(),
        ],
        &d.join("victim.log"),
        None,
    );
    let ready = PathBuf::from(format!("/proc/{}/root/ov/ready", v.pid()));
    wait_file(&ready, Duration::from_secs(10));
    v
}

fn counts(pid: i32) -> Vec<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/root/ov/count"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect()
}

/// The mount id of the overlay at `/ov` in `pid`'s namespace, and those its descriptors 0
/// and the count's are open on.
fn mnt_ids(pid: i32) -> (String, Vec<String>) {
    let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let ov = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/ov"))
        .and_then(|l| l.split(' ').next())
        .unwrap()
        .to_string();
    let mut fds = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        let link = std::fs::read_link(e.path()).unwrap_or_default();
        if link.starts_with("/ov/") {
            let fdinfo = std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                e.file_name().to_string_lossy()
            ))
            .unwrap();
            let m = fdinfo
                .lines()
                .find_map(|l| l.strip_prefix("mnt_id:"))
                .unwrap()
                .trim()
                .to_string();
            fds.push(m);
        }
    }
    (ov, fds)
}

fn check(pid: i32, before: &std::collections::BTreeMap<String, String>, at_dump: usize) {
    std::thread::sleep(Duration::from_millis(300));
    let c = counts(pid);
    assert!(
        c.len() > at_dump + 10,
        "the count stopped: {at_dump} -> {}",
        c.len()
    );
    for (i, n) in c.iter().enumerate() {
        assert_eq!(*n, i as u64 + 1, "the count is broken at line {}", i + 1);
    }
    assert_eq!(&table(pid), before, "the mount table changed");
    let rd = |p: &str| std::fs::read_to_string(format!("/proc/{pid}/root{p}")).unwrap();
    assert_eq!(rd("/ov/top"), "top\n");
    assert_eq!(rd("/ov/base"), "base\n");
    assert_eq!(rd("/ov2/hup"), "upper\n");
    assert_eq!(rd("/ov2/hfile"), "host lower\n");
    // The overlay keeps its layers as the namespace's paths.
    let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/ov"))
        .unwrap();
    assert!(
        line.contains("lowerdir=/lower,upperdir=/data/up,workdir=/data/work"),
        "{line}"
    );
    let (ov, fds) = mnt_ids(pid);
    assert_eq!(fds.len(), 2, "descriptors on /ov: {fds:?}");
    assert!(
        fds.iter().all(|m| *m == ov),
        "open on {fds:?}, the overlay is {ov}"
    );
}

#[test]
fn overlay_mounts_come_back_with_their_layers_twice() {
    skip_if_not_root!("overlay_mounts_come_back_with_their_layers_twice");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let root = dir.path("root");
    let host = dir.path("host");
    let mut v = spawn(dir.root(), &root, &host);
    let before = table(v.pid());
    assert!(
        before.get("/ov").is_some_and(|t| t.starts_with("overlay")),
        "{before:?}"
    );
    let bins = counter_bin()
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    for round in 0..2 {
        let img = dir.path(&format!("img{round}"));
        let at_dump = counts(v.pid()).len();
        dump_and_reap(
            &mut v,
            &img,
            &["--external", "mnt[/usr]:usr", "--external", "mnt[/t]:bins"],
        );
        let pid = restore_detached(
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
        v = Spawned::guard(pid);
        check(pid, &before, at_dump);
    }
    drop(v);
}

#[test]
fn an_overlay_whose_layer_is_gone_is_refused_and_runs_on() {
    skip_if_not_root!("an_overlay_whose_layer_is_gone_is_refused_and_runs_on");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let root = dir.path("root");
    let host = dir.path("host");
    let v = spawn(dir.root(), &root, &host);
    // The host's lower layer goes away under the mounted overlay.
    std::fs::rename(host.join("hl"), host.join("gone")).unwrap();
    let img = dir.path("img");
    std::fs::create_dir_all(&img).unwrap();
    let o = criu(&[
        "dump",
        "-t",
        &v.pid().to_string(),
        "-D",
        img.to_str().unwrap(),
        "-o",
        "dump.log",
        "--external",
        "mnt[/usr]:usr",
        "--external",
        "mnt[/t]:bins",
    ]);
    assert!(!o.status.success(), "the dump succeeded");
    let log = std::fs::read_to_string(img.join("dump.log")).unwrap_or_default();
    assert!(
        log.contains("overlay mount") && log.contains("/hl is neither in the mount namespace"),
        "{log}"
    );
    let n = counts(v.pid()).len();
    std::thread::sleep(Duration::from_millis(200));
    assert!(counts(v.pid()).len() > n, "the counter stopped");
    drop(v);
}
