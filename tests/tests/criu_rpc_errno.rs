//! A failed dump or restore over RPC says why in `cr_errno`, as CRIU's clients read it: a dump
//! of a process that does not exist answers `ESRCH`, a restore from a directory without images
//! answers the OS error of opening the inventory (`ENOENT`).

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use compel_criu_tests::criu_bin;
use criu_images::pb::{CriuOpts, CriuReq, CriuReqType, CriuResp};
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockType, recv, send, setsockopt, socketpair, sockopt,
};
use nix::sys::time::TimeVal;
use prost::Message;

/// `criu swrk FD` on one end of a socketpair; the answer to one request.
fn ask(q: &CriuReq) -> CriuResp {
    let (ours, theirs): (OwnedFd, OwnedFd) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap();
    // The child's end must survive exec: duplicate it without close-on-exec.
    let fd = nix::unistd::dup(&theirs).unwrap();
    let mut child: Child = Command::new(criu_bin())
        .arg("swrk")
        .arg(fd.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    drop(fd);
    drop(theirs);
    setsockopt(&ours, sockopt::ReceiveTimeout, &TimeVal::new(10, 0)).unwrap();
    send(ours.as_raw_fd(), &q.encode_to_vec(), MsgFlags::empty()).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let n = recv(ours.as_raw_fd(), &mut buf, MsgFlags::empty());
    drop(ours);
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("criu swrk did not exit");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let n = n.expect("no answer from criu");
    CriuResp::decode(&buf[..n]).expect("criu sent something that is not a criu_resp")
}

fn request(ty: CriuReqType, dir: &std::fs::File, pid: Option<i32>) -> CriuReq {
    CriuReq {
        r#type: ty as i32,
        opts: Some(CriuOpts {
            images_dir_fd: dir.as_raw_fd(),
            pid,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn a_dump_of_a_missing_process_answers_esrch() {
    let d = tempfile::tempdir().unwrap();
    let dir = std::fs::File::open(d.path()).unwrap();
    let r = ask(&request(CriuReqType::Dump, &dir, Some(i32::MAX - 1)));
    assert!(!r.success);
    assert_eq!(r.cr_errno, Some(libc::ESRCH), "{r:?}");
}

#[test]
fn a_restore_without_images_answers_the_os_error() {
    let d = tempfile::tempdir().unwrap();
    let dir = std::fs::File::open(d.path()).unwrap();
    let r = ask(&request(CriuReqType::Restore, &dir, None));
    assert!(!r.success);
    assert_eq!(r.cr_errno, Some(libc::ENOENT), "{r:?}");
    assert!(
        r.cr_errmsg.as_deref().unwrap_or("").contains("inventory"),
        "{r:?}"
    );
}
