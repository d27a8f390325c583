//! `criu dump` then `criu restore`: the victim comes back with the same pid and continues, and
//! its own checks of its state pass.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use compel_criu_tests::{
    Spawned, UNPRIVILEGED_ID, ask_check, assert_ok_log, become_subreaper, criu, criu_victim,
    dump_and_reap, open_dir, restore_detached, signal, test_lock, wait_file,
};
use nix::sys::signal::Signal;

fn spawn(name: &str, args: &[&str], log: &Path, uid: Option<u32>) -> Spawned {
    Spawned::spawn(criu_victim(name), args, log, uid)
}

/// Dumps `v` (killing it), checks it died, restores it detached, and returns the restored
/// process (a child of this subreaper once criu exits).
fn dump_and_restore(v: &mut Spawned, d: &Path) -> Spawned {
    let img = d.join("img");
    dump_and_reap(v, &img, &[]);
    let restored = Spawned::guard(restore_detached(&img, &[]));
    assert_eq!(restored.pid(), v.pid(), "restored with another pid");
    restored
}

#[test]
fn counter_continues_after_restore() {
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let out = d.path().join("count");
    let ready = d.path().join("ready");
    let mut v = spawn(
        "counter",
        &[out.to_str().unwrap(), ready.to_str().unwrap()],
        &d.path().join("victim.log"),
        None,
    );
    wait_file(&ready, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(50));
    let r = dump_and_restore(&mut v, d.path());
    let before = std::fs::read_to_string(&out).unwrap().lines().count();
    std::thread::sleep(Duration::from_millis(200));
    let text = std::fs::read_to_string(&out).unwrap();
    let nums: Vec<u64> = text.lines().map(|l| l.parse().unwrap()).collect();
    assert!(
        nums.len() > before + 5,
        "not counting after restore: {before} -> {}",
        nums.len()
    );
    for w in nums.windows(2) {
        assert_eq!(w[1], w[0] + 1, "the sequence broke across dump/restore");
    }
    drop(r);
}

#[test]
fn memory_patterns_survive() {
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let ready = d.path().join("ready");
    let mut v = spawn(
        "memory",
        &[
            d.path().join("data").to_str().unwrap(),
            ready.to_str().unwrap(),
        ],
        &d.path().join("victim.log"),
        None,
    );
    wait_file(&ready, Duration::from_secs(10));
    let r = dump_and_restore(&mut v, d.path());
    assert_eq!(ask_check(r.pid(), &d.path().join("ready.2")), "check ok");
}

#[test]
fn handlers_timers_limits_survive() {
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let ready = d.path().join("ready");
    let mut v = spawn(
        "state",
        &[ready.to_str().unwrap()],
        &d.path().join("victim.log"),
        None,
    );
    wait_file(&ready, Duration::from_secs(10));
    // A blocked pending signal comes back pending.
    signal(v.pid(), Signal::SIGHUP);
    let r = dump_and_restore(&mut v, d.path());
    let status = std::fs::read_to_string(format!("/proc/{}/status", r.pid())).unwrap();
    assert!(status.contains("ShdPnd:\t0000000000000001"), "{status}");
    assert_eq!(ask_check(r.pid(), &d.path().join("ready.2")), "check ok");
}

#[test]
fn files_survive_with_offsets_and_ghost() {
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let fdir: PathBuf = d.path().join("files");
    std::fs::create_dir(&fdir).unwrap();
    let ready = d.path().join("ready");
    let mut v = spawn(
        "files",
        &[fdir.to_str().unwrap(), ready.to_str().unwrap()],
        &d.path().join("victim.log"),
        None,
    );
    wait_file(&ready, Duration::from_secs(10));
    let r = dump_and_restore(&mut v, d.path());
    assert_eq!(ask_check(r.pid(), &d.path().join("ready.2")), "check ok");
    // The ghost file is not left visible.
    assert!(!fdir.join("gone").exists());
}

#[test]
fn other_uid_survives() {
    let _g = test_lock();
    compel_criu_tests::skip_if_not_root!("other_uid_survives");
    become_subreaper();
    let d = open_dir();
    let ready = d.path().join("ready");
    let mut v = spawn(
        "state",
        &[ready.to_str().unwrap()],
        &d.path().join("victim.log"),
        Some(UNPRIVILEGED_ID),
    );
    wait_file(&ready, Duration::from_secs(10));
    let r = dump_and_restore(&mut v, d.path());
    let status = std::fs::read_to_string(format!("/proc/{}/status", r.pid())).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uid_line.split_whitespace().skip(1).collect::<Vec<_>>(),
        vec!["65534"; 4]
    );
    assert_eq!(ask_check(r.pid(), &d.path().join("ready.2")), "check ok");
}

/// A pty pair: the master stays here, the slave's path is returned.
fn open_pty() -> (std::fs::File, PathBuf) {
    use std::os::fd::FromRawFd;
    // SAFETY: posix_openpt returns a new descriptor we own (checked); grantpt/unlockpt/ptsname_r
    // act on it and write the name into a local buffer of the size given.
    unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(m >= 0);
        assert_eq!(libc::grantpt(m), 0);
        assert_eq!(libc::unlockpt(m), 0);
        let mut name = [0 as libc::c_char; 64];
        assert_eq!(libc::ptsname_r(m, name.as_mut_ptr(), name.len()), 0);
        let path = std::ffi::CStr::from_ptr(name.as_ptr())
            .to_string_lossy()
            .into_owned();
        (std::fs::File::from_raw_fd(m), PathBuf::from(path))
    }
}

#[test]
fn shell_job_on_a_terminal() {
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let (_master, pts) = open_pty();
    let out = d.path().join("count");
    let ready = d.path().join("ready");
    let tty = || {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&pts)
            .unwrap()
    };
    let mut cmd = Command::new(criu_victim("counter"));
    cmd.args([out.to_str().unwrap(), ready.to_str().unwrap()])
        .stdin(tty())
        .stdout(tty())
        .stderr(tty());
    // SAFETY: close_range is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    let mut v = Spawned::from_child(child);
    wait_file(&ready, Duration::from_secs(10));
    let img = d.path().join("img");
    std::fs::create_dir_all(&img).unwrap();
    let pid = v.pid().to_string();
    // Without --shell-job a terminal is refused, and the task runs on.
    let o = criu(&["dump", "-t", &pid, "-D", img.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--shell-job"), "{err}");
    assert!(std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok());
    // With it, the terminal is saved by path and the task comes back on it.
    dump_and_reap(&mut v, &img, &["--shell-job"]);
    let files = criu_images::ImageDir::new(&img).read_files().unwrap();
    assert!(
        files
            .iter()
            .any(|f| f.reg.as_ref().is_some_and(|r| Path::new(&r.name) == pts)),
        "{files:?}"
    );
    let o = criu(&[
        "restore",
        "-D",
        img.to_str().unwrap(),
        "--shell-job",
        "-d",
        "-o",
        "restore.log",
        "-v4",
        "--pidfile",
        "p",
    ]);
    assert_ok_log(&o, "restore --shell-job", &img.join("restore.log"));
    let r = Spawned::guard(v.pid());
    assert_eq!(
        std::fs::read_link(format!("/proc/{}/fd/0", r.pid())).unwrap(),
        pts
    );
    let n = std::fs::read_to_string(&out).unwrap().lines().count();
    std::thread::sleep(Duration::from_millis(100));
    assert!(std::fs::read_to_string(&out).unwrap().lines().count() > n);
}
