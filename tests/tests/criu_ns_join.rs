//! `--join-ns` for network and cgroup namespaces, and an external network namespace
//! (`--external net[INO]:KEY` at dump, `--inherit-fd fd[N]:KEY` at restore), as criu(8): the
//! restored tree goes into the namespace given instead of one made from the images, and counts
//! on there. What criu cannot join is refused by name.

use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use compel_criu_tests::counting::{counts, counts_on, restore_with_fd};
use compel_criu_tests::{
    Scratch, Spawned, assert_ok_log, become_subreaper, criu, criu_victim, dump_and_reap, ns_ino,
    skip_if_not_root, spawn_counter, spawn_ns_holder, test_lock, wait_file,
};

/// `--join-ns net:PID --join-ns cgroup:FILE`: a counter dumped in criu's namespaces comes back
/// in the network and cgroup namespaces of another process, and counts on.
#[test]
fn join_ns_net_and_cgroup_put_the_tree_into_given_namespaces() {
    skip_if_not_root!("join_ns_net_and_cgroup_put_the_tree_into_given_namespaces");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let d = dir.root().to_path_buf();
    let mut v = spawn_counter(&criu_victim("counter"), &d, None);
    let pid = v.pid();
    dump_and_reap(&mut v, &dir.img, &[]);
    let at_dump = counts(&d);
    let holder = spawn_ns_holder(&["--net", "--cgroup"]);
    let net = format!("net:{}", holder.pid());
    let cg = format!("cgroup:/proc/{}/ns/cgroup", holder.pid());
    let root =
        compel_criu_tests::restore_detached(&dir.img, &["--join-ns", &net, "--join-ns", &cg]);
    let _r = Spawned::guard(root);
    assert_eq!(root, pid);
    for kind in ["net", "cgroup"] {
        assert_eq!(
            ns_ino(root, kind),
            ns_ino(holder.pid(), kind),
            "the restored task's {kind} namespace"
        );
    }
    assert_ne!(
        ns_ino(root, "net"),
        ns_ino(std::process::id() as i32, "net")
    );
    counts_on(&d, at_dump);
}

/// What criu cannot join is refused by name (an unknown kind, extra options for a kind other
/// than user), and nothing is restored. (pid, mnt and user are joined:
/// `tests/tests/criu_join_ns.rs`.)
#[test]
fn join_ns_refuses_unknown_kinds_and_extra_options_by_name() {
    skip_if_not_root!("join_ns_refuses_unknown_kinds_and_extra_options_by_name");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let d = dir.root().to_path_buf();
    let mut v = spawn_counter(&criu_victim("counter"), &d, None);
    let pid = v.pid();
    dump_and_reap(&mut v, &dir.img, &[]);
    for (spec, why) in [
        ("bogus:1", "unknown namespace kind \"bogus\""),
        ("uts:1,0,0", "extra options are for user namespaces"),
        ("user:1,x", "\"x\" is not an id"),
    ] {
        let o = criu(&[
            "restore",
            "-D",
            dir.img.to_str().unwrap(),
            "--join-ns",
            spec,
        ]);
        assert!(!o.status.success(), "--join-ns {spec} was accepted");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(why), "{err}");
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }
}

/// A counter in a network namespace of its own, dumped with `--external net[INO]:KEY`: only the
/// key is saved; the restore without the namespace is refused naming the key, and with
/// `--inherit-fd fd[N]:KEY` the counter comes back in that very namespace.
#[test]
fn external_net_namespace_comes_back_from_inherit_fd() {
    skip_if_not_root!("external_net_namespace_comes_back_from_inherit_fd");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let d = dir.root().to_path_buf();
    let (out, ready, log) = (d.join("count"), d.join("ready"), d.join("victim.log"));
    let mut v = Spawned::spawn(
        "unshare",
        &[
            "--net",
            &criu_victim("counter"),
            out.to_str().unwrap(),
            ready.to_str().unwrap(),
        ],
        &log,
        None,
    );
    wait_file(&ready, Duration::from_secs(10));
    let pid = v.pid();
    // The namespace outlives the dumped counter: the test holds it.
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
    let ino = ns.metadata().unwrap().ino();
    assert_ne!(ino, ns_ino(std::process::id() as i32, "net"));
    let ext = format!("net[{ino}]:extnet");
    dump_and_reap(&mut v, &dir.img, &["--external", &ext]);
    let at_dump = counts(&d);
    let ids = criu_images::ImageDir::new(&dir.img)
        .read_ids(pid as u32)
        .unwrap();
    let id = ids.net_ns_id.expect("a net namespace id");
    let e: Vec<criu_images::pb::NetnsEntry> = criu_images::read_all(
        dir.img.join(format!("netns-{id}.img")),
        criu_images::magic::NETNS,
    )
    .unwrap();
    assert_eq!(e.first().and_then(|e| e.ext_key.as_deref()), Some("extnet"));
    assert!(
        !dir.img.join(format!("netdev-{id}.img")).exists(),
        "the links of an external namespace were saved"
    );

    // Without the namespace: refused, naming the key.
    let o = criu(&["restore", "-D", dir.img.to_str().unwrap(), "-d"]);
    assert!(
        !o.status.success(),
        "restored without the external namespace"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("extnet"), "{err}");
    assert!(!Path::new(&format!("/proc/{pid}")).exists());

    let o = restore_with_fd(&dir.img, ns.as_raw_fd(), &["--inherit-fd", "fd[40]:extnet"]);
    assert_ok_log(&o, "criu restore", &dir.img.join("restore.log"));
    let root: i32 = std::fs::read_to_string(dir.img.join("restored.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _r = Spawned::guard(root);
    assert_eq!(root, pid);
    assert_eq!(ns_ino(root, "net"), ino, "the restored counter's namespace");
    counts_on(&d, at_dump);
}
