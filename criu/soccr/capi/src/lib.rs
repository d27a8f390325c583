//! libsoccr's C ABI (`include/soccr.h`): the names, struct layouts and memory rules of CRIU's
//! libsoccr. Buffers handed out or taken in are malloc(3) memory: with `SOCCR_MEM_EXCL` the
//! receiver owns (and free()s) them, otherwise the library frees its own at resume/release.

use std::ffi::{CString, c_char, c_int, c_uint};
use std::mem::size_of;
use std::ptr;
use std::sync::Mutex;

use soccr_rt::{SkData, SockAddr, sys};

pub const SOCCR_LOG_ERR: c_uint = 1;
pub const SOCCR_LOG_DBG: c_uint = 2;
pub const SOCCR_MEM_EXCL: c_uint = 1;

/// The size of the first libsoccr_sk_data (17 u32 fields): smaller buffers are refused.
const DATA_MIN_SIZE: c_uint = 17 * 4;

const FREE_RQ: c_uint = 1;
const FREE_SQ: c_uint = 2;
const FREE_SA: c_uint = 4;
const FREE_DA: c_uint = 8;

type LogFn = unsafe extern "C" fn(c_uint, *const c_char, ...);

static LOG: Mutex<(c_uint, Option<LogFn>)> = Mutex::new((0, None));

/// Sets the log level and the printf-like function messages go to.
#[unsafe(no_mangle)]
pub extern "C" fn libsoccr_set_log(level: c_uint, f: Option<LogFn>) {
    if let Ok(mut l) = LOG.lock() {
        *l = (level, f);
    }
}

fn log(level: c_uint, msg: &str) {
    let Ok(l) = LOG.lock() else { return };
    let (max, Some(f)) = *l else { return };
    if level > max {
        return;
    }
    let prefix = if level == SOCCR_LOG_ERR {
        "Error: "
    } else {
        "Debug: "
    };
    let Ok(text) = CString::new(format!("{prefix}{msg}\n")) else {
        return;
    };
    // SAFETY: f is the caller's printf-like function; the format is a constant "%s" whose one
    // argument is a NUL-terminated string that outlives the call.
    unsafe { f(level, c"%s".as_ptr(), text.as_ptr()) };
}

fn fail<T>(r: soccr_rt::Result<T>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            log(SOCCR_LOG_ERR, &e.to_string());
            None
        }
    }
}

/// The opaque handle (`struct libsoccr_sk`).
pub struct LibsoccrSk {
    fd: c_int,
    flags: c_uint,
    recv_queue: *mut c_char,
    send_queue: *mut c_char,
    src_addr: *mut SockAddr,
    dst_addr: *mut SockAddr,
}

/// Turns repair mode on for `fd`; returns the handle, or NULL.
#[unsafe(no_mangle)]
pub extern "C" fn libsoccr_pause(fd: c_int) -> *mut LibsoccrSk {
    fail(soccr_rt::set_repair(fd, true)).map_or(ptr::null_mut(), |()| {
        Box::into_raw(Box::new(LibsoccrSk {
            fd,
            flags: 0,
            recv_queue: ptr::null_mut(),
            send_queue: ptr::null_mut(),
            src_addr: ptr::null_mut(),
            dst_addr: ptr::null_mut(),
        }))
    })
}

/// Turns repair mode off and frees the handle.
///
/// # Safety
/// `sk` comes from libsoccr_pause and is not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn libsoccr_resume(sk: *mut LibsoccrSk) {
    if sk.is_null() {
        return;
    }
    // SAFETY: the caller passes a live handle.
    let fd = unsafe { (*sk).fd };
    let _ = fail(soccr_rt::set_repair(fd, false));
    // SAFETY: `sk` is a live handle from libsoccr_pause that the caller does not use again
    // (this function's contract); release takes ownership.
    unsafe { libsoccr_release(sk) };
}

/// Frees the handle (and the buffers it owns), leaving the socket in repair mode.
///
/// # Safety
/// `sk` comes from libsoccr_pause and is not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn libsoccr_release(sk: *mut LibsoccrSk) {
    if sk.is_null() {
        return;
    }
    // SAFETY: the handle was made by Box::into_raw in libsoccr_pause and is given back once.
    let sk = unsafe { Box::from_raw(sk) };
    // SAFETY: buffers flagged as ours are malloc(3) memory nobody else frees.
    unsafe {
        if sk.flags & FREE_RQ != 0 {
            libc::free(sk.recv_queue.cast());
        }
        if sk.flags & FREE_SQ != 0 {
            libc::free(sk.send_queue.cast());
        }
        if sk.flags & FREE_SA != 0 {
            libc::free(sk.src_addr.cast());
        }
        if sk.flags & FREE_DA != 0 {
            libc::free(sk.dst_addr.cast());
        }
    }
}

