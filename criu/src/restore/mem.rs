//! The restored task's memory, as the task sets it up before its restorer runs: premapping
//! every area inside the engine's reservation, filling it from the page files (block by block,
//! with huge pages and `UFFDIO_COPY` where they pay off), mapping the areas that share an
//! object, and setting the final protections. The fill can be shared with a helper process
//! (see [`super::child`]); [`Worker`] is one share.
// Unsafe code: premapping and filling the task's memory: mmap, mremap, madvise, mprotect and writes
// through raw pointers.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use super::layout::{HUGE, PAGE};
use super::ops::*;

/// Premaps every area that is not a second mapping of a shared object.
pub(super) fn premap(p: &ChildPlan) -> Result<(), Fail> {
    for op in p.premap.iter().filter(|op| op.dup_of.is_none()) {
        if let Some(from) = op.inherit_from {
            // SAFETY: `from` is the parent's premapped copy of this area, inherited at the fork
            // (the parent marked it MADV_DOFORK) and used by nothing else here; the target lies
            // inside our own reservation. Moving keeps the pages shared with the parent.
            let r = unsafe {
                libc::mremap(
                    from as *mut libc::c_void,
                    op.len as usize,
                    op.len as usize,
                    libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                    op.addr as *mut libc::c_void,
                )
            };
            if r == libc::MAP_FAILED {
                return Err(Fail::last(CHILD_PREMAP, op.addr));
            }
            continue;
        }
        let prot = if op.fill {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            op.prot
        };
        // A locked area is locked once it is filled (see `protect`).
        let flags = (op.map_flags & !libc::MAP_LOCKED) | libc::MAP_FIXED;
        let fd = match &op.file {
            Some((path, oflags)) => {
                // SAFETY: open with a NUL-terminated path we own.
                let fd = unsafe { libc::open(path.as_ptr(), oflags | libc::O_CLOEXEC) };
                ok(CHILD_PREMAP, fd as _, op.addr)? as i32
            }
            None => -1,
        };
        // SAFETY: the target range lies inside the reservation this process inherited from the
        // engine, which holds nothing else; MAP_FIXED replaces the reservation there.
        let r = unsafe {
            libc::mmap(
                op.addr as *mut libc::c_void,
                op.len as usize,
                prot,
                flags,
                fd,
                op.pgoff as libc::off_t,
            )
        };
        if fd >= 0 {
            // SAFETY: closing the descriptor opened above; the mapping keeps the file.
            unsafe { libc::close(fd) };
        }
        if r == libc::MAP_FAILED {
            return Err(Fail::last(CHILD_PREMAP, op.addr));
        }
    }
    Ok(())
}

/// Pages read per call while filling areas taken over from the parent.
const COW_CHUNK: usize = 16 * PAGE as usize;

/// Fills the areas taken over from the parent: each saved page is read aside and written
/// only where it differs from what the parent left there (so identical pages stay shared
/// copy-on-write); then what the parent saved and this task did not is emptied again.
pub(super) fn cow_fill(p: &ChildPlan, filled: &AtomicU64) -> Result<(), Fail> {
    if p.cow_fills.is_empty() && p.cow_zero.is_empty() {
        return Ok(());
    }
    let mut fds = [-1i32; MAX_PAGE_FILES];
    for (i, path) in p.page_files.iter().enumerate().take(MAX_PAGE_FILES) {
        // SAFETY: open with a NUL-terminated path we own.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            )
        };
        fds[i] = fd;
    }
    let r = cow_fill_with(p, &fds, filled);
    close_all(&fds);
    r
}

fn cow_fill_with(p: &ChildPlan, fds: &[i32], filled: &AtomicU64) -> Result<(), Fail> {
    let mut buf = [0u8; COW_CHUNK];
    for f in &p.cow_fills {
        let fd = match fds.get(f.file) {
            Some(&fd) if fd >= 0 => fd,
            _ => {
                return Err(Fail {
                    stage: CHILD_FILL,
                    errno: libc::EBADF,
                    detail: f.addr,
                });
            }
        };
        let mut done = 0u64;
        while done < f.len {
            let n = (f.len - done).min(COW_CHUNK as u64);
            read_at(fd, buf.as_mut_ptr() as u64, n, f.offset + done)?;
            for (k, page) in buf[..n as usize].chunks(PAGE as usize).enumerate() {
                let dst = f.addr + done + k as u64 * PAGE;
                // SAFETY: `dst` is a page of an area this task took over and holds readable
                // and writable (the parent premapped it so), inside the run the parent checked
                // against the areas; nothing else uses it while the task restores.
                let here = unsafe { std::slice::from_raw_parts_mut(dst as *mut u8, page.len()) };
                if here != page {
                    here.copy_from_slice(page);
                }
            }
            done += n;
            filled.fetch_add(n, Ordering::Relaxed);
        }
    }
    for &(addr, len) in &p.cow_zero {
        // SAFETY: drops pages of a private anonymous area this task took over: they read as
        // zeros again, as they did when dumped.
        let r =
            unsafe { libc::madvise(addr as *mut libc::c_void, len as usize, libc::MADV_DONTNEED) };
        ok(CHILD_FILL, r as _, addr)?;
    }
    Ok(())
}

