//! The fds plugin: pass file descriptors to and from the host over the control socket, in
//! batches of at most [`FDS_PER_MSG`], each an [`FdsMsg`] with the fds attached as `SCM_RIGHTS`.

use crate::std::service::{recv_fds_msg, require_ctl_sock};
use crate::std::sys::{self, Errno};
use compel_proto::as_bytes;
use compel_proto::rpc::{FDS_PER_MSG, FdsMsg};

/// Sends `fds` (they stay open here) to the host.
///
/// # Errors
/// No control socket, or the kernel's.
pub fn send_fds(fds: &[i32]) -> Result<(), Errno> {
    send_fds_on(require_ctl_sock()?, fds)
}

/// Receives exactly `fds.len()` fds from the host into `fds`.
///
/// # Errors
/// No control socket, a malformed message ([`Errno::EPROTO`]), or the kernel's; fds received
/// before the error are closed.
pub fn recv_fds(fds: &mut [i32]) -> Result<(), Errno> {
    recv_fds_on(require_ctl_sock()?, fds)
}

/// [`send_fds`] on an explicit socket.
///
/// # Errors
/// As [`send_fds`].
pub fn send_fds_on(sock: i32, fds: &[i32]) -> Result<(), Errno> {
    for batch in fds.chunks(FDS_PER_MSG) {
        let msg = FdsMsg {
            count: batch.len() as u32,
            reserved: 0,
        };
        sys::send_with_fds(sock, as_bytes(&msg), batch)?;
    }
    Ok(())
}

/// [`recv_fds`] on an explicit socket.
///
/// # Errors
/// As [`recv_fds`].
pub fn recv_fds_on(sock: i32, fds: &mut [i32]) -> Result<(), Errno> {
    let mut done = 0;
    while done < fds.len() {
        let want = (fds.len() - done).min(FDS_PER_MSG);
        match recv_fds_msg(sock, &mut fds[done..done + want]) {
            Ok(n) => done += n,
            Err(e) => {
                for &fd in &fds[..done] {
                    let _ = sys::close(fd);
                }
                return Err(e);
            }
        }
    }
    Ok(())
}
