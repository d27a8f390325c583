//! `criu dump` then `criu restore` of a listening unix socket with connections queued and not
//! accepted, some holding data their client sent: `accept` after the restore returns them in
//! order, each with its data, and they work both ways. A dump that leaves the tree running
//! refuses them by name (reading the data means accepting the connection).

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, criu_dump, criu_victim, dump_and_reap, restore_detached,
    skip_if_not_root, spawn_ready, test_lock,
};

fn spawn(d: &std::path::Path) -> Spawned {
    let work = d.join("work");
    std::fs::create_dir_all(&work).unwrap();
    spawn_ready(
        &criu_victim("unix-inflight"),
        d,
        &[work.to_str().unwrap(), "backlog"],
    )
}

/// Without a dump the victim's own check passes (so a `bad` after restore is the restore's).
#[test]
fn backlog_victim_checks_pass_untouched() {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let v = spawn(d.path());
    assert_eq!(ask_check(v.pid(), &d.path().join("out")), "check ok");
}

#[test]
fn queued_connections_come_back_queued_with_their_data() {
    skip_if_not_root!("queued_connections_come_back_queued_with_their_data");
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let mut v = spawn(d.path());
    let pid = v.pid();
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    let r = restore_detached(&img, &[]);
    let _rv = Spawned::guard(r);
    assert_eq!(r, pid);
    assert_eq!(ask_check(r, &d.path().join("out")), "check ok");
}

#[test]
fn queued_data_is_refused_by_name_when_the_tree_runs_on() {
    skip_if_not_root!("queued_data_is_refused_by_name_when_the_tree_runs_on");
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let v = spawn(d.path());
    let img = d.path().join("img");
    std::fs::create_dir_all(&img).unwrap();
    let o = criu_dump(v.pid(), &img, &["-R", "-o", "dump.log"]);
    assert!(
        !o.status.success(),
        "a dump leaving the tree running read queued data"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("not accepted yet and holds unread data") && err.contains("l.sock"),
        "stderr: {err}"
    );
    assert_eq!(ask_check(v.pid(), &d.path().join("out")), "check ok");
}
