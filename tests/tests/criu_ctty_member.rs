//! `criu dump` then `criu restore` of a session whose terminal is a pty of the tree, with
//! `/dev/tty` held by a member that is not the session leader (CRIU's `CTTY` handling): the
//! member opens `/dev/tty` again once its leader made the pty the session's terminal, and it
//! is that pty.

use std::path::Path;
use std::time::Duration;

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, children_of, dump_and_reap, ready_numbers,
    restore_detached, skip_if_not_root, test_lock, wait_file,
};

fn check(pid: i32, out: &Path) -> String {
    let _ = std::fs::remove_file(out);
    ask_check(pid, out)
}

#[test]
fn dev_tty_of_a_session_member_comes_back() {
    skip_if_not_root!("dev_tty_of_a_session_member_comes_back");
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let (out, ready) = (d.path().join("out"), d.path().join("ready"));
    let mut v = Spawned::spawn(
        env!("CARGO_BIN_EXE_criu-victim-ctty-member"),
        &[out.to_str().unwrap(), ready.to_str().unwrap()],
        &d.path().join("victim.log"),
        None,
    );
    let said = wait_file(&ready, Duration::from_secs(10));
    let kid = ready_numbers(&said, 2)[0];
    let mut k = Spawned::guard(kid);
    assert_eq!(check(kid, &out), "ok", "before the dump");
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    assert!(
        k.wait(Duration::from_secs(5)).is_some(),
        "the member outlived the dump"
    );
    let restored = restore_detached(&img, &[]);
    let _r = Spawned::guard(restored);
    assert_eq!(restored, v.pid(), "restored with another pid");
    assert_eq!(children_of(restored), vec![kid], "the restored member");
    let _k = Spawned::guard(kid);
    assert_eq!(check(kid, &out), "ok", "after restore");
}
