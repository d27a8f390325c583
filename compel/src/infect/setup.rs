//! Infecting a task: saving its state, mapping the parasite, making the sockets, writing the
//! frame that restores the task, and starting the daemon.
// Unsafe code: fcntl and ftruncate on descriptors we own.
#![allow(unsafe_code)]

use std::borrow::BorrowMut;
use std::os::fd::{AsRawFd, OwnedFd};

use compel_arch::{
    RED_ZONE, RT_SIGFRAME_UC_OFFSET, SigStack, SigframeState, nr, write_rt_sigframe,
};
use compel_proto::blob::BlobDesc;
use compel_proto::rpc::{INIT_FINI_TRAP, INIT_SETUP, MODE_DAEMON, ParasiteInit, STOP_SIGNAL};
use compel_proto::write_plain;
use nix::errno::Errno;

use super::ctl::Ctl;
use super::cure::frame_regs;
use super::layout::Layout;
use super::shm::{self, LocalMap};
use super::{
    EFLAGS_TF_DF, InfectError, InfectOptions, Parasite, SavedState, ShmMethod, Stage, park, rsys,
    tk,
};
use crate::ptrace::Stop;
use crate::{RemoteAddr, Resume, Task, TaskError};

/// What exists in the task while an infection is being set up (undone on failure).
struct Partial {
    remote_fds: Vec<i32>,
    base: Option<(RemoteAddr, usize)>,
}

impl Partial {
    fn undo(&mut self, task: &mut Task, tid: i32) {
        for fd in self.remote_fds.drain(..) {
            if let Err(e) = task.remote_syscall_in(tid, nr::CLOSE, [fd as u64, 0, 0, 0, 0, 0]) {
                tracing::warn!(pid = task.pid(), fd, error = %e, "cannot close fd in task");
            }
        }
        if let Some((base, len)) = self.base.take()
            && let Err(e) =
                task.remote_syscall_in(tid, nr::MUNMAP, [base.0, len as u64, 0, 0, 0, 0])
        {
            tracing::warn!(pid = task.pid(), %base, error = %e, "cannot unmap region in task");
        }
    }
}

impl<T: BorrowMut<Task>> Parasite<T> {
    /// Infects the seized task with `blob` and starts it as a daemon in one thread.
    ///
    /// # Errors
    /// Any [`InfectError`]; the task is left as it was found (still seized).
    pub fn infect(
        mut task: T,
        blob: &BlobDesc<'_>,
        mut opts: InfectOptions,
    ) -> Result<Parasite<T>, InfectError> {
        blob.validate().map_err(InfectError::Blob)?;
        let t = task.borrow_mut();
        let pid = t.pid();
        let tid = opts.thread.unwrap_or(pid);
        let mut hook = opts.hook.take();
        let hooked = hook.is_some();
        let mut stage = |s: Stage| {
            if let Some(h) = hook.as_mut() {
                h(s)
            }
        };
        let saved = save_state(t, tid)?;
        stage(Stage::Saved);
        let mut partial = Partial {
            remote_fds: Vec::new(),
            base: None,
        };
        let built = build(
            t,
            tid,
            blob,
            &opts,
            &saved,
            &mut partial,
            &mut stage,
            hooked,
        );
        let (layout, base, map) = match built {
            Ok(b) => b,
            Err(e) => {
                partial.undo(t, tid);
                return Err(e);
            }
        };
        let mut p = Parasite {
            task: Some(task),
            pid,
            tid,
            base,
            layout,
            map,
            ctl: None,
            saved,
            remote_ctl: -1,
            remote_log: -1,
            entry: blob.entry,
            hook,
            running: false,
            cured: false,
            ctl_closed: false,
            in_flight: false,
            trap_guarded: false,
        };
        if let Err(e) = p.start(&opts, partial.remote_fds.first().copied()) {
            if let Err(c) = p.cure_inner() {
                tracing::warn!(pid, error = %c, "cure after failed start");
            }
            return Err(e);
        }
        p.stage(Stage::Started);
        Ok(p)
    }

