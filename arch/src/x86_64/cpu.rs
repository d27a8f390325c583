//! What CPUID says about this CPU, in the kernel's terms: vendor, family, model, stepping, the
//! brand string, and the CPUID registers that the kernel keeps as capability words (its
//! `cpuid_leafs` order, which CRIU's `cpuinfo.img` and compel's `compel_cpuinfo_t` use too).
//!
//! Only the words that are CPUID registers are filled; the words Linux defines itself (2, 3, 5,
//! 7 and 8: its own synthetic bits, Transmeta and Centaur leaves) are left to the caller, which
//! knows which of those bits its format wants.

use core::arch::x86_64::{__cpuid, __cpuid_count};

/// `NCAPINTS`: 32-bit words of feature bits in the kernel's `cpuid_leafs` order.
pub const NCAPINTS: usize = 19;

/// Indexes of the capability words (the kernel's `cpuid_leafs`), named by the CPUID leaf and
/// register each one is (`LNX_1` is the kernel's own word of synthetic bits).
pub mod cap_word {
    /// Leaf 1, EDX.
    pub const W_1_EDX: usize = 0;
    /// Leaf 0x8000_0001, EDX.
    pub const W_8000_0001_EDX: usize = 1;
    /// Linux's own word of synthetic bits (`X86_FEATURE_CPUID`, `NOPL`, `REP_GOOD`, ...).
    pub const W_LNX_1: usize = 3;
    /// Leaf 1, ECX.
    pub const W_1_ECX: usize = 4;
    /// Leaf 0xC000_0001, EDX (Centaur; not read here).
    pub const W_C000_0001_EDX: usize = 5;
    /// Leaf 0x8000_0001, ECX.
    pub const W_8000_0001_ECX: usize = 6;
    /// Leaf 7 subleaf 0, EBX.
    pub const W_7_0_EBX: usize = 9;
    /// Leaf 0xd subleaf 1, EAX.
    pub const W_D_1_EAX: usize = 10;
    /// Leaf 7 subleaf 0, ECX.
    pub const W_7_0_ECX: usize = 11;
    /// Leaf 0xf subleaf 1, EDX.
    pub const W_F_1_EDX: usize = 12;
    /// Leaf 0x8000_0008, EBX.
    pub const W_8000_0008_EBX: usize = 13;
    /// Leaf 6, EAX.
    pub const W_6_EAX: usize = 14;
    /// Leaf 0x8000_000a, EDX.
    pub const W_8000_000A_EDX: usize = 15;
    /// Leaf 0xf subleaf 0, EDX.
    pub const W_F_0_EDX: usize = 16;
    /// Leaf 0x8000_0007, EBX.
    pub const W_8000_0007_EBX: usize = 17;
    /// Leaf 7 subleaf 0, EDX.
    pub const W_7_0_EDX: usize = 18;
}

use cap_word::*;

/// CPUID of `leaf` and subleaf `sub`: `[eax, ebx, ecx, edx]`.
pub fn cpuid(leaf: u32, sub: u32) -> [u32; 4] {
    #[allow(unused_unsafe)]
    // SAFETY: CPUID exists on every x86_64 CPU and has no side effects.
    let r = unsafe {
        if sub == 0 {
            __cpuid(leaf)
        } else {
            __cpuid_count(leaf, sub)
        }
    };
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// This CPU as CPUID describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuId {
    /// The highest basic leaf (leaf 0, EAX).
    pub max_leaf: u32,
    /// The highest extended leaf (leaf 0x8000_0000, EAX).
    pub max_ext_leaf: u32,
    /// The vendor string (`GenuineIntel`, `AuthenticAMD`, ...).
    pub vendor: [u8; 12],
    /// Leaf 1 EAX as it is (family, model and stepping packed).
    pub signature: u32,
    /// The family, the extended family added.
    pub family: u32,
    /// The model, the extended model added for families 6 and up.
    pub model: u32,
    /// The stepping.
    pub stepping: u32,
    /// The capability words in the kernel's `cpuid_leafs` order (see [`cap_word`]); Linux's
    /// own words are zero.
    pub words: [u32; NCAPINTS],
    /// Leaf 0x8000_0007 EDX (advanced power management), or 0.
    pub power: u32,
    /// The brand string (leaves 0x8000_0002..=0x8000_0004) as the CPU gives it, NUL-padded.
    pub brand: Option<[u8; 48]>,
}