/// Maps the areas that share an object filled earlier.
pub(super) fn dups(p: &ChildPlan) -> Result<(), Fail> {
    for op in &p.premap {
        let Some(from) = op.dup_of else { continue };
        // SAFETY: `from` lies in a shared object this process mapped; old size 0 makes mremap
        // create a second mapping of it at `addr`, inside our reservation (MREMAP_FIXED).
        let r = unsafe {
            libc::mremap(
                from as *mut libc::c_void,
                0,
                op.len as usize,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                op.addr as *mut libc::c_void,
            )
        };
        if r == libc::MAP_FAILED {
            return Err(Fail::last(CHILD_PREMAP, op.addr));
        }
    }
    for op in p.premap.iter().filter(|op| op.temporary) {
        // SAFETY: the temporary object mapping is ours; the dups keep the object alive.
        unsafe { libc::munmap(op.addr as *mut libc::c_void, op.len as usize) };
    }
    Ok(())
}

/// Final protections and madvise advice of every premapped area.
pub(super) fn protect(p: &ChildPlan) -> Result<(), Fail> {
    for op in p.premap.iter().filter(|op| !op.temporary) {
        if op.fill || op.dup_of.is_some() {
            // SAFETY: changes the protection of an area this process premapped itself.
            let r =
                unsafe { libc::mprotect(op.addr as *mut libc::c_void, op.len as usize, op.prot) };
            ok(CHILD_PROTECT, r as _, op.addr)?;
        }
        for advice in 0..64 {
            if op.madv & (1u64 << advice) != 0 {
                // SAFETY: advice on an area this process premapped itself.
                let r =
                    unsafe { libc::madvise(op.addr as *mut libc::c_void, op.len as usize, advice) };
                ok(CHILD_PROTECT, r as _, op.addr)?;
            }
        }
        if op.map_flags & libc::MAP_LOCKED != 0 {
            // SAFETY: locks an area this process premapped and filled; mremap keeps the lock.
            let r = unsafe { libc::mlock(op.addr as *const libc::c_void, op.len as usize) };
            ok(CHILD_PROTECT, r as _, op.addr)?;
        }
    }
    const MADV_GUARD_INSTALL: i32 = 102;
    for &(addr, len) in &p.guards {
        // SAFETY: guard pages inside an area this process premapped; they hold no saved page.
        let r =
            unsafe { libc::madvise(addr as *mut libc::c_void, len as usize, MADV_GUARD_INSTALL) };
        ok(CHILD_PROTECT, r as _, addr)?;
    }
    Ok(())
}

pub(super) fn close_all(fds: &[i32]) {
    for fd in fds.iter().filter(|fd| **fd >= 0) {
        // SAFETY: closing page files opened by fill().
        unsafe { libc::close(*fd) };
    }
}

/// One share of a fill: runs to read from the page files into place.
#[derive(Clone, Copy)]
pub(super) struct Worker<'a> {
    /// The page files, opened.
    pub(super) fds: &'a [i32],
    /// The runs of this share.
    pub(super) runs: &'a [FillOp],
    /// Whole 2 MiB blocks to give a huge page first (sorted).
    pub(super) collapse: &'a [(u64, u64)],
    /// Use `UFFDIO_COPY` for small pages of private anonymous memory.
    pub(super) uffd: bool,
    /// Bytes put in place, added to as blocks are done (the engine reads it for progress).
    pub(super) filled: &'a AtomicU64,
}

