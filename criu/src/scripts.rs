//! Action scripts (`--action-script FILE`): programs criu runs at each stage of a dump or
//! restore, the way CRIU runs them.
//!
//! Each script is executed directly (not through a shell) with itself as `argv[0]`, stdin
//! closed (or, at `orphan-pts-master`, the new pty master), stdout and stderr going into
//! criu's log, and no other descriptor: every descriptor above 2 criu holds (the images
//! directory, the log, an RPC socket, the restore's helpers) is closed when the script is
//! executed. In its environment:
//!
//! - `CRTOOLS_SCRIPT_ACTION`: the stage ([`ScriptAction::name`]: `pre-dump`, `post-dump`,
//!   `pre-restore`, `post-restore`, `pre-resume`, `post-resume`, `network-lock`, ...);
//! - `CRTOOLS_IMAGE_DIR`: the images directory, as `/proc/<criu pid>/fd/<N>` (a descriptor criu
//!   holds open for the whole run, as CRIU does);
//! - `CRTOOLS_INIT_PID`: the pid of the tree's root, once criu knows it.
//!
//! Like CRIU, every script runs for every stage (a script ignores stages it has no business
//! with), scripts run in the reverse order of their `--action-script` options (CRIU keeps them on
//! a list it pushes to the front of), and a stage fails if any script exits non-zero or cannot
//! be run; the other scripts of that stage still run. What a failure means is the caller's
//! business: a failing `pre-dump`, `pre-restore` or `post-restore` aborts, a failing `post-dump`
//! resumes the task and fails the dump.
//!
//! ```no_run
//! use criu::{ActionScripts, ScriptAction};
//! let log = criu::LogSink::open(None).unwrap();
//! let scripts = ActionScripts::new(vec!["/usr/local/bin/hook".into()],
//!                                  std::path::Path::new("/tmp/img"), &log).unwrap();
//! scripts.run(ScriptAction::PreDump, Some(1234)).unwrap();
//! ```
// Unsafe code: closes stdin and marks every other descriptor close-on-exec in the forked child
// before exec (pre_exec).
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::log::LogSink;

/// The stages at which scripts run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScriptAction {
    /// Before a stream dump.
    PreStream,
    /// Before the tree is frozen for a dump.
    PreDump,
    /// After the images are written, before the tree is killed or resumed.
    PostDump,
    /// Before a restore starts.
    PreRestore,
    /// After the tree is restored, before it resumes.
    PostRestore,
    /// Network lock.
    NetworkLock,
    /// Network unlock.
    NetworkUnlock,
    /// Namespaces set up.
    SetupNamespaces,
    /// After namespaces are set up.
    PostSetupNamespaces,
    /// Right before the restored tree resumes.
    PreResume,
    /// After the restored tree resumed.
    PostResume,
    /// An orphan pty master.
    OrphanPtsMaster,
    /// Status ready (service mode).
    StatusReady,
    /// Query external files (RPC).
    QueryExtFiles,
}

impl ScriptAction {
    /// The stage's name as `CRTOOLS_SCRIPT_ACTION` spells it.
    pub fn name(self) -> &'static str {
        match self {
            ScriptAction::PreStream => "pre-stream",
            ScriptAction::PreDump => "pre-dump",
            ScriptAction::PostDump => "post-dump",
            ScriptAction::PreRestore => "pre-restore",
            ScriptAction::PostRestore => "post-restore",
            ScriptAction::NetworkLock => "network-lock",
            ScriptAction::NetworkUnlock => "network-unlock",
            ScriptAction::SetupNamespaces => "setup-namespaces",
            ScriptAction::PostSetupNamespaces => "post-setup-namespaces",
            ScriptAction::PreResume => "pre-resume",
            ScriptAction::PostResume => "post-resume",
            ScriptAction::OrphanPtsMaster => "orphan-pts-master",
            ScriptAction::StatusReady => "status-ready",
            ScriptAction::QueryExtFiles => "query-ext-files",
        }
    }
}

/// Errors from action scripts.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// The images directory cannot be opened for `CRTOOLS_IMAGE_DIR`.
    #[error("cannot open images directory {path}")]
    ImageDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The log descriptor cannot be duplicated for a script.
    #[error("cannot duplicate the log descriptor for action scripts")]
    LogFd(#[source] std::io::Error),
    /// One or more scripts of a stage failed; the first failure is named.
    #[error("action script {script} failed at {action}: {status}")]
    Failed {
        /// The stage.
        action: &'static str,
        /// The first script that failed.
        script: PathBuf,
        /// How it failed.
        status: ScriptStatus,
        /// How many scripts failed at this stage.
        failed: usize,
    },
    /// A notification receiver (an RPC client, a library callback) said no.
    #[error("notification {action} refused")]
    Refused {
        /// The stage.
        action: &'static str,
    },
    /// The answer to `query-ext-files` named an external resource that does not parse.
    #[error("query-ext-files: invalid external {0:?}")]
    BadExternal(String),
}

