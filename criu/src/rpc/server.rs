//! One client's session: read a request, answer it, and go on while the client asks to keep the
//! connection open (`keep_open`), as CRIU's `swrk` does. Every request gets an answer: what is
//! not built yet is answered with `success = false`, `cr_errno` and `cr_errmsg` naming it.
// Unsafe code: waits for the request's child with waitpid.
#![allow(unsafe_code)]

use std::os::fd::{BorrowedFd, OwnedFd};

use criu_images::pb::{
    CriuDumpResp, CriuFeatures, CriuNotify, CriuOpts, CriuReq, CriuReqType, CriuResp,
    CriuRestoreResp, CriuVersion,
};

use super::opts::{Mode, OptsError, to_options};
use super::peer::{Client, Denied};
use super::wire::{self, Incoming};
use super::{RpcError, version};
use crate::errno::chain;
use crate::log::LogSink;
use crate::options::{Command, DumpOptions, FinalState, Options, RestoreOptions};
use crate::scripts::{ActionScripts, Notify, ScriptAction, ScriptError};

mod live;

/// A failed request: what the client reads in `cr_errno` (when known) and `cr_errmsg`.
struct Failure {
    errno: Option<i32>,
    msg: String,
}

impl Failure {
    fn new(errno: Option<i32>, msg: impl Into<String>) -> Failure {
        Failure {
            errno,
            msg: msg.into(),
        }
    }
}

impl From<Denied> for Failure {
    fn from(d: Denied) -> Failure {
        tracing::warn!("refused: {d}");
        Failure::new(Some(d.errno()), d.to_string())
    }
}

/// The session's client, or why it could not be identified (then dumps and restores are
/// refused).
type Who = Result<Client, String>;

fn who(w: &Who) -> Result<&Client, Failure> {
    w.as_ref()
        .map_err(|why| Failure::new(Some(libc::EPERM), why.clone()))
}

impl From<OptsError> for Failure {
    fn from(e: OptsError) -> Failure {
        Failure::new(Some(e.errno()), chain(&e))
    }
}

fn resp(ty: CriuReqType, success: bool) -> CriuResp {
    CriuResp {
        r#type: ty as i32,
        success,
        ..Default::default()
    }
}

fn fail(ty: CriuReqType, f: Failure) -> CriuResp {
    let mut r = resp(ty, false);
    r.cr_errno = f.errno;
    r.cr_errmsg = Some(f.msg);
    r
}

/// A client's session on `sk`, until it closes the socket or a request without `keep_open`
/// has been answered. `mode` says whether criu is the client's `swrk` child or a service worker.
///
/// # Errors
/// [`RpcError`] when the socket fails; a bad request is answered, not an error here.
pub fn serve(sk: BorrowedFd<'_>, mode: Mode) -> Result<(), RpcError> {
    let peer = wire::peer_pid(sk)?;
    // Identified once, pinned by a pidfd for the whole session.
    let client: Who = Client::of_socket(sk).map_err(|d| d.to_string());
    if let Ok(c) = &client {
        tracing::info!(
            "client pid {} uid {}{}",
            c.pid,
            c.creds.uid[0],
            if c.privileged() { " (privileged)" } else { "" }
        );
    }
    // A service worker (forked for this client) makes files for the client with the client's
    // umask, as a criu the client ran would; swrk inherited it already.
    if let (Mode::Service, Ok(c)) = (mode, &client) {
        super::peer::adopt_umask(c.pid);
    }
    loop {
        let req = match wire::recv_request(sk)? {
            Incoming::Closed => return Ok(()),
            Incoming::Malformed(why) => {
                tracing::warn!("RPC error: {why}");
                let f = Failure::new(Some(libc::EBADMSG), why);
                // Whether the client meant to keep the connection open is unknowable: the
                // session ends after the answer, as after any request without keep_open.
                return wire::send_response(sk, &fail(CriuReqType::Empty, f), None);
            }
            Incoming::Request(r) => *r,
        };
        // A PRE_DUMP session stays open for the next pre-dump or the final dump (CRIU's
        // pre-dump loop).
        let keep_open = req.keep_open == Some(true) || req.r#type == CriuReqType::PreDump as i32;
        let mut exec = None;
        if let Some(r) = handle(sk, &req, mode, peer, &client, &mut exec) {
            wire::send_response(sk, &r, None)?;
        }
        if let Some(e) = exec {
            // The answer is out: criu becomes the command (the socket closes on exec).
            return Err(e.run());
        }
        if !keep_open {
            return Ok(());
        }
    }
}

