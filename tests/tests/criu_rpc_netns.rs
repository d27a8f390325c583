//! A network namespace over RPC (issue 16): a counter in a network namespace of its own
//! (loopback up, one extra address) dumped over `criu swrk` with `notify_scripts`. The client
//! is told `network-lock` among the dump's stages, and `network-unlock` too when the dump
//! leaves the tree running; a restore with `empty_ns` = `CLONE_NEWNET` gives the root a new
//! network namespace with loopback only (the saved address is not made), tells the client
//! `network-unlock` before `post-resume`, and the counter carries on. A namespace named
//! external at dump (`external`) comes back from a descriptor given in `inherit_fd`.
//!
//! Every test runs as root, under the test lock and as a child subreaper, and kills and reaps
//! what it started.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use compel_criu_tests::{
    Exit, Spawned, Swrk, become_subreaper, counts_on, open_dir, req, skip_if_not_root, test_lock,
    wait_exit_timeout, wait_file,
};
use criu_images::pb::{CriuOpts, CriuReqType};

/// The counter (`DIR/count`) in a network namespace of its own.
fn spawn_in_netns(d: &Path) -> Spawned {
    let script = format!(
        "set -e
ip link set lo up
ip addr add 10.99.0.1/32 dev lo
exec {} {} {}
",
        env!("CARGO_BIN_EXE_criu-victim-counter"),
        d.join("count").display(),
        d.join("ready").display()
    );
    let v = Spawned::spawn(
        "/usr/bin/unshare",
        &["-n", "sh", "-c", &script],
        &d.join("victim.log"),
        None,
    );
    wait_file(&d.join("ready"), Duration::from_secs(10));
    v
}