    /// Starts the parasite in the daemon thread: it prepares its sockets and guard page itself
    /// and stops ([`INIT_SETUP`]); the host's socket ends are taken out of the task there and
    /// the parasite resumed to serve. `memfd` is the task's fd of the region, which the
    /// parasite closes first. On failure the task's own state is back in place and what is
    /// left in the task (the region, fds) is recorded for the cure to undo.
    fn start(&mut self, opts: &InfectOptions, memfd: Option<i32>) -> Result<(), InfectError> {
        let tid = self.tid;
        let pid = self.pid;
        let mut regs = self.saved.regs;
        regs.clear_syscall_nr();
        regs.set_ip(self.base.offset(self.entry as u64).0);
        regs.set_sp(self.base.offset(self.layout.stack_top() as u64).0);
        regs.rdi = self.base.offset(self.layout.args_off as u64).0;
        regs.rax = 0;
        regs.eflags &= !(EFLAGS_TF_DF); // no trap flag, direction flag clear
        let task = tk(&mut self.task);
        let mut popts = crate::ptrace::options::TRACESYSGOOD;
        if task.seccomp_suspended() {
            popts |= crate::ptrace::options::SUSPEND_SECCOMP;
        }
        crate::ptrace::set_options(tid, popts).map_err(TaskError::ptrace("SETOPTIONS", tid))?;
        task.set_sigmask(tid, crate::ptrace::REMOTE_CODE_SIGMASK)?;
        task.set_regs(tid, &regs)?;
        task.resume(tid, Resume::Continue)?;
        let stop = task.wait_stop(tid)?;
        let ip = crate::ptrace::get_regs(tid)
            .map_err(TaskError::ptrace("GETREGS", tid))?
            .ip();
        let init = self.init_mut();
        let text = (self.base.0, self.base.0 + self.layout.text_size as u64);
        if stop != Stop::Signal(STOP_SIGNAL) || !(text.0..text.1).contains(&ip) {
            // Faulted, stopped or killed before its setup stop: what it made is unknown.
            tracing::warn!(pid, ?stop, ip, "parasite did not reach its setup stop");
            return self.force_restore(stop);
        }
        // The parasite's own stop signal: never the task's to see.
        tk(&mut self.task).discard_last_kept_signal(tid);
        if init.trap_ret != 0 {
            // The parasite closed what it made (and the memfd) before trapping.
            self.restore_by_ptrace()?;
            return Err(InfectError::RemoteSyscall {
                pid,
                call: "parasite setup",
                source: Errno::from_raw(-init.trap_ret),
            });
        }
        let _ = memfd; // closed by the parasite
        self.remote_ctl = init.ctl_fd;
        self.remote_log = init.log_fd;
        let take = |fd: i32| -> Result<Option<OwnedFd>, InfectError> {
            if fd < 0 {
                return Ok(None);
            }
            shm::take_fd(pid, fd)
                .map(Some)
                .map_err(|source| InfectError::TakeFd { pid, fd, source })
        };
        let ends = take(init.host_ctl).and_then(|c| Ok((c, take(init.host_log)?)));
        let (host_ctl, host_log) = match ends {
            Ok((Some(c), l)) => (c, l),
            other => {
                // The parasite stays stopped: close its sockets from the task's own state.
                self.restore_by_ptrace()?;
                let task = tk(&mut self.task);
                for fd in [init.host_ctl, init.host_log] {
                    if fd >= 0 {
                        let _ = rsys(task, tid, "close", nr::CLOSE, [fd as u64, 0, 0, 0, 0, 0]);
                    }
                }
                return Err(match other {
                    Err(e) => e,
                    Ok(_) => InfectError::TakeFd {
                        pid,
                        fd: init.host_ctl,
                        source: Errno::EBADF,
                    },
                });
            }
        };
        if let Some(l) = &host_log {
            // The parasite only writes; nothing it writes may block it for long.
            // SAFETY: fcntl on an fd we own.
            unsafe { libc::fcntl(l.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        }
        self.ctl = Some(Ctl::new(pid, tid, host_ctl, host_log, opts.timeout));
        // Leaving the stop (its signal suppressed), the parasite closes the host's ends in the
        // task and serves.
        tk(&mut self.task).resume(tid, Resume::Continue)?;
        self.running = true;
        tracing::debug!(pid, tid, base = %self.base, "parasite started");
        Ok(())
    }
}

/// Saves thread `tid`'s state.
fn save_state(task: &mut Task, tid: i32) -> Result<SavedState, InfectError> {
    let regs = task.regs(tid)?;
    let xsave = task.xsave(tid)?;
    let sigmask = task.sigmask(tid)?;
    Ok(SavedState {
        regs,
        xsave,
        sigmask,
        altstack: SigStack::default(),
    })
}

type Built = (Layout, RemoteAddr, LocalMap);

/// Writes `data` on the thread's stack below the red zone, runs `f` with its address, and
/// puts the old bytes back.
fn with_stack_scratch<R>(
    task: &mut Task,
    tid: i32,
    data: &[u8],
    f: impl FnOnce(&mut Task, RemoteAddr) -> Result<R, InfectError>,
) -> Result<R, InfectError> {
    let sp = task.regs(tid)?.sp();
    let addr = RemoteAddr(sp - RED_ZONE - data.len() as u64).align_down(16);
    let mut old = vec![0u8; data.len()];
    task.read_mem(addr, &mut old)?;
    task.write_mem(addr, data)?;
    let r = f(task, addr);
    task.write_mem(addr, &old)?;
    r
}

#[expect(
    clippy::too_many_arguments,
    reason = "one private step of infect, called once"
)]
fn build(
    task: &mut Task,
    tid: i32,
    blob: &BlobDesc<'_>,
    opts: &InfectOptions,
    saved: &SavedState,
    partial: &mut Partial,
    stage: &mut dyn FnMut(Stage),
    hooked: bool,
) -> Result<Built, InfectError> {
    let pid = task.pid();
    let layout = Layout::new(
        blob.text_size,
        blob.mem_size(),
        opts.payload_size,
        saved.xsave.bytes().len(),
        opts.stack_size,
        opts.trap_stack_size,
    );
    let len = layout.len as u64;
    let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    // 1. The shared region.
    let mut memfd_err = None;
    let mut mapped = None;
    if opts.shm != ShmMethod::MapFiles {
        match make_memfd(task, tid, len) {
            Ok((fd, host)) => {
                partial.remote_fds.push(fd);
                let base = rsys(
                    task,
                    tid,
                    "mmap",
                    nr::MMAP,
                    [0, len, rw, libc::MAP_SHARED as u64, fd as u64, 0],
                )?;
                partial.base = Some((RemoteAddr(base as u64), layout.len));
                // The memfd stays open in the task until the parasite closes it (INIT_SETUP).
                mapped = Some((RemoteAddr(base as u64), host));
            }
            Err(e) if opts.shm == ShmMethod::Memfd => return Err(e),
            Err(e) => memfd_err = Some(e),
        }
    }
    let (base, host) = match mapped {
        Some(m) => m,
        None => {
            if let Some(e) = memfd_err {
                tracing::debug!(pid, error = %e, "no memfd in the task; using map_files");
            }
            let flags = (libc::MAP_SHARED | libc::MAP_ANONYMOUS) as u64;
            let base = rsys(
                task,
                tid,
                "mmap",
                nr::MMAP,
                [0, len, rw, flags, u64::MAX, 0],
            )?;
            let base = RemoteAddr(base as u64);
            partial.base = Some((base, layout.len));
            let path = format!("/proc/{pid}/map_files/{:x}-{:x}", base.0, base.0 + len);
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| InfectError::HostMap {
                    pid,
                    what: "open map_files",
                    source: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
                })?;
            (base, OwnedFd::from(f))
        }
    };
    let mut map = LocalMap::new(&host, layout.len).map_err(|source| InfectError::HostMap {
        pid,
        what: "mmap",
        source,
    })?;
    drop(host);
    // The text is made executable here; the guard page is the parasite's to make (INIT_SETUP).
    let [text, guard] = layout.protections();
    for (off, plen, prot) in [text] {
        if plen > 0 {
            rsys(
                task,
                tid,
                "mprotect",
                nr::MPROTECT,
                [base.0 + off as u64, plen as u64, prot as u64, 0, 0, 0],
            )?;
        }
    }
    if hooked {
        park(task, tid)?;
    }
    stage(Stage::Mapped);
    // 2. The blob.
    let mem = map.bytes_mut();
    blob.copy_into(&mut mem[..layout.blob_size])
        .map_err(InfectError::Blob)?;
    blob.apply_relocs(&mut mem[..layout.blob_size], base.0)
        .map_err(InfectError::Blob)?;
    // 3. The frame and the init header. The frame leaves the alternate signal stack as it
    //    is (`SS_KEEP_CURRENT`): the parasite never changes it.
    let frame_addr = base.offset(layout.frame_off as u64);
    let fregs = frame_regs(&saved.regs);
    // The frame carries only what the task's own xsave buffer can take back (see
    // `xsave_frame_extent`): a larger one makes `rt_sigreturn` reset the vector registers.
    let (xfeatures, xlen) = compel_arch::xsave_frame_extent(saved.xsave.xstate_bv());
    let state = SigframeState {
        regs: &fregs,
        xsave: &saved.xsave.bytes()[..xlen.min(saved.xsave.bytes().len())],
        xfeatures,
        sigmask: saved.sigmask,
        altstack: None,
    };
    let frame_buf = &mut map.bytes_mut()[layout.frame_off..layout.frame_off + layout.frame_size];
    write_rt_sigframe(frame_buf, frame_addr.0, &state).map_err(|e| InfectError::Sigframe {
        pid,
        what: match e {
            compel_arch::SigframeError::BufferTooSmall => "no room",
            compel_arch::SigframeError::Misaligned => "misaligned",
            compel_arch::SigframeError::XsaveTooShort => "xsave area too short",
        },
    })?;
    let mut init = ParasiteInit::new();
    init.mode = MODE_DAEMON;
    init.flags = INIT_SETUP | INIT_FINI_TRAP;
    init.trap_ret = 1; // the parasite writes 0 (or -errno) before its setup trap
    init.close_fd = partial.remote_fds.first().copied().unwrap_or(-1);
    init.setup_log = u32::from(opts.log_level.is_some());
    init.guard = base.0 + guard.0 as u64;
    init.guard_len = guard.1 as u64;
    init.log_level = opts.log_level.unwrap_or(0);
    init.sigframe = frame_addr.0 + RT_SIGFRAME_UC_OFFSET as u64;
    init.payload_size = layout.payload_size as u64;
    write_plain(&mut map.bytes_mut()[layout.args_off..], &init);
    map.bytes_mut()[layout.payload_off()..layout.payload_off() + 64].fill(0);
    if hooked {
        park(task, tid)?;
    }
    stage(Stage::Loaded);
    Ok((layout, base, map))
}