/// Answers one request; `None` when no answer is due (a client that dumped itself and is gone).
fn handle(
    sk: BorrowedFd<'_>,
    req: &CriuReq,
    mode: Mode,
    peer: i32,
    client: &Who,
    exec: &mut Option<Exec>,
) -> Option<CriuResp> {
    let Ok(ty) = CriuReqType::try_from(req.r#type) else {
        let f = Failure::new(
            Some(libc::EBADRQC),
            format!("invalid request type {}", req.r#type),
        );
        return Some(fail(CriuReqType::Empty, f));
    };
    let no_opts = CriuOpts {
        images_dir_fd: -1,
        ..Default::default()
    };
    let opts = req.opts.as_ref().unwrap_or(&no_opts);
    Some(match ty {
        CriuReqType::Version => {
            let mut r = resp(ty, true);
            r.version = Some(version());
            r
        }
        CriuReqType::FeatureCheck => feature_check(req.features.as_ref()),
        CriuReqType::Check => match check(opts, mode, peer) {
            Ok(()) => resp(ty, true),
            Err(f) => fail(ty, f),
        },
        CriuReqType::Dump => return dump(sk, opts, mode, peer, client),
        CriuReqType::Restore => {
            let (r, e) = restore(sk, opts, mode, peer, client);
            *exec = e;
            r
        }
        CriuReqType::WaitPid => wait_pid(req.pid),
        CriuReqType::Notify => fail(
            ty,
            Failure::new(
                Some(libc::EBADRQC),
                "a NOTIFY request answers a notification; none was sent",
            ),
        ),
        CriuReqType::Empty => fail(
            ty,
            Failure::new(Some(libc::EBADRQC), "invalid request type EMPTY"),
        ),
        CriuReqType::PreDump | CriuReqType::SinglePreDump => {
            live::pre_dump(ty, opts, mode, peer, client)
        }
        CriuReqType::PageServer | CriuReqType::PageServerChld => {
            let notifier = (opts.notify_scripts == Some(true)).then_some(RpcNotify { sk });
            live::page_server(
                ty,
                opts,
                mode,
                peer,
                client,
                notifier.as_ref().map(|n| n as &dyn Notify),
            )
        }
        CriuReqType::CpuinfoDump | CriuReqType::CpuinfoCheck => {
            match cpuinfo(ty, opts, mode, peer, client) {
                Ok(()) => resp(ty, true),
                Err(f) => fail(ty, f),
            }
        }
    })
}

/// The features a client can ask about: memory tracking when the kernel has what pre-dump
/// uses (userfaultfd write-protect tracking), lazy pages when it has a userfaultfd with the
/// events lazy restore needs; the pidfd store is not built.
fn feature_check(asked: Option<&CriuFeatures>) -> CriuResp {
    let asked = asked.cloned().unwrap_or_default();
    let mut r = resp(CriuReqType::FeatureCheck, true);
    r.features = Some(CriuFeatures {
        mem_track: asked.mem_track.map(|_| crate::dump::track::probe().is_ok()),
        lazy_pages: asked
            .lazy_pages
            .map(|_| crate::check::check_feature("uffd-noncoop").is_ok()),
        pidfd_store: asked.pidfd_store.map(|_| false),
    });
    r
}

/// Changes into the run's work directory, opens its log, and runs `f` with the log installed
/// for this request.
fn with_run<T>(
    opts: &mut Options,
    f: impl FnOnce(&Options, &LogSink) -> Result<T, Failure>,
) -> Result<T, Failure> {
    if opts.work_dir.is_none() {
        opts.work_dir = Some(opts.images_dir.clone());
    }
    let work = opts.effective_work_dir();
    std::env::set_current_dir(&work).map_err(|e| {
        Failure::new(
            e.raw_os_error(),
            format!("can't change directory to {}: {e}", work.display()),
        )
    })?;
    let sink = LogSink::open(opts.log_file.as_deref())
        .map_err(|e| Failure::new(Some(e.errno()), chain(&e)))?;
    let sub = crate::log::subscriber(opts.log_level, &sink);
    tracing::subscriber::with_default(sub, || {
        tracing::info!(
            "criu {} {} --rpc (work dir {})",
            env!("CARGO_PKG_VERSION"),
            opts.command.map_or("?", Command::word),
            work.display()
        );
        for (name, _) in &opts.ignored {
            tracing::info!("option {name} accepted, it changes nothing here");
        }
        // The `--unprivileged` rules, as on the command line.
        let r = crate::privilege::apply_privilege(opts)
            .map_err(|e| Failure::new(Some(e.errno()), e.to_string()))
            .and_then(|()| f(opts, &sink));
        if let Err(e) = &r {
            tracing::error!("{}", e.msg);
        }
        r
    })
}

fn check(req: &CriuOpts, mode: Mode, peer: i32) -> Result<(), Failure> {
    let mut opts = to_options(req, Command::Check, mode, peer)?;
    if req.log_file.is_none() {
        // Nothing asks for a log file: CRIU then needs no directory for a check.
        opts.log_file = None;
    }
    with_run(&mut opts, |_, _| {
        crate::check::check_all().map_err(|e| Failure::new(Some(e.errno()), chain(&e)))
    })
}

/// `CPUINFO_DUMP` (this CPU into the images directory's `cpuinfo.img`) and `CPUINFO_CHECK`
/// (that image against this CPU, all checks unless `cpu_cap` names some), as `criu cpuinfo`.
fn cpuinfo(
    ty: CriuReqType,
    req: &CriuOpts,
    mode: Mode,
    peer: i32,
    client: &Who,
) -> Result<(), Failure> {
    let mut opts = to_options(req, Command::CpuInfo, mode, peer)?;
    let c = who(client)?;
    let dumping = ty == CriuReqType::CpuinfoDump;
    if dumping {
        may_use_dirs(c, &opts, libc::W_OK | libc::X_OK, "write images to")?;
    } else {
        may_use_dirs(c, &opts, libc::R_OK | libc::X_OK, "read images from")?;
    }
    with_run(&mut opts, |o, _| {
        let dir = o.images_dir.path();
        let r = if dumping {
            crate::cpuinfo::dump(&dir)
        } else {
            crate::cpuinfo::check(&dir, crate::cpuinfo::check_cap(o.cpu_cap))
        };
        r.map_err(|e| Failure::new(Some(e.errno()), chain(&e)))
    })
}

/// The directories of a request, checked as the client: it must be able to `mode` them itself.
fn may_use_dirs(c: &Client, opts: &Options, mode: i32, what: &'static str) -> Result<(), Failure> {
    c.may_access(&opts.images_dir.path(), mode, what)?;
    if let Some(w) = &opts.work_dir {
        c.may_access(&w.path(), libc::W_OK | libc::X_OK, "write logs to")?;
    }
    Ok(())
}

fn dump(
    sk: BorrowedFd<'_>,
    req: &CriuOpts,
    mode: Mode,
    peer: i32,
    client: &Who,
) -> Option<CriuResp> {
    let notifier = (req.notify_scripts == Some(true)).then_some(RpcNotify { sk });
    let ty = CriuReqType::Dump;
    let mut gone = false;
    let result = to_options(req, Command::Dump, mode, peer)
        .map_err(Failure::from)
        .and_then(|mut opts| {
            let c = who(client)?;
            may_use_dirs(c, &opts, libc::W_OK | libc::X_OK, "write images to")?;
            c.may_dump(opts.tree.unwrap_or(peer))?;
            // A client that dumped itself without leave_running is dead: no answer is due.
            gone = opts.tree == Some(peer) && opts.final_state == FinalState::Dead;
            with_run(&mut opts, |o, sink| {
                let dopts = DumpOptions::from_options(o);
                dopts.validate().map_err(options_failure)?;
                let n = RunNotify::new(notifier, o, &dopts.images_dir, sink)?;
                let r = crate::dump::dump(&dopts, Some(&n))
                    .map_err(|e| Failure::new(Some(e.errno()), chain(&e)))?;
                if o.display_stats {
                    crate::stats::show(&dopts.images_dir, crate::stats::Kind::Dump);
                }
                Ok(r)
            })
        });
    let mut r = match result {
        Ok(_) if gone => return None,
        Ok(_) => resp(ty, true),
        Err(f) => fail(ty, f),
    };
    r.dump = Some(CriuDumpResp {
        restored: Some(false),
    });
    Some(r)
}

/// What a restore asked to become once it has answered (`exec_cmd`): the command, and the
/// log its output goes to.
struct Exec {
    argv: Vec<String>,
    log: OwnedFd,
}

impl Exec {
    /// Replaces this criu by the command, its standard output and error going to the log, as
    /// CRIU does: the restored tree (criu's children) become the command's. Returns only when
    /// the exec fails.
    fn run(self) -> RpcError {
        use std::os::unix::process::CommandExt;
        let Some((prog, args)) = self.argv.split_first() else {
            return RpcError::Io {
                what: "exec_cmd".into(),
                source: std::io::Error::from_raw_os_error(libc::EINVAL),
            };
        };
        tracing::info!("exec {:?}", self.argv);
        let err = match (self.log.try_clone(), self.log.try_clone()) {
            (Ok(out), Ok(err)) => std::process::Command::new(prog)
                .args(args)
                .stdout(out)
                .stderr(err)
                .exec(),
            (Err(e), _) | (_, Err(e)) => e,
        };
        tracing::error!("failed to exec {prog}: {err}");
        RpcError::Io {
            what: format!("exec {prog}"),
            source: err,
        }
    }
}

fn restore(
    sk: BorrowedFd<'_>,
    req: &CriuOpts,
    mode: Mode,
    peer: i32,
    client: &Who,
) -> (CriuResp, Option<Exec>) {
    let notifier = (req.notify_scripts == Some(true)).then_some(RpcNotify { sk });
    let ty = CriuReqType::Restore;
    let result = to_options(req, Command::Restore, mode, peer)
        .map_err(Failure::from)
        .and_then(|mut opts| {
            let c = who(client)?;
            may_use_dirs(c, &opts, libc::R_OK | libc::X_OK, "read images from")?;
            if !c.privileged() && opts.work_dir.is_none() {
                // The log goes to the images directory.
                c.may_access(&opts.images_dir.path(), libc::W_OK, "write logs to")?;
            }
            // Before anything runs: the images ask only for what the client has.
            c.may_restore(&opts.images_dir.path())?;
            with_run(&mut opts, |o, sink| {
                // A restore over RPC always leaves the tree to run on its own.
                let mut ropts = RestoreOptions::from_options(o);
                ropts.detach = true;
                ropts.validate().map_err(options_failure)?;
                // The log the command's output goes to, taken before anything is restored.
                let exec = if o.exec_cmd.is_empty() {
                    None
                } else {
                    let log = sink.fd().try_clone_to_owned().map_err(|e| {
                        Failure::new(e.raw_os_error(), format!("exec_cmd: log descriptor: {e}"))
                    })?;
                    Some(Exec {
                        argv: o.exec_cmd.clone(),
                        log,
                    })
                };
                let n = RunNotify::new(notifier, o, &ropts.images_dir, sink)?;
                let r = crate::restore::restore(&ropts, Some(&n))
                    .map_err(|e| Failure::new(Some(e.errno()), chain(&e)))?;
                if o.display_stats {
                    crate::stats::show(&ropts.images_dir, crate::stats::Kind::Restore);
                }
                Ok((r, exec))
            })
        });
    match result {
        Ok((outcome, exec)) => {
            let pid = match outcome {
                crate::restore::RestoreOutcome::Detached { pid }
                | crate::restore::RestoreOutcome::Exited { pid, .. }
                | crate::restore::RestoreOutcome::Killed { pid, .. } => pid,
            };
            let mut r = resp(ty, true);
            r.restore = Some(CriuRestoreResp { pid });
            (r, exec)
        }
        Err(f) => {
            let mut r = fail(ty, f);
            r.restore = Some(CriuRestoreResp { pid: -1 });
            (r, None)
        }
    }
}

fn wait_pid(pid: Option<u32>) -> CriuResp {
    let ty = CriuReqType::WaitPid;
    let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()).filter(|p| *p > 0) else {
        return fail(
            ty,
            Failure::new(Some(libc::EINVAL), "WAIT_PID needs the pid to wait for"),
        );
    };
    let mut status: libc::c_int = 0;
    let r = loop {
        // SAFETY: waitpid writes the status into a live local; it waits only for `pid`, which
        // must be our child (a page server or a tree restored as criu's child).
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        break r;
    };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        return fail(
            ty,
            Failure::new(e.raw_os_error(), format!("unable to wait {pid}: {e}")),
        );
    }
    let mut r = resp(ty, true);
    r.status = Some(status);
    r
}

