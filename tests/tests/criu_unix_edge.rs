//! `criu dump` then `criu restore` of unix socket states at the edges: a filter locked with
//! `SO_LOCK_FILTER`, and a datagram sender whose receiver was closed (its next send fails with
//! ECONNREFUSED, then ENOTCONN). The victim checks each after the restore.

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, criu_victim, dump_and_reap, restore_detached,
    skip_if_not_root, spawn_ready_in, test_lock,
};

#[test]
fn unix_edge_victim_checks_pass_untouched() {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let v = spawn_ready_in(&criu_victim("unix-edge"), d.path(), "work", &[]);
    assert_eq!(ask_check(v.pid(), &d.path().join("out")), "check ok");
}

#[test]
fn locked_filter_and_gone_receiver_come_back() {
    skip_if_not_root!("locked_filter_and_gone_receiver_come_back");
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let mut v = spawn_ready_in(&criu_victim("unix-edge"), d.path(), "work", &[]);
    let pid = v.pid();
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    let r = restore_detached(&img, &[]);
    let _rv = Spawned::guard(r);
    assert_eq!(r, pid);
    assert_eq!(ask_check(r, &d.path().join("out")), "check ok");
}
