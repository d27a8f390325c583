//! AVX/AVX-512 register patterns shared by the vector-register victims and the tests that check
//! them.

/// The byte that `victim-avx` loads into byte `byte` of vector register `reg` (zmm/ymm).
pub fn avx_pattern(reg: usize, byte: usize) -> u8 {
    ((reg as u8).wrapping_mul(37) ^ (byte as u8).wrapping_mul(11) ^ 0x5a).wrapping_add(reg as u8)
}

/// The value that `victim-avx` loads into opmask register `k` (k1..k7; k0 unused).
pub fn avx_kmask(k: usize) -> u16 {
    0x1111u16.wrapping_mul(k as u16) ^ 0x0f0f
}

/// `core::arch::asm!` that loads zmm0..31 from `src` (32 × 64 bytes) and k1..k7 from `kin`
/// (`[u16; 8]`, entry 0 unused), runs the instructions `code` (string literals) with nothing
/// else in between, then stores the same registers into `dst` and `kout`. Every zmm and k
/// register is declared clobbered; `operands` are the asm operands that `code` needs, named
/// ones first, then explicit registers. Shared by the AVX-512 victims (`victim-avx`,
/// `victim-infect-avx`); use it inside an `unsafe` block of a function with
/// `#[target_feature(enable = "avx512f")]`.
#[macro_export]
macro_rules! asm_holding_avx512 {
    (
        src = $src:expr,
        dst = $dst:expr,
        kin = $kin:expr,
        kout = $kout:expr,
        code = [$($code:literal),* $(,)?],
        operands = [$($operands:tt)*] $(,)?
    ) => {
        core::arch::asm!(
            "vmovdqu64 zmm0, [{src} + 0]",
            "vmovdqu64 zmm1, [{src} + 64]",
            "vmovdqu64 zmm2, [{src} + 128]",
            "vmovdqu64 zmm3, [{src} + 192]",
            "vmovdqu64 zmm4, [{src} + 256]",
            "vmovdqu64 zmm5, [{src} + 320]",
            "vmovdqu64 zmm6, [{src} + 384]",
            "vmovdqu64 zmm7, [{src} + 448]",
            "vmovdqu64 zmm8, [{src} + 512]",
            "vmovdqu64 zmm9, [{src} + 576]",
            "vmovdqu64 zmm10, [{src} + 640]",
            "vmovdqu64 zmm11, [{src} + 704]",
            "vmovdqu64 zmm12, [{src} + 768]",
            "vmovdqu64 zmm13, [{src} + 832]",
            "vmovdqu64 zmm14, [{src} + 896]",
            "vmovdqu64 zmm15, [{src} + 960]",
            "vmovdqu64 zmm16, [{src} + 1024]",
            "vmovdqu64 zmm17, [{src} + 1088]",
            "vmovdqu64 zmm18, [{src} + 1152]",
            "vmovdqu64 zmm19, [{src} + 1216]",
            "vmovdqu64 zmm20, [{src} + 1280]",
            "vmovdqu64 zmm21, [{src} + 1344]",
            "vmovdqu64 zmm22, [{src} + 1408]",
            "vmovdqu64 zmm23, [{src} + 1472]",
            "vmovdqu64 zmm24, [{src} + 1536]",
            "vmovdqu64 zmm25, [{src} + 1600]",
            "vmovdqu64 zmm26, [{src} + 1664]",
            "vmovdqu64 zmm27, [{src} + 1728]",
            "vmovdqu64 zmm28, [{src} + 1792]",
            "vmovdqu64 zmm29, [{src} + 1856]",
            "vmovdqu64 zmm30, [{src} + 1920]",
            "vmovdqu64 zmm31, [{src} + 1984]",
            "kmovw k1, [{kin} + 2]",
            "kmovw k2, [{kin} + 4]",
            "kmovw k3, [{kin} + 6]",
            "kmovw k4, [{kin} + 8]",
            "kmovw k5, [{kin} + 10]",
            "kmovw k6, [{kin} + 12]",
            "kmovw k7, [{kin} + 14]",
            $($code,)*
            "vmovdqu64 [{dst} + 0], zmm0",
            "vmovdqu64 [{dst} + 64], zmm1",
            "vmovdqu64 [{dst} + 128], zmm2",
            "vmovdqu64 [{dst} + 192], zmm3",
            "vmovdqu64 [{dst} + 256], zmm4",
            "vmovdqu64 [{dst} + 320], zmm5",
            "vmovdqu64 [{dst} + 384], zmm6",
            "vmovdqu64 [{dst} + 448], zmm7",
            "vmovdqu64 [{dst} + 512], zmm8",
            "vmovdqu64 [{dst} + 576], zmm9",
            "vmovdqu64 [{dst} + 640], zmm10",
            "vmovdqu64 [{dst} + 704], zmm11",
            "vmovdqu64 [{dst} + 768], zmm12",
            "vmovdqu64 [{dst} + 832], zmm13",
            "vmovdqu64 [{dst} + 896], zmm14",
            "vmovdqu64 [{dst} + 960], zmm15",
            "vmovdqu64 [{dst} + 1024], zmm16",
            "vmovdqu64 [{dst} + 1088], zmm17",
            "vmovdqu64 [{dst} + 1152], zmm18",
            "vmovdqu64 [{dst} + 1216], zmm19",
            "vmovdqu64 [{dst} + 1280], zmm20",
            "vmovdqu64 [{dst} + 1344], zmm21",
            "vmovdqu64 [{dst} + 1408], zmm22",
            "vmovdqu64 [{dst} + 1472], zmm23",
            "vmovdqu64 [{dst} + 1536], zmm24",
            "vmovdqu64 [{dst} + 1600], zmm25",
            "vmovdqu64 [{dst} + 1664], zmm26",
            "vmovdqu64 [{dst} + 1728], zmm27",
            "vmovdqu64 [{dst} + 1792], zmm28",
            "vmovdqu64 [{dst} + 1856], zmm29",
            "vmovdqu64 [{dst} + 1920], zmm30",
            "vmovdqu64 [{dst} + 1984], zmm31",
            "kmovw [{kout} + 2], k1",
            "kmovw [{kout} + 4], k2",
            "kmovw [{kout} + 6], k3",
            "kmovw [{kout} + 8], k4",
            "kmovw [{kout} + 10], k5",
            "kmovw [{kout} + 12], k6",
            "kmovw [{kout} + 14], k7",
            src = in(reg) $src,
            dst = in(reg) $dst,
            kin = in(reg) $kin,
            kout = in(reg) $kout,
            $($operands)*
            out("zmm0") _,
            out("zmm1") _,
            out("zmm2") _,
            out("zmm3") _,
            out("zmm4") _,
            out("zmm5") _,
            out("zmm6") _,
            out("zmm7") _,
            out("zmm8") _,
            out("zmm9") _,
            out("zmm10") _,
            out("zmm11") _,
            out("zmm12") _,
            out("zmm13") _,
            out("zmm14") _,
            out("zmm15") _,
            out("zmm16") _,
            out("zmm17") _,
            out("zmm18") _,
            out("zmm19") _,
            out("zmm20") _,
            out("zmm21") _,
            out("zmm22") _,
            out("zmm23") _,
            out("zmm24") _,
            out("zmm25") _,
            out("zmm26") _,
            out("zmm27") _,
            out("zmm28") _,
            out("zmm29") _,
            out("zmm30") _,
            out("zmm31") _,
            out("k1") _,
            out("k2") _,
            out("k3") _,
            out("k4") _,
            out("k5") _,
            out("k6") _,
            out("k7") _,
            options(nostack),
        )
    };
}