impl CpuId {
    /// Reads this CPU.
    pub fn read() -> CpuId {
        let [max_leaf, b, c, d] = cpuid(0, 0);
        let mut vendor = [0u8; 12];
        for (i, r) in [b, d, c].into_iter().enumerate() {
            vendor[i * 4..i * 4 + 4].copy_from_slice(&r.to_le_bytes());
        }
        let max_ext_leaf = cpuid(0x8000_0000, 0)[0];
        let has = |l: u32| l <= max_leaf;
        let has_ext = |l: u32| max_ext_leaf >= l && l >= 0x8000_0000;
        let mut words = [0u32; NCAPINTS];
        let [signature, _, ecx1, edx1] = if has(1) { cpuid(1, 0) } else { [0; 4] };
        words[W_1_EDX] = edx1;
        words[W_1_ECX] = ecx1;
        let mut family = (signature >> 8) & 0xf;
        let mut model = (signature >> 4) & 0xf;
        if family == 0xf {
            family += (signature >> 20) & 0xff;
        }
        if family >= 6 {
            model += ((signature >> 16) & 0xf) << 4;
        }
        if has(6) {
            words[W_6_EAX] = cpuid(6, 0)[0];
        }
        if has(7) {
            let [_, b, c, d] = cpuid(7, 0);
            words[W_7_0_EBX] = b;
            words[W_7_0_ECX] = c;
            words[W_7_0_EDX] = d;
        }
        if has(0xd) {
            words[W_D_1_EAX] = cpuid(0xd, 1)[0];
        }
        if has(0xf) {
            words[W_F_0_EDX] = cpuid(0xf, 0)[3];
            words[W_F_1_EDX] = cpuid(0xf, 1)[3];
        }
        if has_ext(0x8000_0001) {
            let [_, _, c, d] = cpuid(0x8000_0001, 0);
            words[W_8000_0001_ECX] = c;
            words[W_8000_0001_EDX] = d;
        }
        let mut power = 0;
        if has_ext(0x8000_0007) {
            let [_, b, _, d] = cpuid(0x8000_0007, 0);
            words[W_8000_0007_EBX] = b;
            power = d;
        }
        if has_ext(0x8000_0008) {
            words[W_8000_0008_EBX] = cpuid(0x8000_0008, 0)[1];
        }
        if has_ext(0x8000_000a) {
            words[W_8000_000A_EDX] = cpuid(0x8000_000a, 0)[3];
        }
        let brand = has_ext(0x8000_0004).then(|| {
            let mut brand = [0u8; 48];
            for (i, l) in (0x8000_0002..=0x8000_0004u32).enumerate() {
                for (j, r) in cpuid(l, 0).into_iter().enumerate() {
                    let at = i * 16 + j * 4;
                    brand[at..at + 4].copy_from_slice(&r.to_le_bytes());
                }
            }
            brand
        });
        CpuId {
            max_leaf,
            max_ext_leaf,
            vendor,
            signature,
            family,
            model,
            stepping: signature & 0xf,
            words,
            power,
            brand,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_cpu_in_the_kernel_s_word_order() {
        let c = CpuId::read();
        assert!(c.max_leaf >= 1);
        assert!(
            c.vendor.iter().all(|b| b.is_ascii_graphic()),
            "{:?}",
            c.vendor
        );
        // Every x86_64 CPU has FPU (1 EDX bit 0), SSE and SSE2 (bits 25, 26) and long mode
        // (0x8000_0001 EDX bit 29).
        assert_eq!(
            c.words[W_1_EDX] & (1 | 1 << 25 | 1 << 26),
            1 | 1 << 25 | 1 << 26
        );
        assert_ne!(c.words[W_8000_0001_EDX] & (1 << 29), 0);
        assert_eq!(c.words[W_1_ECX], cpuid(1, 0)[2]);
        assert_eq!(c.signature, cpuid(1, 0)[0]);
        assert_eq!(c.words[W_LNX_1], 0);
        assert!(c.family >= 6);
    }
}
