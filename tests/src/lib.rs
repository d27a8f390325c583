//! Helpers shared by the integration tests: a process-wide lock, a subreaper, victim processes
//! that are always reaped, skip macros that say why, and running code as an unprivileged user.
//!
//! Layer: test support (not shipped). Every test that forks, ptraces or changes process-wide
//! state takes [`test_lock`] first, so that the tests of one test binary run one at a time where
//! it matters.
//!
//! ```no_run
//! use compel_criu_tests::{Victim, become_subreaper, test_lock};
//! use std::time::Duration;
//!
//! let _guard = test_lock();
//! become_subreaper();
//! let mut victim = Victim::spawn("/path/to/victim-busy", &[]).unwrap();
//! let line = victim.expect_line("ready", Duration::from_secs(5)).unwrap();
//! println!("victim {} said {line}", victim.pid());
//! // ... act on victim.pid() ...
//! // Dropping the guard kills and reaps the victim if it still runs.
//! ```

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

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

/// Skips the rest of the current test (returns from it) unless running as root, printing why.
#[macro_export]
macro_rules! skip_if_not_root {
    ($name:expr) => {
        if !$crate::is_root() {
            eprintln!("skipped {}: needs root (effective uid 0)", $name);
            return;
        }
    };
}

/// Skips the rest of the current test (returns from it) unless `cond` holds, printing `why`.
///
/// ```ignore
/// skip_unless!(compel_arch::cpu_has_avx512f(), "the CPU has no AVX-512F");
/// ```
#[macro_export]
macro_rules! skip_unless {
    ($cond:expr, $($why:tt)+) => {
        if !$cond {
            eprintln!("skipped: {}", format_args!($($why)+));
            return;
        }
    };
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

/// Runs `f` in a forked child that first drops to `uid`/`gid` (no supplementary groups, via
/// `setgroups`, `setresgid`, `setresuid`) and exits with `f`'s return value (101 if it
/// panics). Waits for that child only and returns its exit status. The child runs with this
/// process's memory image: only the forking thread exists there, so `f` must not rely on locks
/// held by other threads (take [`test_lock`] before calling this).
///
/// # Errors
/// If fork fails, or the child ends by a signal (then `Err` names it).
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
            let _ = std::io::stdout().flush();
            let _ = std::io::stderr().flush();
            // SAFETY: _exit ends the child without running the parent's atexit handlers.
            unsafe { libc::_exit(code) }
        }
        child => match wait_exit(child) {
            Ok(Exit::Code(c)) => Ok(c),
            Ok(Exit::Signal(s)) => Err(format!("child {child} killed by signal {s}")),
            Err(e) => Err(format!("waitid {child}: {e}")),
        },
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

/// The workspace's `criu` binary, built first if needed (see [`workspace_bin`]).
pub fn criu_bin() -> PathBuf {
    workspace_bin("criu", "criu")
}

/// Runs `criu ARGS` with stdin from /dev/null and returns what it did (status, stdout, stderr).
///
/// # Panics
/// If criu cannot be started.
pub fn criu(args: &[&str]) -> Output {
    criu_env(args, &[])
}

/// [`criu`] with extra environment variables.
///
/// # Panics
/// If criu cannot be started.
pub fn criu_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(criu_bin());
    c.args(args).stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run criu")
}

/// Runs `criu dump -t PID -D IMG EXTRA...` (see [`criu`]).
///
/// # Panics
/// If criu cannot be started or `img` is not UTF-8.
pub fn criu_dump(pid: i32, img: &Path, extra: &[&str]) -> Output {
    let pid = pid.to_string();
    let mut args = vec![
        "dump",
        "-t",
        &pid,
        "-D",
        img.to_str().expect("utf-8 image path"),
    ];
    args.extend_from_slice(extra);
    criu(&args)
}

