//! The fdspy parasite: describes one of the task's fds from inside and hands a copy of it to
//! the host over the control socket (the fds plugin). Used by `compel/examples/fdspy.rs`.
#![no_std]

mod proto;

use compel_arch::{nr, syscall2, syscall3};
use compel_plugins::std::{Errno, read_args, sys, write_args};
use compel_plugins::{fds, log};
use proto::{CMD_SPY, FdInfo};

compel_plugins::parasite_handler!(handle);

const F_GETFD: usize = 1;
const F_GETFL: usize = 3;
const SEEK_CUR: usize = 1;

fn handle(cmd: u32, payload: &mut [u8]) -> Result<(), Errno> {
    if cmd != CMD_SPY {
        return Err(Errno::ENOSYS);
    }
    let mut info: FdInfo = read_args(payload)?;
    let fd = info.fd as usize;
    // SAFETY: fcntl F_GETFD/F_GETFL only read the fd table; a bad fd is EBADF.
    info.fd_flags = sys::result(unsafe { syscall2(nr::FCNTL, fd, F_GETFD) })? as i32;
    // SAFETY: fcntl F_GETFL only reads the file's status flags; a bad fd is EBADF.
    info.status_flags = sys::result(unsafe { syscall2(nr::FCNTL, fd, F_GETFL) })? as i32;
    // SAFETY: lseek by 0 from the current position changes nothing; pipes answer ESPIPE.
    info.offset = unsafe { syscall3(nr::LSEEK, fd, 0, SEEK_CUR) } as i64;
    log!(
        INFO,
        "fd {}: fd flags {:#x}, flags {:#o}",
        info.fd,
        info.fd_flags,
        info.status_flags
    );
    fds::send_fds(&[info.fd])?;
    write_args(payload, &info)
}
