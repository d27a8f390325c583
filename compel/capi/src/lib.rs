//! compel's C ABI (layer: a thin shell over the `compel` runtime): `libcompel.so` and
//! `libcompel.a`, described by `compel/include/compel.h`, so that a debugger or profiler
//! written in C can seize a task, infect it with a parasite blob, call it, run syscalls in it
//! and cure it.
//!
//! ```c
//! #include <compel.h>
//! #include "parasite.h"            /* from `compel hgen --lang c -p parasite` */
//!
//! struct compel_blob_desc blob;
//! compel_ctl_t *ctl = compel_prepare(pid);
//! parasite_get_blob_desc(&blob);
//! if (!ctl || compel_infect(ctl, &blob, 4096) < 0)   /* compel_infect_blob() */
//!         fprintf(stderr, "%s\n", compel_last_error());
//! *(long *)compel_parasite_args_p(ctl) = 42;
//! compel_rpc_call_sync(COMPEL_CMD_USER, ctl);
//! compel_cure(ctl);
//! ```
//!
//! Conventions: functions return 0 (or a count) on success and a negative errno on failure;
//! a failed parasite command returns the errno the parasite reported. [`compel_last_error`]
//! describes the last failure of the calling thread. A `compel_ctl_t` must be used from the
//! thread that created it (ptrace's rule).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::ffi::{CStr, CString, c_char, c_int, c_long, c_uint, c_ulong, c_void};
use std::os::fd::{BorrowedFd, IntoRawFd, OwnedFd};
use std::sync::Mutex;
use std::time::Duration;

use compel_proto::blob::{BlobDesc, Relocs, Symbol, Symbols};
use compel_rt::infect::{InfectError, InfectOptions, Parasite, RpcError};
use compel_rt::{Task, TaskError};
use nix::errno::Errno;

mod cpu;
mod criu;
mod criu_extra;
mod criu_regs;

/// An infection handle: the seized task and, once infected, the parasite in it.
pub struct CompelCtl {
    pid: i32,
    task: Option<Task>,
    parasite: Option<Parasite<Task>>,
    fds: VecDeque<OwnedFd>,
    timeout: Duration,
    /// CRIU's `struct parasite_blob_desc`, filled by `<prefix>_setup_c_header()`.
    criu_blob: criu::ParasiteBlobDesc,
    /// Storage for CRIU's `struct infect_ctx` (`compel_infect_ctx()`).
    criu_ictx: criu::InfectCtx,
    /// What `compel_task_sigmask()` last returned a pointer to.
    criu_sigmask: u64,
}

