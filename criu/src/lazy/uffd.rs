//! The userfaultfd ABI that lazy restore uses: making a descriptor with the events a
//! non-cooperative monitor needs, registering areas for missing-page faults, reading the
//! messages, and resolving faults with `UFFDIO_COPY` / `UFFDIO_ZEROPAGE`.
// Unsafe code: userfaultfd(2), its ioctls and reading its messages into plain structs.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const UFFD_API: u64 = 0xaa;
/// Forks of a registered process hand the monitor a new descriptor.
pub const FEATURE_EVENT_FORK: u64 = 1 << 1;
/// `mremap` of a registered area is reported.
pub const FEATURE_EVENT_REMAP: u64 = 1 << 2;
/// `madvise(MADV_DONTNEED/REMOVE)` of a registered area is reported.
pub const FEATURE_EVENT_REMOVE: u64 = 1 << 3;
/// `munmap` of a registered area is reported.
pub const FEATURE_EVENT_UNMAP: u64 = 1 << 6;
/// What lazy restore asks for (CRIU asks for the same four).
pub const LAZY_FEATURES: u64 =
    FEATURE_EVENT_FORK | FEATURE_EVENT_REMAP | FEATURE_EVENT_REMOVE | FEATURE_EVENT_UNMAP;

const UFFDIO_API: libc::c_ulong = 0xc018_aa3f;
const UFFDIO_REGISTER: libc::c_ulong = 0xc020_aa00;
const UFFDIO_COPY: libc::c_ulong = 0xc028_aa03;
const UFFDIO_ZEROPAGE: libc::c_ulong = 0xc020_aa04;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;

/// `UFFD_EVENT_PAGEFAULT`.
pub const EVENT_PAGEFAULT: u8 = 0x12;
/// `UFFD_EVENT_FORK`.
pub const EVENT_FORK: u8 = 0x13;
/// `UFFD_EVENT_REMAP`.
pub const EVENT_REMAP: u8 = 0x14;
/// `UFFD_EVENT_REMOVE`.
pub const EVENT_REMOVE: u8 = 0x15;
/// `UFFD_EVENT_UNMAP`.
pub const EVENT_UNMAP: u8 = 0x16;

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}
const _: () = assert!(std::mem::size_of::<UffdioApi>() == 24);

#[repr(C)]
struct UffdioRegister {
    start: u64,
    len: u64,
    mode: u64,
    ioctls: u64,
}
const _: () = assert!(std::mem::size_of::<UffdioRegister>() == 32);

#[repr(C)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}
const _: () = assert!(std::mem::size_of::<UffdioCopy>() == 40);

#[repr(C)]
struct UffdioZeropage {
    start: u64,
    len: u64,
    mode: u64,
    zeropage: i64,
}
const _: () = assert!(std::mem::size_of::<UffdioZeropage>() == 32);

/// One `struct uffd_msg` (32 bytes: the event, padding, then 24 bytes of arguments).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Msg {
    /// `UFFD_EVENT_*`.
    pub event: u8,
    /// The three argument words.
    pub arg: [u64; 3],
}

impl Msg {
    /// Decodes the wire bytes.
    pub fn decode(b: &[u8; 32]) -> Msg {
        let w = |i: usize| u64::from_ne_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        Msg {
            event: b[0],
            arg: [w(8), w(16), w(24)],
        }
    }
}

/// Makes a userfaultfd in the calling process (its memory is what the descriptor watches) with
/// `features`; returns the descriptor and the features the kernel granted.
///
/// # Errors
/// The errno of `userfaultfd(2)` or `UFFDIO_API`.
pub fn open(features: u64) -> Result<(OwnedFd, u64), i32> {
    // SAFETY: userfaultfd with plain flags returns a new descriptor of ours or an error.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: `fd` was just returned by userfaultfd and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let mut api = UffdioApi {
        api: UFFD_API,
        features,
        ioctls: 0,
    };
    // SAFETY: the API handshake on our new descriptor writes into `api` only.
    if unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_API, &raw mut api) } != 0 {
        return Err(errno());
    }
    Ok((fd, api.features))
}

/// Registers `[start, start + len)` of the calling process for missing-page faults.
///
/// # Errors
/// The errno of `UFFDIO_REGISTER`.
pub fn register_missing(fd: RawFd, start: u64, len: u64) -> Result<(), i32> {
    let mut reg = UffdioRegister {
        start,
        len,
        mode: UFFDIO_REGISTER_MODE_MISSING,
        ioctls: 0,
    };
    // SAFETY: registers a range of the caller's own address space; the kernel reads and
    // writes `reg` only.
    if unsafe { libc::ioctl(fd, UFFDIO_REGISTER, &raw mut reg) } != 0 {
        return Err(errno());
    }
    Ok(())
}

/// Copies `src` to `dst` in the watched process and wakes whoever waits there; returns the
/// bytes copied (which may be fewer than asked on an error: `Err((errno, copied))`).
pub fn copy(fd: RawFd, dst: u64, src: &[u8]) -> Result<u64, (i32, u64)> {
    let mut c = UffdioCopy {
        dst,
        src: src.as_ptr() as u64,
        len: src.len() as u64,
        mode: 0,
        copy: 0,
    };
    // SAFETY: the kernel reads `src.len()` bytes of our live buffer and writes only `c`.
    let r = unsafe { libc::ioctl(fd, UFFDIO_COPY, &raw mut c) };
    if r != 0 {
        return Err((errno(), c.copy.max(0) as u64));
    }
    Ok(c.copy.max(0) as u64)
}

/// Maps zero pages at `[dst, dst + len)` of the watched process and wakes whoever waits there.
///
/// # Errors
/// The errno of `UFFDIO_ZEROPAGE`.
pub fn zeropage(fd: RawFd, dst: u64, len: u64) -> Result<(), i32> {
    let mut z = UffdioZeropage {
        start: dst,
        len,
        mode: 0,
        zeropage: 0,
    };
    // SAFETY: the kernel writes only `z`.
    if unsafe { libc::ioctl(fd, UFFDIO_ZEROPAGE, &raw mut z) } != 0 {
        return Err(errno());
    }
    Ok(())
}

/// Reads one message; `Ok(None)` when none is waiting.
///
/// # Errors
/// The errno of `read(2)`.
pub fn read_msg(fd: RawFd) -> Result<Option<Msg>, i32> {
    let mut b = [0u8; 32];
    // SAFETY: reads at most 32 bytes into our buffer.
    let n = unsafe { libc::read(fd, b.as_mut_ptr().cast(), b.len()) };
    if n < 0 {
        let e = errno();
        if e == libc::EAGAIN || e == libc::EINTR {
            return Ok(None);
        }
        return Err(e);
    }
    if n as usize != b.len() {
        return Err(libc::EIO);
    }
    Ok(Some(Msg::decode(&b)))
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}
