//! Queued datagrams keep their senders' names: a receiver with datagrams from senders bound to
//! abstract names, paths and an autobound name (some of them closed since), and from an
//! unnamed one, reads the same sender address for each datagram with recvfrom after a
//! restore, in order (CRIU 4.2 only reserves a field for the address; its restore sends every
//! datagram from one unnamed socket).

use std::path::Path;

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, dump_and_reap, restore_detached, skip_if_not_root,
    spawn_ready_with, test_lock,
};
use criu_images::pb::SkPacketEntry;
use criu_images::{ImageReader, magic, names};

const VICTIM: &str = env!("CARGO_BIN_EXE_criu-victim-sock-senders");

fn spawn(d: &Path) -> Spawned {
    let work = d.join("work");
    std::fs::create_dir(&work).unwrap();
    spawn_ready_with(VICTIM, d, &[], &[work.to_str().unwrap()])
}

/// Without a dump the victim's own check passes (so a `bad` after restore is the restore's).
#[test]
fn senders_victim_checks_pass_untouched() {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let v = spawn(d.path());
    assert_eq!(ask_check(v.pid(), &d.path().join("out")), "check ok");
}

#[test]
fn queued_datagrams_come_back_from_the_same_sender_names() {
    skip_if_not_root!("queued_datagrams_come_back_from_the_same_sender_names");
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let mut v = spawn(d.path());
    let pid = v.pid();
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);

    // The names are in sk-queues.img (field 1002 of sk_packet_entry, ours).
    let mut r = ImageReader::open_expect(img.join(names::SK_QUEUES), magic::SK_QUEUES).unwrap();
    let mut named = Vec::new();
    while let Some(e) = r.read_entry::<SkPacketEntry>().unwrap() {
        r.read_extra(u64::from(e.length)).unwrap();
        if let Some(a) = e.addr {
            named.push(a);
        }
    }
    let abs_a = format!("\0criu-snd-a-{pid}").into_bytes();
    assert_eq!(
        named.iter().filter(|a| **a == abs_a).count(),
        3,
        "{named:?}"
    );
    assert_eq!(named.len(), 7, "named senders in sk-queues.img: {named:?}");

    // The stale socket files of the killed victim stay (its names); the restore replaces them.
    let r = restore_detached(&img, &[]);
    assert_eq!(r, pid);
    let rv = Spawned::guard(r);
    assert_eq!(ask_check(rv.pid(), &d.path().join("out")), "check ok");
}
