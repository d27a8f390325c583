//! The x86-64 registers between CRIU's images and the machine, both ways, in one place: the
//! general registers as `user_x86_regs_entry` and [`UserRegs`], the FPU/SSE legacy area and
//! the xsave components as `user_x86_fpregs_entry` and the xsave area (the dump reads a
//! [`Xsave`], the restore builds an [`FpuPlan`] for the restorer).

use compel::{UserRegs, Xsave};
use compel_arch::{
    XFEATURE_AVX512_HI16_ZMM, XFEATURE_AVX512_OPMASK, XFEATURE_AVX512_ZMM_HI256, XFEATURE_YMM,
};
use criu_images::pb::{UserX86FpregsEntry, UserX86RegsEntry, UserX86RegsMode, UserX86XsaveEntry};

use crate::restore::plan::FpuPlan;

/// General registers as `user_x86_regs_entry`.
pub(crate) fn gpregs_entry(r: &UserRegs) -> UserX86RegsEntry {
    UserX86RegsEntry {
        r15: r.r15,
        r14: r.r14,
        r13: r.r13,
        r12: r.r12,
        bp: r.rbp,
        bx: r.rbx,
        r11: r.r11,
        r10: r.r10,
        r9: r.r9,
        r8: r.r8,
        ax: r.rax,
        cx: r.rcx,
        dx: r.rdx,
        si: r.rsi,
        di: r.rdi,
        orig_ax: r.orig_rax,
        ip: r.rip,
        cs: r.cs,
        flags: r.eflags,
        sp: r.rsp,
        ss: r.ss,
        fs_base: r.fs_base,
        gs_base: r.gs_base,
        ds: r.ds,
        es: r.es,
        fs: r.fs,
        gs: r.gs,
        mode: Some(UserX86RegsMode::Native as i32),
    }
}

/// `user_x86_regs_entry` as [`UserRegs`] (the caller checks the mode).
pub(crate) fn user_regs(g: &UserX86RegsEntry) -> UserRegs {
    UserRegs {
        r15: g.r15,
        r14: g.r14,
        r13: g.r13,
        r12: g.r12,
        rbp: g.bp,
        rbx: g.bx,
        r11: g.r11,
        r10: g.r10,
        r9: g.r9,
        r8: g.r8,
        rax: g.ax,
        rcx: g.cx,
        rdx: g.dx,
        rsi: g.si,
        rdi: g.di,
        orig_rax: g.orig_ax,
        rip: g.ip,
        cs: g.cs,
        eflags: g.flags,
        rsp: g.sp,
        ss: g.ss,
        fs_base: g.fs_base,
        gs_base: g.gs_base,
        ds: g.ds,
        es: g.es,
        fs: g.fs,
        gs: g.gs,
    }
}

/// The FPU/SSE legacy area and the xsave components, as CRIU's `user_x86_fpregs_entry`.
pub(crate) fn fpregs_entry(x: &Xsave) -> UserX86FpregsEntry {
    fpregs_from(x.bytes(), x.xstate_bv(), |n| x.component(n))
}

/// [`fpregs_entry`] of an xsave area `b` whose component `n` is `comp(n)`.
fn fpregs_from<'a>(
    b: &'a [u8],
    xstate_bv: u64,
    comp: impl Fn(u32) -> Option<&'a [u8]>,
) -> UserX86FpregsEntry {
    let legacy = |o: usize, n: usize| b.get(o..o + n).map(u32s).unwrap_or_else(|| vec![0; n / 4]);
    let comp64 = |n: u32| comp(n).map(u64s).unwrap_or_default();
    let xsave = UserX86XsaveEntry {
        xstate_bv,
        ymmh_space: comp(XFEATURE_YMM).map(u32s).unwrap_or_default(),
        bndreg_state: Vec::new(),
        bndcsr_state: Vec::new(),
        opmask_reg: comp64(XFEATURE_AVX512_OPMASK),
        zmm_upper: comp64(XFEATURE_AVX512_ZMM_HI256),
        hi16_zmm: comp64(XFEATURE_AVX512_HI16_ZMM),
        pkru: comp(9).map(u32s).unwrap_or_default(),
        cet: None,
    };
    UserX86FpregsEntry {
        cwd: le16(b, 0),
        swd: le16(b, 2),
        twd: le16(b, 4),
        fop: le16(b, 6),
        rip: le64(b, 8),
        rdp: le64(b, 16),
        mxcsr: le32(b, 24),
        mxcsr_mask: le32(b, 28),
        st_space: legacy(32, 128),
        xmm_space: legacy(160, 256),
        padding: Vec::new(),
        xsave: (b.len() > 512).then_some(xsave),
    }
}

