//! The std plugin: system calls, logging, memory functions, the service loop and the entry.

pub mod log;
pub mod mem;
pub mod service;
pub mod sys;

#[cfg(compel_parasite)]
mod capi;
#[cfg(compel_parasite)]
mod entry;

pub use sys::Errno;

use compel_proto::Plain;

/// Reads a `T` from the start of a command's payload.
///
/// # Errors
/// [`Errno::EINVAL`] if the payload is too short.
pub fn read_args<T: Plain>(payload: &[u8]) -> Result<T, Errno> {
    compel_proto::read_plain(payload).ok_or(Errno::EINVAL)
}

/// Writes `value` at the start of a command's payload (its result, for the host to read).
///
/// # Errors
/// [`Errno::ERANGE`] if the payload is too short.
pub fn write_args<T: Plain>(payload: &mut [u8], value: &T) -> Result<(), Errno> {
    if compel_proto::write_plain(payload, value) {
        Ok(())
    } else {
        Err(Errno::ERANGE)
    }
}
