//! A raw RPC client: `criu swrk FD` on one end of a socketpair made here, speaking rpc.proto
//! one packet per message, as runc and libcriu do.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criu_images::pb::{CriuOpts, CriuReq, CriuReqType, CriuResp};
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockType, recv, send, setsockopt, socketpair, sockopt,
};
use nix::sys::time::TimeVal;
use prost::Message;

use crate::criu_bin;

/// A `criu swrk` session.
pub struct Swrk {
    /// Our end of the session's socket.
    pub sk: OwnedFd,
    child: Child,
}

impl Swrk {
    /// Starts `criu swrk`; each answer must come within `timeout`.
    pub fn start(timeout: Duration) -> Swrk {
        Swrk::start_with_stdout(timeout, Stdio::inherit())
    }

    /// [`Swrk::start`] with criu's standard output going to `stdout` ([`Stdio::piped`]: read it
    /// through [`Swrk::take_stdout`]).
    pub fn start_with_stdout(timeout: Duration, stdout: Stdio) -> Swrk {
        Swrk::start_under(timeout, stdout, &[])
    }

    /// [`Swrk::start_with_stdout`] with criu run by a wrapper: `WRAPPER... criu swrk FD` (e.g.
    /// `setpriv --reuid ... --`; empty: criu itself).
    pub fn start_under(timeout: Duration, stdout: Stdio, wrapper: &[&str]) -> Swrk {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        // The child's end must survive exec: duplicate it without close-on-exec.
        let fd = nix::unistd::dup(&theirs).unwrap();
        let mut cmd = match wrapper.split_first() {
            Some((w, rest)) => {
                let mut c = Command::new(w);
                c.args(rest).arg(criu_bin());
                c
            }
            None => Command::new(criu_bin()),
        };
        let child = cmd
            .arg("swrk")
            .arg(fd.as_raw_fd().to_string())
            .stdin(Stdio::null())
            .stdout(stdout)
            .spawn()
            .unwrap();
        drop(fd);
        drop(theirs);
        let tv = TimeVal::new(timeout.as_secs() as _, 0);
        setsockopt(&ours, sockopt::ReceiveTimeout, &tv).unwrap();
        Swrk { sk: ours, child }
    }

    /// The pid of the `criu swrk` process.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// criu's standard output, when it was started with it piped (once).
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }

    /// Sends `bytes` as one packet, whatever they hold.
    pub fn send_raw(&self, bytes: &[u8]) {
        send(self.sk.as_raw_fd(), bytes, MsgFlags::empty()).unwrap();
    }

    /// Sends a request.
    pub fn send(&self, req: &CriuReq) {
        self.send_raw(&req.encode_to_vec());
    }

    /// The next response, `None` when criu closed the socket.
    pub fn recv(&self) -> Option<CriuResp> {
        recv_resp(self.sk.as_fd())
    }

    /// Sends a request and reads its answer.
    pub fn call(&self, req: &CriuReq) -> CriuResp {
        self.send(req);
        self.recv()
            .expect("criu closed the socket without an answer")
    }

    /// The next message, which must be the notification `action`; panics otherwise.
    pub fn expect_notify(&self, action: &str) -> CriuResp {
        let r = self.recv().expect("a notification");
        assert_eq!(r.r#type, CriuReqType::Notify as i32, "{r:?}");
        assert!(r.success, "{r:?}");
        assert_eq!(
            r.notify.as_ref().and_then(|n| n.script.as_deref()),
            Some(action),
            "{r:?}"
        );
        r
    }

    /// Acknowledges a notification (`ok`: success).
    pub fn ack(&self, ok: bool) {
        self.send(&CriuReq {
            r#type: CriuReqType::Notify as i32,
            notify_success: Some(ok),
            ..Default::default()
        });
    }

    /// Answers every notification with success until the final answer, which is returned with
    /// the actions seen, in order.
    pub fn call_acking(&self, req: &CriuReq) -> (CriuResp, Vec<String>) {
        self.send(req);
        let mut seen = Vec::new();
        loop {
            let r = self
                .recv()
                .expect("criu closed the socket without an answer");
            if r.r#type != CriuReqType::Notify as i32 {
                return (r, seen);
            }
            seen.push(r.notify.and_then(|n| n.script).unwrap_or_default());
            self.ack(true);
        }
    }

    /// Closes our end and waits for criu to exit; returns its exit code.
    pub fn finish(mut self) -> Option<i32> {
        drop(self.sk);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!("criu swrk did not exit");
    }
}

/// A request of type `ty` with `opts`.
pub fn req(ty: CriuReqType, opts: CriuOpts) -> CriuReq {
    CriuReq {
        r#type: ty as i32,
        opts: Some(opts),
        ..Default::default()
    }
}

/// One request in a `criu swrk` session of its own: its answer (notifications acknowledged) and
/// criu's exit code.
pub fn swrk_once(q: &CriuReq) -> (CriuResp, Option<i32>) {
    let s = Swrk::start(Duration::from_secs(60));
    let (r, _) = s.call_acking(q);
    (r, s.finish())
}

/// The next response on an RPC socket, `None` when criu closed it.
pub fn recv_resp(sk: BorrowedFd<'_>) -> Option<CriuResp> {
    let mut buf = vec![0u8; 64 * 1024];
    let n = recv(sk.as_raw_fd(), &mut buf, MsgFlags::empty()).expect("no answer from criu");
    if n == 0 {
        return None;
    }
    Some(CriuResp::decode(&buf[..n]).expect("criu sent something that is not a criu_resp"))
}
