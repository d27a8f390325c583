//! `--join-ns` for pid, mount and user namespaces: a counter dumped in criu's namespaces comes
//! back in a namespace the test made (held by an `unshare` helper), and counts on there.
//!
//! - pid: criu enters the namespace and forks the root into it (the root keeps its old pid
//!   inside it); a tree whose root was the init of its namespace is refused by name.
//! - mnt, user: the root enters them itself before it does anything else (user with
//!   `,UID,GID` ids taken there).

use std::path::Path;
use std::time::Duration;

use compel_criu_tests::counting::{counts, counts_on};
use compel_criu_tests::{
    Scratch, Spawned, become_subreaper, children_of, criu, criu_victim, dump_and_reap, ns_ino,
    restore_detached, skip_if_not_root, spawn_counter, spawn_ns_holder, test_lock,
};

/// The `NSpid` of `pid` (as we see it first).
fn nspid(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// `unshare --pid --fork sleep 600`: the guard of unshare and of the sleep, the init of the new
/// pid namespace (killing it ends every task in the namespace).
fn pid_ns_holder() -> (Spawned, Spawned) {
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--pid", "--fork", "sleep", "600"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let unshare = Spawned::from_child(cmd.spawn().expect("start unshare"));
    let end = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(&init) = children_of(unshare.pid()).first()
            && nspid(init).last() == Some(&1)
        {
            return (Spawned::guard(init), unshare);
        }
        assert!(
            std::time::Instant::now() < end,
            "unshare --pid did not get going"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn join_ns_pid_forks_the_tree_into_the_given_pid_namespace() {
    skip_if_not_root!("join_ns_pid_forks_the_tree_into_the_given_pid_namespace");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let d = dir.root().to_path_buf();
    let mut v = spawn_counter(&criu_victim("counter"), &d, None);
    let pid = v.pid();
    dump_and_reap(&mut v, &dir.img, &[]);
    let at_dump = counts(&d);
    let (init, _unshare) = pid_ns_holder();
    let join = format!("pid:{}", init.pid());
    let root = restore_detached(&dir.img, &["--join-ns", &join]);
    // In the namespace the restored task is orphaned to its init: killing that ends it.
    let _r = Spawned::guard(root);
    assert_eq!(
        ns_ino(root, "pid"),
        ns_ino(init.pid(), "pid"),
        "the restored task's pid namespace"
    );
    let got = nspid(root);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1], pid, "its pid inside the namespace is the old one");
    counts_on(&d, at_dump);
    drop(init);
}

#[test]
fn join_ns_pid_refuses_a_tree_whose_root_was_an_init() {
    skip_if_not_root!("join_ns_pid_refuses_a_tree_whose_root_was_an_init");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let d = dir.root().to_path_buf();
    // The counter as the init of a pid namespace of its own.
    let (out, ready, log) = (d.join("count"), d.join("ready"), d.join("victim.log"));
    let mut outer = Spawned::spawn(
        "unshare",
        &[
            "--pid",
            "--fork",
            &criu_victim("counter"),
            out.to_str().unwrap(),
            ready.to_str().unwrap(),
        ],
        &log,
        None,
    );
    compel_criu_tests::wait_file(&ready, Duration::from_secs(10));
    let counter = children_of(outer.pid())[0];
    let _v = Spawned::guard(counter);
    std::fs::create_dir_all(&dir.img).unwrap();
    compel_criu_tests::assert_ok_log(
        &compel_criu_tests::criu_dump(counter, &dir.img, &["-o", "dump.log"]),
        "criu dump",
        &dir.img.join("dump.log"),
    );
    // The init gone, unshare ends.
    assert!(outer.wait(Duration::from_secs(5)).is_some());
    let (init, _unshare) = pid_ns_holder();
    let join = format!("pid:{}", init.pid());
    let o = criu(&[
        "restore",
        "-D",
        dir.img.to_str().unwrap(),
        "-d",
        "--join-ns",
        &join,
    ]);
    assert!(
        !o.status.success(),
        "restored an init into a busy namespace"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("the tree's root was the init (pid 1)"),
        "{err}"
    );
    assert_eq!(children_of(init.pid()), Vec::<i32>::new());
}

#[test]
fn join_ns_mnt_puts_the_tree_into_the_given_mount_namespace() {
    skip_if_not_root!("join_ns_mnt_puts_the_tree_into_the_given_mount_namespace");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let d = dir.root().to_path_buf();
    let mut v = spawn_counter(&criu_victim("counter"), &d, None);
    let pid = v.pid();
    dump_and_reap(&mut v, &dir.img, &[]);
    let at_dump = counts(&d);
    let holder = spawn_ns_holder(&["--mount"]);
    let join = format!("mnt:/proc/{}/ns/mnt", holder.pid());
    let root = restore_detached(&dir.img, &["--join-ns", &join]);
    let _r = Spawned::guard(root);
    assert_eq!(root, pid);
    assert_eq!(
        ns_ino(root, "mnt"),
        ns_ino(holder.pid(), "mnt"),
        "the restored task's mount namespace"
    );
    assert_ne!(
        ns_ino(root, "mnt"),
        ns_ino(std::process::id() as i32, "mnt")
    );
    counts_on(&d, at_dump);
}

#[test]
fn join_ns_user_puts_the_tree_into_the_given_user_namespace() {
    skip_if_not_root!("join_ns_user_puts_the_tree_into_the_given_user_namespace");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let d = dir.root().to_path_buf();
    let mut v = spawn_counter(&criu_victim("counter"), &d, None);
    let pid = v.pid();
    dump_and_reap(&mut v, &dir.img, &[]);
    let at_dump = counts(&d);
    // A user namespace mapping every id to itself (written by us, so setgroups stays allowed).
    let holder = spawn_ns_holder(&["--user"]);
    for m in ["uid_map", "gid_map"] {
        std::fs::write(format!("/proc/{}/{m}", holder.pid()), "0 0 4294967295\n").unwrap();
    }
    let join = format!("user:{},0,0", holder.pid());
    let root = restore_detached(&dir.img, &["--join-ns", &join]);
    let _r = Spawned::guard(root);
    assert_eq!(root, pid);
    assert_eq!(
        ns_ino(root, "user"),
        ns_ino(holder.pid(), "user"),
        "the restored task's user namespace"
    );
    counts_on(&d, at_dump);
}

/// `--join-ns user:OURPID` names criu's own user namespace: nothing to enter (as CRIU), the tree
/// comes back as usual; a namespace file of the wrong kind is refused by name.
#[test]
fn join_ns_user_of_criu_itself_and_a_wrong_kind() {
    skip_if_not_root!("join_ns_user_of_criu_itself_and_a_wrong_kind");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let d = dir.root().to_path_buf();
    let mut v = spawn_counter(&criu_victim("counter"), &d, None);
    let pid = v.pid();
    dump_and_reap(&mut v, &dir.img, &[]);
    let at_dump = counts(&d);
    let o = criu(&[
        "restore",
        "-D",
        dir.img.to_str().unwrap(),
        "-d",
        "--join-ns",
        "mnt:/proc/self/ns/pid",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("is not a mnt namespace"), "{err}");
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    let ours = format!("user:{}", std::process::id());
    let root = restore_detached(&dir.img, &["--join-ns", &ours]);
    let _r = Spawned::guard(root);
    assert_eq!(
        ns_ino(root, "user"),
        ns_ino(std::process::id() as i32, "user")
    );
    counts_on(&d, at_dump);
}
