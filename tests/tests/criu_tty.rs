//! `criu dump` then `criu restore` of a process holding a pseudo-terminal pair: the pty index,
//! termios, window size and packet mode come back, the bytes waiting in each direction arrive
//! once, the pair is still connected both ways; with a child whose controlling terminal is the
//! slave and whose grandchild's group is the foreground one, the session, its terminal and
//! foreground group come back. `tty-info.img` and
//! `tty-data.img` are written as CRIU 4.2 writes them. A pty slave whose master is outside the
//! tree is refused by name without `--shell-job`, and the tree runs on.

use std::path::Path;
use std::time::Duration;

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, criu_dump, dump_and_reap, pid_exists, restore_detached,
    test_lock, wait_file, workspace_bin,
};

fn spawn_victim(d: &Path, extra: &[&str]) -> Spawned {
    let (out, ready) = (d.join("out"), d.join("ready"));
    let mut args = vec![out.to_str().unwrap(), ready.to_str().unwrap()];
    args.extend_from_slice(extra);
    let v = Spawned::spawn(
        env!("CARGO_BIN_EXE_criu-victim-tty"),
        &args,
        &d.join("victim.log"),
        None,
    );
    wait_file(&ready, Duration::from_secs(10));
    v
}

/// Without a dump the victim's own check passes (so a `bad` after restore is the restore's).
#[test]
fn tty_victim_checks_pass_untouched() {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let v = spawn_victim(d.path(), &["ctty"]);
    let verdict = ask_check(v.pid(), &d.path().join("out"));
    let kids = children(v.pid());
    let grandkids: Vec<i32> = kids.iter().flat_map(|&c| children(c)).collect();
    for c in kids.into_iter().chain(grandkids) {
        // SAFETY: kill of the victim's child, which pauses forever.
        unsafe { libc::kill(c, libc::SIGKILL) };
    }
    drop(v);
    reap_orphans();
    assert_eq!(verdict, "ok");
}

#[test]
fn pty_pair_with_waiting_bytes_and_settings_survives_dump_and_restore() {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let mut v = spawn_victim(d.path(), &[]);
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    let dir = criu_images::ImageDir::new(&img);
    let files = dir.read_files().expect("read files.img");
    let ttys: Vec<_> = files.iter().filter_map(|e| e.tty.as_ref()).collect();
    assert_eq!(ttys.len(), 2, "one TTY entry per end");
    let mut r = criu_images::ImageReader::open_expect(
        img.join("tty-info.img"),
        criu_images::magic::TTY_INFO,
    )
    .expect("tty-info.img");
    let mut infos = Vec::new();
    while let Some(e) = r
        .read_entry::<criu_images::pb::TtyInfoEntry>()
        .expect("tty-info entry")
    {
        infos.push(e);
    }
    assert_eq!(infos.len(), 2, "one tty-info entry per end");
    let master = infos
        .iter()
        .find(|i| i.rdev == (5 << 8 | 2))
        .expect("master");
    assert!(master.packet_mode && !master.locked);
    let ws = master.winsize.as_ref().expect("winsize");
    assert_eq!((ws.ws_row, ws.ws_col), (33, 77));
    // CRIU 4.2 packs the 19 control characters four to a u32: VINTR is ^C in byte 0.
    let cc = &master.termios.as_ref().expect("termios").c_cc;
    assert_eq!((cc.len(), cc[0] & 0xff), (19, 3));
    let mut r = criu_images::ImageReader::open_expect(
        img.join("tty-data.img"),
        criu_images::magic::TTY_DATA,
    )
    .expect("tty-data.img");
    let mut data = Vec::new();
    while let Some(e) = r
        .read_entry::<criu_images::pb::TtyDataEntry>()
        .expect("tty-data entry")
    {
        data.push((e.tty_id == master.id, e.data));
    }
    data.sort();
    assert_eq!(
        data,
        vec![(false, b"to-slave".to_vec()), (true, b"to-master".to_vec())]
    );
    // Our crit prints both images with the fields CRIU's crit printed for the 4.2 fixture
    // (whose pty held the same two messages).
    let fixture = compel_criu_tests::fixtures_dir().join("files/crit-json");
    for name in ["tty-info.img", "tty-data.img"] {
        let crit = std::process::Command::new(workspace_bin("crit", "crit"))
            .args(["decode", "--pretty", "-i"])
            .arg(img.join(name))
            .output()
            .expect("run crit");
        let ours = String::from_utf8_lossy(&crit.stdout).to_string();
        let theirs = std::fs::read_to_string(fixture.join(format!("{name}.json")))
            .expect("the fixture's crit json");
        assert_eq!(keys(&ours), keys(&theirs), "crit decode of {name}: {ours}");
        if name == "tty-data.img" {
            assert!(
                ours.contains("dG8tbWFzdGVy") && ours.contains("dG8tc2xhdmU="),
                "{ours}"
            );
        }
    }
    let restored = restore_detached(&img, &[]);
    let r = Spawned::guard(restored);
    assert_eq!(restored, v.pid(), "restored with another pid");
    assert_eq!(ask_check(r.pid(), &d.path().join("out")), "ok");
}

