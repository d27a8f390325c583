//! What several kinds of open file share beyond the [`FileKind`](super::FileKind) table.

use std::collections::HashMap;

use super::sockdiag::DiagError;
use super::socket::{SockAt, SocketError};

/// The sock_diag record of socket `at` of family `family` (`netlink`, `packet`), from `cache`,
/// which `load` (one sock_diag dump of the family) fills the first time it is needed.
///
/// # Errors
/// What `load` fails with, [`SocketError::NotInDiag`] for a socket the dump does not list.
pub(super) fn diag_of<T: Clone>(
    cache: &mut Option<HashMap<u32, T>>,
    load: fn() -> Result<HashMap<u32, T>, DiagError>,
    at: SockAt,
    family: &'static str,
) -> Result<T, SocketError> {
    if cache.is_none() {
        *cache = Some(load()?);
    }
    cache
        .as_ref()
        .and_then(|m| m.get(&at.ino))
        .cloned()
        .ok_or(SocketError::NotInDiag { at, family })
}

/// The type the lease on fd `fd` of `pid`, being broken, goes to (`F_GETLEASE` on criu's copy of
/// the open file: `F_RDLCK` or `F_UNLCK`).
///
/// # Errors
/// [`crate::dump::error::DumpError::File`] naming the descriptor.
pub(crate) fn lease_target(pid: i32, fd: i32) -> Result<u32, crate::dump::error::DumpError> {
    use std::os::fd::AsRawFd;
    let what = format!("F_GETLEASE of fd {fd} of {pid}");
    let f = super::socket::steal(pid, fd).map_err(|e| crate::dump::error::DumpError::File {
        what: what.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    // SAFETY: fcntl query on a descriptor we own.
    let t = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETLEASE) };
    if t < 0 {
        return Err(crate::dump::error::DumpError::File {
            what,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(t as u32)
}
