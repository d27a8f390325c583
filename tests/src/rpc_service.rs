//! A root `criu service` for the security tests (issue 23) and clients that ask it one
//! question from a forked child with other credentials (`nobody`, or uid 0 without any
//! capability).
// Unsafe code: the forked client child drops its capabilities (prctl, capset) and ends in
// _exit; the parent waits for it by pid.
#![allow(unsafe_code)]

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criu_images::pb::{CriuReq, CriuResp};
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr, connect, recv, send, setsockopt, socket,
    sockopt,
};
use nix::sys::time::TimeVal;
use prost::Message;

use crate::criu_bin;

/// A root `criu service` child: killed and reaped on drop.
pub struct Service {
    child: Child,
    /// Its socket.
    pub addr: PathBuf,
}

impl Service {
    /// Starts it in `d` (also its work directory), checks it made its socket `0600`, and
    /// hands the socket to `owner` if given (chown, as an administrator would).
    ///
    /// # Panics
    /// If criu does not start, or its socket is open to others.
    pub fn start(d: &Path, owner: Option<u32>) -> Service {
        let addr = d.join("criu.sk");
        let child = Command::new(criu_bin())
            .arg("service")
            .arg("--address")
            .arg(&addr)
            .arg("-W")
            .arg(d)
            .stdin(Stdio::null())
            .spawn()
            .expect("start criu service");
        let t0 = Instant::now();
        while !addr.exists() && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(50));
        let mode = std::fs::metadata(&addr)
            .expect("the service socket")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "the service socket is open to others");
        if let Some(u) = owner {
            std::os::unix::fs::chown(&addr, Some(u), Some(u)).expect("chown the socket");
        }
        Service { child, addr }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `q` to the service at `addr` from a child that `run` starts with other credentials
/// (`run` gets the client's body and returns its exit code, as `run_as_user` does), with its
/// umask set to `umask` if given; returns the answer.
///
/// # Panics
/// If the client cannot connect or gets no `criu_resp`.
pub fn ask_with<R>(addr: &Path, q: &CriuReq, umask: Option<u32>, run: R) -> CriuResp
where
    R: FnOnce(Box<dyn FnOnce() -> i32>) -> Result<i32, String>,
{
    let (rd, wr) = nix::unistd::pipe().expect("pipe");
    let bytes = q.encode_to_vec();
    let addr = addr.to_path_buf();
    let code = run(Box::new(move || {
        if let Some(m) = umask {
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(m));
        }
        let Ok(sk) = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        ) else {
            return 2;
        };
        if connect(
            sk.as_raw_fd(),
            &UnixAddr::new(&addr).expect("a socket path"),
        )
        .is_err()
        {
            return 3;
        }
        let _ = setsockopt(&sk, sockopt::ReceiveTimeout, &TimeVal::new(30, 0));
        if send(sk.as_raw_fd(), &bytes, MsgFlags::empty()).is_err() {
            return 5;
        }
        let mut buf = vec![0u8; 64 * 1024];
        let Ok(n) = recv(sk.as_raw_fd(), &mut buf, MsgFlags::empty()) else {
            return 4;
        };
        let _ = nix::unistd::write(&wr, &buf[..n]);
        0
    }))
    .expect("run the client");
    assert_eq!(code, 0, "the client failed ({code})");
    let mut out = Vec::new();
    std::fs::File::from(rd)
        .read_to_end(&mut out)
        .expect("read the answer");
    CriuResp::decode(out.as_slice()).expect("a criu_resp from the service")
}

/// Runs `f` in a forked child that stays uid 0 but has no capability at all (none permitted,
/// effective or inheritable, an empty bounding set: what `setpriv --inh-caps=-all
/// --bounding-set=-all` gives a program), and no supplementary group; returns its exit code.
///
/// # Errors
/// The child was killed, or ran past [`RUN_AS_USER_TIMEOUT`].
pub fn run_as_uncapped_root(f: impl FnOnce() -> i32) -> Result<i32, String> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    let hdr = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let data = [0u32; 6];
    // SAFETY: the child only calls async-signal-safe credential syscalls before running `f`,
    // which the caller guarantees does not depend on other threads; it always ends in _exit.
    match unsafe { libc::fork() } {
        -1 => Err(format!("fork: {}", std::io::Error::last_os_error())),
        0 => {
            // SAFETY: plain credential syscalls on this (child) process; capset reads the live
            // header and the 2 x 3 words of data above (capability version 3).
            let ok = unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                let mut ok = libc::setgroups(0, std::ptr::null()) == 0;
                for cap in 0..64 {
                    // EINVAL past the last capability this kernel knows.
                    if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0
                        && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL)
                    {
                        ok = false;
                    }
                }
                ok && libc::syscall(libc::SYS_capset, &hdr, data.as_ptr()) == 0
            };
            let code = if ok {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101)
            } else {
                eprintln!(
                    "run_as_uncapped_root: dropping capabilities: {}",
                    std::io::Error::last_os_error()
                );
                102
            };
            // SAFETY: _exit ends the child without running the parent's atexit handlers.
            unsafe { libc::_exit(code) }
        }
        child => crate::process::reap_forked(child),
    }
}
