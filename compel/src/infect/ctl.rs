//! The host end of a parasite's control socket (`SOCK_SEQPACKET`): command headers, fds as
//! `SCM_RIGHTS`, and the parasite's log channel forwarded into `tracing`.
//!
//! Waiting for an answer also watches the thread the parasite runs in: if it stops (a fault in
//! the parasite, a signal) or dies, the wait ends with an error instead of hanging, so that the
//! caller can cure.
// Unsafe code: poll on the control socket, zeroed siginfo.
#![allow(unsafe_code)]

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use compel_proto::rpc::{CtlMsg, FDS_PER_MSG, FdsMsg};
use compel_proto::{Plain, as_bytes, read_plain};
use nix::errno::Errno;
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

use super::RpcError;

/// The most log datagrams one [`Ctl::drain_log`] reads.
const MAX_LOG_DATAGRAMS: usize = 1024;

/// How often a wait for the parasite checks on the thread it runs in.
const WATCH_SLICE: Duration = Duration::from_millis(20);

/// A received message: its bytes and the fds attached to it.
pub(crate) struct Received {
    pub bytes: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

/// The host's end of the control socket and (optionally) of the log channel.
#[derive(Debug)]
pub(crate) struct Ctl {
    pub pid: i32,
    /// The thread the daemon runs in (watched while waiting).
    pub tid: i32,
    pub sock: OwnedFd,
    pub log: Option<OwnedFd>,
    pub timeout: Duration,
    /// A partial log line carried over between reads.
    log_buf: Vec<u8>,
}

impl Ctl {
    pub fn new(pid: i32, tid: i32, sock: OwnedFd, log: Option<OwnedFd>, timeout: Duration) -> Ctl {
        Ctl {
            pid,
            tid,
            sock,
            log,
            timeout,
            log_buf: Vec::new(),
        }
    }

    /// Sends `msg` with `fds` attached.
    pub fn send<T: Plain>(&self, msg: &T, fds: &[BorrowedFd<'_>]) -> Result<(), RpcError> {
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let iov = [IoSlice::new(as_bytes(msg))];
        let cmsg = [ControlMessage::ScmRights(&raw)];
        let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsg };
        loop {
            match sendmsg::<()>(
                self.sock.as_raw_fd(),
                &iov,
                cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(Errno::EPIPE | Errno::ECONNRESET) => {
                    return Err(RpcError::Closed { pid: self.pid });
                }
                Err(source) => {
                    return Err(RpcError::Socket {
                        pid: self.pid,
                        op: "send",
                        source,
                    });
                }
            }
        }
    }

