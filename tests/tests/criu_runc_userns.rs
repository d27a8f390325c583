//! runc with a user namespace: the busybox counter with runc's default namespaces plus `user`
//! (`linux.uidMappings`/`gidMappings`: 0 inside is 100000 outside, 65536 ids), checkpointed
//! with `runc checkpoint --criu OURS` and restored with `runc restore --criu OURS -d`, twice:
//! the count carries on unbroken, `runc state` says running, the restored init is pid 1 of its
//! pid namespace and root inside a user namespace with the same maps (uid 100000 outside),
//! which owns its mount and network namespaces. The container, its cgroups and mounts are
//! deleted whatever happens (the shared helper's drop), and criu leaves no mount yard.

use std::os::unix::fs::PermissionsExt;

use compel_criu_tests::runc::{COUNTER, Container, runc_usable, yards};
use compel_criu_tests::{become_subreaper, test_lock};

const MAP: &str = "0 100000 65536";

fn words(t: &str) -> Vec<String> {
    t.split_whitespace().map(str::to_string).collect()
}

/// Gives the container's root to uid and gid 100000 (root inside), as for any container with
/// a user namespace.
fn chown_tree(p: &std::path::Path) {
    std::os::unix::fs::lchown(p, Some(100000), Some(100000)).unwrap();
    if p.is_dir() && !p.is_symlink() {
        for e in std::fs::read_dir(p).unwrap() {
            chown_tree(&e.unwrap().path());
        }
    }
}

/// What the restored container's init looks like from here: its maps, its uid outside, and
/// whether its user namespace owns its mount and network namespaces.
fn check_init(pid: i32) {
    for f in ["uid_map", "gid_map"] {
        let m = std::fs::read_to_string(format!("/proc/{pid}/{f}")).unwrap();
        assert_eq!(words(&m), words(MAP), "{f} of {pid}");
    }
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = st.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(words(uid), ["Uid:", "100000", "100000", "100000", "100000"]);
    // NS_GET_USERNS: the user namespace owning a namespace.
    const NS_GET_USERNS: libc::c_ulong = 0xb701;
    let ino = |f: &std::fs::File| std::os::unix::fs::MetadataExt::ino(&f.metadata().unwrap());
    let user = std::fs::File::open(format!("/proc/{pid}/ns/user")).unwrap();
    for k in ["mnt", "net", "uts", "ipc"] {
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/{k}")).unwrap();
        // SAFETY: an ioctl with no argument on a namespace descriptor we own; it returns a new
        // descriptor, which we own.
        let fd = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&ns), NS_GET_USERNS) };
        assert!(fd >= 0, "NS_GET_USERNS of {k}");
        // SAFETY: fd is the new descriptor the ioctl returned.
        let owner = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        assert_eq!(ino(&owner), ino(&user), "the {k} namespace's owner");
    }
}

#[test]
fn runc_container_with_a_user_namespace_twice() {
    if !runc_usable() {
        return;
    }
    let _g = test_lock();
    become_subreaper();
    let c = Container::new(None, COUNTER, &[], |v| {
        if let Some(ns) = v["linux"]["namespaces"].as_array_mut() {
            ns.push(serde_json::json!({"type": "user"}));
        }
        let map = serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        v["linux"]["uidMappings"] = map.clone();
        v["linux"]["gidMappings"] = map;
    });
    // uid 100000 walks to the root and owns it.
    std::fs::set_permissions(c.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    chown_tree(&c.bundle().join("rootfs"));
    let before = yards();
    c.run();
    check_init(c.state().1);
    for round in 0..2 {
        c.round_trip(round, &[], &[]);
        check_init(c.state().1);
    }
    assert_eq!(yards(), before, "a mount yard was left in /tmp");
    drop(c);
}
