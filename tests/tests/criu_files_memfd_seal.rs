//! A memfd sealed with `F_SEAL_FUTURE_WRITE` (and `F_SEAL_SEAL`) while a task maps it shared
//! and writable: dumped, restored, the old mapping still writes into the memfd, the seals
//! still refuse new writers.

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, dump_and_reap, restore_detached, spawn_ready, test_lock,
};

fn victim() -> &'static str {
    env!("CARGO_BIN_EXE_criu-victim-memfd-seal")
}

/// Without a dump the victim's own check passes (twice: the check writes a new byte each time).
#[test]
fn future_write_victim_checks_pass_untouched() {
    let _g = test_lock();
    let d = tempfile::tempdir().unwrap();
    let v = spawn_ready(victim(), d.path(), &[]);
    assert_eq!(ask_check(v.pid(), &d.path().join("out")), "ok");
    std::fs::remove_file(d.path().join("out")).unwrap();
    assert_eq!(ask_check(v.pid(), &d.path().join("out")), "ok");
}

#[test]
fn future_write_sealed_memfd_mapped_writable_survives_dump_and_restore() {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let mut v = spawn_ready(victim(), d.path(), &[]);
    assert_eq!(ask_check(v.pid(), &d.path().join("out")), "ok");
    std::fs::remove_file(d.path().join("out")).unwrap();
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    let inodes = criu_images::ImageDir::new(&img)
        .read_memfd()
        .expect("read memfd.img");
    assert!(
        inodes
            .iter()
            .any(|i| i.seals & libc::F_SEAL_FUTURE_WRITE as u32 != 0),
        "F_SEAL_FUTURE_WRITE not saved"
    );
    let restored = restore_detached(&img, &[]);
    let r = Spawned::guard(restored);
    assert_eq!(ask_check(r.pid(), &d.path().join("out")), "ok");
}