#[test]
fn controlling_terminal_and_foreground_group_survive_dump_and_restore() {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let mut v = spawn_victim(d.path(), &["ctty"]);
    let child = children(v.pid());
    assert_eq!(child.len(), 1, "the victim has one child");
    let grandchild = children(child[0]);
    assert_eq!(grandchild.len(), 1, "the child has one child");
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    reap_orphans();
    let mut r = criu_images::ImageReader::open_expect(
        img.join("tty-info.img"),
        criu_images::magic::TTY_INFO,
    )
    .expect("tty-info.img");
    let mut sessions = Vec::new();
    while let Some(e) = r
        .read_entry::<criu_images::pb::TtyInfoEntry>()
        .expect("tty-info entry")
    {
        if e.sid != 0 {
            sessions.push((e.sid as i32, e.pgrp as i32));
        }
    }
    assert_eq!(
        sessions,
        vec![(child[0], grandchild[0])],
        "the pty's session and foreground group"
    );
    let restored = restore_detached(&img, &[]);
    let r = Spawned::guard(restored);
    let verdict = ask_check(r.pid(), &d.path().join("out"));
    let kids = children(restored);
    let grandkids: Vec<i32> = kids.iter().flat_map(|&c| children(c)).collect();
    for &c in kids.iter().chain(&grandkids) {
        // SAFETY: kill of the restored child, which pauses forever.
        unsafe { libc::kill(c, libc::SIGKILL) };
    }
    drop(r);
    reap_orphans();
    assert_eq!(kids, child, "the child came back with its pid");
    assert_eq!(
        grandkids, grandchild,
        "the grandchild came back with its pid"
    );
    assert_eq!(verdict, "ok");
}

/// The JSON keys of a crit output, sorted, without repeats.
fn keys(json: &str) -> Vec<String> {
    let mut k: Vec<String> = json
        .split('"')
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[1].trim_start().starts_with(':'))
        .map(|w| w[0].to_string())
        .collect();
    k.sort();
    k.dedup();
    k
}

/// The children of `pid`.
fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|c| c.parse().ok())
        .collect()
}

/// Reaps the victims' children left to this subreaper, until none is left or 5 s pass.
fn reap_orphans() {
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < end {
        let mut st = 0;
        // SAFETY: waitpid with a live status local.
        let r = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG | libc::__WALL) };
        if r < 0 {
            return;
        }
        if r == 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A pty slave whose master this test holds (outside the dumped tree).
#[test]
fn pty_slave_without_its_master_is_refused_by_name_and_the_tree_runs_on() {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    // SAFETY: posix_openpt returns a new descriptor we own (checked); unlockpt/ioctl on it.
    let (m, idx) = unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(m >= 0);
        assert_eq!(libc::unlockpt(m), 0);
        let mut n: libc::c_int = -1;
        assert_eq!(libc::ioctl(m, libc::TIOCGPTN, &mut n), 0);
        (m, n)
    };
    let pts = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/dev/pts/{idx}"))
        .unwrap();
    let (out, ready) = (d.path().join("out"), d.path().join("ready"));
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_criu-victim-tty"))
        .args([out.to_str().unwrap(), ready.to_str().unwrap()])
        .stdin(pts)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let v = Spawned::from_child(child);
    wait_file(&ready, Duration::from_secs(10));
    let img = d.path().join("img");
    std::fs::create_dir_all(&img).unwrap();
    let o = criu_dump(v.pid(), &img, &["-o", "dump.log"]);
    assert!(!o.status.success(), "a slave without its master was dumped");
    let log = std::fs::read_to_string(img.join("dump.log")).unwrap_or_default();
    let text = format!("{}{log}", String::from_utf8_lossy(&o.stderr));
    assert!(
        text.contains(&format!("/dev/pts/{idx}")) && text.contains("--shell-job"),
        "the refusal does not name the terminal: {text}"
    );
    assert!(pid_exists(v.pid()), "the victim died");
    // SAFETY: closing the master we opened.
    unsafe { libc::close(m) };
}
