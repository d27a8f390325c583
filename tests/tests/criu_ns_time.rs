//! `criu dump` then `criu restore` of a tree in a time namespace of its own (clocks ten days
//! ahead): `timens-ID.img` holds the namespace's clocks, and the restored tree's clocks go on
//! from there, in a new namespace it shares.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use compel_criu_tests::{
    Scratch, Spawned, become_subreaper, criu_victim, dump_and_reap, ready_numbers,
    restore_and_check, skip_if_not_root, test_lock, wait_exit_timeout,
};

#[test]
fn time_namespace_clocks_go_on_after_restore() {
    skip_if_not_root!("time_namespace_clocks_go_on_after_restore");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let outer = std::fs::metadata("/proc/self/ns/time")
        .unwrap()
        .ino()
        .to_string();
    let mut starter = Spawned::spawn(
        criu_victim("ns-time"),
        &[dir.ready.to_str().unwrap(), &outer],
        &dir.path("victim.log"),
        None,
    );
    match starter.wait(Duration::from_secs(10)) {
        Some(compel_criu_tests::Exit::Code(0)) => {}
        other => {
            let log = std::fs::read_to_string(dir.path("victim.log")).unwrap_or_default();
            if other == Some(compel_criu_tests::Exit::Code(3)) {
                eprintln!("skipped: no time namespace here: {log}");
                return;
            }
            panic!("the starter ended with {other:?}: {log}");
        }
    }
    let said = compel_criu_tests::wait_file(&dir.ready, Duration::from_secs(10));
    let n = ready_numbers(&said, 1);
    let mut v = Spawned::guard(n[0]);
    let _kid = Spawned::guard(n[1]);
    dump_and_reap(&mut v, &dir.img, &[]);
    let _ = wait_exit_timeout(n[1], Duration::from_secs(5));
    let d = criu_images::ImageDir::new(&dir.img);
    let id = d.read_ids(n[0] as u32).unwrap().time_ns_id.unwrap();
    assert_ne!(id, 5, "criu's own time namespace id");
    let e = d.read_timens(id).unwrap();
    assert!(
        e.monotonic.tv_sec as i64 >= n[2] as i64,
        "saved monotonic clock {} s, the victim's was {} s",
        e.monotonic.tv_sec,
        n[2]
    );
    restore_and_check(n[0], &dir.img, &dir.ready);
}