impl Worker<'_> {
    /// Fills the runs 2 MiB block by block: a block in `collapse` first gets a huge page (one
    /// page table entry instead of 512, which is most of the cost of fresh memory) and is read
    /// into; any other piece of 64 KiB or more of private anonymous memory is copied in with
    /// `UFFDIO_COPY` (see [`Uffd`]), or else faulted in writable and read into (one call
    /// instead of a fault per page while copying). Only what was saved gets pages, so holes
    /// stay holes; small pieces are just read.
    ///
    /// Huge pages stop for the rest of this share when the kernel refuses one, or when they
    /// have taken more than [`SLOW_HUGE_NS`] each on average (with one block of slack): under
    /// a hypervisor that has taken back the guest's free memory, a huge page can cost more
    /// than 512 small pages. So they never cost much more in all than small pages would have.
    pub(super) fn fill(&self) -> Result<(), Fail> {
        let mut uffd = Uffd::new();
        let r = self.fill_with(&mut uffd);
        uffd.close();
        r
    }

    fn fill_with(&self, uffd: &mut Uffd) -> Result<(), Fail> {
        let mut huge_ok = !self.collapse.is_empty();
        let (mut spent, mut budget) = (0u64, SLOW_HUGE_NS);
        for f in self.runs {
            let fd = self.fds[f.file];
            let end = f.addr + f.len;
            let mut a = f.addr;
            while a < end {
                let b = end.min((a | (HUGE - 1)) + 1);
                let off = f.offset + (a - f.addr);
                let mut huge = None;
                if huge_ok && a % HUGE == 0 && self.huge(a) {
                    let t = now_ns();
                    huge = Some(collapse(a));
                    spent += now_ns().saturating_sub(t);
                    budget += SLOW_HUGE_NS;
                    huge_ok = huge == Some(true) && spent <= budget;
                }
                // A block tried for a huge page holds a page already: read into it.
                if huge.is_none()
                    && self.uffd
                    && f.anon
                    && b - a >= PREFAULT_MIN
                    && uffd.copy(f.file, fd, a, b - a, off)
                {
                    self.filled.fetch_add(b - a, Ordering::Relaxed);
                    a = b;
                    continue;
                }
                if huge != Some(true) && b - a >= PREFAULT_MIN {
                    // SAFETY: advice on a writable premapped range of this process; a kernel
                    // without MADV_POPULATE_WRITE refuses it and the read faults the pages.
                    unsafe {
                        compel_arch::syscall3(
                            compel_arch::nr::MADVISE,
                            a as usize,
                            (b - a) as usize,
                            MADV_POPULATE_WRITE,
                        )
                    };
                }
                read_at(fd, a, b - a, off)?;
                self.filled.fetch_add(b - a, Ordering::Relaxed);
                a = b;
            }
        }
        Ok(())
    }

    /// Whether the 2 MiB block at `a` is one to give a huge page.
    fn huge(&self, a: u64) -> bool {
        let i = self.collapse.partition_point(|r| r.0 + r.1 <= a);
        self.collapse.get(i).is_some_and(|r| r.0 <= a)
    }
}

/// Filling empty private anonymous memory with `UFFDIO_COPY` from a mapping of the page file:
/// each page is allocated and copied in one step, without being cleared first and without a
/// fault per page (a fifth less time than faulting pages in and reading into them). Made on
/// first use; any refusal (no userfaultfd here, a file shorter than the run) turns it off and
/// the caller reads instead.
struct Uffd {
    /// The userfaultfd (-1: not made yet; -2: unusable).
    fd: i32,
    /// Per page file: where this worker mapped it and how long it is (0: not mapped).
    maps: [(u64, u64); MAX_PAGE_FILES],
}

/// At most this many page files.
pub(super) const MAX_PAGE_FILES: usize = 256;

/// [`Uffd::maps`] entry of a page file that could not be mapped.
const UNMAPPABLE: u64 = u64::MAX;

impl Uffd {
    fn new() -> Uffd {
        Uffd {
            fd: -1,
            maps: [(0, 0); MAX_PAGE_FILES],
        }
    }

