//! What the lazy-pages daemon receives on its sockets: a restore's messages (a task's pid with
//! its userfaultfd, a zombie, the word that the restore finished) and descriptors sent with a
//! few bytes of data (also the watchdog's messages).

// Unsafe code: recvmsg with SCM_RIGHTS.
#![allow(unsafe_code)]

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use super::{LazyError, RESTORE_FINISHED, io_err};

/// What a restore sent the daemon.
pub(super) enum Msg {
    Eof,
    Finished,
    Zombie(i32),
    Task(i32, OwnedFd),
}

pub(super) fn recv_msg(sock: &mut UnixStream) -> Result<Msg, LazyError> {
    let mut b = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match sock.read(&mut b[got..]) {
            Ok(0) if got == 0 => return Ok(Msg::Eof),
            Ok(0) => return Err(LazyError::Protocol("a restore sent half a pid".into())),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err("read from a restore")(e)),
        }
    }
    let v = i32::from_ne_bytes(b);
    if v as u32 == RESTORE_FINISHED {
        return Ok(Msg::Finished);
    }
    if v <= 0 {
        // From the socket's peer: i32::MIN has no positive counterpart.
        let pid = v
            .checked_neg()
            .ok_or_else(|| LazyError::Protocol(format!("a restore sent pid {v}")))?;
        return Ok(Msg::Zombie(pid));
    }
    let fd = recv_fd(sock.as_raw_fd()).map_err(|e| LazyError::Io {
        what: format!("receive the userfaultfd of task {v}"),
        source: std::io::Error::from_raw_os_error(e),
    })?;
    Ok(Msg::Task(v, fd))
}

/// Receives up to 4 bytes carrying a descriptor; returns the descriptor and the bytes as a
/// native `i32`. `Err(Some(b))`: a message of one byte `b` without a descriptor;
/// `Err(None)`: end of stream or an error.
pub(super) fn recv_fd_byte(sock: RawFd) -> Result<(OwnedFd, i32), Option<u8>> {
    let mut b = [0u8; 4];
    let mut iov = libc::iovec {
        iov_base: b.as_mut_ptr().cast(),
        iov_len: 4,
    };
    let mut cbuf = [0u64; 8];
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
    // SAFETY: receives into live buffers described by `msg`.
    let n = unsafe { libc::recvmsg(sock, &raw mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n <= 0 {
        return Err(None);
    }
    // SAFETY: the kernel filled the control buffer; the CMSG macros stay inside it.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        if c.is_null()
            || (*c).cmsg_level != libc::SOL_SOCKET
            || (*c).cmsg_type != libc::SCM_RIGHTS
            || (*c).cmsg_len < libc::CMSG_LEN(4) as _
        {
            return Err(Some(b[0]));
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<i32>());
        Ok((OwnedFd::from_raw_fd(fd), i32::from_ne_bytes(b)))
    }
}

/// Receives the one byte that carries a task's userfaultfd.
fn recv_fd(sock: RawFd) -> Result<OwnedFd, i32> {
    recv_fd_byte(sock)
        .map(|(fd, _)| fd)
        .map_err(|_| libc::EBADMSG)
}
