//! `criu dump` then `criu restore` of a process holding `/dev/console` and a virtual console
//! (CRIU's `CONSOLE` and `VT` terminals): they come back as the character devices they are,
//! by path. A serial line is refused by name, and the process runs on. Skipped where the
//! machine has no such device to open.

use std::path::Path;
use std::time::Duration;

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, criu_dump, dump_and_reap, restore_detached,
    skip_if_not_root, test_lock, wait_file,
};
use criu_images::pb::Ttytype;
use criu_images::{ImageReader, magic, names};

fn openable(path: &str) -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)
        .is_ok()
}

use std::os::unix::fs::OpenOptionsExt;

fn spawn(d: &Path, paths: &[&str]) -> Spawned {
    let (out, ready) = (d.join("out"), d.join("ready"));
    let mut args = vec![out.to_str().unwrap(), ready.to_str().unwrap()];
    args.extend_from_slice(paths);
    let v = Spawned::spawn(
        env!("CARGO_BIN_EXE_criu-victim-console"),
        &args,
        &d.join("victim.log"),
        None,
    );
    wait_file(&ready, Duration::from_secs(10));
    v
}

fn check(pid: i32, out: &Path) -> String {
    let _ = std::fs::remove_file(out);
    ask_check(pid, out)
}

#[test]
fn console_and_virtual_console_come_back_by_path() {
    skip_if_not_root!("console_and_virtual_console_come_back_by_path");
    if !openable("/dev/console") || !openable("/dev/tty1") {
        eprintln!(
            "skipped console_and_virtual_console_come_back_by_path: no /dev/console or /dev/tty1 to open"
        );
        return;
    }
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let mut v = spawn(d.path(), &["/dev/console", "/dev/tty1"]);
    assert_eq!(
        check(v.pid(), &d.path().join("out")),
        "ok",
        "before the dump"
    );
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    let mut r = ImageReader::open_expect(img.join(names::TTY_INFO), magic::TTY_INFO).unwrap();
    let mut types = Vec::new();
    while let Some(e) = r.read_entry::<criu_images::pb::TtyInfoEntry>().unwrap() {
        types.push(e.r#type);
    }
    types.sort_unstable();
    assert_eq!(
        types,
        vec![Ttytype::Console as i32, Ttytype::Vt as i32],
        "tty-info.img"
    );
    let restored = restore_detached(&img, &[]);
    let r = Spawned::guard(restored);
    assert_eq!(restored, v.pid(), "restored with another pid");
    assert_eq!(check(r.pid(), &d.path().join("out")), "ok", "after restore");
}

#[test]
fn a_serial_line_is_refused_by_name() {
    skip_if_not_root!("a_serial_line_is_refused_by_name");
    if !openable("/dev/ttyS0") {
        eprintln!("skipped a_serial_line_is_refused_by_name: no /dev/ttyS0 to open");
        return;
    }
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let v = spawn(d.path(), &["/dev/ttyS0"]);
    let img = d.path().join("img");
    std::fs::create_dir_all(&img).unwrap();
    let o = criu_dump(v.pid(), &img, &["-o", "dump.log"]);
    assert!(!o.status.success(), "a serial line was dumped");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("serial line /dev/ttyS0"), "stderr: {err}");
    assert_eq!(
        check(v.pid(), &d.path().join("out")),
        "ok",
        "after the refused dump"
    );
}
