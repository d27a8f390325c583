//! Issue 15, inotify and fanotify beyond inode and mount marks:
//!
//! - a fanotify filesystem mark (`FAN_MARK_FILESYSTEM`) is dumped (mark type `FILESYSTEM`, ours:
//!   CRIU's format has no kind for it) and comes back: events from anywhere on that file system
//!   arrive again;
//! - an inotify watch whose file handle does not open (ramfs) is found by a path scan of the
//!   mounts of its device, which the `-v3` log says, and fires again after the restore;
//! - a watch or mark on a file removed while watched is refused by name, and the tree runs on.
//!
//! Each test mounts its own file system in a mount namespace of the test's thread (the victim
//! and criu inherit it; nothing is left mounted). Runs as root, under the test lock and as a
//! child subreaper.

use std::path::Path;

use compel_criu_tests::{
    OwnTmpfs, Spawned, ask_check, become_subreaper, criu_dump, dump_and_reap, restore_detached,
    skip_if_not_root, spawn_ready_with, stderr_text, test_lock,
};
use criu_images::pb::MarkType;

const BIN: &str = env!("CARGO_BIN_EXE_criu-victim-files15");

/// The marks of every fanotify file of `img`'s `files.img`.
fn fanotify_marks(img: &Path) -> Vec<criu_images::pb::FanotifyMarkEntry> {
    criu_images::ImageDir::new(img)
        .read_files()
        .unwrap()
        .into_iter()
        .filter_map(|f| f.ffy)
        .flat_map(|f| f.mark)
        .collect()
}

#[test]
fn fanotify_filesystem_mark_comes_back_and_sees_the_whole_file_system() {
    skip_if_not_root!("fanotify_filesystem_mark_comes_back_and_sees_the_whole_file_system");
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let fs = OwnTmpfs::mount(&d.path().join("fs"), "size=1m").expect("mount a tmpfs");
    let dir = fs.path().to_str().unwrap().to_string();
    let mut v = spawn_ready_with(BIN, d.path(), &["fanotify-fs"], &[&dir]);
    let out = d.path().join("out");
    assert_eq!(ask_check(v.pid(), &out), "ok");
    std::fs::remove_file(&out).unwrap();
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    let marks = fanotify_marks(&img);
    let fs_mark = marks
        .iter()
        .find(|m| m.r#type == MarkType::Filesystem as i32)
        .unwrap_or_else(|| panic!("no filesystem mark in {marks:?}"));
    assert_eq!(
        fs_mark.me.as_ref().and_then(|me| me.path.as_deref()),
        Some(dir.as_str()),
        "the mount the filesystem mark is found again through"
    );
    assert_eq!(
        u64::from(fs_mark.mask),
        libc::FAN_OPEN | libc::FAN_CLOSE_WRITE
    );
    assert!(marks.iter().any(|m| m.r#type == MarkType::Inode as i32));
    // crit shows the kind by name.
    let o = std::process::Command::new(compel_criu_tests::workspace_bin("crit", "crit"))
        .args(["show", img.join("files.img").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "crit show files.img failed");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("\"FILESYSTEM\""),
        "crit does not name the filesystem mark"
    );
    let restored = restore_detached(&img, &[]);
    let r = Spawned::guard(restored);
    assert_eq!(ask_check(r.pid(), &out), "ok");
}

#[test]
fn inotify_watch_whose_handle_does_not_open_is_found_by_a_path_scan() {
    skip_if_not_root!("inotify_watch_whose_handle_does_not_open_is_found_by_a_path_scan");
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let fs = OwnTmpfs::mount_fs(&d.path().join("rf"), "ramfs", "").expect("mount a ramfs");
    // A few directories to walk through before the file.
    for sub in ["a", "b/c", "b/d/e"] {
        std::fs::create_dir_all(fs.path().join(sub)).unwrap();
        std::fs::write(fs.path().join(sub).join("other"), b"x").unwrap();
    }
    let file = fs.path().join("b/d/e/watched");
    std::fs::write(&file, b"x").unwrap();
    let mut v = spawn_ready_with(BIN, d.path(), &["inotify-scan"], &[file.to_str().unwrap()]);
    let out = d.path().join("out");
    assert_eq!(ask_check(v.pid(), &out), "ok");
    std::fs::remove_file(&out).unwrap();
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    let log = std::fs::read_to_string(img.join("dump.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("path found by path scan") && l.contains("watched")),
        "the -v3 log does not say the path came from a scan:\n{log}"
    );
    let files = criu_images::ImageDir::new(&img).read_files().unwrap();
    let wd = files
        .iter()
        .filter_map(|f| f.ify.as_ref())
        .flat_map(|i| i.wd.iter())
        .next()
        .expect("a watch");
    assert_eq!(wd.f_handle.path.as_deref(), file.to_str());
    let restored = restore_detached(&img, &[]);
    let r = Spawned::guard(restored);
    assert_eq!(ask_check(r.pid(), &out), "ok");
}

/// An inotify watch and a fanotify inode mark on a file removed while watched (and still held
/// open by the victim): the dump is refused naming the kind, the fd and the removed path, and
/// the victim runs on.
#[test]
fn watches_on_removed_files_are_refused_by_name() {
    skip_if_not_root!("watches_on_removed_files_are_refused_by_name");
    let _g = test_lock();
    become_subreaper();
    for kind in ["inotify", "fanotify"] {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("w");
        std::fs::create_dir(&dir).unwrap();
        let v = spawn_ready_with(
            BIN,
            d.path(),
            &["watch-deleted"],
            &[dir.to_str().unwrap(), kind],
        );
        let img = d.path().join("img");
        std::fs::create_dir(&img).unwrap();
        let o = criu_dump(v.pid(), &img, &[]);
        let err = stderr_text(&o);
        assert!(!o.status.success(), "{kind}: the dump succeeded");
        let gone = dir.join("gone");
        assert!(
            err.contains(&format!("({kind})"))
                && err.contains(gone.to_str().unwrap())
                && err.contains("removed while watched"),
            "{kind}: {err}"
        );
        assert!(
            Path::new(&format!("/proc/{}", v.pid())).exists(),
            "{kind}: the victim did not run on"
        );
        drop(v);
    }
}
