//! Victim: holds known values in every AVX-512 register (zmm0..31, k1..k7) and non-default
//! MXCSR and x87 control words *across a blocking `read`*, so that an infection that happens
//! while it sleeps in the kernel must preserve the whole xsave state for it to notice nothing.
//!
//! Prints `ready PID`, then loops: loads the registers, calls `read(0, buf, 64)` from assembly
//! (no code runs between the load and the syscall or between the syscall and the store), stores
//! the registers and compares. Prints `ok N` (N = bytes read) or `mismatch REG` (and exits 1) per
//! read; exits 0 at end of input. Exits 2 if the CPU lacks AVX-512F.

use std::io::Write;

use compel_criu_tests::{asm_holding_avx512, avx_kmasks, avx_mismatch, avx_source};

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
    // written is declared clobbered (by the macro), as are the registers `syscall` clobbers
    // (rcx, r11); the control words are put back to their defaults before the block ends.
    unsafe {
        asm_holding_avx512!(
            src = src.as_ptr(),
            dst = dst.as_mut_ptr(),
            kin = kin.as_ptr(),
            kout = kout.as_mut_ptr(),
            code = [
                "ldmxcsr [{ctl}]",
                "fldcw [{ctl} + 4]",
                "syscall",
                "stmxcsr [{ctl} + 8]",
                "fnstcw [{ctl} + 12]",
                "mov dword ptr [{ctl}], 0x1f80",
                "ldmxcsr [{ctl}]",
                "mov word ptr [{ctl} + 4], 0x037f",
                "fldcw [{ctl} + 4]",
            ],
            operands = [
                ctl = in(reg) ctl.as_mut_ptr(),
                inlateout("rax") 0isize => ret,
                in("rdi") 0usize,
                in("rsi") buf.as_mut_ptr(),
                in("rdx") buf.len(),
                out("rcx") _,
                out("r11") _,
            ],
        );
    }
    ret
}

fn main() {
    if !std::is_x86_feature_detected!("avx512f") {
        println!("no avx512f");
        std::process::exit(2);
    }
    let src = avx_source(32, 64);
    let kin = avx_kmasks();
    println!("ready {}", std::process::id());
    std::io::stdout().flush().ok();
    loop {
        let mut dst = [0u8; 32 * 64];
        let mut kout = [0u16; 8];
        let mut ctl = [MXCSR, u32::from(FCW), 0, 0];
        let mut buf = [0u8; 64];
        // SAFETY: the CPU has AVX-512F (checked above); all buffers are live locals.
        let n = unsafe { read_holding(&src, &mut dst, &kin, &mut kout, &mut ctl, &mut buf) };
        let mut bad = avx_mismatch("zmm", 32, 64, &src, &dst, Some((&kin, &kout)));
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
