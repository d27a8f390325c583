//! `criu service`: a unix `SOCK_SEQPACKET` socket at `--address` (mode 0600: only the owner
//! connects; every request is checked against the client's credentials, see `peer`), each
//! connection served by a process of its own, the socket file removed when the service is told
//! to stop (`SIGTERM`, `SIGINT`).
// Unsafe code: daemonizes (daemon, dup2) and polls the listening socket.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, UnixAddr, accept4, bind, listen, socket,
};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork};

use super::RpcError;
use super::opts::Mode;
use crate::log::LogSink;

/// CRIU's default service address (relative to the work directory).
pub const DEFAULT_ADDRESS: &str = "./criu_service.socket";

/// How to run the service.
#[derive(Clone, Debug)]
pub struct ServiceOptions {
    /// The socket's path.
    pub address: PathBuf,
    /// `--daemon`: go to the background once the socket listens.
    pub daemon: bool,
    /// `--pidfile`: where to write the service's pid (after going to the background).
    pub pidfile: Option<PathBuf>,
}

/// Removes the socket file when the service ends, however it ends.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn sock_err(what: &'static str) -> impl FnOnce(nix::errno::Errno) -> RpcError {
    move |errno| RpcError::Socket { what, errno }
}

/// Binds the socket, then serves connections until `SIGTERM` or `SIGINT`; `log` is the
/// service's own log (each request logs where its options say).
///
/// # Errors
/// [`RpcError`] when the socket cannot be set up, going to the background or writing the
/// pidfile fails, or waiting for connections fails.
pub fn run(opts: &ServiceOptions, log: &LogSink) -> Result<(), RpcError> {
    let listener = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(sock_err("socket"))?;
    let addr = UnixAddr::new(&opts.address).map_err(sock_err("address"))?;
    // A stale socket file of an earlier service is replaced, as CRIU does.
    let _ = std::fs::remove_file(&opts.address);
    bind(listener.as_raw_fd(), &addr).map_err(sock_err("bind"))?;
    let file = SocketFile(opts.address.clone());
    std::fs::set_permissions(&opts.address, std::fs::Permissions::from_mode(0o600)).map_err(
        |source| RpcError::Io {
            what: format!("chmod {}", opts.address.display()),
            source,
        },
    )?;
    listen(&listener, Backlog::new(16).map_err(sock_err("listen"))?).map_err(sock_err("listen"))?;
    tracing::info!("the service socket is bound to {}", opts.address.display());

    if opts.daemon {
        // SAFETY: daemon() forks and the parent exits at once; this process is single-threaded
        // here, so the child carries on with consistent state.
        if unsafe { libc::daemon(1, 0) } == -1 {
            return Err(RpcError::Io {
                what: "going to the background".into(),
                source: std::io::Error::last_os_error(),
            });
        }
        // daemon() pointed stdin, stdout and stderr at /dev/null; a log that went to stderr
        // holds its own duplicate of the old stderr, which would keep the caller's terminal or
        // pipe open: it follows stderr to /dev/null.
        if log.path().is_none() {
            // SAFETY: dup2 replaces the log's own descriptor with a duplicate of stderr (now
            // /dev/null); the descriptor stays open and owned by the log.
            unsafe { libc::dup2(libc::STDERR_FILENO, log.fd().as_raw_fd()) };
        }
    }
    if let Some(p) = &opts.pidfile {
        crate::pidfile::write_pidfile(p, std::process::id() as i32).map_err(|e| RpcError::Io {
            what: format!("write pidfile {}", p.display()),
            source: std::io::Error::other(e.to_string()),
        })?;
    }

    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        mask.add(s);
    }
    let mut old = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), Some(&mut old))
        .map_err(sock_err("sigprocmask"))?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(sock_err("signalfd"))?;
    let result = accept_loop(&listener, &sfd, &old);
    drop(file);
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    result
}

fn accept_loop(listener: &OwnedFd, sfd: &SignalFd, old: &SigSet) -> Result<(), RpcError> {
    loop {
        let mut fds = [
            libc::pollfd {
                fd: listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: sfd.as_fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: poll reads and writes the two live pollfd entries of `fds`.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(RpcError::Io {
                what: "waiting for connections".into(),
                source: e,
            });
        }
        if fds[1].revents != 0 {
            while let Ok(Some(info)) = sfd.read_signal() {
                if info.ssi_signo == Signal::SIGCHLD as u32 {
                    reap_workers();
                } else {
                    tracing::info!("signal {}: the service stops", info.ssi_signo);
                    return Ok(());
                }
            }
        }
        if fds[0].revents != 0 {
            let conn = match accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
                // SAFETY: accept4 returned a new descriptor that nothing else owns.
                Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
                Err(nix::errno::Errno::EINTR | nix::errno::Errno::ECONNABORTED) => continue,
                Err(e) => return Err(sock_err("accept")(e)),
            };
            spawn_worker(conn, listener, old);
        }
    }
}

fn spawn_worker(conn: OwnedFd, listener: &OwnedFd, old: &SigSet) {
    // SAFETY: the service is single-threaded, so the child may run arbitrary code after fork.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(old), None);
            // SAFETY: the listener is closed in this child only, which never uses it again.
            unsafe { libc::close(listener.as_raw_fd()) };
            let code = match super::server::serve(conn.as_fd(), Mode::Service) {
                Ok(()) => 0,
                Err(e) => {
                    tracing::error!("service worker: {e}");
                    1
                }
            };
            drop(conn);
            std::process::exit(code);
        }
        Ok(ForkResult::Parent { child }) => {
            tracing::info!(worker = child.as_raw(), "connection handed to a worker");
        }
        Err(e) => tracing::error!("cannot fork a worker: {e}"),
    }
}

/// Reaps every worker that has ended.
fn reap_workers() {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(WaitStatus::Exited(pid, code)) => {
                tracing::info!(worker = pid.as_raw(), "worker exited with {code}");
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) => {
                tracing::info!(worker = pid.as_raw(), "worker was killed by {sig}");
            }
            Ok(_) => {}
        }
    }
}

/// The address a service run listens on: `--address`, else CRIU's default.
pub fn address_or_default(address: Option<&Path>) -> PathBuf {
    address.map_or_else(|| PathBuf::from(DEFAULT_ADDRESS), Path::to_path_buf)
}
