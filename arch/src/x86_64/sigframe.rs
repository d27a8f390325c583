//! The signal frame `rt_sigreturn` consumes, so that a parasite can hand a task back to its own
//! code with the complete saved state (general registers, the whole xsave area, the signal mask)
//! in one system call.
//!
//! Layout facts are the kernel's (`struct rt_sigframe`, `struct ucontext`, `struct sigcontext`
//! and the `_fpx_sw_bytes` the xsave area carries in a frame). `rt_sigreturn` finds the frame at
//! `rsp - 8`, i.e. the stack pointer must point at [`RtSigframe::uc`].

use crate::UserRegs;
use core::mem::{offset_of, size_of};

/// `uc_flags`: the frame's fpstate is in xsave format (with the software bytes and magics).
pub const UC_FP_XSTATE: u64 = 0x1;
/// `uc_flags`: `sigcontext.ss` holds a valid stack segment to restore.
pub const UC_SIGCONTEXT_SS: u64 = 0x2;
/// `uc_flags`: restore `ss` exactly as saved (no "fixing up" by the kernel).
pub const UC_STRICT_RESTORE_SS: u64 = 0x4;
/// First xsave magic, in the software-reserved bytes of the legacy region.
pub const FP_XSTATE_MAGIC1: u32 = 0x4650_5853;
/// Second xsave magic, stored right after the xsave area.
pub const FP_XSTATE_MAGIC2: u32 = 0x4650_5845;
/// The size of [`FP_XSTATE_MAGIC2`].
pub const FP_XSTATE_MAGIC2_SIZE: usize = 4;
/// Offset of the software-reserved bytes (`_fpx_sw_bytes`) in the legacy fxsave region.
pub const FPX_SW_BYTES_OFFSET: usize = 464;
/// The alignment `xrstor` needs for the fpstate a frame points at.
pub const FPSTATE_ALIGN: usize = 64;
/// `ss_flags` value that makes the kernel leave the alternate signal stack as it is: not a valid
/// mode (`SS_ONSTACK | SS_DISABLE`), so the `sigaltstack` that `rt_sigreturn` performs fails
/// with `EINVAL` and changes nothing (the kernel ignores that error by design).
pub const SS_KEEP_CURRENT: i32 = 3;

/// `struct sigcontext` (64-bit): the general registers in a signal frame.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct SigContext {
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub rdx: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rsp: u64,
    pub rip: u64,
    pub eflags: u64,
    pub cs: u16,
    pub gs: u16,
    pub fs: u16,
    pub ss: u16,
    pub err: u64,
    pub trapno: u64,
    pub oldmask: u64,
    pub cr2: u64,
    /// Address (in the task) of the xsave area to restore; 64-byte aligned.
    pub fpstate: u64,
    pub reserved1: [u64; 8],
}

/// `stack_t`: an alternate signal stack.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct SigStack {
    pub ss_sp: u64,
    pub ss_flags: i32,
    pub pad: u32,
    pub ss_size: u64,
}

/// `struct ucontext` as the kernel lays it out in a frame (the signal mask is the kernel's
/// 64-bit `sigset_t`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct UContext {
    pub uc_flags: u64,
    pub uc_link: u64,
    pub uc_stack: SigStack,
    pub uc_mcontext: SigContext,
    pub uc_sigmask: u64,
}

/// `struct rt_sigframe`: the return address slot, the ucontext and the siginfo.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtSigframe {
    /// Where a handler's `ret` would go; unused by `rt_sigreturn`.
    pub pretcode: u64,
    /// The context `rt_sigreturn` restores.
    pub uc: UContext,
    /// `siginfo_t`; unused by `rt_sigreturn`.
    pub info: [u8; 128],
}

const _: () = assert!(size_of::<SigContext>() == 256);
const _: () = assert!(size_of::<SigStack>() == 24);
const _: () = assert!(size_of::<UContext>() == 304);
const _: () = assert!(offset_of!(UContext, uc_mcontext) == 40);
const _: () = assert!(offset_of!(SigContext, fpstate) == 184);
const _: () = assert!(offset_of!(RtSigframe, uc) == 8);
const _: () = assert!(size_of::<RtSigframe>() == 440);

/// Where the stack pointer must point when `rt_sigreturn` is called, relative to the frame.
pub const RT_SIGFRAME_UC_OFFSET: usize = offset_of!(RtSigframe, uc);

