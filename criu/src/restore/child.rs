//! The restored task's first life: the code the freshly cloned child runs, still inside criu's
//! address space, before it jumps into the restorer.
//!
//! The child sets up its session, premaps every memory area inside the reservation the engine
//! made and fills it from the page files, reopens the task's descriptors at their numbers, sets
//! its directories and umask, and jumps onto the restorer's stack. Everything it needs was
//! prepared by the parent before the clone ([`ChildPlan`]); the child itself only issues system
//! calls through `libc` and never allocates, so a parent with other threads cannot leave it
//! stuck on a lock.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::abi;
use super::layout::{HELPER_STACK, HUGE};
pub use super::ops::stage_name;
use super::ops::*;
use super::plan::SessionOp;
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

/// `struct clone_args` up to `set_tid_size` (`CLONE_ARGS_SIZE_VER1`).
#[repr(C)]
#[derive(Default)]
pub(crate) struct CloneArgs {
    pub(crate) flags: u64,
    pub(crate) pidfd: u64,
    pub(crate) child_tid: u64,
    pub(crate) parent_tid: u64,
    pub(crate) exit_signal: u64,
    pub(crate) stack: u64,
    pub(crate) stack_size: u64,
    pub(crate) tls: u64,
    pub(crate) set_tid: u64,
    pub(crate) set_tid_size: u64,
}

const _: () = assert!(std::mem::size_of::<CloneArgs>() == 80);

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

