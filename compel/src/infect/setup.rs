//! Infecting a task: saving its state, mapping the parasite, making the sockets, writing the
//! frame that restores the task, and starting the daemon.

use std::borrow::BorrowMut;
use std::os::fd::{AsRawFd, OwnedFd};

use compel_arch::{
    RED_ZONE, RT_SIGFRAME_UC_OFFSET, SigStack, SigframeState, nr, write_rt_sigframe,
};
use compel_proto::blob::BlobDesc;
use compel_proto::rpc::{CMD_PING, CtlMsg, MODE_DAEMON, ParasiteInit};
use compel_proto::{read_plain, write_plain};
use nix::errno::Errno;

use super::ctl::Ctl;
use super::cure::frame_regs;
use super::layout::Layout;
use super::shm::{self, LocalMap};
use super::{
    EFLAGS_TF_DF, InfectError, InfectOptions, Parasite, SavedState, ShmMethod, Stage, park, rsys,
    tk,
};
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
        let (layout, base, map, ctl, remote_ctl, remote_log) = match built {
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
            ctl: Some(ctl),
            saved,
            remote_ctl,
            remote_log,
            entry: blob.entry,
            hook,
            running: false,
            cured: false,
            ctl_closed: false,
            in_flight: false,
            trap_guarded: false,
        };
        if let Err(e) = p.start() {
            if let Err(c) = p.cure_inner() {
                tracing::warn!(pid, error = %c, "cure after failed start");
            }
            return Err(e);
        }
        p.stage(Stage::Started);
        Ok(p)
    }

    /// Starts the parasite in the daemon thread and checks that it answers.
    fn start(&mut self) -> Result<(), InfectError> {
        let tid = self.tid;
        let mut regs = self.saved.regs;
        regs.clear_syscall_nr();
        regs.set_ip(self.base.offset(self.entry as u64).0);
        regs.set_sp(self.base.offset(self.layout.stack_top() as u64).0);
        regs.rdi = self.base.offset(self.layout.args_off as u64).0;
        regs.rax = 0;
        regs.eflags &= !(EFLAGS_TF_DF); // no trap flag, direction flag clear
        let task = tk(&mut self.task);
        let mut opts = crate::ptrace::options::TRACESYSGOOD;
        if task.seccomp_suspended() {
            opts |= crate::ptrace::options::SUSPEND_SECCOMP;
        }
        crate::ptrace::set_options(tid, opts).map_err(TaskError::ptrace("SETOPTIONS", tid))?;
        task.set_sigmask(tid, crate::ptrace::REMOTE_CODE_SIGMASK)?;
        task.set_regs(tid, &regs)?;
        task.resume(tid, Resume::Continue)?;
        self.running = true;
        tracing::debug!(pid = self.pid, tid, base = %self.base, "parasite started");
        self.in_flight = true;
        let ctl = self.ctl()?;
        ctl.send(&CtlMsg::cmd(CMD_PING), &[])?;
        ctl.recv_ack(CMD_PING)?;
        self.in_flight = false;
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

type Built = (Layout, RemoteAddr, LocalMap, Ctl, i32, i32);

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
                rsys(task, tid, "close", nr::CLOSE, [fd as u64, 0, 0, 0, 0, 0])?;
                partial.remote_fds.retain(|&f| f != fd);
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
    for (off, plen, prot) in layout.protections() {
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
    // 3. The alternate signal stack, as the frame must restore it.
    let scratch = base.offset(layout.payload_off() as u64);
    rsys(
        task,
        tid,
        "sigaltstack",
        nr::SIGALTSTACK,
        [0, scratch.0, 0, 0, 0, 0],
    )?;
    let ss: [u64; 3] = read_plain(&map.bytes()[layout.payload_off()..]).unwrap_or_default();
    let altstack = SigStack {
        ss_sp: ss[0],
        ss_flags: ss[1] as u32 as i32,
        pad: 0,
        ss_size: ss[2],
    };
    // 4. Sockets: made in the task, the host's ends taken out of it.
    let (host_ctl, remote_ctl) = make_socketpair(task, tid, &map, &layout, base, partial, false)?;
    let (host_log, remote_log) = if opts.log_level.is_some() {
        let (h, r) = make_socketpair(task, tid, &map, &layout, base, partial, true)?;
        (Some(h), r)
    } else {
        (None, -1)
    };
    // 5. The frame and the init header.
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
        altstack: Some(altstack),
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
    init.ctl_fd = remote_ctl;
    init.log_fd = remote_log;
    init.log_level = opts.log_level.unwrap_or(0);
    init.sigframe = frame_addr.0 + RT_SIGFRAME_UC_OFFSET as u64;
    init.payload_size = layout.payload_size as u64;
    write_plain(&mut map.bytes_mut()[layout.args_off..], &init);
    map.bytes_mut()[layout.payload_off()..layout.payload_off() + 64].fill(0);
    partial.remote_fds.clear();
    partial.base = None;
    let ctl = Ctl::new(pid, tid, host_ctl, host_log, opts.timeout);
    if hooked {
        park(task, tid)?;
    }
    stage(Stage::Loaded);
    Ok((layout, base, map, ctl, remote_ctl, remote_log))
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

/// Makes a unix socket pair in the task (`SOCK_SEQPACKET` for control, `SOCK_DGRAM` for the
/// log), takes the first end here and closes it there; returns (host end, task's end).
fn make_socketpair(
    task: &mut Task,
    tid: i32,
    map: &LocalMap,
    layout: &Layout,
    base: RemoteAddr,
    partial: &mut Partial,
    log: bool,
) -> Result<(OwnedFd, i32), InfectError> {
    let pid = task.pid();
    let ty = if log {
        libc::SOCK_DGRAM
    } else {
        libc::SOCK_SEQPACKET
    } | libc::SOCK_CLOEXEC;
    let scratch = base.offset(layout.payload_off() as u64);
    rsys(
        task,
        tid,
        "socketpair",
        nr::SOCKETPAIR,
        [libc::AF_UNIX as u64, ty as u64, 0, scratch.0, 0, 0],
    )?;
    let sv: [i32; 2] = read_plain(&map.bytes()[layout.payload_off()..]).unwrap_or([-1, -1]);
    partial.remote_fds.extend(sv);
    let host = shm::take_fd(pid, sv[0]).map_err(|source| InfectError::TakeFd {
        pid,
        fd: sv[0],
        source,
    })?;
    rsys(task, tid, "close", nr::CLOSE, [sv[0] as u64, 0, 0, 0, 0, 0])?;
    partial.remote_fds.retain(|&f| f != sv[0]);
    if log {
        // The parasite only writes; nothing it writes may block it for long.
        // SAFETY: fcntl on an fd we own.
        unsafe { libc::fcntl(host.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    }
    Ok((host, sv[1]))
}
