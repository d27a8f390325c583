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

use compel_criu_tests::{asm_holding_avx512, avx_kmasks, avx_mismatch, avx_source};

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
    // written is declared clobbered (by the macro); FLAG is a valid u32.
    unsafe {
        asm_holding_avx512!(
            src = src.as_ptr(),
            dst = dst.as_mut_ptr(),
            kin = kin.as_ptr(),
            kout = kout.as_mut_ptr(),
            code = [
                "2:",
                "pause",
                "cmp dword ptr [{flag}], 0",
                "jne 3f",
                "dec {budget}",
                "jnz 2b",
                "3:",
            ],
            operands = [
                flag = in(reg) FLAG.as_ptr(),
                budget = inout(reg) budget,
            ],
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
    let src = avx_source(nregs, width);
    let kin = avx_kmasks();
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
    let prefix = if avx512 { "zmm" } else { "ymm" };
    let masks = avx512.then_some((&kin, &kout));
    if let Some(what) = avx_mismatch(prefix, nregs, width, &src, &dst, masks) {
        println!("mismatch {what}");
        std::process::exit(1);
    }
    println!("ok");
}
