//! A counter in a mount namespace of its own, made like a container's: a root bound from a
//! directory, `/usr` and the test binaries bound from the host (external mounts), proc, a tmpfs
//! holding the counter's output, shared between two places, with a slave bind of a subtree, a
//! read-only bind and an unbindable tmpfs, the root pivoted. `criu dump` saves the table and
//! the tmpfs content; `criu restore --root` rebuilds it in a new namespace: the count carries
//! on, the mount table reads the same modulo ids, the propagation is the same, and criu's own
//! namespace is untouched. Twice. A host bind not named external is refused by name and the
//! counter runs on.

use std::path::PathBuf;
use std::time::Duration;

use compel_criu_tests::mnt_ns::{assert_counts_on, counts, spawn_in_ns, table};
use compel_criu_tests::{
    Spawned, become_subreaper, criu_dump, dump_and_reap, is_root, pid_exists, restore_detached,
    test_lock,
};

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
