//! compel's host-side runtime (layer: above `compel-arch`, below criu): seize a live task, read
//! and write its registers and memory, run syscalls inside it, and release it so that it runs on
//! as if nothing happened.
//!
//! The entry point is [`Task`]: [`Task::seize`] stops every thread of a process under
//! `PTRACE_SEIZE`; [`Task::remote_syscall`] runs one syscall inside it (through the vDSO's own
//! `syscall` instruction, single-stepped, so nothing is written into the task);
//! [`Task::detach`] (or drop) puts it back as it was found. [`classify`] tells what a task is
//! doing without touching it.
//!
//! ```no_run
//! use compel::{Task, RemoteAddr};
//! use compel_arch::nr;
//!
//! # fn main() -> Result<(), compel::TaskError> {
//! let pid = 1234;
//! let mut task = Task::seize(pid)?;
//! let their_pid = task.remote_syscall(nr::GETPID, [0; 6])?;
//! assert_eq!(their_pid, pid as i64);
//! let regs = task.regs(pid)?;
//! let mut word = [0u8; 8];
//! task.read_mem(RemoteAddr(regs.sp()), &mut word)?;
//! task.detach()?;
//! # Ok(()) }
//! ```
//!
//! The `compel` command line is the `compel-cli` crate (`compel/cli`); this library has no
//! binary of its own.
//!
//! A `Task` must stay on the thread that seized it (ptrace's rule), and only one tracer may hold
//! a task at a time. Unprivileged use works on the caller's own processes where the kernel's
//! ptrace rules allow it; suspending a task's seccomp filter needs `CAP_SYS_ADMIN`.

// Unsafe code is refused except in the modules that opt in with `#![allow(unsafe_code)]` and say
// why.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod error;
pub mod infect;
mod mem;
pub mod proc;
pub mod ptrace;
mod spin;
pub mod syscall_stop;
mod task;
pub mod vdso;

pub use compel_arch::{UserRegs, syscall_name, syscall_number};
pub use error::TaskError;
pub use mem::RemoteAddr;
pub use task::{
    InitialStop, Resume, SeizeOptions, SyscallMethod, Task, TaskState, Xsave, classify,
};
