//! `criu cpuinfo dump|check` and the RPC `CPUINFO_DUMP`/`CPUINFO_CHECK` (layer: engine front
//! end): this CPU's description in CRIU's `cpuinfo.img` (`cpuinfo_entry` with one
//! `cpuinfo_x86_entry`), and the check of such an image against this CPU that a restore on
//! another machine needs, with `--cpu-cap`'s meaning:
//!
//! - `fpu`: every FPU feature and xsave component the image's CPU had is here, and the xsave
//!   frame sizes are equal (programs size their signal frames from them);
//! - `ins`: every instruction-set feature the image's CPU had is here (this one may have more);
//! - `cpu`: the capability words are identical.
//!
//! The capability words follow CRIU's layout (`capability_ver` 2, 19 words, in the order of the
//! kernel's `cpuid_leafs`): words that are CPUID registers are read from CPUID; of the words
//! Linux itself defines only the bits CRIU sets (`cpuid`, `nopl`, `rep_good`) are filled.
//!
//! ```no_run
//! let dir = std::path::Path::new("/tmp/img");
//! criu::cpuinfo::dump(dir).unwrap();
//! criu::cpuinfo::check(dir, criu::CpuCap::default()).unwrap();
//! ```

use std::path::{Path, PathBuf};

use criu_images::pb::{CpuinfoEntry, CpuinfoX86Entry};
use criu_images::{ImageError, magic};

use crate::options::CpuCap;

/// The image file's name.
pub const FILE: &str = "cpuinfo.img";
/// The capability layout version written (CRIU 3.x/4.x).
pub const CAPABILITY_VER: u32 = 2;
/// Words of layout version 1 and 2.
const NCAPINTS_V1: usize = 12;
const NCAPINTS_V2: usize = 19;

// Words of the capability array (the kernel's `cpuid_leafs` order, an ABI of the image).
use compel_arch::cap_word::*;

/// The bits of each word that are instruction-set features (what `--cpu-cap=ins` compares):
/// fpu tsc cx8 sep cmov clflush mmx fxsr sse sse2 | syscall mmxext rdtscp 3dnowext 3dnow |
/// rep_good nopl | sse3 pclmulqdq monitor ssse3 cx16 sse4.1 sse4.2 movbe popcnt aes xsave
/// osxsave avx f16c rdrand | abm sse4a misalignsse 3dnowprefetch xop fma4 tbm | fsgsbase bmi1
/// hle avx2 bmi2 erms rtm mpx avx512f avx512dq rdseed adx clflushopt avx512pf avx512er avx512cd
/// sha avx512bw avx512vl | xsaveopt xsavec xgetbv1 | avx512vbmi avx512_vbmi2 gfni vaes
/// vpclmulqdq avx512_vnni avx512_bitalg tme avx512_vpopcntdq rdpid | clzero |
/// avx512_4vnniw avx512_4fmaps.
const INS_MASK: [u32; NCAPINTS_V2] = [
    0x0788_8911,
    0xc840_0800,
    0,
    0x0011_0000,
    0x7ed8_220b,
    0,
    0x0021_09e0,
    0,
    0,
    0xfc8f_4b39,
    0x7,
    0x0040_7f42,
    0,
    0x1,
    0,
    0,
    0,
    0,
    0xc,
];

/// (word, bit) of the FPU features `--cpu-cap=fpu` requires: fpu, fxsr, osxsave, xsaves.
const FPU_BITS: [(usize, u32, &str); 4] = [
    (W_1_EDX, 0, "fpu"),
    (W_1_EDX, 24, "fxsr"),
    (W_1_ECX, 27, "osxsave"),
    (W_D_1_EAX, 3, "xsaves"),
];

/// The xsave components user space may hold (fp sse ymm bndregs bndcsr opmask zmm_hi256
/// hi16_zmm pkru), the ones CRIU records.
const XFEATURE_MASK_USER: u64 = 0x2ff;

