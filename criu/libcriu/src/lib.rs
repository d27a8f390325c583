//! libcriu (layer: C ABI over the RPC protocol): the C library with the names, types and
//! behaviour of CRIU's `lib/c/criu.h`, speaking `rpc.proto` to a `criu` binary.
//!
//! A C program fills an options set (the global one with `criu_init_opts()` and `criu_set_*`,
//! or its own with `criu_local_init_opts()` and `criu_local_set_*`) and calls an operation:
//! `criu_dump`, `criu_restore`, `criu_check`, `criu_get_version`, `criu_feature_check`, ...
//! Each operation reaches criu the way the options say: by default it starts `criu swrk FD`
//! (the binary found on `$PATH`, or the one given to `criu_set_service_binary`), otherwise it
//! connects to `criu service` at `criu_set_service_address`, or uses the socket given to
//! `criu_set_service_fd`. Return values and `errno` follow CRIU's libcriu: `0` or a pid on
//! success, `-EBADE` when criu reports a failure (with `errno` set from `cr_errno`),
//! `-ECOMM` when the conversation breaks, `-ECONNREFUSED` when criu cannot be reached.
//!
//! ```c
//! #include <criu.h>
//! criu_init_opts();
//! criu_set_service_binary("/usr/local/sbin/criu");
//! criu_set_pid(pid);
//! criu_set_images_dir_fd(dirfd);
//! criu_set_leave_running(true);
//! if (criu_dump() < 0) perror("dump");
//! ```

mod ops;
mod setters;

use std::ffi::{CStr, CString, c_char, c_int};
use std::sync::atomic::{AtomicI32, AtomicPtr, Ordering};

use criu_images::pb::CriuOpts;

/// CRIU's default service binary (found on `$PATH`).
const DEFAULT_BINARY: &str = "criu";
/// CRIU's default service address.
const DEFAULT_ADDRESS: &str = "./criu_service.socket";

/// How an options set reaches criu (`enum criu_service_comm`).
#[derive(Debug)]
enum Comm {
    /// `CRIU_COMM_SK`: connect to `criu service` at this address.
    Sk(CString),
    /// `CRIU_COMM_FD`: a socket the caller connected.
    Fd(c_int),
    /// `CRIU_COMM_BIN`: start `BINARY swrk FD`.
    Bin(CString),
}

/// The callback a notification goes to (`int (*cb)(char *action, criu_notify_arg_t na)`).
type NotifyCb = unsafe extern "C" fn(*mut c_char, *mut criu_notify_arg) -> c_int;

/// An options set (`criu_opts` in `criu.h`, opaque to C).
#[allow(non_camel_case_types)]
#[derive(Debug)]
pub struct criu_opts {
    rpc: CriuOpts,
    notify: Option<NotifyCb>,
    comm: Comm,
    swrk_pid: c_int,
}

/// What a notification callback is handed (`criu_notify_arg_t` points to one); read it with
/// `criu_notify_pid`.
#[allow(non_camel_case_types)]
#[derive(Debug)]
pub struct criu_notify_arg {
    pid: Option<i32>,
}

impl criu_opts {
    fn new() -> criu_opts {
        criu_opts {
            rpc: CriuOpts {
                // CRIU's defaults for the two fields whose default is not zero.
                images_dir_fd: -1,
                ..Default::default()
            },
            notify: None,
            comm: Comm::Bin(c(DEFAULT_BINARY)),
            swrk_pid: -1,
        }
    }
}

fn c(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

/// The options set the global (`criu_*`) functions use.
static GLOBAL: AtomicPtr<criu_opts> = AtomicPtr::new(std::ptr::null_mut());
/// The pty master fd the last `orphan-pts-master` notification carried.
static ORPHAN_PTS_MASTER: AtomicI32 = AtomicI32::new(-1);

fn global() -> *mut criu_opts {
    GLOBAL.load(Ordering::Acquire)
}

/// Reads a C string the caller passed; `None` for NULL or text that is not UTF-8.
///
/// # Safety
/// `p` is NULL or a NUL-terminated string that lives for the call.
unsafe fn text(p: *const c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: the caller guarantees `p` is a live NUL-terminated string.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .ok()
        .map(str::to_string)
}

/// Allocates an options set with CRIU's defaults into `*o`. Returns 0, or -1.
///
/// # Safety
/// `o` is NULL or points to writable storage for a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn criu_local_init_opts(o: *mut *mut criu_opts) -> c_int {
    if o.is_null() {
        return -1;
    }
    // SAFETY: `o` is non-null and writable (the caller's contract).
    unsafe { *o = Box::into_raw(Box::new(criu_opts::new())) };
    0
}

/// Frees an options set made by `criu_local_init_opts`.
///
/// # Safety
/// `opts` is NULL or a set from `criu_local_init_opts` not freed yet.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn criu_local_free_opts(opts: *mut criu_opts) {
    if !opts.is_null() {
        // SAFETY: `opts` came from Box::into_raw in criu_local_init_opts and is freed once.
        drop(unsafe { Box::from_raw(opts) });
    }
}

