//! The host's view of memory shared with a task, and taking fds out of a task.
//!
//! An fd the task holds is copied into this process with `pidfd_getfd` (a tracer may do that:
//! it needs the same `PTRACE_MODE_ATTACH` rights we already used to seize the task); where that
//! syscall is missing, a regular file or memfd is reopened through `/proc/PID/fd/N`. The shared
//! region itself is mapped with `MAP_SHARED` here and in the task, so both see the same pages.
// Unsafe code: mapping the region shared with the task (mmap, pidfd_getfd) and viewing it as slices.
#![allow(unsafe_code)]

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

use nix::errno::Errno;

/// Copies fd `fd` of process `pid` into this process (close-on-exec).
///
/// # Errors
/// The `pidfd_open`/`pidfd_getfd` error, or the `/proc/PID/fd/N` reopen error when the
/// syscalls do not exist and the fd is not a reopenable file.
pub fn take_fd(pid: i32, fd: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd >= 0 {
        // SAFETY: pidfd_open returned a fresh fd that nothing else owns.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
        // SAFETY: pidfd_getfd takes a pidfd, a target fd number and flags.
        let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
        if got >= 0 {
            // SAFETY: pidfd_getfd returned a fresh close-on-exec fd that nothing else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(got as i32) });
        }
        let e = Errno::last();
        if e != Errno::ENOSYS {
            return Err(e);
        }
    } else if Errno::last() != Errno::ENOSYS {
        return Err(Errno::last());
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/{pid}/fd/{fd}"))
        .map(OwnedFd::from)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
}

/// A `MAP_SHARED` read-write mapping of a file in this process, unmapped on drop.
#[derive(Debug)]
pub struct LocalMap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; access goes through &self/&mut self.
unsafe impl Send for LocalMap {}

impl LocalMap {
    /// Maps `len` bytes of `file` from offset 0, shared and read-write.
    ///
    /// # Errors
    /// The `mmap` error.
    pub fn new(file: &OwnedFd, len: usize) -> Result<LocalMap, Errno> {
        // SAFETY: a fresh shared mapping chosen by the kernel; it aliases nothing in this
        // process, and the file stays valid for the duration of the call.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or(Errno::EINVAL)?;
        Ok(LocalMap { ptr, len })
    }

    /// The mapping's length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never, once made).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The shared bytes. The task may change them while it runs: read what it wrote only after
    /// it said so (an answer on the control socket orders the accesses).
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: ptr..ptr+len is a live mapping owned by self; u8 has no validity invariant.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The shared bytes, writable.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in bytes(), and &mut self makes this the only local reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for LocalMap {
    fn drop(&mut self) {
        // SAFETY: ptr/len describe the mapping this value created and still owns.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}
