//! Network locking of the connections of a tree in criu's own network namespace (the "host"
//! namespace of the dumped process; here a namespace the test makes, loopback only, shared by
//! the test, the victim and criu): `--network-lock iptables|nftables` puts one rule pair per
//! saved connection, by address and port, before the connection is put in repair mode; a packet
//! the peer sends while the tree is dumped (killed, its sockets gone) is dropped instead of
//! answered with a reset, and arrives after the restore, which lifts the rules. With `skip` the
//! same packet resets the peer's connection (the control that shows the test can fail). A dump
//! with `-R` and a failed one lift the rules too. As in CRIU, the `network-lock` and
//! `network-unlock` scripts do not run for criu's own namespace (`criu_netlock` has them).
//! Rules a failing test leaves go with its namespace, which ends with its last process.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, criu_dump, dump_and_reap, in_netns, restore_detached,
    skip_if_not_root, test_lock, wait_file,
};

/// The TCP victim with a connection to `port` (the peer outside the tree).
fn spawn(dir: &Path, port: u16) -> Spawned {
    let (out, ready) = (dir.join("out"), dir.join("ready"));
    let port = port.to_string();
    let v = Spawned::spawn(
        env!("CARGO_BIN_EXE_criu-victim-tcp"),
        &[out.to_str().unwrap(), ready.to_str().unwrap(), &port],
        &dir.join("victim.log"),
        None,
    );
    wait_file(&ready, Duration::from_secs(10));
    v
}

/// The peer's end, once the victim connected and said "outside;".
fn accept(l: &TcpListener) -> TcpStream {
    let (mut peer, _) = l.accept().unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut b = [0u8; 8];
    peer.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"outside;");
    peer
}

fn verdict(dir: &Path, pid: i32) -> String {
    let _ = std::fs::remove_file(dir.join("out"));
    ask_check(pid, &dir.join("out"))
}

