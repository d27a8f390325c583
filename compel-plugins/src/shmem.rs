//! The shmem plugin: a memory region shared between the parasite and the host. A memfd backs
//! it; whoever creates it maps it and passes the memfd (with a [`ShmemMsg`]) over the control
//! socket, and the other side maps the same fd. Writes on either side are seen by the other.

use crate::std::service::require_ctl_sock;
use crate::std::sys::{self, Errno};
use compel_proto::rpc::ShmemMsg;
use compel_proto::{as_bytes, read_plain};

/// A shared region mapped in this task.
#[derive(Debug)]
pub struct Region {
    addr: usize,
    len: usize,
}

impl Region {
    /// Its address here.
    pub fn addr(&self) -> usize {
        self.addr
    }

    /// Its size.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty (never, for a region this plugin made).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The region's bytes. The host may change them at any time: read what the protocol says
    /// is stable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: addr..addr+len is a live shared mapping this Region owns (unmapped only in
        // unmap, which consumes it); the exclusive borrow of self prevents aliasing here.
        unsafe { core::slice::from_raw_parts_mut(self.addr as *mut u8, self.len) }
    }

    /// Unmaps the region here (the host's mapping stays).
    ///
    /// # Errors
    /// The kernel's.
    pub fn unmap(self) -> Result<(), Errno> {
        // SAFETY: the region is ours and no slice into it outlives the borrow of self.
        unsafe { sys::munmap(self.addr, self.len) }
    }
}

/// Creates a `len`-byte region, maps it here and sends its memfd to the host, which maps it too
/// (the host side receives a [`ShmemMsg`] with one fd).
///
/// # Errors
/// No control socket, or the kernel's.
pub fn create(len: usize) -> Result<Region, Errno> {
    let sock = require_ctl_sock()?;
    if len == 0 {
        return Err(Errno::EINVAL);
    }
    let fd = sys::memfd_create(b"compel-shmem\0", sys::MFD_CLOEXEC)?;
    if let Err(e) = sys::ftruncate(fd, len) {
        let _ = sys::close(fd);
        return Err(e);
    }
    let result = map_and(fd, len, |addr| {
        let msg = ShmemMsg {
            addr: addr as u64,
            len: len as u64,
        };
        sys::send_with_fds(sock, as_bytes(&msg), &[fd]).map(drop)
    });
    let _ = sys::close(fd);
    result
}

/// Receives a region the host created (a [`ShmemMsg`] with its memfd attached) and maps it here.
///
/// # Errors
/// No control socket, a malformed message ([`Errno::EPROTO`]), or the kernel's.
pub fn receive() -> Result<Region, Errno> {
    let sock = require_ctl_sock()?;
    let mut buf = [0u8; core::mem::size_of::<ShmemMsg>()];
    let mut fd = [-1i32];
    let (n, got) = sys::recv_with_fds(sock, &mut buf, &mut fd)?;
    let msg: Option<ShmemMsg> = read_plain(&buf[..n]);
    let result = match (msg, got) {
        (Some(m), 1) if m.len > 0 => map_and(fd[0], m.len as usize, |_| Ok(())),
        _ => Err(Errno::EPROTO),
    };
    if got == 1 {
        let _ = sys::close(fd[0]);
    }
    result
}

fn map_and(
    fd: i32,
    len: usize,
    then: impl FnOnce(usize) -> Result<(), Errno>,
) -> Result<Region, Errno> {
    // SAFETY: a new mapping at an address the kernel picks replaces nothing.
    let addr = unsafe {
        sys::mmap(
            0,
            len,
            sys::PROT_READ | sys::PROT_WRITE,
            sys::MAP_SHARED,
            fd,
            0,
        )
    }?;
    let region = Region { addr, len };
    match then(addr) {
        Ok(()) => Ok(region),
        Err(e) => {
            let _ = region.unmap();
            Err(e)
        }
    }
}
