//! Types shared by the compel host runtime and parasite code (layer: bottom, `no_std`).
//!
//! Everything here is `#[repr(C)]` with its size pinned by a `const` assertion, because both
//! sides of the parasite boundary compile this crate and must agree on every byte.
//!
//! - [`blob`]: the blob format (a self-describing header, the image, the relocation table and the
//!   exported symbols) and [`blob::BlobDesc`], the in-memory description the runtime infects.
//! - [`rpc`]: the control-socket protocol between the host and a running parasite: the args area
//!   header, the command header `{cmd, ack, err}`, and the fd and shared-memory messages.
//!
//! ```
//! use compel_proto::blob::BlobDesc;
//!
//! fn load(file: &[u8]) -> Result<Vec<u8>, compel_proto::blob::BlobError> {
//!     let blob = BlobDesc::parse(file)?;
//!     let mut mem = vec![0u8; blob.mem_size()];
//!     blob.copy_into(&mut mem)?;
//!     blob.apply_relocs(&mut mem, 0x7f00_0000_0000)?;
//!     Ok(mem)
//! }
//! # let _ = load;
//! ```
#![no_std]

pub mod blob;
pub mod rpc;

/// Marks a `#[repr(C)]` type as plain old data: every bit pattern of its size is a valid value
/// and it has no padding that matters, so it can be read from or written to a byte area shared
/// with another process.
///
/// # Safety
/// The implementing type must be `#[repr(C)]` (or `#[repr(transparent)]`), contain only integers,
/// arrays of integers or other `Plain` types, and accept any bit pattern.
pub unsafe trait Plain: Copy + 'static {}

// SAFETY: integers accept every bit pattern.
unsafe impl Plain for u8 {}
// SAFETY: integers accept every bit pattern.
unsafe impl Plain for u16 {}
// SAFETY: integers accept every bit pattern.
unsafe impl Plain for u32 {}
// SAFETY: integers accept every bit pattern.
unsafe impl Plain for u64 {}
// SAFETY: integers accept every bit pattern.
unsafe impl Plain for i32 {}
// SAFETY: integers accept every bit pattern.
unsafe impl Plain for i64 {}
// SAFETY: an array of plain values is plain.
unsafe impl<T: Plain, const N: usize> Plain for [T; N] {}

/// Reads a `T` from the start of `bytes` (any alignment), or `None` if `bytes` is too short.
pub fn read_plain<T: Plain>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < core::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: `bytes` holds at least size_of::<T>() readable bytes, read_unaligned has no
    // alignment requirement, and `T: Plain` accepts any bit pattern.
    Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Writes `value` at the start of `bytes` (any alignment); returns `false` if `bytes` is too
/// short.
pub fn write_plain<T: Plain>(bytes: &mut [u8], value: &T) -> bool {
    if bytes.len() < core::mem::size_of::<T>() {
        return false;
    }
    // SAFETY: `bytes` holds at least size_of::<T>() writable bytes and write_unaligned has no
    // alignment requirement.
    unsafe { core::ptr::write_unaligned(bytes.as_mut_ptr().cast::<T>(), *value) };
    true
}

/// Views `value` as its bytes.
pub fn as_bytes<T: Plain>(value: &T) -> &[u8] {
    // SAFETY: `T: Plain` is plain data of size_of::<T>() bytes, all initialised (no padding
    // that could be uninitialised by the Plain contract); the slice borrows `value`.
    unsafe {
        core::slice::from_raw_parts((value as *const T).cast::<u8>(), core::mem::size_of::<T>())
    }
}
