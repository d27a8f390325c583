//! The task's descriptors: closing what it does not keep, placing each file at its number
//! (made here, inherited, or taken from the engine), the controlling terminal, and the
//! directories and umask.
// Unsafe code: dup3/fcntl/close/chdir/chroot of the new task, before the restorer.
#![allow(unsafe_code)]

use super::super::ops::*;
use super::super::sync::Slots;
use super::wait_or_quit;
use crate::files::MAX_ENDS;
use std::sync::atomic::Ordering;

pub(super) fn close_others(p: &ChildPlan) {
    // Close everything but the service descriptors (sorted ascending by the parent).
    let mut lo: u32 = 0;
    for &fd in &p.service_fds {
        if fd as u32 > lo {
            // SAFETY: the child owns its copy of the descriptor table; nothing it still needs
            // lives in this range.
            unsafe { libc::syscall(libc::SYS_close_range, lo, fd as u32 - 1, 0) };
        }
        lo = fd as u32 + 1;
    }
    // SAFETY: the child owns its copy of the descriptor table; nothing it still needs lives
    // above its last service descriptor.
    unsafe { libc::syscall(libc::SYS_close_range, lo, u32::MAX, 0) };
}

/// Moves `tmp` to `fd` with the given close-on-exec flag.
fn place(tmp: i32, fd: i32, cloexec: bool) -> Result<(), Fail> {
    let fl = if cloexec { libc::O_CLOEXEC } else { 0 };
    if tmp == fd {
        // SAFETY: fcntl on a descriptor we own.
        let r = unsafe {
            libc::fcntl(
                fd,
                libc::F_SETFD,
                if cloexec { libc::FD_CLOEXEC } else { 0 },
            )
        };
        return ok(CHILD_FDS, r as _, fd as u64).map(|_| ());
    }
    // SAFETY: dup3 onto a number that is free (descriptors are made in order and temporaries
    // live above every target number); then the temporary is closed.
    unsafe {
        let r = libc::dup3(tmp, fd, fl);
        libc::close(tmp);
        ok(CHILD_FDS, r as _, fd as u64)?;
    }
    Ok(())
}

/// Moves a fresh descriptor above every target number.
fn lift(p: &ChildPlan, fd: i32, target: i32) -> Result<i32, Fail> {
    // SAFETY: fcntl/close on a descriptor this child just created.
    unsafe {
        let t = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, p.tmp_fd_base);
        libc::close(fd);
        Ok(ok(CHILD_FDS, t as _, target as u64)? as i32)
    }
}

/// Takes descriptor `of` of the engine, once the engine opened there what needs the tree.
fn from_engine(s: &Slots, of: i32, fd: i32) -> Result<i32, Fail> {
    let engine = s.slot(s.n);
    wait_or_quit(s, &engine.settled);
    let pid = engine.detail.load(Ordering::SeqCst) as libc::c_long;
    // SAFETY: pidfd_open/pidfd_getfd/close with plain numbers; the pidfd is ours and closed.
    unsafe {
        let pidfd = ok(
            CHILD_FDS,
            libc::syscall(libc::SYS_pidfd_open, pid, 0),
            fd as u64,
        )?;
        let t = libc::syscall(libc::SYS_pidfd_getfd, pidfd, of as libc::c_long, 0);
        let e = errno();
        libc::close(pidfd as i32);
        if t < 0 {
            return Err(Fail {
                stage: CHILD_FDS,
                errno: e,
                detail: fd as u64,
            });
        }
        Ok(t as i32)
    }
}

/// A session leader takes its terminal again at its own descriptor and gives it the
/// foreground group (the groups of its subtree exist by now).
pub(super) fn ctty(p: &ChildPlan) -> Result<(), Fail> {
    if let Some((fd, pgrp)) = p.ctty {
        // SAFETY: ioctl and tcsetpgrp on this process's own descriptor `fd`.
        unsafe {
            ok(
                CHILD_FDS,
                libc::ioctl(fd, libc::TIOCSCTTY, 0) as _,
                fd as u64,
            )?;
            if pgrp != 0 && pgrp != libc::getpid() {
                ok(CHILD_FDS, libc::tcsetpgrp(fd, pgrp) as _, pgrp as u64)?;
            }
        }
    }
    Ok(())
}

