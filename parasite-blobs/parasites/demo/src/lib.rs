//! The demo parasite: answers `hello` with the task's pid and cwd, passes fds both ways and
//! shares memory with the host. Its commands are in `proto.rs`, shared with the host.
#![no_std]

mod proto;

use compel_plugins::std::{Errno, read_args, sys, write_args};
use compel_plugins::{fds, log, shmem};
use proto::{
    CMD_HELLO, CMD_RECV_FD, CMD_SEND_FD, CMD_SHMEM_CREATE, CMD_SHMEM_SUM, FdArgs, ShmemArgs,
};

compel_plugins::parasite_handler!(handle);

fn handle(cmd: u32, payload: &mut [u8]) -> Result<(), Errno> {
    match cmd {
        CMD_HELLO => hello(payload),
        CMD_SEND_FD => {
            let args: FdArgs = read_args(payload)?;
            log!(INFO, "sending fd {}", args.fd);
            fds::send_fds(&[args.fd])
        }
        CMD_RECV_FD => {
            let mut fd = [-1];
            fds::recv_fds(&mut fd)?;
            log!(INFO, "received fd {}", fd[0]);
            write_args(
                payload,
                &FdArgs {
                    fd: fd[0],
                    reserved: 0,
                },
            )
        }
        CMD_SHMEM_CREATE => {
            let args: ShmemArgs = read_args(payload)?;
            let mut region = shmem::create(args.len as usize)?;
            region.as_mut_slice().fill(args.fill as u8);
            // Stays mapped in the task: the host owns its lifetime from now on.
            core::mem::forget(region);
            Ok(())
        }
        CMD_SHMEM_SUM => {
            let mut args: ShmemArgs = read_args(payload)?;
            let mut region = shmem::receive()?;
            let bytes = region.as_mut_slice();
            args.sum = bytes.iter().map(|&b| u64::from(b)).sum();
            bytes[0] = args.fill as u8;
            region.unmap()?;
            write_args(payload, &args)
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// Writes a `HelloReply` in place (it is 4 KiB: not worth a copy on the parasite's stack).
fn hello(payload: &mut [u8]) -> Result<(), Errno> {
    if payload.len() < core::mem::size_of::<proto::HelloReply>() {
        return Err(Errno::ERANGE);
    }
    let pid = sys::getpid();
    let n = sys::getcwd(&mut payload[8..8 + 4096])?;
    let cwd_len = n.saturating_sub(1) as u32; // without the NUL
    payload[..4].copy_from_slice(&pid.to_ne_bytes());
    payload[4..8].copy_from_slice(&cwd_len.to_ne_bytes());
    log!(INFO, "hello from pid {}", pid);
    Ok(())
}
