//! The restored task's first life: the code the freshly cloned child runs, still inside criu's
//! address space, before it jumps into the restorer.
//!
//! The child sets up its session, premaps every memory area inside the reservation the engine
//! made and fills it from the page files, reopens the task's descriptors at their numbers, sets
//! its directories and umask, and jumps onto the restorer's stack. Everything it needs was
//! prepared by the parent before the clone ([`ChildPlan`]); the child itself only issues system
//! calls through `libc` and never allocates, so a parent with other threads cannot leave it
//! stuck on a lock.
//!
//! This module holds the sequence of stages; the memory work is in `mem.rs`, the page
//! shared with the engine and the other tasks in [`super::sync`], and each kind of open file
//! makes itself ([`crate::files::RestoreFile::make_in_task`]).
// Unsafe code: the new task's own steps: raw system calls between clone and the restorer, where std
// cannot be used.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::abi;
use super::layout::HELPER_STACK;
use super::mem::{MAX_PAGE_FILES, Worker, close_all, dups, premap, protect};
pub use super::ops::stage_name;
use super::ops::*;
use super::plan::{Rseq, Sched, SessionOp};
use super::sync::{Slots, raise, wait_word, wake};
use crate::files::MAX_ENDS;

/// Says which reservations the next fork copies: only those of the subtree of the child
/// about to be made (`order[from..to]`), not the parent's own or its other children's, so that
/// each task inherits (and later unmaps) only what it and its descendants need.
fn inherit_only(nodes: &[Node], order: &[usize], me: &Node, from: usize, to: usize) {
    for (k, &d) in order[me.pre..me.pre + me.size].iter().enumerate() {
        let at = me.pre + k;
        let (start, len) = nodes[d].resv;
        if len == 0 {
            continue;
        }
        let advice = if (from..to).contains(&at) {
            libc::MADV_DOFORK
        } else {
            libc::MADV_DONTFORK
        };
        // SAFETY: advice on a reservation the engine made in this (inherited) address space;
        // it changes only whether the next fork copies it.
        unsafe { libc::madvise(start as *mut libc::c_void, len as usize, advice) };
    }
}

/// How long a task waits for the engine or a child before giving up (the engine's own
/// deadlines are shorter; this only ends tasks the engine forgot).
const TASK_WAIT_MS: i64 = 300_000;

/// Waits for `word`; gives up (ends this process) when the tree aborts or after a long time.
fn wait_or_quit(s: &Slots, word: &AtomicU32) {
    let mut waited = 0;
    while !wait_word(word, 100) {
        waited += 100;
        if s.aborted() || waited > TASK_WAIT_MS {
            // SAFETY: ends this process without running the engine's exit handlers.
            unsafe { libc::_exit(1) };
        }
    }
}

/// Records a failure in task `i`'s slot, makes the tree give up and ends this process.
fn fail_slot(s: &Slots, i: usize, f: Fail) -> ! {
    let slot = s.slot(i);
    slot.stage.store(f.stage, Ordering::SeqCst);
    slot.errno.store(f.errno as u32, Ordering::SeqCst);
    slot.detail.store(f.detail, Ordering::SeqCst);
    raise(&slot.failed);
    s.abort();
    // SAFETY: ends this process without running the engine's exit handlers.
    unsafe { libc::_exit(1) }
}

/// `struct clone_args` (arch's definition, shared with its `clone3_on_new_stack`).
pub(crate) use compel_arch::CloneArgs;

