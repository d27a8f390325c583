//! `criu dump --tcp-established` / `criu restore` of half-closed TCP connections (FIN_WAIT1,
//! FIN_WAIT2, CLOSE_WAIT), inside a network namespace each test makes for itself (loopback
//! only): both ends in the tree, and ends whose peer stays outside the tree (the test) and
//! keeps running through dump and restore. The restored victim checks states, bytes and EOFs
//! itself; the test checks the outside peer's side.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};
use std::path::Path;
use std::time::Duration;

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, dump_and_reap, in_netns, restore_detached,
    skip_if_not_root, test_lock, wait_file,
};
use criu_images::pb::{FdTypes, FileEntry};
use criu_images::{magic, names};

fn spawn(dir: &Path, extra: &[&str]) -> Spawned {
    let (out, ready) = (dir.join("out"), dir.join("ready"));
    let mut args = vec![out.to_str().unwrap(), ready.to_str().unwrap()];
    args.extend_from_slice(extra);
    let v = Spawned::spawn(
        env!("CARGO_BIN_EXE_criu-victim-tcp-half"),
        &args,
        &dir.join("victim.log"),
        None,
    );
    wait_file(&ready, Duration::from_secs(10));
    v
}

/// The TCP states of the inet entries of `img`, sorted.
fn tcp_states(img: &Path) -> Vec<u32> {
    let files: Vec<FileEntry> =
        criu_images::read_all(img.join(names::FILES), magic::FILES).unwrap();
    let mut s: Vec<u32> = files
        .iter()
        .filter(|f| f.r#type == FdTypes::Inetsk as i32)
        .filter_map(|f| f.isk.as_ref())
        .filter(|i| i.proto == libc::IPPROTO_TCP as u32)
        .map(|i| i.state)
        .collect();
    s.sort();
    s
}

/// Without a dump the victim's own check passes (it can tell good from bad).
#[test]
fn half_closed_victim_checks_pass_untouched() {
    let _g = test_lock();
    become_subreaper();
    in_netns(|| {
        let dir = tempfile::tempdir().unwrap();
        let v = spawn(dir.path(), &[]);
        assert_eq!(ask_check(v.pid(), &dir.path().join("out")), "check ok");
    });
}

#[test]
fn half_closed_connections_in_the_tree_survive_dump_and_restore() {
    skip_if_not_root!("half_closed_connections_in_the_tree_survive_dump_and_restore");
    let _g = test_lock();
    become_subreaper();
    in_netns(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut v = spawn(dir.path(), &[]);
        let pid = v.pid();
        let img = dir.path().join("img");
        dump_and_reap(&mut v, &img, &["--tcp-established"]);
        // ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT, LISTEN, as CRIU writes them.
        assert_eq!(tcp_states(&img), vec![1, 4, 5, 8, 10]);
        let r = restore_detached(&img, &[]);
        let _rv = Spawned::guard(r);
        assert_eq!(r, pid);
        assert_eq!(ask_check(r, &dir.path().join("out")), "check ok");
    });
}

/// The real migration case for closing connections: the victim shut down writing towards a
/// peer outside the tree (A), and the outside peer shut down writing towards the victim (B).
#[test]
fn half_closed_connections_to_a_peer_outside_the_tree_survive() {
    skip_if_not_root!("half_closed_connections_to_a_peer_outside_the_tree_survive");
    let _g = test_lock();
    become_subreaper();
    in_netns(|| {
        let dir = tempfile::tempdir().unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port().to_string();
        let mut v = spawn(dir.path(), &[&port]);
        let (mut a, _) = l.accept().unwrap();
        let (mut b, _) = l.accept().unwrap();
        for s in [&a, &b] {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        }
        let mut got = Vec::new();
        a.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"a-bye");
        b.write_all(b"b-data").unwrap();
        b.shutdown(Shutdown::Write).unwrap();
        std::thread::sleep(Duration::from_millis(100));

        let pid = v.pid();
        let img = dir.path().join("img");
        dump_and_reap(&mut v, &img, &["--tcp-established"]);
        assert_eq!(tcp_states(&img), vec![1, 4, 5, 5, 8, 8, 10]);
        let r = restore_detached(&img, &[]);
        let _rv = Spawned::guard(r);
        assert_eq!(r, pid);
        a.write_all(b"a-late").unwrap();
        assert_eq!(ask_check(r, &dir.path().join("out")), "check ok");
        let mut got = Vec::new();
        b.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"b-reply");
    });
}
