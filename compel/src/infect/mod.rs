//! Infection: put a parasite blob into a seized task, talk to it, and cure the task.
//!
//! [`Parasite::infect`] takes a seized [`Task`] and a [`BlobDesc`](compel_proto::blob::BlobDesc):
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
//! The module is split by job: `setup` (infecting and starting), `rpc` (commands, remote
//! syscalls from the daemon, trap mode), `cure` (returning the task), `errors`; `ctl` (the
//! control socket), [`layout`] (the region) and [`shm`] (making and mapping it) serve them.
//! This file holds the types they share.
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

mod answer;
mod ctl;
mod cure;
mod errors;
pub mod layout;
mod rpc;
mod setup;
pub mod shm;

pub use cure::frame_regs;
pub use errors::{InfectError, RpcError};

use std::borrow::BorrowMut;
use std::time::Duration;

use compel_arch::{SigStack, UserRegs};
use compel_proto::rpc::{LOG_INFO, ParasiteInit};
use compel_proto::{read_plain, write_plain};
use nix::errno::Errno;

use crate::ptrace::Stop;
use crate::{RemoteAddr, Resume, Task, TaskError, Xsave};
use ctl::Ctl;
use layout::Layout;
use shm::LocalMap;

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

/// Whether the daemon, stopped in `stop` at instruction `ip`, is between commands: no command
/// is in flight (its answer came), and it was stopped in its own code by our interrupt. It then
/// reaches its `recvmsg` with nothing else to do.
fn daemon_quiet(stop: Stop, ip: u64, region: (u64, u64), in_flight: bool) -> bool {
    !in_flight
        && matches!(stop, Stop::Interrupt | Stop::Group(_))
        && (region.0..region.1).contains(&ip)
}

/// The trap flag and the direction flag: both cleared for parasite code (the ABI wants DF
/// clear at function entry).
const EFLAGS_TF_DF: u64 = (1 << 8) | (1 << 10);

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

impl<T: BorrowMut<Task>> Parasite<T> {
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

    /// The host's end of the control socket (`None` once the parasite is cured), for callers
    /// that talk to the parasite themselves (libcompel's `compel_rpc_sock()`).
    pub fn ctl_sock(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.ctl.as_ref().map(|c| c.sock.as_fd())
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
}