/// A fork-like `clone3` (no `CLONE_VM`, no new stack): the child continues here on its own
/// copy of this address space with 0; the parent gets the child's pid, or -1 and errno.
pub(crate) fn fork3(args: &CloneArgs) -> i64 {
    // SAFETY: without CLONE_VM and a stack the child returns here like after fork(); `args`
    // (and the set_tid array it points at, owned by the caller) is live.
    unsafe {
        libc::syscall(
            libc::SYS_clone3,
            args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    }
}

/// Forks a child with pid `pid` (sharing what `flags` say); 0 in the child.
fn fork_with_pid(pid: i32, flags: u64) -> Result<i32, Fail> {
    let tid = [pid];
    let args = CloneArgs {
        flags,
        exit_signal: libc::SIGCHLD as u64,
        set_tid: tid.as_ptr() as u64,
        set_tid_size: 1,
        ..Default::default()
    };
    ok(CHILD_CLONE, fork3(&args), pid as u64).map(|r| r as i32)
}

fn session(op: SessionOp) -> Result<(), Fail> {
    // SAFETY: setsid/setpgid only change this process's session and group.
    let r = unsafe {
        match op {
            SessionOp::Inherit => 0,
            SessionOp::Setsid => libc::setsid(),
            SessionOp::Setpgid(g) => libc::setpgid(0, g),
        }
    };
    ok(CHILD_SESSION, r as libc::c_long, 0).map(|_| ())
}

/// Waits until zombie child `pid` has ended (without reaping it).
fn await_zombie(pid: i32) -> Result<(), Fail> {
    loop {
        // SAFETY: a zeroed siginfo_t is a valid buffer for waitid to fill.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid on our own child with a live buffer; WNOWAIT leaves it a zombie.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r == 0 {
            return Ok(());
        }
        if errno() != libc::EINTR {
            return Err(Fail::last(CHILD_ZOMBIE, pid as u64));
        }
    }
}

/// Reaps child `pid` (a helper that ended).
fn reap(pid: i32) -> Result<(), Fail> {
    loop {
        // SAFETY: waitpid on our own child; no status wanted.
        let r = unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::__WALL) };
        if r == pid {
            return Ok(());
        }
        if r < 0 && errno() != libc::EINTR {
            return Err(Fail::last(CHILD_ZOMBIE, pid as u64));
        }
    }
}

/// Takes the `SIGCHLD`s our zombie children sent off the queue: the task gets back the
/// pending signals it had when dumped, not new ones.
fn drain_sigchld() {
    let set: u64 = 1 << (libc::SIGCHLD - 1);
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    loop {
        // SAFETY: rt_sigtimedwait with a live 8-byte set and a zero timeout; no siginfo wanted.
        let r = unsafe {
            libc::syscall(
                libc::SYS_rt_sigtimedwait,
                &raw const set,
                0usize,
                &raw const zero,
                8usize,
            )
        };
        if r < 0 {
            break;
        }
    }
}

/// Ends this process the way a zombie ended: killed by its signal (without a core file) or
/// with its exit code.
fn die(status: u32) -> ! {
    let sig = (status & 0x7f) as i32;
    // SAFETY: plain calls on this process alone; it ends here.
    unsafe {
        if sig != 0 && sig != 0x7f {
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &none);
            libc::signal(sig, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::kill(libc::getpid(), sig);
        }
        libc::_exit(((status >> 8) & 0xff) as i32)
    }
}