/// Makes the task's descriptors: those that need the session's terminal
/// ([`RestoreFile::after_ctty`](crate::files::RestoreFile::after_ctty)) when `after_ctty`, the
/// others when not.
pub(super) fn fds(p: &ChildPlan, s: &Slots, after_ctty: bool) -> Result<(), Fail> {
    // A made descriptor that waits for the terminal, and the copies of it.
    let waits = |fd: i32| {
        p.fds.iter().any(|o| {
            matches!(o, FdOp::Make { file, at, .. }
                if file.after_ctty() && at.iter().any(|a| a.is_some_and(|(t, _)| t == fd)))
        })
    };
    for op in &p.fds {
        let late = match op {
            FdOp::Make { file, .. } => file.after_ctty(),
            FdOp::Dup { of, .. } => waits(*of),
            FdOp::Reopen { .. } | FdOp::FromEngine { .. } => false,
        };
        if late != after_ctty {
            continue;
        }
        match op {
            FdOp::FromEngine { fd, of, cloexec } => {
                let t = from_engine(s, *of, *fd)?;
                let t = lift(p, t, *fd)?;
                place(t, *fd, *cloexec)?;
            }
            FdOp::Make { file, at, first } => {
                let ends = file.make_in_task(*first).map_err(|e| Fail {
                    stage: CHILD_FDS,
                    errno: e.errno,
                    detail: e.detail,
                })?;
                let n = ends.n.min(MAX_ENDS);
                let mut tmp = [-1i32; MAX_ENDS];
                for (t, &made) in tmp.iter_mut().zip(&ends.fds[..n]) {
                    *t = lift(p, made, *first)?;
                }
                for (&t, end) in tmp[..n].iter().zip(at) {
                    match *end {
                        Some((fd, ce)) => place(t, fd, ce)?,
                        // SAFETY: closing an end this task does not hold, which we own.
                        None => unsafe {
                            libc::close(t);
                        },
                    }
                }
            }
            FdOp::Reopen {
                fd,
                path,
                flags,
                cloexec,
            } => {
                // SAFETY: opens a NUL-terminated path the parent prepared.
                let t = unsafe {
                    libc::open(path.as_ptr(), *flags | libc::O_NONBLOCK | libc::O_CLOEXEC)
                };
                let t = ok(CHILD_FDS, t as _, *fd as u64)? as i32;
                let t = lift(p, t, *fd)?;
                place(t, *fd, *cloexec)?;
            }
            FdOp::Dup { fd, of, cloexec } => {
                // SAFETY: fcntl on a descriptor created earlier in this loop or inherited from
                // the engine and kept open.
                let t = unsafe { libc::fcntl(*of, libc::F_DUPFD_CLOEXEC, p.tmp_fd_base) };
                let t = ok(CHILD_FDS, t as _, *fd as u64)? as i32;
                place(t, *fd, *cloexec)?;
            }
        }
    }
    Ok(())
}

pub(super) fn fs(p: &ChildPlan) -> Result<(), Fail> {
    // SAFETY: chroot/chdir/umask with NUL-terminated strings we own; they change only this
    // process's filesystem context. Both paths are as seen from criu's root: the cwd is entered
    // first, and stays the cwd through the chroot.
    unsafe {
        if let Some(cwd) = &p.cwd {
            ok(CHILD_FS, libc::chdir(cwd.as_ptr()) as _, 2)?;
        }
        if let Some(root) = &p.root {
            ok(CHILD_FS, libc::chroot(root.as_ptr()) as _, 1)?;
        }
        libc::umask(p.umask as libc::mode_t);
    }
    Ok(())
}