    /// Copies `len` bytes at `off` of page file `file` (open as `fd`) to `addr`, which is
    /// empty private anonymous memory. False if it could not (then nothing is mapped there
    /// that a read would not overwrite, and the range is no longer registered).
    fn copy(&mut self, file: usize, fd: i32, addr: u64, len: u64, off: u64) -> bool {
        if !self.open() || file >= MAX_PAGE_FILES {
            return false;
        }
        let Some(src) = self.source(file, fd, off, len) else {
            return false;
        };
        let range = UffdRange { start: addr, len };
        let mut reg = UffdRegister {
            range,
            mode: UFFDIO_REGISTER_MODE_MISSING,
            ioctls: 0,
        };
        // SAFETY: registers a range of our own writable premapped memory with our userfaultfd;
        // the kernel writes back into `reg` only.
        if unsafe { sys_ioctl(self.fd, UFFDIO_REGISTER, &raw mut reg as usize) } != 0 {
            self.disable();
            return false;
        }
        let mut done = 0;
        let (mut ok, mut present) = (true, false);
        while done < len {
            let mut c = UffdCopy {
                dst: addr + done,
                src: src + done,
                len: len - done,
                mode: 0,
                copy: 0,
            };
            // SAFETY: fills registered empty pages of ours from a read-only mapping of the
            // page file that covers `src..src + len`; the kernel writes back into `c` only.
            let r = unsafe { sys_ioctl(self.fd, UFFDIO_COPY, &raw mut c as usize) };
            if c.copy > 0 {
                done += c.copy as u64;
            }
            if r == 0 {
                break;
            }
            if r != -(libc::EAGAIN as isize) || c.copy <= 0 {
                // A page there already (a huge page the other worker made for a block both
                // fill): read this range; anything else turns the copying off.
                present = r == -(libc::EEXIST as isize);
                ok = false;
                break;
            }
        }
        let mut range = range;
        // SAFETY: unregisters the range registered above.
        let un = unsafe { sys_ioctl(self.fd, UFFDIO_UNREGISTER, &raw mut range as usize) };
        if un != 0 || !(ok || present) {
            self.disable();
        }
        ok && un == 0
    }

    /// Makes the userfaultfd on first use.
    fn open(&mut self) -> bool {
        if self.fd == -1 {
            // SAFETY: userfaultfd with plain flags; a descriptor of ours or an error.
            let fd = unsafe {
                compel_arch::syscall1(
                    compel_arch::nr::USERFAULTFD,
                    (libc::O_CLOEXEC | libc::O_NONBLOCK) as usize,
                )
            };
            self.fd = if fd < 0 { -2 } else { fd as i32 };
            if self.fd >= 0 {
                let mut api = UffdApi {
                    api: UFFD_API,
                    features: 0,
                    ioctls: 0,
                };
                // SAFETY: the API handshake on our new userfaultfd; writes into `api` only.
                if unsafe { sys_ioctl(self.fd, UFFDIO_API, &raw mut api as usize) } != 0 {
                    self.disable();
                }
            }
        }
        self.fd >= 0
    }

    /// Where bytes `off..off + len` of page file `file` are mapped (mapping it whole on first
    /// use); None if the file is shorter or cannot be mapped.
    fn source(&mut self, file: usize, fd: i32, off: u64, len: u64) -> Option<u64> {
        if self.maps[file].0 == 0 {
            // Tried once: a file that cannot be mapped stays unmapped (size 0).
            self.maps[file] = (UNMAPPABLE, 0);
            // SAFETY: fstat of our own descriptor into a stat we own (all-zero is a valid
            // `struct stat`).
            let size = unsafe {
                let mut st: libc::stat = std::mem::zeroed();
                if compel_arch::syscall2(compel_arch::nr::FSTAT, fd as usize, &raw mut st as usize)
                    != 0
                {
                    return None;
                }
                st.st_size as u64
            };
            if size == 0 {
                return None;
            }
            // SAFETY: a new read-only shared mapping of a page file, where the kernel chooses
            // (outside our reservation, which is mapped); unmapped in close().
            let m = unsafe {
                compel_arch::syscall6(
                    compel_arch::nr::MMAP,
                    0,
                    size as usize,
                    libc::PROT_READ as usize,
                    libc::MAP_SHARED as usize,
                    fd as usize,
                    0,
                )
            };
            if m < 0 {
                return None;
            }
            self.maps[file] = (m as u64, size);
        }
        let (base, size) = self.maps[file];
        (base != UNMAPPABLE && off.checked_add(len)? <= size).then_some(base + off)
    }

    fn disable(&mut self) {
        if self.fd >= 0 {
            // SAFETY: closing the userfaultfd this worker made.
            unsafe { compel_arch::syscall1(compel_arch::nr::CLOSE, self.fd as usize) };
        }
        self.fd = -2;
    }

    /// Unmaps the page files and closes the userfaultfd.
    fn close(&mut self) {
        for m in self
            .maps
            .iter_mut()
            .filter(|m| m.0 != 0 && m.0 != UNMAPPABLE)
        {
            // SAFETY: unmaps a page-file mapping made in source().
            unsafe { compel_arch::syscall2(compel_arch::nr::MUNMAP, m.0 as usize, m.1 as usize) };
            *m = (0, 0);
        }
        self.disable();
    }
}

