//! Facts about the xsave area (`NT_X86_XSTATE`, the standard, non-compacted format that ptrace
//! and signal frames use) and the CPUID queries that size it.

use core::arch::x86_64::CpuidResult;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Size of the legacy (fxsave) region at the start of the xsave area.
pub const XSAVE_LEGACY_SIZE: usize = 512;
/// Offset of the xsave header (right after the legacy region).
pub const XSAVE_HDR_OFFSET: usize = 512;
/// Size of the xsave header.
pub const XSAVE_HDR_SIZE: usize = 64;
/// Offset of `XSTATE_BV` (which components hold non-init state) inside the area.
pub const XSTATE_BV_OFFSET: usize = XSAVE_HDR_OFFSET;
/// An upper bound on the standard-format area for every feature a task can use; the real size
/// comes from [`xsave_size`] or from the kernel.
pub const XSAVE_MAX_SIZE: usize = 16 * 1024;

/// Component 0: x87 state.
pub const XFEATURE_FP: u32 = 0;
/// Component 1: SSE (xmm0..15, mxcsr).
pub const XFEATURE_SSE: u32 = 1;
/// Component 2: the upper 128 bits of ymm0..15.
pub const XFEATURE_YMM: u32 = 2;
/// Component 5: AVX-512 opmask registers k0..k7.
pub const XFEATURE_AVX512_OPMASK: u32 = 5;
/// Component 6: the upper 256 bits of zmm0..15.
pub const XFEATURE_AVX512_ZMM_HI256: u32 = 6;
/// Component 7: zmm16..31 (all 512 bits).
pub const XFEATURE_AVX512_HI16_ZMM: u32 = 7;

/// CPUID, remembered: the leaves asked here (1, 7 and every subleaf of 0xd) are answered from a
/// cache after the first time. Under a hypervisor each CPUID is a trap to the host (about 6 us on
/// the VMs this was measured on), and a restore asks for the xsave layout once per task.
fn cpuid(leaf: u32, sub: u32) -> CpuidResult {
    let slot = match (leaf, sub) {
        (1, 0) => Some(0),
        (7, 0) => Some(1),
        (0xd, n) if n < 64 => Some(2 + n as usize),
        _ => None,
    };
    let Some(slot) = slot else {
        return raw_cpuid(leaf, sub);
    };
    let c = &CPUID_CACHE[slot];
    if c.ready.load(Ordering::Acquire) {
        return CpuidResult {
            eax: c.regs[0].load(Ordering::Relaxed),
            ebx: c.regs[1].load(Ordering::Relaxed),
            ecx: c.regs[2].load(Ordering::Relaxed),
            edx: c.regs[3].load(Ordering::Relaxed),
        };
    }
    let r = raw_cpuid(leaf, sub);
    // Threads racing here store the same values; `ready` is published after them.
    for (a, v) in c.regs.iter().zip([r.eax, r.ebx, r.ecx, r.edx]) {
        a.store(v, Ordering::Relaxed);
    }
    c.ready.store(true, Ordering::Release);
    r
}

/// One remembered CPUID answer.
struct CpuidSlot {
    ready: AtomicBool,
    regs: [AtomicU32; 4],
}

/// Leaf 1, leaf 7, then leaf 0xd subleaves 0..=63.
static CPUID_CACHE: [CpuidSlot; 66] = [const {
    CpuidSlot {
        ready: AtomicBool::new(false),
        regs: [const { AtomicU32::new(0) }; 4],
    }
}; 66];

fn raw_cpuid(leaf: u32, sub: u32) -> CpuidResult {
    let [eax, ebx, ecx, edx] = super::cpu::cpuid(leaf, sub);
    CpuidResult { eax, ebx, ecx, edx }
}

fn osxsave() -> bool {
    cpuid(1, 0).ecx & (1 << 27) != 0
}

