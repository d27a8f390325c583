//! The sampler parasite: one profiler-like sample taken from inside the task (its CPU time, its
//! peak RSS, and optionally a `u64` at an address). Used by `compel/examples/sampler.rs`.
#![no_std]

mod proto;

use compel_arch::{nr, syscall2, syscall6};
use compel_plugins::std::{Errno, read_args, sys, write_args};
use proto::{CMD_SAMPLE, Sample};

compel_plugins::parasite_handler!(handle);

const CLOCK_PROCESS_CPUTIME_ID: usize = 2;

fn handle(cmd: u32, payload: &mut [u8]) -> Result<(), Errno> {
    if cmd != CMD_SAMPLE {
        return Err(Errno::ENOSYS);
    }
    let mut s: Sample = read_args(payload)?;
    s.pid = sys::getpid();
    let mut ts = [0u64; 2];
    // SAFETY: clock_gettime writes one timespec into ts, a live local.
    sys::result(unsafe {
        syscall2(
            nr::CLOCK_GETTIME,
            CLOCK_PROCESS_CPUTIME_ID,
            ts.as_mut_ptr() as usize,
        )
    })?;
    s.cpu_ns = ts[0] * 1_000_000_000 + ts[1];
    // struct rusage: two timevals (4 words), then ru_maxrss.
    let mut ru = [0u64; 18];
    // SAFETY: getrusage writes one struct rusage (144 bytes) into ru, a live local of that size.
    sys::result(unsafe { syscall2(nr::GETRUSAGE, 0, ru.as_mut_ptr() as usize) })?;
    s.maxrss_kib = ru[4];
    s.value_errno = 0;
    if s.addr != 0 {
        let mut v = [0u8; 8];
        let local = [v.as_mut_ptr() as usize, 8];
        let remote = [s.addr as usize, 8];
        // SAFETY: process_vm_readv on our own pid writes only into `v`; an unreadable source
        // is reported as EFAULT instead of faulting.
        let r = unsafe {
            syscall6(
                nr::PROCESS_VM_READV,
                s.pid as usize,
                local.as_ptr() as usize,
                1,
                remote.as_ptr() as usize,
                1,
                0,
            )
        };
        match sys::result(r) {
            Ok(8) => s.value = u64::from_ne_bytes(v),
            Ok(_) => s.value_errno = Errno::EFAULT.0,
            Err(e) => s.value_errno = e.0,
        }
    }
    write_args(payload, &s)
}