impl CompelCtl {
    fn task(&mut self) -> Option<&mut Task> {
        match (&mut self.task, &mut self.parasite) {
            (Some(t), _) => Some(t),
            (None, Some(p)) => Some(p.task()),
            (None, None) => None,
        }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(msg: String) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

fn task_errno(e: &TaskError) -> i32 {
    match e {
        TaskError::NoSuchTask { .. } | TaskError::Died { .. } => libc::ESRCH,
        TaskError::Zombie { .. } => libc::ESRCH,
        TaskError::TracedByOther { .. } => libc::EBUSY,
        TaskError::PermissionDenied { .. } | TaskError::SeccompNeedsCapSysAdmin { .. } => {
            libc::EPERM
        }
        TaskError::NotOurThread { .. } => libc::ESRCH,
        TaskError::Ptrace { source, .. } | TaskError::Wait { source, .. } => *source as i32,
        _ => libc::EIO,
    }
}

fn rpc_errno(e: &RpcError) -> i32 {
    match e {
        RpcError::Failed { errno, .. } => *errno as i32,
        RpcError::Closed { .. } => libc::ECONNRESET,
        RpcError::Timeout { .. } => libc::ETIMEDOUT,
        RpcError::Socket { source, .. } => *source as i32,
        RpcError::NotRunning { .. } => libc::ENOTCONN,
        RpcError::PayloadTooSmall { .. } => libc::E2BIG,
        RpcError::Trap { source, .. } => task_errno(source),
        _ => libc::EPROTO,
    }
}

fn infect_errno(e: &InfectError) -> i32 {
    match e {
        InfectError::Task(t) => task_errno(t),
        InfectError::RemoteSyscall { source, .. }
        | InfectError::TakeFd { source, .. }
        | InfectError::HostMap { source, .. } => *source as i32,
        InfectError::Rpc(r) => rpc_errno(r),
        InfectError::Blob(_) | InfectError::Sigframe { .. } => libc::EINVAL,
        _ => libc::EIO,
    }
}

/// Records `e` as the last error and returns `-errno`.
fn fail(errno: i32, msg: String) -> c_int {
    set_error(msg);
    -errno.max(1)
}

fn rpc_fail(e: RpcError) -> c_int {
    fail(rpc_errno(&e), e.to_string())
}

/// The control handle behind `ctl`, or an error code.
///
/// # Safety
/// `ctl` is null or a live pointer from [`compel_prepare`].
unsafe fn ctl_mut<'a>(ctl: *mut CompelCtl) -> Result<&'a mut CompelCtl, c_int> {
    // SAFETY: the caller passes null or a pointer compel_prepare returned and that was not
    // freed; C callers own it exclusively for the duration of the call.
    unsafe { ctl.as_mut() }.ok_or_else(|| fail(libc::EINVAL, "null compel_ctl_t".into()))
}

fn parasite_of(ctl: &mut CompelCtl) -> Result<&mut Parasite<Task>, c_int> {
    let pid = ctl.pid;
    ctl.parasite
        .as_mut()
        .ok_or_else(|| fail(libc::ENOTCONN, format!("task {pid} is not infected")))
}

/// The message describing the calling thread's last failure (empty if none). Valid until the
/// next failing call on this thread.
#[unsafe(no_mangle)]
pub extern "C" fn compel_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// A C log callback and the most verbose level it wants.
type LogFn = extern "C" fn(level: c_uint, msg: *const c_char);

static LOG: Mutex<Option<(LogFn, u32)>> = Mutex::new(None);

struct CLogLayer;

struct MsgVisitor(String);

impl tracing::field::Visit for MsgVisitor {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

fn level_num(l: &tracing::Level) -> u32 {
    match *l {
        tracing::Level::ERROR => 1,
        tracing::Level::WARN => 2,
        tracing::Level::INFO => 3,
        _ => 4,
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CLogLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let Some((f, max)) = *LOG.lock().unwrap_or_else(|e| e.into_inner()) else {
            return;
        };
        let level = level_num(event.metadata().level());
        if level > max {
            return;
        }
        let mut v = MsgVisitor(String::new());
        event.record(&mut v);
        let line = format!("{}: {}", event.metadata().target(), v.0);
        if let Ok(c) = CString::new(line.replace('\0', " ")) {
            f(level, c.as_ptr());
        }
    }
}

/// Sends compel's log (including the parasite's log lines) to `fn`, for levels up to `level`
/// (1 error .. 4 debug). A null `fn` turns logging off.
#[unsafe(no_mangle)]
pub extern "C" fn compel_log_init(f: Option<LogFn>, level: c_uint) {
    use tracing_subscriber::layer::SubscriberExt;
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    *LOG.lock().unwrap_or_else(|e| e.into_inner()) = f.map(|f| (f, level));
    INSTALLED.call_once(|| {
        let sub = tracing_subscriber::registry().with(CLogLayer);
        if tracing::subscriber::set_global_default(sub).is_err() {
            set_error("another tracing subscriber is already installed".into());
        }
    });
}

/// Seizes every thread of process `pid` (or takes over the task `compel_stop_task()` seized
/// on this thread). Returns a handle, or NULL with [`compel_last_error`] set.
#[unsafe(no_mangle)]
pub extern "C" fn compel_prepare(pid: c_int) -> *mut CompelCtl {
    // A task `compel_stop_task()` seized on this thread is taken over as it is.
    let seized = match criu::take_stopped(pid) {
        Some(t) => Ok(t),
        None => Task::seize(pid),
    };
    match seized {
        Ok(task) => Box::into_raw(Box::new(CompelCtl {
            pid,
            task: Some(task),
            parasite: None,
            fds: VecDeque::new(),
            timeout: Duration::from_secs(10),
            criu_blob: criu::ParasiteBlobDesc::default(),
            criu_ictx: criu::InfectCtx::default(),
            criu_sigmask: 0,
        })),
        Err(e) => {
            fail(task_errno(&e), e.to_string());
            std::ptr::null_mut()
        }
    }
}

/// `struct compel_blob_symbol` of `<compel/blob.h>`.
#[repr(C)]
pub struct CBlobSymbol {
    name: *const c_char,
    offset: c_ulong,
}

/// `struct compel_blob_desc` of `<compel/blob.h>`.
#[repr(C)]
pub struct CBlobDesc {
    image: *const u8,
    image_size: c_ulong,
    text_size: c_ulong,
    bss_size: c_ulong,
    entry: c_ulong,
    relocs: *const c_uint,
    nr_relocs: c_ulong,
    symbols: *const CBlobSymbol,
    nr_symbols: c_ulong,
}

fn do_infect(ctl: &mut CompelCtl, blob: &BlobDesc<'_>, args_size: usize) -> c_int {
    if ctl.parasite.is_some() {
        return fail(
            libc::EALREADY,
            format!("task {} is already infected", ctl.pid),
        );
    }
    let Some(task) = ctl.task.take() else {
        return fail(libc::ESRCH, format!("task {} is released", ctl.pid));
    };
    let opts = InfectOptions {
        payload_size: args_size.max(64),
        timeout: ctl.timeout,
        ..InfectOptions::default()
    };
    // The task moves into the parasite; on failure it is detached (dropped).
    match Parasite::infect(task, blob, opts) {
        Ok(p) => {
            ctl.parasite = Some(p);
            0
        }
        Err(e) => fail(infect_errno(&e), e.to_string()),
    }
}

/// Infects the task with `blob` (`compel_infect()` of `<compel.h>`, filled by a `compel hgen --lang c` header's
/// `<prefix>_get_blob_desc()`), with at least `args_size` bytes of command payload, and starts
/// the parasite's service loop in the main thread. On failure the task is released.
///
/// # Safety
/// `ctl` comes from [`compel_prepare`]; `blob` points at a descriptor whose arrays are valid for
/// the sizes it gives.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_infect_blob(
    ctl: *mut CompelCtl,
    blob: *const CBlobDesc,
    args_size: c_ulong,
) -> c_int {
    // SAFETY: `ctl` is null or a live handle from compel_prepare, not freed yet (this
    // function's safety contract); ctl_mut refuses null.
    let ctl = match unsafe { ctl_mut(ctl) } {
        Ok(c) => c,
        Err(e) => return e,
    };
    // SAFETY: `blob` is null or points at a valid descriptor (this function's safety
    // contract).
    let Some(d) = (unsafe { blob.as_ref() }) else {
        return fail(libc::EINVAL, "null blob descriptor".into());
    };
    // SAFETY: as this function requires, the descriptor's arrays are valid for the sizes it gives.
    unsafe { infect_desc(ctl, d, args_size) }
}

/// Infects `ctl`'s task with the blob `d` describes.
///
/// # Safety
/// `d`'s image, relocations and symbols are valid for the sizes it gives.
unsafe fn infect_desc(ctl: &mut CompelCtl, d: &CBlobDesc, args_size: c_ulong) -> c_int {
    if d.image.is_null() || (d.relocs.is_null() && d.nr_relocs > 0) {
        return fail(
            libc::EINVAL,
            "blob descriptor without image or relocations".into(),
        );
    }
    // SAFETY: the descriptor's image and relocations are valid for the sizes it gives (caller
    // contract), and live for this call.
    let (image, relocs) = unsafe {
        (
            std::slice::from_raw_parts(d.image, d.image_size as usize),
            if d.nr_relocs == 0 {
                &[][..]
            } else {
                std::slice::from_raw_parts(d.relocs, d.nr_relocs as usize)
            },
        )
    };
    // Symbol names are borrowed from the descriptor (no copies on the infect path); a name
    // that is not UTF-8 cannot be one the runtime looks up, and is left out.
    let mut syms: Vec<Symbol<'_>> = Vec::new();
    if !d.symbols.is_null() {
        syms.reserve(d.nr_symbols as usize);
        for i in 0..d.nr_symbols as usize {
            // SAFETY: i < nr_symbols, within the caller's array.
            let s = unsafe { &*d.symbols.add(i) };
            if s.name.is_null() {
                continue;
            }
            // SAFETY: symbol names are NUL-terminated C strings that outlive the call (this
            // function's safety contract).
            if let Ok(name) = unsafe { CStr::from_ptr(s.name) }.to_str() {
                syms.push(Symbol {
                    name,
                    offset: s.offset as usize,
                });
            }
        }
    }
    let desc = BlobDesc {
        image,
        text_size: d.text_size as usize,
        bss_size: d.bss_size as usize,
        entry: d.entry as usize,
        relocs: Relocs::Slice(relocs),
        symbols: Symbols::Slice(&syms),
    };
    do_infect(ctl, &desc, args_size as usize)
}

/// Infects the task with a blob file's contents as `compel pack` writes them (`len` bytes at
/// `data`); otherwise as [`compel_infect_blob`].
///
/// # Safety
/// `ctl` comes from [`compel_prepare`]; `data` is valid for `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_infect_packed(
    ctl: *mut CompelCtl,
    data: *const c_void,
    len: c_ulong,
    args_size: c_ulong,
) -> c_int {
    // SAFETY: `ctl` is null or a live handle from compel_prepare, not freed yet (this
    // function's safety contract); ctl_mut refuses null.
    let ctl = match unsafe { ctl_mut(ctl) } {
        Ok(c) => c,
        Err(e) => return e,
    };
    if data.is_null() {
        return fail(libc::EINVAL, "null blob data".into());
    }
    // SAFETY: `data` is valid for `len` bytes (this function's safety contract).
    let bytes = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len as usize) };
    match BlobDesc::parse(bytes) {
        Ok(desc) => do_infect(ctl, &desc, args_size as usize),
        Err(e) => fail(libc::EINVAL, format!("blob: {e}")),
    }
}

