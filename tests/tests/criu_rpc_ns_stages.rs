//! The namespace stages of a restore over RPC (issue 16): a tree in a UTS namespace of its own
//! is restored over `criu swrk` with `notify_scripts`; the client sees `setup-namespaces` and
//! then `post-setup-namespaces`, both with the restored root's pid, between `pre-restore` and
//! `post-restore`, and at `setup-namespaces` the root is already in its new namespace. A
//! client that answers false at `setup-namespaces` gets a failed restore and nothing is left:
//! no process with the tree's pid, no task in criu's namespaces, and the images restore again.
//!
//! Every test runs as root, under the test lock and as a child subreaper, and kills and reaps
//! what it started.

use std::os::fd::AsRawFd;
use std::time::Duration;

use compel_criu_tests::{
    Exit, Spawned, Swrk, become_subreaper, criu_dump, open_dir, pid_exists, skip_if_not_root,
    spawn_uts_holder, test_lock, uts_ns, wait_exit_timeout,
};
use criu_images::pb::{CriuOpts, CriuReq, CriuReqType, CriuResp};

/// The next message, which must be the notification `action`.
fn expect_notify(s: &Swrk, action: &str) -> CriuResp {
    let r = s.recv().expect("a notification");
    assert_eq!(r.r#type, CriuReqType::Notify as i32, "{r:?}");
    assert!(r.success, "{r:?}");
    assert_eq!(
        r.notify.as_ref().and_then(|n| n.script.as_deref()),
        Some(action),
        "{r:?}"
    );
    r
}

fn ack(s: &Swrk, ok: bool) {
    s.send(&CriuReq {
        r#type: CriuReqType::Notify as i32,
        notify_success: Some(ok),
        ..Default::default()
    });
}

fn restore_req(dir: &std::fs::File, log: &str) -> CriuReq {
    CriuReq {
        r#type: CriuReqType::Restore as i32,
        opts: Some(CriuOpts {
            images_dir_fd: dir.as_raw_fd(),
            notify_scripts: Some(true),
            log_file: Some(log.into()),
            log_level: Some(4),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Dumps a sleeper in a UTS namespace of its own into `img` (killing it) and returns its pid.
fn dumped_uts_holder(img: &std::path::Path) -> i32 {
    let mut holder = spawn_uts_holder();
    let pid = holder.pid();
    assert_ne!(uts_ns(pid), uts_ns(std::process::id() as i32));
    let o = criu_dump(pid, img, &[]);
    assert!(
        o.status.success(),
        "dump: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        wait_exit_timeout(pid, Duration::from_secs(5)),
        Ok(Some(Exit::Signal(libc::SIGKILL)))
    );
    holder.mark_reaped();
    pid
}

#[test]
fn setup_namespaces_and_post_setup_namespaces_come_in_order_with_the_root_s_pid() {
    skip_if_not_root!(
        "setup_namespaces_and_post_setup_namespaces_come_in_order_with_the_root_s_pid"
    );
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let img = d.path().join("img");
    std::fs::create_dir(&img).unwrap();
    let pid = dumped_uts_holder(&img);
    let dir = std::fs::File::open(&img).unwrap();

    let s = Swrk::start(Duration::from_secs(30));
    s.send(&restore_req(&dir, "restore.log"));
    let mut seen = Vec::new();
    let r = loop {
        let r = s.recv().expect("a notification or the answer");
        if r.r#type != CriuReqType::Notify as i32 {
            break r;
        }
        let n = r.notify.clone().unwrap_or_default();
        let action = n.script.unwrap_or_default();
        if action == "setup-namespaces" {
            // The root is in the tree's own namespace already, not in criu's.
            let root = n.pid.expect("setup-namespaces carries the root's pid");
            assert_ne!(
                uts_ns(root),
                uts_ns(std::process::id() as i32),
                "at setup-namespaces the root is in its new uts namespace"
            );
        }
        seen.push((action, n.pid));
        ack(&s, true);
    };
    assert!(r.success, "restore: {r:?}");
    assert_eq!(r.r#type, CriuReqType::Restore as i32);
    let root = r.restore.map_or(-1, |x| x.pid);
    assert_eq!(root, pid, "the tree comes back with its pid");
    let _restored = Spawned::guard(root);
    let names: Vec<&str> = seen.iter().map(|(a, _)| a.as_str()).collect();
    let at = |a: &str| {
        names
            .iter()
            .position(|n| *n == a)
            .unwrap_or_else(|| panic!("{a} not sent: {names:?}"))
    };
    assert!(at("pre-restore") < at("setup-namespaces"), "{names:?}");
    assert_eq!(
        at("setup-namespaces") + 1,
        at("post-setup-namespaces"),
        "{names:?}"
    );
    assert!(
        at("post-setup-namespaces") < at("post-restore"),
        "{names:?}"
    );
    assert_eq!(
        names.iter().filter(|n| **n == "setup-namespaces").count(),
        1,
        "{names:?}"
    );
    for stage in ["setup-namespaces", "post-setup-namespaces"] {
        assert_eq!(seen[at(stage)].1, Some(pid), "{stage}: {seen:?}");
    }
    assert_eq!(s.finish(), Some(0));
    assert!(pid_exists(root));
    assert_ne!(uts_ns(root), uts_ns(std::process::id() as i32));
}

#[test]
fn a_client_that_refuses_setup_namespaces_gets_nothing_restored() {
    skip_if_not_root!("a_client_that_refuses_setup_namespaces_gets_nothing_restored");
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let img = d.path().join("img");
    std::fs::create_dir(&img).unwrap();
    let pid = dumped_uts_holder(&img);
    let dir = std::fs::File::open(&img).unwrap();

    let s = Swrk::start(Duration::from_secs(30));
    s.send(&restore_req(&dir, "refused.log"));
    expect_notify(&s, "pre-restore");
    ack(&s, true);
    let setup = expect_notify(&s, "setup-namespaces");
    assert_eq!(setup.notify.and_then(|n| n.pid), Some(pid));
    // The root exists now, in its namespace, waiting for the answer.
    assert!(pid_exists(pid), "the root waits at setup-namespaces");
    ack(&s, false);
    let r = s.recv().expect("the restore's answer");
    assert_eq!(r.r#type, CriuReqType::Restore as i32, "{r:?}");
    assert!(!r.success, "{r:?}");
    let msg = r.cr_errmsg.clone().unwrap_or_default();
    assert!(msg.contains("setup-namespaces"), "{msg}");
    assert_eq!(r.restore.as_ref().map(|x| x.pid), Some(-1), "{r:?}");
    assert_eq!(s.finish(), Some(0));
    // Nothing is left: the half-made root is gone (reaped by criu or by us, its subreaper).
    let _ = wait_exit_timeout(pid, Duration::from_secs(5));
    assert!(!pid_exists(pid), "the half-restored root is gone");
    let log = std::fs::read_to_string(img.join("refused.log")).unwrap();
    assert!(log.contains("setup-namespaces"), "{log}");

    // The images are untouched: the same restore, acknowledged, brings the tree back.
    let s = Swrk::start(Duration::from_secs(30));
    s.send(&restore_req(&dir, "again.log"));
    let r = loop {
        let r = s.recv().expect("a notification or the answer");
        if r.r#type != CriuReqType::Notify as i32 {
            break r;
        }
        ack(&s, true);
    };
    assert!(r.success, "restore again: {r:?}");
    let root = r.restore.map_or(-1, |x| x.pid);
    assert_eq!(root, pid);
    let _restored = Spawned::guard(root);
    assert_eq!(s.finish(), Some(0));
}
