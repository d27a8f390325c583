//! `criu dump` then `criu restore` of a process holding a fanotify group with an inode mark, a
//! mount mark and an ignore-only inode mark: the group comes back with the same fdinfo and its
//! marks report (and ignore) the same events; the image is CRIU's (`FANOTIFY` entry in
//! `files.img` with its marks), which our crit prints in CRIU's JSON shape.

use std::path::Path;
use std::time::Duration;

use compel_criu_tests::{
    OwnTmpfs, Spawned, ask_check, become_subreaper, dump_and_reap, restore_detached,
    skip_if_not_root, test_lock, wait_file, workspace_bin,
};

fn check(pid: i32, out: &Path) -> String {
    let _ = std::fs::remove_file(out);
    ask_check(pid, out)
}

#[test]
fn fanotify_group_and_marks_come_back() {
    skip_if_not_root!("fanotify_group_and_marks_come_back");
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let (out, ready, files) = (
        d.path().join("out"),
        d.path().join("ready"),
        d.path().join("files"),
    );
    // A tmpfs of the test's own (in a mount namespace of this thread's, which the victim and
    // criu share): the mount mark then sees only the test's opens, not the whole machine's.
    let tmpfs = OwnTmpfs::mount(&files, "size=1m").expect("mount a tmpfs");
    let mut v = Spawned::spawn(
        env!("CARGO_BIN_EXE_criu-victim-fanotify"),
        &[
            out.to_str().unwrap(),
            ready.to_str().unwrap(),
            files.to_str().unwrap(),
        ],
        &d.path().join("victim.log"),
        None,
    );
    wait_file(&ready, Duration::from_secs(10));
    assert_eq!(check(v.pid(), &out), "ok", "before the dump");
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    let crit = std::process::Command::new(workspace_bin("crit", "crit"))
        .args(["decode", "--pretty", "-i"])
        .arg(img.join("files.img"))
        .output()
        .expect("run crit");
    let json = String::from_utf8_lossy(&crit.stdout);
    for want in [
        "\"type\": \"FANOTIFY\"",
        "\"type\": \"INODE\"",
        "\"type\": \"MOUNT\"",
        "\"ignored_mask\": \"0x20\"",
    ] {
        assert!(
            json.contains(want),
            "crit decode of files.img lacks {want}: {json}"
        );
    }
    let restored = restore_detached(&img, &[]);
    let r = Spawned::guard(restored);
    assert_eq!(restored, v.pid(), "restored with another pid");
    assert_eq!(check(r.pid(), &out), "ok", "after restore");
    drop(r);
    drop(tmpfs);
}