/// The command payload area (shared with the parasite), or NULL if not infected.
///
/// # Safety
/// `ctl` comes from [`compel_prepare`]. The pointer is valid until the cure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_parasite_args_p(ctl: *mut CompelCtl) -> *mut c_void {
    // SAFETY: `ctl` is null or a live handle from compel_prepare, not freed yet (this
    // function's safety contract); ctl_mut refuses null.
    match unsafe { ctl_mut(ctl) }.map(parasite_of) {
        Ok(Ok(p)) => p.payload_mut().as_mut_ptr().cast(),
        _ => std::ptr::null_mut(),
    }
}

/// The size of the payload area, or 0 if not infected.
///
/// # Safety
/// `ctl` comes from [`compel_prepare`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_parasite_args_s(ctl: *mut CompelCtl) -> c_ulong {
    // SAFETY: `ctl` is null or a live handle from compel_prepare, not freed yet (this
    // function's safety contract); ctl_mut refuses null.
    match unsafe { ctl_mut(ctl) }.map(parasite_of) {
        Ok(Ok(p)) => p.payload().len() as c_ulong,
        _ => 0,
    }
}

/// Sends command `cmd` to the parasite without waiting for its answer.
///
/// # Safety
/// `ctl` comes from [`compel_prepare`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_rpc_call(cmd: c_uint, ctl: *mut CompelCtl) -> c_int {
    // SAFETY: `ctl` is null or a live handle from compel_prepare, not freed yet (this
    // function's safety contract); ctl_mut refuses null.
    let p = match unsafe { ctl_mut(ctl) }.and_then(parasite_of) {
        Ok(p) => p,
        Err(e) => return e,
    };
    match p.send_command(cmd) {
        Ok(()) => 0,
        Err(e) => rpc_fail(e),
    }
}

