//! `criu dump` then `criu restore` of a process whose pipes hold unread data: the restored pipes
//! hold the same bytes in the same order (including a pipe grown past the default size), and an
//! empty pipe stays empty.

use std::path::Path;
use std::time::Duration;

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, dump_and_reap, restore_detached, test_lock, wait_file,
};

fn spawn_victim(out: &Path, ready: &Path, log: &Path) -> Spawned {
    Spawned::spawn(
        env!("CARGO_BIN_EXE_criu-victim-pipes-data"),
        &[out.to_str().unwrap(), ready.to_str().unwrap()],
        log,
        None,
    )
}

/// Without a dump the victim's own check passes (so a `bad` after restore is the restore's).
#[test]
fn pipe_victim_checks_pass_untouched() {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let (out, ready) = (d.path().join("out"), d.path().join("ready"));
    let v = spawn_victim(&out, &ready, &d.path().join("victim.log"));
    wait_file(&ready, Duration::from_secs(10));
    assert_eq!(ask_check(v.pid(), &out), "ok");
}

#[test]
fn pipe_data_survives_dump_and_restore() {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let (out, ready) = (d.path().join("out"), d.path().join("ready"));
    let mut v = spawn_victim(&out, &ready, &d.path().join("victim.log"));
    wait_file(&ready, Duration::from_secs(10));
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    assert!(
        img.join("pipes-data.img").exists(),
        "the dump wrote no pipe data"
    );
    let restored = restore_detached(&img, &[]);
    let r = Spawned::guard(restored);
    assert_eq!(restored, v.pid(), "restored with another pid");
    assert_eq!(ask_check(r.pid(), &out), "ok");
}
