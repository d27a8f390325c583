//! `criu_opts` onto the engine's [`Options`]: the same structure the command line and the
//! configuration files fill, so the engine never knows which way a run came in.
//!
//! Descriptors in a request (`images_dir_fd`, `work_dir_fd`) are the client's: criu reaches
//! them as `/proc/<client pid>/fd/<N>`, in `swrk` and `service` mode alike. Descriptors that
//! must be criu's own (`inherit_fd`, `status_fd`) only make sense in `swrk` mode, where criu
//! inherited them from the client; the service refuses them, as CRIU's does.

use std::path::{Path, PathBuf};

use criu_images::pb::CriuOpts;

use crate::options::lsm::{HostLsm, LsmError};
use crate::options::{
    CgroupMode, CgroupRoot, Command, CpuCap, DirRef, External, FinalState, InheritFd, Options,
};

/// How criu was started for this client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `criu swrk FD`: a child of the client, sharing its descriptors.
    Swrk,
    /// A worker of `criu service`: a stranger to the client.
    Service,
}

/// Why a request's options were refused.
#[derive(Debug, thiserror::Error)]
pub enum OptsError {
    /// The request named no images directory.
    #[error("neither images_dir_fd nor images_dir was passed by the RPC client")]
    NoImagesDir,
    /// The images or work directory cannot be reached.
    #[error("cannot open {what} {path}")]
    Dir {
        /// `images dir` or `work dir`.
        what: &'static str,
        /// The path tried.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `log_file` named a path, not a file name.
    #[error("log_file {0:?}: no subdirectories are allowed in the log file name")]
    LogFileSubdir(String),
    /// An option only `criu swrk` can honour.
    #[error("{0} is not allowed in a standalone service")]
    SwrkOnly(&'static str),
    /// A value that does not parse.
    #[error("invalid {option} {value:?}")]
    BadValue {
        /// The field.
        option: &'static str,
        /// The value given.
        value: String,
    },
    /// The request's `config_file` cannot be read or holds a bad option.
    #[error("config_file {path}")]
    Config {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: crate::options::OptionsError,
    },
    /// An `lsm_profile` this host or this criu cannot honour.
    #[error(transparent)]
    Lsm(#[from] LsmError),
    /// An option for work still to come.
    #[error("{what} is not supported by this criu yet")]
    Unsupported {
        /// The option and, where it helps, its value.
        what: String,
    },
}

impl OptsError {
    /// The errno a client sees in `cr_errno` (CRIU answers option errors with `EBADRQC`).
    pub fn errno(&self) -> i32 {
        match self {
            OptsError::Unsupported { .. } => libc::EOPNOTSUPP,
            OptsError::Lsm(e) => e.errno(),
            _ => libc::EBADRQC,
        }
    }
}

/// CRIU's default log file name in RPC mode (in the work directory).
pub const DEFAULT_LOG_FILE: &str = "criu.log";

/// `criu_cg_mode` as the command line's `--manage-cgroups=MODE`.
fn cgroup_mode(m: i32) -> Result<CgroupMode, OptsError> {
    use criu_images::pb::CriuCgMode as M;
    Ok(match M::try_from(m) {
        Ok(M::Ignore) => CgroupMode::Ignore,
        Ok(M::CgNone) => CgroupMode::None,
        Ok(M::Props) => CgroupMode::Props,
        Ok(M::Soft) => CgroupMode::Soft,
        Ok(M::Full) => CgroupMode::Full,
        Ok(M::Strict) => CgroupMode::Strict,
        // CRIU's "whatever the default is": soft.
        Ok(M::Default) => CgroupMode::Soft,
        Err(_) => {
            return Err(OptsError::BadValue {
                option: "manage_cgroups_mode",
                value: m.to_string(),
            });
        }
    })
}

fn unsupported(what: impl Into<String>) -> OptsError {
    OptsError::Unsupported { what: what.into() }
}

/// The engine options for one request of `cmd` from the client `peer`.
///
/// The images directory is resolved (and must exist) except for `CHECK`; the work directory is
/// `work_dir_fd`, else the images directory. The log goes to `log_file` in the work directory
/// (default [`DEFAULT_LOG_FILE`]), or to stderr with `log_to_stderr`.
///
/// # Errors
/// [`OptsError`] for a missing or unreachable directory and for options this criu cannot honour.
pub fn to_options(
    req: &CriuOpts,
    cmd: Command,
    mode: Mode,
    peer: i32,
) -> Result<Options, OptsError> {
    let mut o = Options {
        command: Some(cmd),
        no_default_config: true,
        ..Options::default()
    };
    // The process and what becomes of it.
    if req.leave_running == Some(true) {
        o.final_state = FinalState::Alive;
    }
    if req.leave_stopped == Some(true) {
        o.final_state = FinalState::Stopped;
    }
    if req.rst_sibling == Some(true) {
        if mode == Mode::Service {
            return Err(OptsError::SwrkOnly("rst_sibling"));
        }
        // The restored root becomes the client's child (criu is the client's child in swrk).
        o.restore_sibling = true;
    }

    // Flags the engine knows.
    let flag = |v: Option<bool>, dflt: bool| v.unwrap_or(dflt);
    o.shell_job = flag(req.shell_job, false);
    o.ext_unix_sk = flag(req.ext_unix_sk, false);
    o.tcp_established = flag(req.tcp_established, false);
    if let Some(m) = req.network_lock {
        o.network_lock = crate::options::values::NetLockMethod::from_rpc(m).ok_or_else(|| {
            OptsError::BadValue {
                option: "network_lock",
                value: m.to_string(),
            }
        })?;
    }
    o.file_locks = flag(req.file_locks, false);
    o.track_mem = flag(req.track_mem, false);
    o.link_remap = flag(req.link_remap, false);
    o.unprivileged = flag(req.unprivileged, false);
    if let Some(g) = req.ghost_limit {
        o.ghost_limit = u64::from(g);
    }
    if let Some(t) = req.timeout {
        o.timeout = t;
    }
    if let Some(cap) = req.cpu_cap {
        o.cpu_cap = CpuCap(cap);
    }
    if let Some(r) = &req.root {
        o.root = Some(PathBuf::from(r));
    }
    if let Some(p) = &req.parent_img {
        o.prev_images_dir = Some(PathBuf::from(p));
    }
    for e in &req.external {
        o.external
            .push(External::parse(e).ok_or_else(|| OptsError::BadValue {
                option: "external",
                value: e.clone(),
            })?);
    }
    o.empty_ns = req.empty_ns.unwrap_or(0);
    // `join_ns` entries become `--join-ns NS:FILE[,EXTRA]`, checked where the command line's
    // are (the restore refuses kinds it does not join, by name).
    for j in &req.join_ns {
        let mut spec = format!("{}:{}", j.ns, j.ns_file);
        if let Some(x) = &j.extra_opt {
            spec.push(',');
            spec.push_str(x);
        }
        o.join_ns.push(spec);
    }
    for v in &req.veths {
        o.external.push(External {
            kind: "veth".into(),
            id: v.if_in.clone(),
            value: Some(v.if_out.clone()),
        });
    }
    for m in &req.ext_mnt {
        o.external.push(External {
            kind: "mnt".into(),
            id: m.key.clone(),
            value: Some(m.val.clone()),
        });
    }
    o.ext_unix_sk_inodes
        .extend(req.unix_sk_ino.iter().map(|u| u64::from(u.inode)));
    if let Some(m) = req.manage_cgroups_mode {
        o.manage_cgroups = Some(cgroup_mode(m)?);
    } else if req.manage_cgroups == Some(true) {
        o.manage_cgroups = Some(CgroupMode::Soft);
    }
    for r in &req.cg_root {
        o.cgroup_roots.push(CgroupRoot {
            controller: r.ctrl.clone(),
            path: PathBuf::from(&r.path),
        });
    }
    if let Some(y) = &req.cgroup_yard {
        o.cgroup_yard = Some(PathBuf::from(y));
    }
    if !req.inherit_fd.is_empty() {
        if mode == Mode::Service {
            return Err(OptsError::SwrkOnly("inherit_fd"));
        }
        for i in &req.inherit_fd {
            o.inherit_fds.push(InheritFd {
                fd: i.fd,
                key: i.key.clone(),
            });
        }
    }
    if let Some(fd) = req.status_fd {
        if mode == Mode::Service {
            return Err(OptsError::SwrkOnly("status_fd"));
        }
        o.status_fd = Some(fd);
    }

    if let Some(ps) = &req.ps {
        // `ps.fd`: a socket already connected to the page server, criu's own descriptor (swrk
        // only, as CRIU): the dump's pages go over it instead of a connection of criu's.
        if let Some(fd) = ps.fd
            && req.lazy_pages != Some(true)
        {
            if mode == Mode::Service {
                return Err(OptsError::SwrkOnly("ps.fd"));
            }
            o.live.page_server_fd = Some(fd);
        }
        // With lazy_pages, `ps` says where the dump serves its pages (CRIU uses it the same
        // way); otherwise it is the page server the pages go to.
        o.live.page_server = req.lazy_pages != Some(true);
        o.live.address = ps.address.clone();
        o.live.port = match ps.port {
            Some(p) => Some(u16::try_from(p).map_err(|_| OptsError::BadValue {
                option: "ps.port",
                value: p.to_string(),
            })?),
            None => None,
        };
    }
    if let Some(m) = req.pre_dump_mode {
        o.live.pre_dump_mode = match m {
            1 => crate::options::PreDumpMode::Splice,
            2 => crate::options::PreDumpMode::Read,
            _ => {
                return Err(OptsError::BadValue {
                    option: "pre_dump_mode",
                    value: m.to_string(),
                });
            }
        };
    }

    // Lazy restore (the daemon's socket is in the work directory), dump --lazy-pages.
    o.live.lazy_pages = req.lazy_pages == Some(true);
    o.live.auto_dedup = req.auto_dedup == Some(true);
    o.live.tls = crate::options::TlsOptions {
        enabled: req.tls == Some(true),
        cacert: req.tls_cacert.as_ref().map(Into::into),
        cacrl: req.tls_cacrl.as_ref().map(Into::into),
        cert: req.tls_cert.as_ref().map(Into::into),
        key: req.tls_key.as_ref().map(Into::into),
        no_cn_verify: req.tls_no_cn_verify == Some(true),
    };
    // Options for work still to come: refused when set to something that would matter.
    let refuse_if = |set: bool, what: &str| if set { Err(unsupported(what)) } else { Ok(()) };
    refuse_if(
        req.empty_ns
            .is_some_and(|n| n & !(libc::CLONE_NEWNET as u32) != 0),
        "empty_ns other than CLONE_NEWNET",
    )?;
    o.exec_cmd = req.exec_cmd.clone();
    o.lsm.profile = req.lsm_profile.clone();
    o.lsm.mount_context = req.lsm_mount_context.clone();

    // Accepted and logged: they change nothing in what this criu does (no cgroup, mount or
    // network-namespace handling yet, ptrace freezes the tree either way).
    let mut ignored = |name: &str, set: bool| {
        if set {
            o.ignored.push((name.to_string(), None));
        }
    };
    o.cgroup_props.inline = req.cgroup_props.clone();
    o.cgroup_props.file = req.cgroup_props_file.as_ref().map(PathBuf::from);
    o.cgroup_props.dump_controllers = req.cgroup_dump_controller.clone();
    if let Some(p) = &req.freeze_cgroup {
        o.freeze_cgroup = Some(PathBuf::from(p));
    }
    // runc always sets it: a pty slave whose master is outside the tree gets a new master,
    // sent to the client with the `orphan-pts-master` notification.
    o.orphan_pts_master = req.orphan_pts_master == Some(true);
    ignored("evasive-devices", req.evasive_devices.is_some());
    ignored("force-irmap", req.force_irmap.is_some());
    ignored("irmap-scan-path", !req.irmap_scan_paths.is_empty());
    // `--ext-mount-map auto`, `--enable-external-sharing`, `--enable-external-masters`.
    for (on, flags) in [
        (req.auto_ext_mnt, ""),
        (req.ext_sharing, "-s"),
        (req.ext_masters, "-m"),
    ] {
        if on == Some(true) {
            o.external.push(External::auto_mnt_flags(flags));
        }
    }
    ignored("skip-mnt", !req.skip_mnt.is_empty());
    ignored("enable-fs", !req.enable_fs.is_empty());
    o.skip_in_flight = flag(req.tcp_skip_in_flight, false);
    // Printed on criu's standard output at the end, as the command line's `--display-stats`.
    o.display_stats = flag(req.display_stats, false);
    o.tcp_close = flag(req.tcp_close, false);
    ignored("weak-sysctls", req.weak_sysctls.is_some());
    ignored("pidfd-store", req.pidfd_store_sk.is_some());
    ignored("mntns-compat-mode", req.mntns_compat_mode.is_some());
    ignored("skip-file-rwx-check", req.skip_file_rwx_check.is_some());

    let peer_fd = |fd: i32| PathBuf::from(format!("/proc/{peer}/fd/{fd}"));
    // A configuration file overrides the request's own options (runc's runc.conf), the images
    // and work directory and the log file too; the request's log level and pid stay.
    let from_config = match &req.config_file {
        Some(f) => apply_config(&mut o, Path::new(f))?,
        None => FromConfig::default(),
    };
    o.tree = Some(req.pid.unwrap_or(peer));

    // Directories. prost gives 0 for a missing required `images_dir_fd`; CRIU's clients send -1
    // for "none".
    let images = if from_config.images_dir {
        Some(o.images_dir.path())
    } else if req.images_dir_fd >= 0 {
        Some(peer_fd(req.images_dir_fd))
    } else {
        req.images_dir.as_ref().map(PathBuf::from)
    };
    match images {
        Some(p) => {
            o.images_dir =
                DirRef::Path(std::fs::canonicalize(&p).map_err(|source| OptsError::Dir {
                    what: "images dir",
                    path: p.clone(),
                    source,
                })?);
        }
        None if cmd == Command::Check => o.images_dir = DirRef::default(),
        None => return Err(OptsError::NoImagesDir),
    }
    let work = match (&o.work_dir, req.work_dir_fd) {
        (Some(w), _) if from_config.work_dir => Some(w.path()),
        (_, Some(fd)) => Some(peer_fd(fd)),
        _ => None,
    };
    if let Some(p) = work {
        o.work_dir = Some(DirRef::Path(std::fs::canonicalize(&p).map_err(
            |source| OptsError::Dir {
                what: "work dir",
                path: p.clone(),
                source,
            },
        )?));
    }

    // The log.
    if from_config.log_file {
        // Taken as the file says, paths too (CRIU checks only the request's name).
    } else if req.log_to_stderr == Some(true) && req.log_file.is_none() {
        o.log_file = None;
    } else {
        let name = req.log_file.as_deref().unwrap_or(DEFAULT_LOG_FILE);
        if name.contains('/') {
            return Err(OptsError::LogFileSubdir(name.to_string()));
        }
        o.log_file = Some(PathBuf::from(name));
    }
    o.log_level = req.log_level.unwrap_or(crate::options::DEFAULT_LOG_LEVEL);
    if matches!(cmd, Command::Dump | Command::PreDump | Command::Restore) {
        o.lsm.check(HostLsm::probe())?;
    }
    Ok(o)
}

/// What a request's configuration file set of the options whose request fields it overrides.
#[derive(Default)]
struct FromConfig {
    images_dir: bool,
    work_dir: bool,
    log_file: bool,
}

/// Applies the request's `config_file` over the options filled from the request (a missing
/// file is skipped, as CRIU does: runc names `/etc/criu/runc.conf` whether it exists or not).
fn apply_config(o: &mut Options, file: &Path) -> Result<FromConfig, OptsError> {
    // Cleared first, so that what the file sets shows.
    let images = std::mem::replace(&mut o.images_dir, DirRef::Fd(-1));
    let work = o.work_dir.take();
    let log = o.log_file.take();
    let found = o
        .apply_config_file(file)
        .map_err(|source| OptsError::Config {
            path: file.to_path_buf(),
            source,
        })?;
    if found {
        tracing::debug!("options from {} override the request's", file.display());
    }
    let set = FromConfig {
        images_dir: o.images_dir != DirRef::Fd(-1),
        work_dir: o.work_dir.is_some(),
        log_file: o.log_file.is_some(),
    };
    if !set.images_dir {
        o.images_dir = images;
    }
    if !set.work_dir {
        o.work_dir = work;
    }
    if !set.log_file {
        o.log_file = log;
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(dir: &std::path::Path) -> CriuOpts {
        CriuOpts {
            images_dir_fd: -1,
            images_dir: Some(dir.display().to_string()),
            ..Default::default()
        }
    }

    #[test]
    fn the_request_fills_the_same_options_as_the_command_line() {
        let d = tempfile::tempdir().unwrap();
        let mut r = opts(d.path());
        r.pid = Some(42);
        r.leave_running = Some(true);
        r.shell_job = Some(true);
        r.log_level = Some(4);
        r.log_file = Some("dump.log".into());
        r.ext_mnt.push(criu_images::pb::ExtMountMap {
            key: "/a".into(),
            val: "A".into(),
        });
        let o = to_options(&r, Command::Dump, Mode::Swrk, 7).unwrap();
        assert_eq!(o.tree, Some(42));
        assert_eq!(o.final_state, FinalState::Alive);
        assert!(o.shell_job);
        assert_eq!(o.log_level, 4);
        assert_eq!(o.log_file, Some(PathBuf::from("dump.log")));
        assert_eq!(
            o.images_dir,
            DirRef::Path(std::fs::canonicalize(d.path()).unwrap())
        );
        assert_eq!(o.external, vec![External::parse("mnt[/a]:A").unwrap()]);
    }

    #[test]
    fn display_stats_lazy_pages_and_ps_map_as_criu_s() {
        let d = tempfile::tempdir().unwrap();
        let mut r = opts(d.path());
        r.display_stats = Some(true);
        r.lazy_pages = Some(true);
        r.ps = Some(criu_images::pb::CriuPageServerInfo {
            address: Some("127.0.0.1".into()),
            port: Some(1234),
            ..Default::default()
        });
        let o = to_options(&r, Command::Dump, Mode::Swrk, 7).unwrap();
        assert!(o.display_stats);
        assert!(o.ignored.is_empty(), "{:?}", o.ignored);
        let dump = crate::options::DumpOptions::from_options(&o);
        assert_eq!(dump.lazy_pages, Some(("127.0.0.1".into(), 1234)));
        assert_eq!(dump.page_server, None);
        r.lazy_pages = None;
        let dump = crate::options::DumpOptions::from_options(
            &to_options(&r, Command::Dump, Mode::Swrk, 7).unwrap(),
        );
        assert_eq!(dump.page_server, Some(("127.0.0.1".into(), 1234)));
        assert_eq!(dump.lazy_pages, None);
        // A socket connected by the client: used over swrk, refused by name in service mode.
        r.ps.as_mut().unwrap().fd = Some(5);
        let dump = crate::options::DumpOptions::from_options(
            &to_options(&r, Command::Dump, Mode::Swrk, 7).unwrap(),
        );
        assert_eq!(dump.page_server_fd, Some(5));
        assert!(dump.page_server.is_some());
        assert!(matches!(
            to_options(&r, Command::Dump, Mode::Service, 7),
            Err(OptsError::SwrkOnly("ps.fd"))
        ));
    }

    #[test]
    fn join_ns_becomes_the_command_line_s_join_ns() {
        let d = tempfile::tempdir().unwrap();
        let mut r = opts(d.path());
        r.join_ns.push(criu_images::pb::JoinNamespace {
            ns: "uts".into(),
            ns_file: "/proc/42/ns/uts".into(),
            extra_opt: None,
        });
        r.join_ns.push(criu_images::pb::JoinNamespace {
            ns: "user".into(),
            ns_file: "43".into(),
            extra_opt: Some("0,0".into()),
        });
        let o = to_options(&r, Command::Restore, Mode::Swrk, 7).unwrap();
        assert_eq!(o.join_ns, ["uts:/proc/42/ns/uts", "user:43,0,0"]);
    }

    #[test]
    fn the_defaults_are_criu_s_rpc_defaults() {
        let d = tempfile::tempdir().unwrap();
        let o = to_options(&opts(d.path()), Command::Dump, Mode::Swrk, 7).unwrap();
        assert_eq!(o.tree, Some(7), "no pid: the client dumps itself");
        assert_eq!(o.final_state, FinalState::Dead);
        assert_eq!(o.log_file, Some(PathBuf::from(DEFAULT_LOG_FILE)));
        assert_eq!(o.log_level, crate::options::DEFAULT_LOG_LEVEL);
    }

    #[test]
    fn bad_and_unsupported_options_are_refused_with_a_reason() {
        let d = tempfile::tempdir().unwrap();
        let none = CriuOpts {
            images_dir_fd: -1,
            ..Default::default()
        };
        assert!(matches!(
            to_options(&none, Command::Dump, Mode::Swrk, 1),
            Err(OptsError::NoImagesDir)
        ));
        assert!(to_options(&none, Command::Check, Mode::Swrk, 1).is_ok());
        let mut r = opts(d.path());
        r.log_file = Some("../x.log".into());
        assert!(matches!(
            to_options(&r, Command::Dump, Mode::Swrk, 1),
            Err(OptsError::LogFileSubdir(_))
        ));
        let mut r = opts(d.path());
        r.inherit_fd.push(criu_images::pb::InheritFd {
            key: "k".into(),
            fd: 3,
        });
        let e = to_options(&r, Command::Restore, Mode::Service, 1).unwrap_err();
        assert_eq!(
            e.to_string(),
            "inherit_fd is not allowed in a standalone service"
        );
        assert_eq!(e.errno(), libc::EBADRQC);
        let mut r = opts(d.path());
        r.network_lock = Some(7);
        assert!(matches!(
            to_options(&r, Command::Dump, Mode::Swrk, 1),
            Err(OptsError::BadValue {
                option: "network_lock",
                ..
            })
        ));
        let mut r = opts(d.path());
        r.lazy_pages = Some(true);
        let o = to_options(&r, Command::Restore, Mode::Swrk, 1).unwrap();
        assert!(o.live.lazy_pages);
        let ro = crate::options::RestoreOptions::from_options(&o);
        assert_eq!(
            ro.lazy_pages.as_deref(),
            Some(o.effective_work_dir().join("lazy-pages.socket").as_path())
        );
    }

    #[test]
    fn a_config_file_overrides_the_request_but_not_its_pid_and_log_level() {
        let d = tempfile::tempdir().unwrap();
        let other = d.path().join("other");
        std::fs::create_dir(&other).unwrap();
        let cfg = d.path().join("rpc.conf");
        std::fs::write(
            &cfg,
            format!(
                "leave-running\naction-script /bin/true\ntcp-established\nverbosity 4\n\
                 tree 1\nimages-dir {}\nlog-file /x/y.log\n",
                other.display()
            ),
        )
        .unwrap();
        let mut r = opts(d.path());
        r.config_file = Some(cfg.display().to_string());
        r.pid = Some(42);
        r.log_file = Some("req.log".into());
        let o = to_options(&r, Command::Dump, Mode::Swrk, 7).unwrap();
        assert_eq!(o.final_state, FinalState::Alive);
        assert!(o.tcp_established);
        assert_eq!(o.action_scripts, [PathBuf::from("/bin/true")]);
        assert_eq!(o.tree, Some(42), "the request's pid");
        assert_eq!(o.log_level, crate::options::DEFAULT_LOG_LEVEL);
        assert_eq!(
            o.images_dir,
            DirRef::Path(std::fs::canonicalize(&other).unwrap())
        );
        assert_eq!(o.log_file, Some(PathBuf::from("/x/y.log")));
        // Without those lines the request's directories and log stay.
        std::fs::write(&cfg, "shell-job\n").unwrap();
        let o = to_options(&r, Command::Dump, Mode::Swrk, 7).unwrap();
        assert!(o.shell_job);
        assert_eq!(
            o.images_dir,
            DirRef::Path(std::fs::canonicalize(d.path()).unwrap())
        );
        assert_eq!(o.log_file, Some(PathBuf::from("req.log")));
        // A missing file is skipped, a bad line refused.
        r.config_file = Some(d.path().join("none.conf").display().to_string());
        assert!(to_options(&r, Command::Dump, Mode::Swrk, 7).is_ok());
        std::fs::write(&cfg, "no-such-option\n").unwrap();
        r.config_file = Some(cfg.display().to_string());
        let e = to_options(&r, Command::Dump, Mode::Swrk, 7).unwrap_err();
        assert!(matches!(e, OptsError::Config { .. }), "{e}");
        assert_eq!(e.errno(), libc::EBADRQC);
    }

    #[test]
    fn exec_cmd_and_the_lsm_options_fill_the_options() {
        let d = tempfile::tempdir().unwrap();
        let mut r = opts(d.path());
        r.exec_cmd = vec!["sh".into(), "-c".into(), "true".into()];
        r.lsm_profile = Some("none:x".into());
        r.lsm_mount_context = Some("system_u:object_r:x:s0".into());
        let o = to_options(&r, Command::Restore, Mode::Swrk, 7).unwrap();
        assert_eq!(o.exec_cmd, ["sh", "-c", "true"]);
        assert_eq!(o.lsm.profile.as_deref(), Some("none:x"));
        assert_eq!(
            o.lsm.mount_context.as_deref(),
            Some("system_u:object_r:x:s0")
        );
        r.lsm_profile = Some("bogus".into());
        let e = to_options(&r, Command::Restore, Mode::Swrk, 7).unwrap_err();
        assert_eq!(e.to_string(), "invalid argument bogus for --lsm-profile");
        // A check does not look at it.
        assert!(to_options(&r, Command::Check, Mode::Swrk, 7).is_ok());
    }
}