/// Waits for the answer to `cmd`: 0, or the command's negative errno. Fds the parasite sent
/// meanwhile are kept for [`compel_util_recv_fd`].
///
/// # Safety
/// `ctl` comes from [`compel_prepare`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_rpc_sync(cmd: c_uint, ctl: *mut CompelCtl) -> c_int {
    // SAFETY: `ctl` is null or a live handle from compel_prepare, not freed yet (this
    // function's safety contract); ctl_mut refuses null.
    let ctl = match unsafe { ctl_mut(ctl) } {
        Ok(c) => c,
        Err(e) => return e,
    };
    let res = match parasite_of(ctl) {
        Ok(p) => p.wait_answer(cmd),
        Err(e) => return e,
    };
    match res {
        Ok(fds) => {
            ctl.fds.extend(fds);
            0
        }
        Err(e) => rpc_fail(e),
    }
}

/// [`compel_rpc_call`] then [`compel_rpc_sync`].
///
/// # Safety
/// `ctl` comes from [`compel_prepare`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_rpc_call_sync(cmd: c_uint, ctl: *mut CompelCtl) -> c_int {
    // SAFETY: `ctl` is null or a live handle from compel_prepare, as compel_rpc_call needs.
    let r = unsafe { compel_rpc_call(cmd, ctl) };
    if r < 0 {
        return r;
    }
    // SAFETY: `ctl` is null or a live handle from compel_prepare, as compel_rpc_sync needs.
    unsafe { compel_rpc_sync(cmd, ctl) }
}