/// (Re)initialises the global options set. Returns 0, or -1.
#[unsafe(no_mangle)]
pub extern "C" fn criu_init_opts() -> c_int {
    let new = Box::into_raw(Box::new(criu_opts::new()));
    let old = GLOBAL.swap(new, Ordering::AcqRel);
    // SAFETY: `old` is NULL or the previous global set, which nothing uses any more.
    unsafe { criu_local_free_opts(old) };
    0
}

/// Frees the global options set.
#[unsafe(no_mangle)]
pub extern "C" fn criu_free_opts() {
    let old = GLOBAL.swap(std::ptr::null_mut(), Ordering::AcqRel);
    // SAFETY: `old` is NULL or the global set, now unreachable from the global functions.
    unsafe { criu_local_free_opts(old) };
}

/// Talk to `criu service` at `path` (NULL: CRIU's default address). Returns 0, or -ENOMEM.
///
/// # Safety
/// `opts` is NULL or a live set; `path` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn criu_local_set_service_address(
    opts: *mut criu_opts,
    path: *const c_char,
) -> c_int {
    // SAFETY: `opts` is NULL or live and unaliased for this call (the caller's contract).
    let Some(o) = (unsafe { opts.as_mut() }) else {
        return -libc::EINVAL;
    };
    // SAFETY: `path` is NULL or a NUL-terminated string (the caller's contract).
    let p = unsafe { text(path) }.unwrap_or_else(|| DEFAULT_ADDRESS.to_string());
    o.comm = Comm::Sk(c(&p));
    0
}

/// Talk to criu over the connected socket `fd`.
///
/// # Safety
/// `opts` is NULL or a live set.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn criu_local_set_service_fd(opts: *mut criu_opts, fd: c_int) {
    // SAFETY: `opts` is NULL or live and unaliased for this call.
    if let Some(o) = unsafe { opts.as_mut() } {
        o.comm = Comm::Fd(fd);
    }
}

/// Start `path swrk FD` for each operation (NULL: `criu` from `$PATH`). Returns 0.
///
/// # Safety
/// `opts` is NULL or a live set; `path` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn criu_local_set_service_binary(
    opts: *mut criu_opts,
    path: *const c_char,
) -> c_int {
    // SAFETY: `opts` is NULL or live and unaliased for this call.
    let Some(o) = (unsafe { opts.as_mut() }) else {
        return -libc::EINVAL;
    };
    // SAFETY: `path` is NULL or a NUL-terminated string.
    let p = unsafe { text(path) }.unwrap_or_else(|| DEFAULT_BINARY.to_string());
    o.comm = Comm::Bin(c(&p));
    0
}

/// [`criu_local_set_service_address`] on the global set.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn criu_set_service_address(path: *const c_char) -> c_int {
    // SAFETY: the global set is NULL or live; `path` per the caller's contract.
    unsafe { criu_local_set_service_address(global(), path) }
}

/// [`criu_local_set_service_fd`] on the global set.
#[unsafe(no_mangle)]
pub extern "C" fn criu_set_service_fd(fd: c_int) {
    // SAFETY: the global set is NULL or live.
    unsafe { criu_local_set_service_fd(global(), fd) }
}

/// [`criu_local_set_service_binary`] on the global set.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn criu_set_service_binary(path: *const c_char) -> c_int {
    // SAFETY: the global set is NULL or live; `path` per the caller's contract.
    unsafe { criu_local_set_service_binary(global(), path) }
}

/// Sets the callback notifications go to (with `notify_scripts` turned on, as CRIU does).
///
/// # Safety
/// `opts` is NULL or a live set; `cb` is NULL or a function of that signature.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn criu_local_set_notify_cb(opts: *mut criu_opts, cb: Option<NotifyCb>) {
    // SAFETY: `opts` is NULL or live and unaliased for this call.
    if let Some(o) = unsafe { opts.as_mut() } {
        o.notify = cb;
        o.rpc.notify_scripts = Some(true);
    }
}

/// [`criu_local_set_notify_cb`] on the global set.
///
/// # Safety
/// `cb` is NULL or a function of that signature.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn criu_set_notify_cb(cb: Option<NotifyCb>) {
    // SAFETY: the global set is NULL or live.
    unsafe { criu_local_set_notify_cb(global(), cb) }
}

/// The pid a notification names (the restored root for `setup-namespaces`,
/// `post-restore`, ...), 0 if none.
///
/// # Safety
/// `na` is NULL or the argument a notification callback was handed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn criu_notify_pid(na: *mut criu_notify_arg) -> c_int {
    // SAFETY: `na` is NULL or the live argument of the running callback.
    unsafe { na.as_ref() }.and_then(|n| n.pid).unwrap_or(0)
}

/// The pty master descriptor the last `orphan-pts-master` notification carried, or -1.
#[unsafe(no_mangle)]
pub extern "C" fn criu_get_orphan_pts_master_fd() -> c_int {
    ORPHAN_PTS_MASTER.load(Ordering::Acquire)
}
