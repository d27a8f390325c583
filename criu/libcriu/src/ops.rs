//! The operations: reach criu (start `criu swrk`, connect to a service, or use the caller's
//! socket), send one request, answer notifications through the callback, read the response.

use std::ffi::{CStr, c_char, c_int};
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;

use criu_images::pb::{CriuFeatures, CriuReq, CriuReqType, CriuResp};
use nix::sys::socket::{
    AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr, connect, recv,
    recvmsg, socket, socketpair,
};
use prost::Message;

use crate::{Comm, DEFAULT_BINARY, ORPHAN_PTS_MASTER, c, criu_notify_arg, criu_opts, global};

fn set_errno(e: c_int) {
    // SAFETY: __errno_location returns this thread's errno slot, always valid to write.
    unsafe { *libc::__errno_location() = e };
}

fn errno() -> c_int {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Starts `bin swrk FD` on one end of a fresh socketpair; returns our end and criu's pid.
/// With `detach` (a self-dump) criu goes to the background first, so it outlives the caller.
fn swrk_connect(bin: &CStr, detach: bool) -> Result<(OwnedFd, c_int), c_int> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::empty(),
    )
    .map_err(|e| e as c_int)?;
    // Everything the child needs is made before fork: it only makes raw system calls.
    let fd_arg = c(&theirs.as_raw_fd().to_string());
    let swrk = c("swrk");
    let argv = [
        bin.as_ptr(),
        swrk.as_ptr(),
        fd_arg.as_ptr(),
        std::ptr::null(),
    ];
    let (our_fd, their_fd) = (ours.as_raw_fd(), theirs.as_raw_fd());
    // SAFETY: the child below only calls async-signal-safe functions (sigprocmask, close,
    // daemon's fork/setsid, getpid, write, execvp, _exit) on data prepared before the fork.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(errno());
    }
    if child == 0 {
        // SAFETY: the child's own state; `argv` and the strings live until exec.
        unsafe {
            let mut mask: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut mask);
            libc::sigaddset(&mut mask, libc::SIGCHLD);
            libc::sigprocmask(libc::SIG_UNBLOCK, &mask, std::ptr::null_mut());
            libc::close(our_fd);
            if detach && libc::daemon(0, 1) != 0 {
                libc::_exit(1);
            }
            let pid = libc::getpid();
            let n = libc::write(
                their_fd,
                (&pid as *const c_int).cast(),
                std::mem::size_of::<c_int>(),
            );
            if n == std::mem::size_of::<c_int>() as isize {
                libc::execvp(bin.as_ptr(), argv.as_ptr());
            }
            libc::_exit(1);
        }
    }
    drop(theirs);
    let mut buf = [0u8; 4];
    let got = recv(our_fd, &mut buf, MsgFlags::empty());
    if detach {
        // The first child exits as soon as criu went to the background.
        // SAFETY: waits for our own child only.
        unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
    }
    match got {
        Ok(4) => Ok((ours, c_int::from_ne_bytes(buf))),
        _ => Err(libc::ECOMM),
    }
}

/// A connection to criu for one operation.
fn criu_connect(o: &mut criu_opts, detach: bool) -> Result<OwnedFd, c_int> {
    match &o.comm {
        // SAFETY: the caller handed this socket over for the operation; like CRIU's libcriu,
        // the operation closes it when done.
        Comm::Fd(fd) => Ok(unsafe { OwnedFd::from_raw_fd(*fd) }),
        Comm::Bin(bin) => {
            let (fd, pid) = swrk_connect(bin, detach)?;
            o.swrk_pid = pid;
            Ok(fd)
        }
        Comm::Sk(path) => {
            let sk = socket(
                AddressFamily::Unix,
                SockType::SeqPacket,
                SockFlag::SOCK_CLOEXEC,
                None,
            )
            .map_err(|e| e as c_int)?;
            let addr = UnixAddr::new(path.as_c_str().to_bytes()).map_err(|e| e as c_int)?;
            connect(sk.as_raw_fd(), &addr).map_err(|e| e as c_int)?;
            Ok(sk)
        }
    }
}

fn swrk_wait(o: &mut criu_opts) {
    if matches!(o.comm, Comm::Bin(_)) && o.swrk_pid > 0 {
        // SAFETY: waits for the criu we started (an error just means it is not our child).
        unsafe { libc::waitpid(o.swrk_pid, std::ptr::null_mut(), 0) };
        o.swrk_pid = -1;
    }
}

fn send_req(fd: RawFd, req: &CriuReq) -> Result<(), c_int> {
    let buf = req.encode_to_vec();
    // SAFETY: writes the live buffer `buf` to the socket.
    let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    if n < 0 { Err(errno()) } else { Ok(()) }
}