/// How one action script failed.
#[derive(Debug, thiserror::Error)]
pub enum ScriptStatus {
    /// It exited with a non-zero code.
    #[error("exited with {0}")]
    Exited(i32),
    /// A signal killed it.
    #[error("killed by signal {0}")]
    Killed(i32),
    /// It could not be started.
    #[error("cannot run: {0}")]
    CannotRun(#[source] std::io::Error),
}

impl ScriptError {
    /// The errno an RPC reply carries: the OS error where there is one, `ECANCELED` for a
    /// script or receiver that said no.
    pub fn errno(&self) -> i32 {
        match self {
            ScriptError::ImageDir { source, .. } | ScriptError::LogFd(source) => {
                source.raw_os_error().unwrap_or(libc::EIO)
            }
            ScriptError::Failed {
                status: ScriptStatus::CannotRun(e),
                ..
            } => e.raw_os_error().unwrap_or(libc::EIO),
            ScriptError::Failed { .. } | ScriptError::Refused { .. } => libc::ECANCELED,
            ScriptError::BadExternal(_) => libc::EINVAL,
        }
    }
}

/// The one notification callback dump and restore call at each stage (`action`, with the
/// tree's root pid once known). An error aborts the dump or restore the way a failing action
/// script does. [`ActionScripts`] is one; an RPC session (a `NOTIFY` round trip), libcriu's
/// callback or any closure `Fn(ScriptAction, Option<i32>) -> Result<(), ScriptError>` is
/// another.
///
/// ```
/// use criu::{Notify, ScriptAction, ScriptError};
/// let refuse_restore = |a: ScriptAction, _pid: Option<i32>| match a {
///     ScriptAction::PreRestore => Err(ScriptError::Refused { action: a.name() }),
///     _ => Ok(()),
/// };
/// assert!(refuse_restore.notify(ScriptAction::PreDump, Some(1)).is_ok());
/// assert!(refuse_restore.notify(ScriptAction::PreRestore, None).is_err());
/// ```
pub trait Notify {
    /// Tells the stage `action`; an error stops the run.
    ///
    /// # Errors
    /// Whatever the receiver says: [`ScriptError::Failed`] for scripts,
    /// [`ScriptError::Refused`] for a callback that says no.
    fn notify(&self, action: ScriptAction, pid: Option<i32>) -> Result<(), ScriptError>;

    /// Tells the stage `action` handing over descriptor `fd` (`orphan-pts-master`: the new
    /// master of a pty whose master was outside the tree). By default as
    /// [`Notify::notify`], without the descriptor.
    ///
    /// # Errors
    /// As [`Notify::notify`].
    fn notify_fd(
        &self,
        action: ScriptAction,
        pid: Option<i32>,
        fd: std::os::fd::BorrowedFd<'_>,
    ) -> Result<(), ScriptError> {
        let _ = fd;
        self.notify(action, pid)
    }

    /// `query-ext-files`: asks for more external resources (`--external` entries) once the
    /// tree is frozen, before its files are collected. Only an RPC client answers (with the
    /// `external` of the `opts` in its acknowledgement, as CRIU's clients do); by default none.
    ///
    /// # Errors
    /// As [`Notify::notify`]; [`ScriptError::BadExternal`] for an entry that does not parse.
    fn query_external(&self) -> Result<Vec<crate::options::External>, ScriptError> {
        Ok(Vec::new())
    }
}

impl<F: Fn(ScriptAction, Option<i32>) -> Result<(), ScriptError>> Notify for F {
    fn notify(&self, action: ScriptAction, pid: Option<i32>) -> Result<(), ScriptError> {
        self(action, pid)
    }
}

impl Notify for ActionScripts {
    fn notify(&self, action: ScriptAction, pid: Option<i32>) -> Result<(), ScriptError> {
        self.run(action, pid)
    }

