//! `criu dump` then `criu restore` of queued unix messages that carry credentials
//! (`SCM_CREDENTIALS`, receiver with `SO_PASSCRED`) and of sockets whose peek offset
//! (`SO_PEEK_OFF`) was moved: CRIU 4.2 drops both, here they come back. The victim's messages
//! come from itself, from a child of the tree (other uid and gid) and from a process that exited
//! before the dump; after the restore each is read with the same pid, uid and gid, and the
//! peeks start where they left off.

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, criu_victim, dump_and_reap, guards, restore_detached,
    skip_if_not_root, spawn_ready, test_lock,
};
use criu_images::pb::SkPacketEntry;
use criu_images::{ImageReader, magic, names};

fn pids(d: &std::path::Path) -> Vec<i32> {
    std::fs::read_to_string(d.join("out.pids"))
        .unwrap()
        .split_whitespace()
        .map(|w| w.parse().unwrap())
        .collect()
}

/// Without a dump the victim's own check passes (so a `bad` after restore is the restore's).
#[test]
fn creds_victim_checks_pass_untouched() {
    skip_if_not_root!("creds_victim_checks_pass_untouched");
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let v = spawn_ready(&criu_victim("unix-creds"), d.path(), &[]);
    let _kids = guards(&pids(d.path()));
    assert_eq!(ask_check(v.pid(), &d.path().join("out")), "check ok");
}

#[test]
fn queued_credentials_and_peek_offsets_come_back() {
    skip_if_not_root!("queued_credentials_and_peek_offsets_come_back");
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let mut v = spawn_ready(&criu_victim("unix-creds"), d.path(), &[]);
    let pid = v.pid();
    let others = pids(d.path());
    let (gone, child) = (others[0], others[1]);
    let kids = guards(&[child]);
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    drop(kids);

    // The credentials are in our field of sk_packet_entry, each message with its own.
    let mut r = ImageReader::open_expect(img.join(names::SK_QUEUES), magic::SK_QUEUES).unwrap();
    let mut seen = Vec::new();
    while let Some(e) = r.read_entry::<SkPacketEntry>().unwrap() {
        r.read_extra(u64::from(e.length)).unwrap();
        if let Some(u) = e.ucred {
            seen.push((u.pid as i32, u.uid, u.gid));
        }
    }
    for want in [pid, gone, child] {
        assert_eq!(
            seen.iter().filter(|s| s.0 == want).count(),
            2,
            "messages from pid {want} with credentials: {seen:?}"
        );
    }
    assert!(seen.contains(&(child, 1234, 5678)), "{seen:?}");
    // The peek offsets are in our field of unix_sk_entry.
    let files = criu_images::ImageDir::new(&img).read_files().unwrap();
    let offs: Vec<i32> = files
        .iter()
        .filter_map(|f| f.usk.as_ref()?.peek_off)
        .collect();
    assert_eq!(offs, vec![4, 4], "peek offsets kept");
    // crit prints them by name.
    let p = img.join(names::SK_QUEUES);
    let json = criu_images::json::decode_image(
        &std::fs::read(&p).unwrap(),
        &p,
        criu_images::json::DecodeOptions::pretty(),
    )
    .unwrap();
    let creds = json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ucred"]["pid"] == serde_json::json!(child))
        .count();
    assert_eq!(creds, 2, "{json}");

    let r = restore_detached(&img, &[]);
    let _rv = Spawned::guard(r);
    assert_eq!(r, pid);
    let _kids = guards(&[child]);
    assert_eq!(ask_check(r, &d.path().join("out")), "check ok");
}