/// The next response; a descriptor riding along (the orphan pty master) is kept for
/// `criu_get_orphan_pts_master_fd`.
fn recv_resp(fd: RawFd) -> Option<CriuResp> {
    let len = recv(fd, &mut [], MsgFlags::MSG_PEEK | MsgFlags::MSG_TRUNC).ok()?;
    let mut buf = vec![0u8; len.max(1)];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let (n, fds) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC).ok()?;
        let mut fds = Vec::new();
        for c in msg.cmsgs().ok()? {
            if let ControlMessageOwned::ScmRights(f) = c {
                fds.extend(f);
            }
        }
        (msg.bytes, fds)
    };
    if let Some(f) = fds.first() {
        ORPHAN_PTS_MASTER.store(*f, Ordering::Release);
    }
    if n == 0 {
        return None;
    }
    CriuResp::decode(&buf[..n.min(buf.len())]).ok()
}

/// Sends `req` and reads responses until the one that answers it, handing notifications to the
/// callback and acknowledging them. `saved` takes criu's `cr_errno`.
fn converse(fd: RawFd, o: &criu_opts, req: &CriuReq, saved: &mut c_int) -> Result<CriuResp, c_int> {
    if let Err(e) = send_req(fd, req) {
        *saved = e;
        return Err(-libc::ECOMM);
    }
    loop {
        let Some(resp) = recv_resp(fd) else {
            return Err(-libc::ECOMM);
        };
        if resp.r#type == CriuReqType::Notify as i32 {
            let n = resp.notify.clone().unwrap_or_default();
            let ret = match o.notify {
                Some(cb) => {
                    let action = c(n.script.as_deref().unwrap_or(""));
                    let mut arg = criu_notify_arg { pid: n.pid };
                    // SAFETY: the callback gets a NUL-terminated action and an argument that
                    // both live for the call, as CRIU's libcriu hands them.
                    unsafe { cb(action.as_ptr() as *mut c_char, &mut arg) }
                }
                None => 0,
            };
            let ack = CriuReq {
                r#type: CriuReqType::Notify as i32,
                notify_success: Some(ret == 0),
                ..Default::default()
            };
            let sent = send_req(fd, &ack).map_or(-1, |()| 0);
            let r = if ret != 0 { ret } else { sent };
            if r != 0 {
                return Err(r);
            }
            continue;
        }
        if let Some(e) = resp.cr_errno {
            *saved = e;
        }
        if resp.r#type != req.r#type {
            return Err(
                if resp.r#type == CriuReqType::Empty as i32 && !resp.success {
                    -libc::EINVAL
                } else {
                    -libc::EBADMSG
                },
            );
        }
        return Ok(resp);
    }
}

/// One operation on the set `opts`: connect, converse, let `finish` read the answer.
///
/// # Safety
/// `opts` is NULL or a live set.
unsafe fn operation(
    opts: *mut criu_opts,
    req: impl FnOnce(&criu_opts) -> CriuReq,
    finish: impl FnOnce(&CriuResp) -> c_int,
) -> c_int {
    // SAFETY: per this function's contract.
    let Some(o) = (unsafe { opts.as_mut() }) else {
        set_errno(libc::EINVAL);
        return -libc::EINVAL;
    };
    let req = req(o);
    let self_dump = req.r#type == CriuReqType::Dump as i32
        && req.opts.as_ref().is_some_and(|x| x.pid.is_none());
    let mut saved = 0;
    let ret = match criu_connect(o, self_dump) {
        Err(e) => {
            saved = e;
            -libc::ECONNREFUSED
        }
        Ok(fd) => {
            let r = converse(fd.as_raw_fd(), o, &req, &mut saved);
            drop(fd);
            match r {
                Ok(resp) => finish(&resp),
                Err(e) => e,
            }
        }
    };
    swrk_wait(o);
    set_errno(saved);
    ret
}

fn request(ty: CriuReqType, o: &criu_opts, with_opts: bool) -> CriuReq {
    CriuReq {
        r#type: ty as i32,
        opts: with_opts.then(|| o.rpc.clone()),
        ..Default::default()
    }
}

fn ok_or_ebade(r: &CriuResp) -> c_int {
    if r.success { 0 } else { -libc::EBADE }
}

fn dumped(r: &CriuResp) -> c_int {
    match r.success {
        true if r.dump.as_ref().and_then(|d| d.restored) == Some(true) => 1,
        true => 0,
        false => -libc::EBADE,
    }
}

