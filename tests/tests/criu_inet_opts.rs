//! Options set on inet sockets (IP_TOS, IP_TTL, IP_FREEBIND, IP_PKTINFO, IPV6_V6ONLY,
//! IPV6_FREEBIND, IPV6_RECVPKTINFO, IPV6_TCLASS, IPV6_UNICAST_HOPS, the multicast interface,
//! hop limit and loop of both families, SO_BINDTODEVICE, SO_PRIORITY, SO_MARK, locked buffer
//! sizes, TCP_NODELAY, TCP_CORK, keepalive and its parameters, SO_LINGER) come back from
//! `criu dump` / `criu restore`: the restored victim reads each with getsockopt and compares
//! it with what it read before the dump. Inside a network namespace the test makes.

use std::time::Duration;

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, dump_and_reap, in_netns, restore_detached,
    skip_if_not_root, test_lock, wait_file,
};

fn spawn(dir: &std::path::Path) -> Spawned {
    let (out, ready) = (dir.join("out"), dir.join("ready"));
    let v = Spawned::spawn(
        env!("CARGO_BIN_EXE_criu-victim-inet-opts"),
        &[out.to_str().unwrap(), ready.to_str().unwrap()],
        &dir.join("victim.log"),
        None,
    );
    wait_file(&ready, Duration::from_secs(10));
    v
}

#[test]
fn inet_socket_options_come_back_after_restore() {
    skip_if_not_root!("inet_socket_options_come_back_after_restore");
    let _g = test_lock();
    become_subreaper();
    in_netns(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut v = spawn(dir.path());
        let out = dir.path().join("out");
        assert_eq!(ask_check(v.pid(), &out), "check ok");
        let _ = std::fs::remove_file(&out);
        let pid = v.pid();
        let img = dir.path().join("img");
        dump_and_reap(&mut v, &img, &["--tcp-established"]);
        // The options CRIU's ip_opts has no field for are in ours (1002..1006).
        let files: Vec<criu_images::pb::FileEntry> = criu_images::read_all(
            img.join(criu_images::names::FILES),
            criu_images::magic::FILES,
        )
        .unwrap();
        let udp = |family: i32| {
            files
                .iter()
                .filter_map(|f| f.isk.as_ref())
                .find(|i| i.family == family as u32 && i.r#type == libc::SOCK_DGRAM as u32)
                .and_then(|i| i.ip_opts.clone())
                .unwrap()
        };
        let (v4, v6) = (udp(libc::AF_INET), udp(libc::AF_INET6));
        assert_eq!(
            (v4.mc_if, v4.mc_ttl, v4.mc_loop),
            (
                Some(u32::from_ne_bytes([127, 0, 0, 1])),
                Some(7),
                Some(false)
            )
        );
        assert_eq!((v4.tclass, v4.hops), (None, None));
        assert_eq!(
            (v6.tclass, v6.hops, v6.mc_if, v6.mc_ttl, v6.mc_loop),
            (Some(0x28), Some(17), Some(1), Some(9), Some(false))
        );
        let r = restore_detached(&img, &[]);
        let _rv = Spawned::guard(r);
        assert_eq!(r, pid);
        assert_eq!(ask_check(r, &out), "check ok");
    });
}
