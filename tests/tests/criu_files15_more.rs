//! Issue 15, the asks not covered elsewhere:
//!
//! - descriptors of every kind of namespace (`/proc/self/ns/` net, mnt, uts, ipc, pid, user,
//!   time, cgroup) come back as the namespaces the process lives in;
//! - inotify events pending at the dump are dropped, as CRIU does, and the watch still fires;
//! - a pty master whose slave was never opened keeps its index and its lock (`TIOCSPTLCK`), next
//!   to an unlocked pair;
//! - a FIFO read here and written by a child (two open files on one FIFO, across processes)
//!   delivers its unread bytes once after the restore, its writer still there;
//! - a read lease next to a POSIX lock and a `flock` of the same process all come back;
//! - corrupt entries of these kinds (an inotify watch descriptor 0, a fanotify mark of an
//!   unknown type, a pidfd of pid -5) fail the restore before any task runs, naming the kind.
//!
//! Runs as root, under the test lock and as a child subreaper.

use std::path::Path;

use compel_criu_tests::{
    OwnTmpfs, Spawned, ask_check, become_subreaper, dump_and_reap, restore_detached,
    skip_if_not_root, spawn_ready_with, stderr_text, test_lock,
};

const BIN: &str = env!("CARGO_BIN_EXE_criu-victim-files15");

/// Spawns mode `mode` with `args`, checks it, dumps it into `DIR/img`, restores it and has it
/// check itself again.
fn round_trip(d: &Path, mode: &str, args: &[&str]) {
    let mut v = spawn_ready_with(BIN, d, &[mode], args);
    let out = d.join("out");
    assert_eq!(ask_check(v.pid(), &out), "ok", "{mode} before the dump");
    std::fs::remove_file(&out).unwrap();
    dump_and_reap(&mut v, &d.join("img"), &[]);
    let restored = restore_detached(&d.join("img"), &[]);
    let r = Spawned::guard(restored);
    assert_eq!(ask_check(r.pid(), &out), "ok", "{mode} after the restore");
}

#[test]
fn descriptors_of_every_namespace_kind_come_back() {
    skip_if_not_root!("descriptors_of_every_namespace_kind_come_back");
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    round_trip(d.path(), "nsfd-all", &[]);
}

#[test]
fn locked_pty_master_without_its_slave_keeps_index_and_lock() {
    skip_if_not_root!("locked_pty_master_without_its_slave_keeps_index_and_lock");
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    round_trip(d.path(), "pty-locked", &[]);
}

