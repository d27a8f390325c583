//! A client that goes away in the middle of a dump or a restore, at every stage it is told of
//! (not only at `pre-dump`, which `criu_rpc.rs` covers): the socket closes while criu waits for
//! the acknowledgement of a notification.
//!
//! - A dump: whatever the stage (`post-dump` too, when the images are all written), the tree
//!   runs on, untraced, counting; criu exits on its own, without a signal.
//! - A restore: at a stage before the tree resumes nothing of it is left (its pid is free, no
//!   task traced or stopped), criu exits on its own, and the images still restore; at
//!   `post-resume` (after the tree runs, which CRIU too only logs) the tree runs on.
//!
//! Every test runs as root, under the test lock and as a child subreaper, and kills and reaps
//! what it started.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use compel_criu_tests::{
    Exit, Spawned, Swrk, become_subreaper, children_of, counts_on, open_dir, pid_exists, req,
    skip_if_not_root, spawn_counter, test_lock, tracer_pid, wait_exit_timeout,
};
use criu_images::pb::{CriuOpts, CriuReqType};

const COUNTER: &str = env!("CARGO_BIN_EXE_criu-victim-counter");

/// Starts a request of `ty`, acknowledges every notification before `stage`, and closes the
/// socket when `stage` comes. Returns criu's exit code.
fn vanish_at(ty: CriuReqType, opts: CriuOpts, stage: &str) -> Option<i32> {
    let s = Swrk::start(Duration::from_secs(60));
    s.send(&req(ty, opts));
    loop {
        let r = s.recv().expect("criu answered before the stage came");
        assert_eq!(r.r#type, CriuReqType::Notify as i32, "no {stage}: {r:?}");
        let at = r.notify.and_then(|n| n.script).unwrap_or_default();
        if at == stage {
            break;
        }
        s.ack(true);
    }
    s.finish()
}

/// The stages a full request of `ty` is told of, acknowledged, with its answer.
fn stages(ty: CriuReqType, opts: CriuOpts) -> (criu_images::pb::CriuResp, Vec<String>) {
    let s = Swrk::start(Duration::from_secs(60));
    let r = s.call_acking(&req(ty, opts));
    assert_eq!(s.finish(), Some(0));
    r
}

fn dump_opts(dir: &std::fs::File, pid: i32, leave_running: bool) -> CriuOpts {
    CriuOpts {
        images_dir_fd: dir.as_raw_fd(),
        pid: Some(pid),
        leave_running: Some(leave_running),
        notify_scripts: Some(true),
        log_file: Some("dump.log".into()),
        log_level: Some(4),
        ..Default::default()
    }
}

fn restore_opts(dir: &std::fs::File) -> CriuOpts {
    CriuOpts {
        images_dir_fd: dir.as_raw_fd(),
        notify_scripts: Some(true),
        log_file: Some("restore.log".into()),
        log_level: Some(4),
        ..Default::default()
    }
}

/// Nothing of the restored tree `pid` is left: its pid is free within a few seconds.
fn gone(pid: i32) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        if !pid_exists(pid) {
            return true;
        }
        // A zombie handed to us, the subreaper, is ours to reap.
        let _ = wait_exit_timeout(pid, Duration::from_millis(50));
    }
    false
}

#[test]
fn a_client_gone_at_any_dump_stage_leaves_the_tree_running() {
    skip_if_not_root!("a_client_gone_at_any_dump_stage_leaves_the_tree_running");
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let img = d.path().join("img");
    std::fs::create_dir(&img).unwrap();
    let dir = std::fs::File::open(&img).unwrap();
    let v = spawn_counter(COUNTER, d.path(), None);
    let (r, seen) = stages(CriuReqType::Dump, dump_opts(&dir, v.pid(), true));
    assert!(r.success, "{r:?}");
    assert!(seen.iter().any(|s| s == "post-dump"), "{seen:?}");
    // The killing dump: the client is gone at each stage in turn.
    for stage in &seen {
        let code = vanish_at(CriuReqType::Dump, dump_opts(&dir, v.pid(), false), stage);
        assert!(code.is_some(), "{stage}: criu was killed by a signal");
        assert!(pid_exists(v.pid()), "{stage}: the tree is gone");
        assert_eq!(tracer_pid(v.pid()), Some(0), "{stage}: left traced");
        assert!(counts_on(d.path()), "{stage}: the tree does not run on");
        let log = std::fs::read_to_string(img.join("dump.log")).unwrap_or_default();
        assert!(log.contains("went away"), "{stage}: {log}");
    }
    assert!(
        children_of(std::process::id() as i32)
            .iter()
            .all(|&p| p == v.pid())
    );
    drop(v);
}

#[test]
fn a_client_gone_at_a_restore_stage_leaves_nothing_half_restored() {
    skip_if_not_root!("a_client_gone_at_a_restore_stage_leaves_nothing_half_restored");
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let img = d.path().join("img");
    std::fs::create_dir(&img).unwrap();
    let dir = std::fs::File::open(&img).unwrap();
    let mut v = spawn_counter(COUNTER, d.path(), None);
    let pid = v.pid();
    let (r, _) = stages(CriuReqType::Dump, dump_opts(&dir, pid, false));
    assert!(r.success, "{r:?}");
    assert_eq!(
        wait_exit_timeout(pid, Duration::from_secs(5)),
        Ok(Some(Exit::Signal(libc::SIGKILL)))
    );
    v.mark_reaped();
    let (r, seen) = stages(CriuReqType::Restore, restore_opts(&dir));
    assert!(r.success, "{r:?}");
    drop(Spawned::guard(pid));
    assert!(gone(pid));
    assert!(
        seen.iter().any(|s| s == "post-restore")
            && seen.last().map(String::as_str) == Some("post-resume"),
        "{seen:?}"
    );
    for stage in &seen {
        let code = vanish_at(CriuReqType::Restore, restore_opts(&dir), stage);
        assert!(code.is_some(), "{stage}: criu was killed by a signal");
        if stage == "post-resume" {
            // The tree runs already; CRIU only logs a failing post-resume.
            assert!(pid_exists(pid), "post-resume: the running tree was killed");
            assert_eq!(tracer_pid(pid), Some(0), "post-resume: left traced");
            assert!(counts_on(d.path()), "post-resume: the tree does not run");
            drop(Spawned::guard(pid));
            assert!(gone(pid));
        } else {
            assert!(gone(pid), "{stage}: a half-restored tree is left");
        }
    }
    // The images are intact: a restore with a client that stays works.
    let (r, _) = stages(CriuReqType::Restore, restore_opts(&dir));
    assert!(r.success, "{r:?}");
    let g = Spawned::guard(pid);
    assert!(counts_on(d.path()));
    drop(g);
}
