//! `criu dump` then `criu restore` of unix sockets with file descriptors in flight
//! (`SCM_RIGHTS`): a pipe end whose other end the task holds, a socket held by no task with
//! data of its own, a file read up to an offset, a socket sent over itself. After the restore
//! the victim receives each and reads through it.

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, criu_victim, dump_and_reap, restore_detached,
    skip_if_not_root, spawn_ready, test_lock,
};
use criu_images::pb::SkPacketEntry;
use criu_images::{ImageReader, magic, names};

fn spawn(d: &std::path::Path, mode: &str) -> Spawned {
    let work = d.join("work");
    std::fs::create_dir_all(&work).unwrap();
    spawn_ready(
        &criu_victim("unix-inflight"),
        d,
        &[work.to_str().unwrap(), mode],
    )
}

/// Without a dump the victim's own check passes (so a `bad` after restore is the restore's).
#[test]
fn scm_victim_checks_pass_untouched() {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let v = spawn(d.path(), "scm");
    assert_eq!(ask_check(v.pid(), &d.path().join("out")), "check ok");
}

#[test]
fn descriptors_in_flight_are_sent_again_and_read_through_after_restore() {
    skip_if_not_root!("descriptors_in_flight_are_sent_again_and_read_through_after_restore");
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let mut v = spawn(d.path(), "scm");
    let pid = v.pid();
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);

    // CRIU's format: each message's files in one SCM_RIGHTS entry naming files of files.img.
    let files = criu_images::ImageDir::new(&img).read_files().unwrap();
    let mut r = ImageReader::open_expect(img.join(names::SK_QUEUES), magic::SK_QUEUES).unwrap();
    let mut with_fds = 0;
    while let Some(e) = r.read_entry::<SkPacketEntry>().unwrap() {
        r.read_extra(u64::from(e.length)).unwrap();
        for s in &e.scm {
            assert_eq!(s.r#type, libc::SCM_RIGHTS as u32);
            for id in &s.rights {
                assert!(
                    files.iter().any(|f| f.id == *id),
                    "file id {id} has no entry"
                );
            }
            with_fds += 1;
        }
    }
    assert_eq!(with_fds, 4, "messages with files in flight");

    let r = restore_detached(&img, &[]);
    let _rv = Spawned::guard(r);
    assert_eq!(r, pid);
    assert_eq!(ask_check(r, &d.path().join("out")), "check ok");
}
