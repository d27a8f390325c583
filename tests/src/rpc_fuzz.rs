//! RPC requests as untrusted input, for the fuzz tests (issue 23): a `criu swrk` session that
//! reads answers without panicking, and the defusing that makes any request that decodes
//! harmless before it is sent.
//!
//! A defused request names only pids that cannot exist, the test's images directory, no log
//! file, root, exec command, page server, external resource, inherited or status fd,
//! namespace to join, cgroup to freeze, LSM profile or configuration file; page-server requests
//! become version requests. So a request can never dump, kill or restore a real process or
//! write outside the test's directory, whatever its other options say.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criu_images::pb::{CriuReq, CriuReqType, CriuResp};
use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockType, recv, send, setsockopt, socketpair, sockopt,
};
use nix::sys::time::TimeVal;
use prost::Message;

use crate::criu_bin;
use crate::rng::Rng;

/// How long one answer may take: a hang fails the run.
pub const ANSWER: Duration = Duration::from_secs(20);

/// Pids no process can have (above any pid_max, or negative).
pub const NO_PIDS: [i32; 3] = [0x3fff_fff0, i32::MAX, -7];

/// Makes a request that decodes harmless (see the module documentation); `None` keeps the
/// bytes as they are (they do not decode, and criu must say so).
pub fn defuse(bytes: &[u8], dir: &str, rng: &mut Rng) -> Option<Vec<u8>> {
    let mut r = CriuReq::decode(bytes).ok()?;
    if r.r#type == CriuReqType::PageServer as i32 || r.r#type == CriuReqType::PageServerChld as i32
    {
        r.r#type = CriuReqType::Version as i32;
    }
    let no_pid = NO_PIDS[rng.below(NO_PIDS.len())];
    if r.pid.is_some() {
        r.pid = Some(no_pid as u32);
    }
    let mut o = r.opts.take().unwrap_or_default();
    o.pid = Some(no_pid);
    o.images_dir_fd = -1;
    o.images_dir = Some(dir.to_string());
    o.work_dir_fd = None;
    o.log_file = None;
    o.root = None;
    o.exec_cmd.clear();
    o.ps = None;
    o.lsm_profile = None;
    o.lsm_mount_context = None;
    o.config_file = None;
    o.cgroup_yard = None;
    o.freeze_cgroup = None;
    o.inherit_fd.clear();
    o.external.clear();
    o.status_fd = None;
    o.pidfd_store_sk = None;
    o.join_ns.clear();
    r.opts = Some(o);
    Some(r.encode_to_vec())
}

/// A `criu swrk` session on a socketpair, its stderr kept in a file.
pub struct Session {
    sk: OwnedFd,
    child: Child,
    stderr: PathBuf,
}

/// How criu answered one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// A `criu_resp` of this type (notifications on the way acknowledged).
    Resp(i32),
    /// criu closed the session.
    Closed,
}

impl Session {
    /// Starts `criu swrk`, its stderr going to `stderr`.
    ///
    /// # Panics
    /// If criu cannot be started.
    pub fn start(stderr: &Path) -> Session {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .expect("socketpair");
        let fd = nix::unistd::dup(&theirs).expect("dup");
        let child = Command::new(criu_bin())
            .arg("swrk")
            .arg(fd.as_raw_fd().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(stderr).expect("criu's stderr file"))
            .spawn()
            .expect("start criu swrk");
        drop(fd);
        drop(theirs);
        let tv = TimeVal::new(ANSWER.as_secs() as _, 0);
        setsockopt(&ours, sockopt::ReceiveTimeout, &tv).expect("SO_RCVTIMEO");
        Session {
            sk: ours,
            child,
            stderr: stderr.to_path_buf(),
        }
    }

    /// Sends one packet; false when criu has closed its end.
    ///
    /// # Panics
    /// On an unexpected send error.
    pub fn send(&self, bytes: &[u8]) -> bool {
        match send(self.sk.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL) {
            Ok(_) => true,
            Err(Errno::EPIPE | Errno::ECONNRESET) => false,
            Err(e) => panic!("sending a request: {e}"),
        }
    }

    /// The answer: a `criu_resp` that decodes, or a clean close; a notification (an action
    /// script's stage) is acknowledged and the answer read after it.
    ///
    /// # Panics
    /// On a hang or on bytes that are not a `criu_resp`.
    pub fn answer(&self, req: &[u8]) -> Answer {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match recv(self.sk.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(0) | Err(Errno::ECONNRESET) => return Answer::Closed,
                Ok(n) => match CriuResp::decode(&buf[..n]) {
                    Ok(r) if r.r#type == CriuReqType::Notify as i32 => {
                        let ack = CriuReq {
                            r#type: CriuReqType::Notify as i32,
                            notify_success: Some(true),
                            ..Default::default()
                        };
                        if !self.send(&ack.encode_to_vec()) {
                            return Answer::Closed;
                        }
                    }
                    Ok(r) => return Answer::Resp(r.r#type),
                    Err(e) => panic!("answer to {req:02x?} is not a criu_resp: {e}"),
                },
                Err(Errno::EAGAIN) => panic!("no answer within {ANSWER:?} to {req:02x?}"),
                Err(e) => panic!("receiving the answer to {req:02x?}: {e}"),
            }
        }
    }

    /// Closes our end; criu must exit by itself, normally: no signal, no Rust panic (exit
    /// code 101, or "panicked" on its stderr).
    ///
    /// # Panics
    /// If it does not.
    pub fn finish(mut self, last: &[u8]) {
        drop(self.sk);
        let t0 = Instant::now();
        let st = loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                break st;
            }
            if t0.elapsed() > ANSWER {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("criu swrk did not exit after {last:02x?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let mut err = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.stderr) {
            let _ = f.read_to_string(&mut err);
        }
        assert!(
            !err.contains("panicked"),
            "criu swrk panicked after {last:02x?}: {err}"
        );
        match st.code() {
            Some(101) => panic!("criu swrk panicked after {last:02x?}: {err}"),
            Some(_) => {}
            None => panic!("criu swrk was killed by a signal ({st}) after {last:02x?}"),
        }
    }
}
