//! `criu dump` then `criu restore` of a process with a unix socket it owns for signals
//! (`F_SETOWN`, `F_SETSIG`, `O_ASYNC`): the owner and signal come back in the socket's
//! `fown` and a write to its peer signals the restored process again.

use std::path::Path;
use std::time::Duration;

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, dump_and_reap, restore_detached, skip_if_not_root,
    test_lock, wait_file,
};

fn check(pid: i32, out: &Path) -> String {
    let _ = std::fs::remove_file(out);
    ask_check(pid, out)
}

#[test]
fn a_unix_socket_owned_for_signals_comes_back_owned() {
    skip_if_not_root!("a_unix_socket_owned_for_signals_comes_back_owned");
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let (out, ready) = (d.path().join("out"), d.path().join("ready"));
    let mut v = Spawned::spawn(
        env!("CARGO_BIN_EXE_criu-victim-sock-owner"),
        &[out.to_str().unwrap(), ready.to_str().unwrap()],
        &d.path().join("victim.log"),
        None,
    );
    wait_file(&ready, Duration::from_secs(10));
    assert_eq!(check(v.pid(), &out), "ok", "before the dump");
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    let files = criu_images::ImageDir::new(&img)
        .read_files()
        .expect("read files.img");
    let owned: Vec<_> = files
        .iter()
        .filter_map(|e| e.usk.as_ref())
        .filter(|u| u.fown.pid != 0)
        .map(|u| (u.fown.pid, u.fown.signum))
        .collect();
    assert_eq!(
        owned,
        [(v.pid() as u32, libc::SIGUSR2 as u32)],
        "the owned socket's fown"
    );
    let restored = restore_detached(&img, &[]);
    let r = Spawned::guard(restored);
    assert_eq!(restored, v.pid(), "restored with another pid");
    assert_eq!(check(r.pid(), &out), "ok", "after restore");
}
