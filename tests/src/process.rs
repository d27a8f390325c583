//! Processes: the test lock, the subreaper, waiting for and reaping by pid, [`Victim`] (a
//! victim with piped stdio), `/proc` queries (state, tracer, children, ids), running code as an
//! unprivileged user, and where this workspace's binaries are.
// Unsafe code: prctl, fork, ptrace and waitid on the test's own children, which nix does not
// cover the way these helpers need.
#![allow(unsafe_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::uio::{RemoteIoVec, process_vm_readv};
use nix::unistd::Pid;
use std::fs;
use std::io::IoSliceMut;

static LOCK: Mutex<()> = Mutex::new(());

/// Takes the process-wide test lock (tolerating a poisoned lock left by a failed test).
pub fn test_lock() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Makes this process a child subreaper (`PR_SET_CHILD_SUBREAPER`), so that orphaned
/// grandchildren are re-parented to it and can be reaped here (PID 1 of this machine does not
/// reap). Idempotent.
///
/// # Panics
/// If the kernel refuses (it never does for this flag).
pub fn become_subreaper() {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) only sets a flag on this process.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(
        rc,
        0,
        "prctl(PR_SET_CHILD_SUBREAPER): {}",
        std::io::Error::last_os_error()
    );
}

/// Whether this process runs with effective uid 0.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// How a process ended, as `waitid` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It called exit with this status.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

/// One `waitid(P_PID, pid, WEXITED | __WALL | extra)`, retried on `EINTR`: how the process
/// ended if it was reaped, `None` if it has not exited yet (only with `WNOHANG` in `extra`).
fn waitid_exit(pid: i32, extra: libc::c_int) -> nix::Result<Option<Exit>> {
    loop {
        // SAFETY: siginfo_t is plain old data; all-zero is a valid value for waitid to fill.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: info is a valid, writable siginfo_t; waitid only writes into it.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::__WALL | extra,
            )
        };
        if rc < 0 {
            let e = nix::errno::Errno::last();
            if e == nix::errno::Errno::EINTR {
                continue;
            }
            return Err(e);
        }
        // SAFETY: waitid filled info (si_pid is 0 when WNOHANG found nothing ready).
        if unsafe { info.si_pid() } == 0 {
            return Ok(None);
        }
        // SAFETY: a child was reaped, so si_status is the valid member.
        let status = unsafe { info.si_status() };
        return Ok(Some(if info.si_code == libc::CLD_EXITED {
            Exit::Code(status)
        } else {
            Exit::Signal(status)
        }));
    }
}

/// Waits for process `pid` (a child of this process) to exit and reaps it. Waits for that pid
/// only (`waitid(P_PID, WEXITED)`), so ptrace stops and other children are left alone.
///
/// # Errors
/// `ECHILD` if `pid` is not a child (or was reaped already).
pub fn wait_exit(pid: i32) -> nix::Result<Exit> {
    loop {
        // Without WNOHANG, waitid returns only once the process was reaped.
        if let Some(e) = waitid_exit(pid, 0)? {
            return Ok(e);
        }
    }
}