/// The feature mask the OS enabled (XCR0), or 0 when the OS does not use xsave.
pub fn xsave_enabled_features() -> u64 {
    if !osxsave() {
        return 0;
    }
    let (lo, hi): (u32, u32);
    // SAFETY: CR4.OSXSAVE is set (checked above), so xgetbv with ecx=0 is permitted in user mode
    // and only reads XCR0.
    unsafe {
        core::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi,
                         options(nomem, nostack, preserves_flags));
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// The size of the standard-format xsave area for the features enabled in XCR0, or `None` when
/// the CPU or OS has no xsave.
pub fn xsave_size() -> Option<usize> {
    if !osxsave() {
        return None;
    }
    Some(cpuid(0xd, 0).ebx as usize)
}

/// `(offset, size)` of xsave component `n` (2 and up) in the standard format, or `None` when the
/// CPU does not have it.
pub fn xsave_component(n: u32) -> Option<(usize, usize)> {
    if !osxsave() || !(2..=62).contains(&n) {
        return None;
    }
    let r = cpuid(0xd, n);
    (r.eax != 0).then_some((r.ebx as usize, r.eax as usize))
}

/// The components the kernel gives a task only when it asks for them (`arch_prctl(
/// ARCH_REQ_XCOMP_PERM)`): those CPUID marks as supporting extended feature disable (leaf 0xd,
/// subleaf n, ECX bit 2), i.e. AMX tile data. A task that never used them has a buffer without
/// them, and an `rt_sigreturn` frame that declares them is refused.
pub fn xsave_dynamic_features() -> u64 {
    let enabled = xsave_enabled_features();
    (2..=62u32)
        .filter(|n| enabled & (1 << n) != 0 && cpuid(0xd, *n).ecx & (1 << 2) != 0)
        .fold(0, |m, n| m | 1 << n)
}

/// The size of a standard-format area that holds `features`: the legacy region and header,
/// and every component of `features` this CPU has at its CPUID offset.
pub fn xsave_size_for(features: u64) -> usize {
    (2..=62u32)
        .filter(|n| features & (1 << n) != 0)
        .filter_map(xsave_component)
        .map(|(off, size)| off + size)
        .fold(XSAVE_LEGACY_SIZE + XSAVE_HDR_SIZE, usize::max)
}

/// The features and the length a signal frame may declare for a task whose ptrace xsave area
/// has `xstate_bv` in its header.
///
/// `PTRACE_GETREGSET(NT_X86_XSTATE)` always returns the area for every feature in XCR0 (with
/// AMX: 11008 bytes). `rt_sigreturn` takes a frame's xsave area only if it is no larger than
/// the task's own buffer, which lacks the dynamic components unless the task uses them;
/// otherwise it silently restores x87/SSE alone and resets every ymm/zmm/opmask register. So
/// a frame leaves the dynamic components out unless the area holds state for them.
pub fn xsave_frame_extent(xstate_bv: u64) -> (u64, usize) {
    let enabled = xsave_enabled_features();
    if enabled == 0 {
        return (0b11, XSAVE_LEGACY_SIZE + XSAVE_HDR_SIZE);
    }
    let dynamic = xsave_dynamic_features();
    let features = if xstate_bv & dynamic != 0 {
        enabled
    } else {
        enabled & !dynamic
    };
    (features, xsave_size_for(features))
}

/// Whether AVX (ymm registers) is usable: CPU support and OS-enabled state.
pub fn cpu_has_avx() -> bool {
    osxsave() && cpuid(1, 0).ecx & (1 << 28) != 0 && xsave_enabled_features() & 0b110 == 0b110
}

/// Whether AVX-512F (zmm registers, opmasks) is usable: CPU support and OS-enabled state.
pub fn cpu_has_avx512f() -> bool {
    cpu_has_avx() && cpuid(7, 0).ebx & (1 << 16) != 0 && xsave_enabled_features() & 0xe6 == 0xe6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_extent_leaves_unused_dynamic_state_out() {
        let enabled = xsave_enabled_features();
        if enabled == 0 {
            return; // no xsave: nothing to size
        }
        let dynamic = xsave_dynamic_features();
        assert_eq!(dynamic & !enabled, 0);
        let (features, len) = xsave_frame_extent(0b111);
        assert_eq!(features, enabled & !dynamic);
        assert_eq!(len, xsave_size_for(features));
        assert!(len <= xsave_size().unwrap_or(0));
        // Every component declared lies inside the frame's area.
        for n in 2..=62 {
            if features & (1 << n) != 0
                && let Some((off, size)) = xsave_component(n)
            {
                assert!(off + size <= len, "component {n}");
            }
        }
        if dynamic != 0 {
            // A task that holds tile data gets the whole area.
            assert_eq!(
                xsave_frame_extent(0b11 | dynamic),
                (enabled, xsave_size_for(enabled))
            );
            assert!(xsave_size_for(enabled) > len);
        } else {
            assert_eq!(Some(len), xsave_size());
        }
    }
}
