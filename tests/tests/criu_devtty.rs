//! `criu dump` then `criu restore` of a session leader holding `/dev/tty` (twice: a dup) with a
//! pty of its own as its controlling terminal: `/dev/tty` comes back as CRIU's `CTTY` terminal,
//! opened once the session has its terminal again, still one open file, and still that pty.

use std::path::Path;
use std::time::Duration;

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, dump_and_reap, restore_detached, skip_if_not_root,
    test_lock, wait_file,
};
use criu_images::pb::Ttytype;
use criu_images::{ImageReader, magic, names};

fn check(pid: i32, out: &Path) -> String {
    let _ = std::fs::remove_file(out);
    ask_check(pid, out)
}

#[test]
fn dev_tty_of_a_session_leader_comes_back() {
    skip_if_not_root!("dev_tty_of_a_session_leader_comes_back");
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let (out, ready) = (d.path().join("out"), d.path().join("ready"));
    let mut v = Spawned::spawn(
        env!("CARGO_BIN_EXE_criu-victim-devtty"),
        &[out.to_str().unwrap(), ready.to_str().unwrap()],
        &d.path().join("victim.log"),
        None,
    );
    wait_file(&ready, Duration::from_secs(10));
    assert_eq!(check(v.pid(), &out), "ok", "before the dump");
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    let mut r = ImageReader::open_expect(img.join(names::TTY_INFO), magic::TTY_INFO)
        .expect("open tty-info.img");
    let mut types = Vec::new();
    while let Some(e) = r
        .read_entry::<criu_images::pb::TtyInfoEntry>()
        .expect("read tty-info.img")
    {
        types.push(e.r#type);
    }
    assert!(
        types.contains(&(Ttytype::Ctty as i32)),
        "no CTTY entry in tty-info.img: {types:?}"
    );
    let restored = restore_detached(&img, &[]);
    let r = Spawned::guard(restored);
    assert_eq!(restored, v.pid(), "restored with another pid");
    assert_eq!(check(r.pid(), &out), "ok", "after restore");
}
