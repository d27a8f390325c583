//! The protocol between the host and a running parasite.
//!
//! The host maps an *args area* that both sides see (shared memory). It starts with a
//! [`ParasiteInit`] the host fills in before starting the parasite; command arguments and results
//! live after it, at [`ARGS_PAYLOAD_OFFSET`].
//!
//! The parasite starts at its entry point with `rdi` = the args area's address (in the task) and
//! `rsp` = the top of a stack the host provides (16 KiB or more; the blob, the args area and the
//! stack are the host's to map). Then, by [`ParasiteInit::mode`]:
//! - [`MODE_TRAP`]: it runs [`ParasiteInit::trap_cmd`] once, stores the result in
//!   [`ParasiteInit::trap_ret`] and executes a breakpoint (`SIGTRAP`).
//! - [`MODE_DAEMON`]: it uses the control socket ([`ParasiteInit::ctl_fd`], or connects a
//!   `SOCK_SEQPACKET` unix socket to [`ParasiteInit::sock_addr`]), then serves commands: it
//!   receives a [`CtlMsg`] `{cmd, ack: 0, err: 0}`, runs the command with the payload area, and
//!   answers `{cmd, ack: cmd, err}` (`err` a positive errno, 0 for success). [`CMD_FINI`] is
//!   answered, then the parasite closes the socket and calls `rt_sigreturn` with its stack
//!   pointer at [`ParasiteInit::sigframe`] (a breakpoint if that is 0; with [`INIT_FINI_TRAP`]
//!   it first also closes its log fd and stops itself with [`STOP_SIGNAL`], and the host puts
//!   the task's state back itself). If the host goes away (the socket reads end-of-file), the
//!   parasite returns through the frame on its own.
//!
//! With [`INIT_SETUP`] (daemon mode) the parasite prepares its own surroundings before serving,
//! which saves the host one ptrace round trip per step: it closes [`ParasiteInit::close_fd`],
//! makes the page at [`ParasiteInit::guard`] inaccessible, creates the control socket pair
//! (and a log pair when [`ParasiteInit::setup_log`] is set), stores the task's ends in
//! `ctl_fd`/`log_fd` and the host's ends in `host_ctl`/`host_log`, sets `trap_ret` to 0 (or a
//! negative errno, having closed what it made) and stops itself with [`STOP_SIGNAL`]. The host
//! takes its
//! ends out of the task (`pidfd_getfd`) and resumes the thread; the parasite closes
//! `host_ctl`/`host_log` in the task and serves.
//!
//! File descriptors travel over the control socket as one [`FdsMsg`] per batch of at most
//! [`FDS_PER_MSG`] fds, attached as `SCM_RIGHTS`. A shared-memory region is announced with a
//! [`ShmemMsg`] carrying the memfd behind it.

use crate::Plain;

/// [`ParasiteInit::magic`]: "CPAR".
pub const INIT_MAGIC: u32 = u32::from_le_bytes(*b"CPAR");
/// [`ParasiteInit::version`].
pub const INIT_VERSION: u32 = 2;
/// Offset of the command payload in the args area (after the [`ParasiteInit`]).
pub const ARGS_PAYLOAD_OFFSET: usize = 256;

/// The signal a parasite raises in itself to stop for the host ([`INIT_SETUP`],
/// [`INIT_FINI_TRAP`]); the host suppresses it. `SIGURG`: ignored by default, so a task whose
/// host dies while it is held in that stop is not killed (as `SIGTRAP` would), and the parasite
/// returns through its frame.
pub const STOP_SIGNAL: i32 = 23;
/// [`ParasiteInit::flags`]: stop for the host at [`CMD_FINI`] instead of `rt_sigreturn`.
pub const INIT_FINI_TRAP: u32 = 1;
/// [`ParasiteInit::flags`]: prepare the sockets and the guard page at start (see above).
pub const INIT_SETUP: u32 = 2;

