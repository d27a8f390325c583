//! `criu dump` then `criu restore` of a tree in a UTS namespace of its own: the namespace is
//! dumped once (`utsns-ID.img`, the tasks' ids name it) and made again before the tree, which
//! finds its host and domain name, and its child in the same namespace.

use std::time::Duration;

use compel_criu_tests::{
    Scratch, Spawned, become_subreaper, criu_victim, dump_and_reap, ready_numbers,
    restore_and_check, skip_if_not_root, spawn_uts_holder, test_lock, uts_ns, wait_exit_timeout,
};

#[test]
fn uts_namespace_comes_back_with_its_names() {
    skip_if_not_root!("uts_namespace_comes_back_with_its_names");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let outer = uts_ns(std::process::id() as i32).to_string();
    let (mut v, said) = dir.spawn_victim(
        &criu_victim("ns-uts"),
        &[
            dir.ready.to_str().unwrap(),
            "crtest-uts",
            "crtest.domain",
            &outer,
        ],
        None,
        Duration::from_secs(10),
    );
    let pids = ready_numbers(&said, 1);
    assert_ne!(uts_ns(pids[0]), uts_ns(std::process::id() as i32));
    // The child (the dumped one, then the restored one) is killed and reaped whatever happens.
    let _child = Spawned::guard(pids[1]);
    dump_and_reap(&mut v, &dir.img, &[]);
    // The child, killed by the dump, came to us (a subreaper): reap it to free its pid.
    let _ = wait_exit_timeout(pids[1], Duration::from_secs(5));
    let d = criu_images::ImageDir::new(&dir.img);
    let ids = d.read_ids(pids[0] as u32).unwrap();
    let child_ids = d.read_ids(pids[1] as u32).unwrap();
    let inv = d.read_inventory().unwrap();
    let id = ids.uts_ns_id.unwrap();
    assert_ne!(
        Some(id),
        inv.root_ids.unwrap().uts_ns_id,
        "criu's own uts id"
    );
    assert_eq!(child_ids.uts_ns_id, Some(id));
    let e: criu_images::pb::UtsnsEntry = criu_images::read_single(
        dir.img.join(format!("utsns-{id}.img")),
        criu_images::magic::UTSNS,
    )
    .unwrap();
    assert_eq!(
        (e.nodename.as_str(), e.domainname.as_str()),
        ("crtest-uts", "crtest.domain")
    );
    restore_and_check(pids[0], &dir.img, &dir.ready);
}

/// `--join-ns uts:PID`: the restored tree goes into the given namespace instead of a new one.
#[test]
fn join_ns_puts_the_tree_into_a_given_uts_namespace() {
    skip_if_not_root!("join_ns_puts_the_tree_into_a_given_uts_namespace");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let outer = uts_ns(std::process::id() as i32).to_string();
    let (mut v, said) = dir.spawn_victim(
        &criu_victim("ns-uts"),
        &[
            dir.ready.to_str().unwrap(),
            "crtest-uts",
            "crtest.domain",
            &outer,
        ],
        None,
        Duration::from_secs(10),
    );
    let pids = ready_numbers(&said, 1);
    let _child = Spawned::guard(pids[1]);
    dump_and_reap(&mut v, &dir.img, &[]);
    let _ = wait_exit_timeout(pids[1], Duration::from_secs(5));
    // A namespace to join, held by a sleeper.
    let holder = spawn_uts_holder();
    let join = format!("uts:{}", holder.pid());
    let root = compel_criu_tests::restore_detached(&dir.img, &["--join-ns", &join]);
    let _r = Spawned::guard(root);
    assert_eq!(
        uts_ns(root),
        uts_ns(holder.pid()),
        "the root's uts namespace"
    );
    assert_eq!(
        uts_ns(pids[1]),
        uts_ns(holder.pid()),
        "the child's uts namespace"
    );
    // A kind it cannot join is refused by name.
    let o = compel_criu_tests::criu(&[
        "restore",
        "-D",
        dir.img.to_str().unwrap(),
        "--join-ns",
        "bogus:1",
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("unknown namespace kind \"bogus\""),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