/// Like [`wait_exit`] but gives up after `timeout` (returns `Ok(None)`, the process still runs).
///
/// # Errors
/// As for [`wait_exit`].
pub fn wait_exit_timeout(pid: i32, timeout: Duration) -> nix::Result<Option<Exit>> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(e) = waitid_exit(pid, libc::WNOHANG)? {
            return Ok(Some(e));
        }
        if Instant::now() >= end {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The directory that holds this workspace's built binaries for the current profile
/// (`target/<profile>/`), derived from the running test executable
/// (`target/<profile>/deps/<test>-<hash>`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("test exe has a directory");
    if dir.file_name() == Some(OsStr::new("deps")) {
        dir.parent().expect("deps has a parent").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// The path of the workspace binary `name` built for the current profile (see [`bin_dir`]).
/// Binaries of other packages are only there if they were built: see [`workspace_bin`].
pub fn bin_path(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// The path of binary `name` of workspace package `package`, building it first
/// (`cargo build -p PACKAGE --bin NAME`, same profile and target dir as this test) so that it is
/// never stale. `env!("CARGO_BIN_EXE_...")` only covers this package's own binaries; this is how
/// tests reach `compel` and `criu`. Cargo is found through `$CARGO` (set by `cargo test`).
///
/// # Panics
/// If the build fails (the test cannot run without the binary).
pub fn workspace_bin(package: &str, name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let path = bin_path(name);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if built.iter().any(|b| b == name) {
        return path;
    }
    let dir = bin_dir();
    let profile = dir
        .file_name()
        .and_then(|p| p.to_str())
        .unwrap_or("debug")
        .to_string();
    let target_dir = dir
        .parent()
        .expect("profile dir has a parent")
        .to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", package, "--bin", name])
        .env("CARGO_TARGET_DIR", &target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let status = cmd.status().expect("run cargo build");
    assert!(
        status.success(),
        "cargo build -p {package} --bin {name} failed"
    );
    assert!(path.exists(), "{} missing after build", path.display());
    built.push(name.to_string());
    path
}

/// A victim process with piped stdin/stdout. Its stdout lines are read by a background thread
/// and handed out by [`Victim::read_line`]; on drop the victim is killed (if still alive) and
/// reaped by pid.
pub struct Victim {
    pid: i32,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    reaped: bool,
    // Keep the Child so std does not close anything early; it is never waited through std.
    _child: std::process::Child,
}

impl Victim {
    /// Spawns `path` with `args`, stdin and stdout piped, stderr inherited. The victim gets
    /// `PR_SET_PDEATHSIG(SIGKILL)`: it dies when the *thread* that spawned it exits, so spawn
    /// it from the thread that keeps the guard (the test's own thread).
    ///
    /// # Errors
    /// If the program cannot be started.
    pub fn spawn(path: impl AsRef<Path>, args: &[&str]) -> std::io::Result<Victim> {
        let mut cmd = Command::new(path.as_ref());
        cmd.args(args);
        Victim::spawn_command(cmd)
    }

    /// Spawns a prepared command (e.g. with `uid()`/`gid()` or `pre_exec` set); stdin and stdout
    /// are replaced by pipes, stderr is inherited unless the command sets it.
    ///
    /// # Errors
    /// If the program cannot be started.
    pub fn spawn_command(mut cmd: Command) -> std::io::Result<Victim> {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        // Die with the test process if it is killed outright, so nothing is left behind.
        // SAFETY: the closure only calls prctl, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        let pid = child.id() as i32;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Victim {
            pid,
            stdin,
            lines: rx,
            reaped: false,
            _child: child,
        })
    }

    /// The victim's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The next line the victim printed, waiting up to `timeout`. `None` on timeout or when the
    /// victim closed its stdout.
    pub fn read_line(&mut self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Reads lines until one starts with `prefix` and returns it.
    ///
    /// # Errors
    /// A message with every line seen, if none matched within `timeout`.
    pub fn expect_line(&mut self, prefix: &str, timeout: Duration) -> Result<String, String> {
        let end = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.read_line(left) {
                Some(l) if l.starts_with(prefix) => return Ok(l),
                Some(l) => seen.push(l),
                None => {
                    return Err(format!(
                        "victim {}: no line starting with {prefix:?} within {timeout:?}; saw {seen:?}",
                        self.pid
                    ));
                }
            }
        }
    }

    /// Every line the victim prints until it closes stdout (or `timeout` passes).
    pub fn read_rest(&mut self, timeout: Duration) -> Vec<String> {
        let end = Instant::now() + timeout;
        let mut out = Vec::new();
        while let Some(l) = self.read_line(end.saturating_duration_since(Instant::now())) {
            out.push(l);
        }
        out
    }

    /// Writes `data` to the victim's stdin.
    ///
    /// # Errors
    /// If the pipe is closed.
    pub fn write_stdin(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self.stdin.as_mut() {
            Some(s) => {
                s.write_all(data)?;
                s.flush()
            }
            None => Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe)),
        }
    }

    /// Closes the victim's stdin (it reads end-of-file).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Sends `sig` to the victim.
    ///
    /// # Errors
    /// If the victim is gone.
    pub fn signal(&self, sig: Signal) -> nix::Result<()> {
        kill(Pid::from_raw(self.pid), sig)
    }

    /// Waits (up to `timeout`) for the victim to exit, reaps it and returns how it ended;
    /// `None` if it is still running after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Option<Exit> {
        if self.reaped {
            return None;
        }
        match wait_exit_timeout(self.pid, timeout) {
            Ok(Some(e)) => {
                self.reaped = true;
                Some(e)
            }
            _ => None,
        }
    }

    /// Closes the victim's stdin and asserts that it prints `eof` and then exits with status 0,
    /// each within `timeout` (how the victims that read their stdin end).
    #[track_caller]
    pub fn expect_eof_exit(&mut self, timeout: Duration) {
        self.close_stdin();
        assert_eq!(self.read_line(timeout).as_deref(), Some("eof"));
        assert_eq!(self.wait(timeout), Some(Exit::Code(0)));
    }

    /// Records that the victim was reaped elsewhere (e.g. by a tracer's wait that saw it die),
    /// so that drop neither signals nor waits for its pid.
    pub fn mark_reaped(&mut self) {
        self.reaped = true;
    }

    /// The victim's state letter from `/proc/PID/stat` (`R`, `S`, `T`, `t`, `Z`, ...).
    pub fn state(&self) -> Option<char> {
        proc_state(self.pid)
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
            let _ = wait_exit(self.pid);
            self.reaped = true;
        }
    }
}

