//! `criu dump` then `criu restore` of a tree in a cgroup namespace of its own, rooted at a v2
//! cgroup the test made (the tree lives in its `sub` directory): the root's set in
//! `cgroup.img` carries the namespace's root (`cgns_prefix`, as CRIU saves it), and the
//! restored tree is in a new cgroup namespace rooted there, so `/proc/self/cgroup` inside reads
//! `0::/sub` as before. The test's cgroups are removed whatever happens.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use compel_criu_tests::cgroups::TestCgroups;
use compel_criu_tests::{
    Scratch, Spawned, become_subreaper, criu_victim, dump_and_reap, ready_numbers,
    restore_and_check, skip_if_not_root, test_lock, wait_exit_timeout,
};

#[test]
fn cgroup_namespace_reads_the_same_after_restore() {
    skip_if_not_root!("cgroup_namespace_reads_the_same_after_restore");
    let _g = test_lock();
    become_subreaper();
    let Some(h) = TestCgroups::v2() else {
        return;
    };
    let mut cg = TestCgroups::new("cgns");
    let top = cg.make(h, "");
    let sub = cg.make(h, "sub");
    let outer = std::fs::metadata("/proc/self/ns/cgroup")
        .unwrap()
        .ino()
        .to_string();
    let dir = Scratch::new();
    let (mut v, said) = dir.spawn_victim(
        &criu_victim("ns-cgroupns"),
        &[dir.ready.to_str().unwrap(), top.to_str().unwrap(), &outer],
        None,
        Duration::from_secs(10),
    );
    let n = ready_numbers(&said, 1);
    let child = Spawned::guard(n[1]);
    dump_and_reap(&mut v, &dir.img, &[]);
    let _ = wait_exit_timeout(n[1], Duration::from_secs(5));
    let d = criu_images::ImageDir::new(&dir.img);
    let ids = d.read_ids(n[0] as u32).unwrap();
    let inv = d.read_inventory().unwrap().root_ids.unwrap();
    assert_ne!(
        ids.cgroup_ns_id, inv.cgroup_ns_id,
        "criu's own cgroup namespace"
    );
    let set_id = d
        .read_core(n[0] as u32)
        .unwrap()
        .tc
        .unwrap()
        .cg_set
        .unwrap();
    let entry: criu_images::pb::CgroupEntry =
        criu_images::read_single(dir.img.join("cgroup.img"), criu_images::magic::CGROUP).unwrap();
    let set = entry.sets.iter().find(|s| s.id == set_id).unwrap();
    let v2 = set.ctls.iter().find(|m| m.name.is_empty()).unwrap();
    assert_eq!(v2.path, cg.shown("sub"));
    assert_eq!(v2.cgns_prefix, Some(cg.shown("").len() as u32), "{v2:?}");
    restore_and_check(n[0], &dir.img, &dir.ready);
    // The restored child is killed and reaped, then the cgroups are removed.
    drop(child);
    cg.remove_all();
    assert!(!sub.exists(), "the test's sub-cgroup is left");
}
