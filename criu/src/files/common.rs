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
