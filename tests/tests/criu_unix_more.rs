//! `criu dump` then `criu restore` of unix socket shapes and options not in criu_sockets:
//! shutdown for reading and both ways, an autobound name, a bound path another file took
//! since, `SO_PASSSEC`, a classic BPF filter read back with `SO_GET_FILTER`, and a
//! `NETLINK_GENERIC` socket. The victim checks each after the restore.

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, criu_victim, dump_and_reap, restore_detached,
    skip_if_not_root, spawn_ready_in, test_lock,
};

#[test]
fn more_unix_shapes_victim_checks_pass_untouched() {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let v = spawn_ready_in(&criu_victim("unix-more"), d.path(), "work", &[]);
    assert_eq!(ask_check(v.pid(), &d.path().join("out")), "check ok");
}

#[test]
fn more_unix_shapes_and_options_come_back() {
    skip_if_not_root!("more_unix_shapes_and_options_come_back");
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let mut v = spawn_ready_in(&criu_victim("unix-more"), d.path(), "work", &[]);
    let pid = v.pid();
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    let r = restore_detached(&img, &[]);
    let _rv = Spawned::guard(r);
    assert_eq!(r, pid);
    assert_eq!(ask_check(r, &d.path().join("out")), "check ok");
    // Nothing but the regular file is left at the replaced path, and nothing else in the
    // victim's directory.
    let left: Vec<String> = std::fs::read_dir(d.path().join("work"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["occ.sock".to_string()], "left in the directory");
}
