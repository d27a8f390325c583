//! Running `criu`: the binary, its dump and restore commands with their logs, criu with its
//! stderr on a terminal, [`Spawned`] (a victim for criu: output to a log file, killed and
//! reaped on drop), and asking a criu victim to check itself.
// Unsafe code: the victim's pre-exec step (closing inherited descriptors, the parent-death
// signal) runs between fork and exec; openpty for criu's terminal.
#![allow(unsafe_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::process::pid_exists;
use crate::process::{
    Exit, make_world_executable, wait_exit, wait_exit_timeout, wait_file, workspace_bin,
};
use std::fs;

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

/// [`criu()`] with extra environment variables.
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

/// Runs `criu dump -t PID -D IMG EXTRA...` (see [`criu()`]).
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

/// Runs `criu ARGS -D DIR -o NAME.log -v4` (DIR made first) and asserts it succeeded,
/// showing the log if not.
pub fn criu_in(dir: &Path, name: &str, args: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    let log = format!("{name}.log");
    let mut a: Vec<&str> = args.to_vec();
    a.extend_from_slice(&["-D", dir.to_str().unwrap(), "-o", &log, "-v4"]);
    assert_ok_log(&criu(&a), name, &dir.join(&log));
}

/// Asks a dirtying victim (`criu-victim-dirtier`, SIGUSR2) for round `k` of writes and waits
/// for it to say `round K` in READY.rK.
pub fn dirty_round(pid: i32, ready: &Path, k: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGUSR2,
    )
    .unwrap();
    let said = crate::wait_file(
        &ready.with_extension(format!("r{k}")),
        std::time::Duration::from_secs(10),
    );
    assert_eq!(said.trim(), format!("round {k}"));
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

/// Runs `criu ARGS` with stderr on a fresh pseudo-terminal and returns its exit status and
/// what it drew on the terminal (stdin and stdout are `/dev/null`).
///
/// # Panics
/// If no terminal can be made or criu cannot be started.
pub fn criu_on_terminal(args: &[&str]) -> (std::process::ExitStatus, String) {
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd};
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two descriptors into live locals; name, termios, winsize are null.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0);
    // SAFETY: openpty just returned both descriptors; each is owned once from here.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut child = std::process::Command::new(criu_bin())
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(slave))
        .spawn()
        .unwrap();
    // The reader ends with EIO once the child, the slave's last holder, has exited.
    let reader = std::thread::spawn(move || {
        let mut f = std::fs::File::from(master);
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = f.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&out).into_owned()
    });
    let status = child.wait().unwrap();
    (status, reader.join().unwrap())
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

/// The numbers of a victim's ready line after its first `skip` words (`ready PID A B ...`).
pub fn ready_numbers(said: &str, skip: usize) -> Vec<i32> {
    said.split_whitespace()
        .skip(skip)
        .map(|w| w.parse().unwrap_or_else(|_| panic!("ready line {said}")))
        .collect()
}

/// A test's scratch directory: `img/` for the images, `ready` for the victim's ready file, and
/// `victim.log` for its output (where [`restore_and_check`] looks for it).
pub struct Scratch {
    tmp: tempfile::TempDir,
    /// The image directory (`img/`, created empty).
    pub img: PathBuf,
    /// The victim's ready file (`ready`; its check verdict goes to `ready.2`).
    pub ready: PathBuf,
}

impl Scratch {
    /// Creates the scratch directory and its `img/`.
    ///
    /// # Panics
    /// If the temporary directory cannot be created.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Scratch {
        let tmp = tempfile::tempdir().unwrap();
        let img = tmp.path().join("img");
        fs::create_dir(&img).unwrap();
        let ready = tmp.path().join("ready");
        Scratch { tmp, img, ready }
    }

    /// The scratch directory itself.
    pub fn root(&self) -> &Path {
        self.tmp.path()
    }

    /// `name` in the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Starts `bin ARGS` (as user and group `uid` if given) with its output into `victim.log`,
    /// waits up to `timeout` for the ready file and returns the victim and what the file says.
    pub fn spawn_victim(
        &self,
        bin: &str,
        args: &[&str],
        uid: Option<u32>,
        timeout: Duration,
    ) -> (Spawned, String) {
        let v = Spawned::spawn(bin, args, &self.path("victim.log"), uid);
        let said = wait_file(&self.ready, timeout);
        (v, said)
    }

    /// The pids a victim wrote next to its ready file (`ready.pids`, whitespace-separated).
    ///
    /// # Panics
    /// If the file is missing or holds something else than pids.
    pub fn pids(&self) -> Vec<i32> {
        fs::read_to_string(self.ready.with_extension("pids"))
            .expect("read the victim's pids file")
            .split_whitespace()
            .map(|w| w.parse().expect("a pid"))
            .collect()
    }

    /// Starts `bin ARGS`, lets it run `settle` once it is ready, dumps it (which kills it),
    /// restores it and has it check itself ([`restore_and_check`]).
    pub fn round_trip(&self, bin: &str, args: &[&str], timeout: Duration, settle: Duration) {
        let (mut v, _) = self.spawn_victim(bin, args, None, timeout);
        std::thread::sleep(settle);
        dump_and_reap(&mut v, &self.img, &[]);
        restore_and_check(v.pid(), &self.img, &self.ready);
    }
}

