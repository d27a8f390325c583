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
//! This module holds the sequence of stages; filling memory is in `fill.rs`, the descriptors,
//! terminal and directories in `fds.rs`, file locks in `locks.rs`; the memory work is in
//! `restore/mem.rs`, the page shared with the engine and the other tasks in [`super::sync`], and each kind of open file
//! makes itself ([`crate::files::RestoreFile::make_in_task`]).
// Unsafe code: the new task's own steps: raw system calls between clone and the restorer, where std
// cannot be used.
#![allow(unsafe_code)]

mod fds;
mod fill;
mod locks;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::abi;
use super::mem::{cow_fill, dups, premap, protect};
pub use super::ops::stage_name;
use super::ops::*;
use super::plan::{Rseq, Sched, SessionOp};
use super::sync::{Slots, raise, wait_word, wake};
use fds::{close_others, ctty, fds, fs};
use fill::fill;
use locks::locks;

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
pub(super) fn wait_or_quit(s: &Slots, word: &AtomicU32) {
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
pub(super) fn drain_sigchld() {
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
    if me.adopts {
        // SAFETY: prctl on this process's own flag (the restorer sets the saved value later).
        let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
        if let Err(f) = ok(CHILD_SESSION, r as libc::c_long, 0) {
            fail_slot(&s, i, f);
        }
    }
    // Memory first when children take areas over (they inherit them filled at the fork) or
    // this task takes areas over from its parent (then it moves them into place before its
    // own children could inherit them where the parent had them).
    let early = me.plan.as_ref().filter(|p| p.early_memory);
    if let Some(p) = early
        && let Err(f) = memory(p, &slot.filled)
    {
        fail_slot(&s, i, f);
    }
    if let Some(fd) = me.plan.as_ref().and_then(|p| p.ctty_early) {
        // SAFETY: TIOCSCTTY on the engine's descriptor this process inherited.
        let r = unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) };
        if let Err(f) = ok(CHILD_FDS, r as libc::c_long, fd as u64) {
            fail_slot(&s, i, f);
        }
    }
    for &c in &me.children {
        let child = &nodes[c];
        inherit_only(nodes, order, me, child.pre, child.pre + child.size);
        for op in child.plan.iter().flat_map(|cp| &cp.premap) {
            if let Some(from) = op.inherit_from {
                // SAFETY: advice on an area this task premapped and filled; the next fork
                // copies it (shared copy-on-write) for the child to take over.
                unsafe {
                    libc::madvise(
                        from as *mut libc::c_void,
                        op.len as usize,
                        libc::MADV_DOFORK,
                    )
                };
            }
        }
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
    // The tree's user namespace made beforehand (namespaces::user_owned), once the children
    // exist (they were made with their pids as criu's).
    if let Err(f) = ok(
        CHILD_SESSION,
        crate::namespaces::user_owned::task_enter(),
        0,
    ) {
        fail_slot(&s, i, f);
    }
    if early.is_some() && me.resv.1 != 0 {
        // SAFETY: advice on our own reservation: the premapped areas in it are copied by a
        // fork again (their saved advice is applied once they are protected).
        unsafe {
            libc::madvise(
                me.resv.0 as *mut libc::c_void,
                me.resv.1 as usize,
                libc::MADV_DOFORK,
            )
        };
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
    let memory_now = early.is_none().then_some(&slot.filled);
    let r = setup(p, &s, me.share_files, me.share_fs, memory_now);
    if r.is_ok() && (me.share_files || me.share_fs) {
        raise(&slot.settled);
    }
    if let Err(f) = r {
        report(p, f)
    }
    jump(p)
}

/// Reports a failed step on the status pipe and ends this process.
fn report(p: &ChildPlan, f: Fail) -> ! {
    let st = abi::Status {
        stage: f.stage,
        errno: f.errno,
        detail: f.detail,
    };
    // SAFETY: writes the bytes of a live repr(C) value to our status pipe, then ends this
    // process without running any of the parent's exit handlers.
    unsafe {
        libc::write(
            p.status_fd,
            (&raw const st).cast(),
            std::mem::size_of::<abi::Status>(),
        );
        libc::_exit(1)
    }
}

/// Premaps and fills the task's memory, counting the bytes put in place in `filled`.
fn memory(p: &ChildPlan, filled: &AtomicU64) -> Result<(), Fail> {
    premap(p)?;
    fill(p, filled)?;
    cow_fill(p, filled)
}

/// Sets up the task; its descriptors (and locks) when it has a table of its own, its fs
/// info when that is its own (`shared_*`: its parent's, which the parent sets up); its memory
/// when that was not done before its children were created (`memory_now`: where to count it).
fn setup(
    p: &ChildPlan,
    s: &Slots,
    shared_files: bool,
    shared_fs: bool,
    memory_now: Option<&AtomicU64>,
) -> Result<(), Fail> {
    if let Some(filled) = memory_now {
        memory(p, filled)?;
    }
    for r in &p.aio {
        crate::files::aio::restore_ring(r).map_err(|errno| Fail {
            stage: CHILD_AIO,
            errno,
            detail: r.at,
        })?;
    }
    dups(p)?;
    protect(p)?;
    if let Some(l) = &p.lazy {
        crate::lazy::restore::child_send(l).map_err(|(errno, detail)| Fail {
            stage: CHILD_LAZY,
            errno,
            detail,
        })?;
    }
    if !shared_files {
        close_others(p);
        fds(p, s, false)?;
        // `/dev/tty` opens the session's terminal: made once the leader has it again.
        ctty(p)?;
        fds(p, s, true)?;
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
    for r in &p.packet_rings {
        // The descriptors are in place (its own table, or its parent's).
        crate::files::packet::map_ring(r).map_err(|errno| Fail {
            stage: CHILD_PACKET_RING,
            errno,
            detail: r.at,
        })?;
    }
    if !shared_files {
        locks(p)?;
    }
    if shared_files {
        ctty(p)?;
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