/// Sends `fd` (which stays open here) to the parasite, for a command that receives one.
///
/// # Safety
/// `ctl` comes from [`compel_prepare`]; `fd` is an open fd of this process.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_util_send_fd(ctl: *mut CompelCtl, fd: c_int) -> c_int {
    // SAFETY: `ctl` is null or a live handle from compel_prepare, not freed yet (this
    // function's safety contract); ctl_mut refuses null.
    let p = match unsafe { ctl_mut(ctl) }.and_then(parasite_of) {
        Ok(p) => p,
        Err(e) => return e,
    };
    if fd < 0 {
        return fail(libc::EBADF, format!("bad fd {fd}"));
    }
    // SAFETY: `fd` is an open descriptor of this process for the whole call (this function's
    // safety contract).
    let b = unsafe { BorrowedFd::borrow_raw(fd) };
    match p.send_fds(&[b]) {
        Ok(()) => 0,
        Err(e) => rpc_fail(e),
    }
}

/// Receives one fd the parasite sent; stores it (now owned by the caller) in `*pfd`.
///
/// # Safety
/// `ctl` comes from [`compel_prepare`]; `pfd` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_util_recv_fd(ctl: *mut CompelCtl, pfd: *mut c_int) -> c_int {
    // SAFETY: `ctl` is null or a live handle from compel_prepare, not freed yet (this
    // function's safety contract); ctl_mut refuses null.
    let ctl = match unsafe { ctl_mut(ctl) } {
        Ok(c) => c,
        Err(e) => return e,
    };
    if pfd.is_null() {
        return fail(libc::EINVAL, "null fd pointer".into());
    }
    if ctl.fds.is_empty() {
        let got = match parasite_of(ctl) {
            Ok(p) => p.recv_fds(),
            Err(e) => return e,
        };
        match got {
            Ok(f) => ctl.fds.extend(f),
            Err(e) => return rpc_fail(e),
        }
    }
    match ctl.fds.pop_front() {
        Some(fd) => {
            // SAFETY: `pfd` is writable (this function's safety contract) and was checked non-null.
            unsafe { *pfd = fd.into_raw_fd() };
            0
        }
        None => fail(libc::EPROTO, "the parasite sent no fd".into()),
    }
}

/// Runs command `cmd` once in thread `tid` (not the main thread, which runs the daemon), with
/// the same payload area.
///
/// # Safety
/// `ctl` comes from [`compel_prepare`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_run_in_thread(
    ctl: *mut CompelCtl,
    tid: c_int,
    cmd: c_uint,
) -> c_int {
    // SAFETY: `ctl` is null or a live handle from compel_prepare, not freed yet (this
    // function's safety contract); ctl_mut refuses null.
    let p = match unsafe { ctl_mut(ctl) }.and_then(parasite_of) {
        Ok(p) => p,
        Err(e) => return e,
    };
    match p.run_in_thread(tid, cmd) {
        Ok(()) => 0,
        Err(e) => rpc_fail(e),
    }
}

/// Writes up to `max` thread ids of the task into `tids` (main thread first); returns how many
/// threads there are.
///
/// # Safety
/// `ctl` comes from [`compel_prepare`]; `tids` is writable for `max` ints.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_threads(
    ctl: *mut CompelCtl,
    tids: *mut c_int,
    max: c_ulong,
) -> c_int {
    // SAFETY: `ctl` is null or a live handle from compel_prepare, not freed yet (this
    // function's safety contract); ctl_mut refuses null.
    let ctl = match unsafe { ctl_mut(ctl) } {
        Ok(c) => c,
        Err(e) => return e,
    };
    let Some(task) = ctl.task() else {
        return fail(libc::ESRCH, "task released".into());
    };
    let all = task.threads();
    if !tids.is_null() {
        for (i, t) in all.iter().take(max as usize).enumerate() {
            // SAFETY: i < max, within the caller's array.
            unsafe { *tids.add(i) = *t };
        }
    }
    all.len() as c_int
}