    /// The scripts get `fd` as their standard input.
    fn notify_fd(
        &self,
        action: ScriptAction,
        pid: Option<i32>,
        fd: std::os::fd::BorrowedFd<'_>,
    ) -> Result<(), ScriptError> {
        self.run_with(action, pid, Some(fd))
    }
}

/// The scripts of one criu run.
#[derive(Debug)]
pub struct ActionScripts {
    scripts: Vec<PathBuf>,
    image_dir: Option<File>,
    image_dir_path: PathBuf,
    log: Option<OwnedFd>,
}

impl ActionScripts {
    /// Prepares `scripts` (in command-line order) for a run on `image_dir`, with their output
    /// going to `log`. With no scripts this opens nothing and every stage succeeds at once.
    ///
    /// # Errors
    /// [`ScriptError::ImageDir`], [`ScriptError::LogFd`].
    pub fn new(
        scripts: Vec<PathBuf>,
        image_dir: &Path,
        log: &LogSink,
    ) -> Result<ActionScripts, ScriptError> {
        if scripts.is_empty() {
            return Ok(ActionScripts {
                scripts,
                image_dir: None,
                image_dir_path: image_dir.to_path_buf(),
                log: None,
            });
        }
        let dir = File::open(image_dir).map_err(|source| ScriptError::ImageDir {
            path: image_dir.to_path_buf(),
            source,
        })?;
        let log = log.fd().try_clone_to_owned().map_err(ScriptError::LogFd)?;
        Ok(ActionScripts {
            scripts,
            image_dir: Some(dir),
            image_dir_path: image_dir.to_path_buf(),
            log: Some(log),
        })
    }

    /// Whether any script is configured.
    pub fn is_empty(&self) -> bool {
        self.scripts.is_empty()
    }

    /// The value scripts get as `CRTOOLS_IMAGE_DIR`.
    pub fn image_dir_env(&self) -> String {
        match &self.image_dir {
            Some(f) => format!("/proc/{}/fd/{}", std::process::id(), f.as_raw_fd()),
            None => self.image_dir_path.display().to_string(),
        }
    }

    /// Runs every script for `action`, waiting for each; `init_pid` becomes `CRTOOLS_INIT_PID`.
    ///
    /// # Errors
    /// [`ScriptError::Failed`] if any script exits non-zero, is killed, or cannot be run (all
    /// scripts still run).
    pub fn run(&self, action: ScriptAction, init_pid: Option<i32>) -> Result<(), ScriptError> {
        self.run_with(action, init_pid, None)
    }

    /// [`ActionScripts::run`], each script with `stdin` as its standard input (else closed).
    ///
    /// # Errors
    /// As [`ActionScripts::run`].
    pub fn run_with(
        &self,
        action: ScriptAction,
        init_pid: Option<i32>,
        stdin: Option<std::os::fd::BorrowedFd<'_>>,
    ) -> Result<(), ScriptError> {
        if self.scripts.is_empty() {
            return Ok(());
        }
        tracing::debug!("running {} scripts", action.name());
        let image_dir = self.image_dir_env();
        let mut first: Option<(PathBuf, ScriptStatus)> = None;
        let mut failed = 0;
        for script in self.scripts.iter().rev() {
            tracing::debug!("\t[{}]", script.display());
            let outcome = self.run_one(script, action, &image_dir, init_pid, stdin);
            if let Err(status) = outcome {
                tracing::error!("script {} exited with {status}", script.display());
                failed += 1;
                if first.is_none() {
                    first = Some((script.clone(), status));
                }
            }
        }
        match first {
            None => Ok(()),
            Some((script, status)) => Err(ScriptError::Failed {
                action: action.name(),
                script,
                status,
                failed,
            }),
        }
    }

