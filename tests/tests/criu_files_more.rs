//! `criu dump` then `criu restore` of the less common file kinds of issue 15: pidfds of a
//! reaped process and from `CLONE_PIDFD`, `O_PATH` descriptors of a symlink and a socket node,
//! a pty slave in exclusive mode. Each victim checks itself after the restore.

use std::path::Path;

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, children_of, criu_victim, dump_and_reap,
    restore_detached, spawn_ready_with, test_lock,
};

/// Spawns the victim in `mode`, optionally has it check itself untouched, dumps it (reaping
/// the children the dump killed), restores it and returns its verdict.
fn round_trip(d: &Path, mode: &str, check_before: bool) -> String {
    let out = d.join("out");
    let mut v = spawn_ready_with(&criu_victim("files-more"), d, &[mode], &[]);
    if check_before {
        assert_eq!(ask_check(v.pid(), &out), "ok", "untouched {mode} victim");
        std::fs::remove_file(&out).unwrap();
    }
    let mut kids: Vec<Spawned> = children_of(v.pid())
        .into_iter()
        .map(Spawned::guard)
        .collect();
    let img = d.join("img");
    dump_and_reap(&mut v, &img, &[]);
    for k in &mut kids {
        k.wait(std::time::Duration::from_secs(5));
    }
    let r = Spawned::guard(restore_detached(&img, &[]));
    let _rkids: Vec<Spawned> = children_of(r.pid())
        .into_iter()
        .map(Spawned::guard)
        .collect();
    ask_check(r.pid(), &out)
}

#[test]
fn pidfd_victim_checks_pass_untouched() {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let v = spawn_ready_with(&criu_victim("files-more"), d.path(), &["pidfd"], &[]);
    let _kids: Vec<Spawned> = children_of(v.pid())
        .into_iter()
        .map(Spawned::guard)
        .collect();
    assert_eq!(ask_check(v.pid(), &d.path().join("out")), "ok");
}

#[test]
fn pidfds_of_a_reaped_process_and_from_clone_pidfd_survive() {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    assert_eq!(round_trip(d.path(), "pidfd", false), "ok");
    let files = criu_images::ImageDir::new(d.path().join("img"))
        .read_files()
        .expect("read files.img");
    let nspids: Vec<i32> = files
        .iter()
        .filter_map(|e| e.pidfd.as_ref())
        .map(|p| p.nspid)
        .collect();
    assert!(
        nspids.contains(&-1),
        "no pidfd of a reaped process (nspid -1) in the image: {nspids:?}"
    );
}

#[test]
fn o_path_descriptors_of_a_symlink_and_a_socket_survive() {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    assert_eq!(round_trip(d.path(), "opath", true), "ok");
}

#[test]
fn tty_exclusive_mode_survives() {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    assert_eq!(round_trip(d.path(), "excl", true), "ok");
}
