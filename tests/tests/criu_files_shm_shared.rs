//! Files in `/dev/shm` mapped shared by two processes, one of them deleted since: after a dump
//! and a restore each mapping is still one object for both processes (a byte written by one
//! is seen by the other) and still the file's (a `pwrite` shows in the mapping).

use std::time::Duration;

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, dump_and_reap, ready_numbers, restore_detached,
    test_lock, wait_exit_timeout, wait_file,
};

/// A directory of the test's own in `/dev/shm`, removed on drop.
struct ShmDir(std::path::PathBuf);

impl ShmDir {
    fn new() -> ShmDir {
        let p =
            std::path::PathBuf::from(format!("/dev/shm/criu-files-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir(&p).expect("a directory in /dev/shm");
        ShmDir(p)
    }
}

impl Drop for ShmDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The victim with its files in `shm`; its pid and its child's.
fn spawn(d: &std::path::Path, shm: &ShmDir) -> (Spawned, i32) {
    let (out, ready) = (d.join("out"), d.join("ready"));
    let v = Spawned::spawn(
        env!("CARGO_BIN_EXE_criu-victim-shm-shared"),
        &[
            out.to_str().unwrap(),
            ready.to_str().unwrap(),
            shm.0.to_str().unwrap(),
        ],
        &d.join("victim.log"),
        None,
    );
    let said = wait_file(&ready, Duration::from_secs(10));
    let child = ready_numbers(&said, 2)[0];
    (v, child)
}

#[test]
fn shm_files_mapped_by_two_processes_stay_shared_after_restore() {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let shm = ShmDir::new();
    let (mut v, child) = spawn(d.path(), &shm);
    let _c = Spawned::guard(child);
    assert_eq!(
        ask_check(v.pid(), &d.path().join("out")),
        "ok",
        "before the dump"
    );
    std::fs::remove_file(d.path().join("out")).unwrap();
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    let _ = wait_exit_timeout(child, Duration::from_secs(5));
    let restored = restore_detached(&img, &[]);
    let r = Spawned::guard(restored);
    let _rc = Spawned::guard(child);
    assert_eq!(ask_check(r.pid(), &d.path().join("out")), "ok");
    // The deleted file came back only for the restore.
    let left: Vec<_> = std::fs::read_dir(&shm.0)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, ["kept"], "the ghost was left behind");
}
