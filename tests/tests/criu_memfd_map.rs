//! `criu dump` then `criu restore` (twice, from the same images) of a process tree that maps
//! memfds: shared and private, with the descriptor kept or closed, shared with a child. After
//! restore every mapping holds what it held, the descriptor and its shared mapping are one
//! inode, the mappings of parent and child are one object, private pages stay private. The
//! images are CRIU's: areas marked `VMA_AREA_MEMFD` naming `MEMFD` files, each memfd's content
//! once in `memfd.img` + `pagemap-shmem-SHMID.img`.

use std::path::Path;
use std::time::Duration;

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, dump_and_reap, ready_numbers, restore_detached,
    skip_if_not_root, test_lock, wait_exit_timeout, wait_file,
};
use criu_images::vma::status;

fn check(pid: i32, out: &Path) -> String {
    let _ = std::fs::remove_file(out);
    ask_check(pid, out)
}

#[test]
fn memfd_mappings_survive_dump_and_two_restores() {
    skip_if_not_root!("memfd_mappings_survive_dump_and_two_restores");
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let (out, ready) = (d.path().join("out"), d.path().join("ready"));
    let mut v = Spawned::spawn(
        env!("CARGO_BIN_EXE_criu-victim-memfd-map"),
        &[out.to_str().unwrap(), ready.to_str().unwrap()],
        &d.path().join("victim.log"),
        None,
    );
    let said = wait_file(&ready, Duration::from_secs(10));
    let child = ready_numbers(&said, 2)[0];
    assert_eq!(
        check(v.pid(), &out),
        "ok",
        "the victim's check before any dump"
    );
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    let _ = wait_exit_timeout(child, Duration::from_secs(5));

    let dir = criu_images::ImageDir::new(&img);
    let mut names: Vec<String> = dir
        .read_memfd()
        .expect("read memfd.img")
        .into_iter()
        .map(|i| i.name)
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["map-fd", "map-private", "map-shared"],
        "one inode per memfd"
    );
    let mm = dir.read_mm(v.pid() as u32).expect("read the root's mm");
    let memfd_areas: Vec<u32> = mm
        .vmas
        .iter()
        .filter(|a| a.status & status::MEMFD != 0)
        .map(|a| a.status)
        .collect();
    assert_eq!(memfd_areas.len(), 5, "memfd areas: {memfd_areas:x?}");
    assert_eq!(
        memfd_areas
            .iter()
            .filter(|&&s| s & status::FILE_SHARED != 0)
            .count(),
        3,
        "shared memfd areas: {memfd_areas:x?}"
    );

    for round in 0..2 {
        let _ = std::fs::remove_file(img.join("restored.pid"));
        let restored = restore_detached(&img, &[]);
        let r = Spawned::guard(restored);
        assert_eq!(restored, v.pid(), "restored with another pid");
        assert_eq!(
            check(r.pid(), &out),
            "ok",
            "round {round}: the victim's check after restore"
        );
        drop(r);
        // The child exits once its parent is gone; it is ours to reap (subreaper).
        assert!(
            wait_exit_timeout(child, Duration::from_secs(5))
                .unwrap_or(None)
                .is_some(),
            "round {round}: the restored child did not end"
        );
    }
}
