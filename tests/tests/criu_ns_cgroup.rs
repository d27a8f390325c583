//! Cgroup membership: a tree in a v2 cgroup the test made is dumped (`cgroup.img`, the cores'
//! `cg_set`) and restored into it; with `--manage-cgroups=none` a cgroup that is gone is
//! refused before any task exists, the default (`soft`) makes it again. The test's cgroup is
//! removed whatever happens; no other cgroup is touched.

use std::time::Duration;

use compel_criu_tests::cgroups::TestCgroups;
use compel_criu_tests::{
    Scratch, Spawned, become_subreaper, criu, criu_victim, dump_and_reap, pid_exists,
    ready_numbers, restore_and_check, skip_if_not_root, test_lock, wait_exit_timeout,
};

#[test]
fn cgroup_membership_comes_back() {
    skip_if_not_root!("cgroup_membership_comes_back");
    let _g = test_lock();
    become_subreaper();
    let Some(h) = TestCgroups::v2() else {
        return;
    };
    let mut cg = TestCgroups::new("nscore");
    let top = cg.make(h, "");
    let dir = Scratch::new();
    let procs = top.join("cgroup.procs");
    let (mut v, said) = dir.spawn_victim(
        &criu_victim("ns-cgroup"),
        &[
            dir.ready.to_str().unwrap(),
            procs.to_str().unwrap(),
            &cg.shown(""),
        ],
        None,
        Duration::from_secs(10),
    );
    let n = ready_numbers(&said, 1);
    let _child = Spawned::guard(n[1]);
    dump_and_reap(&mut v, &dir.img, &[]);
    let _ = wait_exit_timeout(n[1], Duration::from_secs(5));
    let d = criu_images::ImageDir::new(&dir.img);
    let set = d
        .read_core(n[0] as u32)
        .unwrap()
        .tc
        .unwrap()
        .cg_set
        .unwrap();
    let e: criu_images::pb::CgroupEntry =
        criu_images::read_single(dir.img.join("cgroup.img"), criu_images::magic::CGROUP).unwrap();
    let s = e.sets.iter().find(|s| s.id == set).unwrap();
    assert!(
        s.ctls
            .iter()
            .any(|m| m.name.is_empty() && m.path == cg.shown("")),
        "{s:?}"
    );
    // Gone: `none` (which needs it) refuses it before any task exists.
    cg.remove_all();
    let o = criu(&[
        "restore",
        "-D",
        dir.img.to_str().unwrap(),
        "-d",
        "--manage-cgroups=none",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "restore into a missing cgroup with none"
    );
    assert!(err.contains("does not exist"), "{err}");
    assert!(!pid_exists(n[0]) && !pid_exists(n[1]));
    assert!(!top.exists());
    // The default makes it again and puts the tree into it.
    restore_and_check(n[0], &dir.img, &dir.ready);
    drop(_child);
    assert!(top.exists());
}
