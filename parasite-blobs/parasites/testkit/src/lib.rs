//! The testkit parasite: small commands that exercise compel's infection runtime (arithmetic,
//! errno reporting, register clobbering, sleeping, safe memory reads, logging, fd passing, and
//! deliberate faults). Its commands are in `proto.rs`, shared with the host.
#![no_std]

mod proto;

use compel_arch::{nr, syscall2, syscall6};
use compel_plugins::std::{Errno, read_args, sys, write_args};
use compel_plugins::{fds, log};
use proto::{
    Args, CMD_ADD, CMD_CLOBBER, CMD_CRASH, CMD_FAIL, CMD_LOG, CMD_PANIC, CMD_PEEK, CMD_SEND_FD,
    CMD_SLEEP, CMD_SPIN, PEEK_MAX,
};

compel_plugins::parasite_handler!(handle);

fn handle(cmd: u32, payload: &mut [u8]) -> Result<(), Errno> {
    let mut args: Args = read_args(payload)?;
    args.pid = sys::getpid();
    args.tid = sys::gettid();
    match cmd {
        CMD_ADD => args.r = args.a.wrapping_add(args.b),
        CMD_FAIL => return Err(Errno(args.a as i32)),
        CMD_CLOBBER => clobber(),
        CMD_SLEEP => {
            let ts = [args.a / 1000, (args.a % 1000) * 1_000_000];
            // SAFETY: nanosleep reads a timespec from ts, a live local; no remainder pointer.
            let r = unsafe { syscall2(nr::NANOSLEEP, ts.as_ptr() as usize, 0) };
            sys::result(r)?;
        }
        CMD_PEEK => {
            let len = (args.b as usize).min(PEEK_MAX);
            let local = [args.data.as_mut_ptr() as usize, len];
            let remote = [args.a as usize, len];
            // SAFETY: process_vm_readv on our own pid only writes into `args.data` (local iov)
            // and reports an unreadable source as EFAULT instead of faulting.
            let r = unsafe {
                syscall6(
                    nr::PROCESS_VM_READV,
                    args.pid as usize,
                    local.as_ptr() as usize,
                    1,
                    remote.as_ptr() as usize,
                    1,
                    0,
                )
            };
            args.r = sys::result(r)? as u64;
        }
        CMD_LOG => {
            for i in 0..args.a {
                log!(INFO, "testkit line {} of {}", i + 1, args.a);
            }
        }
        CMD_SEND_FD => fds::send_fds(&[args.a as i32])?,
        CMD_CRASH => {
            // SAFETY: deliberately unsound: this command exists to make the parasite fault.
            unsafe { core::ptr::write_volatile(core::ptr::null_mut::<u64>(), 1) };
        }
        CMD_SPIN => loop {
            core::hint::spin_loop();
        },
        CMD_PANIC => panic!("testkit asked to panic"),
        _ => return Err(Errno::ENOSYS),
    }
    write_args(payload, &args)
}

/// Puts garbage in every register the task could notice.
fn clobber() {
    // SAFETY: only registers are written; every one that is not restored is declared clobbered
    // (the vector and mask registers through clobber_abi, MXCSR and the x87 control word are
    // status the ABI lets a callee change only if restored, which the frame does for the task;
    // here they are put back before returning, after having been garbage in between).
    unsafe {
        core::arch::asm!(
            "sub rsp, 8",
            "stmxcsr [rsp]",
            "fnstcw [rsp + 4]",
            "mov dword ptr [rsp - 8], 0x7f80",
            "ldmxcsr [rsp - 8]",
            "mov word ptr [rsp - 4], 0x0c7f",
            "fldcw [rsp - 4]",
            "pcmpeqd xmm0, xmm0",
            "pcmpeqd xmm1, xmm1",
            "pcmpeqd xmm7, xmm7",
            "pcmpeqd xmm15, xmm15",
            "ldmxcsr [rsp]",
            "fldcw [rsp + 4]",
            "add rsp, 8",
            clobber_abi("C"),
        );
    }
    if compel_arch::cpu_has_avx512f() {
        // SAFETY: the CPU has AVX-512F (checked); the registers written are declared clobbered.
        unsafe { clobber_avx512() };
    } else if compel_arch::cpu_has_avx() {
        // SAFETY: the CPU has AVX (checked); the registers written are declared clobbered.
        unsafe { clobber_avx() };
    }
}

#[target_feature(enable = "avx512f")]
unsafe fn clobber_avx512() {
    // SAFETY: only vector and mask registers are written, all declared clobbered.
    unsafe {
        core::arch::asm!(
            "vpternlogd zmm0, zmm0, zmm0, 0xff",
            "vpternlogd zmm5, zmm5, zmm5, 0xff",
            "vpternlogd zmm15, zmm15, zmm15, 0xff",
            "vpternlogd zmm16, zmm16, zmm16, 0xff",
            "vpternlogd zmm31, zmm31, zmm31, 0xff",
            "kxnorw k1, k1, k1",
            "kxnorw k7, k7, k7",
            out("zmm0") _, out("zmm5") _, out("zmm15") _, out("zmm16") _, out("zmm31") _,
            out("k1") _, out("k7") _,
        );
    }
}

#[target_feature(enable = "avx")]
unsafe fn clobber_avx() {
    // SAFETY: only vector registers are written, all declared clobbered.
    unsafe {
        core::arch::asm!(
            "vpcmpeqd ymm0, ymm0, ymm0",
            "vpcmpeqd ymm9, ymm9, ymm9",
            out("ymm0") _, out("ymm9") _,
        );
    }
}
