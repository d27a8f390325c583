//! `criu dump` / `criu restore` of the inet cases beyond plain connections, each in a network
//! namespace the test makes (loopback only): TCP ends in LAST_ACK and CLOSING, a connection in
//! SYN_SENT (its SYNs dropped by an iptables rule of the test's namespace until after the
//! restore), a reset connection, UDP-Lite (IPv4 and IPv6), raw IP sockets (ICMP with a filter
//! and connected, ICMPv6 with a filter, UDP with IP_HDRINCL/IP_NODEFRAG), SO_BROADCAST, an empty
//! corked UDP socket, and a corked one with a datagram being built (refused by name). The
//! restored victim (`criu-victim-inet-more`) checks each itself.

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, criu_dump, dump_and_reap, in_netns, restore_detached,
    skip_if_not_root, test_lock, wait_file,
};
use criu_images::ImageDir;
use criu_images::pb::FdTypes;

fn spawn(dir: &Path, mode: &str, port: Option<u16>) -> Spawned {
    let (out, ready) = (dir.join("out"), dir.join("ready"));
    let port = port.map(|p| p.to_string());
    let mut args = vec![out.to_str().unwrap(), ready.to_str().unwrap(), mode];
    if let Some(p) = &port {
        args.push(p);
    }
    let v = Spawned::spawn(
        env!("CARGO_BIN_EXE_criu-victim-inet-more"),
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

/// (type, protocol, state) of each inet entry of the images.
fn inet_entries(img: &Path) -> Vec<(u32, u32, u32)> {
    ImageDir::new(img)
        .read_files()
        .unwrap()
        .iter()
        .filter(|e| e.r#type == FdTypes::Inetsk as i32)
        .filter_map(|e| e.isk.as_ref())
        .map(|i| (i.r#type, i.proto, i.state))
        .collect()
}

/// Dump (killing the victim) and restore; the restored victim's verdict.
fn round_trip(dir: &Path, v: &mut Spawned, extra: &[&str]) -> (Spawned, Vec<(u32, u32, u32)>) {
    let pid = v.pid();
    let img = dir.join("img");
    dump_and_reap(v, &img, extra);
    let entries = inet_entries(&img);
    let r = restore_detached(&img, extra);
    let g = Spawned::guard(r);
    assert_eq!(r, pid);
    (g, entries)
}

#[test]
fn last_ack_and_closing_ends_survive_dump_and_restore() {
    skip_if_not_root!("last_ack_and_closing_ends_survive_dump_and_restore");
    let _g = test_lock();
    become_subreaper();
    in_netns(|| {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut v = spawn(d, "closing", None);
        let (r, entries) = round_trip(d, &mut v, &["--tcp-established"]);
        let states: Vec<u32> = entries.iter().map(|e| e.2).collect();
        for (st, name) in [(9, "LAST_ACK"), (11, "CLOSING")] {
            assert!(states.contains(&st), "no {name} socket dumped: {states:?}");
        }
        assert_eq!(verdict(d, r.pid()), "check ok");
    });
}

fn iptables(op: &str, port: u16) {
    let p = port.to_string();
    let o = Command::new("iptables")
        .args([
            "-w", op, "INPUT", "-p", "tcp", "--syn", "--dport", &p, "-j", "DROP",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn a_connection_in_syn_sent_completes_after_restore() {
    skip_if_not_root!("a_connection_in_syn_sent_completes_after_restore");
    let _g = test_lock();
    become_subreaper();
    in_netns(|| {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        // The SYNs go nowhere while the victim is dumped (the namespace, and the rule, go with
        // the test).
        iptables("-A", port);
        let mut v = spawn(d, "syn-sent", Some(port));
        let pid = v.pid();
        let img = d.join("img");
        dump_and_reap(&mut v, &img, &["--tcp-established"]);
        assert!(
            inet_entries(&img).iter().any(|e| e.2 == 2),
            "no SYN_SENT socket dumped"
        );
        iptables("-D", port);
        let r = restore_detached(&img, &["--tcp-established"]);
        let _r = Spawned::guard(r);
        assert_eq!(r, pid);
        assert_eq!(verdict(d, r), "check ok");
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 6];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"syn-ok");
    });
}

#[test]
fn a_reset_connection_comes_back_dead() {
    skip_if_not_root!("a_reset_connection_comes_back_dead");
    let _g = test_lock();
    become_subreaper();
    in_netns(|| {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut v = spawn(d, "reset", None);
        let (r, entries) = round_trip(d, &mut v, &[]);
        assert!(
            entries.iter().any(|e| e.1 == 6 && e.2 == 7),
            "no closed TCP socket: {entries:?}"
        );
        assert_eq!(verdict(d, r.pid()), "check ok");
    });
}

#[test]
fn udplite_raw_broadcast_and_corked_sockets_survive() {
    skip_if_not_root!("udplite_raw_broadcast_and_corked_sockets_survive");
    let _g = test_lock();
    become_subreaper();
    in_netns(|| {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut v = spawn(d, "dgram", None);
        let (r, entries) = round_trip(d, &mut v, &[]);
        let raw = libc::SOCK_RAW as u32;
        assert_eq!(
            entries
                .iter()
                .filter(|e| e.1 == libc::IPPROTO_UDPLITE as u32)
                .count(),
            4,
            "{entries:?}"
        );
        assert_eq!(
            entries.iter().filter(|e| e.0 == raw).count(),
            3,
            "{entries:?}"
        );
        assert!(
            entries
                .iter()
                .any(|e| e.0 == raw && e.1 == libc::IPPROTO_ICMP as u32 && e.2 == 1),
            "the connected raw socket: {entries:?}"
        );
        assert_eq!(verdict(d, r.pid()), "check ok");
    });
}

#[test]
fn a_corked_udp_socket_with_pending_data_is_refused_by_name() {
    skip_if_not_root!("a_corked_udp_socket_with_pending_data_is_refused_by_name");
    let _g = test_lock();
    become_subreaper();
    in_netns(|| {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let v = spawn(d, "corked", None);
        let img = d.join("img");
        std::fs::create_dir_all(&img).unwrap();
        let o = criu_dump(v.pid(), &img, &["-o", "dump.log"]);
        assert!(!o.status.success(), "the dump succeeded");
        let log = std::fs::read_to_string(img.join("dump.log")).unwrap_or_default()
            + &String::from_utf8_lossy(&o.stderr);
        assert!(
            log.contains("corked UDP socket with") && log.contains("bytes pending"),
            "{log}"
        );
        // The victim runs on.
        assert_eq!(verdict(d, v.pid()), "check ok");
    });
}
