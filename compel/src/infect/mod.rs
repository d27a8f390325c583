//! Infection: put a parasite blob into a seized task, talk to it, and cure the task.
//!
//! [`Parasite::infect`] takes a seized [`Task`] and a [`BlobDesc`]:
//!
//! 1. saves the daemon thread's complete state (general registers, the whole xsave area, the
//!    signal mask, the alternate signal stack);
//! 2. creates a memfd *inside* the task (remote `memfd_create`), takes a copy of it here
//!    (`pidfd_getfd`), and maps it shared on both sides: blob, args area, `rt_sigframe`, and two
//!    stacks with guard pages below them (see [`layout`]); where memfd is unavailable it maps
//!    shared anonymous memory in the task and opens it here through `/proc/PID/map_files`;
//! 3. copies the blob, applies its relocations for the remote base, writes the
//!    [`ParasiteInit`] header and a signal frame that restores the saved state;
//! 4. creates the control socket pair (`SOCK_SEQPACKET`) and a log socket pair inside the task
//!    and takes the host's ends out of it, so nothing depends on paths or network namespaces;
//! 5. starts the parasite at its entry with all signals but `SIGTRAP` blocked, and checks it
//!    answers.
//!
//! Then [`Parasite::call`] and friends run commands (errno on failure, fds over `SCM_RIGHTS`,
//! parasite log lines forwarded to `tracing` under the target `compel::parasite`), and
//! [`Parasite::run_in_thread`] runs one command in any other thread (trap mode).
//!
//! [`Parasite::cure`] sends `FINI`; the parasite answers, closes its socket and calls
//! `rt_sigreturn` through the frame, which restores registers, xsave and signal mask in one go.
//! The host follows the thread with `PTRACE_SYSCALL` until that syscall has returned, then
//! unmaps the region (here and there), closes the remaining fds in the task and leaves the task
//! seized as it was found; dropping or detaching the [`Task`] releases it. If the host dies at
//! any point, the parasite sees its socket close and returns through the same frame by itself.
//! Every failure after the parasite started cures before returning; if the parasite itself
//! misbehaves (faults, hangs, never answers) the host restores the saved state through ptrace
//! instead.
//!
//! ```no_run
//! use compel::Task;
//! use compel::infect::{InfectOptions, Parasite};
//! # fn blob() -> compel_proto::blob::BlobDesc<'static> { unimplemented!() }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut task = Task::seize(1234)?;
//! let mut parasite = Parasite::infect(&mut task, &blob(), InfectOptions::default())?;
//! let answer: u64 = parasite.call_with(compel_proto::rpc::CMD_USER, &0u64)?;
//! println!("the parasite said {answer}");
//! parasite.cure()?;
//! task.detach()?;
//! # Ok(()) }
//! ```

mod ctl;
pub mod layout;
pub mod shm;

use std::borrow::BorrowMut;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use compel_arch::{
    RED_ZONE, RT_SIGFRAME_UC_OFFSET, SigStack, SigframeState, UserRegs, nr, restart,
    write_rt_sigframe,
};
use compel_proto::blob::{BlobDesc, BlobError};
use compel_proto::rpc::{
    CMD_FINI, CMD_PING, CtlMsg, FdsMsg, LOG_INFO, MODE_DAEMON, MODE_TRAP, ParasiteInit,
};
use compel_proto::{Plain, read_plain, write_plain};
use nix::errno::Errno;

use crate::ptrace::{Stop, SyscallInfo};
use crate::{RemoteAddr, Resume, Task, TaskError, Xsave};
use ctl::Ctl;
use layout::Layout;
use shm::LocalMap;

