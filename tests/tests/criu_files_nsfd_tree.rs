//! A process in a UTS namespace of its own (the tree's, which the restore makes again) holding
//! a descriptor of that namespace and one of criu's: after a dump and a restore the first is
//! the restored tree's namespace and the second still criu's.

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, dump_and_reap, is_root, restore_detached, spawn_ready,
    test_lock,
};

#[test]
fn descriptors_of_the_trees_namespace_and_of_crius_survive_dump_and_restore() {
    if !is_root() {
        eprintln!("skipped: a UTS namespace of the victim's own needs root");
        return;
    }
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let mut v = spawn_ready(env!("CARGO_BIN_EXE_criu-victim-nsfd-tree"), d.path(), &[]);
    assert_eq!(
        ask_check(v.pid(), &d.path().join("out")),
        "ok",
        "before the dump"
    );
    std::fs::remove_file(d.path().join("out")).unwrap();
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    let files = criu_images::ImageDir::new(&img)
        .read_files()
        .expect("read files.img");
    let mut ids: Vec<u32> = files
        .iter()
        .filter_map(|e| e.nsf.as_ref())
        .map(|n| n.ns_id)
        .collect();
    ids.sort();
    // CRIU's numbering: criu's UTS namespace is 4 (the fourth kind), the tree's from 9 on.
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(ids[0], 4, "{ids:?}");
    assert!(ids[1] >= 9, "{ids:?}");
    let restored = restore_detached(&img, &[]);
    let r = Spawned::guard(restored);
    assert_eq!(ask_check(r.pid(), &d.path().join("out")), "ok");
}
