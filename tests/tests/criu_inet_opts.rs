//! Options set on inet sockets (IP_TOS, IP_TTL, IP_FREEBIND, IP_PKTINFO, IPV6_V6ONLY,
//! IPV6_FREEBIND, IPV6_RECVPKTINFO, SO_BINDTODEVICE, SO_PRIORITY, SO_MARK, locked buffer
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
        let r = restore_detached(&img, &[]);
        let _rv = Spawned::guard(r);
        assert_eq!(r, pid);
        assert_eq!(ask_check(r, &out), "check ok");
    });
}