/// ioctl as a raw system call (no errno: see [`read_at`]); 0 or a negative errno.
///
/// # Safety
/// `arg` must be what `req` expects on `fd`.
unsafe fn sys_ioctl(fd: i32, req: u64, arg: usize) -> isize {
    // SAFETY: the caller's promise.
    unsafe { compel_arch::syscall3(compel_arch::nr::IOCTL, fd as usize, req as usize, arg) }
}

/// `struct uffdio_api`.
#[repr(C)]
struct UffdApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

/// `struct uffdio_range`.
#[repr(C)]
#[derive(Clone, Copy)]
struct UffdRange {
    start: u64,
    len: u64,
}

/// `struct uffdio_register`.
#[repr(C)]
struct UffdRegister {
    range: UffdRange,
    mode: u64,
    ioctls: u64,
}

/// `struct uffdio_copy`.
#[repr(C)]
struct UffdCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

const UFFD_API: u64 = 0xaa;
const UFFDIO_API: u64 = 0xc018_aa3f;
const UFFDIO_REGISTER: u64 = 0xc020_aa00;
const UFFDIO_UNREGISTER: u64 = 0x8010_aa01;
const UFFDIO_COPY: u64 = 0xc028_aa03;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;

/// Gives the 2 MiB block at `a` (writable, premapped, still empty) one huge page: its first
/// page is written so that there is something to collapse, then `MADV_COLLAPSE` replaces it.
/// False when the kernel would not (no THP, no huge page free, an older kernel): the block
/// then gets small pages as it is filled.
fn collapse(a: u64) -> bool {
    // SAFETY: `a` is the start of a writable premapped block of this process that is filled
    // right after; the zero written is overwritten by that fill.
    unsafe { std::ptr::write_volatile(a as *mut u8, 0) };
    // SAFETY: advice on that block of our own memory; it changes which pages back the block,
    // not what it holds.
    let r = unsafe {
        compel_arch::syscall3(
            compel_arch::nr::MADVISE,
            a as usize,
            HUGE as usize,
            MADV_COLLAPSE,
        )
    };
    r == 0
}

/// Reads `len` bytes at `off` of `fd` to `addr`. A raw system call: the fill helper shares
/// this thread's TLS, so nothing here may touch errno.
fn read_at(fd: i32, addr: u64, len: u64, off: u64) -> Result<(), Fail> {
    let mut done = 0u64;
    while done < len {
        // SAFETY: the destination is a writable premapped range of at least `len` bytes (the
        // parent checked every run against the areas).
        let n = unsafe {
            compel_arch::syscall4(
                compel_arch::nr::PREAD64,
                fd as usize,
                (addr + done) as usize,
                (len - done) as usize,
                (off + done) as usize,
            )
        };
        if n == -(libc::EINTR as isize) {
            continue;
        }
        if n < 0 {
            return Err(Fail {
                stage: CHILD_FILL,
                errno: -n as i32,
                detail: addr + done,
            });
        }
        if n == 0 {
            return Err(Fail {
                stage: CHILD_FILL,
                errno: libc::ENODATA,
                detail: addr + done,
            });
        }
        done += n as u64;
    }
    Ok(())
}

/// What getting a huge page may cost to be worth it: about what 512 small pages cost beyond
/// the copy into them. Measured on a 2-vCPU VM: 0.25 to 0.5 ms for a huge page the host still
/// backs, 3 to 8 ms for one it must back again first; a 2 MiB block on small pages with
/// `UFFDIO_COPY` 1.3 ms, of which about half is the copy.
const SLOW_HUGE_NS: u64 = 600_000;

/// CLOCK_MONOTONIC in nanoseconds (a raw system call: no errno, see [`read_at`]).
fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`, which we own.
    unsafe {
        compel_arch::syscall2(
            compel_arch::nr::CLOCK_GETTIME,
            libc::CLOCK_MONOTONIC as usize,
            &raw mut ts as usize,
        )
    };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Pieces at least this long are faulted in before they are read.
const PREFAULT_MIN: u64 = 64 << 10;

/// `madvise` advice: make huge pages of a range now, whatever the THP settings say.
const MADV_COLLAPSE: usize = 25;

/// `madvise` advice: fault a range in writable.
const MADV_POPULATE_WRITE: usize = 23;
