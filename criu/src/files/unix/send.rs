//! Sending a queued message again at restore: to a name or on a connection, with the
//! descriptors in flight (`SCM_RIGHTS`) and the sender's credentials; shared by the sockets'
//! restore and the refills done once every task exists ([`super::late`]).
// Unsafe code: building a sockaddr_un and a msghdr with SCM_RIGHTS for sendmsg.
#![allow(unsafe_code)]

use std::os::fd::RawFd;

use criu_images::names;

use crate::files::socket::{SocketError, sys};

/// A `sockaddr_un` for `name` (as the kernel reports it); `None` for an empty name.
pub(super) fn sockaddr(name: &[u8]) -> Option<(libc::sockaddr_un, libc::socklen_t)> {
    if name.is_empty() || name.len() > 108 {
        return None;
    }
    // SAFETY: a zeroed sockaddr_un is a valid value.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as u16;
    for (d, s) in a.sun_path.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + name.len();
    Some((a, len as libc::socklen_t))
}

fn send_all(fd: RawFd, data: &[u8], to: Option<&[u8]>, what: &str) -> Result<(), SocketError> {
    let addr = to.and_then(sockaddr);
    let mut at = 0;
    loop {
        let rest = &data[at..];
        // SAFETY: sendto reads `rest` and, if given, a live sockaddr_un.
        let n = unsafe {
            match &addr {
                Some((a, len)) => libc::sendto(
                    fd,
                    rest.as_ptr().cast(),
                    rest.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                    (a as *const libc::sockaddr_un).cast(),
                    *len,
                ),
                None => libc::send(
                    fd,
                    rest.as_ptr().cast(),
                    rest.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                ),
            }
        };
        if n < 0 {
            return Err(sys(format!("refilling the queue of {what}")));
        }
        at += n as usize;
        if at >= data.len() {
            return Ok(());
        }
    }
}

/// Sends `m` on `fd` (to `to` if given), with the descriptors `rights` in flight with its
/// first bytes (`SCM_RIGHTS`) and the sender's credentials `ucred` if the dump saw them.
pub(super) fn send_msg(
    fd: RawFd,
    m: &[u8],
    rights: &[RawFd],
    ucred: Option<super::creds::Ucred>,
    to: Option<&[u8]>,
    what: &str,
) -> Result<(), SocketError> {
    if let Some(c) = ucred {
        let addr = to.and_then(sockaddr);
        return super::creds::send(fd, m, rights, c, addr.as_ref(), what);
    }
    if rights.is_empty() {
        return send_all(fd, m, to, what);
    }
    let mut addr = to.and_then(sockaddr);
    let mut ctl = [0u64; 160];
    // cmsghdr (16 bytes) and the descriptors, rounded up as CMSG_SPACE does.
    let space = (std::mem::size_of::<libc::cmsghdr>() + 4 * rights.len()).next_multiple_of(8);
    if space > std::mem::size_of_val(&ctl) {
        return Err(SocketError::BadImage {
            file: names::SK_QUEUES.into(),
            reason: format!("{what}: {} files in flight with one message", rights.len()),
        });
    }
    let mut iov = libc::iovec {
        iov_base: m.as_ptr() as *mut libc::c_void,
        iov_len: m.len(),
    };
    // SAFETY: a zeroed msghdr is valid; every pointer set below is a live local, the control
    // buffer is big enough for one SCM_RIGHTS header and `rights` (checked above).
    let n = unsafe {
        let mut mh: libc::msghdr = std::mem::zeroed();
        mh.msg_iov = &mut iov;
        mh.msg_iovlen = 1;
        if let Some((a, len)) = addr.as_mut() {
            mh.msg_name = (a as *mut libc::sockaddr_un).cast();
            mh.msg_namelen = *len;
        }
        mh.msg_control = ctl.as_mut_ptr().cast();
        mh.msg_controllen = libc::CMSG_SPACE(4 * rights.len() as u32) as usize;
        let c = libc::CMSG_FIRSTHDR(&mh);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(4 * rights.len() as u32) as usize;
        let data = libc::CMSG_DATA(c) as *mut i32;
        for (k, &r) in rights.iter().enumerate() {
            std::ptr::write_unaligned(data.add(k), r);
        }
        libc::sendmsg(fd, &mh, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    };
    if n < 0 {
        return Err(sys(format!(
            "refilling the queue of {what} (with files in flight)"
        )));
    }
    let n = n as usize;
    if n < m.len() {
        return send_all(fd, &m[n..], to, what);
    }
    Ok(())
}