/// The state letter of task `pid` from `/proc/PID/stat`.
pub fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.trim_start().chars().next()
}

/// The `TracerPid` of task `pid` (0 when not traced).
pub fn tracer_pid(pid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Waits until task `pid`'s state letter is one of `states` (e.g. "S" for sleeping), up to
/// `timeout`. Returns the state seen last.
pub fn wait_state(pid: i32, states: &str, timeout: Duration) -> Option<char> {
    let end = Instant::now() + timeout;
    loop {
        let s = proc_state(pid);
        if s.is_some_and(|c| states.contains(c)) || Instant::now() >= end {
            return s;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// How long [`run_as_user`] waits for its child before killing it.
pub const RUN_AS_USER_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs `f` in a forked child that first drops to `uid`/`gid` (no supplementary groups, via
/// `setgroups`, `setresgid`, `setresuid`) and exits with `f`'s return value (101 if it
/// panics). Waits for that child only and returns its exit status. The child runs with this
/// process's memory image: only the forking thread exists there, so `f` must not rely on locks
/// held by other threads (take [`test_lock`] before calling this). The child itself does not
/// flush the process-wide stdout/stderr: their locks may have been held by libtest's thread
/// (printing a result) at the moment of the fork, and a copy of a held lock never opens (a
/// child hung that way for 8 minutes in `compel_task`). A child that has not ended after
/// [`RUN_AS_USER_TIMEOUT`] is killed and reported, so a hang fails the test instead of CI.
///
/// # Errors
/// If fork fails, the child ends by a signal, or it had to be killed (then `Err` says so).
pub fn run_as_user(uid: u32, gid: u32, f: impl FnOnce() -> i32) -> Result<i32, String> {
    // SAFETY: the child only calls async-signal-safe credential syscalls before running `f`,
    // which the caller guarantees does not depend on other threads; it always ends in _exit.
    match unsafe { libc::fork() } {
        -1 => Err(format!("fork: {}", std::io::Error::last_os_error())),
        0 => {
            // SAFETY: plain credential syscalls on this (child) process.
            let ok = unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                libc::setgroups(0, std::ptr::null()) == 0
                    && libc::setresgid(gid, gid, gid) == 0
                    && libc::setresuid(uid, uid, uid) == 0
            };
            let code = if ok {
                // Changing credentials made us non-dumpable; a normal user's process is
                // dumpable, so match that (it only matters for who may ptrace us).
                // SAFETY: PR_SET_DUMPABLE only sets a flag on this process.
                unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101)
            } else {
                eprintln!(
                    "run_as_user: dropping to {uid}:{gid}: {}",
                    std::io::Error::last_os_error()
                );
                102
            };
            // SAFETY: _exit ends the child without running the parent's atexit handlers.
            unsafe { libc::_exit(code) }
        }
        child => reap_forked(child),
    }
}

/// Whether `/proc/PID` exists: the task runs, or is a zombie not yet reaped.
pub fn pid_exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The thread ids of `pid` (empty if it is gone).
pub fn tids_of(pid: i32) -> Vec<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// The children of every thread of `pid`, sorted (empty if it is gone).
pub fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for t in tids_of(pid) {
        let text =
            std::fs::read_to_string(format!("/proc/{pid}/task/{t}/children")).unwrap_or_default();
        out.extend(
            text.split_whitespace()
                .filter_map(|w| w.parse::<i32>().ok()),
        );
    }
    out.sort();
    out.dedup();
    out
}

/// The children of this process (all its threads), orphans re-parented to it included.
pub fn our_children() -> Vec<i32> {
    children_of(std::process::id() as i32)
}

/// The command name of `pid` from `/proc/PID/comm` (empty if it is gone).
pub fn comm_of(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// `(state, ppid, pgid, sid)` as `/proc/PID/stat` shows them.
pub type StatIds = (char, i32, i32, i32);

/// The [`StatIds`] of task `pid`; `None` if it is gone (or the line does not parse).
pub fn stat_ids(pid: i32) -> Option<StatIds> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    let rest = text.get(text.rfind(')')? + 2..)?;
    let mut f = rest.split_whitespace();
    Some((
        f.next()?.chars().next()?,
        f.next()?.parse().ok()?,
        f.next()?.parse().ok()?,
        f.next()?.parse().ok()?,
    ))
}

/// Waits until file `p` exists and is not empty and returns its text.
///
/// # Panics
/// If that does not happen within `timeout`.
pub fn wait_file(p: &Path, timeout: Duration) -> String {
    let end = Instant::now() + timeout;
    loop {
        if let Ok(s) = std::fs::read_to_string(p)
            && !s.is_empty()
        {
            return s;
        }
        assert!(Instant::now() < end, "{} did not appear", p.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The last `n` lines of file `path` (empty if it cannot be read), for failure messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Makes `pid` traced by another process: forks a helper that seizes it (`PTRACE_SEIZE`, no
/// options), reports through a pipe whether that worked, and then sleeps in `pause()` until
/// killed. Returns the helper's pid and whether it seized `pid`; the caller kills and reaps the
/// helper (its death releases `pid`).
///
/// # Panics
/// If the pipe or the fork fails, or the helper reports nothing.
pub fn fork_other_tracer(pid: i32) -> (i32, bool) {
    let (rd, wr) = nix::unistd::pipe().expect("pipe");
    // SAFETY: the child only calls ptrace, write and pause, then _exit.
    let helper = match unsafe { libc::fork() } {
        0 => {
            // SAFETY: PTRACE_SEIZE with integer arguments only.
            let ok = unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, 0usize, 0usize) } == 0;
            let _ = nix::unistd::write(&wr, &[ok as u8]);
            // SAFETY: pause and _exit are async-signal-safe.
            unsafe {
                libc::pause();
                libc::_exit(0)
            }
        }
        -1 => panic!("fork: {}", std::io::Error::last_os_error()),
        h => h,
    };
    drop(wr);
    let mut b = [0u8; 1];
    assert_eq!(
        nix::unistd::read(&rd, &mut b).expect("read the helper's report"),
        1,
        "the tracer helper said nothing"
    );
    (helper, b[0] == 1)
}

/// A uid/gid that no account uses here (`nobody`), for tests that drop privileges.
pub const UNPRIVILEGED_ID: u32 = 65534;

/// Whether `setpriv` (util-linux) is there to run a command as another user with chosen
/// capabilities.
pub fn have_setpriv() -> bool {
    std::process::Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A scratch directory owned by [`UNPRIVILEGED_ID`], with an `img/` it owns too.
pub fn unprivileged_scratch() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let id = Some(UNPRIVILEGED_ID);
    std::os::unix::fs::chown(t.path(), id, id).unwrap();
    std::fs::create_dir(t.path().join("img")).unwrap();
    std::os::unix::fs::chown(t.path().join("img"), id, id).unwrap();
    t
}

/// `d/name`, made mode 0700 and owned by [`UNPRIVILEGED_ID`] (a directory only that user may
/// write).
pub fn unprivileged_dir(d: &Path, name: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = d.join(name);
    std::fs::create_dir(&p).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&p, Some(UNPRIVILEGED_ID), Some(UNPRIVILEGED_ID)).unwrap();
    p
}

/// Runs `cmd` with stdin from /dev/null; returns its exit code and stderr.
pub fn code_and_stderr(mut cmd: std::process::Command) -> (Option<i32>, String) {
    let o = cmd.stdin(std::process::Stdio::null()).output().unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Makes `path` and every directory above it traversable and readable by everyone, so that an
/// unprivileged test child can execute a binary from the target dir.
///
/// # Errors
/// If a permission change fails.
pub fn make_world_executable(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut p = Some(path);
    while let Some(cur) = p {
        let meta = std::fs::metadata(cur)?;
        let mode = meta.permissions().mode();
        if mode & 0o005 != 0o005 {
            std::fs::set_permissions(cur, std::fs::Permissions::from_mode(mode | 0o005))?;
        }
        p = cur.parent();
    }
    Ok(())
}

/// A command that runs `path` as `uid`/`gid` (std clears the supplementary groups when root
/// drops to another uid), for spawning a victim as an unprivileged user.
pub fn command_as_user(path: impl AsRef<Path>, uid: u32, gid: u32) -> Command {
    let mut cmd = Command::new(path.as_ref());
    cmd.uid(uid).gid(gid);
    cmd
}

/// The value of field `key` (with its colon, e.g. `"SigBlk:"`) of `/proc/PID/status`, trimmed
/// (empty if the field is missing).
///
/// # Panics
/// If the file cannot be read (the task is gone).
pub fn status_field(pid: i32, key: &str) -> String {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
        .unwrap_or_default()
}

/// A hexadecimal [`status_field`] (a signal mask, say) as a number.
///
/// # Panics
/// If the task is gone or the field is not hexadecimal.
pub fn hex_field(pid: i32, key: &str) -> u64 {
    u64::from_str_radix(&status_field(pid, key), 16).unwrap()
}

/// `len` bytes of `pid`'s memory at `addr`, read with `process_vm_readv`.
///
/// # Panics
/// If the read fails or comes back short.
pub fn read_mem(pid: i32, addr: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let n = process_vm_readv(
        Pid::from_raw(pid),
        &mut [IoSliceMut::new(&mut buf)],
        &[RemoteIoVec {
            base: addr as usize,
            len,
        }],
    )
    .unwrap_or_else(|e| panic!("process_vm_readv {addr:#x}: {e}"));
    assert_eq!(n, len);
    buf
}

/// Field 7 of /proc/PID/stat: the controlling terminal's device number (0: none).
pub fn tty_nr(pid: i32) -> u64 {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &s[s.rfind(')').unwrap() + 2..];
    rest.split(' ').nth(4).unwrap().parse().unwrap()
}

/// The fields of `/proc/PID/fdinfo/FD`, line by line.
pub fn fdinfo(pid: i32, fd: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap_or_default()
}

/// Waits up to [`RUN_AS_USER_TIMEOUT`] for `child`, a child this process forked to run a
/// closure under other credentials, and returns its exit code; one still running then is
/// killed and reaped, and reported.
pub(crate) fn reap_forked(child: i32) -> Result<i32, String> {
    match wait_exit_timeout(child, RUN_AS_USER_TIMEOUT) {
        Ok(Some(Exit::Code(c))) => Ok(c),
        Ok(Some(Exit::Signal(s))) => Err(format!("child {child} killed by signal {s}")),
        Ok(None) => {
            // SAFETY: `child` is our own unreaped child, so the pid cannot have been reused.
            unsafe { libc::kill(child, libc::SIGKILL) };
            let _ = wait_exit(child);
            Err(format!(
                "child {child} still running after {RUN_AS_USER_TIMEOUT:?}: killed"
            ))
        }
        Err(e) => Err(format!("waitid {child}: {e}")),
    }
}

/// The `lock:` lines of `/proc/PID/fdinfo/FD` without the kernel's running number.
///
/// # Panics
/// If the fdinfo file cannot be read.
pub fn fd_locks(pid: i32, fd: i32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("lock:"))
        .map(|l| {
            let rest = l.split_once(':').map_or(l, |(_, r)| r);
            rest.split_whitespace().collect::<Vec<_>>().join(" ")
        })
        .collect()
}
