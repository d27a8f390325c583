//! ICMP "ping" sockets (`SOCK_DGRAM`, `IPPROTO_ICMP`) through `criu dump` / `criu restore`,
//! inside a network namespace each test makes for itself, whose `net.ipv4.ping_group_range`
//! the test opens to every group.

use std::path::Path;
use std::time::Duration;

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, dump_and_reap, in_netns, restore_detached,
    skip_if_not_root, test_lock, wait_file,
};
use criu_images::pb::{FdTypes, FileEntry};
use criu_images::{magic, names};

/// Allows ping sockets in the caller's network namespace (run inside [`in_netns`]).
fn allow_ping() {
    std::fs::write("/proc/sys/net/ipv4/ping_group_range", "0 2147483647").unwrap();
}

fn spawn(dir: &Path) -> (Spawned, u16) {
    let (out, ready) = (dir.join("out"), dir.join("ready"));
    let v = Spawned::spawn(
        env!("CARGO_BIN_EXE_criu-victim-ping"),
        &[out.to_str().unwrap(), ready.to_str().unwrap()],
        &dir.join("victim.log"),
        None,
    );
    let r = wait_file(&ready, Duration::from_secs(10));
    let id = r.split_whitespace().nth(2).unwrap().parse().unwrap();
    (v, id)
}

#[test]
fn ping_victim_checks_pass_untouched() {
    skip_if_not_root!("ping_victim_checks_pass_untouched");
    let _g = test_lock();
    become_subreaper();
    in_netns(|| {
        allow_ping();
        let dir = tempfile::tempdir().unwrap();
        let (v, _) = spawn(dir.path());
        assert_eq!(ask_check(v.pid(), &dir.path().join("out")), "check ok");
    });
}

#[test]
fn ping_sockets_survive_dump_and_restore_with_their_id_and_peer() {
    skip_if_not_root!("ping_sockets_survive_dump_and_restore_with_their_id_and_peer");
    let _g = test_lock();
    become_subreaper();
    in_netns(|| {
        allow_ping();
        let dir = tempfile::tempdir().unwrap();
        let (mut v, id) = spawn(dir.path());
        let pid = v.pid();
        let img = dir.path().join("img");
        dump_and_reap(&mut v, &img, &[]);
        let files: Vec<FileEntry> =
            criu_images::read_all(img.join(names::FILES), magic::FILES).unwrap();
        let mut icmp: Vec<(u32, u32)> = files
            .iter()
            .filter(|f| f.r#type == FdTypes::Inetsk as i32)
            .filter_map(|f| f.isk.as_ref())
            .filter(|i| i.proto == libc::IPPROTO_ICMP as u32)
            .map(|i| (i.state, i.src_port))
            .collect();
        icmp.sort();
        assert_eq!(icmp.len(), 2, "{icmp:?}");
        assert!(icmp.contains(&(7, u32::from(id))), "{icmp:?} (id {id})");
        assert_eq!(icmp.iter().filter(|i| i.0 == 1).count(), 1, "{icmp:?}");
        let r = restore_detached(&img, &[]);
        let _rv = Spawned::guard(r);
        assert_eq!(r, pid);
        assert_eq!(ask_check(r, &dir.path().join("out")), "check ok");
    });
}
