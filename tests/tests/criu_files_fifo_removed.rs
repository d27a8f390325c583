//! Named pipes removed while open (saved as ghosts with their bytes, made again on restore,
//! reopened and removed again), and FIFO paths taken by something else (or gone) between the
//! dump and the restore: the restore fails before any task runs, naming the path.

use std::path::Path;

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, criu, dump_and_reap, pid_exists, restore_detached,
    spawn_ready_in, test_lock,
};

fn spawn_victim(d: &Path, extra: &[&str]) -> Spawned {
    spawn_ready_in(env!("CARGO_BIN_EXE_criu-victim-fifo"), d, "fifos", extra)
}

/// Without a dump the victim's own check passes in `unlink` mode too.
#[test]
fn removed_fifo_victim_checks_pass_untouched() {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let v = spawn_victim(d.path(), &["unlink"]);
    assert_eq!(ask_check(v.pid(), &d.path().join("out")), "ok");
}

#[test]
fn fifo_removed_while_open_comes_back_removed_with_its_bytes() {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let mut v = spawn_victim(d.path(), &["unlink"]);
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    let dir = criu_images::ImageDir::new(&img);
    let files = dir.read_files().expect("read files.img");
    let b = files
        .iter()
        .filter_map(|e| e.reg.as_ref())
        .find(|r| r.name.ends_with("/fifos/b"))
        .expect("a REG entry for the removed fifo, named without ' (deleted)'");
    assert!(
        img.join("remap-fpath.img").exists() && img.join("ghost-file-1.img").exists(),
        "the removed fifo was not saved as a ghost"
    );
    assert!(b.mode.is_some_and(|m| m & libc::S_IFMT == libc::S_IFIFO));
    let restored = restore_detached(&img, &[]);
    let r = Spawned::guard(restored);
    // The victim checks its descriptor names `b (deleted)`, the directory holds only `a`,
    // and the bytes arrive once.
    assert_eq!(ask_check(r.pid(), &d.path().join("out")), "ok");
}

/// Restores `img` expecting a failure; the text of its stderr and log.
fn failed_restore(img: &Path) -> String {
    let o = criu(&[
        "restore",
        "-D",
        img.to_str().unwrap(),
        "-o",
        "restore.log",
        "-v4",
        "-d",
    ]);
    assert!(!o.status.success(), "the restore succeeded");
    let log = std::fs::read_to_string(img.join("restore.log")).unwrap_or_default();
    format!("{}{log}", String::from_utf8_lossy(&o.stderr))
}

#[test]
fn fifo_path_taken_by_a_regular_file_fails_the_restore_before_tasks_run() {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let mut v = spawn_victim(d.path(), &[]);
    let pid = v.pid();
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    let a = d.path().join("fifos/a");
    std::fs::remove_file(&a).unwrap();
    std::fs::write(&a, b"not a fifo").unwrap();
    let text = failed_restore(&img);
    assert!(
        text.contains("no longer a fifo") && text.contains("/fifos/a"),
        "the failure does not name the path: {text}"
    );
    assert!(
        !pid_exists(pid),
        "a task of the tree exists after the failure"
    );
    assert_eq!(
        std::fs::read(&a).unwrap(),
        b"not a fifo",
        "the file was touched"
    );
}

#[test]
fn fifo_path_gone_fails_the_restore_naming_it() {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let mut v = spawn_victim(d.path(), &[]);
    let pid = v.pid();
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    std::fs::remove_file(d.path().join("fifos/b")).unwrap();
    let text = failed_restore(&img);
    assert!(
        text.contains("/fifos/b"),
        "the failure does not name the path: {text}"
    );
    assert!(
        !pid_exists(pid),
        "a task of the tree exists after the failure"
    );
}
