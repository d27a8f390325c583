//! CRIU compel's host API names (`<compel/infect.h>`, `<compel/log.h>`) on the same runtime,
//! for C hosts written against CRIU's libcompel: they build with our `compel includes` and
//! `compel libs` unchanged. Where the two APIs share a name and a signature (compel_prepare,
//! compel_rpc_*, compel_syscall, compel_cure*, compel_util_*_fd, compel_parasite_args_p) the
//! symbol in lib.rs serves both; the ones here differ or exist only in CRIU's API.

use std::cell::RefCell;
use std::ffi::{c_int, c_uint, c_ulong, c_void};

use compel_rt::{Task, TaskState};

use crate::{CBlobDesc, CompelCtl, LOG, LogFn, ctl_mut, fail, infect_desc, parasite_of};

/// `COMPEL_BLOB_CHEADER`: a blob built into the host by a generated header.
const COMPEL_BLOB_CHEADER: c_uint = 1;

/// `struct parasite_blob_desc` of our `<compel/infect.h>`.
#[repr(C)]
pub struct ParasiteBlobDesc {
    parasite_type: c_uint,
    pub(crate) desc: CBlobDesc,
}

impl Default for ParasiteBlobDesc {
    fn default() -> Self {
        Self {
            parasite_type: 0,
            desc: CBlobDesc {
                image: std::ptr::null(),
                image_size: 0,
                text_size: 0,
                bss_size: 0,
                entry: 0,
                relocs: std::ptr::null(),
                nr_relocs: 0,
                symbols: std::ptr::null(),
                nr_symbols: 0,
            },
        }
    }
}

/// Storage for CRIU's `struct infect_ctx` (the header asserts it fits in 512 bytes). The
/// runtime reads none of it: callers may set the fields they set for CRIU's compel.
#[repr(C, align(16))]
pub struct InfectCtx([u8; 512]);

impl Default for InfectCtx {
    fn default() -> Self {
        Self([0; 512])
    }
}

/// The task states of `<compel/task-state.h>`.
const COMPEL_TASK_ALIVE: c_int = 0x01;
const COMPEL_TASK_DEAD: c_int = 0x02;
const COMPEL_TASK_STOPPED: c_int = 0x03;
const COMPEL_TASK_ZOMBIE: c_int = 0x06;

/// The state letter of `/proc/<pid>/stat` (the field after the parenthesised name).
fn state_letter(stat: &str) -> Option<char> {
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// The state of task `pid` as `/proc/<pid>/stat` shows it (`COMPEL_TASK_*`), or `-errno`;
/// the task is not touched.
pub(crate) fn proc_task_state(pid: c_int) -> c_int {
    if pid <= 0 {
        return fail(libc::ESRCH, format!("no task {pid}"));
    }
    let path = format!("/proc/{pid}/stat");
    let stat = match std::fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) => {
            let errno = match e.raw_os_error() {
                Some(libc::ENOENT) | None => libc::ESRCH,
                Some(n) => n,
            };
            return fail(errno, format!("task {pid}: {path}: {e}"));
        }
    };
    match state_letter(&stat) {
        Some('T' | 't') => COMPEL_TASK_STOPPED,
        Some('Z') => COMPEL_TASK_ZOMBIE,
        Some('X' | 'x') => COMPEL_TASK_DEAD,
        Some(_) => COMPEL_TASK_ALIVE,
        None => fail(libc::EIO, format!("task {pid}: cannot parse {path}")),
    }
}

thread_local! {
    /// Tasks `compel_stop_task()` seized on this thread (ptrace's tracer is a thread) and no
    /// `compel_prepare()` took yet; `compel_resume_task()` lets a leftover one go.
    static STOPPED: RefCell<Vec<Task>> = const { RefCell::new(Vec::new()) };
}

/// The task `compel_stop_task(pid)` seized on this thread, if any: `compel_prepare()` goes on
/// with it instead of seizing a second time.
pub(crate) fn take_stopped(pid: c_int) -> Option<Task> {
    STOPPED.with(|s| {
        let mut s = s.borrow_mut();
        let i = s.iter().position(|t| t.pid() == pid)?;
        Some(s.swap_remove(i))
    })
}

/// CRIU's `compel_stop_task()`: seizes every thread of task `pid` (it stays in a ptrace stop
/// until `compel_prepare()` takes it over or `compel_resume_task()` lets it go) and returns
/// its state as `<compel/task-state.h>` names it, or `-errno`. A task that cannot be seized
/// (a zombie, a task traced by another process) is reported from `/proc` instead, untouched.
#[unsafe(no_mangle)]
pub extern "C" fn compel_stop_task(pid: c_int) -> c_int {
    if pid <= 0 {
        return fail(libc::ESRCH, format!("no task {pid}"));
    }
    if let Some(t) = take_stopped(pid) {
        // Already stopped by an earlier call: report it again, keep it.
        let state = task_state(&t);
        STOPPED.with(|s| s.borrow_mut().push(t));
        return state;
    }
    match Task::seize(pid) {
        Ok(t) => {
            let state = task_state(&t);
            STOPPED.with(|s| s.borrow_mut().push(t));
            state
        }
        Err(e) => match proc_task_state(pid) {
            COMPEL_TASK_ALIVE | COMPEL_TASK_STOPPED => fail(crate::task_errno(&e), e.to_string()),
            other => other,
        },
    }
}