/// Runs syscall `nr` with six arguments in the task (in the main thread; while infected, in
/// the parasite's thread while it idles); stores the raw result (`-errno` on failure) in
/// `*ret`.
///
/// # Safety
/// `ctl` comes from [`compel_prepare`]; `ret` is writable.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn compel_syscall(
    ctl: *mut CompelCtl,
    nr: c_int,
    ret: *mut c_long,
    a1: c_ulong,
    a2: c_ulong,
    a3: c_ulong,
    a4: c_ulong,
    a5: c_ulong,
    a6: c_ulong,
) -> c_int {
    // SAFETY: `ctl` is null or a live handle from compel_prepare, not freed yet (this
    // function's safety contract); ctl_mut refuses null.
    let ctl = match unsafe { ctl_mut(ctl) } {
        Ok(c) => c,
        Err(e) => return e,
    };
    if ret.is_null() || nr < 0 {
        return fail(libc::EINVAL, "bad syscall number or result pointer".into());
    }
    let args = [a1, a2, a3, a4, a5, a6];
    let r = match (&mut ctl.task, &mut ctl.parasite) {
        (_, Some(p)) => p.syscall(nr as usize, args).map_err(rpc_fail),
        (Some(t), None) => t
            .remote_syscall(nr as usize, args)
            .map_err(|e| fail(task_errno(&e), e.to_string())),
        (None, None) => Err(fail(libc::ESRCH, "task released".into())),
    };
    match r {
        Ok(v) => {
            // SAFETY: `ret` is writable (this function's safety contract) and was checked non-null.
            unsafe { *ret = v as c_long };
            0
        }
        Err(e) => e,
    }
}

/// Ends the parasite and returns the task to its own code and state; the task stays seized
/// (run more syscalls, infect again, or [`compel_cure_local`]).
///
/// # Safety
/// `ctl` comes from [`compel_prepare`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_cure_remote(ctl: *mut CompelCtl) -> c_int {
    // SAFETY: `ctl` is null or a live handle from compel_prepare, not freed yet (this
    // function's safety contract); ctl_mut refuses null.
    let ctl = match unsafe { ctl_mut(ctl) } {
        Ok(c) => c,
        Err(e) => return e,
    };
    ctl.fds.clear();
    let Some(p) = ctl.parasite.take() else {
        return 0;
    };
    match p.cure_into_task() {
        Ok(task) => {
            ctl.task = Some(task);
            0
        }
        Err(e) => fail(infect_errno(&e), e.to_string()),
    }
}

/// Releases the task (detaches; a stopped task stays stopped) and frees `ctl`.
///
/// # Safety
/// `ctl` comes from [`compel_prepare`] and is not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_cure_local(ctl: *mut CompelCtl) -> c_int {
    if ctl.is_null() {
        return fail(libc::EINVAL, "null compel_ctl_t".into());
    }
    // SAFETY: ctl came from Box::into_raw in compel_prepare and is not used again (contract).
    let mut ctl = unsafe { Box::from_raw(ctl) };
    let mut rc = 0;
    if let Some(p) = ctl.parasite.take() {
        match p.cure_into_task() {
            Ok(t) => ctl.task = Some(t),
            Err(e) => rc = fail(infect_errno(&e), e.to_string()),
        }
    }
    if let Some(t) = ctl.task.take()
        && let Err(e) = t.detach()
        && rc == 0
    {
        rc = fail(task_errno(&e), e.to_string());
    }
    rc
}

/// [`compel_cure_remote`] then [`compel_cure_local`]: the task runs on as if nothing happened
/// and `ctl` is freed.
///
/// # Safety
/// `ctl` comes from [`compel_prepare`] and is not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_cure(ctl: *mut CompelCtl) -> c_int {
    // SAFETY: `ctl` is null or a live handle from compel_prepare, as compel_cure_remote needs.
    let r = unsafe { compel_cure_remote(ctl) };
    // SAFETY: `ctl` is null or the same live handle, as compel_cure_local needs; it frees it in
    // every case and nothing uses it afterwards.
    let l = unsafe { compel_cure_local(ctl) };
    if r < 0 { r } else { l }
}

/// Sets how long to wait for any answer of the parasite (default 10000 ms).
///
/// # Safety
/// `ctl` comes from [`compel_prepare`]; call before [`compel_infect_blob`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_set_timeout(ctl: *mut CompelCtl, ms: c_ulong) -> c_int {
    // SAFETY: `ctl` is null or a live handle from compel_prepare, not freed yet (this
    // function's safety contract); ctl_mut refuses null.
    match unsafe { ctl_mut(ctl) } {
        Ok(c) => {
            c.timeout = Duration::from_millis(ms);
            0
        }
        Err(e) => e,
    }
}

/// Errno names for messages (a tiny helper for C users): the text of `-err`.
#[unsafe(no_mangle)]
pub extern "C" fn compel_strerror(err: c_int) -> *const c_char {
    thread_local! {
        static BUF: RefCell<CString> = RefCell::new(CString::default());
    }
    let e = Errno::from_raw(err.abs());
    let s = CString::new(e.desc()).unwrap_or_default();
    BUF.with(|b| {
        *b.borrow_mut() = s;
        b.borrow().as_ptr()
    })
}
