//! Leaving the current stack: starting a child on a stack of its own with `clone3`, and
//! jumping to code on another stack for good. The assembly the restore engine needs, kept here
//! so that no other crate writes any.

/// `struct clone_args` as `clone3` takes it, up to `set_tid_size` (`CLONE_ARGS_SIZE_VER1`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct CloneArgs {
    pub flags: u64,
    pub pidfd: u64,
    pub child_tid: u64,
    pub parent_tid: u64,
    pub exit_signal: u64,
    /// The lowest address of the child's stack.
    pub stack: u64,
    pub stack_size: u64,
    pub tls: u64,
    /// Address of an array of `set_tid_size` ids the child is to get (one per pid namespace).
    pub set_tid: u64,
    pub set_tid_size: u64,
}

const _: () = assert!(core::mem::size_of::<CloneArgs>() == 80);

/// Runs `clone3(args)`; the child starts on the stack `args` describes and calls
/// `child(child_arg)`, which never returns. Returns what the parent gets: the child's id, or
/// `-errno`.
///
/// # Safety
/// `args.stack .. args.stack + args.stack_size` is memory the child may use as its stack
/// (16-byte aligned top) and nothing else uses while the child runs. With `CLONE_VM` the child
/// shares this address space: whatever `child_arg` points at must stay valid as long as the
/// child uses it, and `child` must not touch state of this thread that is not synchronised
/// (it runs on its own stack, without this thread's TLS unless `CLONE_SETTLS` sets one). Any
/// `set_tid` array must be valid for the call.
pub unsafe fn clone3_on_new_stack(
    args: &CloneArgs,
    child: extern "C" fn(u64) -> !,
    child_arg: u64,
) -> i64 {
    let ret: i64;
    // SAFETY: clone3 reads `args` (a live reference, its size passed). The child starts at the
    // instruction after `syscall` with rax = 0 on the stack the caller vouched for, and calls
    // `child`, which never returns (the `ud2` is not reached); the parent skips to the label
    // with the child's id or -errno in rax. `syscall` clobbers rcx and r11.
    unsafe {
        core::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov rdi, r12",
            "call r13",
            "ud2",
            "2:",
            inlateout("rax") crate::nr::CLONE3 as i64 => ret,
            in("rdi") args as *const CloneArgs,
            in("rsi") core::mem::size_of::<CloneArgs>(),
            in("r12") child_arg,
            in("r13") child as usize,
            out("rcx") _,
            out("r11") _,
        );
    }
    ret
}

/// Moves the stack pointer to `stack_top` and calls `entry(arg)` there, for good: the current
/// stack is abandoned.
///
/// # Safety
/// `stack_top` is the 16-byte aligned top of writable memory large enough for `entry`, and
/// `entry` the address of code that follows the SysV calling convention, takes one integer
/// argument and never returns. Nothing on the current stack is used again.
pub unsafe fn call_on_stack(stack_top: u64, entry: u64, arg: u64) -> ! {
    // SAFETY: the caller vouches for the stack and the code; `call` pushes a return address
    // that is never used (`ud2` would trap if `entry` returned).
    unsafe {
        core::arch::asm!(
            "mov rsp, {stack}",
            "call {entry}",
            "ud2",
            stack = in(reg) stack_top,
            entry = in(reg) entry,
            in("rdi") arg,
            options(noreturn)
        );
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::{nr, syscall1, syscall4};
    use core::sync::atomic::{AtomicU64, Ordering};
    use std::vec;

    static SEEN: AtomicU64 = AtomicU64::new(0);
    static SECOND_STACK: AtomicU64 = AtomicU64::new(0);

    extern "C" fn second(arg: u64) -> ! {
        let here = &arg as *const u64 as u64;
        let top = SECOND_STACK.load(Ordering::SeqCst);
        // On the second stack, with the argument passed.
        let on_it = here < top && here > top - 64 * 1024;
        SEEN.store(if on_it { arg } else { 1 }, Ordering::SeqCst);
        // SAFETY: exit ends this child process only; it shares memory but owns no locks.
        unsafe { syscall1(nr::EXIT, 7) };
        unreachable!()
    }

    extern "C" fn first(arg: u64) -> ! {
        // SAFETY: SECOND_STACK is the aligned top of a live 64 KiB buffer the test keeps until
        // the child is reaped; `second` never returns.
        unsafe {
            call_on_stack(
                SECOND_STACK.load(Ordering::SeqCst),
                second as extern "C" fn(u64) -> ! as usize as u64,
                arg,
            )
        }
    }

    #[test]
    fn a_child_on_its_own_stack_then_jumping_to_another() {
        let mut stack1 = vec![0u128; 4096];
        let mut stack2 = vec![0u128; 4096];
        let top2 = stack2.as_mut_ptr() as u64 + 64 * 1024;
        SECOND_STACK.store(top2, Ordering::SeqCst);
        let args = CloneArgs {
            flags: 0x100,    // CLONE_VM
            exit_signal: 17, // SIGCHLD
            stack: stack1.as_mut_ptr() as u64,
            stack_size: 64 * 1024,
            ..CloneArgs::default()
        };
        // SAFETY: both stacks are live, 16-byte aligned and used by nothing else until the child
        // is reaped below; `first` and `second` touch only atomics.
        let pid = unsafe { clone3_on_new_stack(&args, first, 0x5eed) };
        assert!(pid > 0, "clone3: {pid}");
        let mut status = 0i32;
        // SAFETY: wait4 writes one int into a live local; __WALL (0x4000_0000) waits for it.
        let r = unsafe {
            syscall4(
                nr::WAIT4,
                pid as usize,
                (&raw mut status) as usize,
                0x4000_0000,
                0,
            )
        };
        assert_eq!(r, pid as isize);
        assert_eq!(status, 7 << 8, "exit status");
        assert_eq!(SEEN.load(Ordering::SeqCst), 0x5eed);
        drop((stack1, stack2));
    }
}
