//! An injectable stub that runs a batch of system calls in one go, so that a tracer pays one
//! ptrace round trip for several calls, then traps or jumps on.
//!
//! The stub (position-independent, 73 bytes) expects `rdi` = a table of `rsi` entries of
//! [`BATCH_ENTRY_WORDS`] `u64`s each: `nr, a1..a6, ret`. It runs the calls in order, storing
//! each raw result (`-errno` on failure) in the entry's `ret` word, and then jumps to `r15` with
//! `rdi` = `rbx` if `r15` is non-zero (a continuation, e.g. a parasite's entry), else executes
//! `int3`. It clobbers `rax`, `rcx`, `r11`, `rdi`, `rsi`, `rdx`, `r8`..`r10`, `r12`, `r13`, and
//! uses no stack.
//!
//! ```text
//!     mov r12, rdi ; mov r13, rsi
//! 1:  test r13, r13 ; jz 2f
//!     mov rax, [r12] ; mov rdi, [r12+8] ; mov rsi, [r12+16] ; mov rdx, [r12+24]
//!     mov r10, [r12+32] ; mov r8, [r12+40] ; mov r9, [r12+48]
//!     syscall
//!     mov [r12+56], rax ; add r12, 64 ; dec r13 ; jmp 1b
//! 2:  test r15, r15 ; jz 3f
//!     mov rdi, rbx ; jmp r15
//! 3:  int3
//! ```

/// The machine code (assembled from the listing above).
pub const SYSCALL_BATCH_STUB: [u8; 73] = [
    0x49, 0x89, 0xfc, 0x49, 0x89, 0xf5, 0x4d, 0x85, 0xed, 0x74, 0x32, 0x49, 0x8b, 0x04, 0x24, 0x49,
    0x8b, 0x7c, 0x24, 0x08, 0x49, 0x8b, 0x74, 0x24, 0x10, 0x49, 0x8b, 0x54, 0x24, 0x18, 0x4d, 0x8b,
    0x54, 0x24, 0x20, 0x4d, 0x8b, 0x44, 0x24, 0x28, 0x4d, 0x8b, 0x4c, 0x24, 0x30, 0x0f, 0x05, 0x49,
    0x89, 0x44, 0x24, 0x38, 0x49, 0x83, 0xc4, 0x40, 0x49, 0xff, 0xcd, 0xeb, 0xc9, 0x4d, 0x85, 0xff,
    0x74, 0x06, 0x48, 0x89, 0xdf, 0x41, 0xff, 0xe7, 0xcc,
];

/// Offset of the stub's final `int3`: a tracer sees the trap with the instruction pointer one
/// byte further.
pub const SYSCALL_BATCH_TRAP: usize = 0x48;

/// `u64` words per table entry: `nr`, six arguments, the result.
pub const BATCH_ENTRY_WORDS: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{nr, syscall1, syscall2, syscall6};

    #[test]
    fn stub_runs_a_batch_in_process() {
        assert_eq!(SYSCALL_BATCH_STUB[SYSCALL_BATCH_TRAP], 0xcc);
        // SAFETY: a fresh anonymous read-write mapping; nothing else refers to it.
        let mem = unsafe { syscall6(nr::MMAP, 0, 4096, 3, 0x22, usize::MAX, 0) };
        assert!(mem > 0);
        let code = mem as usize as *mut u8;
        // SAFETY: `code` is the start of the 4096-byte mapping made above.
        unsafe {
            core::ptr::copy_nonoverlapping(SYSCALL_BATCH_STUB.as_ptr(), code, 73);
            // For an in-process call, return instead of trapping.
            *code.add(SYSCALL_BATCH_TRAP) = 0xc3;
            assert_eq!(syscall6(nr::MPROTECT, mem as usize, 4096, 5, 0, 0, 0), 0);
        }
        let mut table = [[0u64; BATCH_ENTRY_WORDS]; 3];
        table[0][0] = nr::GETPID as u64;
        table[1][0] = nr::CLOSE as u64;
        table[1][1] = u64::MAX >> 2; // no such fd: EBADF
        table[2][0] = nr::GETPPID as u64;
        // SAFETY: the stub reads and writes only `table` (3 entries, as rsi says) and clobbers
        // exactly the registers declared; r15 = 0 makes it return through the patched `ret`.
        unsafe {
            core::arch::asm!(
                "call {code}",
                code = in(reg) code,
                inout("rdi") table.as_mut_ptr() => _,
                inout("rsi") 3usize => _,
                in("r15") 0usize,
                out("rax") _, out("rcx") _, out("rdx") _, out("r8") _, out("r9") _,
                out("r10") _, out("r11") _, out("r12") _, out("r13") _,
            );
        }
        // SAFETY: getpid/getppid take no arguments.
        let (pid, ppid) = unsafe { (syscall1(nr::GETPID, 0), syscall1(nr::GETPPID, 0)) };
        assert_eq!(table[0][7] as i64, pid as i64);
        assert_eq!(table[1][7] as i64, -9);
        assert_eq!(table[2][7] as i64, ppid as i64);
        // SAFETY: unmapping the mapping made above, no longer used.
        unsafe { syscall2(nr::MUNMAP, mem as usize, 4096) };
    }
}
