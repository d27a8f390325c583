//! An external pid namespace, as criu(8): a counter that lives in a pid namespace it does not
//! own (not its init) is dumped with `--external pid[INO]:KEY` (only the key is saved, in
//! `pidns-ID.img`; the images hold its pid inside the namespace); the restore without the
//! namespace is refused naming the key, and with `--inherit-fd fd[N]:KEY` the counter is forked
//! into that namespace with its old pid there, and counts on. Without `--external` the dump is
//! refused by name and the counter runs on.

use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use compel_criu_tests::counting::{counts, counts_on, restore_with_fd};
use compel_criu_tests::{
    Scratch, Spawned, assert_ok_log, become_subreaper, children_of, criu, criu_dump, criu_victim,
    ns_ino, pid_exists, proc_state, skip_if_not_root, test_lock, tracer_pid, wait_file,
};

/// The `NSpid` of `pid` (as we see it first).
fn nspid(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Ends a pid namespace and the test's processes around it whatever happened: the init first
/// (the kernel kills the rest of the namespace and waits until they are reaped), then the
/// others, reaping every child of ours that ended until the init is gone. (A guard per process
/// could deadlock: waiting for the init while it waits for a zombie only we can reap.)
struct Cleanup {
    init: i32,
    others: Vec<i32>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, kill};
        use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
        use nix::unistd::Pid;
        for &p in std::iter::once(&self.init).chain(&self.others) {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < end {
            while let Ok(s) = waitpid(None, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
                if s == WaitStatus::StillAlive {
                    break;
                }
            }
            if ![self.init]
                .iter()
                .chain(&self.others)
                .any(|&p| pid_exists(p))
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A pid namespace held by `unshare --pid --fork sleep 600`, and a counter put into it with
/// `nsenter` (its parent): the cleanup (which ends all of them) and the counter's pid.
fn counter_in_a_pid_namespace(d: &Path) -> (Cleanup, i32) {
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--pid", "--fork", "sleep", "600"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let unshare = cmd.spawn().expect("start unshare").id() as i32;
    let mut clean = Cleanup {
        init: 0,
        others: vec![unshare],
    };
    let end = std::time::Instant::now() + Duration::from_secs(10);
    clean.init = loop {
        if let Some(&init) = children_of(unshare).first()
            && nspid(init).last() == Some(&1)
        {
            break init;
        }
        assert!(std::time::Instant::now() < end, "unshare did not get going");
        std::thread::sleep(Duration::from_millis(10));
    };
    let (out, ready, log) = (d.join("count"), d.join("ready"), d.join("victim.log"));
    let target = clean.init.to_string();
    let mut nsenter = Spawned::spawn(
        "nsenter",
        &[
            "-t",
            &target,
            "--pid",
            &criu_victim("counter"),
            out.to_str().unwrap(),
            ready.to_str().unwrap(),
        ],
        &log,
        None,
    );
    // Ended by the cleanup.
    nsenter.mark_reaped();
    clean.others.push(nsenter.pid());
    wait_file(&ready, Duration::from_secs(10));
    let counter = children_of(nsenter.pid())[0];
    clean.others.push(counter);
    (clean, counter)
}

#[test]
fn external_pid_namespace_comes_back_from_inherit_fd() {
    skip_if_not_root!("external_pid_namespace_comes_back_from_inherit_fd");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let d = dir.root().to_path_buf();
    let (mut clean, counter) = counter_in_a_pid_namespace(&d);
    let nsenter = clean.others[1];
    let inside = *nspid(counter).last().unwrap();
    assert_ne!(inside, 1);
    let ns = std::fs::File::open(format!("/proc/{}/ns/pid", clean.init)).unwrap();
    let ino = ns.metadata().unwrap().ino();
    let ext = format!("pid[{ino}]:extpid");
    std::fs::create_dir_all(&dir.img).unwrap();
    assert_ok_log(
        &criu_dump(counter, &dir.img, &["-o", "dump.log", "--external", &ext]),
        "criu dump",
        &dir.img.join("dump.log"),
    );
    // nsenter ends with its child.
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while !matches!(proc_state(nsenter), None | Some('Z')) {
        assert!(std::time::Instant::now() < end, "nsenter runs on");
        std::thread::sleep(Duration::from_millis(10));
    }
    let at_dump = counts(&d);
    let img = criu_images::ImageDir::new(&dir.img);
    let tree = img.read_pstree().unwrap();
    assert_eq!(tree[0].pid, inside as u32, "the pid inside the namespace");
    let id = img
        .read_ids(inside as u32)
        .unwrap()
        .pid_ns_id
        .expect("a pid namespace id");
    let e: Vec<criu_images::pb::PidnsEntry> = criu_images::read_all(
        dir.img.join(format!("pidns-{id}.img")),
        criu_images::magic::PIDNS,
    )
    .unwrap();
    assert_eq!(e.first().and_then(|e| e.ext_key.as_deref()), Some("extpid"));

    // Without the namespace: refused, naming the key.
    let o = criu(&["restore", "-D", dir.img.to_str().unwrap(), "-d"]);
    assert!(
        !o.status.success(),
        "restored without the external namespace"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("extpid"), "{err}");
    assert_eq!(children_of(clean.init), Vec::<i32>::new());

    let o = restore_with_fd(&dir.img, ns.as_raw_fd(), &["--inherit-fd", "fd[40]:extpid"]);
    assert_ok_log(&o, "criu restore", &dir.img.join("restore.log"));
    let root: i32 = std::fs::read_to_string(dir.img.join("restored.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    clean.others.push(root);
    assert_eq!(ns_ino(root, "pid"), ino, "the restored counter's namespace");
    assert_eq!(nspid(root).last(), Some(&inside), "its pid inside");
    counts_on(&d, at_dump);
}

#[test]
fn a_pid_namespace_not_named_external_is_refused_when_the_root_is_not_its_init() {
    skip_if_not_root!(
        "a_pid_namespace_not_named_external_is_refused_when_the_root_is_not_its_init"
    );
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let d = dir.root().to_path_buf();
    let (_clean, counter) = counter_in_a_pid_namespace(&d);
    std::fs::create_dir_all(&dir.img).unwrap();
    let o = criu_dump(counter, &dir.img, &["-o", "dump.log"]);
    assert!(!o.status.success(), "the dump succeeded");
    let log = std::fs::read_to_string(dir.img.join("dump.log")).unwrap_or_default();
    assert!(log.contains("--external pid["), "{log}");
    assert_eq!(tracer_pid(counter), Some(0));
    let before = counts(&d);
    std::thread::sleep(Duration::from_millis(200));
    assert!(counts(&d) > before, "the counter does not run on");
}