/// Errors of the RPC layer: talking to a running parasite.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The parasite closed its control socket (it died, or cured itself).
    #[error("task {pid}: parasite closed the control socket")]
    Closed {
        /// The task.
        pid: i32,
    },
    /// No answer in time.
    #[error("task {pid}: no {what} from the parasite within {after:?}")]
    Timeout {
        /// The task.
        pid: i32,
        /// What was awaited.
        what: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// A socket operation failed.
    #[error("task {pid}: control socket {op} failed")]
    Socket {
        /// The task.
        pid: i32,
        /// `"send"`, `"recv"`, `"poll"`.
        op: &'static str,
        /// The kernel's error.
        #[source]
        source: Errno,
    },
    /// The parasite ran the command and it failed with this errno.
    #[error("task {pid}: parasite command {cmd} failed: {errno}")]
    Failed {
        /// The task.
        pid: i32,
        /// The command.
        cmd: u32,
        /// The errno the parasite reported.
        errno: Errno,
    },
    /// The parasite answered something that is not the answer to the command.
    #[error("task {pid}: bad answer to command {cmd}: {what}")]
    BadReply {
        /// The task.
        pid: i32,
        /// The command.
        cmd: u32,
        /// What was wrong.
        what: &'static str,
    },
    /// An fd message was malformed.
    #[error("task {pid}: bad fd message: {what}")]
    BadFds {
        /// The task.
        pid: i32,
        /// What was wrong.
        what: &'static str,
    },
    /// The thread running the parasite stopped or died instead of answering (a fault in the
    /// parasite, a signal it could not block).
    #[error("task {pid}: parasite thread {tid} stopped ({stop})")]
    ThreadStopped {
        /// The task.
        pid: i32,
        /// The thread.
        tid: i32,
        /// How it stopped.
        stop: String,
    },
    /// Arguments or results do not fit the payload area.
    #[error("task {pid}: {need} bytes do not fit the {have}-byte payload area")]
    PayloadTooSmall {
        /// The task.
        pid: i32,
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// A trap-mode command failed in a way other than its own errno.
    #[error("task {pid}: trap-mode run in thread {tid} failed")]
    Trap {
        /// The task.
        pid: i32,
        /// The thread.
        tid: i32,
        /// Why.
        #[source]
        source: TaskError,
    },
    /// The parasite was already cured (or never started).
    #[error("task {pid}: no parasite is running")]
    NotRunning {
        /// The task.
        pid: i32,
    },
}

impl RpcError {
    /// The errno a failed command reported, if that is what happened.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            RpcError::Failed { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// Errors of infecting and curing.
#[derive(Debug, thiserror::Error)]
pub enum InfectError {
    /// Task control (ptrace, remote memory, remote syscalls) failed.
    #[error(transparent)]
    Task(#[from] TaskError),
    /// A syscall run inside the task failed.
    #[error("task {pid}: remote {call} failed")]
    RemoteSyscall {
        /// The task.
        pid: i32,
        /// The syscall.
        call: &'static str,
        /// Its errno.
        #[source]
        source: Errno,
    },
    /// An fd of the task could not be copied here.
    #[error("task {pid}: cannot take its fd {fd}")]
    TakeFd {
        /// The task.
        pid: i32,
        /// The fd number in the task.
        fd: i32,
        /// The error.
        #[source]
        source: Errno,
    },
    /// Shared memory could not be set up on the host side.
    #[error("task {pid}: cannot map the shared region here ({what})")]
    HostMap {
        /// The task.
        pid: i32,
        /// Which step.
        what: &'static str,
        /// The error.
        #[source]
        source: Errno,
    },
    /// The blob is malformed or lacks something.
    #[error("blob: {0}")]
    Blob(BlobError),
    /// The saved state cannot be turned into a signal frame.
    #[error("task {pid}: cannot build the signal frame ({what})")]
    Sigframe {
        /// The task.
        pid: i32,
        /// Why.
        what: &'static str,
    },
    /// Talking to the parasite failed.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The parasite did not return into the task as expected; the host restored the state
    /// itself.
    #[error("task {pid}: parasite did not return through its frame ({what})")]
    Cure {
        /// The task.
        pid: i32,
        /// What happened instead.
        what: String,
    },
}

/// How the shared region is made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ShmMethod {
    /// A memfd, falling back to [`ShmMethod::MapFiles`] if the task cannot create one.
    #[default]
    Auto,
    /// A memfd created inside the task.
    Memfd,
    /// Shared anonymous memory in the task, opened here through `/proc/PID/map_files` (needs
    /// `CAP_CHECKPOINT_RESTORE` or `CAP_SYS_ADMIN`).
    MapFiles,
}

/// The steps of an infection's life, reported to [`InfectOptions::hook`] (for tests and
/// tracing tools: a hook can stop or kill the host at a precise point).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The daemon thread's state is saved; nothing is changed in the task yet.
    Saved,
    /// The shared region is mapped in the task and here.
    Mapped,
    /// The blob, args and frame are in place, the sockets made; the parasite is not started.
    Loaded,
    /// The parasite runs and answered.
    Started,
    /// A command was sent, its answer not yet received.
    CommandSent(u32),
    /// `FINI` was sent.
    FiniSent,
    /// The task returned to its own state (through the frame or by the host).
    Returned,
    /// The region is unmapped and the task's fd table is as it was.
    Cured,
}

/// Options of [`Parasite::infect`].
pub struct InfectOptions {
    /// Minimum bytes of command payload (arguments and results).
    pub payload_size: usize,
    /// Bytes of the daemon's stack.
    pub stack_size: usize,
    /// Bytes of the stack for trap-mode runs in other threads.
    pub trap_stack_size: usize,
    /// How long to wait for any answer of the parasite.
    pub timeout: Duration,
    /// The parasite's log level (`compel_proto::rpc::LOG_*`), or `None` for no log channel.
    pub log_level: Option<u32>,
    /// The thread to run the daemon in (default: the thread-group leader).
    pub thread: Option<i32>,
    /// How to make the shared region.
    pub shm: ShmMethod,
    /// Called at each [`Stage`].
    pub hook: Option<Box<dyn FnMut(Stage)>>,
}

impl Default for InfectOptions {
    fn default() -> Self {
        InfectOptions {
            payload_size: 16 * 1024,
            stack_size: 64 * 1024,
            trap_stack_size: 32 * 1024,
            timeout: Duration::from_secs(10),
            log_level: Some(LOG_INFO),
            thread: None,
            shm: ShmMethod::Auto,
            hook: None,
        }
    }
}

impl std::fmt::Debug for InfectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InfectOptions")
            .field("payload_size", &self.payload_size)
            .field("stack_size", &self.stack_size)
            .field("trap_stack_size", &self.trap_stack_size)
            .field("timeout", &self.timeout)
            .field("log_level", &self.log_level)
            .field("thread", &self.thread)
            .field("shm", &self.shm)
            .field("hook", &self.hook.is_some())
            .finish()
    }
}

