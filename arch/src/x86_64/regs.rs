//! The register sets ptrace exchanges with the kernel, with arch-neutral accessors.

/// The general-purpose registers as `PTRACE_GETREGS`/`PTRACE_SETREGS` (and the
/// `NT_PRSTATUS` regset) exchange them: the kernel's `struct user_regs_struct`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct UserRegs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    /// The syscall number the task entered the kernel with, or -1 when it is not in a syscall.
    pub orig_rax: u64,
    pub rip: u64,
    pub cs: u64,
    pub eflags: u64,
    pub rsp: u64,
    pub ss: u64,
    pub fs_base: u64,
    pub gs_base: u64,
    pub ds: u64,
    pub es: u64,
    pub fs: u64,
    pub gs: u64,
}

const _: () = assert!(core::mem::size_of::<UserRegs>() == 27 * 8);

/// The trap flag in `eflags`: the CPU traps after each instruction (single stepping).
pub const EFLAGS_TF: u64 = 1 << 8;

impl UserRegs {
    /// The instruction pointer.
    pub fn ip(&self) -> u64 {
        self.rip
    }

    /// Sets the instruction pointer.
    pub fn set_ip(&mut self, ip: u64) {
        self.rip = ip;
    }

    /// The stack pointer.
    pub fn sp(&self) -> u64 {
        self.rsp
    }

    /// Sets the stack pointer.
    pub fn set_sp(&mut self, sp: u64) {
        self.rsp = sp;
    }

    /// The number of the syscall the task is in (as the kernel saw it on entry), or `None` when
    /// the task did not stop inside a syscall.
    pub fn syscall_nr(&self) -> Option<u64> {
        (self.orig_rax as i64 >= 0).then_some(self.orig_rax)
    }

    /// Marks the task as not being inside a syscall, so that the kernel does not apply its
    /// syscall-restart logic when the task resumes with these registers.
    pub fn clear_syscall_nr(&mut self) {
        self.orig_rax = u64::MAX;
    }

    /// The syscall return value register (`-errno` on failure).
    pub fn syscall_ret(&self) -> i64 {
        self.rax as i64
    }

    /// Sets the syscall return value register.
    pub fn set_syscall_ret(&mut self, v: i64) {
        self.rax = v as u64;
    }

    /// The six syscall argument registers, in ABI order.
    pub fn syscall_args(&self) -> [u64; 6] {
        [self.rdi, self.rsi, self.rdx, self.r10, self.r8, self.r9]
    }

    /// Loads registers so that a `syscall` instruction executed next runs call `nr` with `args`.
    /// The task is marked as not in a syscall, so no restart logic interferes.
    pub fn set_syscall(&mut self, nr: u64, args: [u64; 6]) {
        self.rax = nr;
        self.orig_rax = u64::MAX;
        [self.rdi, self.rsi, self.rdx, self.r10, self.r8, self.r9] = args;
    }

    /// Sets the registers that carry a function's first six integer arguments (SysV ABI).
    pub fn set_call_args(&mut self, args: [u64; 6]) {
        [self.rdi, self.rsi, self.rdx, self.rcx, self.r8, self.r9] = args;
    }

    /// The thread pointer (TLS base).
    pub fn tls(&self) -> u64 {
        self.fs_base
    }

    /// Whether the task runs in this architecture's native 64-bit mode (x86_64: the user code
    /// segment is `__USER_CS`, not the 32-bit compat one).
    pub fn is_native(&self) -> bool {
        self.cs == 0x33
    }

    /// Whether single stepping (the trap flag) is on.
    pub fn single_step_flag(&self) -> bool {
        self.eflags & EFLAGS_TF != 0
    }

    /// The restart code (`-ERESTART*`, see [`crate::restart`]) of a syscall the task is
    /// stopped in, or `None` when it is not stopped in an interrupted syscall.
    pub fn pending_restart(&self) -> Option<i64> {
        let ret = self.syscall_ret();
        (self.syscall_nr().is_some() && crate::restart::is_restart(ret)).then_some(-ret)
    }

    /// Sets up an interrupted syscall to run again when the task resumes with these registers,
    /// as the kernel does on its way back to user mode when no signal handler runs: the
    /// syscall number is reloaded (for `-ERESTART_RESTARTBLOCK`, [`RESTART_SYSCALL_NR`], which
    /// continues from the kernel's saved restart block) and the instruction pointer goes back
    /// over the `syscall` instruction. Returns whether there was anything to rewind; the
    /// registers still say "in a syscall", so the kernel would rewind them again if they were
    /// set back into a thread stopped in one.
    pub fn rewind_restart(&mut self) -> bool {
        let Some(code) = self.pending_restart() else {
            return false;
        };
        self.rax = if code == crate::restart::ERESTART_RESTARTBLOCK {
            RESTART_SYSCALL_NR
        } else {
            self.orig_rax
        };
        self.rip = self.rip.wrapping_sub(crate::SYSCALL_INSN_LEN);
        true
    }