fn options_failure(e: crate::options::OptionsError) -> Failure {
    Failure::new(Some(e.errno()), chain(&e))
}

/// The notifications of a dump or restore: the client's (`notify_scripts`) and then the action
/// scripts its options name (a `config_file`'s `action-script`), as CRIU runs both, the client
/// first. Either one saying no stops the run.
struct RunNotify<'a> {
    rpc: Option<RpcNotify<'a>>,
    scripts: ActionScripts,
}

impl<'a> RunNotify<'a> {
    fn new(
        rpc: Option<RpcNotify<'a>>,
        o: &Options,
        images_dir: &std::path::Path,
        sink: &LogSink,
    ) -> Result<RunNotify<'a>, Failure> {
        let scripts = ActionScripts::new(o.action_scripts.clone(), images_dir, sink)
            .map_err(|e| Failure::new(Some(e.errno()), chain(&e)))?;
        Ok(RunNotify { rpc, scripts })
    }
}

impl Notify for RunNotify<'_> {
    fn notify(&self, action: ScriptAction, pid: Option<i32>) -> Result<(), ScriptError> {
        if let Some(r) = &self.rpc {
            r.notify(action, pid)?;
        }
        self.scripts.notify(action, pid)
    }

    fn notify_fd(
        &self,
        action: ScriptAction,
        pid: Option<i32>,
        fd: BorrowedFd<'_>,
    ) -> Result<(), ScriptError> {
        if let Some(r) = &self.rpc {
            r.notify_fd(action, pid, fd)?;
        }
        self.scripts.notify_fd(action, pid, fd)
    }

    fn query_external(&self) -> Result<Vec<crate::options::External>, ScriptError> {
        match &self.rpc {
            Some(r) => r.query_external(),
            None => Ok(Vec::new()),
        }
    }
}