/// The complete user-visible state of one thread, saved before the parasite runs.
#[derive(Clone, Debug)]
pub struct SavedState {
    /// General registers as found.
    pub regs: UserRegs,
    /// The xsave area as found.
    pub xsave: Xsave,
    /// Blocked signals as found.
    pub sigmask: u64,
    /// The alternate signal stack as found.
    pub altstack: SigStack,
}

/// A parasite running inside a task.
///
/// `T` is the seized task, owned ([`Task`]) or borrowed (`&mut Task`). Dropping a `Parasite`
/// that was not cured cures it (errors are logged).
pub struct Parasite<T: BorrowMut<Task>> {
    /// Always `Some` until [`Parasite::cure_into_task`] takes it.
    task: Option<T>,
    pid: i32,
    tid: i32,
    base: RemoteAddr,
    layout: Layout,
    map: LocalMap,
    ctl: Option<Ctl>,
    saved: SavedState,
    /// fds the parasite holds in the task: the control and log sockets.
    remote_ctl: i32,
    remote_log: i32,
    entry: usize,
    hook: Option<Box<dyn FnMut(Stage)>>,
    running: bool,
    cured: bool,
    /// The parasite closed its control socket itself (it ended through its frame).
    ctl_closed: bool,
    /// A command was sent and its answer not (yet) received.
    in_flight: bool,
    /// The trap stack's guard page is in place (made on the first trap-mode run).
    trap_guarded: bool,
}

/// The task inside a parasite's `Option` (present until the parasite is consumed).
fn tk<T: BorrowMut<Task>>(t: &mut Option<T>) -> &mut Task {
    t.as_mut()
        .expect("the task is taken only when the parasite is consumed")
        .borrow_mut()
}

impl<T: BorrowMut<Task>> std::fmt::Debug for Parasite<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parasite")
            .field("pid", &self.pid)
            .field("tid", &self.tid)
            .field("base", &self.base)
            .field("layout", &self.layout)
            .field("running", &self.running)
            .finish_non_exhaustive()
    }
}

/// The frame's registers: the saved ones, with an interrupted syscall set up to run again
/// (`rt_sigreturn` disables the kernel's own restart logic). A syscall interrupted with
/// `-ERESTART_RESTARTBLOCK` cannot be restarted through a frame (its restart state is
/// cleared by `rt_sigreturn`): it returns `EINTR`, as after a signal handler.
pub fn frame_regs(saved: &UserRegs) -> UserRegs {
    let mut r = *saved;
    r.rewind_restart_for_sigreturn();
    r
}

/// Whether the daemon, stopped in `stop` at instruction `ip`, is between commands: no command
/// is in flight (its answer came), and it was stopped in its own code by our interrupt. It then
/// reaches its `recvmsg` with nothing else to do.
fn daemon_quiet(stop: Stop, ip: u64, region: (u64, u64), in_flight: bool) -> bool {
    !in_flight
        && matches!(stop, Stop::Interrupt | Stop::Group(_))
        && (region.0..region.1).contains(&ip)
}

fn needs_restart_block(regs: &UserRegs) -> bool {
    regs.pending_restart() == Some(restart::ERESTART_RESTARTBLOCK)
}

/// The trap flag and the direction flag: both cleared for parasite code (the ABI wants DF
/// clear at function entry).
const EFLAGS_TF_DF: u64 = (1 << 8) | (1 << 10);

const PTRACE_O_TRACESYSGOOD: usize = 1;
const PTRACE_O_SUSPEND_SECCOMP: usize = 1 << 21;

fn set_trace_options(tid: i32, suspend_seccomp: bool) -> Result<(), TaskError> {
    let mut opts = PTRACE_O_TRACESYSGOOD;
    if suspend_seccomp {
        opts |= PTRACE_O_SUSPEND_SECCOMP;
    }
    // SAFETY: PTRACE_SETOPTIONS takes the options as an integer; no memory is passed.
    let rc = unsafe { libc::ptrace(libc::PTRACE_SETOPTIONS, tid, 0usize, opts) };
    if rc < 0 {
        return Err(TaskError::Ptrace {
            op: "SETOPTIONS",
            tid,
            source: Errno::last(),
        });
    }
    Ok(())
}

