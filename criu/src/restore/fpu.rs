//! The saved FPU state as the standard-format xsave area this CPU's kernel expects in a signal
//! frame: the legacy region, the header, and each saved component at the offset CPUID gives.

use compel_arch::{
    XSAVE_HDR_OFFSET, XSAVE_LEGACY_SIZE, xsave_component, xsave_dynamic_features,
    xsave_enabled_features, xsave_size_for,
};

use super::error::RestoreError;
use super::plan::FpuPlan;

/// The area and the feature mask to declare in the frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Xsave {
    /// Standard-format bytes.
    pub bytes: Vec<u8>,
    /// The features the area describes.
    pub xfeatures: u64,
}

/// Lays `fpu` out for this CPU.
///
/// # Errors
/// [`RestoreError::Fpu`] when the image holds state for a component this CPU does not have,
/// or a component's size differs from this CPU's.
pub fn build(fpu: &FpuPlan) -> Result<Xsave, RestoreError> {
    build_checked(fpu, true).map(|(x, _)| x)
}

/// [`build`]; with `strict` false (`--cpu-cap=none`), state for a component this CPU does not
/// have is left out instead of refused, and the component numbers left out are returned.
/// Vector and mask registers are caller-saved, so a task stopped in a system call made through
/// a C library function does not need them; hand-written code that keeps them live across a
/// raw `syscall` would, and so would code that picked instructions of this feature at startup
/// and runs them again.
///
/// # Errors
/// As [`build`], except for components this CPU lacks when not `strict`.
pub fn build_checked(fpu: &FpuPlan, strict: bool) -> Result<(Xsave, Vec<u32>), RestoreError> {
    // The components the kernel enables per process on request (AMX tile data) are left out:
    // the frame must fit the new task's default buffer (see `compel_arch::xsave_frame_extent`).
    let enabled = xsave_enabled_features() & !xsave_dynamic_features();
    let xfeatures = if enabled == 0 { 0b11 } else { enabled };
    let size = xsave_size_for(xfeatures);
    let mut bytes = vec![0u8; size];
    if !fpu.legacy.is_empty() {
        if fpu.legacy.len() != XSAVE_LEGACY_SIZE {
            return Err(RestoreError::Fpu {
                reason: format!("legacy area is {} bytes, not 512", fpu.legacy.len()),
            });
        }
        bytes[..XSAVE_LEGACY_SIZE].copy_from_slice(&fpu.legacy);
    } else {
        // Power-on defaults: x87 control word 0x37f, MXCSR 0x1f80.
        bytes[0..2].copy_from_slice(&0x37fu16.to_le_bytes());
        bytes[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
    }
    let mut bv = (fpu.xstate_bv | 0b11) & xfeatures;
    let mut dropped = Vec::new();
    for (n, data) in &fpu.components {
        let present = xfeatures & (1 << n) != 0;
        let Some((off, len)) = xsave_component(*n).filter(|_| present) else {
            if data.iter().any(|b| *b != 0) && fpu.xstate_bv & (1 << n) != 0 {
                if strict {
                    return Err(RestoreError::Fpu {
                        reason: format!(
                            "the image has state for xsave component {n} ({}), this CPU does \
                             not (--cpu-cap=none leaves it out, if the task does not need it)",
                            component_name(*n)
                        ),
                    });
                }
                dropped.push(*n);
            }
            bv &= !(1 << n);
            continue;
        };
        if data.len() != len {
            return Err(RestoreError::Fpu {
                reason: format!(
                    "xsave component {n} is {} bytes in the image, {len} on this CPU",
                    data.len()
                ),
            });
        }
        bytes[off..off + len].copy_from_slice(data);
    }
    bytes[XSAVE_HDR_OFFSET..XSAVE_HDR_OFFSET + 8].copy_from_slice(&bv.to_le_bytes());
    Ok((Xsave { bytes, xfeatures }, dropped))
}

/// What xsave component `n` holds (Intel SDM vol. 1, 13.1).
pub fn component_name(n: u32) -> &'static str {
    match n {
        2 => "AVX upper halves",
        3 | 4 => "MPX",
        5 => "AVX-512 opmask registers",
        6 => "AVX-512 upper halves of zmm0-15",
        7 => "AVX-512 zmm16-31",
        9 => "protection keys",
        17 | 18 => "AMX tiles",
        _ => "other state",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_and_header_land_in_place() {
        let mut legacy = vec![0u8; 512];
        legacy[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
        legacy[160] = 0x42; // xmm0 low byte
        let x = build(&FpuPlan {
            legacy,
            xstate_bv: 0,
            components: vec![],
        })
        .unwrap();
        assert_eq!(x.bytes[160], 0x42);
        assert!(x.bytes.len() >= 576);
        let bv = u64::from_le_bytes(x.bytes[512..520].try_into().unwrap());
        assert_eq!(bv & 0b11, 0b11);
        assert_eq!(bv & !x.xfeatures, 0);
    }

    #[test]
    fn ymm_goes_to_its_cpuid_offset() {
        let Some((off, len)) = xsave_component(2) else {
            return; // no AVX here: nothing to place
        };
        let x = build(&FpuPlan {
            legacy: vec![0; 512],
            xstate_bv: 0b111,
            components: vec![(2, vec![0x5a; len])],
        })
        .unwrap();
        assert!(x.bytes[off..off + len].iter().all(|b| *b == 0x5a));
        assert!(
            build(&FpuPlan {
                legacy: vec![0; 512],
                xstate_bv: 0b111,
                components: vec![(2, vec![1; len + 1])],
            })
            .is_err()
        );
    }

    #[test]
    fn state_this_cpu_lacks_is_refused_or_left_out() {
        // Component 62 exists on no CPU: its state can never be placed.
        let plan = FpuPlan {
            legacy: vec![0; 512],
            xstate_bv: 0b11 | 1 << 62,
            components: vec![(62, vec![7; 64])],
        };
        let err = build(&plan).unwrap_err().to_string();
        assert!(err.contains("--cpu-cap=none"), "{err}");
        let (x, dropped) = build_checked(&plan, false).unwrap();
        assert_eq!(dropped, vec![62]);
        let bv = u64::from_le_bytes(x.bytes[512..520].try_into().unwrap());
        assert_eq!(bv & 1 << 62, 0);
        // All-zero (init) state is left out either way, without a word.
        let zero = FpuPlan {
            components: vec![(62, vec![0; 64])],
            ..plan
        };
        assert!(build_checked(&zero, true).unwrap().1.is_empty());
    }
}