/// The offset of the fpstate behind a frame placed at a [`FPSTATE_ALIGN`]-aligned address.
pub const RT_SIGFRAME_FPSTATE_OFFSET: usize =
    size_of::<RtSigframe>().next_multiple_of(FPSTATE_ALIGN);

/// The bytes a complete frame with an xsave area of `xsave_len` bytes occupies (frame, aligned
/// fpstate, second magic), when placed at a [`FPSTATE_ALIGN`]-aligned address.
pub const fn rt_sigframe_size(xsave_len: usize) -> usize {
    RT_SIGFRAME_FPSTATE_OFFSET + xsave_len + FP_XSTATE_MAGIC2_SIZE
}

/// Why a frame could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigframeError {
    /// The output buffer is smaller than [`rt_sigframe_size`].
    BufferTooSmall,
    /// The frame's address in the task is not [`FPSTATE_ALIGN`]-aligned.
    Misaligned,
    /// The xsave area is shorter than its legacy region plus header.
    XsaveTooShort,
}

/// The contents of an `rt_sigreturn` frame: what the task will look like afterwards.
#[derive(Clone, Copy, Debug)]
pub struct SigframeState<'a> {
    /// General registers (segment selectors other than `cs`/`ss`, `orig_rax` and the fs/gs bases
    /// are not part of a frame: `rt_sigreturn` leaves them alone).
    pub regs: &'a UserRegs,
    /// The standard-format xsave area as `PTRACE_GETREGSET(NT_X86_XSTATE)` returns it.
    pub xsave: &'a [u8],
    /// The xsave features the area holds (XCR0's user features).
    pub xfeatures: u64,
    /// The blocked-signal mask to install.
    pub sigmask: u64,
    /// The alternate signal stack to install, or `None` to leave the current one untouched.
    pub altstack: Option<SigStack>,
}

/// Writes a complete `rt_sigreturn` frame for `state` into `buf`, which will live at
/// `remote_addr` in the task (the fpstate pointer is an address there). Returns the number of
/// bytes used. Call `rt_sigreturn` with the stack pointer at `remote_addr +`
/// [`RT_SIGFRAME_UC_OFFSET`].
///
/// # Errors
/// [`SigframeError`] when `buf` is too small, `remote_addr` misaligned or the xsave area short.
pub fn write_rt_sigframe(
    buf: &mut [u8],
    remote_addr: u64,
    state: &SigframeState<'_>,
) -> Result<usize, SigframeError> {
    let xlen = state.xsave.len();
    let need = rt_sigframe_size(xlen);
    if buf.len() < need {
        return Err(SigframeError::BufferTooSmall);
    }
    if !remote_addr.is_multiple_of(FPSTATE_ALIGN as u64) {
        return Err(SigframeError::Misaligned);
    }
    if xlen < crate::XSAVE_LEGACY_SIZE + crate::XSAVE_HDR_SIZE {
        return Err(SigframeError::XsaveTooShort);
    }
    let r = state.regs;
    let mcontext = SigContext {
        r8: r.r8,
        r9: r.r9,
        r10: r.r10,
        r11: r.r11,
        r12: r.r12,
        r13: r.r13,
        r14: r.r14,
        r15: r.r15,
        rdi: r.rdi,
        rsi: r.rsi,
        rbp: r.rbp,
        rbx: r.rbx,
        rdx: r.rdx,
        rax: r.rax,
        rcx: r.rcx,
        rsp: r.rsp,
        rip: r.rip,
        eflags: r.eflags,
        cs: r.cs as u16,
        gs: 0,
        fs: 0,
        ss: r.ss as u16,
        fpstate: remote_addr + RT_SIGFRAME_FPSTATE_OFFSET as u64,
        ..SigContext::default()
    };
    let uc = UContext {
        uc_flags: UC_FP_XSTATE | UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS,
        uc_link: 0,
        uc_stack: state.altstack.unwrap_or(SigStack {
            ss_flags: SS_KEEP_CURRENT,
            ..SigStack::default()
        }),
        uc_mcontext: mcontext,
        uc_sigmask: state.sigmask,
    };
    let frame = RtSigframe {
        pretcode: 0,
        uc,
        info: [0; 128],
    };
    buf[..need].fill(0);
    // SAFETY: `RtSigframe` is `repr(C)`, made only of integers with no padding bytes left
    // uninitialised (every field is written above and the struct has no implicit padding: its
    // size is pinned to the sum of its fields), so viewing it as bytes is sound.
    let frame_bytes = unsafe {
        core::slice::from_raw_parts((&raw const frame).cast::<u8>(), size_of::<RtSigframe>())
    };
    buf[..frame_bytes.len()].copy_from_slice(frame_bytes);
    let fp = &mut buf[RT_SIGFRAME_FPSTATE_OFFSET..RT_SIGFRAME_FPSTATE_OFFSET + xlen];
    fp.copy_from_slice(state.xsave);
    // The software bytes: magic1, extended size, features, xstate size.
    let sw = &mut fp[FPX_SW_BYTES_OFFSET..FPX_SW_BYTES_OFFSET + 48];
    sw.fill(0);
    sw[0..4].copy_from_slice(&FP_XSTATE_MAGIC1.to_le_bytes());
    sw[4..8].copy_from_slice(&((xlen + FP_XSTATE_MAGIC2_SIZE) as u32).to_le_bytes());
    sw[8..16].copy_from_slice(&state.xfeatures.to_le_bytes());
    sw[16..20].copy_from_slice(&(xlen as u32).to_le_bytes());
    let m2 = RT_SIGFRAME_FPSTATE_OFFSET + xlen;
    buf[m2..m2 + FP_XSTATE_MAGIC2_SIZE].copy_from_slice(&FP_XSTATE_MAGIC2.to_le_bytes());
    Ok(need)
}