/// The namespace's netfilter rules now (nft, iptables and ip6tables).
fn rules() -> String {
    let mut s = String::new();
    for cmd in [
        &["nft", "list", "ruleset"][..],
        &["iptables-save"][..],
        &["ip6tables-save"][..],
    ] {
        let o = Command::new(cmd[0]).args(&cmd[1..]).output().unwrap();
        assert!(
            o.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        s.push_str(&String::from_utf8_lossy(&o.stdout));
    }
    s
}

/// The lock rules of connection ends on `port` in `rules`: iptables DROP rules naming the port,
/// or nft set elements naming it.
fn lock_rules(rules: &str, port: u16) -> usize {
    let p = port.to_string();
    rules
        .lines()
        .filter(|l| {
            (l.contains("-j DROP") && l.contains("0xc114") && l.split_whitespace().any(|w| w == p))
                || (l.contains(" . ") && l.split([' ', ',', '{', '}']).any(|w| w == p))
        })
        .count()
}

fn no_lock_left(r: &str) {
    assert!(!r.contains("CRIU"), "lock rules left:\n{r}");
    assert!(!r.contains("0xc114"), "lock rules left:\n{r}");
}

/// The action script: each stage's name into `actions`.
fn action_script(d: &Path) -> String {
    let path = d.join("action.sh");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\necho $CRTOOLS_SCRIPT_ACTION >> {}/actions\n\
             [ -e {}/fail-$CRTOOLS_SCRIPT_ACTION ] && exit 1\nexit 0\n",
            d.display(),
            d.display()
        ),
    )
    .unwrap();
    let ok = Command::new("chmod")
        .args(["+x", path.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(ok.success());
    path.to_str().unwrap().to_string()
}

fn net_actions(d: &Path) -> String {
    std::fs::read_to_string(d.join("actions"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("network-"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Dumps the victim (killed) while it holds a connection to the test; the test then writes to
/// that connection while the tree is gone. Returns the peer's end and the victim's pid.
fn dump_then_send(dir: &Path, method: &str) -> (TcpStream, i32, u16) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut v = spawn(dir, l.local_addr().unwrap().port());
    let mut peer = accept(&l);
    peer.write_all(b"from ").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let pid = v.pid();
    let img = dir.join("img");
    let script = action_script(dir);
    dump_and_reap(
        &mut v,
        &img,
        &[
            "--tcp-established",
            "--network-lock",
            method,
            "--action-script",
            &script,
        ],
    );
    let vport = peer.peer_addr().unwrap().port();
    // The packet that a socket-less port would answer with a reset.
    peer.write_all(b"outside").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    (peer, pid, vport)
}

/// Whether the peer's end was reset (a pending error, or a read that says so).
fn reset(peer: &TcpStream) -> bool {
    if let Ok(Some(e)) = peer.take_error() {
        return e.kind() == ErrorKind::ConnectionReset;
    }
    peer.set_nonblocking(true).unwrap();
    let r = peer.peek(&mut [0u8; 1]);
    peer.set_nonblocking(false).unwrap();
    matches!(r, Err(e) if e.kind() == ErrorKind::ConnectionReset)
}

fn locked_connection_survives(method: &str) {
    let _g = test_lock();
    become_subreaper();
    let method = method.to_string();
    in_netns(move || {
        let dir = tempfile::tempdir().unwrap();
        let (mut peer, pid, vport) = dump_then_send(dir.path(), &method);
        // One rule pair (iptables) or element pair (nft) per saved socket of the connection.
        let r = rules();
        assert_eq!(lock_rules(&r, vport), 2, "{method}: the lock rules:\n{r}");
        if method == "nftables" {
            assert!(r.contains("table inet CRIU-"), "{r}");
        }
        // Only the connections: nothing else in the namespace is cut off.
        let l2 = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c2 = TcpStream::connect(l2.local_addr().unwrap()).unwrap();
        let (mut s2, _) = l2.accept().unwrap();
        c2.write_all(b"free").unwrap();
        let mut b = [0u8; 4];
        s2.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"free");
        assert!(!reset(&peer), "{method}: the locked connection was reset");
        let img = dir.path().join("img");
        let script = action_script(dir.path());
        let r = restore_detached(
            &img,
            &[
                "--tcp-established",
                "--network-lock",
                &method,
                "--action-script",
                &script,
            ],
        );
        let _rv = Spawned::guard(r);
        assert_eq!(r, pid);
        no_lock_left(&rules());
        // "from " before the dump, "outside" sent while the tree was gone, once each.
        assert_eq!(verdict(dir.path(), r), "check ok");
        let mut b = [0u8; 4];
        peer.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"back");
        // As CRIU: the network-lock/unlock scripts are for a namespace of the tree's own.
        assert_eq!(
            net_actions(dir.path()),
            "",
            "scripts ran for criu's namespace"
        );
    });
}

#[test]
fn an_iptables_locked_connection_is_not_reset_while_dumped() {
    skip_if_not_root!("an_iptables_locked_connection_is_not_reset_while_dumped");
    locked_connection_survives("iptables");
}

#[test]
fn an_nftables_locked_connection_is_not_reset_while_dumped() {
    skip_if_not_root!("an_nftables_locked_connection_is_not_reset_while_dumped");
    locked_connection_survives("nftables");
}

/// The control: without rules, the same packet resets the peer's end.
#[test]
fn without_a_lock_the_same_packet_resets_the_connection() {
    skip_if_not_root!("without_a_lock_the_same_packet_resets_the_connection");
    let _g = test_lock();
    become_subreaper();
    in_netns(|| {
        let dir = tempfile::tempdir().unwrap();
        let (peer, _pid, vport) = dump_then_send(dir.path(), "skip");
        let r = rules();
        assert_eq!(lock_rules(&r, vport), 0, "{r}");
        assert!(reset(&peer), "an unlocked connection was not reset");
        // As CRIU: no network-lock script for criu's own namespace.
        assert_eq!(net_actions(dir.path()), "");
    });
}

/// `-R` and a failed dump take the rules away again; the
/// connection goes on.
#[test]
fn a_dump_left_running_or_failed_unlocks_its_connections() {
    skip_if_not_root!("a_dump_left_running_or_failed_unlocks_its_connections");
    let _g = test_lock();
    become_subreaper();
    in_netns(|| {
        for method in ["iptables", "nftables"] {
            for fail in [false, true] {
                let dir = tempfile::tempdir().unwrap();
                let d = dir.path();
                let l = TcpListener::bind("127.0.0.1:0").unwrap();
                let v = spawn(d, l.local_addr().unwrap().port());
                let mut peer = accept(&l);
                let script = action_script(d);
                std::fs::write(d.join("fail-post-dump"), "").unwrap();
                if !fail {
                    std::fs::remove_file(d.join("fail-post-dump")).unwrap();
                }
                let img = d.join("img");
                std::fs::create_dir_all(&img).unwrap();
                let mut args = vec![
                    "-o",
                    "dump.log",
                    "-v4",
                    "--tcp-established",
                    "--network-lock",
                    method,
                    "--action-script",
                    &script,
                ];
                if !fail {
                    args.push("-R");
                }
                let o = criu_dump(v.pid(), &img, &args);
                let log = std::fs::read_to_string(img.join("dump.log")).unwrap_or_default();
                assert_eq!(o.status.success(), !fail, "{method} fail={fail}: {log}");
                assert!(
                    log.contains("connection locked"),
                    "{method}: nothing was locked: {log}"
                );
                no_lock_left(&rules());
                assert_eq!(net_actions(d), "", "scripts ran for criu's namespace");
                peer.write_all(b"from outside").unwrap();
                assert_eq!(verdict(d, v.pid()), "check ok", "{method} fail={fail}");
                let mut b = [0u8; 4];
                peer.read_exact(&mut b).unwrap();
                assert_eq!(&b, b"back");
            }
        }
    });
}