#[test]
fn fifo_reader_and_writer_in_two_processes_deliver_their_bytes_once() {
    skip_if_not_root!("fifo_reader_and_writer_in_two_processes_deliver_their_bytes_once");
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("f");
    std::fs::create_dir(&dir).unwrap();
    let mut v = spawn_ready_with(BIN, d.path(), &["fifo-pair"], &[dir.to_str().unwrap()]);
    let child: i32 = std::fs::read_to_string(d.path().join("out.pids"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    {
        let _c = Spawned::guard(child);
        dump_and_reap(&mut v, &d.path().join("img"), &[]);
    }
    let restored = restore_detached(&d.path().join("img"), &[]);
    let r = Spawned::guard(restored);
    let _c = Spawned::guard(child);
    let out = d.path().join("out");
    assert_eq!(ask_check(r.pid(), &out), "ok", "first read");
    std::fs::remove_file(&out).unwrap();
    assert_eq!(ask_check(r.pid(), &out), "ok", "nothing read twice");
}

#[test]
fn lease_next_to_posix_and_flock_locks_comes_back() {
    skip_if_not_root!("lease_next_to_posix_and_flock_locks_comes_back");
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("l");
    std::fs::create_dir(&dir).unwrap();
    let mut v = spawn_ready_with(BIN, d.path(), &["lease-lock"], &[dir.to_str().unwrap()]);
    let out = d.path().join("out");
    assert_eq!(ask_check(v.pid(), &out), "ok");
    std::fs::remove_file(&out).unwrap();
    dump_and_reap(&mut v, &d.path().join("img"), &["--file-locks"]);
    let restored = restore_detached(&d.path().join("img"), &[]);
    let r = Spawned::guard(restored);
    assert_eq!(ask_check(r.pid(), &out), "ok");
}

/// Without a dump the pending event is still there (the check can fail); after a dump and
/// restore it is gone and the watch fires.
#[test]
fn inotify_events_pending_at_the_dump_are_dropped() {
    skip_if_not_root!("inotify_events_pending_at_the_dump_are_dropped");
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("watched");
    std::fs::write(&file, b"x").unwrap();
    let f = file.to_str().unwrap();
    {
        let untouched = spawn_ready_with(BIN, d.path(), &["inotify-scan"], &[f, "pending"]);
        let said = ask_check(untouched.pid(), &d.path().join("out"));
        assert!(said.contains("still queued"), "{said}");
        std::fs::remove_file(d.path().join("out")).unwrap();
        std::fs::remove_file(d.path().join("ready")).unwrap();
    }
    let mut v = spawn_ready_with(BIN, d.path(), &["inotify-scan"], &[f, "pending"]);
    dump_and_reap(&mut v, &d.path().join("img"), &[]);
    let restored = restore_detached(&d.path().join("img"), &[]);
    let r = Spawned::guard(restored);
    assert_eq!(ask_check(r.pid(), &d.path().join("out")), "ok");
}

/// Dumps mode `mode`, changes its `files.img` with `damage`, and expects the restore to fail
/// naming `want`, with no task of the tree left.
fn refused_after(
    d: &Path,
    mode: &str,
    args: &[&str],
    damage: impl Fn(&mut criu_images::pb::FileEntry),
    want: &str,
) {
    std::fs::create_dir_all(d).unwrap();
    let mut v = spawn_ready_with(BIN, d, &[mode], args);
    let pid = v.pid();
    let img = d.join("img");
    dump_and_reap(&mut v, &img, &[]);
    let dir = criu_images::ImageDir::new(&img);
    let mut files = dir.read_files().unwrap();
    files.iter_mut().for_each(&damage);
    dir.write_files(&files).unwrap();
    let o = compel_criu_tests::criu(&["restore", "-d", "-D", img.to_str().unwrap()]);
    let err = stderr_text(&o);
    assert!(!o.status.success(), "{mode}: the damaged restore succeeded");
    assert!(err.contains(want), "{mode}: {err}");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "{mode}: a task of the refused restore runs"
    );
}

#[test]
fn corrupt_inotify_fanotify_and_pidfd_entries_fail_the_restore_before_tasks_run() {
    skip_if_not_root!(
        "corrupt_inotify_fanotify_and_pidfd_entries_fail_the_restore_before_tasks_run"
    );
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("watched");
    std::fs::write(&file, b"x").unwrap();
    refused_after(
        &d.path().join("a"),
        "inotify-scan",
        &[file.to_str().unwrap()],
        |f| {
            if let Some(i) = f.ify.as_mut() {
                i.wd.iter_mut().for_each(|w| w.wd = 0);
            }
        },
        "watch descriptor 0",
    );
    let fs = OwnTmpfs::mount(&d.path().join("fs"), "size=1m").expect("mount a tmpfs");
    refused_after(
        &d.path().join("b"),
        "fanotify-fs",
        &[fs.path().to_str().unwrap()],
        |f| {
            if let Some(g) = f.ffy.as_mut() {
                g.mark.iter_mut().for_each(|m| m.r#type = 9);
            }
        },
        "a mark of type 9",
    );
    refused_after(
        &d.path().join("c"),
        "pidfd-thread-shared",
        &[],
        |f| {
            if let Some(p) = f.pidfd.as_mut() {
                p.nspid = -5;
            }
        },
        "pidfd fd 50: pid -5",
    );
}
