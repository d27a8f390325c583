//! Filling the premapped memory from the page files, in this task or with a fill helper
//! sharing its address space.
// Unsafe code: raw system calls of the new task (clone of a helper, waitpid), before the restorer.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use super::super::layout::HELPER_STACK;
use super::super::mem::{MAX_PAGE_FILES, Worker, close_all};
use super::super::ops::*;
use super::{CloneArgs, drain_sigchld};

pub(super) fn fill(p: &ChildPlan, filled: &AtomicU64) -> Result<(), Fail> {
    let mut fds = [-1i32; MAX_PAGE_FILES];
    if p.page_files.len() > fds.len() {
        return Err(Fail {
            stage: CHILD_FILL,
            errno: libc::E2BIG,
            detail: 0,
        });
    }
    for (i, path) in p.page_files.iter().enumerate() {
        // SAFETY: open with a NUL-terminated path we own.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            )
        };
        fds[i] = ok(CHILD_FILL, fd as _, i as u64)? as i32;
    }
    // Big fills are shared with a helper on the other CPU: it takes the runs from `from` on
    // (about half the bytes, cut at a 2 MiB boundary).
    let split = p.fill_helper.as_ref().map_or(p.fills.len(), |h| h.from);
    let mine = Worker {
        fds: &fds,
        runs: &p.fills[..split],
        collapse: &p.collapse,
        uffd: p.uffd,
        filled,
    };
    if let Some(h) = &p.fill_helper
        && 0 < split
        && split < p.fills.len()
    {
        let job = HelperJob {
            work: Worker {
                runs: &p.fills[split..],
                ..mine
            },
            result: AtomicU64::new(0),
        };
        if let Some(pid) = spawn_helper(h, &job) {
            let r = mine.fill();
            let waited = reap_helper(pid);
            drain_sigchld();
            close_all(&fds);
            r?;
            waited?;
            let r = job.result.load(Ordering::SeqCst);
            if r != 0 {
                return Err(Fail {
                    stage: CHILD_FILL,
                    errno: (r >> 48) as i32,
                    detail: r & ((1 << 48) - 1),
                });
            }
            return Ok(());
        }
    }
    let r = Worker {
        runs: &p.fills,
        ..mine
    }
    .fill();
    close_all(&fds);
    r
}

/// What the helper does; lives on the task's stack until the helper was reaped.
struct HelperJob<'a> {
    work: Worker<'a>,
    /// 0, or errno << 48 | address of the failure.
    result: AtomicU64,
}

extern "C" fn helper_main(job: u64) -> ! {
    // SAFETY: the task passed the address of a HelperJob it keeps alive until it reaped us; we
    // share its memory (CLONE_VM).
    let job = unsafe { &*(job as *const HelperJob<'_>) };
    if let Err(Fail {
        errno: e, detail, ..
    }) = job.work.fill()
    {
        job.result.store(
            ((e as u64) << 48) | (detail & ((1 << 48) - 1)),
            Ordering::SeqCst,
        );
    }
    // SAFETY: ends this helper process (raw exit: no libc state of the task is touched).
    unsafe {
        compel_arch::syscall1(compel_arch::nr::EXIT, 0);
    }
    loop {
        std::hint::spin_loop();
    }
}

/// Starts the fill helper: a process sharing our memory (not a thread: the engine does not
/// trace it), with the engine's pid for it, on its own stack. `None` if it cannot be made
/// (the task then fills everything itself).
fn spawn_helper(h: &FillHelper, job: &HelperJob<'_>) -> Option<i32> {
    let tid = [h.pid];
    let args = CloneArgs {
        flags: libc::CLONE_VM as u64,
        exit_signal: libc::SIGCHLD as u64,
        stack: h.stack_top - HELPER_STACK,
        stack_size: HELPER_STACK,
        set_tid: tid.as_ptr() as u64,
        set_tid_size: 1,
        ..Default::default()
    };
    // SAFETY: CLONE_VM with a stack of our own (the helper stack the parent reserved, which
    // nothing else uses): the helper starts there in helper_main, which never returns. `args`,
    // `tid` and `job` outlive the helper, which is reaped before this frame ends.
    let ret = unsafe {
        compel_arch::clone3_on_new_stack(&args, helper_main, job as *const HelperJob<'_> as u64)
    };
    (ret > 0).then_some(ret as i32)
}

/// Waits for the fill helper to end.
fn reap_helper(pid: i32) -> Result<(), Fail> {
    loop {
        let mut st = 0;
        // SAFETY: waits for our own child with a live status word.
        let r = unsafe { libc::waitpid(pid, &mut st, libc::__WALL) };
        if r == pid {
            return if libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0 {
                Ok(())
            } else {
                Err(Fail {
                    stage: CHILD_FILL,
                    errno: libc::ECHILD,
                    detail: pid as u64,
                })
            };
        }
        if r < 0 && errno() != libc::EINTR {
            return Err(Fail::last(CHILD_FILL, pid as u64));
        }
    }
}