fn restored_pid(r: &CriuResp) -> c_int {
    match (&r.restore, r.success) {
        (Some(x), true) => x.pid,
        _ => -libc::EBADE,
    }
}

/// CRIU's version number: major * 10000 + minor * 100 + sublevel, a git build counting as the
/// next minor (runc's convention).
fn version_number(r: &CriuResp) -> c_int {
    let Some(v) = r.version.as_ref().filter(|_| r.success) else {
        return -libc::EBADE;
    };
    let mut n = v.major_number * 10000 + v.minor_number * 100 + v.sublevel.unwrap_or(0);
    if v.gitid.is_some() {
        n -= n % 100;
        n += 100;
    }
    n
}

macro_rules! operations {
    ($($local:ident, $global:ident, $doc:literal, $ty:ident, $with_opts:expr, $finish:expr;)*) => {$(
        #[doc = $doc]
        ///
        /// # Safety
        /// `opts` is NULL or a live set.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $local(opts: *mut criu_opts) -> c_int {
            // SAFETY: `opts` is NULL or a live set (the caller's contract).
            unsafe { operation(opts, |o| request(CriuReqType::$ty, o, $with_opts), $finish) }
        }
        #[doc = concat!("[`", stringify!($local), "`] on the global set.")]
        #[unsafe(no_mangle)]
        pub extern "C" fn $global() -> c_int {
            // SAFETY: the global set is NULL or live.
            unsafe { $local(global()) }
        }
    )*};
}

operations! {
    criu_local_check, criu_check,
        "Does the kernel have what criu needs: 0, or -EBADE.", Check, false, ok_or_ebade;
    criu_local_dump, criu_dump,
        "Dumps the tree: 0 (1 when a self-dump was restored), or a negative error.",
        Dump, true, dumped;
    criu_local_pre_dump, criu_pre_dump,
        "One pre-dump (memory only): 0, or a negative error.", SinglePreDump, true, ok_or_ebade;
    criu_local_restore, criu_restore,
        "Restores the tree: the restored root's pid, or a negative error.",
        Restore, true, restored_pid;
    criu_local_get_version, criu_get_version,
        "criu's version as major * 10000 + minor * 100 + sublevel, or a negative error.",
        Version, true, version_number;
}

/// Restores the tree as the caller's child (criu started as `swrk` whatever the set says):
/// the restored root's pid, or a negative error.
///
/// # Safety
/// `opts` is NULL or a live set.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn criu_local_restore_child(opts: *mut criu_opts) -> c_int {
    // SAFETY: `opts` is NULL or a live set.
    let Some(o) = (unsafe { opts.as_mut() }) else {
        return -libc::EINVAL;
    };
    let keep = match &o.comm {
        Comm::Bin(_) => None,
        _ => Some(std::mem::replace(&mut o.comm, Comm::Bin(c(DEFAULT_BINARY)))),
    };
    let ret = {
        let op = |o: &criu_opts| {
            let mut r = request(CriuReqType::Restore, o, true);
            if let Some(x) = r.opts.as_mut() {
                x.rst_sibling = Some(true);
            }
            r
        };
        // SAFETY: `o` is the live set behind `opts`.
        unsafe { operation(o, op, restored_pid) }
    };
    if let Some(k) = keep {
        o.comm = k;
    }
    ret
}

/// [`criu_local_restore_child`] on the global set.
#[unsafe(no_mangle)]
pub extern "C" fn criu_restore_child() -> c_int {
    // SAFETY: the global set is NULL or live.
    unsafe { criu_local_restore_child(global()) }
}

/// 1 when criu's version is at least `minimum`, 0 when older, a negative error otherwise.
///
/// # Safety
/// `opts` is NULL or a live set.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn criu_local_check_version(opts: *mut criu_opts, minimum: c_int) -> c_int {
    // SAFETY: `opts` is NULL or a live set.
    let v = unsafe { criu_local_get_version(opts) };
    if v < 0 { v } else { c_int::from(minimum <= v) }
}

/// [`criu_local_check_version`] on the global set.
#[unsafe(no_mangle)]
pub extern "C" fn criu_check_version(minimum: c_int) -> c_int {
    // SAFETY: the global set is NULL or live.
    unsafe { criu_local_check_version(global(), minimum) }
}

/// `struct criu_feature_check`.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, Default)]
pub struct criu_feature_check {
    /// Memory change tracking (pre-dump).
    pub mem_track: bool,
    /// Lazy pages.
    pub lazy_pages: bool,
    /// The pidfd store.
    pub pidfd_store: bool,
}

