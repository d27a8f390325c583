//! Request types of issue 16 not driven elsewhere: `SINGLE_PRE_DUMP` (one pre-dump, the tree
//! left running, its pages in the images) and `PAGE_SERVER_CHLD` followed by `WAIT_PID` in the
//! same `keep_open` session (the page server is criu's child, so the client waits for it
//! through criu, as pycriu's `page_server_chld` and `wait_pid` do).
//!
//! Every test runs as root, under the test lock and as a child subreaper, and kills and reaps
//! what it started.

use std::os::fd::AsRawFd;
use std::time::Duration;

use compel_criu_tests::{
    Swrk, become_subreaper, open_dir, pid_exists, skip_if_not_root, spawn_counter, test_lock,
};
use criu_images::pb::{CriuOpts, CriuPageServerInfo, CriuReq, CriuReqType};

const COUNTER: &str = env!("CARGO_BIN_EXE_criu-victim-counter");

#[test]
fn single_pre_dump_writes_the_pages_and_leaves_the_tree_running() {
    skip_if_not_root!("single_pre_dump_writes_the_pages_and_leaves_the_tree_running");
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let img = d.path().join("img");
    std::fs::create_dir(&img).unwrap();
    let v = spawn_counter(COUNTER, d.path(), None);
    let dir = std::fs::File::open(&img).unwrap();
    let s = Swrk::start(Duration::from_secs(30));
    let r = s.call(&CriuReq {
        r#type: CriuReqType::SinglePreDump as i32,
        opts: Some(CriuOpts {
            images_dir_fd: dir.as_raw_fd(),
            pid: Some(v.pid()),
            log_file: Some("pre.log".into()),
            log_level: Some(4),
            ..Default::default()
        }),
        ..Default::default()
    });
    assert_eq!(r.r#type, CriuReqType::SinglePreDump as i32, "{r:?}");
    assert!(
        r.success,
        "{r:?}\n{}",
        std::fs::read_to_string(img.join("pre.log")).unwrap_or_default()
    );
    assert_eq!(s.finish(), Some(0));
    assert!(img.join(format!("pagemap-{}.img", v.pid())).exists());
    let before = std::fs::read_to_string(d.path().join("count")).unwrap_or_default();
    std::thread::sleep(Duration::from_millis(300));
    let after = std::fs::read_to_string(d.path().join("count")).unwrap_or_default();
    assert!(pid_exists(v.pid()) && after.len() > before.len(), "runs on");
    drop(v);
}

#[test]
fn page_server_chld_then_wait_pid_in_the_same_session() {
    skip_if_not_root!("page_server_chld_then_wait_pid_in_the_same_session");
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let dir = std::fs::File::open(d.path()).unwrap();
    let s = Swrk::start(Duration::from_secs(30));
    let r = s.call(&CriuReq {
        r#type: CriuReqType::PageServerChld as i32,
        keep_open: Some(true),
        opts: Some(CriuOpts {
            images_dir_fd: dir.as_raw_fd(),
            log_file: Some("ps.log".into()),
            ps: Some(CriuPageServerInfo {
                address: Some("127.0.0.1".into()),
                port: Some(0),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    assert_eq!(r.r#type, CriuReqType::PageServerChld as i32, "{r:?}");
    assert!(r.success, "{r:?}");
    let info = r.ps.unwrap_or_default();
    let (pid, port) = (info.pid.unwrap_or(0), info.port.unwrap_or(0));
    assert!(pid > 0 && port > 0, "{info:?}");
    // A session that ends at once: the server exits, and criu, its parent, reaps it.
    drop(std::net::TcpStream::connect(("127.0.0.1", u16::try_from(port).unwrap())).unwrap());
    let w = s.call(&CriuReq {
        r#type: CriuReqType::WaitPid as i32,
        pid: Some(u32::try_from(pid).unwrap()),
        ..Default::default()
    });
    assert_eq!(w.r#type, CriuReqType::WaitPid as i32, "{w:?}");
    assert!(w.success, "{w:?}");
    let status = w.status.expect("the wait status");
    assert!(libc::WIFEXITED(status), "{status:#x}");
    assert!(!pid_exists(pid), "reaped by criu");
    assert_eq!(s.finish(), Some(0));
}
