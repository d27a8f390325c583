//! Queued unix messages with their sender's credentials (`SCM_CREDENTIALS`) in a tree that
//! lives in a pid namespace of its own: the images hold the pids inside it (1 for the init,
//! that of its child), and after `criu restore` the receiver reads each message with the same
//! pid again, seen in its namespace (the restore refills such queues once the tree's
//! namespace exists: none of its pids can be named before). A sender that exited before the
//! dump is read by criu, from outside the namespace, by a number that means nothing inside:
//! its messages come back with pid 0 (uid and gid kept).
//!
//! Runs as root, under the test lock and as a child subreaper; kills and reaps what it starts.

use std::time::Duration;

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, children_of, criu_dump, criu_victim, guards,
    restore_detached, skip_if_not_root, test_lock, wait_file,
};
use criu_images::pb::SkPacketEntry;
use criu_images::{ImageReader, magic, names};

#[test]
fn queued_credentials_of_a_tree_in_its_own_pid_namespace_come_back_with_its_pids() {
    skip_if_not_root!(
        "queued_credentials_of_a_tree_in_its_own_pid_namespace_come_back_with_its_pids"
    );
    let _g = test_lock();
    become_subreaper();
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let (out, ready) = (d.join("out"), d.join("ready"));
    // The victim as the init of a new pid namespace (unshare waits for it outside).
    let mut outer = Spawned::spawn(
        "unshare",
        &[
            "--pid",
            "--fork",
            &criu_victim("unix-creds"),
            out.to_str().unwrap(),
            ready.to_str().unwrap(),
            "gone-reads-0",
        ],
        &d.join("victim.log"),
        None,
    );
    let said = wait_file(&ready, Duration::from_secs(10));
    assert_eq!(said, "ready 1", "the victim is its namespace's init");
    let host = children_of(outer.pid())[0];
    let inside: Vec<i32> = std::fs::read_to_string(d.join("out.pids"))
        .unwrap()
        .split_whitespace()
        .map(|w| w.parse().unwrap())
        .collect();
    let (gone, child) = (inside[0], inside[1]);
    let kids = guards(&children_of(host));

    let img = d.join("img");
    std::fs::create_dir_all(&img).unwrap();
    let o = criu_dump(host, &img, &["-o", "dump.log", "-v4"]);
    assert!(
        o.status.success(),
        "dump: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        std::fs::read_to_string(img.join("dump.log")).unwrap_or_default()
    );
    assert!(outer.wait(Duration::from_secs(5)).is_some());
    drop(kids);

    // The images hold the pids inside the namespace.
    let mut r = ImageReader::open_expect(img.join(names::SK_QUEUES), magic::SK_QUEUES).unwrap();
    let mut seen = Vec::new();
    while let Some(e) = r.read_entry::<SkPacketEntry>().unwrap() {
        r.read_extra(u64::from(e.length)).unwrap();
        if let Some(u) = e.ucred {
            seen.push(u.pid as i32);
        }
    }
    // The exited grandchild has no number there any more: 0.
    for want in [1, child, 0] {
        assert_eq!(
            seen.iter().filter(|&&s| s == want).count(),
            2,
            "messages from pid {want} (inside): {seen:?}"
        );
    }
    assert_ne!(gone, 0);

    let root = restore_detached(&img, &[]);
    let _root = Spawned::guard(root);
    let _kids = guards(&children_of(root));
    // The victim reads every message with the pid (uid, gid) it was sent with.
    assert_eq!(ask_check(root, &out), "check ok");
}
