//! AIO contexts (`io_setup`): the ring is dumped as CRIU does (a `VMA_AREA_AIORING` area with
//! its pages, an `aio_ring_entry` in the mm image) and made again on restore at the same
//! address, with the same head and tail; the restored process then submits and reaps I/O
//! through the same context id.

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, criu_victim, dump_and_reap, restore_detached,
    skip_if_not_root, spawn_ready, test_lock,
};
use criu_images::vma::status;

#[test]
fn an_aio_context_works_after_restore() {
    skip_if_not_root!("an_aio_context_works_after_restore");
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let mut v = spawn_ready(&criu_victim("aio"), d.path(), &[]);
    let pid = v.pid();
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);

    let mm = criu_images::ImageDir::new(&img)
        .read_mm(pid as u32)
        .unwrap();
    assert_eq!(mm.aios.len(), 1, "one aio_ring_entry");
    let ring = mm
        .vmas
        .iter()
        .find(|v| v.status & status::AIORING != 0)
        .expect("an AIORING area");
    assert_eq!(ring.start, mm.aios[0].id);
    assert_eq!(u64::from(mm.aios[0].ring_len), ring.end - ring.start);

    let r = restore_detached(&img, &[]);
    let _rv = Spawned::guard(r);
    assert_eq!(r, pid);
    let maps = std::fs::read_to_string(format!("/proc/{r}/maps")).unwrap();
    let want = format!("{:x}-{:x}", ring.start, ring.end);
    assert!(
        maps.lines()
            .any(|l| l.starts_with(&want) && l.contains("/[aio]")),
        "the ring is not back at {want}:\n{maps}"
    );
    assert_eq!(ask_check(r, &d.path().join("out")), "ok");
}