/// Serve commands from the control socket until [`CMD_FINI`].
pub const MODE_DAEMON: u32 = 0;
/// Run one command, then trap.
pub const MODE_TRAP: u32 = 1;

/// End the service loop and return into the task (daemon mode).
pub const CMD_FINI: u32 = 1;
/// Set the log fd (sent right after the command as an [`FdsMsg`] with one fd) and the level (a
/// `u32` at the start of the payload).
pub const CMD_SET_LOG: u32 = 2;
/// Does nothing and succeeds: checks that the parasite serves.
pub const CMD_PING: u32 = 3;
/// The first command number a parasite may define for itself; lower numbers belong to compel.
pub const CMD_USER: u32 = 16;

/// Log levels: a message is written when its level is at most [`ParasiteInit::log_level`].
pub const LOG_ERROR: u32 = 1;
/// Warnings.
pub const LOG_WARN: u32 = 2;
/// Information (the default).
pub const LOG_INFO: u32 = 3;
/// Debugging.
pub const LOG_DEBUG: u32 = 4;

/// The most fds one [`FdsMsg`] carries.
pub const FDS_PER_MSG: usize = 16;

/// The header of the args area, written by the host before the parasite starts.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParasiteInit {
    /// [`INIT_MAGIC`].
    pub magic: u32,
    /// [`INIT_VERSION`].
    pub version: u32,
    /// [`MODE_DAEMON`] or [`MODE_TRAP`].
    pub mode: u32,
    /// The command to run in trap mode.
    pub trap_cmd: u32,
    /// Written by the parasite in trap mode: 0 or a negative errno.
    pub trap_ret: i32,
    /// An already connected control socket in the task, or -1 to connect to `sock_addr`.
    pub ctl_fd: i32,
    /// The log fd in the task, or -1 for none (can be set later with [`CMD_SET_LOG`]).
    pub log_fd: i32,
    /// The most verbose level written ([`LOG_ERROR`]..=[`LOG_DEBUG`]).
    pub log_level: u32,
    /// The stack pointer for the final `rt_sigreturn` when the service loop ends: the address
    /// (in the task) of the `uc` member of an `rt_sigframe` the host wrote (frame address +
    /// `compel_arch::RT_SIGFRAME_UC_OFFSET`), or 0 to end with a breakpoint instead.
    pub sigframe: u64,
    /// Bytes of the args area after [`ARGS_PAYLOAD_OFFSET`].
    pub payload_size: u64,
    /// Bytes of `sock_addr` used (a `sockaddr_un` length as passed to `connect`).
    pub sock_addr_len: u32,
    /// [`INIT_FINI_TRAP`], [`INIT_SETUP`].
    pub flags: u32,
    /// A `struct sockaddr_un` (family `AF_UNIX`, then the path; abstract if it starts with 0).
    pub sock_addr: [u8; 112],
    /// [`INIT_SETUP`]: an fd the parasite closes first (-1 for none).
    pub close_fd: i32,
    /// [`INIT_SETUP`]: 1 to make a log socket pair too.
    pub setup_log: u32,
    /// [`INIT_SETUP`], written by the parasite: the host's end of the control pair.
    pub host_ctl: i32,
    /// [`INIT_SETUP`], written by the parasite: the host's end of the log pair, or -1.
    pub host_log: i32,
    /// [`INIT_SETUP`]: the address of a region to make inaccessible (0 for none).
    pub guard: u64,
    /// [`INIT_SETUP`]: its length in bytes.
    pub guard_len: u64,
    /// Reserved, zero.
    pub reserved: [u64; 7],
}
const _: () = assert!(core::mem::size_of::<ParasiteInit>() == ARGS_PAYLOAD_OFFSET);
// SAFETY: repr(C), integers and integer arrays laid out without padding (56 + 112 + 88 = 256).
unsafe impl Plain for ParasiteInit {}