fn task_state(t: &Task) -> c_int {
    match t.state() {
        TaskState::Stopped => COMPEL_TASK_STOPPED,
        TaskState::Zombie => COMPEL_TASK_ZOMBIE,
        TaskState::Dead => COMPEL_TASK_DEAD,
        _ => COMPEL_TASK_ALIVE,
    }
}

/// CRIU's `compel_resume_task()`: lets go of a task `compel_stop_task()` seized and no
/// `compel_prepare()` took (a stopped task stays stopped); after `compel_cure()` there is
/// nothing left to do. Returns 0 or `-errno`.
#[unsafe(no_mangle)]
pub extern "C" fn compel_resume_task(pid: c_int, _orig_state: c_int, _state: c_int) -> c_int {
    match take_stopped(pid) {
        Some(t) => match t.detach() {
            Ok(()) => 0,
            Err(e) => fail(crate::task_errno(&e), e.to_string()),
        },
        None => 0,
    }
}

/// [`crate::compel_prepare`]: there is no infection context to fill.
#[unsafe(no_mangle)]
pub extern "C" fn compel_prepare_noctx(pid: c_int) -> *mut CompelCtl {
    crate::compel_prepare(pid)
}

/// CRIU's `struct parasite_blob_desc` of `ctl`, for `<prefix>_setup_c_header()` to fill.
///
/// # Safety
/// `ctl` comes from [`crate::compel_prepare`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_parasite_blob_desc(ctl: *mut CompelCtl) -> *mut ParasiteBlobDesc {
    // SAFETY: `ctl` comes from `compel_prepare()`, as this function requires.
    match unsafe { ctl_mut(ctl) } {
        Ok(c) => &raw mut c.criu_blob,
        Err(_) => std::ptr::null_mut(),
    }
}

/// CRIU's `struct infect_ctx` of `ctl` (storage the caller may fill; see [`InfectCtx`]).
///
/// # Safety
/// `ctl` comes from [`crate::compel_prepare`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_infect_ctx(ctl: *mut CompelCtl) -> *mut c_void {
    // SAFETY: `ctl` comes from `compel_prepare()`, as this function requires.
    match unsafe { ctl_mut(ctl) } {
        Ok(c) => (&raw mut c.criu_ictx).cast(),
        Err(_) => std::ptr::null_mut(),
    }
}

/// CRIU's `compel_infect()`: infects the task with the blob `compel_parasite_blob_desc()`
/// describes, with `args_size` bytes of argument area. The parasite serves commands from the
/// main thread; `nr_threads` is not needed.
///
/// # Safety
/// `ctl` comes from [`crate::compel_prepare`]; the descriptor was filled by a generated header
/// (its arrays live as long as the program).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_infect(
    ctl: *mut CompelCtl,
    _nr_threads: c_ulong,
    args_size: c_ulong,
) -> c_int {
    // SAFETY: `ctl` comes from `compel_prepare()`; the descriptor was filled by a generated header
    // (its arrays live as long as the program), as this function requires.
    let ctl = match unsafe { ctl_mut(ctl) } {
        Ok(c) => c,
        Err(e) => return e,
    };
    if ctl.criu_blob.parasite_type != COMPEL_BLOB_CHEADER {
        return fail(
            libc::EINVAL,
            format!(
                "task {}: no parasite blob (call <prefix>_setup_c_header(ctl) first)",
                ctl.pid
            ),
        );
    }
    let d: *const CBlobDesc = &raw const ctl.criu_blob.desc;
    // SAFETY: d points into ctl (boxed, alive for the call) and is only read; infect_desc does
    // not touch ctl.criu_blob. The arrays it names are the generated header's statics.
    unsafe { infect_desc(ctl, &*d, args_size) }
}

/// CRIU's `compel_parasite_args_s()`: the argument area if it holds `size` bytes, else NULL.
///
/// # Safety
/// `ctl` comes from [`crate::compel_prepare`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_parasite_args_sized(
    ctl: *mut CompelCtl,
    size: c_ulong,
) -> *mut c_void {
    // SAFETY: `ctl` comes from `compel_prepare()`, as this function requires.
    match unsafe { ctl_mut(ctl) }.map(parasite_of) {
        Ok(Ok(p)) if p.payload().len() as c_ulong >= size => p.payload_mut().as_mut_ptr().cast(),
        Ok(Ok(p)) => {
            let have = p.payload().len();
            fail(
                libc::E2BIG,
                format!("argument area holds {have} bytes, {size} asked"),
            );
            std::ptr::null_mut()
        }
        _ => std::ptr::null_mut(),
    }
}

