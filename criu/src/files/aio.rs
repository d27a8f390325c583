//! AIO rings (`io_setup` contexts), both sides.
//!
//! **Dump.** A context shows in the task's maps as `/[aio]`, the ring the kernel shares with
//! the task; the context id is the ring's address. The area is written as CRIU does: a VMA
//! entry with status `VMA_AREA_AIORING`, its pages saved like private memory (the ring header
//! with head and tail, and the completed events), and an `aio_ring_entry` in the `mm` image
//! (`id` = the address, `ring_len`, and `nr_req`, the request count that `io_setup` turns into
//! a ring of this size).
//!
//! **Restore.** The area is premapped and filled like private memory; then the task itself
//! ([`restore_ring`], in the restored task before the restorer runs) calls `io_setup` with
//! `nr_req`, moves the new ring's tail to the dumped one by completing no-op writes to
//! `/dev/null` (the kernel keeps the tail on its side too), copies the events in, sets the head,
//! and `mremap`s the new ring over the premapped area, which the restorer then moves to its
//! address as any other area: the context id is the same as before.
//!
//! Requests still in flight at dump time are not kept (CRIU does not either): only a context
//! whose requests have completed comes back as it was.

// Unsafe code: io_setup/io_submit/mremap and reads and writes of the ring in the task's own
// memory.
#![allow(unsafe_code)]

use criu_images::pb::AioRingEntry;

/// `sizeof(struct aio_ring)`: the ring header.
const HEADER: u64 = 32;
/// `sizeof(struct io_event)`.
const EVENT: u64 = 32;
const PAGE: u64 = 4096;

/// The kernel's ring header (`struct aio_ring`, fs/aio.c).
#[repr(C)]
struct Ring {
    id: u32,
    nr: u32,
    head: u32,
    tail: u32,
    magic: u32,
    compat_features: u32,
    incompat_features: u32,
    header_length: u32,
}
const _: () = assert!(std::mem::size_of::<Ring>() as u64 == HEADER);

/// `struct iocb` (linux/aio_abi.h, little-endian).
#[repr(C)]
#[derive(Default)]
struct Iocb {
    data: u64,
    key: u32,
    rw_flags: i32,
    lio_opcode: u16,
    reqprio: i16,
    fildes: u32,
    buf: u64,
    nbytes: u64,
    offset: i64,
    reserved2: u64,
    flags: u32,
    resfd: u32,
}
const _: () = assert!(std::mem::size_of::<Iocb>() == 64);
const IOCB_CMD_PWRITE: u16 = 1;

/// The `aio_ring_entry` of a ring area `[start, end)`: the request count `io_setup` was given,
/// found back from the ring's size as the kernel sizes it (at least 4 per CPU, doubled, plus
/// 2, rounded up to whole pages). `None` for a size no ring has.
pub fn ring_entry(start: u64, end: u64) -> Option<AioRingEntry> {
    let len = end.checked_sub(start)?;
    if len < PAGE || len % PAGE != 0 {
        return None;
    }
    let slots = (len - HEADER) / EVENT;
    let nr_req = slots.checked_sub(2)? / 2;
    Some(AioRingEntry {
        id: start,
        nr_req: u32::try_from(nr_req).ok()?,
        ring_len: u32::try_from(len).ok()?,
    })
}

