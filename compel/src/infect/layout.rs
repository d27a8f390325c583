//! Where each part of an infection lives inside the one region shared by host and task.
//!
//! ```text
//! 0                 blob text (R+X)          code and read-only data
//! text_size         blob data + bss (R+W)
//! args_off          args area (R+W)          ParasiteInit, then the command payload
//! frame_off         sigframe (R+W)           rt_sigframe + xsave, 64-byte aligned
//! guard_off         guard page (none)
//! stack_off         daemon stack (R+W)       grows down from stack_top
//! tguard_off        guard page (none)
//! tstack_off        trap stack (R+W)         for commands run in other threads
//! len
//! ```
//!
//! Every boundary is page-aligned. The region is one memfd mapped shared on both sides, so the
//! host writes the blob, the args and the frame directly, and reads results the same way.

use compel_arch::rt_sigframe_size;
use compel_proto::blob::BLOB_PAGE_SIZE;
use compel_proto::rpc::ARGS_PAYLOAD_OFFSET;

const PAGE: usize = BLOB_PAGE_SIZE;

/// Bytes at the end of each parasite stack that the parasite never touches (its first stack
/// pointer is below them), as CRIU's compel leaves (PARASITE_STACK_REDZONE); libcompel's
/// `compel_get_stack()` points at them.
pub const STACK_REDZONE: usize = 128;

fn pages(n: usize) -> usize {
    n.div_ceil(PAGE) * PAGE
}

/// Offsets (from the region's start) and sizes of the parts of an infection region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Bytes of blob code at the start (mapped read+execute).
    pub text_size: usize,
    /// Bytes the blob occupies with its data and bss, page-rounded.
    pub blob_size: usize,
    /// Start of the args area ([`compel_proto::rpc::ParasiteInit`] then the payload).
    pub args_off: usize,
    /// Bytes of payload after the init header.
    pub payload_size: usize,
    /// Start of the `rt_sigframe`.
    pub frame_off: usize,
    /// Bytes reserved for the frame.
    pub frame_size: usize,
    /// The guard page below the daemon stack.
    pub guard_off: usize,
    /// Bottom of the daemon stack.
    pub stack_off: usize,
    /// Bytes of daemon stack.
    pub stack_size: usize,
    /// The guard page below the trap stack.
    pub tguard_off: usize,
    /// Bottom of the trap stack.
    pub tstack_off: usize,
    /// Bytes of trap stack.
    pub tstack_size: usize,
    /// Total bytes of the region.
    pub len: usize,
}

impl Layout {
    /// Lays out a region for a blob whose text is `text_size` bytes and whose whole memory image
    /// is `blob_mem` bytes, with at least `payload` bytes of command payload, an xsave area of
    /// `xsave_len` bytes and the given stack sizes (each rounded up to pages).
    pub fn new(
        text_size: usize,
        blob_mem: usize,
        payload: usize,
        xsave_len: usize,
        stack: usize,
        tstack: usize,
    ) -> Layout {
        let blob_size = pages(blob_mem.max(1));
        let args_off = blob_size;
        let args_len = pages(ARGS_PAYLOAD_OFFSET + payload.max(1));
        let frame_off = args_off + args_len;
        let frame_size = pages(rt_sigframe_size(xsave_len));
        let guard_off = frame_off + frame_size;
        let stack_off = guard_off + PAGE;
        let stack_size = pages(stack.max(PAGE));
        let tguard_off = stack_off + stack_size;
        let tstack_off = tguard_off + PAGE;
        let tstack_size = pages(tstack.max(PAGE));
        Layout {
            text_size: pages(text_size),
            blob_size,
            args_off,
            payload_size: args_len - ARGS_PAYLOAD_OFFSET,
            frame_off,
            frame_size,
            guard_off,
            stack_off,
            stack_size,
            tguard_off,
            tstack_off,
            tstack_size,
            len: tstack_off + tstack_size,
        }
    }

    /// Offset of the command payload.
    pub fn payload_off(&self) -> usize {
        self.args_off + ARGS_PAYLOAD_OFFSET
    }

    /// The initial stack pointer of the daemon (16-byte aligned, as at a function's entry
    /// before the return address is pushed), [`STACK_REDZONE`] below the stack's end.
    pub fn stack_top(&self) -> usize {
        self.stack_off + self.stack_size - STACK_REDZONE
    }

    /// The initial stack pointer of a trap-mode run ([`STACK_REDZONE`] below the end).
    pub fn tstack_top(&self) -> usize {
        self.tstack_off + self.tstack_size - STACK_REDZONE
    }

    /// The ranges whose protection differs from read+write and that infection sets up:
    /// `(offset, len, prot)`. The trap stack's guard ([`Layout::trap_guard`]) is only made when a
    /// command first runs in trap mode.
    pub fn protections(&self) -> [(usize, usize, i32); 2] {
        [
            (0, self.text_size, libc::PROT_READ | libc::PROT_EXEC),
            (self.guard_off, PAGE, libc::PROT_NONE),
        ]
    }

    /// The trap stack's guard page: `(offset, len, prot)`.
    pub fn trap_guard(&self) -> (usize, usize, i32) {
        (self.tguard_off, PAGE, libc::PROT_NONE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_ordered_aligned_and_disjoint() {
        let l = Layout::new(8192, 8192 + 100 + 5000, 4000, 2696, 60_000, 20_000);
        assert_eq!(l.text_size, 8192);
        assert_eq!(l.blob_size, 16384);
        assert_eq!(l.args_off, 16384);
        assert!(l.payload_size >= 4000);
        assert_eq!(
            (l.args_off + ARGS_PAYLOAD_OFFSET + l.payload_size) % PAGE,
            0
        );
        assert!(l.frame_size >= rt_sigframe_size(2696));
        for off in [
            l.args_off,
            l.frame_off,
            l.guard_off,
            l.stack_off,
            l.tguard_off,
            l.tstack_off,
            l.len,
        ] {
            assert_eq!(off % PAGE, 0, "{off:#x} in {l:?}");
        }
        assert!(l.args_off + ARGS_PAYLOAD_OFFSET + l.payload_size <= l.frame_off);
        assert!(l.frame_off + l.frame_size <= l.guard_off);
        assert_eq!(l.stack_off, l.guard_off + PAGE);
        assert_eq!(l.tstack_off, l.tguard_off + PAGE);
        assert!(l.stack_size >= 60_000 && l.tstack_size >= 20_000);
        assert_eq!(l.stack_top() % 16, 0);
        assert_eq!(l.tstack_top() + STACK_REDZONE, l.len);
    }

    #[test]
    fn tiny_inputs_still_get_a_page_each() {
        let l = Layout::new(0, 0, 0, 576, 0, 0);
        assert_eq!(l.blob_size, PAGE);
        assert!(l.payload_size > 0);
        assert_eq!(l.stack_size, PAGE);
        assert_eq!(l.tstack_size, PAGE);
    }
}
