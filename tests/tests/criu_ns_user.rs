//! `criu dump` then `criu restore` of a tree whose root is root in a user namespace of its own
//! (uid 0 inside, 100000 outside) with pid and uts namespaces it owns: `userns-ID.img` holds
//! the maps, the cores the ids inside, and the tree comes back in a new user namespace with
//! the same maps, ids inside and outside, and a host name it may still change.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use compel_criu_tests::{
    Exit, Scratch, Spawned, assert_ok_log, become_subreaper, criu, criu_victim, dump_and_reap,
    ready_numbers, restore_detached, skip_if_not_root, test_lock, wait_exit_timeout, wait_file,
};

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}

fn ids_line(pid: i32, key: &str) -> Vec<String> {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    words(st.lines().find(|l| l.starts_with(key)).unwrap())
}

#[test]
fn user_namespace_tree_comes_back_with_its_maps_and_ids() {
    skip_if_not_root!("user_namespace_tree_comes_back_with_its_maps_and_ids");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    // The victim writes its verdicts as uid 100000.
    std::fs::set_permissions(dir.root(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut starter = Spawned::spawn(
        criu_victim("ns-user"),
        &[dir.ready.to_str().unwrap()],
        &dir.path("victim.log"),
        None,
    );
    let log = || std::fs::read_to_string(dir.path("victim.log")).unwrap_or_default();
    match starter.wait(Duration::from_secs(10)) {
        Some(Exit::Code(0)) => {}
        Some(Exit::Code(3)) => {
            eprintln!("skipped: no user namespace here: {}", log());
            return;
        }
        other => panic!("the starter ended with {other:?}: {}", log()),
    }
    let said = wait_file(&dir.ready, Duration::from_secs(10));
    let init = ready_numbers(&said, 1)[0];
    let mut v = Spawned::guard(init);
    let maps: Vec<String> = ["uid_map", "gid_map"]
        .iter()
        .map(|f| std::fs::read_to_string(format!("/proc/{init}/{f}")).unwrap())
        .collect();
    assert_eq!(words(&maps[0]), ["0", "100000", "65536"]);
    assert_eq!(ids_line(init, "Uid:")[1], "100000");
    dump_and_reap(&mut v, &dir.img, &[]);
    let d = criu_images::ImageDir::new(&dir.img);
    let inv = d.read_inventory().unwrap().root_ids.unwrap();
    let ids = d.read_ids(1).unwrap();
    let user = ids.user_ns_id.unwrap();
    assert_ne!(Some(user), inv.user_ns_id, "criu's own user namespace");
    assert!(dir.img.join(format!("userns-{user}.img")).exists());
    // The cores hold the ids inside (CRIU's convention).
    for (pid, want) in [(1, 0), (2, 1000)] {
        let core = d.read_core(pid).unwrap();
        let c = core.thread_core.unwrap().creds.unwrap();
        assert_eq!(
            (c.uid, c.euid, c.gid, c.egid),
            (want, want, want, want),
            "pid {pid}"
        );
    }
    let root = restore_detached(&dir.img, &[]);
    // The restored init came to us (a subreaper) when criu exited: killed and reaped on drop.
    let r = Spawned::guard(root);
    for (f, was) in ["uid_map", "gid_map"].iter().zip(&maps) {
        let now = std::fs::read_to_string(format!("/proc/{root}/{f}")).unwrap();
        assert_eq!(words(&now), words(was), "{f}");
    }
    assert_eq!(
        ids_line(root, "Uid:"),
        ["Uid:", "100000", "100000", "100000", "100000"]
    );
    assert_eq!(
        ids_line(root, "Gid:"),
        ["Gid:", "100000", "100000", "100000", "100000"]
    );
    let ns = |p: i32, k: &str| std::fs::read_link(format!("/proc/{p}/ns/{k}")).unwrap();
    assert_ne!(ns(root, "user"), ns(std::process::id() as i32, "user"));
    let check = dir.ready.with_extension("2");
    let _ = std::fs::remove_file(&check);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(root),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    let verdict = wait_file(&check, Duration::from_secs(20));
    assert_eq!(verdict.trim(), "check ok");
    drop(r);
    let _ = wait_exit_timeout(root, Duration::from_secs(1));
}

/// Starts `unshare ARGS sleep 600` and waits until it is in a user namespace of its own.
fn start_unshared(dir: &Scratch, args: &[&str]) -> Option<Spawned> {
    let mut all = args.to_vec();
    all.extend(["sleep", "600"]);
    let v = Spawned::spawn("unshare", &all, &dir.path("unshare.log"), None);
    let ours = std::fs::read_link("/proc/self/ns/user").unwrap();
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < end {
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", v.pid())).unwrap_or_default();
        let theirs = std::fs::read_link(format!("/proc/{}/ns/user", v.pid())).ok();
        if comm.trim() == "sleep" && theirs.as_ref() != Some(&ours) {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!(
        "skipped: unshare {args:?} did not start: {}",
        std::fs::read_to_string(dir.path("unshare.log")).unwrap_or_default()
    );
    None
}

/// A single process in a user namespace of its own (criu's pid namespace) comes back with its
/// maps; images whose map the kernel would not take fail the restore by name before any task
/// exists.
#[test]
fn lone_user_namespace_process_comes_back_and_a_bad_map_is_refused() {
    skip_if_not_root!("lone_user_namespace_process_comes_back_and_a_bad_map_is_refused");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let Some(mut v) = start_unshared(&dir, &["--user", "--map-root-user"]) else {
        return;
    };
    let pid = v.pid();
    let map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    dump_and_reap(&mut v, &dir.img, &[]);
    let restore = |log: &str| {
        criu(&[
            "restore",
            "-D",
            dir.img.to_str().unwrap(),
            "-o",
            log,
            "-v4",
            "-d",
        ])
    };
    let o = restore("restore.log");
    assert_ok_log(&o, "criu restore", &dir.img.join("restore.log"));
    let r = Spawned::guard(pid);
    let now = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    assert_eq!(words(&now), words(&map));
    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/user")).unwrap();
    assert_ne!(ns(&pid.to_string()), ns("self"));
    drop(r);
    let _ = wait_exit_timeout(pid, Duration::from_secs(1));
    // A map line of no ids.
    let d = criu_images::ImageDir::new(&dir.img);
    let id = d.read_ids(pid as u32).unwrap().user_ns_id.unwrap();
    let file = dir.img.join(format!("userns-{id}.img"));
    let mut e: criu_images::pb::UsernsEntry =
        criu_images::read_single(&file, criu_images::magic::USERNS).unwrap();
    e.uid_map[0].count = 0;
    criu_images::write_all(&file, criu_images::magic::USERNS, [&e]).unwrap();
    let o = restore("restore-bad.log");
    assert!(!o.status.success(), "the restore succeeded");
    let log = std::fs::read_to_string(dir.img.join("restore-bad.log")).unwrap_or_default();
    assert!(log.contains("out of range"), "{log}");
    assert!(!log.contains("root created"), "{log}");
    assert!(!compel_criu_tests::pid_exists(pid));
}