/// `user_x86_fpregs_entry` as the legacy area and the components the restorer loads.
///
/// # Errors
/// What is wrong when the x87/SSE arrays are larger than the legacy area holds.
pub(crate) fn fpu_plan(f: &UserX86FpregsEntry) -> Result<FpuPlan, &'static str> {
    let mut legacy = vec![0u8; 512];
    legacy[0..2].copy_from_slice(&(f.cwd as u16).to_le_bytes());
    legacy[2..4].copy_from_slice(&(f.swd as u16).to_le_bytes());
    legacy[4..6].copy_from_slice(&(f.twd as u16).to_le_bytes());
    legacy[6..8].copy_from_slice(&(f.fop as u16).to_le_bytes());
    legacy[8..16].copy_from_slice(&f.rip.to_le_bytes());
    legacy[16..24].copy_from_slice(&f.rdp.to_le_bytes());
    legacy[24..28].copy_from_slice(&f.mxcsr.to_le_bytes());
    legacy[28..32].copy_from_slice(&f.mxcsr_mask.to_le_bytes());
    if f.st_space.len() > 32 || f.xmm_space.len() > 64 {
        return Err("oversized x87/SSE register arrays");
    }
    let st = words32(&f.st_space);
    legacy[32..32 + st.len()].copy_from_slice(&st);
    let xmm = words32(&f.xmm_space);
    legacy[160..160 + xmm.len()].copy_from_slice(&xmm);
    let mut fpu = FpuPlan {
        legacy,
        xstate_bv: 0b11,
        components: Vec::new(),
    };
    if let Some(x) = &f.xsave {
        fpu.xstate_bv = x.xstate_bv;
        let comps: [(u32, Vec<u8>); 7] = [
            (2, words32(&x.ymmh_space)),
            (3, words64(&x.bndreg_state)),
            (4, words64(&x.bndcsr_state)),
            (5, words64(&x.opmask_reg)),
            (6, words64(&x.zmm_upper)),
            (7, words64(&x.hi16_zmm)),
            (9, words32(&x.pkru)),
        ];
        fpu.components = comps.into_iter().filter(|(_, b)| !b.is_empty()).collect();
    }
    Ok(fpu)
}

/// Packs little-endian `u32` words.
fn words32(w: &[u32]) -> Vec<u8> {
    w.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Packs little-endian `u64` words.
fn words64(w: &[u64]) -> Vec<u8> {
    w.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn u32s(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap_or([0; 4])))
        .collect()
}

fn u64s(b: &[u8]) -> Vec<u64> {
    b.chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect()
}

fn le16(b: &[u8], o: usize) -> u32 {
    b.get(o..o + 2)
        .map(|s| u32::from(u16::from_le_bytes([s[0], s[1]])))
        .unwrap_or(0)
}

fn le32(b: &[u8], o: usize) -> u32 {
    b.get(o..o + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .unwrap_or(0)
}

fn le64(b: &[u8], o: usize) -> u64 {
    b.get(o..o + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn general_registers_round_trip() {
        let mut r = UserRegs::default();
        // A distinct value in every field, so that two swapped fields cannot pass.
        let fields: [&mut u64; 27] = [
            &mut r.r15,
            &mut r.r14,
            &mut r.r13,
            &mut r.r12,
            &mut r.rbp,
            &mut r.rbx,
            &mut r.r11,
            &mut r.r10,
            &mut r.r9,
            &mut r.r8,
            &mut r.rax,
            &mut r.rcx,
            &mut r.rdx,
            &mut r.rsi,
            &mut r.rdi,
            &mut r.orig_rax,
            &mut r.rip,
            &mut r.cs,
            &mut r.eflags,
            &mut r.rsp,
            &mut r.ss,
            &mut r.fs_base,
            &mut r.gs_base,
            &mut r.ds,
            &mut r.es,
            &mut r.fs,
            &mut r.gs,
        ];
        for (i, f) in fields.into_iter().enumerate() {
            *f = 0x1111_0000_0000_0000 + i as u64;
        }
        let e = gpregs_entry(&r);
        assert_eq!(e.mode, Some(UserX86RegsMode::Native as i32));
        assert_eq!((e.ax, e.ip, e.sp), (r.rax, r.rip, r.rsp));
        assert_eq!(user_regs(&e), r);
    }

    #[test]
    fn fpu_state_round_trips_through_the_image_entry() {
        // A legacy area and an xsave header of distinct bytes, with AVX, AVX-512 and PKRU
        // components.
        let area: Vec<u8> = (0..576u32).map(|i| (i * 7 + 3) as u8).collect();
        let comps: Vec<(u32, Vec<u8>)> = [(2u32, 256usize), (5, 64), (6, 512), (7, 1024), (9, 8)]
            .into_iter()
            .map(|(n, len)| (n, (0..len).map(|i| (i as u32 * 13 + n) as u8).collect()))
            .collect();
        let bv = 0b10_1110_0111;
        let e = fpregs_from(&area, bv, |n| {
            comps.iter().find(|c| c.0 == n).map(|c| c.1.as_slice())
        });
        let plan = fpu_plan(&e).expect("plan");
        // The image carries the legacy area up to the end of the xmm registers (416 bytes); the
        // rest of it is reserved and comes back as zeros.
        assert_eq!(plan.legacy[..416], area[..416]);
        assert!(plan.legacy[416..].iter().all(|&b| b == 0));
        assert_eq!(plan.xstate_bv, bv);
        assert_eq!(plan.components, comps);
        // Without an xsave part (a 512-byte FXSAVE area): x87 and SSE only.
        let e = fpregs_from(&area[..512], 0, |_| None);
        let plan = fpu_plan(&e).expect("plan");
        assert_eq!(plan.legacy[..416], area[..416]);
        assert_eq!((plan.xstate_bv, plan.components.len()), (0b11, 0));
    }

    #[test]
    fn oversized_legacy_arrays_are_refused() {
        let mut e = fpregs_from(&[0u8; 512], 0, |_| None);
        e.st_space.push(0);
        assert!(fpu_plan(&e).is_err());
    }
}
