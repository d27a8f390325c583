//! `--inherit-fd fd[N]:tty[RDEV:DEV]` (CRIU's key: the dumped terminal's device numbers in
//! hex): a process holding a pty slave whose master is outside the tree is dumped, its pty is
//! gone, and on restore it gets the terminal the caller passes as descriptor N of criu; the
//! caller then talks to it through that terminal's master.

use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use compel_criu_tests::{
    Spawned, assert_ok_log, become_subreaper, criu_bin, dump_and_reap, pty, skip_if_not_root, talk,
    test_lock, wait_file,
};

fn spawn(d: &Path, slave: &str) -> Spawned {
    let (out, ready) = (d.join("out"), d.join("ready"));
    let v = Spawned::spawn(
        env!("CARGO_BIN_EXE_criu-victim-orphan-pts"),
        &[out.to_str().unwrap(), ready.to_str().unwrap(), slave],
        &d.join("victim.log"),
        None,
    );
    wait_file(&ready, Duration::from_secs(10));
    v
}

#[test]
fn an_orphan_slave_takes_the_terminal_passed_with_inherit_fd() {
    skip_if_not_root!("an_orphan_slave_takes_the_terminal_passed_with_inherit_fd");
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let (master, slave) = pty();
    let st = std::fs::metadata(&slave).unwrap();
    let key = format!("tty[{:x}:{:x}]", st.rdev() as u32, st.dev() as u32);
    let mut v = spawn(d.path(), &slave);
    let (verdict, seen) = talk(v.pid(), &master, &d.path().join("out"));
    assert!(verdict.starts_with("ok"), "before the dump: {verdict}");
    assert!(seen.contains("pong"), "{seen:?}");
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &["--orphan-pts-master"]);
    drop(master);

    // A new terminal, its slave passed to criu as descriptor 40.
    let (master2, slave2) = pty();
    let s2 = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&slave2)
        .unwrap();
    let raw = s2.as_raw_fd();
    let mut c = Command::new(criu_bin());
    c.args([
        "restore",
        "-D",
        img.to_str().unwrap(),
        "-o",
        "restore.log",
        "-v4",
        "-d",
        "--pidfile",
        "restored.pid",
        "--inherit-fd",
        &format!("fd[40]:{key}"),
    ])
    .stdin(Stdio::null());
    // SAFETY: dup2 between the fork and exec only duplicates a descriptor we hold.
    unsafe {
        c.pre_exec(move || {
            if libc::dup2(raw, 40) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let o = c.output().unwrap();
    assert_ok_log(&o, "criu restore", &img.join("restore.log"));
    let r: i32 = std::fs::read_to_string(img.join("restored.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _rv = Spawned::guard(r);
    assert_eq!(r, v.pid());
    drop(s2);
    let (verdict, seen) = talk(r, &master2, &d.path().join("out"));
    assert_eq!(verdict, format!("ok {slave2}"), "after restore");
    assert!(seen.contains("pong"), "the new master read {seen:?}");
}
