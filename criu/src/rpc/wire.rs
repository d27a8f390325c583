//! The transport of CRIU's RPC: one protobuf message per `SOCK_SEQPACKET` packet, requests
//! (`criu_req`) from the client, responses (`criu_resp`) from criu, a descriptor riding along
//! with a response as `SCM_RIGHTS` where a notification hands one over (`orphan-pts-master`).

use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use criu_images::pb::{CriuReq, CriuResp};
use nix::sys::socket::{ControlMessage, MsgFlags, getsockopt, recv, sendmsg, sockopt};
use prost::Message;

use super::RpcError;

/// One packet read from the client.
#[derive(Debug)]
pub enum Incoming {
    /// A request that decoded.
    Request(Box<CriuReq>),
    /// A packet that is not a `criu_req` (the client gets an error reply).
    Malformed(String),
    /// The client closed its end.
    Closed,
}

/// Reads the next packet: its size is peeked first (`MSG_PEEK | MSG_TRUNC` gives a packet's
/// whole length), so a request of any size is read whole.
///
/// # Errors
/// [`RpcError::Socket`] when the socket fails (not when the client closes it).
pub fn recv_request(sk: BorrowedFd<'_>) -> Result<Incoming, RpcError> {
    let fd = sk.as_raw_fd();
    let len = loop {
        match recv(fd, &mut [], MsgFlags::MSG_PEEK | MsgFlags::MSG_TRUNC) {
            Ok(n) => break n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                return Err(RpcError::Socket {
                    what: "recv",
                    errno: e,
                });
            }
        }
    };
    let mut buf = vec![0u8; len.max(1)];
    let got = loop {
        match recv(fd, &mut buf, MsgFlags::MSG_TRUNC) {
            Ok(n) => break n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                return Err(RpcError::Socket {
                    what: "recv",
                    errno: e,
                });
            }
        }
    };
    if got == 0 {
        return Ok(Incoming::Closed);
    }
    if got > buf.len() {
        return Ok(Incoming::Malformed(format!(
            "request of {got} bytes grew while being read"
        )));
    }
    match CriuReq::decode(&buf[..got]) {
        Ok(req) => Ok(Incoming::Request(Box::new(req))),
        Err(e) => Ok(Incoming::Malformed(format!(
            "cannot decode a criu_req of {got} bytes: {e}"
        ))),
    }
}

/// Sends one response, with `fd` attached as `SCM_RIGHTS` when given.
///
/// # Errors
/// [`RpcError::Socket`] when the client is gone or the socket fails.
pub fn send_response(
    sk: BorrowedFd<'_>,
    resp: &CriuResp,
    fd: Option<BorrowedFd<'_>>,
) -> Result<(), RpcError> {
    let buf = resp.encode_to_vec();
    let iov = [IoSlice::new(&buf)];
    let fds: Vec<RawFd> = fd.iter().map(|f| f.as_raw_fd()).collect();
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsg };
    loop {
        match sendmsg::<()>(sk.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                return Err(RpcError::Socket {
                    what: "send",
                    errno: e,
                });
            }
        }
    }
}

/// The pid of the process on the other end (`SO_PEERCRED`: for a socketpair, the process that
/// made it; for a connection, the process that connected).
///
/// # Errors
/// [`RpcError::Socket`].
pub fn peer_pid(sk: BorrowedFd<'_>) -> Result<i32, RpcError> {
    getsockopt(&sk, sockopt::PeerCredentials)
        .map(|c| c.pid())
        .map_err(|e| RpcError::Socket {
            what: "SO_PEERCRED",
            errno: e,
        })
}

/// Whether `fd` is a `SOCK_SEQPACKET` socket (what `criu swrk FD` must be handed).
pub fn is_seqpacket(fd: BorrowedFd<'_>) -> bool {
    matches!(
        getsockopt(&fd, sockopt::SockType),
        Ok(nix::sys::socket::SockType::SeqPacket)
    )
}