/// Returns to the state in the frame whose [`RtSigframe::uc`] is at `uc_addr`: loads the stack
/// pointer and issues `rt_sigreturn`. For parasite code.
///
/// # Safety
/// `uc_addr` must point at a complete, valid frame (see [`write_rt_sigframe`]); the current
/// execution context is abandoned.
#[inline(always)]
pub unsafe fn rt_sigreturn(uc_addr: usize) -> ! {
    // SAFETY: the caller guarantees a valid frame at uc_addr; rt_sigreturn replaces every
    // register, so nothing of this context is used again.
    unsafe {
        core::arch::asm!(
            "mov rsp, {uc}",
            "syscall",
            "ud2",
            uc = in(reg) uc_addr,
            in("rax") crate::nr::RT_SIGRETURN,
            options(noreturn)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_layout_and_magics() {
        let regs = UserRegs {
            rip: 0x1234,
            rsp: 0x5678,
            rax: 7,
            cs: 0x33,
            ss: 0x2b,
            ..UserRegs::default()
        };
        let xsave = [0xa5u8; 1024];
        let state = SigframeState {
            regs: &regs,
            xsave: &xsave,
            xfeatures: 0x7,
            sigmask: 1 << 9,
            altstack: None,
        };
        let mut buf = [0u8; 2048];
        let n = write_rt_sigframe(&mut buf, 0x7000_0000, &state).unwrap();
        assert_eq!(n, rt_sigframe_size(1024));
        let word = |off: usize| u64::from_le_bytes(buf[off..off + 8].try_into().unwrap());
        let mc = RT_SIGFRAME_UC_OFFSET + offset_of!(UContext, uc_mcontext);
        assert_eq!(word(mc + offset_of!(SigContext, rip)), 0x1234);
        assert_eq!(word(mc + offset_of!(SigContext, rsp)), 0x5678);
        assert_eq!(word(mc + offset_of!(SigContext, rax)), 7);
        assert_eq!(
            word(mc + offset_of!(SigContext, fpstate)),
            0x7000_0000 + RT_SIGFRAME_FPSTATE_OFFSET as u64
        );
        assert_eq!(
            word(RT_SIGFRAME_UC_OFFSET + offset_of!(UContext, uc_sigmask)),
            1 << 9
        );
        let sw = RT_SIGFRAME_FPSTATE_OFFSET + FPX_SW_BYTES_OFFSET;
        assert_eq!(&buf[sw..sw + 4], &FP_XSTATE_MAGIC1.to_le_bytes());
        assert_eq!(&buf[sw + 4..sw + 8], &1028u32.to_le_bytes());
        let m2 = RT_SIGFRAME_FPSTATE_OFFSET + 1024;
        assert_eq!(&buf[m2..m2 + 4], &FP_XSTATE_MAGIC2.to_le_bytes());
        assert_eq!(
            write_rt_sigframe(&mut buf, 0x7000_0008, &state),
            Err(SigframeError::Misaligned)
        );
        assert_eq!(
            write_rt_sigframe(&mut buf[..100], 0x7000_0000, &state),
            Err(SigframeError::BufferTooSmall)
        );
    }
}
