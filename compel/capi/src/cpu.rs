//! CRIU compel's CPU and FPU queries (`<compel/cpu.h>`, `<compel/asm/cpu.h>`,
//! `<compel/asm/fpu.h>`): `compel_cpuid()` fills CRIU's `compel_cpuinfo_t` from CPUID, and
//! `compel_cpu_has_feature()`, `compel_fpu_has_feature()`, `compel_fpu_feature_size()`,
//! `compel_fpu_feature_offset()`, `compel_cpu_clear_feature()`, `compel_cpu_copy_cpuinfo()`
//! answer from one copy of it made on first use, as CRIU's do.
//!
//! Feature numbers are CRIU's (`word * 32 + bit`, the words in the kernel's `cpuid_leafs`
//! order, an ABI of CRIU's images); xsave components are the kernel's `enum xfeature`.
// Unsafe code: C callers hand over pointers to a `compel_cpuinfo_t` to fill.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_uint};
use std::sync::Mutex;

use compel_arch::cap_word::{W_1_ECX, W_D_1_EAX, W_LNX_1};
use compel_arch::{CpuId, NCAPINTS, cpuid};

/// `XFEATURE_MAX`: the xsave components CRIU's header knows (FP .. HDC).
const XFEATURE_MAX: usize = 11;
/// The user components (`XFEATURE_MASK_USER`): FP, SSE, YMM, BNDREGS, BNDCSR, OPMASK,
/// ZMM_Hi256, Hi16_ZMM, PKRU.
const XFEATURE_MASK_USER: u64 = 0b10_1111_1111;

/// `X86_FEATURE_XSAVE` (CPUID 1 ECX bit 26) and `X86_FEATURE_XSAVES` (CPUID 0xd.1 EAX bit 3).
const FEATURE_XSAVE: u32 = (W_1_ECX as u32) * 32 + 26;
const FEATURE_XSAVES: u32 = (W_D_1_EAX as u32) * 32 + 3;

/// CRIU's `struct cpuinfo_x86` (`compel_cpuinfo_t`) on x86_64.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CpuInfo {
    x86_family: u8,
    x86_vendor: u8,
    x86_model: u8,
    x86_mask: u8,
    x86_capability: [u32; NCAPINTS],
    x86_power: u32,
    extended_cpuid_level: u32,
    cpuid_level: c_int,
    x86_vendor_id: [c_char; 16],
    x86_model_id: [c_char; 64],
    xfeatures_mask: u64,
    xsave_size_max: u32,
    xsave_size: u32,
    xstate_offsets: [u32; XFEATURE_MAX],
    xstate_sizes: [u32; XFEATURE_MAX],
    xsaves_size: u32,
    xstate_comp_offsets: [u32; XFEATURE_MAX],
    xstate_comp_sizes: [u32; XFEATURE_MAX],
}

// The size gcc gives CRIU's struct on x86_64 (checked by the C test too).
const _: () = assert!(std::mem::size_of::<CpuInfo>() == 376);

fn has(c: &CpuInfo, feature: u32) -> bool {
    let (w, b) = ((feature / 32) as usize, feature % 32);
    w < NCAPINTS && c.x86_capability[w] & (1 << b) != 0
}

/// Reads the CPU into CRIU's layout.
fn probe() -> CpuInfo {
    let mut c = CpuInfo {
        x86_family: 0,
        x86_vendor: 0,
        x86_model: 0,
        x86_mask: 0,
        x86_capability: [0; NCAPINTS],
        x86_power: 0,
        extended_cpuid_level: 0,
        cpuid_level: 0,
        x86_vendor_id: [0; 16],
        x86_model_id: [0; 64],
        xfeatures_mask: 0,
        xsave_size_max: 0,
        xsave_size: 0,
        xstate_offsets: [0; XFEATURE_MAX],
        xstate_sizes: [0; XFEATURE_MAX],
        xsaves_size: 0,
        xstate_comp_offsets: [0; XFEATURE_MAX],
        xstate_comp_sizes: [0; XFEATURE_MAX],
    };
    let id = CpuId::read();
    c.cpuid_level = id.max_leaf as c_int;
    for (dst, src) in c.x86_vendor_id.iter_mut().zip(&id.vendor) {
        *dst = *src as c_char;
    }
    // X86_VENDOR_INTEL 0, X86_VENDOR_AMD 1, anything else X86_VENDOR_MAX.
    c.x86_vendor = match &id.vendor {
        b"GenuineIntel" => 0,
        b"AuthenticAMD" => 1,
        _ => 2,
    };
    c.x86_family = id.family as u8;
    c.x86_model = id.model as u8;
    c.x86_mask = id.stepping as u8;
    c.x86_capability = id.words;
    c.extended_cpuid_level = id.max_ext_leaf;
    c.x86_power = id.power;
    if let Some(brand) = id.brand {
        let text = String::from_utf8_lossy(&brand);
        let text = text.trim_matches(|ch: char| ch == '\0' || ch == ' ');
        for (dst, src) in c.x86_model_id[..63].iter_mut().zip(text.bytes()) {
            *dst = src as c_char;
        }
    }
    // Linux's own word: X86_FEATURE_CPUID (bit 25) and X86_FEATURE_NOPL (bit 20) hold on
    // every x86_64.
    c.x86_capability[W_LNX_1] |= (1 << 25) | (1 << 20);
    fpu_probe(&mut c);
    c
}

