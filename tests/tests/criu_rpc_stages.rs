//! RPC fields and notifications of issue 16 beyond the basic flow (`criu_rpc.rs`):
//!
//! - `display_stats` prints the dump and restore statistics on criu's standard output (in
//!   `swrk` mode the client's), as CRIU does, instead of being dropped;
//! - `query-ext-files`: asked once the tree is frozen; the `external` entries of the
//!   acknowledgement's `opts` are taken (one that does not parse stops the dump, the tree runs
//!   on);
//! - `status-ready`: a dump with `lazy_pages` tells the client once its pages can be fetched,
//!   and writes `status_fd` after it.
//!
//! Every test runs as root, under the test lock and as a child subreaper, and kills and reaps
//! what it started.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::process::Stdio;
use std::time::Duration;

use compel_criu_tests::{
    Exit, Spawned, Swrk, become_subreaper, open_dir, pid_exists, skip_if_not_root, spawn_counter,
    test_lock, wait_exit_timeout,
};
use criu_images::pb::{CriuOpts, CriuReq, CriuReqType, CriuResp};

const COUNTER: &str = env!("CARGO_BIN_EXE_criu-victim-counter");

fn req(ty: CriuReqType, opts: CriuOpts) -> CriuReq {
    CriuReq {
        r#type: ty as i32,
        opts: Some(opts),
        ..Default::default()
    }
}

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

/// Acknowledges a notification, with `opts` when given.
fn ack(s: &Swrk, ok: bool, opts: Option<CriuOpts>) {
    s.send(&CriuReq {
        r#type: CriuReqType::Notify as i32,
        notify_success: Some(ok),
        opts,
        ..Default::default()
    });
}

#[test]
fn display_stats_prints_the_statistics_on_criu_s_standard_output() {
    skip_if_not_root!("display_stats_prints_the_statistics_on_criu_s_standard_output");
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let img = d.path().join("img");
    std::fs::create_dir(&img).unwrap();
    let mut v = spawn_counter(COUNTER, d.path(), None);
    let dir = std::fs::File::open(&img).unwrap();
    let opts = |pid: Option<i32>, log: &str| CriuOpts {
        images_dir_fd: dir.as_raw_fd(),
        pid,
        display_stats: Some(true),
        log_file: Some(log.into()),
        ..Default::default()
    };
    // One session per request, each with criu's standard output read here.
    let stdout_of = |q: &CriuReq| -> (CriuResp, String) {
        let mut s = Swrk::start_with_stdout(Duration::from_secs(30), Stdio::piped());
        let r = s.call(q);
        let mut out = s.take_stdout().expect("criu's stdout");
        assert_eq!(s.finish(), Some(0));
        let mut text = String::new();
        out.read_to_string(&mut text).unwrap();
        (r, text)
    };
    let (r, dumped) = stdout_of(&req(CriuReqType::Dump, opts(Some(v.pid()), "dump.log")));
    assert!(r.success, "dump: {r:?}");
    assert_eq!(
        wait_exit_timeout(v.pid(), Duration::from_secs(5)),
        Ok(Some(Exit::Signal(libc::SIGKILL)))
    );
    v.mark_reaped();
    let (r, restored_out) = stdout_of(&req(CriuReqType::Restore, opts(None, "restore.log")));
    assert!(r.success, "restore: {r:?}");
    let restored = Spawned::guard(r.restore.map_or(-1, |x| x.pid));
    assert_eq!(restored.pid(), v.pid());
    let text = format!("{dumped}{restored_out}");
    assert!(dumped.starts_with("Displaying dump stats:\n"), "{dumped:?}");
    assert!(
        restored_out.starts_with("Displaying restore stats:\n"),
        "{restored_out:?}"
    );
    for label in [
        "Freezing time: ",
        "Frozen time: ",
        "Memory pages written: ",
        "Pages restored: ",
        "Restore time: ",
    ] {
        assert!(text.contains(label), "{label:?} in {text:?}");
    }
    drop(restored);
}

/// Starts a dump of `pid` into `dir` with notifications, the tree left running.
fn dump_with_notify(s: &Swrk, pid: i32, dir: &std::fs::File) {
    s.send(&req(
        CriuReqType::Dump,
        CriuOpts {
            images_dir_fd: dir.as_raw_fd(),
            pid: Some(pid),
            leave_running: Some(true),
            notify_scripts: Some(true),
            log_file: Some("dump.log".into()),
            log_level: Some(4),
            ..Default::default()
        },
    ));
}