/// Runs task `i` of the tree: announces itself, waits until the engine traces it, takes its
/// session and group, creates its children (each then goes on in parallel, with its own
/// subtree) and waits until they all exist, then either ends as a zombie or restores itself.
/// Never returns.
pub fn run(nodes: &[Node], order: &[usize], s: Slots, i: usize) -> ! {
    let me = &nodes[i];
    let slot = s.slot(i);
    raise(&slot.born);
    let births = &s.slot(s.n).grouped;
    births.fetch_add(1, Ordering::SeqCst);
    wake(births);
    if me.zombie.is_none() {
        wait_or_quit(&s, &slot.go);
    }
    if let Some(l) = me.leader {
        wait_or_quit(&s, &s.slot(l).grouped);
    }
    if let Err(f) = session(me.session) {
        fail_slot(&s, i, f);
    }
    raise(&slot.grouped);
    for &c in &me.children {
        let child = &nodes[c];
        inherit_only(nodes, order, me, child.pre, child.pre + child.size);
        let mut flags = 0;
        if child.share_files {
            flags |= libc::CLONE_FILES as u64;
        }
        if child.share_fs {
            flags |= libc::CLONE_FS as u64;
        }
        match fork_with_pid(child.pid, flags) {
            Ok(0) => run(nodes, order, s, c),
            Ok(_) => {}
            Err(f) => fail_slot(&s, i, f),
        }
    }
    for &c in &me.children {
        wait_or_quit(&s, &s.slot(c).created);
    }
    let mut zombies = false;
    for &c in me.children.iter().filter(|c| nodes[**c].zombie.is_some()) {
        if let Err(f) = await_zombie(nodes[c].pid) {
            fail_slot(&s, i, f);
        }
        zombies = true;
    }
    // Helpers leading a group for others go once the subtree exists (its members joined).
    for &c in me.children.iter().filter(|c| nodes[**c].helper) {
        if let Err(f) = reap(nodes[c].pid) {
            fail_slot(&s, i, f);
        }
    }
    if zombies {
        drain_sigchld();
    }
    raise(&slot.created);
    let Some(p) = &me.plan else {
        die(me.zombie.unwrap_or(0))
    };
    // Children sharing our descriptor table or fs info set themselves up first: ours are
    // then set up once, with nothing of theirs opening or closing in between.
    for &c in me
        .children
        .iter()
        .filter(|&&c| nodes[c].share_files || nodes[c].share_fs)
    {
        wait_or_quit(&s, &s.slot(c).settled);
    }
    let r = setup(p, &s, me.share_files, me.share_fs);
    if r.is_ok() && (me.share_files || me.share_fs) {
        raise(&slot.settled);
    }
    if let Err(Fail {
        stage,
        errno: e,
        detail,
    }) = r
    {
        let st = abi::Status {
            stage,
            errno: e,
            detail,
        };
        // SAFETY: writes the bytes of a live repr(C) value to our status pipe, then ends this
        // process without running any of the parent's exit handlers.
        unsafe {
            libc::write(
                p.status_fd,
                (&raw const st).cast(),
                std::mem::size_of::<abi::Status>(),
            );
            libc::_exit(1);
        }
    }
    jump(p)
}

/// Sets up the task; its descriptors (and locks) when it has a table of its own, its fs
/// info when that is its own (`shared_*`: its parent's, which the parent sets up).
fn setup(p: &ChildPlan, s: &Slots, shared_files: bool, shared_fs: bool) -> Result<(), Fail> {
    premap(p)?;
    fill(p)?;
    dups(p)?;
    protect(p)?;
    if !shared_files {
        close_others(p);
        fds(p, s)?;
        for (fd, st) in &p.settle {
            st.apply(*fd).map_err(|e| Fail {
                stage: CHILD_FDS,
                errno: e.errno,
                detail: e.detail,
            })?;
        }
        for &fd in &p.inherited {
            // SAFETY: the engine's shared descriptors are placed by now; the copies go.
            unsafe { libc::close(fd) };
        }
    }
    if !shared_fs {
        fs(p)?;
    }
    if !shared_files {
        locks(p)?;
    }
    if let Some((fd, pgrp)) = p.ctty {
        // SAFETY: this session leader takes the terminal at its own descriptor `fd` and gives
        // it the foreground group (the groups of its subtree exist by now).
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
    if let Some(Sched { nice, policy, prio }) = p.sched {
        // SAFETY: scheduling calls on this process with a live local parameter.
        unsafe {
            if policy != 0 {
                let param = libc::sched_param {
                    sched_priority: prio as i32,
                };
                let r = libc::sched_setscheduler(0, policy as i32, &param);
                ok(CHILD_SCHED, r as _, policy as u64)?;
            }
            let r = libc::setpriority(libc::PRIO_PROCESS, 0, nice);
            ok(CHILD_SCHED, r as _, nice as u64)?;
        }
    }
    // Registrations belong to the memory, which this process keeps through the restorer.
    for bit in 0..32 {
        let cmd = 1u32 << bit;
        if p.membarrier & cmd != 0 {
            // SAFETY: a membarrier registration of this process's memory; no memory is touched.
            let r = unsafe { libc::syscall(libc::SYS_membarrier, cmd as i32, 0u32, 0i32) };
            ok(CHILD_MEMBARRIER, r as _, cmd as u64)?;
        }
    }
    if let Some(v) = &p.loginuid {
        // Before the credentials are dropped: a set login uid changes only with
        // CAP_AUDIT_CONTROL.
        write_proc(c"/proc/self/loginuid", v, CHILD_LOGINUID)?;
    }
    if let Some(v) = &p.oom_score_adj {
        let path = c"/proc/self/oom_score_adj";
        // SAFETY: plain open/write/close of a proc file with NUL-terminated strings we own.
        unsafe {
            let fd = ok(
                CHILD_OOM,
                libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) as _,
                0,
            )?;
            let n = libc::write(fd as i32, v.as_ptr().cast(), v.as_bytes().len());
            libc::close(fd as i32);
            ok(CHILD_OOM, n as _, 0)?;
        }
    }
    Ok(())
}