/// The bytes `victim-avx`-style victims load into `nregs` vector registers of `width` bytes
/// ([`avx_pattern`]), register after register, in a buffer sized for 32 zmm registers.
pub fn avx_source(nregs: usize, width: usize) -> [u8; 32 * 64] {
    let mut src = [0u8; 32 * 64];
    for r in 0..nregs {
        for b in 0..width {
            src[r * width + b] = avx_pattern(r, b);
        }
    }
    src
}

/// The opmask values they load ([`avx_kmask`]; entry 0 stands for k0 and is not loaded).
pub fn avx_kmasks() -> [u16; 8] {
    std::array::from_fn(avx_kmask)
}

/// The first vector or opmask register whose stored value differs from what was loaded, named
/// as the victims print it (`zmm7`, `ymm3`, `k2`): `nregs` registers of `width` bytes in
/// `src`/`dst` named `prefix`N, then k1..k7 if `masks` holds the loaded and stored opmasks.
pub fn avx_mismatch(
    prefix: &str,
    nregs: usize,
    width: usize,
    src: &[u8],
    dst: &[u8],
    masks: Option<(&[u16; 8], &[u16; 8])>,
) -> Option<String> {
    if let Some(r) =
        (0..nregs).find(|&r| src[r * width..(r + 1) * width] != dst[r * width..(r + 1) * width])
    {
        return Some(format!("{prefix}{r}"));
    }
    let (kin, kout) = masks?;
    (1..8).find(|&k| kin[k] != kout[k]).map(|k| format!("k{k}"))
}
