//! `--ext-unix-sk` with a datagram socket: a victim's `SOCK_DGRAM` unix socket connected to a
//! receiver the test holds outside the dumped tree is refused by name without the option, and
//! with it comes back connected to the same path, so that a plain `send` reaches the receiver.
//!
//! Runs as root, under the test lock and as a child subreaper; kills and reaps what it starts.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, criu_dump, criu_victim, dump_and_reap, restore_detached,
    skip_if_not_root, spawn_ready, test_lock, wait_exit_timeout,
};

/// The next datagram at `r` within 5 s.
fn next(r: &UnixDatagram) -> Vec<u8> {
    r.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 64];
    let n = r.recv(&mut b).expect("a datagram from the victim");
    b[..n].to_vec()
}

#[test]
fn a_datagram_socket_connected_outside_the_tree_comes_back_connected_with_ext_unix_sk() {
    skip_if_not_root!(
        "a_datagram_socket_connected_outside_the_tree_comes_back_connected_with_ext_unix_sk"
    );
    let _g = test_lock();
    become_subreaper();
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let path = d.join("outside.dgram");
    let r = UnixDatagram::bind(&path).unwrap();
    let mut v = spawn_ready(&criu_victim("sock-ext-dgram"), d, &[path.to_str().unwrap()]);
    let pid = v.pid();
    assert_eq!(next(&r), b"before");

    // Refused by name without the option; the victim runs on.
    let img = d.join("img");
    std::fs::create_dir_all(&img).unwrap();
    let o = criu_dump(pid, &img, &["-o", "dump.log", "-v4"]);
    assert!(
        !o.status.success(),
        "a dump with an outside receiver succeeded"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("outside the dumped tree") && err.contains("outside.dgram"),
        "stderr: {err}"
    );
    assert_eq!(wait_exit_timeout(pid, Duration::from_millis(100)), Ok(None));

    dump_and_reap(&mut v, &img, &["--ext-unix-sk"]);
    let back = restore_detached(&img, &[]);
    let _v = Spawned::guard(back);
    assert_eq!(back, pid);
    assert_eq!(ask_check(back, &d.join("out")), "ok");
    assert_eq!(next(&r), b"after");
    // The receiver was never touched: still bound where it was.
    assert!(path.exists());
}
