//! criu as a service (layer: engine front end): CRIU's RPC protocol (`rpc.proto`: `criu_req`,
//! `criu_resp`, `criu_opts`, `criu_notify`, ...) over a unix `SOCK_SEQPACKET` socket, one
//! protobuf message per packet.
//!
//! Two ways in, as with CRIU:
//!
//! - [`swrk`]: `criu swrk FD`, started by a client (rust-criu, libcriu, go-criu, runc) that
//!   made a socketpair and handed one end over as descriptor `FD`. criu answers one request,
//!   and more while the client sets `keep_open`, then exits.
//! - [`service`]: `criu service --address PATH [--daemon] [--pidfile FILE]`, a listening
//!   socket; every connection is served by a process of its own.
//!
//! A request's `criu_opts` fill the same [`crate::options::Options`] the command line fills
//! ([`opts::to_options`]), so dump and restore run exactly as `criu dump`/`criu restore` would.
//! Every request type gets an answer; those not built yet (`PRE_DUMP`, `PAGE_SERVER`,
//! ...) are answered with `success = false`, `cr_errno` and `cr_errmsg`.
//!
//! ```no_run
//! // What `criu swrk 3` does.
//! criu::service::swrk("3").unwrap();
//! ```
// Unsafe code: adopts the inherited swrk socket descriptor and sets its flags with fcntl.
#![allow(unsafe_code)]

pub mod opts;
pub mod peer;
mod server;
pub mod service;
pub mod wire;

use std::os::fd::{AsFd, FromRawFd, OwnedFd};

pub use opts::Mode;
pub use server::{criu_version as version, serve};
pub use service::ServiceOptions;

/// The CRIU release whose formats and behaviour this criu matches (what `VERSION` reports).
pub const CRIU_VERSION_MAJOR: i32 = 4;
/// See [`CRIU_VERSION_MAJOR`].
pub const CRIU_VERSION_MINOR: i32 = 2;

/// The CRIU release matched, as `criu --version` prints it (`4.2`).
pub fn criu_release() -> String {
    format!("{CRIU_VERSION_MAJOR}.{CRIU_VERSION_MINOR}")
}

/// This implementation and its own version (`compel-criu 0.1.0`): the `name` of the RPC
/// `VERSION` reply and the `Implementation:` line of `criu --version`.
pub fn implementation() -> String {
    format!("compel-criu {}", env!("CARGO_PKG_VERSION"))
}

/// Errors of the RPC front end (a bad request is answered, not one of these).
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// `criu swrk` was given something that is not a usable descriptor.
    #[error("swrk: {arg:?} is not a SOCK_SEQPACKET socket descriptor")]
    BadSwrkFd {
        /// The argument.
        arg: String,
    },
    /// A socket call failed.
    #[error("rpc socket: {what} failed")]
    Socket {
        /// The call.
        what: &'static str,
        /// Why.
        #[source]
        errno: nix::errno::Errno,
    },
    /// Another system call failed.
    #[error("{what} failed")]
    Io {
        /// What was done.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// criu runs with more privilege than the user who started it (installed setuid-root or
    /// with file capabilities): serving RPC so would hand root's power to that user.
    #[error(
        "criu {mode}: refusing to run setuid or with file capabilities for uid {uid} \
         (install criu without them; root clients run it as root)"
    )]
    Elevated {
        /// `swrk` or `service`.
        mode: &'static str,
        /// The real uid of the caller.
        uid: u32,
    },
    /// The client did not acknowledge a notification.
    #[error("notification {action}: {why}")]
    NotifyRefused {
        /// The action (`pre-dump`, `post-restore`, ...).
        action: String,
        /// What the client did instead.
        why: String,
    },
}

/// `criu swrk FD`: serves the client on the socket descriptor `FD` it passed down.
///
/// # Errors
/// [`RpcError::BadSwrkFd`] when `fd` names no `SOCK_SEQPACKET` socket; [`RpcError::Socket`]
/// when the socket fails.
pub fn swrk(fd: &str) -> Result<(), RpcError> {
    refuse_elevated("swrk")?;
    let bad = || RpcError::BadSwrkFd {
        arg: fd.to_string(),
    };
    let raw: i32 = fd.trim().parse().map_err(|_| bad())?;
    // SAFETY: F_GETFD only asks whether `raw` is an open descriptor.
    if raw < 0 || unsafe { libc::fcntl(raw, libc::F_GETFD) } < 0 {
        return Err(bad());
    }
    // SAFETY: `raw` is open (checked above) and was handed to this process to own: nothing
    // else in criu uses it.
    let sk = unsafe { OwnedFd::from_raw_fd(raw) };
    if !wire::is_seqpacket(sk.as_fd()) {
        // Not ours to close after all.
        std::mem::forget(sk);
        return Err(bad());
    }
    // Tasks criu starts (restored trees, action scripts) must not inherit the client's socket.
    // SAFETY: F_SETFD on a descriptor we own.
    unsafe { libc::fcntl(raw, libc::F_SETFD, libc::FD_CLOEXEC) };
    serve(sk.as_fd(), Mode::Swrk)
}

/// `criu service`: see [`service::run`].
///
/// # Errors
/// As [`service::run`].
pub fn service(opts: &ServiceOptions, log: &crate::log::LogSink) -> Result<(), RpcError> {
    refuse_elevated("service")?;
    service::run(opts, log)
}

/// Refuses to serve when the kernel started criu with more privilege than its caller has
/// (`AT_SECURE`: a setuid or setgid binary, or file capabilities) and the caller is not root:
/// every check of the service compares the client with criu's own power, which would then be
/// borrowed.
fn refuse_elevated(mode: &'static str) -> Result<(), RpcError> {
    // SAFETY: getauxval and getuid only read this process's auxiliary vector and credentials.
    let (secure, uid) = unsafe { (libc::getauxval(libc::AT_SECURE) != 0, libc::getuid()) };
    if secure && uid != 0 {
        return Err(RpcError::Elevated { mode, uid });
    }
    Ok(())
}