/// One ring to make again in the restored task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingOp {
    /// Where its premapped area (holding the dumped ring) is.
    pub at: u64,
    /// Its length.
    pub len: u64,
    /// `io_setup`'s request count.
    pub nr_req: u32,
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Makes ring `op` again in this task (see the module docs). Runs in the restored task after
/// its memory is filled: no allocation. Returns the errno and a detail on failure (`EINVAL`
/// for a ring the image describes wrongly).
///
/// # Errors
/// The failing call's errno, with the ring's address.
pub fn restore_ring(op: &RingOp) -> Result<(), i32> {
    // SAFETY: `op.at` is this task's premapped, filled area of `op.len` (≥ one page) bytes.
    let old = unsafe { &*(op.at as *const Ring) };
    let (head, tail, nr) = (old.head, old.tail, old.nr);
    let mut ctx: u64 = 0;
    // SAFETY: io_setup writes one context id into a live local.
    if unsafe { libc::syscall(libc::SYS_io_setup, op.nr_req, &mut ctx as *mut u64) } < 0 {
        return Err(errno());
    }
    let destroy = |ctx: u64| {
        // SAFETY: destroys the context this function made.
        unsafe { libc::syscall(libc::SYS_io_destroy, ctx) };
    };
    // SAFETY: the kernel mapped the new ring at `ctx`, at least its header.
    let new_nr = unsafe { (*(ctx as *const Ring)).nr };
    let slots = ((op.len - HEADER) / EVENT) as u32;
    if tail >= nr || head >= nr || nr != slots || new_nr != nr {
        destroy(ctx);
        return Err(libc::EINVAL);
    }
    if head != 0 || tail != 0 {
        // SAFETY: open of a constant NUL-terminated path.
        let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            let e = errno();
            destroy(ctx);
            return Err(e);
        }
        let byte = 0u8;
        let cb = Iocb {
            lio_opcode: IOCB_CMD_PWRITE,
            fildes: fd as u32,
            buf: &byte as *const u8 as u64,
            nbytes: 1,
            ..Default::default()
        };
        // A full turn first when the tail wrapped, so the kernel counts completions right.
        let count = if tail < head { nr + tail } else { tail };
        let ptrs = [&cb as *const Iocb; 64];
        let mut done = 0u32;
        while done < count {
            let batch = (count - done).min(nr - 1).min(64);
            // SAFETY: io_submit reads `batch` pointers to one live iocb; each writes one
            // byte to /dev/null and completes at once.
            let r = unsafe { libc::syscall(libc::SYS_io_submit, ctx, batch, ptrs.as_ptr()) };
            if r <= 0 {
                let e = if r < 0 { errno() } else { libc::EAGAIN };
                // SAFETY: closes the descriptor opened above.
                unsafe { libc::close(fd) };
                destroy(ctx);
                return Err(e);
            }
            done += r as u32;
            // Consume what completed (as io_getevents would), but never past the dumped head.
            // SAFETY: the ring header is mapped at `ctx`; the kernel reads `head` from it.
            unsafe { (*(ctx as *mut Ring)).head = done.min(head) };
        }
        // SAFETY: closes the descriptor opened above.
        unsafe { libc::close(fd) };
    }
    // SAFETY: both rings are `op.len` bytes long (checked: same slot count); the events
    // after the header are copied, the header stays the kernel's.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (op.at + HEADER) as *const u8,
            (ctx + HEADER) as *mut u8,
            (op.len - HEADER) as usize,
        );
    }
    // SAFETY: moves the ring over the premapped area (replacing it); the kernel updates the
    // context id to the new address.
    let r = unsafe {
        libc::mremap(
            ctx as *mut libc::c_void,
            op.len as usize,
            op.len as usize,
            libc::MREMAP_FIXED | libc::MREMAP_MAYMOVE,
            op.at as *mut libc::c_void,
        )
    };
    if r as u64 != op.at {
        let e = errno();
        destroy(ctx);
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_count_comes_back_from_the_ring_size() {
        // One page holds 127 events: io_setup(62) makes it ((62 * 2 + 2) events fit).
        let e = ring_entry(0x7000_0000, 0x7000_1000).unwrap();
        assert_eq!((e.nr_req, e.ring_len), (62, 4096));
        assert!(ring_entry(0x1000, 0x1800).is_none());
        assert!(ring_entry(0x2000, 0x1000).is_none());
    }

    #[test]
    fn a_ring_made_again_keeps_its_address_head_and_tail() {
        let mut ctx: u64 = 0;
        // SAFETY: io_setup writes one context id into a live local.
        let r = unsafe { libc::syscall(libc::SYS_io_setup, 8, &mut ctx as *mut u64) };
        assert_eq!(r, 0);
        // SAFETY: the ring header is mapped at ctx.
        let nr = unsafe { (*(ctx as *const Ring)).nr };
        let len = (u64::from(nr) * EVENT + HEADER).next_multiple_of(PAGE);
        let e = ring_entry(ctx, ctx + len).unwrap();
        // A copy of a ring at head 3, tail 5 (as the premapped, filled area would be).
        // SAFETY: an anonymous mapping of `len` bytes.
        let at = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        } as u64;
        // SAFETY: copies the live ring into the fresh area of the same length.
        unsafe {
            std::ptr::copy_nonoverlapping(ctx as *const u8, at as *mut u8, len as usize);
            let r = &mut *(at as *mut Ring);
            r.head = 3;
            r.tail = 5;
            libc::syscall(libc::SYS_io_destroy, ctx);
        }
        let op = RingOp {
            at,
            len,
            nr_req: e.nr_req,
        };
        assert_eq!(restore_ring(&op), Ok(()));
        // SAFETY: the new ring now sits at `at`.
        let r = unsafe { &*(at as *const Ring) };
        assert_eq!((r.head, r.tail), (3, 5));
        // The context answers under its new id: nothing to read past the head... but two
        // completed events (3 and 4) are still there to be read.
        let mut ev = [0u64; 4 * 8];
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: io_getevents writes at most 8 events into a live buffer of that size.
        let n = unsafe { libc::syscall(libc::SYS_io_getevents, at, 0, 8, ev.as_mut_ptr(), &zero) };
        assert_eq!(n, 2);
        // SAFETY: destroys the context made above.
        unsafe { libc::syscall(libc::SYS_io_destroy, at) };
    }
}
