//! Connections in a listener's accept queue, never accepted, whose clients are in the dumped
//! tree too (CRIU refuses these): `criu dump --tcp-established` takes them and `criu restore`
//! puts them back in the queue, so that the restored victim's accept(2) gives each, in order,
//! from its client's address, with every byte its client wrote (received by the queued end
//! or still unacknowledged in the client), its end of stream, and a working reply path. A
//! dump that leaves the tree running refuses them by name and leaves the queues as they were.
//! Inside a network namespace the test makes (loopback only), with criu's per-connection
//! lock in place (the default, iptables).

use std::path::Path;
use std::time::Duration;

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, criu_dump, dump_and_reap, in_netns, restore_detached,
    skip_if_not_root, test_lock, wait_file,
};
use criu_images::ImageDir;
use criu_images::pb::{FdTypes, InetSkEntry};

fn spawn(dir: &Path) -> Spawned {
    let (out, ready) = (dir.join("out"), dir.join("ready"));
    let v = Spawned::spawn(
        env!("CARGO_BIN_EXE_criu-victim-inet-queued"),
        &[out.to_str().unwrap(), ready.to_str().unwrap()],
        &dir.join("victim.log"),
        None,
    );
    wait_file(&ready, Duration::from_secs(10));
    v
}

fn inet_entries(img: &Path) -> Vec<InetSkEntry> {
    ImageDir::new(img)
        .read_files()
        .unwrap()
        .iter()
        .filter(|e| e.r#type == FdTypes::Inetsk as i32)
        .filter_map(|e| e.isk.clone())
        .collect()
}

/// Untouched, the victim's check passes (it needs the queued connections and their bytes):
/// the same check after a restore shows they came back.
#[test]
fn queued_victim_check_passes_untouched() {
    let _g = test_lock();
    become_subreaper();
    in_netns(|| {
        let dir = tempfile::tempdir().unwrap();
        let v = spawn(dir.path());
        assert_eq!(ask_check(v.pid(), &dir.path().join("out")), "check ok");
    });
}

#[test]
fn queued_connections_with_both_ends_in_the_tree_come_back_queued() {
    skip_if_not_root!("queued_connections_with_both_ends_in_the_tree_come_back_queued");
    let _g = test_lock();
    become_subreaper();
    in_netns(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut v = spawn(dir.path());
        let pid = v.pid();
        let img = dir.path().join("img");
        std::fs::create_dir_all(&img).unwrap();
        // A tree that keeps running: refused by name (accepting cannot be undone)...
        let o = criu_dump(pid, &img, &["-R", "--tcp-established", "-o", "r.log"]);
        assert!(!o.status.success(), "the dump with -R succeeded");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("not yet accepted") && err.contains("ends the tree"),
            "stderr: {err}"
        );
        // ... and the queues are untouched: the dump below finds all four.
        dump_and_reap(&mut v, &img, &["--tcp-established"]);
        let entries = inet_entries(&img);
        let listeners: Vec<u32> = entries
            .iter()
            .filter(|e| e.state == 10)
            .map(|e| e.id)
            .collect();
        let queued: Vec<&InetSkEntry> = entries.iter().filter(|e| e.queued_on.is_some()).collect();
        assert_eq!(listeners.len(), 2);
        assert_eq!(queued.len(), 4, "{entries:?}");
        for q in &queued {
            assert!(listeners.contains(&q.queued_on.unwrap()));
            assert!(img.join(criu_images::names::tcp_stream(q.ino)).exists());
        }
        // The queued end of `b` had its client's FIN.
        assert_eq!(queued.iter().filter(|q| q.state == 8).count(), 1);
        let r = restore_detached(&img, &[]);
        assert_eq!(r, pid);
        let _rv = Spawned::guard(r);
        assert_eq!(ask_check(r, &dir.path().join("out")), "check ok");
        let marks = std::fs::read_to_string(dir.path().join("out.marks")).unwrap();
        eprintln!("accepted sockets' SO_MARK after the restore: {marks}");
    });
}
