//! Victim: holds known values in the vector registers and checks them itself.
//!
//! Loads ymm0..15 (AVX) or zmm0..31 and k1..k7 (AVX-512F, when the CPU has it) with
//! [`compel_criu_tests::avx_pattern`] values, prints `ready PID FLAG_ADDR MODE` (MODE `avx512` or
//! `avx`), and spins in assembly without any call or syscall until the 32-bit word at FLAG_ADDR
//! becomes non-zero (a tester writes it into this process). Then it stores the registers and
//! compares: prints `ok` and exits 0, or `mismatch REG` for the first differing register (`k3`,
//! `zmm7`, ...) and exits 1. Exits 6 (`timeout`) if nobody sets the flag within about 30 s, 2 if
//! the CPU has no AVX.

use std::io::Write;
use std::sync::atomic::AtomicU32;

use compel_criu_tests::{avx_kmask, avx_pattern};

static FLAG: AtomicU32 = AtomicU32::new(0);

const BUDGET: u64 = 1 << 28;

#[target_feature(enable = "avx512f")]
unsafe fn spin_avx512(
    src: &[u8; 32 * 64],
    dst: &mut [u8; 32 * 64],
    kin: &[u16; 8],
    kout: &mut [u16; 8],
) -> u64 {
    let mut budget = BUDGET;
    // SAFETY: src/dst/kin/kout are valid for the sizes accessed; every vector and mask register
    // written is declared clobbered; FLAG is a valid u32.
    unsafe {
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
            "2:",
            "pause",
            "cmp dword ptr [{flag}], 0",
            "jne 3f",
            "dec {budget}",
            "jnz 2b",
            "3:",
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
            src = in(reg) src.as_ptr(),
            dst = in(reg) dst.as_mut_ptr(),
            kin = in(reg) kin.as_ptr(),
            kout = in(reg) kout.as_mut_ptr(),
            flag = in(reg) FLAG.as_ptr(),
            budget = inout(reg) budget,
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
        );
    }
    budget
}

#[target_feature(enable = "avx")]
unsafe fn spin_avx(src: &[u8; 32 * 64], dst: &mut [u8; 32 * 64]) -> u64 {
    let mut budget = BUDGET;
    // SAFETY: src/dst are valid for the 16 * 32 bytes accessed; every ymm register is declared
    // clobbered; FLAG is a valid u32.
    unsafe {
        core::arch::asm!(
            "vmovdqu ymm0, [{src} + 0]",
            "vmovdqu ymm1, [{src} + 32]",
            "vmovdqu ymm2, [{src} + 64]",
            "vmovdqu ymm3, [{src} + 96]",
            "vmovdqu ymm4, [{src} + 128]",
            "vmovdqu ymm5, [{src} + 160]",
            "vmovdqu ymm6, [{src} + 192]",
            "vmovdqu ymm7, [{src} + 224]",
            "vmovdqu ymm8, [{src} + 256]",
            "vmovdqu ymm9, [{src} + 288]",
            "vmovdqu ymm10, [{src} + 320]",
            "vmovdqu ymm11, [{src} + 352]",
            "vmovdqu ymm12, [{src} + 384]",
            "vmovdqu ymm13, [{src} + 416]",
            "vmovdqu ymm14, [{src} + 448]",
            "vmovdqu ymm15, [{src} + 480]",
            "2:",
            "pause",
            "cmp dword ptr [{flag}], 0",
            "jne 3f",
            "dec {budget}",
            "jnz 2b",
            "3:",
            "vmovdqu [{dst} + 0], ymm0",
            "vmovdqu [{dst} + 32], ymm1",
            "vmovdqu [{dst} + 64], ymm2",
            "vmovdqu [{dst} + 96], ymm3",
            "vmovdqu [{dst} + 128], ymm4",
            "vmovdqu [{dst} + 160], ymm5",
            "vmovdqu [{dst} + 192], ymm6",
            "vmovdqu [{dst} + 224], ymm7",
            "vmovdqu [{dst} + 256], ymm8",
            "vmovdqu [{dst} + 288], ymm9",
            "vmovdqu [{dst} + 320], ymm10",
            "vmovdqu [{dst} + 352], ymm11",
            "vmovdqu [{dst} + 384], ymm12",
            "vmovdqu [{dst} + 416], ymm13",
            "vmovdqu [{dst} + 448], ymm14",
            "vmovdqu [{dst} + 480], ymm15",
            src = in(reg) src.as_ptr(),
            dst = in(reg) dst.as_mut_ptr(),
            flag = in(reg) FLAG.as_ptr(),
            budget = inout(reg) budget,
            out("ymm0") _,
            out("ymm1") _,
            out("ymm2") _,
            out("ymm3") _,
            out("ymm4") _,
            out("ymm5") _,
            out("ymm6") _,
            out("ymm7") _,
            out("ymm8") _,
            out("ymm9") _,
            out("ymm10") _,
            out("ymm11") _,
            out("ymm12") _,
            out("ymm13") _,
            out("ymm14") _,
            out("ymm15") _,
            options(nostack),
        );
    }
    budget
}

fn main() {
    let avx512 = compel_arch::cpu_has_avx512f();
    if !compel_arch::cpu_has_avx() {
        println!("no avx");
        std::process::exit(2);
    }
    let (width, nregs) = if avx512 { (64, 32) } else { (32, 16) };
    let mut src = [0u8; 32 * 64];
    for r in 0..nregs {
        for b in 0..width {
            src[r * width + b] = avx_pattern(r, b);
        }
    }
    let kin: [u16; 8] = std::array::from_fn(avx_kmask);
    let mut dst = [0u8; 32 * 64];
    let mut kout = [0u16; 8];
    let mut out = std::io::stdout();
    writeln!(
        out,
        "ready {} {:x} {}",
        std::process::id(),
        FLAG.as_ptr() as usize,
        if avx512 { "avx512" } else { "avx" }
    )
    .unwrap();
    out.flush().unwrap();
    let left = if avx512 {
        // SAFETY: the CPU and OS support AVX-512F (checked above).
        unsafe { spin_avx512(&src, &mut dst, &kin, &mut kout) }
    } else {
        // SAFETY: the CPU and OS support AVX (checked above).
        unsafe { spin_avx(&src, &mut dst) }
    };
    if left == 0 {
        println!("timeout");
        std::process::exit(6);
    }
    for r in 0..nregs {
        if src[r * width..(r + 1) * width] != dst[r * width..(r + 1) * width] {
            println!("mismatch {}{r}", if avx512 { "zmm" } else { "ymm" });
            std::process::exit(1);
        }
    }
    if avx512 {
        for k in 1..8 {
            if kin[k] != kout[k] {
                println!("mismatch k{k}");
                std::process::exit(1);
            }
        }
    }
    println!("ok");
}