/// Asks criu which of the features set in `*features` it has; on success each is overwritten
/// with the answer and 0 is returned. `size` is the caller's `sizeof(struct criu_feature_check)`.
///
/// # Safety
/// `opts` NULL or live; `features` NULL or `size` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn criu_local_feature_check(
    opts: *mut criu_opts,
    features: *mut criu_feature_check,
    size: usize,
) -> c_int {
    let full = std::mem::size_of::<criu_feature_check>();
    if features.is_null() || size > full {
        set_errno(0);
        return -1;
    }
    let mut asked = criu_feature_check::default();
    // SAFETY: `features` holds `size` <= sizeof bytes (the caller's contract); `asked` is a
    // whole struct of plain bools.
    unsafe {
        std::ptr::copy_nonoverlapping(
            features.cast::<u8>(),
            (&mut asked as *mut criu_feature_check).cast::<u8>(),
            size,
        )
    };
    let want = CriuFeatures {
        mem_track: asked.mem_track.then_some(true),
        lazy_pages: asked.lazy_pages.then_some(true),
        pidfd_store: asked.pidfd_store.then_some(true),
    };
    let mut answer = criu_feature_check::default();
    let op = |o: &criu_opts| {
        let mut r = request(CriuReqType::FeatureCheck, o, true);
        r.features = Some(want);
        r
    };
    let finish = |r: &CriuResp| match (&r.features, r.success) {
        (Some(f), true) => {
            answer = criu_feature_check {
                mem_track: f.mem_track.unwrap_or(false),
                lazy_pages: f.lazy_pages.unwrap_or(false),
                pidfd_store: f.pidfd_store.unwrap_or(false),
            };
            0
        }
        _ => -libc::EBADE,
    };
    // SAFETY: `opts` is NULL or a live set.
    let ret = unsafe { operation(opts, op, finish) };
    if ret == 0 {
        // SAFETY: `features` holds `size` <= sizeof writable bytes (the caller's contract) and
        // does not overlap `asked`, a local.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (&answer as *const criu_feature_check).cast::<u8>(),
                features.cast::<u8>(),
                size,
            )
        };
    }
    ret
}

/// [`criu_local_feature_check`] on the global set.
///
/// # Safety
/// `features` NULL or `size` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn criu_feature_check(
    features: *mut criu_feature_check,
    size: usize,
) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { criu_local_feature_check(global(), features, size) }
}

/// Iterative dump: pre-dumps while `more(NULL)` returns a positive number, then dumps.
/// Returns 0, or a negative error (`-EINVAL` without a pid or a callback).
///
/// # Safety
/// `opts` NULL or live; `more` NULL or a function of that signature.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn criu_local_dump_iters(
    opts: *mut criu_opts,
    more: Option<unsafe extern "C" fn(*mut libc::c_void) -> c_int>,
) -> c_int {
    // SAFETY: `opts` is NULL or a live set.
    let Some(o) = (unsafe { opts.as_mut() }) else {
        return -libc::EINVAL;
    };
    let Some(more) = more.filter(|_| o.rpc.pid.is_some()) else {
        return -libc::EINVAL;
    };
    let mut saved = 0;
    let ret = match criu_connect(o, false) {
        Err(e) => {
            saved = e;
            -libc::ECONNREFUSED
        }
        Ok(fd) => {
            let mut ret;
            let mut ty = CriuReqType::PreDump;
            loop {
                // Every request is made from the set as it is now: the callback may have
                // changed it (the next images directory, its parent), as CRIU's libcriu,
                // whose request points at the set, sees.
                // SAFETY: `opts` is live; no reference to it is held across the callback.
                let o = unsafe { &*opts };
                let req = request(ty, o, true);
                ret = match converse(fd.as_raw_fd(), o, &req, &mut saved) {
                    Ok(r) => ok_or_ebade(&r),
                    Err(e) => e,
                };
                if ret != 0 || ty == CriuReqType::Dump {
                    break;
                }
                // SAFETY: the caller's callback, called with no predump info as CRIU does.
                let u = unsafe { more(std::ptr::null_mut()) };
                if u < 0 {
                    ret = u;
                    break;
                }
                if u == 0 {
                    ty = CriuReqType::Dump;
                }
            }
            ret
        }
    };
    // SAFETY: `opts` is live (checked above) and no other reference to it is held.
    if let Some(o) = unsafe { opts.as_mut() } {
        swrk_wait(o);
    }
    set_errno(saved);
    ret
}

/// [`criu_local_dump_iters`] on the global set.
///
/// # Safety
/// `more` NULL or a function of that signature.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn criu_dump_iters(
    more: Option<unsafe extern "C" fn(*mut libc::c_void) -> c_int>,
) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { criu_local_dump_iters(global(), more) }
}