/// `criu restore -d -D IMG`, asserted to succeed; returns a guard for the restored task `pid`.
pub fn restore_d(img: &Path, pid: i32) -> Spawned {
    let o = criu(&["restore", "-d", "-D", img.to_str().unwrap()]);
    assert_ok(&o, "criu restore -d");
    Spawned::guard(pid)
}

/// `criu restore` without `-d`, in the background: it stays the task's parent.
pub fn restore_in_background(img: &Path) -> std::process::Child {
    std::process::Command::new(criu_bin())
        .args([
            "restore",
            "-D",
            img.to_str().unwrap(),
            "-o",
            "restore.log",
            "-v4",
        ])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until `pid` runs as itself, untraced (the restore is over), or panics with criu's log.
pub fn wait_resumed(pid: i32, img: &Path, criu: &mut std::process::Child) {
    let end = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let st = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let traced = st
            .lines()
            .find_map(|l| l.strip_prefix("TracerPid:"))
            .map(|v| v.trim() != "0")
            .unwrap_or(true);
        // Before the restorer renames it, the new task is a copy of criu (and untraced for a
        // moment right after the clone): wait for its own name and no tracer.
        let own_name = !st.is_empty() && !st.starts_with("Name:\tcriu\n");
        if own_name && !traced && !st.contains("State:\tZ") {
            return;
        }
        if let Ok(Some(status)) = criu.try_wait() {
            let log = fs::read_to_string(img.join("restore.log")).unwrap_or_default();
            panic!("criu restore ended early ({status:?}):\n{log}");
        }
        assert!(
            std::time::Instant::now() < end,
            "pid {pid} did not resume:\n{}",
            fs::read_to_string(img.join("restore.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Restores `img` with criu staying the parent, asks the victim (pid `pid`) to check itself
/// with SIGUSR1, expects `check ok` in `ready.2`, then kills it and checks criu's exit code.
pub fn restore_and_check(pid: i32, img: &Path, ready: &Path) {
    let mut criu = restore_in_background(img);
    wait_resumed(pid, img, &mut criu);
    let check = ready.with_extension("2");
    let _ = fs::remove_file(&check);
    kill(Pid::from_raw(pid), Signal::SIGUSR1).unwrap();
    // Generous: a debug-built victim checking megabytes byte by byte on a loaded machine.
    let end = std::time::Instant::now() + Duration::from_secs(30);
    let verdict = loop {
        if let Ok(s) = fs::read_to_string(&check)
            && !s.is_empty()
        {
            break s;
        }
        if std::time::Instant::now() > end {
            let st = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let status = criu.wait();
            panic!(
                "no verdict from pid {pid}; criu {status:?}\nstatus:\n{st}\nvictim log:\n{}\nrestore log:\n{}",
                fs::read_to_string(img.parent().unwrap().join("victim.log")).unwrap_or_default(),
                fs::read_to_string(img.join("restore.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let status = criu.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(128 + libc::SIGKILL),
        "criu restore's exit status"
    );
    assert!(!pid_exists(pid));
    assert_eq!(
        verdict.trim(),
        "check ok",
        "the restored victim's own check"
    );
}

/// The path of this package's criu victim `criu-victim-KIND` (built with the tests; see
/// [`bin_path`](crate::bin_path)), as a string to pass as a program or compare with an image.
pub fn criu_victim(kind: &str) -> String {
    crate::bin_path(&format!("criu-victim-{kind}"))
        .to_str()
        .expect("utf-8 target dir")
        .to_string()
}

/// Starts victim `bin` as `bin DIR/out DIR/ready ARGS...` (the shape of the file-kind victims:
/// they answer checks in `out` and create `ready` once set up), its output in `DIR/victim.log`,
/// and waits for `ready`.
///
/// # Panics
/// If the victim cannot be started or does not get ready within 10 s.
pub fn spawn_ready(bin: &str, d: &Path, args: &[&str]) -> Spawned {
    spawn_ready_with(bin, d, &[], args)
}

/// Starts victim `bin` as `bin BEFORE... DIR/out DIR/ready AFTER...` (victims that take a mode
/// or a directory first), its output in `DIR/victim.log`, and waits for `ready`.
///
/// # Panics
/// If the victim cannot be started or does not get ready within 10 s.
pub fn spawn_ready_with(bin: &str, d: &Path, before: &[&str], after: &[&str]) -> Spawned {
    let (out, ready) = (d.join("out"), d.join("ready"));
    let mut all = before.to_vec();
    all.push(out.to_str().expect("utf-8 path"));
    all.push(ready.to_str().expect("utf-8 path"));
    all.extend_from_slice(after);
    let v = crate::Spawned::spawn(bin, &all, &d.join("victim.log"), None);
    crate::wait_file(&ready, std::time::Duration::from_secs(10));
    v
}

/// Starts victim `bin` in mode `mode` as [`spawn_ready_with`] does, and reads the pids of the
/// processes it made from `DIR/out.pids` (whitespace-separated, written before `ready`).
///
/// # Panics
/// If the victim does not get ready in time or `out.pids` is missing or malformed.
pub fn spawn_mode_with_pids(bin: &str, d: &Path, mode: &str) -> (Spawned, Vec<i32>) {
    let v = spawn_ready_with(bin, d, &[mode], &[]);
    let pids = fs::read_to_string(d.join("out.pids"))
        .expect("the victim's out.pids")
        .split_whitespace()
        .map(|w| w.parse().expect("a pid in out.pids"))
        .collect();
    (v, pids)
}

/// Guards (kill and reap on drop) for those of `pids` that exist now.
pub fn guards(pids: &[i32]) -> Vec<Spawned> {
    pids.iter()
        .filter(|p| Path::new(&format!("/proc/{p}")).exists())
        .map(|&p| Spawned::guard(p))
        .collect()
}

/// The inode of `pid`'s uts namespace.
///
/// # Panics
/// If the process is gone (so that comparing namespaces of a dead process cannot pass).
pub fn uts_ns(pid: i32) -> u64 {
    ns_ino(pid, "uts")
}

/// The inode of namespace `kind` (`uts`, `net`, `cgroup`, ...) of process `pid`.
///
/// # Panics
/// If the namespace cannot be read.
pub fn ns_ino(pid: i32, kind: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(format!("/proc/{pid}/ns/{kind}"))
        .unwrap_or_else(|e| panic!("{kind} namespace of pid {pid}: {e}"))
        .ino()
}

/// A process holding a uts namespace of its own (`unshare --uts sleep 600`), once it is in it;
/// killed and reaped on drop.
///
/// # Panics
/// If `unshare` cannot be started or has not entered its namespace within 10 s.
pub fn spawn_uts_holder() -> Spawned {
    spawn_ns_holder(&["--uts"])
}

/// A process holding namespaces of its own (`unshare FLAGS sleep 600`, e.g. `--net`,
/// `--cgroup`), once it is in the first one; killed and reaped on drop.
///
/// # Panics
/// If `unshare` cannot be started or has not entered its namespace within 10 s.
pub fn spawn_ns_holder(flags: &[&str]) -> Spawned {
    let kind = match flags.first().copied().unwrap_or("--uts") {
        "--mount" => "mnt",
        f => f.trim_start_matches("--"),
    };
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(flags)
        .args(["sleep", "600"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let holder = Spawned::from_child(cmd.spawn().expect("start unshare"));
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while ns_ino(holder.pid(), kind) == ns_ino(std::process::id() as i32, kind) {
        assert!(
            std::time::Instant::now() < end,
            "unshare {flags:?} did not get going"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    holder
}

/// Starts the counting victim `bin` (`criu-victim-counter`) as `bin DIR/count DIR/ready`, as
/// user and group `uid` if given (its log `DIR/victim.log` is theirs then), and waits up to
/// 10 s for `ready`. It appends the next number to `DIR/count` every few milliseconds.
///
/// # Panics
/// If the victim cannot be started or does not get ready in time.
/// Lines the counter victim in `d` (see [`spawn_counter`]) has written so far.
pub fn counted(d: &Path) -> usize {
    fs::read_to_string(d.join("count"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// Whether the counter victim in `d` writes more lines within 200 ms.
pub fn counts_on(d: &Path) -> bool {
    let before = counted(d);
    std::thread::sleep(Duration::from_millis(200));
    counted(d) > before
}

pub fn spawn_counter(bin: &str, d: &Path, uid: Option<u32>) -> Spawned {
    let (out, ready, log) = (d.join("count"), d.join("ready"), d.join("victim.log"));
    fs::File::create(&log).expect("create the victim's log");
    if let Some(u) = uid {
        std::os::unix::fs::chown(&log, Some(u), Some(u)).expect("hand the log to the user");
    }
    let v = Spawned::spawn(
        bin,
        &[
            out.to_str().expect("utf-8 path"),
            ready.to_str().expect("utf-8 path"),
        ],
        &log,
        uid,
    );
    wait_file(&ready, Duration::from_secs(10));
    v
}

/// Creates the directory `DIR/sub` and starts victim `bin` as `bin DIR/out DIR/ready DIR/sub
/// EXTRA...` (the victims that set up files of their kind in a directory of their own), as
/// [`spawn_ready`].
///
/// # Panics
/// If the directory cannot be made, or as [`spawn_ready`].
pub fn spawn_ready_in(bin: &str, d: &Path, sub: &str, extra: &[&str]) -> Spawned {
    let dir = d.join(sub);
    fs::create_dir_all(&dir).expect("create the victim's directory");
    let mut args = vec![dir.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    spawn_ready(bin, d, &args)
}

/// A fresh temporary directory every user may write (victims may run as `nobody`).
///
/// # Panics
/// If it cannot be created.
pub fn open_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().expect("create a temporary directory");
    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o777))
        .expect("make the temporary directory world-writable");
    d
}

/// What a command wrote to stdout, as text.
pub fn stdout_text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// What a command wrote to stderr, as text.
pub fn stderr_text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