fn malloc_copy(b: &[u8]) -> *mut c_char {
    // SAFETY: malloc of at least one byte; checked for NULL before the copy.
    let p = unsafe { libc::malloc(b.len().max(1)) }.cast::<c_char>();
    if !p.is_null() {
        // SAFETY: p has room for b.len() bytes and does not overlap b.
        unsafe { ptr::copy_nonoverlapping(b.as_ptr().cast(), p, b.len()) };
    }
    p
}

/// Fills `data` (`data_size` bytes, at least the 68 of the first version) with the connection's
/// numbers and keeps both queues in the handle. Returns the bytes filled, or a negative step
/// number.
///
/// # Safety
/// `sk` is a live handle; `data` is writable for `data_size` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn libsoccr_save(
    sk: *mut LibsoccrSk,
    data: *mut SkData,
    data_size: c_uint,
) -> c_int {
    if sk.is_null() || data.is_null() || data_size < DATA_MIN_SIZE {
        log(SOCCR_LOG_ERR, "invalid input parameters");
        return -1;
    }
    // SAFETY: the caller passes a live handle and data_size writable bytes at data.
    let sk = unsafe { &mut *sk };
    // SAFETY: the caller passes data_size writable bytes at data (this function's contract).
    unsafe { ptr::write_bytes(data.cast::<u8>(), 0, data_size as usize) };
    let Some(mut d) = fail(soccr_rt::save_data(sk.fd)) else {
        return -2;
    };
    let Some((seq, rq)) = fail(soccr_rt::read_queue(sk.fd, sys::TCP_RECV_QUEUE, d.inq_len)) else {
        return -5;
    };
    d.inq_seq = seq;
    let Some((seq, sq)) = fail(soccr_rt::read_queue(sk.fd, sys::TCP_SEND_QUEUE, d.outq_len)) else {
        return -6;
    };
    d.outq_seq = seq;
    for (slot, flag, q) in [
        (&mut sk.recv_queue, FREE_RQ, rq),
        (&mut sk.send_queue, FREE_SQ, sq),
    ] {
        if sk.flags & flag != 0 {
            // SAFETY: a buffer we own from an earlier save.
            unsafe { libc::free((*slot).cast()) };
        }
        *slot = if q.is_empty() {
            ptr::null_mut()
        } else {
            malloc_copy(&q)
        };
        sk.flags |= flag;
    }
    // SAFETY: data is writable for at least size_of::<SkData>() bytes (checked above).
    unsafe { data.write_unaligned(d) };
    size_of::<SkData>() as c_int
}

/// The saved queue bytes (`TCP_RECV_QUEUE` or `TCP_SEND_QUEUE`), NULL for others; with
/// SOCCR_MEM_EXCL the caller takes the buffer and free()s it.
///
/// # Safety
/// `sk` is a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn libsoccr_get_queue_bytes(
    sk: *mut LibsoccrSk,
    queue_id: c_int,
    flags: c_uint,
) -> *mut c_char {
    if sk.is_null() || flags & !SOCCR_MEM_EXCL != 0 {
        return ptr::null_mut();
    }
    // SAFETY: the caller passes a live handle.
    let sk = unsafe { &mut *sk };
    let (slot, flag) = match queue_id {
        sys::TCP_RECV_QUEUE => (&mut sk.recv_queue, FREE_RQ),
        sys::TCP_SEND_QUEUE => (&mut sk.send_queue, FREE_SQ),
        _ => return ptr::null_mut(),
    };
    let p = *slot;
    if flags & SOCCR_MEM_EXCL != 0 {
        *slot = ptr::null_mut();
        sk.flags &= !flag;
    }
    p
}

/// The socket's own (`self` != 0) or peer address; with SOCCR_MEM_EXCL the caller free()s it.
///
/// # Safety
/// `sk` is a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn libsoccr_get_addr(
    sk: *mut LibsoccrSk,
    self_: c_int,
    flags: c_uint,
) -> *mut SockAddr {
    if sk.is_null() || flags & !SOCCR_MEM_EXCL != 0 {
        return ptr::null_mut();
    }
    // SAFETY: the caller passes a live handle.
    let sk = unsafe { &mut *sk };
    let Some(a) = fail(soccr_rt::sock_name(sk.fd, self_ == 0)) else {
        return ptr::null_mut();
    };
    let a = SockAddr::from(a);
    // SAFETY: malloc of the union's size, checked for NULL before the write.
    let p = unsafe { libc::malloc(size_of::<SockAddr>()) }.cast::<SockAddr>();
    if p.is_null() {
        return p;
    }
    // SAFETY: p is a fresh allocation of the right size (malloc aligns for any type).
    unsafe { p.write(a) };
    if flags & SOCCR_MEM_EXCL == 0 {
        let (slot, flag) = if self_ != 0 {
            (&mut sk.src_addr, FREE_SA)
        } else {
            (&mut sk.dst_addr, FREE_DA)
        };
        if sk.flags & flag != 0 {
            // SAFETY: an address we own from an earlier call.
            unsafe { libc::free((*slot).cast()) };
        }
        *slot = p;
        sk.flags |= flag;
    }
    p
}