/// `ip -o addr show` inside the network namespace of `pid`.
fn addrs(pid: i32) -> String {
    let o = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "ip", "-o", "addr", "show"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn network_stages_are_notified_and_empty_ns_makes_only_the_namespace() {
    skip_if_not_root!("network_stages_are_notified_and_empty_ns_makes_only_the_namespace");
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let img = d.path().join("img");
    std::fs::create_dir(&img).unwrap();
    let dir = std::fs::File::open(&img).unwrap();
    let mut v = spawn_in_netns(d.path());
    assert!(addrs(v.pid()).contains("10.99.0.1"));
    let dump = |leave_running: bool| {
        let s = Swrk::start(Duration::from_secs(60));
        let (r, seen) = s.call_acking(&req(
            CriuReqType::Dump,
            CriuOpts {
                images_dir_fd: dir.as_raw_fd(),
                pid: Some(v.pid()),
                log_file: Some("dump.log".into()),
                notify_scripts: Some(true),
                leave_running: Some(leave_running),
                ..Default::default()
            },
        ));
        assert!(r.success, "dump: {r:?}");
        s.finish();
        seen
    };
    // Left running: locked, then unlocked.
    let seen = dump(true);
    let lock = seen.iter().position(|a| a == "network-lock");
    let unlock = seen.iter().position(|a| a == "network-unlock");
    assert!(
        matches!((lock, unlock), (Some(l), Some(u)) if l < u),
        "dump -R stages: {seen:?}"
    );
    assert!(counts_on(d.path()), "the counter stopped after dump -R");
    // Killed: locked, and left so (the namespace goes with the tree).
    let seen = dump(false);
    assert!(seen.iter().any(|a| a == "network-lock"), "{seen:?}");
    assert!(!seen.iter().any(|a| a == "network-unlock"), "{seen:?}");
    assert_eq!(
        wait_exit_timeout(v.pid(), Duration::from_secs(5)),
        Ok(Some(Exit::Signal(libc::SIGKILL)))
    );
    v.mark_reaped();
    // Restored into an empty network namespace.
    let s = Swrk::start(Duration::from_secs(60));
    let (r, seen) = s.call_acking(&req(
        CriuReqType::Restore,
        CriuOpts {
            images_dir_fd: dir.as_raw_fd(),
            log_file: Some("restore.log".into()),
            notify_scripts: Some(true),
            empty_ns: Some(libc::CLONE_NEWNET as u32),
            ..Default::default()
        },
    ));
    assert!(r.success, "restore: {r:?}");
    let restored = Spawned::guard(r.restore.as_ref().map_or(-1, |x| x.pid));
    s.finish();
    assert_eq!(restored.pid(), v.pid());
    let unlock = seen.iter().position(|a| a == "network-unlock");
    let resume = seen.iter().position(|a| a == "post-resume");
    assert!(
        matches!((unlock, resume), (Some(u), Some(p)) if u < p),
        "restore stages: {seen:?}"
    );
    assert_ne!(
        std::fs::read_link(format!("/proc/{}/ns/net", restored.pid())).unwrap(),
        std::fs::read_link("/proc/self/ns/net").unwrap(),
        "the restored root is in criu's network namespace"
    );
    let a = addrs(restored.pid());
    assert!(
        !a.contains("10.99.0.1"),
        "empty_ns restored the address:\n{a}"
    );
    assert!(counts_on(d.path()), "the restored counter does not count");
    drop(restored);
}

/// `external` at dump and `inherit_fd` at restore over swrk: a counter whose network namespace
/// the test holds is dumped with `net[INO]:extnet` and restored into that very namespace,
/// handed to `criu swrk` as an inherited descriptor named in `inherit_fd`.
#[test]
fn inherit_fd_over_swrk_gives_back_an_external_network_namespace() {
    skip_if_not_root!("inherit_fd_over_swrk_gives_back_an_external_network_namespace");
    use std::os::unix::fs::MetadataExt;
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let img = d.path().join("img");
    std::fs::create_dir(&img).unwrap();
    let dir = std::fs::File::open(&img).unwrap();
    let mut v = spawn_in_netns(d.path());
    let ns = std::fs::File::open(format!("/proc/{}/ns/net", v.pid())).unwrap();
    let ino = ns.metadata().unwrap().ino();
    let s = Swrk::start(Duration::from_secs(60));
    let (r, _) = s.call_acking(&req(
        CriuReqType::Dump,
        CriuOpts {
            images_dir_fd: dir.as_raw_fd(),
            pid: Some(v.pid()),
            log_file: Some("dump.log".into()),
            external: vec![format!("net[{ino}]:extnet")],
            ..Default::default()
        },
    ));
    assert!(r.success, "dump: {r:?}");
    s.finish();
    assert_eq!(
        wait_exit_timeout(v.pid(), Duration::from_secs(5)),
        Ok(Some(Exit::Signal(libc::SIGKILL)))
    );
    v.mark_reaped();
    // The namespace's descriptor without close-on-exec while criu swrk starts: it inherits it.
    let held = nix::unistd::dup(&ns).unwrap();
    let s = Swrk::start(Duration::from_secs(60));
    let fd = held.as_raw_fd();
    let (r, _) = s.call_acking(&req(
        CriuReqType::Restore,
        CriuOpts {
            images_dir_fd: dir.as_raw_fd(),
            log_file: Some("restore.log".into()),
            inherit_fd: vec![criu_images::pb::InheritFd {
                key: "extnet".into(),
                fd,
            }],
            ..Default::default()
        },
    ));
    drop(held);
    assert!(r.success, "restore: {r:?}");
    let restored = Spawned::guard(r.restore.as_ref().map_or(-1, |x| x.pid));
    s.finish();
    assert_eq!(restored.pid(), v.pid());
    let got = std::fs::metadata(format!("/proc/{}/ns/net", restored.pid()))
        .unwrap()
        .ino();
    assert_eq!(got, ino, "not restored into the external namespace");
    assert!(addrs(restored.pid()).contains("10.99.0.1"));
    assert!(counts_on(d.path()), "the restored counter does not count");
    drop(restored);
}
