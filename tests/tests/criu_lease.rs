//! `criu dump --file-locks` then `criu restore` of a process holding file leases (`F_SETLEASE`):
//! a read lease, a write lease, and a read lease that someone was breaking at dump time, which
//! comes back being broken (CRIU's `LEASE_BREAKING` type in `filelocks.img`).

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, dump_and_reap, restore_detached, skip_if_not_root,
    test_lock, wait_file,
};
use criu_images::{magic, names, pb};

fn check(pid: i32, out: &Path) -> String {
    let _ = std::fs::remove_file(out);
    ask_check(pid, out)
}

/// Starts breaking the lease on `path` (an open for writing that does not wait), as another
/// process would.
fn start_break(path: &Path) {
    let e = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .expect_err("the leased file opened for writing at once");
    assert_eq!(e.raw_os_error(), Some(libc::EWOULDBLOCK), "open: {e}");
}

fn round_trip(break_it: bool) {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let (out, ready, files) = (
        d.path().join("out"),
        d.path().join("ready"),
        d.path().join("files"),
    );
    std::fs::create_dir(&files).unwrap();
    let mut v = Spawned::spawn(
        env!("CARGO_BIN_EXE_criu-victim-lease"),
        &[
            out.to_str().unwrap(),
            ready.to_str().unwrap(),
            files.to_str().unwrap(),
        ],
        &d.path().join("victim.log"),
        None,
    );
    wait_file(&ready, Duration::from_secs(10));
    let want = if break_it {
        start_break(&files.join("broken"));
        "ok broken"
    } else {
        "ok"
    };
    assert_eq!(check(v.pid(), &out), want, "before the dump");
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &["--file-locks"]);
    let locks: Vec<pb::FileLockEntry> =
        criu_images::read_all(img.join(names::FILE_LOCKS), magic::FILE_LOCKS)
            .expect("read filelocks.img");
    let mut leases: Vec<u32> = locks
        .iter()
        .filter(|l| l.flag == 8)
        .map(|l| l.r#type)
        .collect();
    leases.sort();
    let third = if break_it {
        4 | libc::F_UNLCK as u32
    } else {
        0
    };
    let mut expected = vec![0, 1, third];
    expected.sort();
    assert_eq!(leases, expected, "lease types in filelocks.img");
    let restored = restore_detached(&img, &[]);
    let r = Spawned::guard(restored);
    assert_eq!(restored, v.pid(), "restored with another pid");
    assert_eq!(check(r.pid(), &out), want, "after restore");
}

#[test]
fn read_and_write_leases_come_back() {
    skip_if_not_root!("read_and_write_leases_come_back");
    round_trip(false);
}

#[test]
fn a_lease_being_broken_comes_back_being_broken() {
    skip_if_not_root!("a_lease_being_broken_comes_back_being_broken");
    round_trip(true);
}
