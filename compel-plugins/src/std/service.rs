//! The service loop: receive a command header from the host, run it, answer.

use super::sys::{self, Errno};
use compel_proto::rpc::{CMD_FINI, CMD_PING, CMD_SET_LOG, CtlMsg, FdsMsg};
use compel_proto::{as_bytes, read_plain};
use core::sync::atomic::{AtomicI32, Ordering};

static CTL_SOCK: AtomicI32 = AtomicI32::new(-1);

/// The control socket to the host, or -1 outside the service loop (trap mode).
pub fn ctl_sock() -> i32 {
    CTL_SOCK.load(Ordering::Relaxed)
}

/// Sets the control socket (done by the entry code).
pub fn set_ctl_sock(fd: i32) {
    CTL_SOCK.store(fd, Ordering::Relaxed);
}

/// The control socket, or [`Errno::ENOTCONN`] outside the service loop.
///
/// # Errors
/// [`Errno::ENOTCONN`].
pub fn require_ctl_sock() -> Result<i32, Errno> {
    match ctl_sock() {
        fd if fd >= 0 => Ok(fd),
        _ => Err(Errno::ENOTCONN),
    }
}

/// Connects a `SOCK_SEQPACKET` unix socket to `addr` (a raw `sockaddr_un`).
///
/// # Errors
/// The kernel's.
pub fn connect_unix(addr: &[u8]) -> Result<i32, Errno> {
    let fd = sys::socket(sys::AF_UNIX, sys::SOCK_SEQPACKET | sys::SOCK_CLOEXEC, 0)?;
    match sys::connect(fd, addr) {
        Ok(()) => Ok(fd),
        Err(e) => {
            let _ = sys::close(fd);
            Err(e)
        }
    }
}

/// A command handler: runs command `cmd` with the payload area.
pub type Handler<'a> = dyn FnMut(u32, &mut [u8]) -> Result<(), Errno> + 'a;

/// Why [`serve`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The host sent [`CMD_FINI`] (answered).
    Fini,
    /// The host closed the socket.
    HostGone,
    /// The socket failed.
    Error(Errno),
}

/// Runs compel's own commands ([`CMD_SET_LOG`], [`CMD_PING`]) and passes every other one to
/// `handler`. Used by the service loop and by trap mode.
pub fn dispatch(
    sock: i32,
    cmd: u32,
    payload: &mut [u8],
    handler: &mut Handler<'_>,
) -> Result<(), Errno> {
    match cmd {
        CMD_PING => Ok(()),
        CMD_SET_LOG => {
            let level: u32 = super::read_args(payload)?;
            if sock < 0 {
                return Err(Errno::ENOTCONN);
            }
            let mut fd = [-1i32];
            crate::fds::recv_fds_on(sock, &mut fd)?;
            let old = super::log::log_fd();
            super::log::set_log(fd[0], level);
            if old >= 0 {
                let _ = sys::close(old);
            }
            Ok(())
        }
        _ => handler(cmd, payload),
    }
}

/// Serves commands on `sock` until [`CMD_FINI`] or the host goes away: each command header is
/// answered `{cmd, ack: cmd, err}` after running it with `payload`.
pub fn serve(sock: i32, payload: &mut [u8], handler: &mut Handler<'_>) -> Ended {
    loop {
        let mut buf = [0u8; core::mem::size_of::<CtlMsg>() + 4];
        let mut no_fds = [0i32; 0];
        let msg = match sys::recv_with_fds(sock, &mut buf, &mut no_fds) {
            Ok((0, _)) => return Ended::HostGone,
            Ok((n, _)) if n == core::mem::size_of::<CtlMsg>() => read_plain::<CtlMsg>(&buf),
            // A message of the wrong size, or with fds attached (closed on receipt): refused.
            Ok(_) | Err(Errno::EMSGSIZE) => None,
            Err(Errno::ENOTCONN) => return Ended::HostGone,
            Err(e) => return Ended::Error(e),
        };
        let Some(msg) = msg.filter(|m| m.ack == 0) else {
            crate::log!(WARN, "bad command message on the control socket");
            if let Err(e) = answer(sock, CtlMsg::ack(0, Errno::EBADMSG.0)) {
                return Ended::Error(e);
            }
            continue;
        };
        crate::log!(DEBUG, "command {}", msg.cmd);
        let err = if msg.cmd == CMD_FINI {
            0
        } else {
            match dispatch(sock, msg.cmd, payload, handler) {
                Ok(()) => 0,
                Err(e) => {
                    crate::log!(DEBUG, "command {} failed: errno {}", msg.cmd, e.0);
                    e.0
                }
            }
        };
        if let Err(e) = answer(sock, CtlMsg::ack(msg.cmd, err)) {
            return if e == Errno(32) {
                Ended::HostGone
            } else {
                Ended::Error(e)
            }; // EPIPE
        }
        if msg.cmd == CMD_FINI {
            return Ended::Fini;
        }
    }
}

fn answer(sock: i32, msg: CtlMsg) -> Result<(), Errno> {
    sys::send_with_fds(sock, as_bytes(&msg), &[]).map(drop)
}

/// Receives an [`FdsMsg`]-framed batch (used by [`crate::fds`]).
pub(crate) fn recv_fds_msg(sock: i32, fds: &mut [i32]) -> Result<usize, Errno> {
    let mut buf = [0u8; core::mem::size_of::<FdsMsg>()];
    let (n, got) = sys::recv_with_fds(sock, &mut buf, fds)?;
    let hdr: Option<FdsMsg> = read_plain(&buf[..n]);
    match hdr {
        Some(h) if h.count as usize == got && got > 0 => Ok(got),
        _ => {
            for &fd in &fds[..got] {
                let _ = sys::close(fd);
            }
            Err(if n == 0 {
                Errno::ENOTCONN
            } else {
                Errno::EPROTO
            })
        }
    }
}
