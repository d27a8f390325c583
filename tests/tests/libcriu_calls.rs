//! The libcriu calls `criu_rpc_libcriu.rs` does not make, from a C program written against
//! CRIU's `criu.h` (`tests/c/libcriu_more.c`), built with gcc against ours:
//!
//! - `criu_set_service_fd`: the program starts `criu swrk FD` itself, as runc does, and dumps
//!   a counter (left running) over its own socket;
//! - `criu_pre_dump`, `criu_dump_iters` (two pre-dumps and the dump, the callback moving the
//!   images directory and its parent between them) and `criu_restore_child` (the restored root
//!   is the program's child);
//! - `criu_get_orphan_pts_master_fd`: a restore with `orphan_pts_master`; the new master is
//!   taken in the notification and the program talks to the restored victim through it.
//!
//! Every test runs as root, under the test lock and as a child subreaper, and kills and reaps
//! what it started.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use compel_criu_tests::c_host::build_libcriu_client;
use compel_criu_tests::pty::dump_orphan_pts_victim;
use compel_criu_tests::{
    Exit, Spawned, become_subreaper, counts_on, criu_bin, open_dir, pid_exists, skip_if_not_root,
    spawn_counter, test_lock, wait_exit_timeout, wait_file,
};

const COUNTER: &str = env!("CARGO_BIN_EXE_criu-victim-counter");

fn client(work: &Path, mode: &str, dir: &Path, pid: i32) -> Command {
    let mut c = Command::new(build_libcriu_client(work, "libcriu_more"));
    c.arg(criu_bin()).arg(mode).arg(dir).arg(pid.to_string());
    c
}

fn log(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

#[test]
fn criu_set_service_fd_talks_over_the_client_s_own_swrk_socket() {
    skip_if_not_root!("criu_set_service_fd_talks_over_the_client_s_own_swrk_socket");
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let img = d.path().join("img");
    std::fs::create_dir(&img).unwrap();
    let v = spawn_counter(COUNTER, d.path(), None);
    let o = client(d.path(), "fd", &img, v.pid()).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    let why = format!(
        "{text}{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        log(&img, "fd-dump.log")
    );
    assert!(o.status.success(), "{why}");
    assert!(text.lines().any(|l| l == "fd dump 0"), "{why}");
    assert!(text.lines().any(|l| l == "criu exited 0"), "{why}");
    assert!(img.join("inventory.img").exists(), "{why}");
    assert!(counts_on(d.path()), "left running, but it stopped");
    drop(v);
}

#[test]
fn pre_dump_dump_iters_and_restore_child() {
    skip_if_not_root!("pre_dump_dump_iters_and_restore_child");
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let base = d.path().join("imgs");
    for sub in ["single", "pre1", "pre2", "final"] {
        std::fs::create_dir_all(base.join(sub)).unwrap();
    }
    let mut v = spawn_counter(COUNTER, d.path(), None);
    let mut child = client(d.path(), "iters", &base, v.pid())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut text = String::new();
    while !text.lines().any(|l| l.starts_with("iters ")) {
        if stdout.read_line(&mut text).unwrap() == 0 {
            break;
        }
    }
    if text.lines().any(|l| l == "iters 0") {
        assert_eq!(
            wait_exit_timeout(v.pid(), Duration::from_secs(5)),
            Ok(Some(Exit::Signal(libc::SIGKILL))),
            "the dump did not kill the victim"
        );
    }
    v.mark_reaped();
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(b"go\n");
    drop(stdin);
    stdout.read_to_string(&mut text).unwrap();
    let o = child.wait_with_output().unwrap();
    // Whatever was restored is ours now (the client is gone).
    let restored = Spawned::guard(v.pid());
    let why = format!(
        "{text}{}\n{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        log(&base.join("pre1"), "iters.log")
            + &log(&base.join("pre2"), "iters.log")
            + &log(&base.join("final"), "iters.log"),
        log(&base.join("final"), "restore.log")
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(o.status.success(), "{why}");
    // criu_pre_dump: one pre-dump, memory written, the victim running on.
    assert!(lines.contains(&"pre_dump 0"), "{why}");
    let pages = |sub: &str| {
        std::fs::read_dir(base.join(sub))
            .unwrap()
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().starts_with("pages-"))
    };
    assert!(pages("single"), "no pages in the single pre-dump");
    // criu_dump_iters: more() called after each pre-dump, the dump last.
    assert!(
        lines.contains(&"more 1") && lines.contains(&"more 2"),
        "{why}"
    );
    assert!(lines.contains(&"iters 0"), "{why}");
    assert!(pages("pre1") && pages("pre2"), "{why}");
    for (sub, parent) in [
        ("pre1", "../single"),
        ("pre2", "../pre1"),
        ("final", "../pre2"),
    ] {
        assert_eq!(
            std::fs::read_link(base.join(sub).join("parent"))
                .unwrap()
                .display()
                .to_string(),
            parent
        );
    }
    assert!(base.join("final/inventory.img").exists(), "{why}");
    // criu_restore_child: the program's child, not reaped by it.
    assert!(
        lines.contains(&format!("restored child {} ours 1", v.pid()).as_str()),
        "{why}"
    );
    assert!(lines.contains(&"not reaped 1"), "{why}");
    assert!(pid_exists(v.pid()));
    assert!(counts_on(d.path()), "the restored victim does not count");
    drop(restored);
}

#[test]
fn criu_get_orphan_pts_master_fd_hands_over_the_new_master() {
    skip_if_not_root!("criu_get_orphan_pts_master_fd_hands_over_the_new_master");
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let (pid, img) = dump_orphan_pts_victim(d.path());
    let out = d.path().join("out");
    let _ = std::fs::remove_file(&out);
    let o = client(d.path(), "pts", &img, pid).output().unwrap();
    let restored = Spawned::guard(pid);
    let text = String::from_utf8_lossy(&o.stdout);
    let why = format!(
        "{text}{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        log(&img, "restore.log")
    );
    assert!(o.status.success(), "{why}");
    assert!(
        text.lines().any(|l| l == "orphan-pts-master fd yes"),
        "{why}"
    );
    assert!(
        text.lines().any(|l| l == format!("restored {pid}")),
        "{why}"
    );
    assert!(text.lines().any(|l| l == "pong 1"), "{why}");
    let verdict = wait_file(&out, Duration::from_secs(10));
    assert!(verdict.starts_with("ok /dev/pts/"), "{verdict}");
    drop(restored);
}