/// Runs a syscall in `tid` and turns a negative result into an error naming the call.
fn rsys(
    task: &mut Task,
    tid: i32,
    call: &'static str,
    nr: usize,
    args: [u64; 6],
) -> Result<i64, InfectError> {
    let ret = task.remote_syscall_in(tid, nr, args)?;
    if (-4095..0).contains(&ret) {
        return Err(InfectError::RemoteSyscall {
            pid: task.pid(),
            call,
            source: Errno::from_raw(-ret as i32),
        });
    }
    Ok(ret)
}

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

    fn stage(&mut self, s: Stage) {
        if let Some(h) = self.hook.as_mut() {
            h(s);
        }
    }

    /// The task's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The thread the daemon runs in.
    pub fn tid(&self) -> i32 {
        self.tid
    }

    /// The region's address in the task (the blob's load base).
    pub fn remote_base(&self) -> RemoteAddr {
        self.base
    }

    fn region(&self) -> (u64, u64) {
        (self.base.0, self.base.0 + self.layout.len as u64)
    }

    /// The region's layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The state saved before the parasite ran (what cure restores).
    pub fn saved_state(&self) -> &SavedState {
        &self.saved
    }

    /// The address (in the task) of exported blob symbol at offset `off`.
    pub fn remote_symbol(&self, off: usize) -> RemoteAddr {
        self.base.offset(off as u64)
    }

    /// The command payload area (shared with the parasite).
    pub fn payload(&self) -> &[u8] {
        let off = self.layout.payload_off();
        &self.map.bytes()[off..off + self.layout.payload_size]
    }

    /// The command payload area, writable: put a command's arguments here before
    /// [`Parasite::call`].
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let off = self.layout.payload_off();
        let len = self.layout.payload_size;
        &mut self.map.bytes_mut()[off..off + len]
    }

    /// The task, for work on other threads while the parasite runs. Do not run remote syscalls
    /// in the daemon thread through it (use [`Parasite::syscall`]).
    pub fn task(&mut self) -> &mut Task {
        tk(&mut self.task)
    }

    fn init_mut(&mut self) -> ParasiteInit {
        read_plain(&self.map.bytes()[self.layout.args_off..]).unwrap_or_default()
    }

    fn write_init(&mut self, init: &ParasiteInit) {
        let off = self.layout.args_off;
        write_plain(&mut self.map.bytes_mut()[off..], init);
    }

    fn ctl(&mut self) -> Result<&mut Ctl, RpcError> {
        if !self.running {
            return Err(RpcError::NotRunning { pid: self.pid });
        }
        self.ctl
            .as_mut()
            .ok_or(RpcError::NotRunning { pid: self.pid })
    }

    /// Runs command `cmd` in the daemon with the arguments already in the payload area; the
    /// results are in the payload area afterwards.
    ///
    /// # Errors
    /// [`RpcError::Failed`] with the parasite's errno, or a transport error. After a transport
    /// error (not after `Failed`) the parasite is cured at once.
    pub fn call(&mut self, cmd: u32) -> Result<(), RpcError> {
        self.call_fds(cmd, &[]).map(drop)
    }

    /// Writes `args` at the start of the payload, runs `cmd`, and reads an `R` from the start
    /// of the payload.
    ///
    /// # Errors
    /// As for [`Parasite::call`], and [`RpcError::PayloadTooSmall`].
    pub fn call_with<A: Plain, R: Plain>(&mut self, cmd: u32, args: &A) -> Result<R, RpcError> {
        let have = self.layout.payload_size;
        let need = std::mem::size_of::<A>().max(std::mem::size_of::<R>());
        if need > have {
            return Err(RpcError::PayloadTooSmall {
                pid: self.pid,
                need,
                have,
            });
        }
        write_plain(self.payload_mut(), args);
        self.call(cmd)?;
        read_plain(self.payload()).ok_or(RpcError::PayloadTooSmall {
            pid: self.pid,
            need,
            have,
        })
    }

    /// Runs `cmd`, sending `send` to the parasite right after the command (it receives them
    /// with the fds plugin), and returns the fds the parasite sent before answering.
    ///
    /// # Errors
    /// As for [`Parasite::call`].
    pub fn call_fds(
        &mut self,
        cmd: u32,
        send: &[BorrowedFd<'_>],
    ) -> Result<Vec<OwnedFd>, RpcError> {
        let res = self.call_fds_inner(cmd, send);
        if let Err(e) = &res
            && e.errno().is_none()
        {
            tracing::warn!(pid = self.pid, cmd, error = %e, "parasite failed; curing");
            if let Err(c) = self.cure_inner() {
                tracing::error!(pid = self.pid, error = %c, "cure after a failed call");
            }
        }
        res
    }

    fn call_fds_inner(
        &mut self,
        cmd: u32,
        send: &[BorrowedFd<'_>],
    ) -> Result<Vec<OwnedFd>, RpcError> {
        self.send_command(cmd)?;
        if !send.is_empty() {
            self.ctl()?.send_fds(send)?;
        }
        self.wait_answer(cmd)
    }

    /// Sends command `cmd` without waiting for its answer (then exchange fds with
    /// [`Parasite::send_fds`]/[`Parasite::recv_fds`] as the command expects, and finish with
    /// [`Parasite::wait_answer`]). [`Parasite::call`] does all of that in one go.
    ///
    /// # Errors
    /// A transport error.
    pub fn send_command(&mut self, cmd: u32) -> Result<(), RpcError> {
        self.in_flight = true;
        self.ctl()?.send(&CtlMsg::cmd(cmd), &[])?;
        self.stage(Stage::CommandSent(cmd));
        Ok(())
    }

    /// Waits for the answer to `cmd` (sent with [`Parasite::send_command`]) and returns the fds
    /// the parasite sent before answering.
    ///
    /// # Errors
    /// [`RpcError::Failed`] with the parasite's errno, or a transport error.
    pub fn wait_answer(&mut self, cmd: u32) -> Result<Vec<OwnedFd>, RpcError> {
        let res = self.collect_answer(cmd);
        if matches!(res, Ok(_) | Err(RpcError::Failed { .. })) {
            self.in_flight = false;
        }
        res
    }

    fn collect_answer(&mut self, cmd: u32) -> Result<Vec<OwnedFd>, RpcError> {
        let ctl = self.ctl()?;
        let pid = ctl.pid;
        let mut fds = Vec::new();
        loop {
            let got = ctl.recv("an answer")?;
            if got.bytes.len() == std::mem::size_of::<FdsMsg>() {
                let hdr: FdsMsg = read_plain(&got.bytes).ok_or(RpcError::BadFds {
                    pid,
                    what: "short fds message",
                })?;
                if hdr.count as usize != got.fds.len() || got.fds.is_empty() {
                    return Err(RpcError::BadFds {
                        pid,
                        what: "fd count does not match the attached fds",
                    });
                }
                fds.extend(got.fds);
                continue;
            }
            let msg: CtlMsg = read_plain(&got.bytes).ok_or(RpcError::BadReply {
                pid,
                cmd,
                what: "short message",
            })?;
            if msg.cmd != cmd || msg.ack != cmd {
                return Err(RpcError::BadReply {
                    pid,
                    cmd,
                    what: "answer to another command",
                });
            }
            if msg.err != 0 {
                return Err(RpcError::Failed {
                    pid,
                    cmd,
                    errno: Errno::from_raw(msg.err),
                });
            }
            return Ok(fds);
        }
    }

    /// Sends fds to the parasite outside a command (for a handler that is already waiting for
    /// them).
    ///
    /// # Errors
    /// A transport error.
    pub fn send_fds(&mut self, fds: &[BorrowedFd<'_>]) -> Result<(), RpcError> {
        self.ctl()?.send_fds(fds)
    }

    /// Receives one batch of fds the parasite sends outside a command's answer.
    ///
    /// # Errors
    /// A transport error.
    pub fn recv_fds(&mut self) -> Result<Vec<OwnedFd>, RpcError> {
        self.ctl()?.recv_fds()
    }

    /// Runs syscall `nr` in the daemon thread while the parasite is idle (the thread is
    /// interrupted, runs the call, and goes back to waiting for commands).
    ///
    /// # Errors
    /// A task-control error; if the daemon was not idle, the parasite is cured.
    pub fn syscall(&mut self, nr: usize, args: [u64; 6]) -> Result<i64, RpcError> {
        if !self.running {
            return Err(RpcError::NotRunning { pid: self.pid });
        }
        let tid = self.tid;
        let pid = self.pid;
        let trap = |source| RpcError::Trap { pid, tid, source };
        let (stop, now) = self.stop_daemon().map_err(trap)?;
        if !daemon_quiet(stop, now.ip(), self.region(), self.in_flight) {
            let e = RpcError::ThreadStopped {
                pid,
                tid,
                stop: format!("{stop:?} at {:#x}", now.ip()),
            };
            if let Err(c) = self.cure_stopped(stop) {
                tracing::error!(pid, error = %c, "cure after finding the daemon busy");
            }
            return Err(e);
        }
        let task = tk(&mut self.task);
        // Tell the task layer what the registers really are now (parasite code).
        task.set_regs(tid, &now).map_err(trap)?;
        let ret = task.remote_syscall_in(tid, nr, args).map_err(trap);
        task.resume(tid, Resume::Continue).map_err(trap)?;
        ret
    }

    /// Interrupts the daemon thread and returns its stop and registers.
    fn stop_daemon(&mut self) -> Result<(Stop, UserRegs), TaskError> {
        let tid = self.tid;
        crate::ptrace::interrupt(tid).map_err(TaskError::ptrace("INTERRUPT", tid))?;
        let task = tk(&mut self.task);
        let stop = task.wait_stop(tid)?;
        let regs = crate::ptrace::get_regs(tid).map_err(TaskError::ptrace("GETREGS", tid))?;
        Ok((stop, regs))
    }

    /// Runs command `cmd` once in thread `tid` (any seized thread but the daemon's), with the
    /// payload area as for [`Parasite::call`] and on a stack of its own; the thread's registers,
    /// xsave state and signal mask are put back afterwards.
    ///
    /// # Errors
    /// [`RpcError::Failed`] with the command's errno, or [`RpcError::Trap`].
    pub fn run_in_thread(&mut self, tid: i32, cmd: u32) -> Result<(), RpcError> {
        if !self.running {
            return Err(RpcError::NotRunning { pid: self.pid });
        }
        let pid = self.pid;
        let trap = |source| RpcError::Trap { pid, tid, source };
        if tid == self.tid {
            return Err(trap(TaskError::NotOurThread { pid, tid }));
        }
        if !self.trap_guarded {
            let (off, len, prot) = self.layout.trap_guard();
            let addr = self.base.offset(off as u64).0;
            let task = tk(&mut self.task);
            match rsys(
                task,
                tid,
                "mprotect",
                nr::MPROTECT,
                [addr, len as u64, prot as u64, 0, 0, 0],
            ) {
                Ok(_) => self.trap_guarded = true,
                Err(InfectError::Task(e)) => return Err(trap(e)),
                Err(e) => {
                    tracing::warn!(pid, tid, error = %e, "no guard page below the trap stack")
                }
            }
        }
        let mut init = self.init_mut();
        init.mode = MODE_TRAP;
        init.trap_cmd = cmd;
        init.trap_ret = 0;
        self.write_init(&init);
        let entry = self.base.offset(self.entry as u64).0;
        let args = self.base.offset(self.layout.args_off as u64).0;
        let stack = self.base.offset(self.layout.tstack_top() as u64).0;
        let (lo, hi) = (self.base.0, self.base.0 + self.layout.len as u64);
        let task = tk(&mut self.task);
        let result = run_trap(task, tid, entry, args, stack, (lo, hi));
        let mut init = self.init_mut();
        let ret = init.trap_ret;
        init.mode = MODE_DAEMON;
        init.trap_cmd = 0;
        self.write_init(&init);
        result.map_err(trap)?;
        if ret < 0 {
            return Err(RpcError::Failed {
                pid,
                cmd,
                errno: Errno::from_raw(-ret),
            });
        }
        Ok(())
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
        set_trace_options(tid, task.seccomp_suspended())?;
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

    /// Ends the parasite and returns the task to its own code and state: see the module
    /// documentation. The task stays seized.
    ///
    /// # Errors
    /// An [`InfectError`] if something could not be undone; the parts that could are undone.
    pub fn cure(mut self) -> Result<(), InfectError> {
        self.cure_inner()
    }

    /// Cures and gives the task back (still seized), e.g. an owned [`Task`] to detach.
    ///
    /// # Errors
    /// As for [`Parasite::cure`]; the task is dropped (detached) then.
    pub fn cure_into_task(mut self) -> Result<T, InfectError> {
        self.cure_inner()?;
        Ok(self
            .task
            .take()
            .expect("the task is taken only when the parasite is consumed"))
    }

    fn cure_inner(&mut self) -> Result<(), InfectError> {
        if self.cured {
            return Ok(());
        }
        let known = if self.running {
            match self.stop_daemon() {
                Ok((stop, _)) => Some(stop),
                Err(e) => {
                    self.cured = true;
                    self.running = false;
                    return Err(e.into());
                }
            }
        } else {
            None
        };
        self.finish_cure(known)
    }

    /// Cures when the daemon thread is known to be stopped in `stop`.
    fn cure_stopped(&mut self, stop: Stop) -> Result<(), InfectError> {
        self.finish_cure(Some(stop))
    }

    fn finish_cure(&mut self, stopped: Option<Stop>) -> Result<(), InfectError> {
        self.cured = true;
        let mut first: Option<InfectError> = None;
        if let Some(stop) = stopped {
            self.running = false;
            if let Err(e) = self.return_to_task(stop) {
                tracing::warn!(pid = self.pid, error = %e, "parasite did not end cleanly");
                first = Some(e);
            }
            self.stage(Stage::Returned);
        }
        if let Some(ctl) = self.ctl.as_mut() {
            ctl.drain_log();
        }
        self.ctl = None;
        let tid = self.tid;
        let (base, len) = (self.base, self.layout.len);
        let rctl = if self.ctl_closed { -1 } else { self.remote_ctl };
        let rlog = self.remote_log;
        let task = tk(&mut self.task);
        for fd in [rctl, rlog] {
            if fd >= 0
                && let Err(e) = rsys(task, tid, "close", nr::CLOSE, [fd as u64, 0, 0, 0, 0, 0])
            {
                first.get_or_insert(e);
            }
        }
        if let Err(e) = rsys(
            task,
            tid,
            "munmap",
            nr::MUNMAP,
            [base.0, len as u64, 0, 0, 0, 0],
        ) {
            first.get_or_insert(e);
        }
        if let Err(e) = park(task, tid) {
            first.get_or_insert(e);
        }
        self.stage(Stage::Cured);
        tracing::debug!(pid = self.pid, ok = first.is_none(), "cured");
        first.map_or(Ok(()), Err)
    }

    /// Ends the daemon, which is stopped in `stop`: through its frame if it is idle in its
    /// service loop, else by restoring the saved state with ptrace.
    fn return_to_task(&mut self, stop: Stop) -> Result<(), InfectError> {
        let tid = self.tid;
        let pid = self.pid;
        let now = crate::ptrace::get_regs(tid).map_err(TaskError::ptrace("GETREGS", tid))?;
        let (lo, hi) = (self.base.0, self.base.0 + self.layout.len as u64);
        if !(lo..hi).contains(&now.ip()) && !(lo..hi).contains(&now.sp()) {
            // The parasite already returned through its frame by itself (it panicked or lost
            // its socket) and the task runs its own code: keep that state, only tell the task
            // layer what it is.
            tracing::warn!(
                pid,
                ip = now.ip(),
                "parasite had already returned into the task"
            );
            self.ctl_closed = true;
            let mask =
                crate::ptrace::get_sigmask(tid).map_err(TaskError::ptrace("GETSIGMASK", tid))?;
            let task = tk(&mut self.task);
            task.set_regs(tid, &now)?;
            task.set_sigmask(tid, mask)?;
            return Ok(());
        }
        if !daemon_quiet(stop, now.ip(), self.region(), self.in_flight) {
            // Crashed, stuck, or busy in a command: do not wait for it.
            return self.force_restore(stop);
        }
        let keep_restart_block = needs_restart_block(&self.saved.regs);
        tk(&mut self.task).resume(tid, Resume::Syscall)?;
        if let Some(ctl) = self.ctl.as_mut()
            && let Err(e) = ctl.send(&CtlMsg::cmd(CMD_FINI), &[])
        {
            tracing::warn!(pid, error = %e, "cannot send FINI");
        }
        self.stage(Stage::FiniSent);
        // Follow the parasite's few remaining syscalls (recvmsg, sendmsg, close, maybe a log
        // write) to the entry of rt_sigreturn.
        let mut stops = 0;
        loop {
            let stop = tk(&mut self.task).wait_stop(tid)?;
            match stop {
                Stop::Syscall => {
                    let info = crate::ptrace::syscall_info(tid)
                        .map_err(TaskError::ptrace("GET_SYSCALL_INFO", tid))?;
                    if let SyscallInfo::Entry { nr: n, .. } = info
                        && n == nr::RT_SIGRETURN as u64
                    {
                        break;
                    }
                }
                Stop::Interrupt | Stop::Signal(libc::SIGTRAP) => {}
                other => return self.force_restore(other),
            }
            stops += 1;
            if stops > 64 {
                return self.force_restore(stop);
            }
            tk(&mut self.task).resume(tid, Resume::Syscall)?;
        }
        self.ctl_closed = true;
        let task = tk(&mut self.task);
        if keep_restart_block {
            // rt_sigreturn would cancel the pending restart of the interrupted call: skip it
            // and restore the same state through ptrace instead.
            let mut r = crate::ptrace::get_regs(tid).map_err(TaskError::ptrace("GETREGS", tid))?;
            r.clear_syscall_nr();
            task.set_regs(tid, &r)?;
        }
        task.resume(tid, Resume::Syscall)?;
        let stop = task.wait_stop(tid)?;
        if stop != Stop::Syscall {
            return self.force_restore(stop);
        }
        if keep_restart_block {
            self.restore_by_ptrace()?;
        } else {
            let got = crate::ptrace::get_regs(tid).map_err(TaskError::ptrace("GETREGS", tid))?;
            let want = frame_regs(&self.saved.regs);
            if got.rip != want.rip || got.rsp != want.rsp {
                tracing::warn!(pid, ?got, ?want, "frame returned elsewhere");
                return self.force_restore(stop);
            }
            // The exact registers as found (the kernel redoes the restart fix-up when the
            // thread leaves its last stop), and the task layer told about the restored mask.
            let task = tk(&mut self.task);
            task.set_regs(tid, &self.saved.regs)?;
            task.set_sigmask(tid, self.saved.sigmask)?;
        }
        if let Some(ctl) = self.ctl.as_mut()
            && let Err(e) = ctl.recv_ack(CMD_FINI)
        {
            tracing::debug!(pid, error = %e, "no FINI answer");
        }
        Ok(())
    }

    fn force_restore(&mut self, stop: Stop) -> Result<(), InfectError> {
        let tid = self.tid;
        if let Stop::Signal(sig) = stop
            && sig != libc::SIGTRAP
        {
            // A fault of the parasite's own: it must not reach the task.
            tk(&mut self.task).discard_last_kept_signal(tid);
        }
        let at = crate::ptrace::get_regs(tid)
            .map(|r| {
                format!(
                    " at ip {:#x}, syscall {:?} returning {}",
                    r.ip(),
                    r.syscall_nr(),
                    r.syscall_ret()
                )
            })
            .unwrap_or_default();
        self.restore_by_ptrace()?;
        Err(InfectError::Cure {
            pid: self.pid,
            what: format!("{stop:?}{at}"),
        })
    }

    fn restore_by_ptrace(&mut self) -> Result<(), InfectError> {
        let tid = self.tid;
        let task = tk(&mut self.task);
        task.set_regs(tid, &self.saved.regs)?;
        task.set_xsave(tid, &self.saved.xsave)?;
        task.set_sigmask(tid, self.saved.sigmask)?;
        Ok(())
    }
}

impl<T: BorrowMut<Task>> Drop for Parasite<T> {
    fn drop(&mut self) {
        if !self.cured
            && let Err(e) = self.cure_inner()
        {
            tracing::error!(pid = self.pid, error = %e, "cure on drop failed");
        }
    }
}

/// Leaves thread `tid` in an interrupt stop instead of the signal-delivery-stop (`SIGTRAP`) a
/// remote syscall ends in: if this process dies while the task is held there, the kernel
/// resumes the thread without delivering anything, instead of delivering that `SIGTRAP`.
fn park(task: &mut Task, tid: i32) -> Result<(), InfectError> {
    crate::ptrace::interrupt(tid).map_err(TaskError::ptrace("INTERRUPT", tid))?;
    loop {
        task.resume(tid, Resume::Continue)?;
        match task.wait_stop(tid)? {
            Stop::Interrupt | Stop::Group(_) => return Ok(()),
            Stop::Signal(libc::SIGTRAP) => continue,
            other => {
                return Err(InfectError::Task(TaskError::UnexpectedStop {
                    tid,
                    stop: format!("{other:?}"),
                    during: "parking the thread",
                }));
            }
        }
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

/// Runs the blob's entry in trap mode in thread `tid` and puts its state back.
fn run_trap(
    task: &mut Task,
    tid: i32,
    entry: u64,
    args: u64,
    stack: u64,
    blob: (u64, u64),
) -> Result<(), TaskError> {
    let regs = task.regs(tid)?;
    let xsave = task.xsave(tid)?;
    let mask = task.sigmask(tid)?;
    let mut r = regs;
    r.clear_syscall_nr();
    r.set_ip(entry);
    r.set_sp(stack);
    r.rdi = args;
    r.rax = 0;
    r.eflags &= !(EFLAGS_TF_DF);
    task.set_sigmask(tid, crate::ptrace::REMOTE_CODE_SIGMASK)?;
    task.set_regs(tid, &r)?;
    let mut result = Ok(());
    loop {
        if let Err(e) = task.resume(tid, Resume::Continue) {
            result = Err(e);
            break;
        }
        match task.wait_stop(tid) {
            Ok(Stop::Signal(libc::SIGTRAP)) => {
                let ip = crate::ptrace::get_regs(tid)
                    .map_err(TaskError::ptrace("GETREGS", tid))?
                    .ip();
                if (blob.0..blob.1).contains(&ip) {
                    break; // the entry's int3
                }
                result = Err(TaskError::UnexpectedStop {
                    tid,
                    stop: format!("SIGTRAP at {ip:#x}"),
                    during: "trap-mode command",
                });
                break;
            }
            Ok(Stop::Interrupt) => continue,
            Ok(stop) => {
                if let Stop::Signal(_) = stop {
                    task.discard_last_kept_signal(tid);
                }
                result = Err(TaskError::UnexpectedStop {
                    tid,
                    stop: format!("{stop:?}"),
                    during: "trap-mode command",
                });
                break;
            }
            Err(e) => return Err(e),
        }
    }
    task.set_regs(tid, &regs)?;
    task.set_xsave(tid, &xsave)?;
    task.set_sigmask(tid, mask)?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_regs_rewind_restartable_syscalls() {
        let mut r = UserRegs {
            rip: 0x1002,
            orig_rax: 0,
            rax: (-restart::ERESTARTSYS) as u64,
            ..UserRegs::default()
        };
        let f = frame_regs(&r);
        assert_eq!((f.rip, f.rax, f.orig_rax), (0x1000, 0, u64::MAX));
        r.rax = (-restart::ERESTART_RESTARTBLOCK) as u64;
        r.orig_rax = 35;
        let f = frame_regs(&r);
        assert_eq!(f.rip, 0x1002);
        assert_eq!(f.rax as i64, -(libc::EINTR as i64));
        assert!(needs_restart_block(&r));
        // Not in a syscall: untouched.
        r.orig_rax = u64::MAX;
        r.rax = 5;
        assert_eq!(frame_regs(&r).rax, 5);
        assert_eq!(frame_regs(&r).rip, 0x1002);
    }
}
