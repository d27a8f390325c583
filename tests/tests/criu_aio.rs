//! AIO contexts (`io_setup`): their ring is not dumped yet, so a dump of a process holding one
//! is refused by name, and the process runs on with its context working.

use compel_criu_tests::{
    ask_check, become_subreaper, criu_dump, criu_victim, skip_if_not_root, spawn_ready, test_lock,
};

#[test]
fn an_aio_ring_is_refused_by_name_and_the_process_runs_on() {
    skip_if_not_root!("an_aio_ring_is_refused_by_name_and_the_process_runs_on");
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let v = spawn_ready(&criu_victim("aio"), d.path(), &[]);
    assert_eq!(
        ask_check(v.pid(), &d.path().join("out")),
        "ok",
        "before the dump"
    );
    let img = d.path().join("img");
    std::fs::create_dir_all(&img).unwrap();
    let o = criu_dump(v.pid(), &img, &["-o", "dump.log"]);
    assert!(!o.status.success(), "an AIO ring was dumped");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("AIO ring (io_setup)"), "stderr: {err}");
    let _ = std::fs::remove_file(d.path().join("out"));
    assert_eq!(
        ask_check(v.pid(), &d.path().join("out")),
        "ok",
        "after the refused dump"
    );
}
