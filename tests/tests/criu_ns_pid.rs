//! `criu dump` then `criu restore` of a tree in a pid namespace of its own, dumped from its
//! init: the images hold the pids inside the namespace (the root is 1), and the tree comes
//! back in a new pid namespace with the same pids and parents inside it.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use compel_criu_tests::{
    Exit, Scratch, Spawned, become_subreaper, criu_victim, dump_and_reap, ready_numbers,
    restore_detached, skip_if_not_root, test_lock, wait_exit_timeout, wait_file,
};

#[test]
fn pid_namespace_tree_comes_back_with_its_pids() {
    skip_if_not_root!("pid_namespace_tree_comes_back_with_its_pids");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let outer = std::fs::metadata("/proc/self/ns/pid")
        .unwrap()
        .ino()
        .to_string();
    let mut starter = Spawned::spawn(
        criu_victim("ns-pid"),
        &[dir.ready.to_str().unwrap(), &outer],
        &dir.path("victim.log"),
        None,
    );
    assert_eq!(
        starter.wait(Duration::from_secs(10)),
        Some(Exit::Code(0)),
        "{}",
        std::fs::read_to_string(dir.path("victim.log")).unwrap_or_default()
    );
    let said = wait_file(&dir.ready, Duration::from_secs(10));
    let init = ready_numbers(&said, 1)[0];
    let mut v = Spawned::guard(init);
    dump_and_reap(&mut v, &dir.img, &[]);
    let d = criu_images::ImageDir::new(&dir.img);
    let tree = d.read_pstree().unwrap();
    let mut pids: Vec<u32> = tree.iter().map(|t| t.pid).collect();
    pids.sort();
    assert_eq!(pids, [1, 2, 3, 4], "pids inside the namespace");
    assert_eq!(tree[0].sid, 1);
    assert!(dir.img.join("core-1.img").exists());
    let ids = d.read_ids(1).unwrap();
    assert_ne!(
        ids.pid_ns_id,
        d.read_inventory().unwrap().root_ids.unwrap().pid_ns_id
    );
    let root = restore_detached(&dir.img, &[]);
    // The restored init came to us (a subreaper) when criu exited: killed and reaped on drop.
    let _r = Spawned::guard(root);
    let st = std::fs::read_to_string(format!("/proc/{root}/status")).unwrap();
    let nspid = st.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert!(nspid.trim_end().ends_with("\t1"), "{nspid}");
    let check = dir.ready.with_extension("2");
    let _ = std::fs::remove_file(&check);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(root),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    let verdict = wait_file(&check, Duration::from_secs(20));
    assert_eq!(verdict.trim(), "check ok");
    drop(_r);
    let _ = wait_exit_timeout(root, Duration::from_secs(1));
}
