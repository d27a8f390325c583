//! `criu dump` then `criu restore` of a process holding named pipes: each descriptor comes back
//! on its path with its access mode, the unread bytes arrive once (`fifo-data.img`, as CRIU
//! writes it), an empty FIFO stays empty. FIFOs removed while open, and FIFO paths taken by
//! something else before the restore: `criu_files_fifo_removed.rs`.

use std::path::Path;

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, dump_and_reap, restore_detached, spawn_ready_in,
    test_lock,
};

fn spawn_victim(d: &Path, extra: &[&str]) -> Spawned {
    spawn_ready_in(env!("CARGO_BIN_EXE_criu-victim-fifo"), d, "fifos", extra)
}

/// Without a dump the victim's own check passes (so a `bad` after restore is the restore's).
#[test]
fn fifo_victim_checks_pass_untouched() {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let v = spawn_victim(d.path(), &[]);
    assert_eq!(ask_check(v.pid(), &d.path().join("out")), "ok");
}

#[test]
fn fifo_data_and_modes_survive_dump_and_restore() {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let mut v = spawn_victim(d.path(), &[]);
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    assert!(
        img.join("fifo-data.img").exists(),
        "the dump wrote no fifo data"
    );
    let files = criu_images::ImageDir::new(&img)
        .read_files()
        .expect("read files.img");
    let fifos: Vec<_> = files.iter().filter_map(|e| e.fifo.as_ref()).collect();
    assert_eq!(fifos.len(), 4, "one FIFO entry per description");
    for f in &fifos {
        let reg = f
            .regf_id
            .and_then(|r| files.iter().find(|e| e.id == r))
            .and_then(|e| e.reg.as_ref())
            .expect("a FIFO entry without its REG entry");
        assert!(reg.name.ends_with("/fifos/a") || reg.name.ends_with("/fifos/b"));
    }
    let restored = restore_detached(&img, &[]);
    let r = Spawned::guard(restored);
    assert_eq!(restored, v.pid(), "restored with another pid");
    assert_eq!(ask_check(r.pid(), &d.path().join("out")), "ok");
}