/// Asserts that a command succeeded; the message names `what` and shows its status, stdout
/// and stderr.
pub fn assert_ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what}: {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// [`assert_ok`] that also shows the log file `log` (criu's `-o` log, say) when it fails.
pub fn assert_ok_log(o: &Output, what: &str, log: &Path) {
    assert!(
        o.status.success(),
        "{what}: {:?}\nstdout: {}\nstderr: {}\nlog: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// A process for `criu` to dump: started with stdin from /dev/null, stdout and stderr into a log
/// file and no descriptor beyond 0..2 (closed in the child before exec). Or any process this
/// test must not leave behind ([`Spawned::guard`], e.g. a restored task). On drop it is killed
/// and reaped by pid, unless it was reaped already.
pub struct Spawned {
    pid: i32,
    reaped: bool,
    // Kept so that std closes nothing early; the process is reaped by pid, never through std.
    _child: Option<Child>,
}

impl Spawned {
    /// Starts `bin ARGS` with its output into `log`, as user and group `uid` if given (then the
    /// binary is made world-executable first). No parent-death signal: it would be part of the
    /// dumped state, and a restored task's parent (`criu restore -d`) exits right away.
    ///
    /// # Panics
    /// If the log cannot be created or the program cannot be started.
    pub fn spawn(bin: impl AsRef<Path>, args: &[&str], log: &Path, uid: Option<u32>) -> Spawned {
        Spawned::start(bin.as_ref(), args, log, uid, false)
    }

    /// [`Spawned::spawn`], but the process also gets `PR_SET_PDEATHSIG(SIGKILL)`, so that it
    /// dies with the spawning thread if the test process is killed outright.
    ///
    /// # Panics
    /// As for [`Spawned::spawn`].
    pub fn spawn_dying_with_us(
        bin: impl AsRef<Path>,
        args: &[&str],
        log: &Path,
        uid: Option<u32>,
    ) -> Spawned {
        Spawned::start(bin.as_ref(), args, log, uid, true)
    }

    fn start(bin: &Path, args: &[&str], log: &Path, uid: Option<u32>, pdeathsig: bool) -> Spawned {
        let out = std::fs::File::create(log).expect("create the victim's log");
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("duplicate the log descriptor"))
            .stderr(out);
        if let Some(u) = uid {
            make_world_executable(bin).expect("make the victim world-executable");
            cmd.uid(u).gid(u);
        }
        // SAFETY: the closure only makes async-signal-safe syscalls in the child.
        unsafe {
            cmd.pre_exec(move || {
                if pdeathsig {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                }
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn the victim");
        Spawned {
            pid: child.id() as i32,
            reaped: false,
            _child: Some(child),
        }
    }

    /// A guard for a child started with a command of the test's own (and the same care: output
    /// into a file, no descriptor beyond 0..2).
    pub fn from_child(child: Child) -> Spawned {
        Spawned {
            pid: child.id() as i32,
            reaped: false,
            _child: Some(child),
        }
    }

    /// A guard for process `pid` started some other way (a restored task, say): killed and
    /// reaped on drop like a spawned one.
    pub fn guard(pid: i32) -> Spawned {
        Spawned {
            pid,
            reaped: false,
            _child: None,
        }
    }

    /// The process's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Waits (up to `timeout`) for the process to exit and reaps it; `None` if it still runs
    /// (or is not a child of ours).
    pub fn wait(&mut self, timeout: Duration) -> Option<Exit> {
        let r = wait_exit_timeout(self.pid, timeout).ok().flatten();
        if r.is_some() {
            self.reaped = true;
        }
        r
    }

    /// Records that the process was reaped elsewhere, so that drop leaves its pid alone.
    pub fn mark_reaped(&mut self) {
        self.reaped = true;
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
            // Waits for that pid only; returns at once (ECHILD) if it is not our child.
            let _ = wait_exit(self.pid);
            self.reaped = true;
        }
    }
}

/// Sends `sig` to `pid`.
///
/// # Panics
/// If the process is gone (or may not be signalled).
pub fn signal(pid: i32, sig: Signal) {
    kill(Pid::from_raw(pid), sig).unwrap_or_else(|e| panic!("{sig:?} to {pid}: {e}"));
}

/// Asks a criu test victim to check its own state (SIGUSR1) and returns the verdict it writes
/// into `file` (`check ok` when all is well), waiting up to 10 s for it.
///
/// # Panics
/// If the victim is gone or writes nothing in time.
pub fn ask_check(pid: i32, file: &Path) -> String {
    signal(pid, Signal::SIGUSR1);
    wait_file(file, Duration::from_secs(10))
}

/// Dumps `v` into `img` (created if needed) with `criu dump -t PID -D IMG -o dump.log -v4
/// EXTRA...`, which kills it; asserts that the dump succeeded (showing `dump.log` if not) and
/// that the victim died of SIGKILL within 5 s, and reaps it, so that its pid is free again.
pub fn dump_and_reap(v: &mut Spawned, img: &Path, extra: &[&str]) {
    std::fs::create_dir_all(img).expect("create the image directory");
    let mut args = vec!["-o", "dump.log", "-v4"];
    args.extend_from_slice(extra);
    assert_ok_log(
        &criu_dump(v.pid(), img, &args),
        "criu dump",
        &img.join("dump.log"),
    );
    assert_eq!(
        wait_exit_timeout(v.pid(), Duration::from_secs(5)),
        Ok(Some(Exit::Signal(libc::SIGKILL))),
        "the dump did not kill the victim"
    );
    v.mark_reaped();
}

/// Restores `img` with `criu restore -D IMG -o restore.log -v4 EXTRA... -d --pidfile
/// restored.pid`; asserts that it succeeded (showing `restore.log` if not) and returns the pid
/// that criu wrote into the pidfile.
pub fn restore_detached(img: &Path, extra: &[&str]) -> i32 {
    let mut args = vec![
        "restore",
        "-D",
        img.to_str().expect("utf-8 image path"),
        "-o",
        "restore.log",
        "-v4",
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-d", "--pidfile", "restored.pid"]);
    assert_ok_log(&criu(&args), "criu restore", &img.join("restore.log"));
    let text = std::fs::read_to_string(img.join("restored.pid")).expect("read the pidfile");
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("pidfile {text:?}: {e}"))
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

/// The byte that `victim-avx` loads into byte `byte` of vector register `reg` (zmm/ymm).
pub fn avx_pattern(reg: usize, byte: usize) -> u8 {
    ((reg as u8).wrapping_mul(37) ^ (byte as u8).wrapping_mul(11) ^ 0x5a).wrapping_add(reg as u8)
}

/// The value that `victim-avx` loads into opmask register `k` (k1..k7; k0 unused).
pub fn avx_kmask(k: usize) -> u16 {
    0x1111u16.wrapping_mul(k as u16) ^ 0x0f0f
}

/// `core::arch::asm!` that loads zmm0..31 from `src` (32 × 64 bytes) and k1..k7 from `kin`
/// (`[u16; 8]`, entry 0 unused), runs the instructions `code` (string literals) with nothing
/// else in between, then stores the same registers into `dst` and `kout`. Every zmm and k
/// register is declared clobbered; `operands` are the asm operands that `code` needs, named
/// ones first, then explicit registers. Shared by the AVX-512 victims (`victim-avx`,
/// `victim-infect-avx`); use it inside an `unsafe` block of a function with
/// `#[target_feature(enable = "avx512f")]`.
#[macro_export]
macro_rules! asm_holding_avx512 {
    (
        src = $src:expr,
        dst = $dst:expr,
        kin = $kin:expr,
        kout = $kout:expr,
        code = [$($code:literal),* $(,)?],
        operands = [$($operands:tt)*] $(,)?
    ) => {
        core::arch::asm!(
            "vmovdqu64 zmm0, [{src} + 0]",
            "vmovdqu64 zmm1, [{src} + 64]",
            "vmovdqu64 zmm2, [{src} + 128]",
            "vmovdqu64 zmm3, [{src} + 192]",
            "vmovdqu64 zmm4, [{src} + 256]",
            "vmovdqu64 zmm5, [{src} + 320]",
            "vmovdqu64 zmm6, [{src} + 384]",
            "vmovdqu64 zmm7, [{src} + 448]",
            "vmovdqu64 zmm8, [{src} + 512]",
            "vmovdqu64 zmm9, [{src} + 576]",
            "vmovdqu64 zmm10, [{src} + 640]",
            "vmovdqu64 zmm11, [{src} + 704]",
            "vmovdqu64 zmm12, [{src} + 768]",
            "vmovdqu64 zmm13, [{src} + 832]",
            "vmovdqu64 zmm14, [{src} + 896]",
            "vmovdqu64 zmm15, [{src} + 960]",
            "vmovdqu64 zmm16, [{src} + 1024]",
            "vmovdqu64 zmm17, [{src} + 1088]",
            "vmovdqu64 zmm18, [{src} + 1152]",
            "vmovdqu64 zmm19, [{src} + 1216]",
            "vmovdqu64 zmm20, [{src} + 1280]",
            "vmovdqu64 zmm21, [{src} + 1344]",
            "vmovdqu64 zmm22, [{src} + 1408]",
            "vmovdqu64 zmm23, [{src} + 1472]",
            "vmovdqu64 zmm24, [{src} + 1536]",
            "vmovdqu64 zmm25, [{src} + 1600]",
            "vmovdqu64 zmm26, [{src} + 1664]",
            "vmovdqu64 zmm27, [{src} + 1728]",
            "vmovdqu64 zmm28, [{src} + 1792]",
            "vmovdqu64 zmm29, [{src} + 1856]",
            "vmovdqu64 zmm30, [{src} + 1920]",
            "vmovdqu64 zmm31, [{src} + 1984]",
            "kmovw k1, [{kin} + 2]",
            "kmovw k2, [{kin} + 4]",
            "kmovw k3, [{kin} + 6]",
            "kmovw k4, [{kin} + 8]",
            "kmovw k5, [{kin} + 10]",
            "kmovw k6, [{kin} + 12]",
            "kmovw k7, [{kin} + 14]",
            $($code,)*
            "vmovdqu64 [{dst} + 0], zmm0",
            "vmovdqu64 [{dst} + 64], zmm1",
            "vmovdqu64 [{dst} + 128], zmm2",
            "vmovdqu64 [{dst} + 192], zmm3",
            "vmovdqu64 [{dst} + 256], zmm4",
            "vmovdqu64 [{dst} + 320], zmm5",
            "vmovdqu64 [{dst} + 384], zmm6",
            "vmovdqu64 [{dst} + 448], zmm7",
            "vmovdqu64 [{dst} + 512], zmm8",
            "vmovdqu64 [{dst} + 576], zmm9",
            "vmovdqu64 [{dst} + 640], zmm10",
            "vmovdqu64 [{dst} + 704], zmm11",
            "vmovdqu64 [{dst} + 768], zmm12",
            "vmovdqu64 [{dst} + 832], zmm13",
            "vmovdqu64 [{dst} + 896], zmm14",
            "vmovdqu64 [{dst} + 960], zmm15",
            "vmovdqu64 [{dst} + 1024], zmm16",
            "vmovdqu64 [{dst} + 1088], zmm17",
            "vmovdqu64 [{dst} + 1152], zmm18",
            "vmovdqu64 [{dst} + 1216], zmm19",
            "vmovdqu64 [{dst} + 1280], zmm20",
            "vmovdqu64 [{dst} + 1344], zmm21",
            "vmovdqu64 [{dst} + 1408], zmm22",
            "vmovdqu64 [{dst} + 1472], zmm23",
            "vmovdqu64 [{dst} + 1536], zmm24",
            "vmovdqu64 [{dst} + 1600], zmm25",
            "vmovdqu64 [{dst} + 1664], zmm26",
            "vmovdqu64 [{dst} + 1728], zmm27",
            "vmovdqu64 [{dst} + 1792], zmm28",
            "vmovdqu64 [{dst} + 1856], zmm29",
            "vmovdqu64 [{dst} + 1920], zmm30",
            "vmovdqu64 [{dst} + 1984], zmm31",
            "kmovw [{kout} + 2], k1",
            "kmovw [{kout} + 4], k2",
            "kmovw [{kout} + 6], k3",
            "kmovw [{kout} + 8], k4",
            "kmovw [{kout} + 10], k5",
            "kmovw [{kout} + 12], k6",
            "kmovw [{kout} + 14], k7",
            src = in(reg) $src,
            dst = in(reg) $dst,
            kin = in(reg) $kin,
            kout = in(reg) $kout,
            $($operands)*
            out("zmm0") _,
            out("zmm1") _,
            out("zmm2") _,
            out("zmm3") _,
            out("zmm4") _,
            out("zmm5") _,
            out("zmm6") _,
            out("zmm7") _,
            out("zmm8") _,
            out("zmm9") _,
            out("zmm10") _,
            out("zmm11") _,
            out("zmm12") _,
            out("zmm13") _,
            out("zmm14") _,
            out("zmm15") _,
            out("zmm16") _,
            out("zmm17") _,
            out("zmm18") _,
            out("zmm19") _,
            out("zmm20") _,
            out("zmm21") _,
            out("zmm22") _,
            out("zmm23") _,
            out("zmm24") _,
            out("zmm25") _,
            out("zmm26") _,
            out("zmm27") _,
            out("zmm28") _,
            out("zmm29") _,
            out("zmm30") _,
            out("zmm31") _,
            out("k1") _,
            out("k2") _,
            out("k3") _,
            out("k4") _,
            out("k5") _,
            out("k6") _,
            out("k7") _,
            options(nostack),
        )
    };
}

/// The bytes `victim-avx`-style victims load into `nregs` vector registers of `width` bytes
/// ([`avx_pattern`]), register after register, in a buffer sized for 32 zmm registers.
pub fn avx_source(nregs: usize, width: usize) -> [u8; 32 * 64] {
    let mut src = [0u8; 32 * 64];
    for r in 0..nregs {
        for b in 0..width {
            src[r * width + b] = avx_pattern(r, b);
        }
    }
    src
}

/// The opmask values they load ([`avx_kmask`]; entry 0 stands for k0 and is not loaded).
pub fn avx_kmasks() -> [u16; 8] {
    std::array::from_fn(avx_kmask)
}

/// The first vector or opmask register whose stored value differs from what was loaded, named
/// as the victims print it (`zmm7`, `ymm3`, `k2`): `nregs` registers of `width` bytes in
/// `src`/`dst` named `prefix`N, then k1..k7 if `masks` holds the loaded and stored opmasks.
pub fn avx_mismatch(
    prefix: &str,
    nregs: usize,
    width: usize,
    src: &[u8],
    dst: &[u8],
    masks: Option<(&[u16; 8], &[u16; 8])>,
) -> Option<String> {
    if let Some(r) =
        (0..nregs).find(|&r| src[r * width..(r + 1) * width] != dst[r * width..(r + 1) * width])
    {
        return Some(format!("{prefix}{r}"));
    }
    let (kin, kout) = masks?;
    (1..8).find(|&k| kin[k] != kout[k]).map(|k| format!("k{k}"))
}

/// A tmpfs mounted with `opts` on a directory in a new mount namespace of the calling thread:
/// only this thread and what it starts from then on (victims, criu) see it. Dropping it
/// unmounts it and removes the directory.
pub struct OwnTmpfs {
    at: PathBuf,
}

impl OwnTmpfs {
    /// Creates `at` and mounts the tmpfs there (after moving this thread to a mount namespace
    /// of its own, whose mounts do not propagate back).
    ///
    /// # Errors
    /// A description of the step that failed (the directory is removed again).
    pub fn mount(at: &Path, opts: &str) -> Result<OwnTmpfs, String> {
        use nix::mount::{MsFlags, mount};
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
            .map_err(|e| format!("unshare(CLONE_NEWNS): {e}"))?;
        let none = None::<&str>;
        mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
            .map_err(|e| format!("make / private: {e}"))?;
        std::fs::create_dir_all(at).map_err(|e| format!("mkdir {}: {e}", at.display()))?;
        let tmpfs = Some("tmpfs");
        if let Err(e) = mount(tmpfs, at, tmpfs, MsFlags::empty(), Some(opts)) {
            let _ = std::fs::remove_dir(at);
            return Err(format!("mount tmpfs ({opts}) on {}: {e}", at.display()));
        }
        Ok(OwnTmpfs {
            at: at.to_path_buf(),
        })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.at
    }
}

impl Drop for OwnTmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.at, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&self.at);
    }
}

/// The CRIU 4.2 fixture directory (`criu-4.2`): `CRIU_FIXTURES` if set, else `shared/` beside
/// this checkout, else `/work/shared` (where a clone made elsewhere still finds it).
///
/// # Panics
/// Naming every place looked at, if none exists.
pub fn fixtures_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("CRIU_FIXTURES") {
        return p.into();
    }
    let tried = [
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/criu-4.2"),
        PathBuf::from("/work/shared/fixtures/criu-4.2"),
    ];
    match tried.iter().find(|p| p.is_dir()) {
        Some(p) => p.clone(),
        None => panic!("fixtures not found at {tried:?} (set CRIU_FIXTURES)"),
    }
}
