//! Per-architecture facts and primitives (layer: bottom, `no_std`).
//!
//! Every `cfg(target_arch)` of the project lives here. Each supported architecture is one module
//! with the same public names, re-exported at the crate root, so callers never need a `cfg`:
//!
//! - raw system calls for parasite code: [`syscall0`] .. [`syscall6`];
//! - the system call table: [`SYSCALLS`], [`syscall_number`], [`syscall_name`], [`nr`];
//! - register sets as ptrace exchanges them: [`UserRegs`] (with arch-neutral accessors such as
//!   [`UserRegs::ip`] and [`UserRegs::set_syscall`]), [`FpRegs`], and xsave layout facts;
//! - injected stubs: [`SYSCALL_INSN`], [`BREAKPOINT_INSN`], [`SYSCALL_TRAP_STUB`].
//! - the CPU: [`cpuid`] and [`CpuId`] (CPUID's words in the kernel's `cpuid_leafs` order, which
//!   criu maps into `cpuinfo.img` and compel's C API into `compel_cpuinfo_t`).
//!
//! ```
//! use compel_arch::{nr, syscall0, syscall_number};
//!
//! assert_eq!(syscall_number("getpid"), Some(nr::GETPID));
//! // SAFETY: getpid takes no arguments and touches no memory.
//! let pid = unsafe { syscall0(nr::GETPID) };
//! assert_eq!(pid as u32, std::process::id());
//! ```
//!
//! # Adding an architecture (aarch64 is next)
//! Add `src/<arch>/` with the same public names: `ARCH_NAME`, `ELF_MACHINE`, `syscall0..6`,
//! `SYSCALLS` + `nr` (that arch's own numbers), `syscall_number`/`syscall_name`, `UserRegs`
//! with the same accessor methods (`ip`, `sp`, `syscall_nr`, `set_syscall`, `syscall_ret`,
//! `tls`, `is_native`, ...), the stub constants (`SYSCALL_INSN`, `BREAKPOINT_INSN`,
//! `SYSCALL_TRAP_STUB`, `SYSCALL_INSN_LEN`) and the extended-state facts; then add its `cfg`
//! lines below. Callers compile unchanged.
#![no_std]
#![warn(missing_docs)]

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
pub use x86_64::*;

#[cfg(not(any(target_arch = "x86_64")))]
compile_error!(
    "compel-arch: this architecture is not supported yet (x86_64 only; aarch64 is planned)"
);

/// Kernel-internal return values a task can hold in its syscall return register when it is
/// stopped inside an interrupted syscall; the kernel turns them into a restart or into `EINTR`
/// when the task resumes. The same on every architecture.
pub mod restart {
    /// Restart if the signal handler has `SA_RESTART` (or there is no handler), else `EINTR`.
    pub const ERESTARTSYS: i64 = 512;
    /// Always restart.
    pub const ERESTARTNOINTR: i64 = 513;
    /// Restart if no handler runs, else `EINTR`.
    pub const ERESTARTNOHAND: i64 = 514;
    /// Restart through `restart_syscall` (nanosleep, poll, futex with timeouts).
    pub const ERESTART_RESTARTBLOCK: i64 = 516;

    /// Whether `ret` (a raw syscall return value) is one of the restart codes above.
    pub fn is_restart(ret: i64) -> bool {
        matches!(
            -ret,
            ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND | ERESTART_RESTARTBLOCK
        )
    }
}