/// Notifications of a dump or restore whose client asked for them (`notify_scripts`): each
/// stage is a `NOTIFY` round trip; a client that says no (or goes away) stops the run the way
/// a failing action script does.
#[derive(Clone, Copy)]
struct RpcNotify<'a> {
    sk: BorrowedFd<'a>,
}

impl Notify for RpcNotify<'_> {
    fn notify(&self, action: ScriptAction, pid: Option<i32>) -> Result<(), ScriptError> {
        notify(self.sk, action.name(), pid, None).map_err(|e| {
            tracing::error!("{e}");
            ScriptError::Refused {
                action: action.name(),
            }
        })
    }

    fn notify_fd(
        &self,
        action: ScriptAction,
        pid: Option<i32>,
        fd: BorrowedFd<'_>,
    ) -> Result<(), ScriptError> {
        notify(self.sk, action.name(), pid, Some(fd)).map_err(|e| {
            tracing::error!("{e}");
            ScriptError::Refused {
                action: action.name(),
            }
        })
    }

    fn query_external(&self) -> Result<Vec<crate::options::External>, ScriptError> {
        let action = ScriptAction::QueryExtFiles;
        let ack = notify_round(self.sk, action.name(), None, None).map_err(|e| {
            tracing::error!("{e}");
            ScriptError::Refused {
                action: action.name(),
            }
        })?;
        let Some(opts) = ack.opts else {
            tracing::info!("query-ext-files: no opts in the answer");
            return Ok(Vec::new());
        };
        opts.external
            .iter()
            .map(|e| {
                tracing::info!("adding external object {e}");
                crate::options::External::parse(e)
                    .ok_or_else(|| ScriptError::BadExternal(e.clone()))
            })
            .collect()
    }
}