/// Creates a memfd of `len` bytes in the task; returns its fd there and a copy here.
fn make_memfd(task: &mut Task, tid: i32, len: u64) -> Result<(i32, OwnedFd), InfectError> {
    let pid = task.pid();
    const MFD_CLOEXEC: u64 = 1;
    const MFD_EXEC: u64 = 0x10;
    let fd = with_stack_scratch(task, tid, b"compel-parasite\0", |task, name| {
        match rsys(
            task,
            tid,
            "memfd_create",
            nr::MEMFD_CREATE,
            [name.0, MFD_CLOEXEC | MFD_EXEC, 0, 0, 0, 0],
        ) {
            // Kernels before 6.3 do not know MFD_EXEC (and make memfds executable anyway).
            Err(InfectError::RemoteSyscall {
                source: Errno::EINVAL,
                ..
            }) => rsys(
                task,
                tid,
                "memfd_create",
                nr::MEMFD_CREATE,
                [name.0, MFD_CLOEXEC, 0, 0, 0, 0],
            ),
            other => other,
        }
    })? as i32;
    let host = match shm::take_fd(pid, fd) {
        Ok(h) => h,
        Err(source) => {
            let _ = task.remote_syscall_in(tid, nr::CLOSE, [fd as u64, 0, 0, 0, 0, 0]);
            return Err(InfectError::TakeFd { pid, fd, source });
        }
    };
    // SAFETY: ftruncate on an fd we own.
    if unsafe { libc::ftruncate(host.as_raw_fd(), len as i64) } < 0 {
        let source = Errno::last();
        let _ = task.remote_syscall_in(tid, nr::CLOSE, [fd as u64, 0, 0, 0, 0, 0]);
        return Err(InfectError::HostMap {
            pid,
            what: "ftruncate",
            source,
        });
    }
    Ok((fd, host))
}