#[test]
fn query_ext_files_takes_the_client_s_externals() {
    skip_if_not_root!("query_ext_files_takes_the_client_s_externals");
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let img = d.path().join("img");
    std::fs::create_dir(&img).unwrap();
    let v = spawn_counter(COUNTER, d.path(), None);
    let dir = std::fs::File::open(&img).unwrap();

    // An entry that does not parse: the dump stops, naming it, and the tree runs on.
    let s = Swrk::start(Duration::from_secs(30));
    dump_with_notify(&s, v.pid(), &dir);
    expect_notify(&s, "pre-dump");
    ack(&s, true, None);
    let q = expect_notify(&s, "query-ext-files");
    assert_eq!(q.notify.and_then(|n| n.pid), None, "asked without a pid");
    ack(
        &s,
        true,
        Some(CriuOpts {
            images_dir_fd: -1,
            external: vec!["no-brackets-here".into()],
            ..Default::default()
        }),
    );
    let r = s.recv().expect("the dump's answer");
    assert_eq!(r.r#type, CriuReqType::Dump as i32, "{r:?}");
    assert!(!r.success, "{r:?}");
    let msg = r.cr_errmsg.unwrap_or_default();
    assert!(msg.contains("no-brackets-here"), "{msg}");
    assert_eq!(r.cr_errno, Some(libc::EINVAL), "{msg}");
    assert_eq!(s.finish(), Some(0));
    assert!(!img.join("inventory.img").exists(), "no images left behind");
    assert!(pid_exists(v.pid()), "the tree runs on");

    // Well-formed entries are taken (logged) and the dump goes on to post-dump.
    let s = Swrk::start(Duration::from_secs(30));
    dump_with_notify(&s, v.pid(), &dir);
    expect_notify(&s, "pre-dump");
    ack(&s, true, None);
    expect_notify(&s, "query-ext-files");
    ack(
        &s,
        true,
        Some(CriuOpts {
            images_dir_fd: -1,
            external: vec!["mnt[/nowhere]:nowhere".into()],
            ..Default::default()
        }),
    );
    expect_notify(&s, "post-dump");
    ack(&s, true, None);
    let r = s.recv().expect("the dump's answer");
    assert!(r.success, "{r:?}");
    assert_eq!(s.finish(), Some(0));
    let log = std::fs::read_to_string(img.join("dump.log")).unwrap();
    assert!(
        log.contains("adding external object mnt[/nowhere]:nowhere"),
        "{log}"
    );
    assert!(pid_exists(v.pid()), "left running");
    drop(v);
}

#[test]
fn a_lazy_dump_tells_status_ready_then_the_status_fd() {
    skip_if_not_root!("a_lazy_dump_tells_status_ready_then_the_status_fd");
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let img = d.path().join("img");
    std::fs::create_dir(&img).unwrap();
    let v = spawn_counter(COUNTER, d.path(), None);
    let dir = std::fs::File::open(&img).unwrap();
    // criu swrk inherits our descriptors: the write end of this pipe is its status_fd.
    let (status_r, status_w) = nix::unistd::pipe().unwrap();
    let s = Swrk::start(Duration::from_secs(30));
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    s.send(&req(
        CriuReqType::Dump,
        CriuOpts {
            images_dir_fd: dir.as_raw_fd(),
            pid: Some(v.pid()),
            lazy_pages: Some(true),
            ps: Some(criu_images::pb::CriuPageServerInfo {
                address: Some("127.0.0.1".into()),
                port: Some(i32::from(port)),
                ..Default::default()
            }),
            status_fd: Some(status_w.as_raw_fd()),
            notify_scripts: Some(true),
            log_file: Some("dump.log".into()),
            log_level: Some(4),
            ..Default::default()
        },
    ));
    drop(status_w);
    expect_notify(&s, "pre-dump");
    ack(&s, true, None);
    expect_notify(&s, "query-ext-files");
    ack(&s, true, None);
    expect_notify(&s, "post-dump");
    ack(&s, true, None);
    let ready = expect_notify(&s, "status-ready");
    assert_eq!(ready.notify.and_then(|n| n.pid), Some(v.pid()));
    // The page server listens already; the status byte comes once the client said yes.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    let mut f = std::fs::File::from(status_r);
    ack(&s, true, None);
    let mut byte = [1u8; 1];
    f.read_exact(&mut byte).unwrap();
    assert_eq!(byte, [0], "one zero byte on status_fd");
    // The connection made above ends the session: the dump finishes and the tree dies.
    let r = s.recv().expect("the dump's answer");
    assert_eq!(r.r#type, CriuReqType::Dump as i32, "{r:?}");
    let _ = s.finish();
    drop(v);
}