/// Writes `v` into the proc file `path` of this process.
fn write_proc(path: &std::ffi::CStr, v: &std::ffi::CStr, stage: u32) -> Result<(), Fail> {
    // SAFETY: plain open/write/close of a proc file with NUL-terminated strings we own.
    unsafe {
        let fd = ok(
            stage,
            libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) as _,
            0,
        )?;
        let n = libc::write(fd as i32, v.as_ptr().cast(), v.to_bytes().len());
        libc::close(fd as i32);
        ok(stage, n as _, 0)?;
    }
    Ok(())
}

/// Takes the task's file locks, without waiting: a lock someone else holds now fails the
/// restore (naming the descriptor) instead of hanging it. POSIX locks are taken here because
/// they belong to the process that takes them, which is the restored task itself.
fn locks(p: &ChildPlan) -> Result<(), Fail> {
    const F_OFD_SETLK: i32 = 37;
    for l in &p.locks {
        let r = if l.kind == 2 {
            let op = if l.ltype == libc::F_RDLCK as u32 {
                libc::LOCK_SH
            } else {
                libc::LOCK_EX
            };
            // SAFETY: flock on a descriptor of this process.
            unsafe { libc::flock(l.fd, op | libc::LOCK_NB) }
        } else {
            // SAFETY: a zeroed struct flock is valid; fcntl reads the one filled in here.
            let mut fl: libc::flock = unsafe { std::mem::zeroed() };
            fl.l_type = l.ltype as libc::c_short;
            fl.l_whence = libc::SEEK_SET as libc::c_short;
            fl.l_start = l.start;
            fl.l_len = l.len;
            let cmd = if l.kind == 4 {
                F_OFD_SETLK
            } else {
                libc::F_SETLK
            };
            // SAFETY: fcntl reads the one struct flock `fl`, a live local filled in above, for a
            // descriptor of this process.
            unsafe { libc::fcntl(l.fd, cmd, &fl) }
        };
        ok(CHILD_LOCKS, r as _, l.fd as u64)?;
    }
    Ok(())
}

fn fill(p: &ChildPlan) -> Result<(), Fail> {
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
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
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

fn close_others(p: &ChildPlan) {
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

fn fds(p: &ChildPlan, s: &Slots) -> Result<(), Fail> {
    for op in &p.fds {
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

fn fs(p: &ChildPlan) -> Result<(), Fail> {
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

fn jump(p: &ChildPlan) -> ! {
    if let Some(Rseq { area, len, sig }) = p.old_rseq {
        // SAFETY: unregisters the rseq area glibc registered for this thread, with the
        // values it used; nothing in this process relies on rseq from here on.
        unsafe {
            if libc::syscall(libc::SYS_rseq, area, len, 1, sig) != 0 {
                libc::syscall(libc::SYS_rseq, area, 32u32, 1, sig);
            }
        }
    }
    // SAFETY: the stack (16-byte aligned top), the entry point and the argument block were laid
    // out by the parent in the reservation this process inherited; the restorer follows the
    // SysV convention, takes the argument block and never returns.
    unsafe { compel_arch::call_on_stack(p.stack_top, p.entry, p.args) }
}