    /// Receives one message, forwarding log lines and watching the daemon thread meanwhile.
    pub fn recv(&mut self, what: &'static str) -> Result<Received, RpcError> {
        let deadline = Instant::now() + self.timeout;
        let mut spin = true;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.drain_log();
                return Err(RpcError::Timeout {
                    pid: self.pid,
                    what,
                    after: self.timeout,
                });
            }
            let slice = left.min(WATCH_SLICE);
            let (sock_ready, log_ready) = self.poll(slice, spin)?;
            spin = log_ready; // keep spinning only while the parasite is busy logging
            if log_ready {
                self.drain_log();
            }
            if sock_ready {
                return self.recv_now();
            }
            self.check_thread()?;
        }
    }

    /// Receives the answer to `cmd`: `Ok(())` or the parasite's errno.
    pub fn recv_ack(&mut self, cmd: u32) -> Result<(), RpcError> {
        let got = self.recv("an answer")?;
        let msg: CtlMsg = read_plain(&got.bytes).ok_or(RpcError::BadReply {
            pid: self.pid,
            cmd,
            what: "short message",
        })?;
        if msg.ack != cmd || msg.cmd != cmd {
            return Err(RpcError::BadReply {
                pid: self.pid,
                cmd,
                what: "answer to another command",
            });
        }
        if !got.fds.is_empty() {
            return Err(RpcError::BadReply {
                pid: self.pid,
                cmd,
                what: "unexpected fds",
            });
        }
        if msg.err != 0 {
            return Err(RpcError::Failed {
                pid: self.pid,
                cmd,
                errno: Errno::from_raw(msg.err),
            });
        }
        Ok(())
    }

    /// Receives one [`FdsMsg`] batch and returns its fds.
    pub fn recv_fds(&mut self) -> Result<Vec<OwnedFd>, RpcError> {
        let got = self.recv("fds")?;
        let hdr: FdsMsg = read_plain(&got.bytes).ok_or(RpcError::BadFds {
            pid: self.pid,
            what: "short fds message",
        })?;
        if hdr.count as usize != got.fds.len() || got.fds.is_empty() {
            return Err(RpcError::BadFds {
                pid: self.pid,
                what: "fd count does not match the attached fds",
            });
        }
        Ok(got.fds)
    }

    /// Sends `fds` in batches of [`FDS_PER_MSG`].
    pub fn send_fds(&self, fds: &[BorrowedFd<'_>]) -> Result<(), RpcError> {
        for chunk in fds.chunks(FDS_PER_MSG) {
            let hdr = FdsMsg {
                count: chunk.len() as u32,
                reserved: 0,
            };
            self.send(&hdr, chunk)?;
        }
        Ok(())
    }

    /// Polls both sockets for `slice` at most; with `spin`, looks without blocking for a while
    /// first (an answer usually comes within microseconds, see `crate::spin`).
    fn poll(&self, slice: Duration, spin: bool) -> Result<(bool, bool), RpcError> {
        if spin
            && let Some(ready) = crate::spin::spin(|| match self.poll_once(0) {
                Ok((false, false)) => None,
                other => Some(other),
            })
        {
            return ready;
        }
        let ms = slice.as_millis().clamp(1, i32::MAX as u128) as i32;
        self.poll_once(ms)
    }

    /// One `poll` of the control socket and the log channel, `ms` milliseconds at most.
    fn poll_once(&self, ms: i32) -> Result<(bool, bool), RpcError> {
        let mut fds = [
            libc::pollfd {
                fd: self.sock.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.log.as_ref().map_or(-1, |l| l.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: fds is a live local array of two pollfd (a negative fd is ignored).
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if rc < 0 {
            let source = Errno::last();
            if source == Errno::EINTR {
                return Ok((false, false));
            }
            return Err(RpcError::Socket {
                pid: self.pid,
                op: "poll",
                source,
            });
        }
        let ready =
            |p: &libc::pollfd| p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0;
        Ok((ready(&fds[0]), ready(&fds[1])))
    }

    fn recv_now(&mut self) -> Result<Received, RpcError> {
        let mut buf = vec![0u8; 4096];
        let mut cmsg = nix::cmsg_space!([RawFd; FDS_PER_MSG]);
        let (n, raw_fds) = loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            match recvmsg::<()>(
                self.sock.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(msg) => {
                    let mut fds = Vec::new();
                    let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
                    if let Ok(it) = msg.cmsgs() {
                        for c in it {
                            if let ControlMessageOwned::ScmRights(v) = c {
                                fds.extend(v);
                            }
                        }
                    }
                    // SAFETY: the kernel just installed these fds in this process for us
                    // (SCM_RIGHTS); nothing else owns them.
                    let owned: Vec<OwnedFd> = fds
                        .into_iter()
                        .map(|f| unsafe { OwnedFd::from_raw_fd(f) })
                        .collect();
                    if truncated {
                        return Err(RpcError::BadFds {
                            pid: self.pid,
                            what: "too many fds in one message",
                        });
                    }
                    break (msg.bytes, owned);
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => {
                    // Spurious wake-up: nothing there after all.
                    return self.recv("a message");
                }
                Err(source) => {
                    return Err(RpcError::Socket {
                        pid: self.pid,
                        op: "recv",
                        source,
                    });
                }
            }
        };
        if n == 0 {
            self.drain_log();
            return Err(RpcError::Closed { pid: self.pid });
        }
        buf.truncate(n);
        Ok(Received {
            bytes: buf,
            fds: raw_fds,
        })
    }

    /// Checks (without blocking, and without consuming the report) whether the daemon thread
    /// stopped or died: the task layer collects the report later.
    fn check_thread(&mut self) -> Result<(), RpcError> {
        // SAFETY: siginfo_t is plain data; all-zero is valid for waitid to fill.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: info is a live local; WNOHANG|WNOWAIT return at once and leave the status.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                self.tid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WSTOPPED | libc::WNOHANG | libc::WNOWAIT | libc::__WALL,
            )
        };
        // SAFETY: waitid filled info (si_pid stays 0 when nothing was ready).
        if rc == 0 && unsafe { info.si_pid() } == self.tid {
            // SAFETY: a report is present, so si_status is valid.
            let status = unsafe { info.si_status() };
            return Err(RpcError::ThreadStopped {
                pid: self.pid,
                tid: self.tid,
                stop: format!("code {} status {status}", info.si_code),
            });
        }
        Ok(())
    }

    /// Forwards whatever the parasite logged to `tracing`, one event per line.
    pub fn drain_log(&mut self) {
        let Some(log) = &self.log else { return };
        let mut buf = [0u8; 4096];
        // Bounded: a parasite that logs without end cannot keep the host here (the rest is
        // read on the next wake-up, after the deadline and the thread were checked).
        for _ in 0..MAX_LOG_DATAGRAMS {
            // SAFETY: buf is a live local buffer of buf.len() bytes; MSG_DONTWAIT never blocks.
            let n = unsafe {
                libc::recv(
                    log.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n <= 0 {
                break;
            }
            self.log_buf.extend_from_slice(&buf[..n as usize]);
            if !self.log_buf.ends_with(b"\n") {
                // Datagrams are whole lines; a missing newline ends the line anyway.
                self.log_buf.push(b'\n');
            }
            let text = std::mem::take(&mut self.log_buf);
            for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                emit_log_line(self.pid, line);
            }
        }
    }
}

/// Emits one parasite log line as a tracing event. The std plugin writes lines as
/// `pie: TID: message`; the thread id becomes a field.
fn emit_log_line(pid: i32, line: &[u8]) {
    let text = String::from_utf8_lossy(line);
    let parsed = text.strip_prefix("pie: ").and_then(|rest| {
        let (tid, msg) = rest.split_once(": ")?;
        Some((tid.parse::<i32>().ok()?, msg))
    });
    match parsed {
        Some((tid, msg)) => tracing::info!(target: "compel::parasite", pid, tid, "{msg}"),
        None => tracing::info!(target: "compel::parasite", pid, "{text}"),
    }
}
