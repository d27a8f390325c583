//! Inet socket state that `criu_inet_opts.rs` does not cover, read back by the restored victim
//! (`criu-victim-inet-extra`): `TCP_USER_TIMEOUT`, `TCP_CONGESTION`, `IP_TRANSPARENT`,
//! `IPV6_TRANSPARENT`, send and receive timeouts, buffer sizes and `IP_TTL` of TCP ends,
//! `SO_REUSEADDR`/`SO_REUSEPORT` of a listener, a BPF filter, and the shut-down state of UDP
//! sockets (read from inet sock_diag), multicast memberships (IPv4 and IPv6, on `lo`, a
//! datagram to the group still arriving); and `criu restore --tcp-close` of a dump made with
//! `--tcp-established` (connections come back closed, no lock rule is left). Each inside a
//! network namespace the test makes (loopback only).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, dump_and_reap, in_netns, restore_detached,
    skip_if_not_root, test_lock, wait_file,
};
use criu_images::ImageDir;
use criu_images::pb::FdTypes;

fn spawn(dir: &Path, bin: &str, extra: &[&str]) -> Spawned {
    let (out, ready) = (dir.join("out"), dir.join("ready"));
    let mut args = vec![out.to_str().unwrap(), ready.to_str().unwrap()];
    args.extend_from_slice(extra);
    let v = Spawned::spawn(bin, &args, &dir.join("victim.log"), None);
    wait_file(&ready, Duration::from_secs(10));
    v
}

fn verdict(dir: &Path, pid: i32) -> String {
    let _ = std::fs::remove_file(dir.join("out"));
    ask_check(pid, &dir.join("out"))
}

#[test]
fn more_inet_options_and_udp_shutdown_come_back_after_restore() {
    skip_if_not_root!("more_inet_options_and_udp_shutdown_come_back_after_restore");
    let _g = test_lock();
    become_subreaper();
    in_netns(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut v = spawn(
            dir.path(),
            env!("CARGO_BIN_EXE_criu-victim-inet-extra"),
            &[],
        );
        assert_eq!(verdict(dir.path(), v.pid()), "check ok");
        let pid = v.pid();
        let img = dir.path().join("img");
        dump_and_reap(&mut v, &img, &["--tcp-established"]);
        // The shut-down states are in the images (CRIU's sk_shutdown: 1 read, 2 write, 3 both).
        let mut shut: Vec<i32> = ImageDir::new(&img)
            .read_files()
            .unwrap()
            .iter()
            .filter(|e| e.r#type == FdTypes::Inetsk as i32)
            .filter_map(|e| e.isk.as_ref())
            .filter_map(|i| i.shutdown)
            .collect();
        shut.sort();
        assert_eq!(shut, vec![1, 2, 3]);
        // So are the multicast memberships: two IPv4 groups, one IPv6, all on lo.
        let mut groups: Vec<usize> = ImageDir::new(&img)
            .read_files()
            .unwrap()
            .iter()
            .filter_map(|e| e.isk.as_ref())
            .flat_map(|i| i.mcast.iter().map(|m| m.group.len()))
            .collect();
        groups.sort();
        assert_eq!(
            groups,
            vec![4, 4, 16],
            "{}",
            std::fs::read_to_string(dir.path().join("victim.log")).unwrap_or_default()
        );
        let r = restore_detached(&img, &[]);
        assert_eq!(r, pid);
        let _rv = Spawned::guard(r);
        assert_eq!(verdict(dir.path(), r), "check ok");
    });
}

/// The namespace's iptables rules naming the repair mark.
fn mark_rules() -> usize {
    let o = Command::new("iptables-save").output().unwrap();
    assert!(o.status.success());
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.to_lowercase().contains("0xc114"))
        .count()
}

#[test]
fn tcp_close_at_restore_brings_saved_connections_back_closed() {
    skip_if_not_root!("tcp_close_at_restore_brings_saved_connections_back_closed");
    let _g = test_lock();
    become_subreaper();
    in_netns(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut v = spawn(
            dir.path(),
            env!("CARGO_BIN_EXE_criu-victim-tcp-close"),
            &["close"],
        );
        let pid = v.pid();
        let img = dir.path().join("img");
        // Saved with their state (and locked, one rule pair each)...
        dump_and_reap(&mut v, &img, &["--tcp-established"]);
        assert!(
            std::fs::read_dir(&img)
                .unwrap()
                .filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().starts_with("tcp-stream")),
            "no tcp-stream image"
        );
        assert!(mark_rules() >= 4, "the connections are not locked");
        // ... and restored closed when the restore says so.
        let r = restore_detached(&img, &["--tcp-close"]);
        assert_eq!(r, pid);
        let _rv = Spawned::guard(r);
        assert_eq!(verdict(dir.path(), r), "check ok");
        assert_eq!(mark_rules(), 0, "lock rules left");
    });
}