/// Forks a child with pid `pid`; 0 in the child.
fn fork_with_pid(pid: i32) -> Result<i32, Fail> {
    let tid = [pid];
    let args = CloneArgs {
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
        match fork_with_pid(child.pid) {
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
    if zombies {
        drain_sigchld();
    }
    raise(&slot.created);
    let Some(p) = &me.plan else {
        die(me.zombie.unwrap_or(0))
    };
    if let Err(Fail {
        stage,
        errno: e,
        detail,
    }) = setup(p)
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

fn setup(p: &ChildPlan) -> Result<(), Fail> {
    premap(p)?;
    fill(p)?;
    dups(p)?;
    protect(p)?;
    close_others(p);
    fds(p)?;
    for &fd in &p.inherited {
        // SAFETY: the engine's shared descriptors are placed by now; the copies go.
        unsafe { libc::close(fd) };
    }
    fs(p)?;
    locks(p)?;
    if let Some((nice, policy, prio)) = p.sched {
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
            // SAFETY: as above, on a descriptor of this process.
            unsafe { libc::fcntl(l.fd, cmd, &fl) }
        };
        ok(CHILD_LOCKS, r as _, l.fd as u64)?;
    }
    Ok(())
}

fn premap(p: &ChildPlan) -> Result<(), Fail> {
    for op in p.premap.iter().filter(|op| op.dup_of.is_none()) {
        let prot = if op.fill {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            op.prot
        };
        // A locked area is locked once it is filled (see `protect`).
        let flags = (op.map_flags & !libc::MAP_LOCKED) | libc::MAP_FIXED;
        let fd = match &op.file {
            Some((path, oflags)) => {
                // SAFETY: open with a NUL-terminated path we own.
                let fd = unsafe { libc::open(path.as_ptr(), oflags | libc::O_CLOEXEC) };
                ok(CHILD_PREMAP, fd as _, op.addr)? as i32
            }
            None => -1,
        };
        // SAFETY: the target range lies inside the reservation this process inherited from the
        // engine, which holds nothing else; MAP_FIXED replaces the reservation there.
        let r = unsafe {
            libc::mmap(
                op.addr as *mut libc::c_void,
                op.len as usize,
                prot,
                flags,
                fd,
                op.pgoff as libc::off_t,
            )
        };
        if fd >= 0 {
            // SAFETY: closing the descriptor opened above; the mapping keeps the file.
            unsafe { libc::close(fd) };
        }
        if r == libc::MAP_FAILED {
            return Err(Fail::last(CHILD_PREMAP, op.addr));
        }
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

fn close_all(fds: &[i32]) {
    for fd in fds.iter().filter(|fd| **fd >= 0) {
        // SAFETY: closing page files opened by fill().
        unsafe { libc::close(*fd) };
    }
}

/// One share of a fill: runs to read from the page files into place.
#[derive(Clone, Copy)]
struct Worker<'a> {
    fds: &'a [i32],
    runs: &'a [FillOp],
    /// Whole 2 MiB blocks to give a huge page first (sorted).
    collapse: &'a [(u64, u64)],
    /// Use `UFFDIO_COPY` for small pages of private anonymous memory.
    uffd: bool,
}

impl Worker<'_> {
    /// Fills the runs 2 MiB block by block: a block in `collapse` first gets a huge page (one
    /// page table entry instead of 512, which is most of the cost of fresh memory) and is read
    /// into; any other piece of 64 KiB or more of private anonymous memory is copied in with
    /// `UFFDIO_COPY` (see [`Uffd`]), or else faulted in writable and read into (one call
    /// instead of a fault per page while copying). Only what was saved gets pages, so holes
    /// stay holes; small pieces are just read.
    ///
    /// Huge pages stop for the rest of this share when the kernel refuses one, or when they
    /// have taken more than [`SLOW_HUGE_NS`] each on average (with one block of slack): under
    /// a hypervisor that has taken back the guest's free memory, a huge page can cost more
    /// than 512 small pages. So they never cost much more in all than small pages would have.
    fn fill(&self) -> Result<(), Fail> {
        let mut uffd = Uffd::new();
        let r = self.fill_with(&mut uffd);
        uffd.close();
        r
    }

    fn fill_with(&self, uffd: &mut Uffd) -> Result<(), Fail> {
        let mut huge_ok = !self.collapse.is_empty();
        let (mut spent, mut budget) = (0u64, SLOW_HUGE_NS);
        for f in self.runs {
            let fd = self.fds[f.file];
            let end = f.addr + f.len;
            let mut a = f.addr;
            while a < end {
                let b = end.min((a | (HUGE - 1)) + 1);
                let off = f.offset + (a - f.addr);
                let mut huge = None;
                if huge_ok && a % HUGE == 0 && self.huge(a) {
                    let t = now_ns();
                    huge = Some(collapse(a));
                    spent += now_ns().saturating_sub(t);
                    budget += SLOW_HUGE_NS;
                    huge_ok = huge == Some(true) && spent <= budget;
                }
                // A block tried for a huge page holds a page already: read into it.
                if huge.is_none()
                    && self.uffd
                    && f.anon
                    && b - a >= PREFAULT_MIN
                    && uffd.copy(f.file, fd, a, b - a, off)
                {
                    a = b;
                    continue;
                }
                if huge != Some(true) && b - a >= PREFAULT_MIN {
                    // SAFETY: advice on a writable premapped range of this process; a kernel
                    // without MADV_POPULATE_WRITE refuses it and the read faults the pages.
                    unsafe {
                        compel_arch::syscall3(
                            compel_arch::nr::MADVISE,
                            a as usize,
                            (b - a) as usize,
                            MADV_POPULATE_WRITE,
                        )
                    };
                }
                read_at(fd, a, b - a, off)?;
                a = b;
            }
        }
        Ok(())
    }

    /// Whether the 2 MiB block at `a` is one to give a huge page.
    fn huge(&self, a: u64) -> bool {
        let i = self.collapse.partition_point(|r| r.0 + r.1 <= a);
        self.collapse.get(i).is_some_and(|r| r.0 <= a)
    }
}

/// Filling empty private anonymous memory with `UFFDIO_COPY` from a mapping of the page file:
/// each page is allocated and copied in one step, without being cleared first and without a
/// fault per page (a fifth less time than faulting pages in and reading into them). Made on
/// first use; any refusal (no userfaultfd here, a file shorter than the run) turns it off and
/// the caller reads instead.
struct Uffd {
    /// The userfaultfd (-1: not made yet; -2: unusable).
    fd: i32,
    /// Per page file: where this worker mapped it and how long it is (0: not mapped).
    maps: [(u64, u64); MAX_PAGE_FILES],
}

/// At most this many page files.
const MAX_PAGE_FILES: usize = 256;

/// [`Uffd::maps`] entry of a page file that could not be mapped.
const UNMAPPABLE: u64 = u64::MAX;

impl Uffd {
    fn new() -> Uffd {
        Uffd {
            fd: -1,
            maps: [(0, 0); MAX_PAGE_FILES],
        }
    }

    /// Copies `len` bytes at `off` of page file `file` (open as `fd`) to `addr`, which is
    /// empty private anonymous memory. False if it could not (then nothing is mapped there
    /// that a read would not overwrite, and the range is no longer registered).
    fn copy(&mut self, file: usize, fd: i32, addr: u64, len: u64, off: u64) -> bool {
        if !self.open() || file >= MAX_PAGE_FILES {
            return false;
        }
        let Some(src) = self.source(file, fd, off, len) else {
            return false;
        };
        let range = UffdRange { start: addr, len };
        let mut reg = UffdRegister {
            range,
            mode: UFFDIO_REGISTER_MODE_MISSING,
            ioctls: 0,
        };
        // SAFETY: registers a range of our own writable premapped memory with our userfaultfd;
        // the kernel writes back into `reg` only.
        if unsafe { sys_ioctl(self.fd, UFFDIO_REGISTER, &raw mut reg as usize) } != 0 {
            self.disable();
            return false;
        }
        let mut done = 0;
        let (mut ok, mut present) = (true, false);
        while done < len {
            let mut c = UffdCopy {
                dst: addr + done,
                src: src + done,
                len: len - done,
                mode: 0,
                copy: 0,
            };
            // SAFETY: fills registered empty pages of ours from a read-only mapping of the
            // page file that covers `src..src + len`; the kernel writes back into `c` only.
            let r = unsafe { sys_ioctl(self.fd, UFFDIO_COPY, &raw mut c as usize) };
            if c.copy > 0 {
                done += c.copy as u64;
            }
            if r == 0 {
                break;
            }
            if r != -(libc::EAGAIN as isize) || c.copy <= 0 {
                // A page there already (a huge page the other worker made for a block both
                // fill): read this range; anything else turns the copying off.
                present = r == -(libc::EEXIST as isize);
                ok = false;
                break;
            }
        }
        let mut range = range;
        // SAFETY: unregisters the range registered above.
        let un = unsafe { sys_ioctl(self.fd, UFFDIO_UNREGISTER, &raw mut range as usize) };
        if un != 0 || !(ok || present) {
            self.disable();
        }
        ok && un == 0
    }

    /// Makes the userfaultfd on first use.
    fn open(&mut self) -> bool {
        if self.fd == -1 {
            // SAFETY: userfaultfd with plain flags; a descriptor of ours or an error.
            let fd = unsafe {
                compel_arch::syscall1(
                    compel_arch::nr::USERFAULTFD,
                    (libc::O_CLOEXEC | libc::O_NONBLOCK) as usize,
                )
            };
            self.fd = if fd < 0 { -2 } else { fd as i32 };
            if self.fd >= 0 {
                let mut api = UffdApi {
                    api: UFFD_API,
                    features: 0,
                    ioctls: 0,
                };
                // SAFETY: the API handshake on our new userfaultfd; writes into `api` only.
                if unsafe { sys_ioctl(self.fd, UFFDIO_API, &raw mut api as usize) } != 0 {
                    self.disable();
                }
            }
        }
        self.fd >= 0
    }

    /// Where bytes `off..off + len` of page file `file` are mapped (mapping it whole on first
    /// use); None if the file is shorter or cannot be mapped.
    fn source(&mut self, file: usize, fd: i32, off: u64, len: u64) -> Option<u64> {
        if self.maps[file].0 == 0 {
            // Tried once: a file that cannot be mapped stays unmapped (size 0).
            self.maps[file] = (UNMAPPABLE, 0);
            // SAFETY: fstat of our own descriptor into a stat we own (all-zero is a valid
            // `struct stat`).
            let size = unsafe {
                let mut st: libc::stat = std::mem::zeroed();
                if compel_arch::syscall2(compel_arch::nr::FSTAT, fd as usize, &raw mut st as usize)
                    != 0
                {
                    return None;
                }
                st.st_size as u64
            };
            if size == 0 {
                return None;
            }
            // SAFETY: a new read-only shared mapping of a page file, where the kernel chooses
            // (outside our reservation, which is mapped); unmapped in close().
            let m = unsafe {
                compel_arch::syscall6(
                    compel_arch::nr::MMAP,
                    0,
                    size as usize,
                    libc::PROT_READ as usize,
                    libc::MAP_SHARED as usize,
                    fd as usize,
                    0,
                )
            };
            if m < 0 {
                return None;
            }
            self.maps[file] = (m as u64, size);
        }
        let (base, size) = self.maps[file];
        (base != UNMAPPABLE && off.checked_add(len)? <= size).then_some(base + off)
    }

    fn disable(&mut self) {
        if self.fd >= 0 {
            // SAFETY: closing the userfaultfd this worker made.
            unsafe { compel_arch::syscall1(compel_arch::nr::CLOSE, self.fd as usize) };
        }
        self.fd = -2;
    }

    /// Unmaps the page files and closes the userfaultfd.
    fn close(&mut self) {
        for m in self
            .maps
            .iter_mut()
            .filter(|m| m.0 != 0 && m.0 != UNMAPPABLE)
        {
            // SAFETY: unmaps a page-file mapping made in source().
            unsafe { compel_arch::syscall2(compel_arch::nr::MUNMAP, m.0 as usize, m.1 as usize) };
            *m = (0, 0);
        }
        self.disable();
    }
}

/// ioctl as a raw system call (no errno: see [`read_at`]); 0 or a negative errno.
///
/// # Safety
/// `arg` must be what `req` expects on `fd`.
unsafe fn sys_ioctl(fd: i32, req: u64, arg: usize) -> isize {
    // SAFETY: the caller's promise.
    unsafe { compel_arch::syscall3(compel_arch::nr::IOCTL, fd as usize, req as usize, arg) }
}

/// `struct uffdio_api`.
#[repr(C)]
struct UffdApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

/// `struct uffdio_range`.
#[repr(C)]
#[derive(Clone, Copy)]
struct UffdRange {
    start: u64,
    len: u64,
}

/// `struct uffdio_register`.
#[repr(C)]
struct UffdRegister {
    range: UffdRange,
    mode: u64,
    ioctls: u64,
}

/// `struct uffdio_copy`.
#[repr(C)]
struct UffdCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

const UFFD_API: u64 = 0xaa;
const UFFDIO_API: u64 = 0xc018_aa3f;
const UFFDIO_REGISTER: u64 = 0xc020_aa00;
const UFFDIO_UNREGISTER: u64 = 0x8010_aa01;
const UFFDIO_COPY: u64 = 0xc028_aa03;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;

/// Gives the 2 MiB block at `a` (writable, premapped, still empty) one huge page: its first
/// page is written so that there is something to collapse, then `MADV_COLLAPSE` replaces it.
/// False when the kernel would not (no THP, no huge page free, an older kernel): the block
/// then gets small pages as it is filled.
fn collapse(a: u64) -> bool {
    // SAFETY: `a` is the start of a writable premapped block of this process that is filled
    // right after; the zero written is overwritten by that fill.
    unsafe { std::ptr::write_volatile(a as *mut u8, 0) };
    // SAFETY: advice on that block of our own memory; it changes which pages back the block,
    // not what it holds.
    let r = unsafe {
        compel_arch::syscall3(
            compel_arch::nr::MADVISE,
            a as usize,
            HUGE as usize,
            MADV_COLLAPSE,
        )
    };
    r == 0
}

/// Reads `len` bytes at `off` of `fd` to `addr`. A raw system call: the fill helper shares
/// this thread's TLS, so nothing here may touch errno.
fn read_at(fd: i32, addr: u64, len: u64, off: u64) -> Result<(), Fail> {
    let mut done = 0u64;
    while done < len {
        // SAFETY: the destination is a writable premapped range of at least `len` bytes (the
        // parent checked every run against the areas).
        let n = unsafe {
            compel_arch::syscall4(
                compel_arch::nr::PREAD64,
                fd as usize,
                (addr + done) as usize,
                (len - done) as usize,
                (off + done) as usize,
            )
        };
        if n == -(libc::EINTR as isize) {
            continue;
        }
        if n < 0 {
            return Err(Fail {
                stage: CHILD_FILL,
                errno: -n as i32,
                detail: addr + done,
            });
        }
        if n == 0 {
            return Err(Fail {
                stage: CHILD_FILL,
                errno: libc::ENODATA,
                detail: addr + done,
            });
        }
        done += n as u64;
    }
    Ok(())
}

/// What getting a huge page may cost to be worth it: about what 512 small pages cost beyond
/// the copy into them. Measured on a 2-vCPU VM: 0.25 to 0.5 ms for a huge page the host still
/// backs, 3 to 8 ms for one it must back again first; a 2 MiB block on small pages with
/// `UFFDIO_COPY` 1.3 ms, of which about half is the copy.
const SLOW_HUGE_NS: u64 = 600_000;

/// CLOCK_MONOTONIC in nanoseconds (a raw system call: no errno, see [`read_at`]).
fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`, which we own.
    unsafe {
        compel_arch::syscall2(
            compel_arch::nr::CLOCK_GETTIME,
            libc::CLOCK_MONOTONIC as usize,
            &raw mut ts as usize,
        )
    };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Pieces at least this long are faulted in before they are read.
const PREFAULT_MIN: u64 = 64 << 10;

/// `madvise` advice: make huge pages of a range now, whatever the THP settings say.
const MADV_COLLAPSE: usize = 25;

/// `madvise` advice: fault a range in writable.
const MADV_POPULATE_WRITE: usize = 23;

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
    let ret: i64;
    // SAFETY: clone3 with CLONE_VM and a stack of our own: the new process starts on that
    // stack at the instruction after `syscall` with rax = 0 and calls helper_main, which never
    // returns; this side gets its pid (or an error) in rax. `args`, `tid` and `job` outlive the
    // helper, which is reaped before this frame ends.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov rdi, r12",
            "call r13",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") &raw const args,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") job as *const HelperJob<'_> as u64,
            in("r13") helper_main as extern "C" fn(u64) -> ! as usize,
            out("rcx") _,
            out("r11") _,
        );
    }
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

/// Maps the areas that share an object filled earlier.
fn dups(p: &ChildPlan) -> Result<(), Fail> {
    for op in &p.premap {
        let Some(from) = op.dup_of else { continue };
        // SAFETY: `from` lies in a shared object this process mapped; old size 0 makes mremap
        // create a second mapping of it at `addr`, inside our reservation (MREMAP_FIXED).
        let r = unsafe {
            libc::mremap(
                from as *mut libc::c_void,
                0,
                op.len as usize,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                op.addr as *mut libc::c_void,
            )
        };
        if r == libc::MAP_FAILED {
            return Err(Fail::last(CHILD_PREMAP, op.addr));
        }
    }
    for op in p.premap.iter().filter(|op| op.temporary) {
        // SAFETY: the temporary object mapping is ours; the dups keep the object alive.
        unsafe { libc::munmap(op.addr as *mut libc::c_void, op.len as usize) };
    }
    Ok(())
}

fn protect(p: &ChildPlan) -> Result<(), Fail> {
    for op in p.premap.iter().filter(|op| !op.temporary) {
        if op.fill || op.dup_of.is_some() {
            // SAFETY: changes the protection of an area this process premapped itself.
            let r =
                unsafe { libc::mprotect(op.addr as *mut libc::c_void, op.len as usize, op.prot) };
            ok(CHILD_PROTECT, r as _, op.addr)?;
        }
        for advice in 0..64 {
            if op.madv & (1u64 << advice) != 0 {
                // SAFETY: advice on an area this process premapped itself.
                let r =
                    unsafe { libc::madvise(op.addr as *mut libc::c_void, op.len as usize, advice) };
                ok(CHILD_PROTECT, r as _, op.addr)?;
            }
        }
        if op.map_flags & libc::MAP_LOCKED != 0 {
            // SAFETY: locks an area this process premapped and filled; mremap keeps the lock.
            let r = unsafe { libc::mlock(op.addr as *const libc::c_void, op.len as usize) };
            ok(CHILD_PROTECT, r as _, op.addr)?;
        }
    }
    const MADV_GUARD_INSTALL: i32 = 102;
    for &(addr, len) in &p.guards {
        // SAFETY: guard pages inside an area this process premapped; they hold no saved page.
        let r =
            unsafe { libc::madvise(addr as *mut libc::c_void, len as usize, MADV_GUARD_INSTALL) };
        ok(CHILD_PROTECT, r as _, addr)?;
    }
    Ok(())
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
    // SAFETY: as above.
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

fn fds(p: &ChildPlan) -> Result<(), Fail> {
    for op in &p.fds {
        match op {
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
    // process's filesystem context.
    unsafe {
        if let Some(root) = &p.root {
            ok(CHILD_FS, libc::chroot(root.as_ptr()) as _, 1)?;
        }
        if let Some(cwd) = &p.cwd {
            ok(CHILD_FS, libc::chdir(cwd.as_ptr()) as _, 2)?;
        }
        libc::umask(p.umask as libc::mode_t);
    }
    Ok(())
}

fn jump(p: &ChildPlan) -> ! {
    if let Some((area, len, sig)) = p.old_rseq {
        // SAFETY: unregisters the rseq area glibc registered for this thread, with the
        // values it used; nothing in this process relies on rseq from here on.
        unsafe {
            if libc::syscall(libc::SYS_rseq, area, len, 1, sig) != 0 {
                libc::syscall(libc::SYS_rseq, area, 32u32, 1, sig);
            }
        }
    }
    // SAFETY: the stack, the entry point and the argument block were laid out by the parent in
    // the reservation this process inherited; the restorer never returns.
    unsafe {
        std::arch::asm!(
            "mov rsp, {stack}",
            "call {entry}",
            "ud2",
            stack = in(reg) p.stack_top,
            entry = in(reg) p.entry,
            in("rdi") p.args,
            options(noreturn)
        );
    }
}
