//! The C API of the plugins (only with `--cfg compel_parasite`), declared in
//! `compel/include/compel/plugins/*.h`.

use super::{log, service, sys};
use core::ffi::c_char;

/// `long compel_syscall6(long nr, long a1, ..., long a6)`: a raw system call; returns the
/// result or `-errno`.
///
/// # Safety
/// As the system call requires.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_syscall6(
    nr: isize,
    a1: isize,
    a2: isize,
    a3: isize,
    a4: isize,
    a5: isize,
    a6: isize,
) -> isize {
    // SAFETY: the C caller upholds what the system call requires.
    unsafe {
        compel_arch::syscall6(
            nr as usize,
            a1 as usize,
            a2 as usize,
            a3 as usize,
            a4 as usize,
            a5 as usize,
            a6 as usize,
        )
    }
}

/// `void compel_log(unsigned int level, const char *msg)`: one log line.
///
/// # Safety
/// `msg` is NUL-terminated (or NULL).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_log(level: u32, msg: *const c_char) {
    if msg.is_null() {
        return;
    }
    // SAFETY: msg is NUL-terminated (C contract); the slice covers the bytes before the NUL.
    let bytes = unsafe {
        core::slice::from_raw_parts(msg.cast::<u8>(), super::mem::str_len(msg.cast(), 4096))
    };
    log::write_bytes(level, bytes);
}

/// `void compel_log_num(unsigned int level, const char *msg, long value)`: a line `msg value`.
///
/// # Safety
/// `msg` is NUL-terminated (or NULL).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_log_num(level: u32, msg: *const c_char, value: i64) {
    if msg.is_null() || !log::enabled(level) {
        return;
    }
    // SAFETY: as in compel_log.
    let bytes = unsafe {
        core::slice::from_raw_parts(msg.cast::<u8>(), super::mem::str_len(msg.cast(), 4096))
    };
    let text = core::str::from_utf8(bytes).unwrap_or("?");
    log::write_fmt(level, format_args!("{text} {value}"));
}

/// `int compel_ctl_sock(void)`: the control socket, or -1 outside the service loop.
#[unsafe(no_mangle)]
pub extern "C" fn compel_ctl_sock() -> i32 {
    service::ctl_sock()
}

/// `int compel_send_fds(const int *fds, unsigned int n)`: 0 or `-errno`.
///
/// # Safety
/// `fds` points at `n` ints.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_send_fds(fds: *const i32, n: u32) -> i32 {
    if fds.is_null() && n > 0 {
        return -sys::Errno::EFAULT.0;
    }
    let fds: &[i32] = if n == 0 {
        &[]
    } else {
        // SAFETY: fds points at n ints (C contract).
        unsafe { core::slice::from_raw_parts(fds, n as usize) }
    };
    match crate::fds::send_fds(fds) {
        Ok(()) => 0,
        Err(e) => -e.0,
    }
}

/// `int compel_recv_fds(int *fds, unsigned int n)`: 0 or `-errno`.
///
/// # Safety
/// `fds` points at room for `n` ints.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_recv_fds(fds: *mut i32, n: u32) -> i32 {
    if fds.is_null() && n > 0 {
        return -sys::Errno::EFAULT.0;
    }
    let fds: &mut [i32] = if n == 0 {
        &mut []
    } else {
        // SAFETY: fds points at room for n ints (C contract), ours for the call.
        unsafe { core::slice::from_raw_parts_mut(fds, n as usize) }
    };
    match crate::fds::recv_fds(fds) {
        Ok(()) => 0,
        Err(e) => -e.0,
    }
}

/// `void *compel_shmem_create(unsigned long size)`: a region shared with the host, or NULL.
#[unsafe(no_mangle)]
pub extern "C" fn compel_shmem_create(size: usize) -> *mut u8 {
    match crate::shmem::create(size) {
        Ok(r) => r.addr() as *mut u8,
        Err(_) => core::ptr::null_mut(),
    }
}

/// `void *compel_shmem_receive(unsigned long *size)`: the region the host sends, or NULL.
///
/// # Safety
/// `size` is NULL or points at an unsigned long.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_shmem_receive(size: *mut usize) -> *mut u8 {
    match crate::shmem::receive() {
        Ok(r) => {
            if !size.is_null() {
                // SAFETY: size points at an unsigned long (C contract).
                unsafe { *size = r.len() };
            }
            r.addr() as *mut u8
        }
        Err(_) => core::ptr::null_mut(),
    }
}
