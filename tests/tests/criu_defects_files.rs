//! Issue 20, items 1 to 10: files and directories a dump saves come back the same after
//! `criu restore`. Each victim checks itself from the inside after the restore.

use std::path::Path;

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, dump_and_reap, restore_detached, skip_if_not_root,
    spawn_ready_with, test_lock,
};

const BIN: &str = env!("CARGO_BIN_EXE_criu-victim-defects-files");

fn spawn(mode: &str, d: &Path) -> Spawned {
    let work = d.join("work");
    std::fs::create_dir_all(&work).unwrap();
    spawn_ready_with(BIN, d, &[mode, work.to_str().unwrap()], &[])
}

/// Dumps the victim of `mode` (with `extra` dump options), restores it and asks it to check
/// itself; then checks that the restore left no file behind in the victim's directory.
fn dump_restore_check(mode: &str, extra: &[&str]) {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let mut v = spawn(mode, d.path());
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, extra);
    let work = d.path().join("work");
    let before: Vec<_> = std::fs::read_dir(&work)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let restored = restore_detached(&img, &[]);
    let r = Spawned::guard(restored);
    assert_eq!(
        ask_check(r.pid(), &d.path().join("out")),
        "ok",
        "mode {mode}"
    );
    let after: Vec<_> = std::fs::read_dir(&work)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(before, after, "the restore left files behind");
}

/// Without a dump every victim's own check passes (so a `bad` after restore is the restore's).
#[test]
fn file_defect_victims_pass_untouched() {
    skip_if_not_root!("file_defect_victims_pass_untouched");
    let _g = test_lock();
    for mode in [
        "tmpfile", "chroot", "ghost", "sparse", "rmdir", "hardlink", "devnode", "mapdel",
        "mapzero", "procself",
    ] {
        let d = tempfile::tempdir().unwrap();
        let v = spawn(mode, d.path());
        assert_eq!(
            ask_check(v.pid(), &d.path().join("out")),
            "ok",
            "mode {mode}"
        );
    }
}

/// Item 2: a chrooted process comes back in its root, with its cwd.
#[test]
fn chrooted_process_keeps_root_and_cwd() {
    skip_if_not_root!("chrooted_process_keeps_root_and_cwd");
    dump_restore_check("chroot", &[]);
}

/// Item 3: a removed directory as cwd and open descriptor comes back as one removed directory.
#[test]
fn removed_directory_cwd_and_fd() {
    dump_restore_check("rmdir", &[]);
}

/// Item 4: a file opened with `O_TMPFILE`.
#[test]
fn o_tmpfile_file_is_restored() {
    dump_restore_check("tmpfile", &[]);
}

/// Item 5: an open file whose name was unlinked while another hard link remains.
#[test]
fn unlinked_name_with_another_link() {
    dump_restore_check("hardlink", &[]);
}

/// Items 7 and 9: a deleted file keeps owner, mode and times, and two opens of it stay one
/// file.
#[test]
fn deleted_file_keeps_owner_times_and_identity() {
    skip_if_not_root!("deleted_file_keeps_owner_times_and_identity");
    dump_restore_check("ghost", &[]);
}

/// Item 8: a sparse deleted file with data past 1 GiB keeps its holes.
#[test]
fn sparse_deleted_file_keeps_holes_past_1gib() {
    dump_restore_check("sparse", &[]);
}

/// Item 10: a device node deleted while open is made again, not refused.
#[test]
fn deleted_device_node() {
    skip_if_not_root!("deleted_device_node");
    dump_restore_check("devnode", &[]);
}

/// Item 6: a file mapped shared and private, then deleted.
#[test]
fn mapped_deleted_file() {
    dump_restore_check("mapdel", &[]);
}

/// Item 6: a `MAP_PRIVATE` mapping of shared anonymous memory made through
/// `/proc/self/map_files` reads what the memory held, not zeros.
#[test]
fn private_map_of_shared_anon_through_map_files() {
    skip_if_not_root!("private_map_of_shared_anon_through_map_files");
    dump_restore_check("mapzero", &[]);
}

/// Item 1: a descriptor on `/proc/self/...` is reopened by the restored process itself.
#[test]
fn proc_self_descriptor() {
    dump_restore_check("procself", &[]);
}
