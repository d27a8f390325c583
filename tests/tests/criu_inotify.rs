//! `criu dump` then `criu restore` of a process holding an inotify instance: its watches come
//! back with their watch descriptors (including one after a removed watch) and masks, found by
//! file handle (the path beside it in the image, as CRIU writes it), and still fire. A fanotify
//! group with a filesystem mark beside it comes back too (fanotify groups otherwise:
//! `criu_fanotify.rs`, `criu_files15_fsnotify.rs`).

use std::path::Path;

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, dump_and_reap, is_root, pid_exists, restore_detached,
    spawn_ready_in, test_lock,
};

fn spawn_victim(d: &Path, extra: &[&str]) -> Spawned {
    spawn_ready_in(
        env!("CARGO_BIN_EXE_criu-victim-inotify"),
        d,
        "watched",
        extra,
    )
}

/// Without a dump the victim's own check passes (so a `bad` after restore is the restore's).
#[test]
fn inotify_victim_checks_pass_untouched() {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let v = spawn_victim(d.path(), &[]);
    assert_eq!(ask_check(v.pid(), &d.path().join("out")), "ok");
}

#[test]
fn inotify_watches_survive_dump_and_restore() {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let mut v = spawn_victim(d.path(), &[]);
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    let files = criu_images::ImageDir::new(&img)
        .read_files()
        .expect("read files.img");
    let ify = files
        .iter()
        .find_map(|e| e.ify.as_ref())
        .expect("no INOTIFY entry");
    let mut wds: Vec<(u32, u32)> = ify.wd.iter().map(|w| (w.wd, w.mask)).collect();
    wds.sort();
    assert_eq!(wds, [(1, libc::IN_MODIFY), (3, libc::IN_CREATE)]);
    assert!(
        ify.wd
            .iter()
            .all(|w| w.f_handle.bytes > 0 && w.f_handle.path.is_some()),
        "watches without handle or path: {:?}",
        ify.wd
    );
    let restored = restore_detached(&img, &[]);
    let r = Spawned::guard(restored);
    assert_eq!(ask_check(r.pid(), &d.path().join("out")), "ok");
}

/// A fanotify group with a filesystem mark beside the inotify instance: dumped (mark type
/// `FILESYSTEM`, ours, since CRIU's format has no kind for it) and restored with it; the
/// inotify checks still pass (the filesystem mark itself: `criu_files15_fsnotify.rs`).
#[test]
fn fanotify_filesystem_mark_beside_inotify_comes_back() {
    if !is_root() {
        eprintln!("skipped: fanotify_init needs CAP_SYS_ADMIN");
        return;
    }
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let mut v = spawn_victim(d.path(), &["fanotify"]);
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    let files = criu_images::ImageDir::new(&img).read_files().unwrap();
    assert!(
        files
            .iter()
            .filter_map(|f| f.ffy.as_ref())
            .flat_map(|f| f.mark.iter())
            .any(|m| m.r#type == criu_images::pb::MarkType::Filesystem as i32),
        "no filesystem mark in files.img"
    );
    let restored = restore_detached(&img, &[]);
    let r = Spawned::guard(restored);
    assert!(pid_exists(r.pid()));
    assert_eq!(ask_check(r.pid(), &d.path().join("out")), "ok");
}
