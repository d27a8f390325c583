//! A unix socket name that someone else took between the dump and the restore (an abstract
//! name, or a path another process now listens on) fails the restore before any task of the
//! tree exists, naming the name, and the failed restore leaves no socket file behind; once the
//! name is free again, the same images restore and the victim checks itself.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, children_of, criu, dump_and_reap, pid_exists,
    restore_detached, skip_if_not_root, spawn_ready_with, stderr_text, test_lock,
};

const VICTIM: &str = env!("CARGO_BIN_EXE_criu-victim-sockets");

/// The victim (`criu-victim-sockets`, its work directory `D/work`) dumped and killed, with its
/// child reaped; returns (pid, child pid, image dir, work dir).
fn dumped(d: &Path) -> (i32, i32, PathBuf, PathBuf) {
    let work = d.join("work");
    std::fs::create_dir(&work).unwrap();
    let mut v = spawn_ready_with(VICTIM, d, &[], &[work.to_str().unwrap()]);
    let mut kid = None;
    for _ in 0..500 {
        if let Some(&k) = children_of(v.pid()).first() {
            kid = Some(k);
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut k = Spawned::guard(kid.expect("the victim's child"));
    let img = d.join("img");
    let pid = v.pid();
    dump_and_reap(&mut v, &img, &[]);
    assert!(
        k.wait(Duration::from_secs(5)).is_some(),
        "the dump did not kill the child"
    );
    (pid, k.pid(), img, work)
}

/// The names in `dir` with their inodes, sorted.
fn listing(dir: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let ino = e.metadata().unwrap().ino();
            (e.file_name().to_string_lossy().into_owned(), ino)
        })
        .collect();
    v.sort();
    v
}

/// A restore that must fail: its stderr, after checking that no task of the tree was made
/// (the log never says the root was created, and neither pid exists).
fn failed_restore(img: &Path, pid: i32, kid: i32) -> String {
    let o = criu(&[
        "restore",
        "-D",
        img.to_str().unwrap(),
        "-o",
        "restore-bad.log",
        "-v4",
        "-d",
    ]);
    let err = stderr_text(&o);
    assert!(!o.status.success(), "the restore succeeded: {err}");
    let log = std::fs::read_to_string(img.join("restore-bad.log")).unwrap();
    assert!(
        !log.contains("root created"),
        "a task was made before the failure:\n{log}"
    );
    assert!(!pid_exists(pid) && !pid_exists(kid), "a task is left");
    err
}

/// Restores `img` again and asks the victim to check itself.
fn restores_now(img: &Path, d: &Path, pid: i32, kid: i32) {
    let r = restore_detached(img, &[]);
    assert_eq!(r, pid, "restored with another pid");
    let rv = Spawned::guard(r);
    let _rk = Spawned::guard(kid);
    let _ = std::fs::remove_file(d.join("out"));
    assert_eq!(ask_check(rv.pid(), &d.join("out")), "check ok");
}

#[test]
fn an_abstract_name_taken_since_the_dump_fails_the_restore_naming_it() {
    skip_if_not_root!("an_abstract_name_taken_since_the_dump_fails_the_restore_naming_it");
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let (pid, kid, img, work) = dumped(d.path());
    // The stale socket files of the killed victim go, so the directory holds nothing a
    // failed restore could leave.
    for f in ["dgram", "rel.sock"] {
        std::fs::remove_file(work.join(f)).unwrap();
    }
    let name = format!("criu-sk-{pid}");
    let other = UnixListener::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
        .expect("take the victim's abstract name");

    let err = failed_restore(&img, pid, kid);
    assert!(
        err.contains(&format!("@{name}")) && err.contains("taken"),
        "stderr: {err}"
    );
    // DIR/dgram is bound before the abstract name (the victim made it first): the failed
    // restore removed it again.
    assert_eq!(listing(&work), vec![], "left in the work directory");

    drop(other);
    restores_now(&img, d.path(), pid, kid);
}

#[test]
fn a_path_another_process_listens_on_fails_the_restore_naming_it() {
    skip_if_not_root!("a_path_another_process_listens_on_fails_the_restore_naming_it");
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let (pid, kid, img, work) = dumped(d.path());
    std::fs::remove_file(work.join("dgram")).unwrap();
    // Another process's listener now at the victim's relative name rel.sock.
    std::fs::remove_file(work.join("rel.sock")).unwrap();
    let other = UnixListener::bind(work.join("rel.sock")).unwrap();
    let before = listing(&work);

    let err = failed_restore(&img, pid, kid);
    let full = format!("{}/rel.sock", work.display());
    assert!(
        err.contains(&full) && err.contains("taken by another socket"),
        "stderr: {err}"
    );
    // Nothing bound by the failed restore is left (dgram was bound before rel.sock), and the
    // other process's file is untouched.
    assert_eq!(listing(&work), before, "the work directory changed");
    assert!(other.local_addr().unwrap().as_pathname().is_some());

    drop(other);
    std::fs::remove_file(work.join("rel.sock")).unwrap();
    restores_now(&img, d.path(), pid, kid);
}

#[test]
fn a_path_another_file_took_fails_the_restore_naming_it() {
    skip_if_not_root!("a_path_another_file_took_fails_the_restore_naming_it");
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let (pid, kid, img, work) = dumped(d.path());
    std::fs::remove_file(work.join("rel.sock")).unwrap();
    // A regular file where the datagram receiver's name DIR/dgram was.
    std::fs::remove_file(work.join("dgram")).unwrap();
    std::fs::write(work.join("dgram"), b"mine").unwrap();
    let before = listing(&work);

    let err = failed_restore(&img, pid, kid);
    let full = format!("{}/dgram", work.display());
    assert!(
        err.contains(&full) && err.contains("taken by another file"),
        "stderr: {err}"
    );
    assert_eq!(listing(&work), before, "the work directory changed");
    assert_eq!(std::fs::read(work.join("dgram")).unwrap(), b"mine");

    std::fs::remove_file(work.join("dgram")).unwrap();
    restores_now(&img, d.path(), pid, kid);
}
