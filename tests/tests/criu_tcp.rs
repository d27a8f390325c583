//! `criu dump` / `criu restore` of TCP and UDP sockets, each test inside a network namespace it
//! makes for itself (loopback only; the host's network is never touched): a listener, an
//! established loopback connection with unread bytes both ways (`--tcp-established`), a bound
//! and a connected UDP socket. The restored victim checks each itself.

use std::path::Path;
use std::time::Duration;

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, criu_dump, dump_and_reap, in_netns, restore_detached,
    skip_if_not_root, test_lock, wait_exit_timeout, wait_file,
};
use criu_images::pb::{FdTypes, FileEntry, TcpStreamEntry};
use criu_images::{ImageReader, magic, names};

fn spawn(dir: &Path) -> Spawned {
    spawn_with(dir, &[])
}

fn spawn_with(dir: &Path, extra: &[&str]) -> Spawned {
    let (out, ready) = (dir.join("out"), dir.join("ready"));
    let mut args = vec![out.to_str().unwrap(), ready.to_str().unwrap()];
    args.extend_from_slice(extra);
    let v = Spawned::spawn(
        env!("CARGO_BIN_EXE_criu-victim-tcp"),
        &args,
        &dir.join("victim.log"),
        None,
    );
    wait_file(&ready, Duration::from_secs(10));
    v
}

fn verdict(dir: &Path, pid: i32) -> String {
    let _ = std::fs::remove_file(dir.join("out"));
    ask_check(pid, &dir.join("out"))
}

#[test]
fn tcp_victim_checks_pass_untouched() {
    let _g = test_lock();
    become_subreaper();
    in_netns(|| {
        let dir = tempfile::tempdir().unwrap();
        let v = spawn(dir.path());
        assert_eq!(verdict(dir.path(), v.pid()), "check ok");
    });
}

#[test]
fn established_connection_listener_and_udp_survive_dump_and_restore() {
    skip_if_not_root!("established_connection_listener_and_udp_survive_dump_and_restore");
    let _g = test_lock();
    become_subreaper();
    in_netns(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut v = spawn(dir.path());
        let pid = v.pid();
        let img = dir.path().join("img");
        dump_and_reap(&mut v, &img, &["--tcp-established"]);

        // CRIU's format: INETSK entries, one tcp-stream image per connection end.
        let files: Vec<FileEntry> =
            criu_images::read_all(img.join(names::FILES), magic::FILES).unwrap();
        let inet: Vec<_> = files
            .iter()
            .filter(|f| f.r#type == FdTypes::Inetsk as i32)
            .filter_map(|f| f.isk.as_ref())
            .collect();
        let tcp: Vec<_> = inet.iter().filter(|i| i.proto == 6).collect();
        let udp: Vec<_> = inet.iter().filter(|i| i.proto == 17).collect();
        assert_eq!((tcp.len(), udp.len()), (6, 2), "{inet:?}");
        assert_eq!(tcp.iter().filter(|i| i.state == 10).count(), 2);
        assert_eq!(
            tcp.iter()
                .filter(|i| i.family == libc::AF_INET6 as u32)
                .count(),
            3
        );
        let mut queued = Vec::new();
        for t in tcp.iter().filter(|i| i.state == 1) {
            let mut r =
                ImageReader::open_expect(img.join(names::tcp_stream(t.ino)), magic::TCP_STREAM)
                    .unwrap();
            let e: TcpStreamEntry = r.read_one().unwrap();
            let q = r.read_extra(u64::from(e.inq_len)).unwrap();
            if !q.is_empty() {
                queued.push(q);
            }
            assert!(e.mss_clamp > 0);
        }
        queued.sort();
        assert_eq!(
            queued,
            vec![
                b"over v6".to_vec(),
                b"to client".to_vec(),
                b"to server;".to_vec()
            ]
        );

        let r = restore_detached(&img, &[]);
        let _rv = Spawned::guard(r);
        assert_eq!(r, pid, "restored with another pid");
        assert_eq!(verdict(dir.path(), r), "check ok");
    });
}

#[test]
fn an_established_connection_is_refused_without_tcp_established() {
    skip_if_not_root!("an_established_connection_is_refused_without_tcp_established");
    let _g = test_lock();
    become_subreaper();
    in_netns(|| {
        let dir = tempfile::tempdir().unwrap();
        let v = spawn(dir.path());
        let img = dir.path().join("img");
        std::fs::create_dir_all(&img).unwrap();
        let o = criu_dump(v.pid(), &img, &["-o", "dump.log", "-v4"]);
        assert!(!o.status.success(), "the dump succeeded");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("established") && err.contains("--tcp-established"),
            "stderr: {err}"
        );
        assert_eq!(
            wait_exit_timeout(v.pid(), Duration::from_millis(200)),
            Ok(None)
        );
        // The connection was never put into repair mode: it works on.
        assert_eq!(verdict(dir.path(), v.pid()), "check ok");
    });
}

#[test]
fn a_tree_left_running_after_the_dump_keeps_its_connection() {
    skip_if_not_root!("a_tree_left_running_after_the_dump_keeps_its_connection");
    let _g = test_lock();
    become_subreaper();
    in_netns(|| {
        let dir = tempfile::tempdir().unwrap();
        let v = spawn(dir.path());
        let img = dir.path().join("img");
        std::fs::create_dir_all(&img).unwrap();
        let o = criu_dump(
            v.pid(),
            &img,
            &["-o", "dump.log", "-v4", "--tcp-established", "-R"],
        );
        assert!(
            o.status.success(),
            "{}",
            std::fs::read_to_string(img.join("dump.log")).unwrap_or_default()
        );
        assert!(img.join(names::FILES).exists());
        // Repair mode was turned off again: queued bytes arrive, the connection goes on.
        assert_eq!(verdict(dir.path(), v.pid()), "check ok");
    });
}

/// The real migration case: the peer stays outside the tree (here, in the test) and keeps its
/// end open through dump and restore; bytes it sent before the dump are read after the
/// restore, and the connection goes on.
#[test]
fn a_connection_to_a_peer_outside_the_tree_survives() {
    skip_if_not_root!("a_connection_to_a_peer_outside_the_tree_survives");
    let _g = test_lock();
    become_subreaper();
    in_netns(|| {
        use std::io::{Read, Write};
        let dir = tempfile::tempdir().unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port().to_string();
        let mut v = spawn_with(dir.path(), &[&port]);
        let (mut peer, _) = l.accept().unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut b = [0u8; 8];
        peer.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"outside;");
        peer.write_all(b"from outside").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let pid = v.pid();
        let img = dir.path().join("img");
        dump_and_reap(&mut v, &img, &["--tcp-established"]);
        let r = restore_detached(&img, &[]);
        let _rv = Spawned::guard(r);
        assert_eq!(r, pid);
        assert_eq!(verdict(dir.path(), r), "check ok");
        let mut b = [0u8; 4];
        peer.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"back");
    });
}