/// Why a cpuinfo dump or check failed.
#[derive(Debug, thiserror::Error)]
pub enum CpuinfoError {
    /// The image could not be read or written.
    #[error("cpuinfo image {}", file.display())]
    Image {
        /// The file.
        file: PathBuf,
        /// Why.
        #[source]
        source: ImageError,
    },
    /// The image describes no x86 CPU (or more than one).
    #[error("cpuinfo image {}: {what}", file.display())]
    Bad {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The image's CPU has something this one lacks.
    #[error("cpu mismatch: {0}")]
    Mismatch(String),
}

impl CpuinfoError {
    /// The errno an RPC client reads in `cr_errno`.
    pub fn errno(&self) -> i32 {
        match self {
            CpuinfoError::Image { source, .. } => crate::errno::image(source),
            CpuinfoError::Bad { .. } => libc::EINVAL,
            CpuinfoError::Mismatch(_) => libc::EOPNOTSUPP,
        }
    }
}

/// This CPU, as CRIU describes it in `cpuinfo.img`: CPUID's words as `compel_arch` reads them,
/// mapped to the image (CRIU's vendor numbers, Linux's own word, the user xsave components).
pub fn collect() -> CpuinfoX86Entry {
    let id = compel_arch::CpuId::read();
    let vendor_id = match &id.vendor {
        b"GenuineIntel" => 1,
        b"AuthenticAMD" | b"HygonGenuine" => 2,
        _ => 0,
    };
    let (family, sig) = (id.family, id.signature);
    let mut cap = [0u32; NCAPINTS_V2];
    cap.copy_from_slice(&id.words[..NCAPINTS_V2]);
    cap[W_C000_0001_EDX] = 0;
    // Linux's own word: cpuid (bit 25) and nopl (bit 20) always on x86_64; rep_good (bit 16)
    // as the kernel's early vendor setup decides it.
    cap[W_LNX_1] |= 1 << 25 | 1 << 20;
    let rep_good = match vendor_id {
        1 => family == 6,
        2 => {
            family >= 0x10 || (family == 0xf && ((0x0f48..0x0f50).contains(&sig) || sig >= 0x0f58))
        }
        _ => false,
    };
    if rep_good {
        cap[W_LNX_1] |= 1 << 16;
    }
    if vendor_id == 2 {
        cap[W_1_EDX] &= !(1 << 31);
    }
    // The xsave state: what the CPU supports of the user components, and the frame sizes.
    let ecx1 = id.words[W_1_ECX];
    let xsave = ecx1 & (1 << 26) != 0 && id.max_leaf >= 0xd;
    let (xfeatures_mask, xsave_size, xsave_size_max) = if xsave {
        let [a, b, c, d] = compel_arch::cpuid(0xd, 0);
        let mut m = (u64::from(d) << 32 | u64::from(a)) & XFEATURE_MASK_USER;
        // Components whose CPUID feature is off are off.
        let avx = ecx1 & (1 << 28) != 0;
        let mpx = cap[W_7_0_EBX] & (1 << 14) != 0;
        let avx512 = cap[W_7_0_EBX] & (1 << 16) != 0;
        let pku = cap[W_7_0_ECX] & (1 << 3) != 0;
        for (on, bits) in [
            (avx, 1u64 << 2),
            (mpx, 0b11 << 3),
            (avx512, 0b111 << 5),
            (pku, 1 << 9),
        ] {
            if !on {
                m &= !bits;
            }
        }
        (m, b, c)
    } else {
        (0, 0, 0)
    };
    let brand = id.brand.unwrap_or([0; 48]);
    let model_id = String::from_utf8_lossy(&brand)
        .trim_matches(|c: char| c == '\0' || c.is_whitespace())
        .to_string();
    CpuinfoX86Entry {
        vendor_id,
        cpu_family: family,
        model: id.model,
        stepping: id.stepping,
        capability_ver: CAPABILITY_VER,
        capability: cap.to_vec(),
        model_id: (!model_id.is_empty()).then_some(model_id),
        xfeatures_mask: Some(xfeatures_mask),
        xsave_size: Some(xsave_size),
        xsave_size_max: Some(xsave_size_max),
    }
}

/// Writes this CPU's description into `dir/cpuinfo.img`.
///
/// # Errors
/// [`CpuinfoError::Image`] when the file cannot be written.
pub fn dump(dir: &Path) -> Result<(), CpuinfoError> {
    let file = dir.join(FILE);
    let e = CpuinfoEntry {
        x86_entry: vec![collect()],
        ..Default::default()
    };
    criu_images::image::write_all(&file, magic::CPUINFO, [&e])
        .map_err(|source| CpuinfoError::Image { file, source })
}

/// The checks `cpuinfo check` makes for `--cpu-cap` `cap`: all of them when it names none.
pub fn check_cap(cap: CpuCap) -> CpuCap {
    if cap.0 & CpuCap::ALL == 0 {
        CpuCap(CpuCap::ALL)
    } else {
        cap
    }
}

/// Reads `dir/cpuinfo.img` and checks it against this CPU as `cap` says.
///
/// # Errors
/// [`CpuinfoError::Image`] for an unreadable image, [`CpuinfoError::Bad`] for one without a
/// usable x86 entry, [`CpuinfoError::Mismatch`] naming what this CPU lacks.
pub fn check(dir: &Path, cap: CpuCap) -> Result<(), CpuinfoError> {
    let file = dir.join(FILE);
    let e: CpuinfoEntry =
        criu_images::image::read_single(&file, magic::CPUINFO).map_err(|source| {
            CpuinfoError::Image {
                file: file.clone(),
                source,
            }
        })?;
    let [img] = &e.x86_entry[..] else {
        return Err(CpuinfoError::Bad {
            file,
            what: format!("{} x86 entries, expected 1", e.x86_entry.len()),
        });
    };
    compare(img, &collect(), cap).map_err(|m| match m {
        Compare::Bad(what) => CpuinfoError::Bad { file, what },
        Compare::Mismatch(what) => CpuinfoError::Mismatch(what),
    })
}

/// Why [`compare`] failed: the image is malformed, or the CPUs differ.
#[derive(Debug)]
pub enum Compare {
    /// The image's entry cannot be understood.
    Bad(String),
    /// What the host lacks.
    Mismatch(String),
}

/// The image's capability words as a full v2 array (v1 images get the host's later words).
fn words(img: &CpuinfoX86Entry, host: &[u32]) -> Result<[u32; NCAPINTS_V2], Compare> {
    let n = match img.capability_ver {
        1 => NCAPINTS_V1,
        2 => NCAPINTS_V2,
        v => return Err(Compare::Bad(format!("unknown capability version {v}"))),
    };
    if img.capability.len() != n {
        return Err(Compare::Bad(format!(
            "{} capability words for version {}, expected {n}",
            img.capability.len(),
            img.capability_ver
        )));
    }
    let mut w = [0u32; NCAPINTS_V2];
    w[..n].copy_from_slice(&img.capability);
    for (i, slot) in w.iter_mut().enumerate().skip(n) {
        *slot = host.get(i).copied().unwrap_or(0);
    }
    Ok(w)
}

/// Checks the image's CPU `img` against `host` as `cap` says (see the module documentation).
///
/// # Errors
/// [`Compare::Bad`] for an image entry that cannot be understood, [`Compare::Mismatch`] naming
/// the first difference that matters.
pub fn compare(img: &CpuinfoX86Entry, host: &CpuinfoX86Entry, cap: CpuCap) -> Result<(), Compare> {
    let hw = words(host, &[])?;
    let iw = words(img, &hw)?;
    let bit = |w: &[u32; NCAPINTS_V2], (i, b): (usize, u32)| w[i] & (1 << b) != 0;
    if cap.0 & CpuCap::FPU != 0 {
        for (i, b, name) in FPU_BITS {
            if bit(&iw, (i, b)) && !bit(&hw, (i, b)) {
                return Err(Compare::Mismatch(format!(
                    "FPU feature {name} required by the image is not supported here"
                )));
            }
        }
        let im = img.xfeatures_mask.unwrap_or(0);
        let hm = host.xfeatures_mask.unwrap_or(0);
        if im & !hm != 0 {
            return Err(Compare::Mismatch(format!(
                "xsave features {:#x} of the image are not supported here",
                im & !hm
            )));
        }
        // Old images without sizes are not compared on them.
        for (what, i, h) in [
            ("xsave size", img.xsave_size, host.xsave_size),
            ("xsave max size", img.xsave_size_max, host.xsave_size_max),
        ] {
            if let (Some(i), Some(h)) = (i, h)
                && i != h
            {
                return Err(Compare::Mismatch(format!(
                    "{what} {i} in the image, {h} here"
                )));
            }
        }
    }
    if cap.0 & CpuCap::INS != 0 {
        for (k, m) in INS_MASK.iter().enumerate() {
            let missing = iw[k] & m & !(hw[k] & m);
            if missing != 0 {
                return Err(Compare::Mismatch(format!(
                    "instruction features {missing:#x} of capability word {k} are not supported here"
                )));
            }
        }
    }
    if cap.0 & CpuCap::CPU != 0 && iw != hw {
        let k = (0..NCAPINTS_V2).find(|&k| iw[k] != hw[k]).unwrap_or(0);
        return Err(Compare::Mismatch(format!(
            "capability word {k} differs: {:#x} in the image, {:#x} here",
            iw[k], hw[k]
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_cpu_matches_itself_and_misses_what_it_lacks() {
        let me = collect();
        assert_eq!(me.capability.len(), NCAPINTS_V2);
        assert!(me.capability[W_1_EDX] & 1 != 0, "no fpu bit");
        compare(&me, &me, CpuCap(CpuCap::ALL)).unwrap();
        // A CPU with an instruction this one lacks (every bit of the instruction mask).
        let mut more = me.clone();
        for (w, m) in more.capability.iter_mut().zip(INS_MASK) {
            *w |= m;
        }
        if more.capability != me.capability {
            assert!(matches!(
                compare(&more, &me, CpuCap(CpuCap::INS)),
                Err(Compare::Mismatch(_))
            ));
            // fpu alone does not look at instructions beyond the FPU's.
            let mut fpu_only = more.clone();
            fpu_only.capability[W_1_ECX] = me.capability[W_1_ECX];
            fpu_only.capability[W_1_EDX] = me.capability[W_1_EDX];
            fpu_only.capability[W_D_1_EAX] = me.capability[W_D_1_EAX];
            compare(&fpu_only, &me, CpuCap(CpuCap::FPU)).unwrap();
        }
        // A bigger xsave frame.
        let mut big = me.clone();
        big.xsave_size = big.xsave_size.map(|s| s + 64);
        assert!(matches!(
            compare(&big, &me, CpuCap(CpuCap::FPU)),
            Err(Compare::Mismatch(_))
        ));
        compare(&big, &me, CpuCap(CpuCap::INS)).unwrap();
        // Malformed: a word too few, an unknown version.
        let mut short = me.clone();
        short.capability.pop();
        assert!(matches!(
            compare(&short, &me, CpuCap(CpuCap::NONE)),
            Err(Compare::Bad(_))
        ));
        let mut v9 = me.clone();
        v9.capability_ver = 9;
        assert!(matches!(
            compare(&v9, &me, CpuCap(CpuCap::NONE)),
            Err(Compare::Bad(_))
        ));
    }
}
