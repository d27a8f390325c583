//! The `PAGEMAP_SCAN` ioctl (linux/fs.h): which pages of a range are present, swapped, written
//! since write-protection, and so on. Both page dumping ([`super::pages`]) and memory-change
//! tracking ([`super::track`]) walk address ranges with it.
// Unsafe code: the PAGEMAP_SCAN ioctl into a buffer we own.
#![allow(unsafe_code)]

use std::fs::File;

// PAGEMAP_SCAN (linux/fs.h): _IOWR('f', 16, struct pm_scan_arg).
const PAGEMAP_SCAN: libc::c_ulong = 0xc060_6610;
pub(super) const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
pub(super) const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;
pub(super) const PAGE_IS_WRITTEN: u64 = 1 << 1;
pub(super) const PAGE_IS_FILE: u64 = 1 << 2;
pub(super) const PAGE_IS_PRESENT: u64 = 1 << 3;
pub(super) const PAGE_IS_SWAPPED: u64 = 1 << 4;
pub(super) const PAGE_IS_PFNZERO: u64 = 1 << 5;
pub(super) const PAGE_IS_GUARD: u64 = 1 << 8;

#[repr(C)]
#[derive(Default)]
pub(super) struct PmScanArg {
    pub(super) size: u64,
    pub(super) flags: u64,
    pub(super) start: u64,
    pub(super) end: u64,
    pub(super) walk_end: u64,
    pub(super) vec: u64,
    pub(super) vec_len: u64,
    pub(super) max_pages: u64,
    pub(super) category_inverted: u64,
    pub(super) category_mask: u64,
    pub(super) category_anyof_mask: u64,
    pub(super) return_mask: u64,
}
const _: () = assert!(std::mem::size_of::<PmScanArg>() == 96);

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(super) struct PageRegion {
    pub(super) start: u64,
    pub(super) end: u64,
    categories: u64,
}

/// Walks `[start, end)` of `pagemap` with `PAGEMAP_SCAN`, asking for the categories of `want`
/// (its range and buffer are filled in here), and calls `each` on every page region found,
/// in address order.
///
/// # Errors
/// The address the failing scan started at, and the ioctl's error.
pub(super) fn pm_scan(
    pagemap: &File,
    start: u64,
    end: u64,
    want: PmScanArg,
    mut each: impl FnMut(&PageRegion),
) -> Result<(), (u64, std::io::Error)> {
    use std::os::fd::AsRawFd;
    let mut regions = vec![PageRegion::default(); 512];
    let mut at = start;
    while at < end {
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            start: at,
            end,
            vec: regions.as_mut_ptr() as u64,
            vec_len: regions.len() as u64,
            ..want
        };
        // SAFETY: the kernel reads `arg` and writes at most `vec_len` page regions into
        // `regions` (its length), both alive for the call.
        let n = unsafe {
            libc::ioctl(
                pagemap.as_raw_fd(),
                PAGEMAP_SCAN,
                &mut arg as *mut PmScanArg,
            )
        };
        if n < 0 {
            return Err((at, std::io::Error::last_os_error()));
        }
        regions[..(n as usize).min(regions.len())]
            .iter()
            .for_each(&mut each);
        if arg.walk_end <= at {
            break;
        }
        at = arg.walk_end;
    }
    Ok(())
}
