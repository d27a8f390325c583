//! `--orphan-pts-master`: a process holding a pty slave whose master is outside the tree is
//! dumped, and on restore its slave is a new pty whose master goes to the `orphan-pts-master`
//! notification: the action script gets it as its standard input (CLI), the RPC client gets
//! it with the notification (`SCM_RIGHTS`, swrk). Whoever holds it then talks to the restored
//! process through it.

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use compel_criu_tests::pty::dump_orphan_pts_victim;
use compel_criu_tests::{
    Spawned, Swrk, become_subreaper, restore_detached, skip_if_not_root, talk, test_lock, wait_file,
};
use criu_images::pb::{CriuOpts, CriuReq, CriuReqType, CriuResp};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use prost::Message;

#[test]
fn the_action_script_gets_the_new_master_as_its_stdin() {
    skip_if_not_root!("the_action_script_gets_the_new_master_as_its_stdin");
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let (pid, img) = dump_orphan_pts_victim(d.path());
    // The script hands the master on to a process that keeps it, whose pid it writes down.
    let script = d.path().join("hook.sh");
    let holder = d.path().join("holder.pid");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$CRTOOLS_SCRIPT_ACTION\" = orphan-pts-master ] || exit 0\n\
             [ -e /proc/self/fd/0 ] || exit 3\n\
             exec 3<&0\n sleep 60 <&3 >/dev/null 2>&1 &\necho $! > {}\n",
            holder.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let r = restore_detached(
        &img,
        &[
            "--orphan-pts-master",
            "--action-script",
            script.to_str().unwrap(),
        ],
    );
    let _rv = Spawned::guard(r);
    assert_eq!(r, pid);
    let hpid: i32 = wait_file(&holder, Duration::from_secs(5))
        .trim()
        .parse()
        .unwrap();
    let _h = Spawned::guard(hpid);
    // SAFETY: pidfd_open and pidfd_getfd take integers, no pointers; the pidfd is ours.
    let m = unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, hpid, 0) as i32;
        assert!(pidfd >= 0, "pidfd_open {hpid}");
        let m = libc::syscall(libc::SYS_pidfd_getfd, pidfd, 0, 0);
        libc::close(pidfd);
        m
    };
    assert!(m >= 0, "pidfd_getfd: {}", std::io::Error::last_os_error());
    // SAFETY: m is a new descriptor, ours alone.
    let master = unsafe { OwnedFd::from_raw_fd(m as i32) };
    let (verdict, seen) = talk(r, &master, &d.path().join("out"));
    assert!(
        verdict.starts_with("ok /dev/pts/"),
        "after restore: {verdict}"
    );
    assert!(seen.contains("pong"), "the new master read {seen:?}");
}

/// Receives one response and the descriptor that may come with it.
fn recv_with_fd(sk: &OwnedFd) -> (CriuResp, Option<OwnedFd>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([i32; 1]);
    let msg = recvmsg::<()>(
        sk.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .expect("no answer from criu");
    let n = msg.bytes;
    let mut fd = None;
    for c in msg.cmsgs().unwrap() {
        if let ControlMessageOwned::ScmRights(v) = c {
            // SAFETY: descriptors just received, ours alone.
            fd = v.first().map(|&f| unsafe { OwnedFd::from_raw_fd(f) });
        }
    }
    (CriuResp::decode(&buf[..n]).unwrap(), fd)
}

#[test]
fn the_rpc_client_gets_the_new_master_with_the_notification() {
    skip_if_not_root!("the_rpc_client_gets_the_new_master_with_the_notification");
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let (pid, img) = dump_orphan_pts_victim(d.path());
    let dir = std::fs::File::open(&img).unwrap();
    let s = Swrk::start(Duration::from_secs(30));
    s.send(&CriuReq {
        r#type: CriuReqType::Restore as i32,
        opts: Some(CriuOpts {
            images_dir_fd: dir.as_raw_fd(),
            notify_scripts: Some(true),
            orphan_pts_master: Some(true),
            log_file: Some("restore.log".into()),
            log_level: Some(4),
            ..Default::default()
        }),
        ..Default::default()
    });
    let mut master = None;
    let resp = loop {
        let (r, fd) = recv_with_fd(&s.sk);
        if r.r#type != CriuReqType::Notify as i32 {
            break r;
        }
        let script = r.notify.and_then(|n| n.script).unwrap_or_default();
        if script == "orphan-pts-master" {
            assert!(fd.is_some(), "orphan-pts-master came without a descriptor");
            master = fd;
        }
        s.send(&CriuReq {
            r#type: CriuReqType::Notify as i32,
            notify_success: Some(true),
            ..Default::default()
        });
    };
    assert!(
        resp.success,
        "restore over RPC failed: {:?}\n{}",
        resp.cr_errmsg,
        std::fs::read_to_string(img.join("restore.log")).unwrap_or_default()
    );
    let master = master.expect("no orphan-pts-master notification");
    let _rv = Spawned::guard(pid);
    let _ = s.finish();
    let (verdict, seen) = talk(pid, &master, &d.path().join("out"));
    assert!(
        verdict.starts_with("ok /dev/pts/"),
        "after restore: {verdict}"
    );
    assert!(seen.contains("pong"), "the new master read {seen:?}");
}