impl ParasiteInit {
    /// An init header with no socket, no log, trap mode and zero-sized payload: fill in what
    /// you use.
    pub const fn new() -> Self {
        Self {
            magic: INIT_MAGIC,
            version: INIT_VERSION,
            mode: MODE_TRAP,
            trap_cmd: 0,
            trap_ret: 0,
            ctl_fd: -1,
            log_fd: -1,
            log_level: LOG_INFO,
            sigframe: 0,
            payload_size: 0,
            sock_addr_len: 0,
            flags: 0,
            sock_addr: [0; 112],
            close_fd: -1,
            setup_log: 0,
            host_ctl: -1,
            host_log: -1,
            guard: 0,
            guard_len: 0,
            reserved: [0; 7],
        }
    }

    /// Sets `sock_addr` to the unix socket path `path` (a leading 0 byte makes it abstract).
    /// Returns `false` if the path does not fit in a `sockaddr_un`.
    pub fn set_unix_addr(&mut self, path: &[u8]) -> bool {
        const SUN_PATH_MAX: usize = 108;
        if path.len() > SUN_PATH_MAX {
            return false;
        }
        self.sock_addr = [0; 112];
        self.sock_addr[..2].copy_from_slice(&1u16.to_ne_bytes()); // AF_UNIX
        self.sock_addr[2..2 + path.len()].copy_from_slice(path);
        // A filesystem path is passed with its terminator, an abstract one without.
        let nul = usize::from(path.first().is_some_and(|&b| b != 0));
        self.sock_addr_len = (2 + path.len() + nul) as u32;
        true
    }
}

impl Default for ParasiteInit {
    fn default() -> Self {
        Self::new()
    }
}

/// A command or its answer on the control socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CtlMsg {
    /// The command.
    pub cmd: u32,
    /// 0 in a command; the command number in its answer.
    pub ack: u32,
    /// 0 for success, else a positive errno.
    pub err: i32,
}
const _: () = assert!(core::mem::size_of::<CtlMsg>() == 12);
// SAFETY: repr(C), three 4-byte integers, no padding.
unsafe impl Plain for CtlMsg {}

impl CtlMsg {
    /// A command.
    pub const fn cmd(cmd: u32) -> Self {
        Self {
            cmd,
            ack: 0,
            err: 0,
        }
    }

    /// The answer to `cmd` with `err` (0 or a positive errno).
    pub const fn ack(cmd: u32, err: i32) -> Self {
        Self { cmd, ack: cmd, err }
    }
}

/// The data part of a message carrying fds (as `SCM_RIGHTS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FdsMsg {
    /// How many fds are attached (1..=[`FDS_PER_MSG`]).
    pub count: u32,
    /// Reserved, zero.
    pub reserved: u32,
}
const _: () = assert!(core::mem::size_of::<FdsMsg>() == 8);
// SAFETY: repr(C), two u32, no padding.
unsafe impl Plain for FdsMsg {}

/// The data part of a message announcing a shared-memory region; the memfd behind it is attached
/// as `SCM_RIGHTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ShmemMsg {
    /// Where the sender mapped it (informational; 0 if it did not).
    pub addr: u64,
    /// Its size in bytes.
    pub len: u64,
}
const _: () = assert!(core::mem::size_of::<ShmemMsg>() == 16);
// SAFETY: repr(C), two u64, no padding.
unsafe impl Plain for ShmemMsg {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_addr_lengths() {
        let mut init = ParasiteInit::new();
        assert!(init.set_unix_addr(b"/tmp/s"));
        assert_eq!(init.sock_addr_len, 2 + 6 + 1);
        assert_eq!(&init.sock_addr[2..8], b"/tmp/s");
        assert!(init.set_unix_addr(b"\0abs"));
        assert_eq!(init.sock_addr_len, 2 + 4);
        assert!(!init.set_unix_addr(&[b'x'; 109]));
    }
}
