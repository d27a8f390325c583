//! `criu dump --tcp-close` (established connections dumped without their state and restored
//! closed) and `criu dump --skip-in-flight` (connections a listener has not accepted yet are
//! dropped), inside a network namespace each test makes for itself (loopback only).

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, criu_dump, dump_and_reap, in_netns, restore_detached,
    skip_if_not_root, test_lock, wait_exit_timeout, wait_file,
};
use criu_images::pb::{FdTypes, FileEntry};
use criu_images::{ImageDir, magic, names};

/// Spawns the victim in `mode`; returns it and what it wrote after `ready PID`.
fn spawn(dir: &Path, mode: &str) -> (Spawned, String) {
    let (out, ready) = (dir.join("out"), dir.join("ready"));
    let v = Spawned::spawn(
        env!("CARGO_BIN_EXE_criu-victim-tcp-close"),
        &[out.to_str().unwrap(), ready.to_str().unwrap(), mode],
        &dir.join("victim.log"),
        None,
    );
    let r = wait_file(&ready, Duration::from_secs(10));
    let rest = r.split_whitespace().skip(2).collect::<Vec<_>>().join(" ");
    (v, rest)
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

/// Untouched, the connection is open: the victim's check fails (it tells open from closed).
#[test]
fn close_victim_check_fails_on_an_open_connection() {
    let _g = test_lock();
    become_subreaper();
    in_netns(|| {
        let dir = tempfile::tempdir().unwrap();
        let (v, _) = spawn(dir.path(), "close");
        let got = ask_check(v.pid(), &dir.path().join("out"));
        assert!(got.starts_with("bad: client: tcp state 1"), "{got}");
    });
}

#[test]
fn tcp_close_dumps_a_connection_without_its_state_and_restores_it_closed() {
    skip_if_not_root!("tcp_close_dumps_a_connection_without_its_state_and_restores_it_closed");
    let _g = test_lock();
    become_subreaper();
    in_netns(|| {
        let dir = tempfile::tempdir().unwrap();
        let (mut v, _) = spawn(dir.path(), "close");
        let pid = v.pid();
        let img = dir.path().join("img");
        // No --tcp-established: --tcp-close alone lets the connection be dumped.
        dump_and_reap(&mut v, &img, &["--tcp-close"]);
        assert_eq!(tcp_states(&img), vec![1, 1, 10]);
        let streams: Vec<_> = std::fs::read_dir(&img)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("tcp-stream"))
            .collect();
        assert!(streams.is_empty(), "{} tcp-stream images", streams.len());
        let inv = ImageDir::new(&img).read_inventory().unwrap();
        assert_eq!(inv.tcp_close, Some(true));
        let r = restore_detached(&img, &["--tcp-close"]);
        let _rv = Spawned::guard(r);
        assert_eq!(r, pid);
        assert_eq!(ask_check(r, &dir.path().join("out")), "check ok");
    });
}

#[test]
fn an_in_flight_connection_is_refused_and_dropped_with_skip_in_flight() {
    skip_if_not_root!("an_in_flight_connection_is_refused_and_dropped_with_skip_in_flight");
    let _g = test_lock();
    become_subreaper();
    in_netns(|| {
        let dir = tempfile::tempdir().unwrap();
        let (mut v, port) = spawn(dir.path(), "listen");
        let port: u16 = port.parse().unwrap();
        // Connected, never accepted by the victim.
        let _early = TcpStream::connect(("127.0.0.1", port)).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let img = dir.path().join("img");
        std::fs::create_dir_all(&img).unwrap();
        let o = criu_dump(v.pid(), &img, &["-o", "dump.log", "-v4"]);
        assert!(!o.status.success(), "the dump succeeded");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("not yet accepted") && err.contains("--skip-in-flight"),
            "stderr: {err}"
        );
        assert_eq!(
            wait_exit_timeout(v.pid(), Duration::from_millis(200)),
            Ok(None)
        );
        let pid = v.pid();
        dump_and_reap(&mut v, &img, &["--skip-in-flight"]);
        assert_eq!(tcp_states(&img), vec![10]);
        let r = restore_detached(&img, &[]);
        let _rv = Spawned::guard(r);
        assert_eq!(r, pid);
        assert_eq!(ask_check(r, &dir.path().join("out")), "check ok");
        // The restored listener takes new connections.
        let mut late = TcpStream::connect(("127.0.0.1", port)).unwrap();
        late.write_all(b"late").unwrap();
        drop(late);
        let got = wait_file(&dir.path().join("out.late"), Duration::from_secs(10));
        assert_eq!(got, "late");
    });
}