/// CRIU's `compel_rpc_sock()`: the host's end of the control socket (owned by `ctl`), or -1.
///
/// # Safety
/// `ctl` comes from [`crate::compel_prepare`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_rpc_sock(ctl: *mut CompelCtl) -> c_int {
    use std::os::fd::AsRawFd;
    // SAFETY: `ctl` comes from `compel_prepare()`, as this function requires.
    match unsafe { ctl_mut(ctl) }.map(parasite_of) {
        Ok(Ok(p)) => p.ctl_sock().map_or(-1, |fd| fd.as_raw_fd()),
        _ => -1,
    }
}

/// CRIU's `compel_stop_daemon()`: returns 0 for an infected task; the parasite's command loop
/// ends in [`crate::compel_cure_remote`], which restores the task in the same step.
///
/// # Safety
/// `ctl` comes from [`crate::compel_prepare`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_stop_daemon(ctl: *mut CompelCtl) -> c_int {
    // SAFETY: `ctl` comes from `compel_prepare()`, as this function requires.
    match unsafe { ctl_mut(ctl) }.map(parasite_of) {
        Ok(Ok(_)) => 0,
        Ok(Err(e)) | Err(e) => e,
    }
}

/// CRIU's `compel_infect_no_daemon()`: the same as [`compel_infect`] (the daemon is always
/// started; [`compel_start_daemon`] then has nothing to do).
///
/// # Safety
/// As [`compel_infect`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_infect_no_daemon(
    ctl: *mut CompelCtl,
    nr_threads: c_ulong,
    args_size: c_ulong,
) -> c_int {
    // SAFETY: `ctl` comes from `compel_prepare()` and its blob descriptor was filled by a generated
    // header, as this function requires (it is compel_infect's contract).
    unsafe { compel_infect(ctl, nr_threads, args_size) }
}

/// CRIU's `compel_start_daemon()`: 0 for an infected task (its daemon already serves).
///
/// # Safety
/// `ctl` comes from [`crate::compel_prepare`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_start_daemon(ctl: *mut CompelCtl) -> c_int {
    // SAFETY: `ctl` comes from `compel_prepare()`, as this function requires.
    unsafe { compel_stop_daemon(ctl) }
}

/// CRIU's `compel_get_stack()`: the first stack pointers of the parasite in the task, the
/// daemon's in `*rstack` and the one for commands in other threads in `*r_thread_stack` (NULL
/// for a task that is not infected). Above each lie `PARASITE_STACK_REDZONE` (128) bytes the
/// parasite never writes; the stack grows down from there.
///
/// # Safety
/// `ctl` comes from [`crate::compel_prepare`]; `rstack` and `r_thread_stack` are NULL or
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_get_stack(
    ctl: *mut CompelCtl,
    rstack: *mut *mut c_void,
    r_thread_stack: *mut *mut c_void,
) {
    // SAFETY: `ctl` comes from `compel_prepare()`; `rstack` and `r_thread_stack` are NULL or
    // writable, as this function requires.
    let (daemon, thread) = match unsafe { ctl_mut(ctl) }.map(parasite_of) {
        Ok(Ok(p)) => {
            let base = p.remote_base().get();
            let l = p.layout();
            (base + l.stack_top() as u64, base + l.tstack_top() as u64)
        }
        _ => (0, 0),
    };
    // SAFETY: each pointer is NULL or writable (as this function requires); the values are
    // addresses in the task, only handed back to the caller.
    unsafe {
        if !rstack.is_null() {
            *rstack = daemon as usize as *mut c_void;
        }
        if !r_thread_stack.is_null() {
            *r_thread_stack = thread as usize as *mut c_void;
        }
    }
}

/// The blocked signals of thread `tid` as the task had them before any infection.
fn sigmask_of(ctl: &mut CompelCtl, tid: c_int) -> Result<u64, c_int> {
    let pid = ctl.pid;
    if let Some(p) = ctl.parasite.as_mut()
        && tid == p.tid()
    {
        return Ok(p.saved_state().sigmask);
    }
    let Some(task) = ctl.task() else {
        return Err(fail(libc::ESRCH, format!("task {pid} is released")));
    };
    task.sigmask(tid)
        .map_err(|e| fail(crate::task_errno(&e), e.to_string()))
}

