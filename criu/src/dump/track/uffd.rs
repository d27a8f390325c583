//! The userfaultfd ABI tracking uses (linux/userfaultfd.h), and the probe that tells whether
//! this kernel tracks writes asynchronously.
// Unsafe code: userfaultfd(2), its ioctls, and a page of our own mapped for the probe.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};

use criu_images::pagemap::PAGE_SIZE;

use super::super::pagemap_scan::{
    PAGE_IS_WRITTEN, PM_SCAN_CHECK_WPASYNC, PM_SCAN_WP_MATCHING, PmScanArg, pm_scan,
};

// userfaultfd ABI (linux/userfaultfd.h).
pub(super) const UFFD_API: u64 = 0xaa;
pub(super) const UFFD_USER_MODE_ONLY: u64 = 1;
pub(super) const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
pub(super) const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
pub(super) const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1 << 0;
/// `_IOWR(0xaa, 0x3f, struct uffdio_api)`.
pub(super) const UFFDIO_API: libc::c_ulong = 0xc018_aa3f;
/// `_IOWR(0xaa, 0x00, struct uffdio_register)`.
pub(super) const UFFDIO_REGISTER: libc::c_ulong = 0xc020_aa00;
/// `_IOWR(0xaa, 0x06, struct uffdio_writeprotect)`.
pub(super) const UFFDIO_WRITEPROTECT: libc::c_ulong = 0xc018_aa06;

#[repr(C)]
pub(super) struct UffdioApi {
    pub(super) api: u64,
    pub(super) features: u64,
    pub(super) ioctls: u64,
}
const _: () = assert!(std::mem::size_of::<UffdioApi>() == 24);

#[repr(C)]
pub(super) struct UffdioRegister {
    pub(super) start: u64,
    pub(super) len: u64,
    pub(super) mode: u64,
    pub(super) ioctls: u64,
}
const _: () = assert!(std::mem::size_of::<UffdioRegister>() == 32);

#[repr(C)]
pub(super) struct UffdioWriteprotect {
    pub(super) start: u64,
    pub(super) len: u64,
    pub(super) mode: u64,
}
const _: () = assert!(std::mem::size_of::<UffdioWriteprotect>() == 24);
/// Whether this kernel tracks writes the way [`TaskTracker`] needs: a userfaultfd of criu's
/// own with `UFFD_FEATURE_WP_ASYNC`, one page registered and write-protected, written, and
/// found written (and protected again) by `PAGEMAP_SCAN` with `PM_SCAN_CHECK_WPASYNC`.
///
/// # Errors
/// The step that failed and the kernel's error.
pub(crate) fn probe() -> Result<(), (&'static str, std::io::Error)> {
    use std::os::fd::FromRawFd;
    let last = |what: &'static str| (what, std::io::Error::last_os_error());
    // SAFETY: userfaultfd takes flags only.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_userfaultfd,
            libc::O_CLOEXEC as u64 | UFFD_USER_MODE_ONLY,
        )
    };
    if fd < 0 {
        return Err(last("userfaultfd"));
    }
    // SAFETY: a new descriptor owned by nothing else.
    let uffd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut api = UffdioApi {
        api: UFFD_API,
        features: UFFD_FEATURE_WP_ASYNC,
        ioctls: 0,
    };
    // SAFETY: UFFDIO_API reads and writes one `struct uffdio_api`.
    if unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_API, &mut api as *mut UffdioApi) } < 0 {
        return Err(last("UFFDIO_API with UFFD_FEATURE_WP_ASYNC"));
    }
    let len = PAGE_SIZE as usize;
    // SAFETY: a fresh private anonymous page, unmapped below; it aliases no Rust object.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(last("mmap"));
    }
    let r = (|| {
        // SAFETY: the page is ours and writable.
        unsafe { (p as *mut u8).write_volatile(1) };
        let mut reg = UffdioRegister {
            start: p as u64,
            len: len as u64,
            mode: UFFDIO_REGISTER_MODE_WP,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_REGISTER reads and writes one `struct uffdio_register`.
        if unsafe {
            libc::ioctl(
                uffd.as_raw_fd(),
                UFFDIO_REGISTER,
                &mut reg as *mut UffdioRegister,
            )
        } < 0
        {
            return Err(last("UFFDIO_REGISTER_MODE_WP"));
        }
        let mut wp = UffdioWriteprotect {
            start: p as u64,
            len: len as u64,
            mode: UFFDIO_WRITEPROTECT_MODE_WP,
        };
        // SAFETY: UFFDIO_WRITEPROTECT reads one `struct uffdio_writeprotect`.
        if unsafe {
            libc::ioctl(
                uffd.as_raw_fd(),
                UFFDIO_WRITEPROTECT,
                &mut wp as *mut UffdioWriteprotect,
            )
        } < 0
        {
            return Err(last("UFFDIO_WRITEPROTECT"));
        }
        // SAFETY: `p` is the start of our own `len`-byte writable mapping, made above; with
        // WP_ASYNC the write does not block.
        unsafe { (p as *mut u8).write_volatile(2) };
        let pagemap = File::open("/proc/self/pagemap").map_err(|e| ("open pagemap", e))?;
        let want = PmScanArg {
            flags: PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
            category_mask: PAGE_IS_WRITTEN,
            return_mask: PAGE_IS_WRITTEN,
            ..PmScanArg::default()
        };
        let mut found = 0u64;
        let scan = |found: &mut u64| {
            pm_scan(
                &pagemap,
                p as u64,
                p as u64 + len as u64,
                want_copy(&want),
                |r| *found += (r.end - r.start) / PAGE_SIZE,
            )
            .map_err(|(_, e)| ("PAGEMAP_SCAN with PM_SCAN_WP_MATCHING", e))
        };
        scan(&mut found)?;
        let first = found;
        found = 0;
        scan(&mut found)?;
        if first != 1 || found != 0 {
            return Err((
                "PAGEMAP_SCAN: a written page not reported once",
                std::io::Error::from_raw_os_error(libc::EINVAL),
            ));
        }
        Ok(())
    })();
    // SAFETY: unmapping the page mapped above.
    unsafe { libc::munmap(p, len) };
    r
}

pub(super) fn want_copy(w: &PmScanArg) -> PmScanArg {
    PmScanArg {
        flags: w.flags,
        category_mask: w.category_mask,
        return_mask: w.return_mask,
        ..PmScanArg::default()
    }
}
