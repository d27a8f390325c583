//! Victim: holds AMX tile data (the xsave component the kernel gives a task only on request)
//! and checks it itself.
//!
//! Asks for AMX (`arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA)`; prints `no amx` and exits 2
//! without it), loads tile 0 with a known 16x64-byte pattern, prints `ready PID FLAG_ADDR` and
//! spins without any call or syscall until the 32-bit word at FLAG_ADDR becomes non-zero (a
//! tester writes it). Then it stores tile 0 and prints `ok` (exit 0) or `mismatch` (exit 1).
//! Exits 6 (`timeout`) if nobody sets the flag within about 30 s.

use std::io::Write;
use std::sync::atomic::AtomicU32;

static FLAG: AtomicU32 = AtomicU32::new(0);

const ARCH_REQ_XCOMP_PERM: i32 = 0x1023;
const XFEATURE_XTILEDATA: u64 = 18;
const ROWS: usize = 16;
const COLSB: usize = 64;

fn main() {
    // SAFETY: arch_prctl with an integer argument only changes this process's permissions.
    if unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    } != 0
    {
        println!("no amx");
        std::process::exit(2);
    }
    // Palette 1, tile 0: 16 rows of 64 bytes.
    let mut cfg = [0u8; 64];
    cfg[0] = 1;
    cfg[16..18].copy_from_slice(&(COLSB as u16).to_le_bytes());
    cfg[48] = ROWS as u8;
    let src: Vec<u8> = (0..ROWS * COLSB).map(|i| (i * 7 + 3) as u8).collect();
    let mut dst = vec![0u8; ROWS * COLSB];
    let mut out = std::io::stdout();
    writeln!(
        out,
        "ready {} {:x}",
        std::process::id(),
        FLAG.as_ptr() as usize
    )
    .unwrap();
    out.flush().unwrap();
    let mut budget: u64 = 1 << 28;
    // SAFETY: AMX is granted (above); cfg is a valid 64-byte tile configuration, src/dst hold
    // ROWS rows of COLSB bytes at stride COLSB; FLAG is a valid u32. tilerelease puts the tile
    // state back to its initial state before returning.
    unsafe {
        std::arch::asm!(
            "ldtilecfg [{cfg}]",
            "tileloadd tmm0, [{src} + {stride}*1]",
            "2:",
            "pause",
            "cmp dword ptr [{flag}], 0",
            "jne 3f",
            "dec {budget}",
            "jnz 2b",
            "3:",
            "tilestored [{dst} + {stride}*1], tmm0",
            "tilerelease",
            cfg = in(reg) cfg.as_ptr(),
            src = in(reg) src.as_ptr(),
            dst = in(reg) dst.as_mut_ptr(),
            stride = in(reg) COLSB,
            flag = in(reg) FLAG.as_ptr(),
            budget = inout(reg) budget,
            options(nostack),
        );
    }
    if budget == 0 {
        println!("timeout");
        std::process::exit(6);
    }
    if dst != src {
        println!("mismatch");
        std::process::exit(1);
    }
    println!("ok");
}
