//! `criu` daemons a test starts (page server, lazy-pages daemon, a dump that serves pages):
//! started with `--status-fd` and waited for, then finished with a bound on the wait; one
//! that is dropped unfinished is killed and reaped, so a failing test leaves none behind.

use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::criu_bin;

/// A free loopback TCP port (bound and released again).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `criu` process with its stderr piped.
#[derive(Debug)]
pub struct CriuDaemon {
    child: Option<Child>,
}

impl CriuDaemon {
    /// Starts `criu ARGS` with `env` added, without waiting for anything.
    pub fn spawn<S: AsRef<OsStr>>(args: &[S], env: &[(&str, &str)]) -> CriuDaemon {
        let child = Command::new(criu_bin())
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        CriuDaemon { child: Some(child) }
    }

    /// Starts `criu ARGS --status-fd N` with `env` added and waits for its status byte:
    /// `Ok` once it wrote a zero byte, `Err` (to be [`finish`](Self::finish)ed for its
    /// stderr) if it ended or wrote anything else first.
    pub fn start<S: AsRef<OsStr>>(
        args: &[S],
        env: &[(&str, &str)],
    ) -> Result<CriuDaemon, CriuDaemon> {
        let (r, w): (OwnedFd, OwnedFd) = nix::unistd::pipe().unwrap();
        let child = Command::new(criu_bin())
            .args(args)
            .args(["--status-fd", &w.as_raw_fd().to_string()])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(w);
        let d = CriuDaemon { child: Some(child) };
        let mut b = [1u8; 1];
        match std::fs::File::from(r).read(&mut b) {
            Ok(1) if b[0] == 0 => Ok(d),
            _ => Err(d),
        }
    }

    /// Its pid.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// Waits up to `limit` for it to end; returns whether it succeeded and its stderr.
    /// Panics (after killing and reaping it) if it does not end in time.
    pub fn finish(mut self, limit: Duration) -> (bool, String) {
        let mut c = self.child.take().unwrap();
        let end = Instant::now() + limit;
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                let mut err = String::new();
                c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
                return (st.success(), err);
            }
            if Instant::now() > end {
                let _ = c.kill();
                let _ = c.wait();
                panic!("criu (pid {}) did not end within {limit:?}", c.id());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for CriuDaemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