/// CRIU's `compel_task_sigmask()`: the main thread's blocked signals as found (a
/// `k_rtsigset_t`, valid until the next call with `ctl`), or NULL.
///
/// # Safety
/// `ctl` comes from [`crate::compel_prepare`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_task_sigmask(ctl: *mut CompelCtl) -> *mut u64 {
    // SAFETY: `ctl` comes from `compel_prepare()`, as this function requires.
    let Ok(ctl) = (unsafe { ctl_mut(ctl) }) else {
        return std::ptr::null_mut();
    };
    match sigmask_of(ctl, ctl.pid) {
        Ok(m) => {
            ctl.criu_sigmask = m;
            &raw mut ctl.criu_sigmask
        }
        Err(_) => std::ptr::null_mut(),
    }
}

/// CRIU's `struct parasite_thread_ctl`: a thread of an infected task.
pub struct ThreadCtl {
    pub(crate) ctl: *mut CompelCtl,
    pub(crate) tid: c_int,
    sigmask: u64,
}

/// A handle for thread `tid` of `ctl`'s task (checked when a command runs), or NULL.
///
/// # Safety
/// `ctl` comes from [`crate::compel_prepare`] and outlives the handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_prepare_thread(ctl: *mut CompelCtl, tid: c_int) -> *mut ThreadCtl {
    // SAFETY: `ctl` comes from `compel_prepare()` and outlives the handle, as this function
    // requires.
    if unsafe { ctl_mut(ctl) }.is_err() {
        return std::ptr::null_mut();
    }
    Box::into_raw(Box::new(ThreadCtl {
        ctl,
        tid,
        sigmask: 0,
    }))
}

/// Frees a handle from [`compel_prepare_thread`] (NULL is ignored).
///
/// # Safety
/// `tctl` is NULL or comes from [`compel_prepare_thread`] and is not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_release_thread(tctl: *mut ThreadCtl) {
    if !tctl.is_null() {
        // SAFETY: tctl came from Box::into_raw in compel_prepare_thread (as this function
        // requires).
        drop(unsafe { Box::from_raw(tctl) });
    }
}

/// CRIU's `compel_thread_sigmask()`: the thread's blocked signals (valid until the next call
/// with `tctl`), or NULL.
///
/// # Safety
/// `tctl` comes from [`compel_prepare_thread`] and its `ctl` is still alive.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_thread_sigmask(tctl: *mut ThreadCtl) -> *mut u64 {
    // SAFETY: `tctl` comes from `compel_prepare_thread()` and its `ctl` is still alive, as this
    // function requires.
    let Some(t) = (unsafe { tctl.as_mut() }) else {
        return std::ptr::null_mut();
    };
    // SAFETY: t.ctl is alive (as this function requires).
    let Ok(ctl) = (unsafe { ctl_mut(t.ctl) }) else {
        return std::ptr::null_mut();
    };
    match sigmask_of(ctl, t.tid) {
        Ok(m) => {
            t.sigmask = m;
            &raw mut t.sigmask
        }
        Err(_) => std::ptr::null_mut(),
    }
}

/// CRIU's `compel_run_in_thread(tctl, cmd)`: runs `cmd` once in the handle's thread.
///
/// # Safety
/// `tctl` comes from [`compel_prepare_thread`] and its `ctl` is still alive.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn compel_run_in_thread_ctl(tctl: *mut ThreadCtl, cmd: c_uint) -> c_int {
    // SAFETY: `tctl` comes from `compel_prepare_thread()` and its `ctl` is still alive, as this
    // function requires.
    let Some(t) = (unsafe { tctl.as_ref() }) else {
        return fail(libc::EINVAL, "null parasite_thread_ctl".into());
    };
    // SAFETY: t.ctl is alive (as this function requires).
    unsafe { crate::compel_run_in_thread(t.ctl, t.tid, cmd) }
}

/// `<compel.h>`'s `compel_log_init()` under the name `<compel/log.h>`'s printf-style shim calls.
#[unsafe(no_mangle)]
pub extern "C" fn compel_log_init_msg(f: Option<LogFn>, level: c_uint) {
    crate::compel_log_init(f, level);
}

/// The level of the last `compel_log_init()` (0 if logging is off).
#[unsafe(no_mangle)]
pub extern "C" fn compel_log_get_loglevel() -> c_uint {
    LOG.lock()
        .unwrap_or_else(|e| e.into_inner())
        .map_or(0, |(_, l)| l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_letters() {
        assert_eq!(state_letter("12 (a b) c) S 1 2"), Some('S'));
        assert_eq!(state_letter("12 (x) T 1"), Some('T'));
        assert_eq!(state_letter("garbage"), None);
    }

    #[test]
    fn our_own_state() {
        assert_eq!(
            proc_task_state(std::process::id() as c_int),
            COMPEL_TASK_ALIVE
        );
        assert!(proc_task_state(0) < 0);
        assert!(compel_stop_task(0) < 0);
    }
}
