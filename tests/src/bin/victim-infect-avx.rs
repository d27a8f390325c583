//! Victim: holds known values in every AVX-512 register (zmm0..31, k1..k7) and non-default
//! MXCSR and x87 control words *across a blocking `read`*, so that an infection that happens
//! while it sleeps in the kernel must preserve the whole xsave state for it to notice nothing.
//!
//! Prints `ready PID`, then loops: loads the registers, calls `read(0, buf, 64)` from assembly
//! (no code runs between the load and the syscall or between the syscall and the store), stores
//! the registers and compares. Prints `ok N` (N = bytes read) or `mismatch REG` (and exits 1) per
//! read; exits 0 at end of input. Exits 2 if the CPU lacks AVX-512F.

use std::io::Write;

use compel_criu_tests::{avx_kmask, avx_pattern};

/// MXCSR with all exceptions masked and rounding toward negative infinity (default: 0x1f80).
const MXCSR: u32 = 0x3f80;
/// x87 control word with 53-bit precision (default: 0x037f).
const FCW: u16 = 0x027f;

#[target_feature(enable = "avx512f")]
unsafe fn read_holding(
    src: &[u8; 32 * 64],
    dst: &mut [u8; 32 * 64],
    kin: &[u16; 8],
    kout: &mut [u16; 8],
    ctl: &mut [u32; 4],
    buf: &mut [u8; 64],
) -> isize {
    let ret: isize;
    // SAFETY: every pointer is valid for the bytes accessed; every vector and mask register
    // written is declared clobbered, as are the registers `syscall` clobbers (rcx, r11); the
    // control words are put back to their defaults before the block ends.
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
            "ldmxcsr [{ctl}]",
            "fldcw [{ctl} + 4]",
            "syscall",
            "stmxcsr [{ctl} + 8]",
            "fnstcw [{ctl} + 12]",
            "mov dword ptr [{ctl}], 0x1f80",
            "ldmxcsr [{ctl}]",
            "mov word ptr [{ctl} + 4], 0x037f",
            "fldcw [{ctl} + 4]",
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
            ctl = in(reg) ctl.as_mut_ptr(),
            inlateout("rax") 0isize => ret,
            in("rdi") 0usize,
            in("rsi") buf.as_mut_ptr(),
            in("rdx") buf.len(),
            out("rcx") _,
            out("r11") _,
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
    ret
}

fn main() {
    if !std::is_x86_feature_detected!("avx512f") {
        println!("no avx512f");
        std::process::exit(2);
    }
    let mut src = [0u8; 32 * 64];
    for (i, b) in src.iter_mut().enumerate() {
        *b = avx_pattern(i / 64, i % 64);
    }
    let mut kin = [0u16; 8];
    for (k, v) in kin.iter_mut().enumerate().skip(1) {
        *v = avx_kmask(k);
    }
    println!("ready {}", std::process::id());
    std::io::stdout().flush().ok();
    loop {
        let mut dst = [0u8; 32 * 64];
        let mut kout = [0u16; 8];
        let mut ctl = [MXCSR, u32::from(FCW), 0, 0];
        let mut buf = [0u8; 64];
        // SAFETY: the CPU has AVX-512F (checked above); all buffers are live locals.
        let n = unsafe { read_holding(&src, &mut dst, &kin, &mut kout, &mut ctl, &mut buf) };
        let mut bad = None;
        for r in 0..32 {
            if src[r * 64..r * 64 + 64] != dst[r * 64..r * 64 + 64] {
                bad = Some(format!("zmm{r}"));
                break;
            }
        }
        if bad.is_none() {
            bad = (1..8).find(|&k| kin[k] != kout[k]).map(|k| format!("k{k}"));
        }
        if bad.is_none() && ctl[2] != MXCSR {
            bad = Some(format!("mxcsr {:#x}", ctl[2]));
        }
        if bad.is_none() && ctl[3] as u16 != FCW {
            bad = Some(format!("fcw {:#x}", ctl[3] as u16));
        }
        if let Some(what) = bad {
            println!("mismatch {what}");
            std::io::stdout().flush().ok();
            std::process::exit(1);
        }
        if n == 0 {
            println!("eof");
            std::process::exit(0);
        }
        if n < 0 {
            println!("error {}", -n);
            std::process::exit(3);
        }
        println!("ok {n}");
        std::io::stdout().flush().ok();
    }
}
