//! `criu dump` then `criu restore` of a counter whose root is root in a user namespace of its
//! own (uid 0 inside, 100000 outside) that also owns its mount, network, uts, ipc and pid
//! namespaces (`criu-victim-ns-userns-mnt`): a tmpfs, a bind of a subdirectory of it, proc,
//! `/usr` and the test binaries bound from the host (external mounts), a host name and an
//! address on the loopback, all made from inside the user namespace. The restore makes the
//! user namespace first with its maps and the other namespaces inside it; the counter counts
//! on and checks itself (maps, mount table modulo ids, host name, addresses, and that it may
//! still mount, add addresses and change its host name). Twice.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use compel_criu_tests::{
    Exit, Scratch, Spawned, become_subreaper, criu_victim, dump_and_reap, ready_numbers,
    restore_detached, skip_if_not_root, test_lock, wait_exit_timeout, wait_file,
};

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}

fn count(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/root/data/count"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits until the counter of `pid` is past `n`.
fn counts_past(pid: i32, n: u64) -> u64 {
    let end = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let c = count(pid);
        if c > n {
            return c;
        }
        assert!(
            std::time::Instant::now() < end,
            "the counter stays at {c} (not past {n})"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asks the counter to check itself and returns its verdict.
fn verdict(pid: i32) -> String {
    let file = PathBuf::from(format!("/proc/{pid}/root/data/verdict"));
    let _ = std::fs::remove_file(&file);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    wait_file(&file, Duration::from_secs(20)).trim().to_string()
}

fn make_root(root: &Path) {
    for d in ["usr", "t", "proc", "data", "bind", "old"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for l in ["bin", "sbin", "lib", "lib64"] {
        let _ = std::os::unix::fs::symlink(format!("usr/{l}"), root.join(l));
    }
}

#[test]
fn user_namespace_owning_mount_and_net_namespaces_comes_back() {
    skip_if_not_root!("user_namespace_owning_mount_and_net_namespaces_comes_back");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    // uid 100000 walks into the root and the test binaries.
    std::fs::set_permissions(dir.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = dir.path("root");
    make_root(&root);
    let bins = PathBuf::from(criu_victim("ns-userns-mnt"))
        .parent()
        .unwrap()
        .to_path_buf();
    let mut starter = Spawned::spawn(
        criu_victim("ns-userns-mnt"),
        &[
            "start",
            dir.ready.to_str().unwrap(),
            root.to_str().unwrap(),
            bins.to_str().unwrap(),
        ],
        &dir.path("victim.log"),
        None,
    );
    let log = || std::fs::read_to_string(dir.path("victim.log")).unwrap_or_default();
    match starter.wait(Duration::from_secs(30)) {
        Some(Exit::Code(0)) => {}
        Some(Exit::Code(3)) => {
            eprintln!("skipped: no user namespace here: {}", log());
            return;
        }
        other => panic!("the starter ended with {other:?}: {}", log()),
    }
    let said = wait_file(&dir.ready, Duration::from_secs(10));
    let mut pid = ready_numbers(&said, 1)[0];
    let mut v = Spawned::guard(pid);
    let maps: Vec<String> = ["uid_map", "gid_map"]
        .iter()
        .map(|f| std::fs::read_to_string(format!("/proc/{pid}/{f}")).unwrap())
        .collect();
    assert_eq!(words(&maps[0]), ["0", "100000", "65536"]);
    assert_eq!(verdict(pid), "check ok", "before any dump");
    let bins_s = bins.to_str().unwrap().to_string();
    for round in 0..2 {
        let img = dir.path(&format!("img{round}"));
        let before = counts_past(pid, 0);
        dump_and_reap(
            &mut v,
            &img,
            &["--external", "mnt[/usr]:usr", "--external", "mnt[/t]:bins"],
        );
        let d = criu_images::ImageDir::new(&img);
        let ids = d.read_ids(1).unwrap();
        for (what, id) in [
            ("userns", ids.user_ns_id),
            ("mountpoints", ids.mnt_ns_id),
            ("netns", ids.net_ns_id),
        ] {
            let id = id.unwrap();
            assert!(img.join(format!("{what}-{id}.img")).exists(), "{what}-{id}");
        }
        pid = restore_detached(
            &img,
            &[
                "--root",
                root.to_str().unwrap(),
                "--external",
                "mnt[usr]:/usr",
                "--external",
                &format!("mnt[bins]:{bins_s}"),
            ],
        );
        v = Spawned::guard(pid);
        let after = counts_past(pid, before);
        assert!(after > before, "round {round}: {before} -> {after}");
        for (f, was) in ["uid_map", "gid_map"].iter().zip(&maps) {
            let now = std::fs::read_to_string(format!("/proc/{pid}/{f}")).unwrap();
            assert_eq!(words(&now), words(was), "{f}");
        }
        let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let uid = st.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert_eq!(words(uid), ["Uid:", "100000", "100000", "100000", "100000"]);
        let ns = |p: &str, k: &str| std::fs::read_link(format!("/proc/{p}/ns/{k}")).unwrap();
        for k in ["user", "mnt", "net", "uts", "ipc", "pid"] {
            assert_ne!(ns(&pid.to_string(), k), ns("self", k), "{k}");
        }
        assert_eq!(verdict(pid), "check ok", "round {round}");
    }
    drop(v);
    let _ = wait_exit_timeout(pid, Duration::from_secs(1));
}
