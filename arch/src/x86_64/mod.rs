//! x86_64: registers, xsave layout facts, syscall numbers, injected stubs and raw syscalls.
//!
//! Every item here has a twin with the same name in each other architecture's module (aarch64 is
//! planned), so that callers never need a `cfg(target_arch)`.

mod batch;
mod cpu;
#[cfg(feature = "decode")]
mod decode;
mod jump;
mod regs;
mod sigframe;
mod syscall;
mod syscall_table;
mod xsave;

pub use batch::{BATCH_ENTRY_WORDS, SYSCALL_BATCH_STUB, SYSCALL_BATCH_TRAP};
pub use cpu::{CpuId, NCAPINTS, cap_word, cpuid};
#[cfg(feature = "decode")]
pub use decode::{first_syscall_insn, is_syscall_insn};
pub use jump::{CloneArgs, call_on_stack, clone3_on_new_stack};
pub use regs::{FpRegs, RESTART_SYSCALL_NR, UserRegs};
pub use sigframe::*;
pub use syscall::{syscall0, syscall1, syscall2, syscall3, syscall4, syscall5, syscall6};
pub use syscall_table::{SYSCALLS, nr};
pub use xsave::{
    XFEATURE_AVX512_HI16_ZMM, XFEATURE_AVX512_OPMASK, XFEATURE_AVX512_ZMM_HI256, XFEATURE_FP,
    XFEATURE_SSE, XFEATURE_YMM, XSAVE_HDR_OFFSET, XSAVE_HDR_SIZE, XSAVE_LEGACY_SIZE,
    XSAVE_MAX_SIZE, XSTATE_BV_OFFSET, cpu_has_avx, cpu_has_avx512f, xsave_component,
    xsave_dynamic_features, xsave_enabled_features, xsave_frame_extent, xsave_size, xsave_size_for,
};

/// The name of this architecture as CRIU's images spell it.
pub const ARCH_NAME: &str = "x86_64";

/// The machine code of the instruction that enters the kernel (`syscall`).
pub const SYSCALL_INSN: [u8; 2] = [0x0f, 0x05];

/// The machine code of a software breakpoint (`int3`): traps with `SIGTRAP`, and the reported
/// instruction pointer is the address just after it.
pub const BREAKPOINT_INSN: [u8; 1] = [0xcc];

/// An injectable stub: `syscall; int3`. Loaded with the syscall's registers, the task runs the
/// syscall and then traps, so a tracer regains control right after the syscall returns.
pub const SYSCALL_TRAP_STUB: [u8; 3] = [0x0f, 0x05, 0xcc];

/// How far the kernel moves the instruction pointer back to restart an interrupted syscall (the
/// length of [`SYSCALL_INSN`]).
pub const SYSCALL_INSN_LEN: u64 = SYSCALL_INSN.len() as u64;

/// The size of the red zone below the stack pointer that leaf code may use without moving it:
/// injected code must not touch these bytes.
pub const RED_ZONE: u64 = 128;

/// The ELF machine number (`e_machine`) of this architecture's executables.
pub const ELF_MACHINE: u16 = 62; // EM_X86_64

/// Looks up a system call's number by its kernel name (e.g. `"getpid"` → 39).
pub fn syscall_number(name: &str) -> Option<usize> {
    SYSCALLS.iter().find(|(n, _)| *n == name).map(|&(_, nr)| nr)
}

/// Looks up a system call's kernel name by its number (e.g. 39 → `"getpid"`).
pub fn syscall_name(number: usize) -> Option<&'static str> {
    SYSCALLS
        .iter()
        .find(|&&(_, nr)| nr == number)
        .map(|&(n, _)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lookups() {
        assert_eq!(syscall_number("read"), Some(0));
        assert_eq!(syscall_number("getpid"), Some(39));
        assert_eq!(syscall_number("rt_sigreturn"), Some(15));
        assert_eq!(syscall_number("clone3"), Some(435));
        assert_eq!(syscall_number("listns"), Some(470));
        assert_eq!(syscall_number("no_such_call"), None);
        assert_eq!(syscall_name(231), Some("exit_group"));
        assert_eq!(nr::GETPID, 39);
        assert_eq!(nr::EXIT_GROUP, 231);
        // Sorted, no duplicate numbers or names.
        for w in SYSCALLS.windows(2) {
            assert!(w[0].1 < w[1].1, "{:?} then {:?}", w[0], w[1]);
        }
        for (i, (a, _)) in SYSCALLS.iter().enumerate() {
            assert!(
                SYSCALLS[i + 1..].iter().all(|(b, _)| a != b),
                "duplicate {a}"
            );
        }
    }

    #[test]
    fn raw_syscalls_run() {
        // SAFETY: getpid and getppid take no arguments and touch no memory.
        let (pid, ppid) = unsafe { (syscall0(nr::GETPID), syscall0(nr::GETPPID)) };
        assert!(pid > 0 && ppid >= 0);
        let mut buf = [0u8; 8];
        // SAFETY: getrandom writes at most buf.len() bytes into buf, which we own.
        let got = unsafe { syscall3(nr::GETRANDOM, buf.as_mut_ptr() as usize, buf.len(), 0) };
        assert_eq!(got, 8);
        // SAFETY: close of an fd that cannot be open fails with EBADF and touches nothing.
        let bad = unsafe { syscall1(nr::CLOSE, 1 << 30) };
        assert_eq!(bad, -9);
        // SAFETY: a six-argument call on a bad fd fails with EBADF before it reads any argument.
        let six = unsafe { syscall6(nr::MMAP, 0, 4096, 1, 1, 1 << 30, 0) };
        assert_eq!(six, -9);
    }
}
