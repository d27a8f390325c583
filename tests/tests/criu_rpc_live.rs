//! Live migration over RPC: `PRE_DUMP` (the session stays open) then `DUMP` with `track_mem`
//! and `parent_img` in one `criu swrk` session, restored from the chain; `PAGE_SERVER` starts
//! a page server in the background and answers its pid and port, and a pre-dump sends its
//! pages there.
//!
//! Runs as root, under the test lock and as a child subreaper; kills and reaps what it started.

use std::path::Path;
use std::time::Duration;

use compel_criu_tests::{
    Scratch, Spawned, Swrk, ask_check, assert_ok_log, become_subreaper, criu, pid_exists,
    skip_if_not_root, test_lock, wait_exit_timeout, wait_file,
};
use criu_images::pb::{CriuOpts, CriuPageServerInfo, CriuReq, CriuReqType};
use nix::sys::signal::Signal;

fn opts(dir: &Path, pid: i32) -> CriuOpts {
    CriuOpts {
        images_dir_fd: -1,
        images_dir: Some(dir.to_str().unwrap().to_string()),
        pid: Some(pid),
        log_file: Some("rpc.log".into()),
        log_level: Some(4),
        ..Default::default()
    }
}

fn request(ty: CriuReqType, o: CriuOpts) -> CriuReq {
    CriuReq {
        r#type: ty as i32,
        opts: Some(o),
        ..Default::default()
    }
}

/// PAGE_SERVER over swrk writing into `dst`: the server's pid and port.
fn start_page_server(dst: &Path) -> (i32, i32) {
    let w = Swrk::start(Duration::from_secs(30));
    let mut o = opts(dst, 0);
    o.pid = None;
    o.ps = Some(CriuPageServerInfo {
        address: Some("127.0.0.1".into()),
        port: Some(0),
        pid: None,
        fd: None,
    });
    let r = w.call(&request(CriuReqType::PageServer, o));
    assert!(r.success, "{r:?}");
    w.finish();
    let ps = r.ps.unwrap();
    (ps.pid.unwrap(), ps.port.unwrap())
}

/// The page server `ps_pid` ends with its session, successfully (it is ours to reap: we are
/// the subreaper).
fn assert_page_server_ended(ps_pid: i32) {
    let mut status = 0;
    for _ in 0..500 {
        // SAFETY: waitpid on the page server, which was reparented to us.
        let r = unsafe { libc::waitpid(ps_pid, &mut status, libc::WNOHANG) };
        if r == ps_pid {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{status:#x}"
    );
}

fn spawn(s: &Scratch) -> Spawned {
    s.spawn_victim(
        env!("CARGO_BIN_EXE_criu-victim-dirtier"),
        &["8", s.ready.to_str().unwrap()],
        None,
        Duration::from_secs(30),
    )
    .0
}

/// PRE_DUMP keeps the session open; the DUMP after it writes only what changed; the chain
/// restores and the victim's check passes.
#[test]
fn pre_dump_then_dump_over_rpc() {
    skip_if_not_root!("pre_dump_then_dump_over_rpc");
    let _g = test_lock();
    become_subreaper();
    let s = Scratch::new();
    let mut v = spawn(&s);
    let pid = v.pid();
    let (d1, d2) = (s.img.join("1"), s.img.join("2"));
    std::fs::create_dir_all(&d1).unwrap();
    std::fs::create_dir_all(&d2).unwrap();
    let w = Swrk::start(Duration::from_secs(30));
    let r = w.call(&request(CriuReqType::PreDump, opts(&d1, pid)));
    assert!(r.success, "{r:?}");
    assert!(pid_exists(pid));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGUSR2).unwrap();
    wait_file(&s.ready.with_extension("r1"), Duration::from_secs(10));
    let mut o = opts(&d2, pid);
    o.track_mem = Some(true);
    o.parent_img = Some("../1".into());
    let r = w.call(&request(CriuReqType::Dump, o));
    assert!(r.success, "{r:?}");
    w.finish();
    let _ = wait_exit_timeout(pid, Duration::from_secs(5));
    v.mark_reaped();
    let pm = criu_images::Pagemap::read(d2.join(format!("pagemap-{pid}.img"))).unwrap();
    assert!(
        pm.present_pages() < 2048 / 10 + 400,
        "{}",
        pm.present_pages()
    );
    let o = criu(&[
        "restore",
        "-d",
        "-D",
        d2.to_str().unwrap(),
        "-o",
        "restore.log",
    ]);
    assert_ok_log(&o, "criu restore", &d2.join("restore.log"));
    let task = Spawned::guard(pid);
    assert_eq!(
        ask_check(task.pid(), &s.ready.with_extension("2")).trim(),
        "check ok"
    );
}

/// PAGE_SERVER answers the pid and port of a page server running in the background; a
/// pre-dump sends its pages there, and the server ends with the session.
#[test]
fn page_server_over_rpc() {
    skip_if_not_root!("page_server_over_rpc");
    let _g = test_lock();
    become_subreaper();
    let s = Scratch::new();
    let v = spawn(&s);
    let pid = v.pid();
    let (src, dst) = (s.img.join("src"), s.img.join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&dst).unwrap();
    let (ps_pid, port) = start_page_server(&dst);
    assert!(
        ps_pid > 0 && port > 0,
        "page server {ps_pid} on port {port}"
    );
    let port = port.to_string();
    let o = criu(&[
        "pre-dump",
        "-t",
        &pid.to_string(),
        "-D",
        src.to_str().unwrap(),
        "-o",
        "pre.log",
        "--page-server",
        "--address",
        "127.0.0.1",
        "--port",
        &port,
    ]);
    assert_ok_log(&o, "criu pre-dump", &src.join("pre.log"));
    // The server ends with its session (it is ours to reap: we are the subreaper).
    assert_page_server_ended(ps_pid);
    assert!(dst.join(format!("pagemap-{pid}.img")).exists());
    drop(v);
}

/// `ps.fd` (swrk): the client connects to a page server itself and hands the socket over by
/// number (criu swrk inherits it); the pre-dump's pages go over that connection, and the
/// server ends with the session having written them.
#[test]
fn pre_dump_over_a_page_server_socket_the_client_connected() {
    skip_if_not_root!("pre_dump_over_a_page_server_socket_the_client_connected");
    let _g = test_lock();
    become_subreaper();
    let s = Scratch::new();
    let v = spawn(&s);
    let pid = v.pid();
    let (src, dst) = (s.img.join("src"), s.img.join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&dst).unwrap();
    let (ps_pid, port) = start_page_server(&dst);
    let sock = std::net::TcpStream::connect(("127.0.0.1", port as u16)).unwrap();
    // Without close-on-exec while criu swrk starts: it inherits the connection.
    let held = nix::unistd::dup(&sock).unwrap();
    drop(sock);
    let w = Swrk::start(Duration::from_secs(30));
    let mut o = opts(&src, pid);
    o.ps = Some(CriuPageServerInfo {
        address: None,
        port: None,
        pid: None,
        fd: Some(std::os::fd::AsRawFd::as_raw_fd(&held)),
    });
    drop(held);
    let r = w.call(&request(CriuReqType::PreDump, o));
    assert!(r.success, "{r:?}");
    w.finish();
    assert_page_server_ended(ps_pid);
    let pm = criu_images::Pagemap::read(dst.join(format!("pagemap-{pid}.img"))).unwrap();
    assert!(pm.present_pages() > 0, "no pages reached the page server");
    assert!(!src.join(format!("pagemap-{pid}.img")).exists());
    drop(v);
}