/// Sends the notification for `action` (with `pid` and an optional descriptor) and waits for the
/// client's acknowledgement: a `NOTIFY` request with `notify_success` set.
///
/// # Errors
/// [`RpcError::NotifyRefused`] when the client answers anything else, closes the socket or
/// sends garbage; [`RpcError::Socket`] when the socket fails.
pub fn notify(
    sk: BorrowedFd<'_>,
    action: &str,
    pid: Option<i32>,
    fd: Option<BorrowedFd<'_>>,
) -> Result<(), RpcError> {
    notify_round(sk, action, pid, fd).map(|_| ())
}

/// [`notify`], returning the client's acknowledgement (whose `opts` may carry an answer).
fn notify_round(
    sk: BorrowedFd<'_>,
    action: &str,
    pid: Option<i32>,
    fd: Option<BorrowedFd<'_>>,
) -> Result<Box<criu_images::pb::CriuReq>, RpcError> {
    let mut r = resp(CriuReqType::Notify, true);
    r.notify = Some(CriuNotify {
        script: Some(action.to_string()),
        pid,
    });
    wire::send_response(sk, &r, fd)?;
    let refused = |why: &str| RpcError::NotifyRefused {
        action: action.to_string(),
        why: why.to_string(),
    };
    match wire::recv_request(sk)? {
        Incoming::Request(req)
            if req.r#type == CriuReqType::Notify as i32 && req.notify_success == Some(true) =>
        {
            Ok(req)
        }
        Incoming::Request(_) => Err(refused("the client reported a failure")),
        Incoming::Malformed(why) => Err(refused(&why)),
        Incoming::Closed => Err(refused("the client went away")),
    }
}

/// The `criu_version` criu reports: the CRIU release whose formats and behaviour it matches
/// (4.2, sublevel 0, as a CRIU release build reports it), with this implementation's own
/// version in `name`. No git id: clients (libcriu, go-criu, runc, rust-criu) read a git id as
/// "the next minor release in development" and would compute 4.3.
pub fn criu_version() -> CriuVersion {
    CriuVersion {
        major_number: super::CRIU_VERSION_MAJOR,
        minor_number: super::CRIU_VERSION_MINOR,
        gitid: None,
        sublevel: Some(0),
        extra: None,
        name: Some(super::implementation()),
    }
}