    /// The registers for an `rt_sigreturn` frame (which turns the kernel's restart logic off):
    /// an interrupted syscall is rewound to run again, except one interrupted with
    /// `-ERESTART_RESTARTBLOCK`, whose restart block `rt_sigreturn` discards: it returns
    /// `EINTR` instead, as after a signal handler. The task is then marked as not in a syscall.
    pub fn rewind_restart_for_sigreturn(&mut self) {
        match self.pending_restart() {
            Some(crate::restart::ERESTART_RESTARTBLOCK) => self.set_syscall_ret(-EINTR),
            Some(_) => {
                self.rewind_restart();
            }
            None => {}
        }
        self.clear_syscall_nr();
    }
}

/// The number of `restart_syscall`, which resumes a syscall interrupted with
/// `-ERESTART_RESTARTBLOCK` (nanosleep, poll, futex with a timeout).
pub const RESTART_SYSCALL_NR: u64 = crate::nr::RESTART_SYSCALL as u64;

/// `EINTR`, the same on every Linux architecture.
const EINTR: i64 = 4;

/// The legacy FPU/SSE area as `PTRACE_GETFPREGS` exchanges it (`struct user_fpregs_struct`,
/// the 512-byte `fxsave` format).
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct FpRegs {
    pub cwd: u16,
    pub swd: u16,
    pub ftw: u16,
    pub fop: u16,
    pub rip: u64,
    pub rdp: u64,
    pub mxcsr: u32,
    pub mxcsr_mask: u32,
    /// x87 registers: 8 registers of 16 bytes, as 32 words.
    pub st_space: [u32; 32],
    /// xmm0..xmm15: 16 registers of 16 bytes, as 64 words.
    pub xmm_space: [u32; 64],
    pub padding: [u32; 24],
}

const _: () = assert!(core::mem::size_of::<FpRegs>() == 512);

impl Default for FpRegs {
    fn default() -> Self {
        FpRegs {
            cwd: 0,
            swd: 0,
            ftw: 0,
            fop: 0,
            rip: 0,
            rdp: 0,
            mxcsr: 0,
            mxcsr_mask: 0,
            st_space: [0; 32],
            xmm_space: [0; 64],
            padding: [0; 24],
        }
    }
}

#[cfg(test)]
mod restart_tests {
    use super::*;
    use crate::restart::{ERESTART_RESTARTBLOCK, ERESTARTSYS};

    fn in_syscall(nr: u64, ret: i64) -> UserRegs {
        UserRegs {
            orig_rax: nr,
            rax: ret as u64,
            rip: 0x2002,
            ..UserRegs::default()
        }
    }

    #[test]
    fn rewinding() {
        let mut r = in_syscall(0, -ERESTARTSYS);
        assert_eq!(r.pending_restart(), Some(ERESTARTSYS));
        assert!(r.rewind_restart());
        assert_eq!((r.rax, r.rip, r.orig_rax), (0, 0x2000, 0));
        let mut r = in_syscall(35, -ERESTART_RESTARTBLOCK);
        assert!(r.rewind_restart());
        assert_eq!((r.rax, r.rip), (RESTART_SYSCALL_NR, 0x2000));
        // Finished syscalls and user code are left alone.
        let mut r = in_syscall(0, 5);
        assert!(!r.rewind_restart());
        assert_eq!((r.rax, r.rip), (5, 0x2002));
        let mut r = in_syscall(u64::MAX, -ERESTARTSYS);
        assert_eq!(r.pending_restart(), None);
        assert!(!r.rewind_restart());
    }

    #[test]
    fn rewinding_for_sigreturn() {
        let mut r = in_syscall(0, -ERESTARTSYS);
        r.rewind_restart_for_sigreturn();
        assert_eq!((r.rax, r.rip, r.orig_rax), (0, 0x2000, u64::MAX));
        let mut r = in_syscall(35, -ERESTART_RESTARTBLOCK);
        r.rewind_restart_for_sigreturn();
        assert_eq!((r.rax as i64, r.rip, r.orig_rax), (-4, 0x2002, u64::MAX));
        let mut r = in_syscall(u64::MAX, 7);
        r.rewind_restart_for_sigreturn();
        assert_eq!((r.rax, r.rip), (7, 0x2002));
    }
}