/// Sets the queue bytes restore writes; with SOCCR_MEM_EXCL the library free()s them.
///
/// # Safety
/// `sk` is a live handle; `bytes` stays valid until resume/release (with SOCCR_MEM_EXCL it is
/// malloc(3) memory).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn libsoccr_set_queue_bytes(
    sk: *mut LibsoccrSk,
    queue_id: c_int,
    bytes: *mut c_char,
    flags: c_uint,
) -> c_int {
    if sk.is_null() || flags & !SOCCR_MEM_EXCL != 0 {
        return -1;
    }
    // SAFETY: the caller passes a live handle.
    let sk = unsafe { &mut *sk };
    let (slot, flag) = match queue_id {
        sys::TCP_RECV_QUEUE => (&mut sk.recv_queue, FREE_RQ),
        sys::TCP_SEND_QUEUE => (&mut sk.send_queue, FREE_SQ),
        _ => return -1,
    };
    if sk.flags & flag != 0 {
        // SAFETY: a buffer we own.
        unsafe { libc::free((*slot).cast()) };
        sk.flags &= !flag;
    }
    *slot = bytes;
    if flags & SOCCR_MEM_EXCL != 0 {
        sk.flags |= flag;
    }
    0
}

/// Sets the source (`self` != 0) or destination address restore uses.
///
/// # Safety
/// `sk` is a live handle; `addr` stays valid until resume/release (with SOCCR_MEM_EXCL it is
/// malloc(3) memory).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn libsoccr_set_addr(
    sk: *mut LibsoccrSk,
    self_: c_int,
    addr: *mut SockAddr,
    flags: c_uint,
) -> c_int {
    if sk.is_null() || flags & !SOCCR_MEM_EXCL != 0 {
        return -1;
    }
    // SAFETY: the caller passes a live handle.
    let sk = unsafe { &mut *sk };
    let (slot, flag) = if self_ != 0 {
        (&mut sk.src_addr, FREE_SA)
    } else {
        (&mut sk.dst_addr, FREE_DA)
    };
    if sk.flags & flag != 0 {
        // SAFETY: an address we own.
        unsafe { libc::free((*slot).cast()) };
        sk.flags &= !flag;
    }
    *slot = addr;
    if flags & SOCCR_MEM_EXCL != 0 {
        sk.flags |= flag;
    }
    0
}

/// Rebuilds the connection into the paused socket from `data`, the addresses and the queue
/// bytes set before. Returns 0, or -1 (logged).
///
/// # Safety
/// `sk` is a live handle; `data` is readable and writable for `data_size` bytes; the queue
/// buffers set hold at least inq_len and outq_len bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn libsoccr_restore(
    sk: *mut LibsoccrSk,
    data: *mut SkData,
    data_size: c_uint,
) -> c_int {
    if sk.is_null() || data.is_null() || data_size < DATA_MIN_SIZE {
        log(SOCCR_LOG_ERR, "invalid input parameters");
        return -1;
    }
    // SAFETY: the caller passes a live handle.
    let sk = unsafe { &*sk };
    if sk.src_addr.is_null() || sk.dst_addr.is_null() {
        log(SOCCR_LOG_ERR, "source or destination address not set");
        return -1;
    }
    // SAFETY: data holds at least the 17 fields (checked above).
    let mut d = unsafe { data.read_unaligned() };
    let queue = |p: *mut c_char, len: u32| {
        // SAFETY: the caller promises len bytes at p.
        (!p.is_null()).then(|| unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len as usize) })
    };
    let rq = queue(sk.recv_queue, d.inq_len);
    let sq = queue(sk.send_queue, d.outq_len);
    // SAFETY: both addresses were set by the caller and are live.
    let (src, dst) = unsafe { (&*sk.src_addr, &*sk.dst_addr) };
    let r = fail(
        soccr_rt::restore_data(sk.fd, &mut d, src, dst, rq, sq)
            .and_then(|()| soccr_rt::restore_fins(sk.fd, &mut d, src, dst, sq)),
    );
    // SAFETY: data is writable for data_size bytes (the contract), which hold the 17 fields
    // (checked above).
    unsafe { data.write_unaligned(d) };
    if r.is_some() { 0 } else { -1 }
}

// The layouts soccr.h promises.
const _: () = assert!(size_of::<SkData>() == 68);
const _: () = assert!(size_of::<SockAddr>() == size_of::<libc::sockaddr_in6>());
