//! `status-ready` of the daemons (issue 16), as CRIU's `status_ready`: once `criu
//! page-server` (in the foreground or with `--daemon`) and `criu lazy-pages` listen, they run
//! the `status-ready` action scripts and then write one zero byte on `--status-fd`; a page
//! server started over RPC (`PAGE_SERVER` with `notify_scripts` and `status_fd`) sends the
//! `status-ready` notification before its answer, then writes the byte. A failing script or a
//! client that answers false stops the start: no byte, nothing listening, no process left.
//!
//! Every test runs as root, under the test lock and as a child subreaper, and kills and reaps
//! what it started.

use std::fs;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use compel_criu_tests::{
    Exit, Spawned, Swrk, become_subreaper, criu_bin, free_port, open_dir, skip_if_not_root,
    test_lock,
};
use criu_images::pb::{CriuOpts, CriuPageServerInfo, CriuReq, CriuReqType};

/// An action script that appends `$CRTOOLS_SCRIPT_ACTION` to `DIR/actions` and fails at
/// `fail_at`.
fn script(dir: &Path, fail_at: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("hook.sh");
    fs::write(
        &p,
        format!(
            "#!/bin/sh\necho \"$CRTOOLS_SCRIPT_ACTION\" >> {}\n\
             [ \"$CRTOOLS_SCRIPT_ACTION\" = \"{fail_at}\" ] && exit 3\nexit 0\n",
            dir.join("actions").display()
        ),
    )
    .unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn actions(dir: &Path) -> String {
    fs::read_to_string(dir.join("actions")).unwrap_or_default()
}

/// Reads the status pipe to its end: the bytes written before every writer closed it.
fn status_bytes(r: OwnedFd) -> Vec<u8> {
    let mut v = Vec::new();
    fs::File::from(r).read_to_end(&mut v).unwrap();
    v
}

/// Reaps what the lazy-pages daemon leaves to us (its subreaper): its watchdog, which exits
/// once the daemon is gone. Panics if some child of ours is still running after 10 s.
fn reap_leftovers() {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let end = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Err(nix::errno::Errno::ECHILD) => return,
            Ok(WaitStatus::StillAlive) => {
                assert!(std::time::Instant::now() < end, "a child of ours runs on");
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => {}
        }
    }
}

/// Asserts that no child of ours is left, running or not (a page server would be one: we are
/// its subreaper).
fn assert_no_children() {
    let r = nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
    assert!(matches!(r, Err(nix::errno::Errno::ECHILD)), "{r:?}");
}

fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// `criu page-server -D DIR --port PORT --status-fd W --action-script HOOK EXTRA`, its status
/// pipe's read end.
fn page_server(dir: &Path, port: u16, hook: &Path, extra: &[&str]) -> (Spawned, OwnedFd) {
    let (r, w) = nix::unistd::pipe().unwrap();
    let wfd = w.as_raw_fd().to_string();
    let child = Command::new(criu_bin())
        .args(["page-server", "-D", dir.to_str().unwrap()])
        .args(["--address", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--status-fd",
            &wfd,
            "--action-script",
            hook.to_str().unwrap(),
        ])
        .args(["-o", "ps.log", "-v4"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    drop(w);
    (Spawned::from_child(child), r)
}

#[test]
fn page_server_runs_status_ready_scripts_then_writes_the_status_fd() {
    skip_if_not_root!("page_server_runs_status_ready_scripts_then_writes_the_status_fd");
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let hook = script(d.path(), "none");

    // In the foreground: the script ran before the byte came, and the server listens.
    let port = free_port();
    let (ps, r) = page_server(d.path(), port, &hook, &[]);
    let mut f = fs::File::from(r);
    let mut b = [1u8; 1];
    assert_eq!(f.read(&mut b).unwrap(), 1, "{}", actions(d.path()));
    assert_eq!(b, [0]);
    assert_eq!(actions(d.path()), "status-ready\n");
    assert!(listening(port), "the page server listens once it said so");
    drop(ps);
    fs::remove_file(d.path().join("actions")).unwrap();

    // With --daemon: the foreground process tells, after the pidfile, then exits.
    let port = free_port();
    let pidfile = d.path().join("ps.pid");
    let (mut fg, r) = page_server(
        d.path(),
        port,
        &hook,
        &["--daemon", "--pidfile", pidfile.to_str().unwrap()],
    );
    assert_eq!(status_bytes(r), [0], "{}", actions(d.path()));
    assert_eq!(fg.wait(Duration::from_secs(10)), Some(Exit::Code(0)));
    let bg: i32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(bg > 0, "{bg}");
    let mut bg = Spawned::guard(bg);
    assert_eq!(actions(d.path()), "status-ready\n");
    assert!(listening(port), "the background server listens");
    // The connection above was its one session: it ends (we reap it: its subreaper).
    assert!(matches!(
        bg.wait(Duration::from_secs(10)),
        Some(Exit::Code(_))
    ));
}

#[test]
fn a_failing_status_ready_script_stops_the_page_server_and_the_lazy_pages_daemon() {
    skip_if_not_root!(
        "a_failing_status_ready_script_stops_the_page_server_and_the_lazy_pages_daemon"
    );
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let hook = script(d.path(), "status-ready");

    // The page server, in the foreground and with --daemon: no byte, an error exit, nothing
    // listening, no background server left.
    for extra in [&[][..], &["--daemon"][..]] {
        let port = free_port();
        let (mut ps, r) = page_server(d.path(), port, &hook, extra);
        assert_eq!(status_bytes(r), Vec::<u8>::new(), "{extra:?}");
        assert!(
            matches!(ps.wait(Duration::from_secs(10)), Some(Exit::Code(c)) if c != 0),
            "{extra:?}"
        );
        assert!(!listening(port), "{extra:?}: nothing listens");
        let log = fs::read_to_string(d.path().join("ps.log")).unwrap();
        assert!(log.contains("status-ready"), "{log}");
    }
    assert_eq!(actions(d.path()), "status-ready\nstatus-ready\n");
    // Nothing of ours is left (a background server would be our child: we are its subreaper).
    assert_no_children();

    // The lazy-pages daemon: no byte, an error exit, its socket removed.
    fs::remove_file(d.path().join("actions")).unwrap();
    let (r, w) = nix::unistd::pipe().unwrap();
    let wfd = w.as_raw_fd().to_string();
    let child = Command::new(criu_bin())
        .args(["lazy-pages", "-D", d.path().to_str().unwrap()])
        .args([
            "--status-fd",
            &wfd,
            "--action-script",
            hook.to_str().unwrap(),
        ])
        .args(["-o", "lazy.log", "-v4"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    drop(w);
    let mut lazy = Spawned::from_child(child);
    assert_eq!(status_bytes(r), Vec::<u8>::new());
    assert!(matches!(lazy.wait(Duration::from_secs(10)), Some(Exit::Code(c)) if c != 0));
    assert_eq!(actions(d.path()), "status-ready\n");
    assert!(!d.path().join("lazy-pages.socket").exists());
    reap_leftovers();
}

#[test]
fn lazy_pages_runs_status_ready_scripts_then_writes_the_status_fd() {
    skip_if_not_root!("lazy_pages_runs_status_ready_scripts_then_writes_the_status_fd");
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let hook = script(d.path(), "none");
    let (r, w) = nix::unistd::pipe().unwrap();
    let wfd = w.as_raw_fd().to_string();
    let child = Command::new(criu_bin())
        .args(["lazy-pages", "-D", d.path().to_str().unwrap()])
        .args([
            "--status-fd",
            &wfd,
            "--action-script",
            hook.to_str().unwrap(),
        ])
        .args(["-o", "lazy.log", "-v4"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    drop(w);
    let lazy = Spawned::from_child(child);
    let mut f = fs::File::from(r);
    let mut b = [1u8; 1];
    assert_eq!(f.read(&mut b).unwrap(), 1, "{}", actions(d.path()));
    assert_eq!(b, [0]);
    assert_eq!(actions(d.path()), "status-ready\n");
    assert!(
        d.path().join("lazy-pages.socket").exists(),
        "it listens once it said so"
    );
    drop(lazy);
    reap_leftovers();
}

fn ps_request(dir: &fs::File, status_fd: i32) -> CriuReq {
    CriuReq {
        r#type: CriuReqType::PageServer as i32,
        opts: Some(CriuOpts {
            images_dir_fd: dir.as_raw_fd(),
            notify_scripts: Some(true),
            status_fd: Some(status_fd),
            log_file: Some("ps.log".into()),
            log_level: Some(4),
            ps: Some(CriuPageServerInfo {
                address: Some("127.0.0.1".into()),
                port: Some(0),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn a_page_server_over_rpc_sends_status_ready_before_its_answer() {
    skip_if_not_root!("a_page_server_over_rpc_sends_status_ready_before_its_answer");
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let dir = fs::File::open(d.path()).unwrap();

    // Acknowledged: notification, then the byte, then the answer with the server's pid and port.
    let (r, w) = nix::unistd::pipe().unwrap();
    let s = Swrk::start(Duration::from_secs(30));
    s.send(&ps_request(&dir, w.as_raw_fd()));
    drop(w);
    let n = s.recv().expect("the status-ready notification");
    assert_eq!(n.r#type, CriuReqType::Notify as i32, "{n:?}");
    let n = n.notify.unwrap_or_default();
    assert_eq!(n.script.as_deref(), Some("status-ready"));
    assert_eq!(n.pid, None, "no pid, as CRIU's");
    s.send(&CriuReq {
        r#type: CriuReqType::Notify as i32,
        notify_success: Some(true),
        ..Default::default()
    });
    let a = s.recv().expect("the answer");
    assert_eq!(a.r#type, CriuReqType::PageServer as i32, "{a:?}");
    assert!(a.success, "{a:?}");
    let info = a.ps.unwrap_or_default();
    let (pid, port) = (info.pid.unwrap_or(0), info.port.unwrap_or(0));
    assert!(pid > 0 && port > 0, "{info:?}");
    let mut bg = Spawned::guard(pid);
    let port = u16::try_from(port).unwrap();
    assert_eq!(s.finish(), Some(0));
    assert_eq!(status_bytes(r), [0], "one byte on status_fd");
    assert!(listening(port), "the page server listens");
    // That connection was its one session: it ends (we reap it: its subreaper).
    assert!(matches!(
        bg.wait(Duration::from_secs(10)),
        Some(Exit::Code(_))
    ));

    // Refused: a failed answer, no byte, and the background server is gone.
    let (r, w) = nix::unistd::pipe().unwrap();
    let s = Swrk::start(Duration::from_secs(30));
    s.send(&ps_request(&dir, w.as_raw_fd()));
    drop(w);
    let n = s.recv().expect("the status-ready notification");
    assert_eq!(
        n.notify.and_then(|n| n.script).as_deref(),
        Some("status-ready")
    );
    s.send(&CriuReq {
        r#type: CriuReqType::Notify as i32,
        notify_success: Some(false),
        ..Default::default()
    });
    let a = s.recv().expect("the answer");
    assert_eq!(a.r#type, CriuReqType::PageServer as i32, "{a:?}");
    assert!(!a.success, "{a:?}");
    let msg = a.cr_errmsg.unwrap_or_default();
    assert!(msg.contains("status-ready"), "{msg}");
    assert_eq!(s.finish(), Some(0));
    assert_eq!(status_bytes(r), Vec::<u8>::new(), "no byte");
    assert_no_children();
}