    fn run_one(
        &self,
        script: &Path,
        action: ScriptAction,
        image_dir: &str,
        init_pid: Option<i32>,
        stdin: Option<std::os::fd::BorrowedFd<'_>>,
    ) -> Result<(), ScriptStatus> {
        let mut cmd = Command::new(script);
        cmd.env("CRTOOLS_SCRIPT_ACTION", action.name())
            .env("CRTOOLS_IMAGE_DIR", image_dir);
        if let Some(pid) = init_pid {
            cmd.env("CRTOOLS_INIT_PID", pid.to_string());
        }
        if let Some(log) = &self.log {
            let out = log.try_clone().map_err(ScriptStatus::CannotRun)?;
            let err = log.try_clone().map_err(ScriptStatus::CannotRun)?;
            cmd.stdout(Stdio::from(out)).stderr(Stdio::from(err));
        }
        let close_stdin = match stdin {
            Some(fd) => {
                let fd = fd.try_clone_to_owned().map_err(ScriptStatus::CannotRun)?;
                cmd.stdin(Stdio::from(fd));
                false
            }
            None => true,
        };
        // SAFETY: the closure runs in the forked child after the standard descriptors are set
        // up and before exec, and only calls close(2), close_range(2) and fcntl(2), which are
        // async-signal-safe and touch no memory of the parent.
        unsafe {
            cmd.pre_exec(move || {
                if close_stdin {
                    libc::close(0);
                }
                only_std_fds_on_exec();
                Ok(())
            });
        }
        let status = cmd.status().map_err(ScriptStatus::CannotRun)?;
        if status.success() {
            Ok(())
        } else if let Some(code) = status.code() {
            Err(ScriptStatus::Exited(code))
        } else {
            Err(ScriptStatus::Killed(status.signal().unwrap_or_default()))
        }
    }
}

/// Marks every descriptor above 2 close-on-exec (the pipe `Command` reports exec errors on
/// already is), so a script inherits only its standard descriptors. Runs between fork and exec:
/// only async-signal-safe calls.
fn only_std_fds_on_exec() {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes descriptor flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_uint,
        )
    };
    if r != 0 {
        // Kernels before 5.11: one fcntl per possible descriptor.
        // SAFETY: getrlimit writes into a live struct; fcntl on any number is harmless.
        unsafe {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
                lim.rlim_cur.min(1 << 20) as i32
            } else {
                1024
            };
            for fd in 3..max {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsFd, FromRawFd};
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn env_order_stdin_and_failure() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let out = d.join("out");
        let logp = d.join("log");
        let log = LogSink::open(Some(&logp)).unwrap();
        let a = script(
            d,
            "a",
            &format!(
                "echo \"a $CRTOOLS_SCRIPT_ACTION $CRTOOLS_INIT_PID $(ls $CRTOOLS_IMAGE_DIR/marker)\" >> {}\n\
                 if read x; then echo stdin-open >> {0}; else echo stdin-closed >> {0}; fi\n\
                 echo to-log",
                out.display()
            ),
        );
        let b = script(
            d,
            "b",
            &format!(
                "echo b >> {}\n[ \"$CRTOOLS_SCRIPT_ACTION\" != post-dump ]",
                out.display()
            ),
        );
        std::fs::write(d.join("marker"), "").unwrap();
        let s = ActionScripts::new(vec![a, b.clone()], d, &log).unwrap();
        s.run(ScriptAction::PreDump, Some(77)).unwrap();
        let got = std::fs::read_to_string(&out).unwrap();
        // b was given last, so it runs first, as in CRIU.
        assert!(got.starts_with("b\na pre-dump 77 "), "{got}");
        assert!(got.contains("stdin-closed"), "{got}");
        assert!(got.contains("/proc/") && got.contains("/marker"), "{got}");
        assert!(std::fs::read_to_string(&logp).unwrap().contains("to-log"));
        match s.run(ScriptAction::PostDump, None) {
            Err(ScriptError::Failed {
                action,
                script,
                failed,
                status,
            }) => {
                assert_eq!((action, script, failed), ("post-dump", b, 1));
                assert!(matches!(status, ScriptStatus::Exited(1)), "{status}");
                assert_eq!(
                    ScriptError::Failed {
                        action,
                        script: PathBuf::new(),
                        status,
                        failed
                    }
                    .errno(),
                    libc::ECANCELED
                );
            }
            other => panic!("{other:?}"),
        }
        // Both still ran at post-dump.
        let got = std::fs::read_to_string(&out).unwrap();
        assert_eq!(got.matches("a post-dump").count(), 1, "{got}");
        let missing = ActionScripts::new(vec![d.join("nope")], d, &log).unwrap();
        assert!(missing.run(ScriptAction::PreRestore, None).is_err());
    }

    /// A descriptor criu holds without close-on-exec (as a leaked or inherited one would be)
    /// does not reach a script, with or without a descriptor for its stdin.
    #[test]
    fn scripts_inherit_only_std_fds() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let out = d.join("out");
        let log = LogSink::open(Some(&d.join("log"))).unwrap();
        // SAFETY: dup of stderr; the result (no close-on-exec) is checked and owned.
        let raw = unsafe { libc::dup(2) };
        assert!(raw > 2);
        // SAFETY: a fresh descriptor nothing else owns.
        let leaky = unsafe { OwnedFd::from_raw_fd(raw) };
        let s = script(
            d,
            "a",
            &format!(
                "if [ -e /proc/$$/fd/{raw} ]; then echo leaked >> {o}; else echo clean >> {o}; fi\n\
                 [ -e /proc/$$/fd/1 ] && echo has-stdout >> {o}",
                o = out.display()
            ),
        );
        let s = ActionScripts::new(vec![s], d, &log).unwrap();
        s.run(ScriptAction::PreDump, None).unwrap();
        let f = File::open(d).unwrap();
        s.notify_fd(ScriptAction::OrphanPtsMaster, None, f.as_fd())
            .unwrap();
        let got = std::fs::read_to_string(&out).unwrap();
        assert_eq!(got, "clean\nhas-stdout\nclean\nhas-stdout\n");
        drop(leaky);
    }
}