/// The xsave part: which components there are, their sizes and offsets (standard and
/// compacted).
fn fpu_probe(c: &mut CpuInfo) {
    // The legacy area: FP (x87) at 0, 160 bytes; SSE (XMM) at 160, 256 bytes.
    c.xstate_offsets[0] = 0;
    c.xstate_sizes[0] = 160;
    c.xstate_offsets[1] = 160;
    c.xstate_sizes[1] = 256;
    c.xstate_comp_offsets[..2].copy_from_slice(&c.xstate_offsets[..2]);
    c.xstate_comp_sizes[..2].copy_from_slice(&c.xstate_sizes[..2]);
    if !has(c, FEATURE_XSAVE) || c.cpuid_level < 0xd {
        // FXSAVE only: the 512-byte legacy area.
        c.xfeatures_mask = 0b11;
        c.xsave_size = 512;
        c.xsave_size_max = 512;
        return;
    }
    let [a, b, cx, d] = cpuid(0xd, 0);
    c.xfeatures_mask = (u64::from(d) << 32 | u64::from(a)) & XFEATURE_MASK_USER;
    c.xsave_size = b;
    c.xsave_size_max = cx;
    // The compacted form starts after the legacy area and the 64-byte header.
    let mut next: u32 = 576;
    for i in 2..XFEATURE_MAX {
        if c.xfeatures_mask & (1 << i) == 0 {
            continue;
        }
        let [size, off, flags, _] = cpuid(0xd, i as u32);
        c.xstate_sizes[i] = size;
        c.xstate_offsets[i] = off;
        // ECX bit 1: the component is 64-byte aligned when compacted.
        if flags & 2 != 0 {
            next = next.next_multiple_of(64);
        }
        c.xstate_comp_offsets[i] = next;
        c.xstate_comp_sizes[i] = size;
        next += size;
    }
    if has(c, FEATURE_XSAVES) {
        c.xsaves_size = cpuid(0xd, 1)[1];
    }
}

/// The copy the feature queries answer from (made on first use).
static RT: Mutex<Option<CpuInfo>> = Mutex::new(None);

fn with_rt<R>(f: impl FnOnce(&mut CpuInfo) -> R) -> R {
    let mut g = RT.lock().unwrap_or_else(|e| e.into_inner());
    f(g.get_or_insert_with(probe))
}

/// `compel_cpuid()`: fills `*info` from this CPU; 0, or -EINVAL for a NULL pointer.
///
/// # Safety
/// `info` is NULL or points to a writable `compel_cpuinfo_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_cpuid(info: *mut CpuInfo) -> c_int {
    if info.is_null() {
        return crate::fail(libc::EINVAL, "null compel_cpuinfo_t".into());
    }
    // SAFETY: a writable compel_cpuinfo_t (as this function requires); a plain-data write.
    unsafe { info.write(probe()) };
    0
}

/// `compel_cpu_has_feature()`: feature `word * 32 + bit` is present (and not cleared by
/// [`compel_cpu_clear_feature`]).
#[unsafe(no_mangle)]
pub extern "C" fn compel_cpu_has_feature(feature: c_uint) -> bool {
    with_rt(|c| has(c, feature))
}

/// `compel_fpu_has_feature()`: xsave component `feature` (`XFEATURE_*`) is enabled.
#[unsafe(no_mangle)]
pub extern "C" fn compel_fpu_has_feature(feature: c_uint) -> bool {
    with_rt(|c| feature < 64 && c.xfeatures_mask & (1 << feature) != 0)
}

/// `compel_fpu_feature_size()`: the size of xsave component `feature` (0 if unknown).
#[unsafe(no_mangle)]
pub extern "C" fn compel_fpu_feature_size(feature: c_uint) -> u32 {
    with_rt(|c| c.xstate_sizes.get(feature as usize).copied().unwrap_or(0))
}

/// `compel_fpu_feature_offset()`: the offset of xsave component `feature` in the standard
/// (not compacted) xsave layout (0 if unknown).
#[unsafe(no_mangle)]
pub extern "C" fn compel_fpu_feature_offset(feature: c_uint) -> u32 {
    with_rt(|c| c.xstate_offsets.get(feature as usize).copied().unwrap_or(0))
}

/// `compel_cpu_clear_feature()`: [`compel_cpu_has_feature`] answers false for `feature` from
/// now on (e.g. to make a restore not count on it).
#[unsafe(no_mangle)]
pub extern "C" fn compel_cpu_clear_feature(feature: c_uint) {
    with_rt(|c| {
        let (w, b) = ((feature / 32) as usize, feature % 32);
        if let Some(word) = c.x86_capability.get_mut(w) {
            *word &= !(1 << b);
        }
    });
}

/// `compel_cpu_copy_cpuinfo()`: copies the information the queries answer from into `*c`.
///
/// # Safety
/// `c` is NULL (ignored) or points to a writable `compel_cpuinfo_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_cpu_copy_cpuinfo(c: *mut CpuInfo) {
    if c.is_null() {
        return;
    }
    let info = with_rt(|i| *i);
    // SAFETY: a writable compel_cpuinfo_t (as this function requires).
    unsafe { c.write(info) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_cpu_has_the_x86_64_basics() {
        // FPU (word 0 bit 0), SSE2 (word 0 bit 26), long mode (word 1 bit 29).
        for f in [0, 26, 32 + 29] {
            assert!(compel_cpu_has_feature(f), "feature {f}");
        }
        assert!(compel_fpu_has_feature(0) && compel_fpu_has_feature(1));
        assert_eq!(compel_fpu_feature_size(1), 256);
        assert_eq!(compel_fpu_feature_offset(1), 160);
        assert_eq!(compel_fpu_feature_size(99), 0);
        assert!(!compel_cpu_has_feature(NCAPINTS as u32 * 32 + 5));
    }
}
