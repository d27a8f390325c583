//! Live migration over RPC: `PRE_DUMP` (the session stays open) then `DUMP` with `track_mem`
//! and `parent_img` in one `criu swrk` session, restored from the chain; `PAGE_SERVER` starts
//! a page server in the background and answers its pid and port, and a pre-dump sends its
//! pages there.
//!
//! Runs as root, under the test lock and as a child subreaper; kills and reaps what it started.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use compel_criu_tests::{
    Scratch, Spawned, ask_check, assert_ok_log, become_subreaper, criu, criu_bin, pid_exists,
    skip_if_not_root, test_lock, wait_exit_timeout, wait_file,
};
use criu_images::pb::{CriuOpts, CriuPageServerInfo, CriuReq, CriuReqType, CriuResp};
use nix::sys::signal::Signal;
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockType, recv, send, setsockopt, socketpair, sockopt,
};
use nix::sys::time::TimeVal;
use prost::Message;

struct Swrk {
    sk: OwnedFd,
    child: Child,
}

impl Swrk {
    fn start() -> Swrk {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let fd = nix::unistd::dup(&theirs).unwrap();
        let child = Command::new(criu_bin())
            .arg("swrk")
            .arg(fd.as_raw_fd().to_string())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        drop(fd);
        drop(theirs);
        setsockopt(&ours, sockopt::ReceiveTimeout, &TimeVal::new(30, 0)).unwrap();
        Swrk { sk: ours, child }
    }

    fn call(&self, req: &CriuReq) -> CriuResp {
        send(self.sk.as_raw_fd(), &req.encode_to_vec(), MsgFlags::empty()).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let n = recv(self.sk.as_fd().as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
        assert!(n > 0, "criu closed the session");
        CriuResp::decode(&buf[..n]).unwrap()
    }

    fn finish(mut self) {
        drop(self.sk);
        let _ = self.child.wait();
    }
}

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
    let w = Swrk::start();
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
    let w = Swrk::start();
    let mut o = opts(&dst, 0);
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
    let (ps_pid, port) = (ps.pid.unwrap(), ps.port.unwrap());
    assert!(ps_pid > 0 && port > 0, "{ps:?}");
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
    assert!(dst.join(format!("pagemap-{pid}.img")).exists());
    drop(v);
}
