//! The options of a criu run, parsed the way `criu(8)` parses them.
//!
//! Options come from up to five sources, read in this order, later ones overriding earlier ones
//! (the same order CRIU uses):
//!
//! 1. `/etc/criu/default.conf`,
//! 2. `$HOME/.criu/default.conf`,
//! 3. the file named by the `CRIU_CONFIG_FILE` environment variable,
//! 4. the file given with `--config FILE`,
//! 5. the command line.
//!
//! The two default files are skipped with `--no-default-config` and also whenever `--config` is
//! given. A configuration file holds one option per line, without the leading `--`: `tree 42`,
//! `leave-running`, `log-file "dump.log"`; `#` starts a comment.
//!
//! The command line follows `getopt_long` rules: short options may be bundled (`-Rj`), a short
//! option's argument may be attached (`-t42`) or separate (`-t 42`), `-v` takes an optional
//! attached argument (`-v4`, `-vvv`, and the odd `-verbosity=0` that real tools pass, which is
//! `-v` with the argument `erbosity=0`, i.e. level 0), long options take `--name=value` or
//! `--name value`, and a long option may be abbreviated to any unambiguous prefix.
//!
//! ```
//! use criu::{Command, FinalState, Options};
//!
//! let args = ["criu", "dump", "-t", "42", "-D", "/tmp/img", "-R", "-v4", "--no-default-config"];
//! let opts = Options::parse(args.iter().map(|s| s.to_string())).unwrap();
//! assert_eq!(opts.command, Some(Command::Dump));
//! assert_eq!(opts.tree, Some(42));
//! assert_eq!(opts.final_state, FinalState::Alive);
//! assert_eq!(opts.log_level, 4);
//! ```

mod config;
mod engine;
pub mod live;
pub mod lsm;
mod parse;
mod table;
mod usage;
pub mod values;

pub use usage::USAGE;

use std::path::{Path, PathBuf};

pub use engine::{DumpOptions, InsideMethod, PidMethod, RestoreOptions};
pub use live::{LiveOptions, PreDumpMode, TlsOptions};
pub use lsm::LsmOptions;
pub use values::{CgroupMode, CgroupPropsOpts, CgroupRoot, CpuCap, DirRef, External, InheritFd};

use table::Arg;

/// Errors from parsing options, reading configuration files or checking the options of a
/// command. [`OptionsError::errno`] is the errno an RPC reply carries for each.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    /// An option that criu does not know.
    #[error("unrecognized option '{option}'")]
    Unknown {
        /// The option as written.
        option: String,
    },
    /// A long option prefix that matches several options.
    #[error("option '{option}' is ambiguous")]
    Ambiguous {
        /// The option as written.
        option: String,
    },
    /// An option that needs an argument was last.
    #[error("option '{option}' requires an argument")]
    MissingArgument {
        /// The option as written.
        option: String,
    },
    /// A flag given an argument with `--flag=value`.
    #[error("option '--{option}' doesn't allow an argument")]
    UnexpectedArgument {
        /// The option's name.
        option: String,
    },
    /// An argument that does not parse for its option.
    #[error("invalid argument for {option}: {value}")]
    BadValue {
        /// The option.
        option: String,
        /// The argument given.
        value: String,
    },
    /// An option CRIU has retired (`--ms`).
    #[error("{option} is deprecated; see \"Check options\" of criu --help")]
    Deprecated {
        /// The option as written.
        option: String,
    },
    /// An unknown command word.
    #[error("unknown command '{command}'")]
    UnknownCommand {
        /// The word given.
        command: String,
    },
    /// No command word.
    #[error("command is required")]
    NoCommand,
    /// A command this criu does not have yet.
    #[error("the {command} command is not supported by this criu")]
    CommandNotSupported {
        /// The command word.
        command: &'static str,
    },
    /// More than one command word.
    #[error("excessive parameter for command {command}: {extra}")]
    Excessive {
        /// The command.
        command: String,
        /// The first extra word.
        extra: String,
    },
    /// A command that needs an option run without it (`dump` without `-t`).
    #[error("{command} needs {option}")]
    Missing {
        /// The command word.
        command: &'static str,
        /// The option it needs.
        option: &'static str,
    },
    /// An option that only makes sense with another one.
    #[error("{option} only makes sense with {needs}")]
    Requires {
        /// The option given.
        option: &'static str,
        /// The one it needs.
        needs: &'static str,
    },
    /// A configuration file that exists but cannot be read.
    #[error("cannot read configuration file {path}")]
    ConfigRead {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A configuration file line criu cannot parse.
    #[error("unsupported configuration file format in {path} line {line}")]
    ConfigSyntax {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// `--exec-cmd` used where criu(8) does not allow it.
    #[error("--exec-cmd {why}")]
    ExecCmd {
        /// What is wrong, as criu(8) says it.
        why: &'static str,
    },
    /// A `--lsm-profile` this host or this criu cannot honour.
    #[error(transparent)]
    Lsm(#[from] lsm::LsmError),
}

impl OptionsError {
    /// The errno a reply to an RPC request carries for this error (`cr_errno`): `EINVAL` for
    /// what the request said wrong, `EOPNOTSUPP` for what this criu does not do, the OS error
    /// for an unreadable configuration file.
    pub fn errno(&self) -> i32 {
        match self {
            OptionsError::Unknown { .. }
            | OptionsError::Ambiguous { .. }
            | OptionsError::MissingArgument { .. }
            | OptionsError::UnexpectedArgument { .. }
            | OptionsError::BadValue { .. }
            | OptionsError::UnknownCommand { .. }
            | OptionsError::NoCommand
            | OptionsError::Excessive { .. }
            | OptionsError::Missing { .. }
            | OptionsError::Requires { .. }
            | OptionsError::ExecCmd { .. }
            | OptionsError::ConfigSyntax { .. } => libc::EINVAL,
            OptionsError::Deprecated { .. } | OptionsError::CommandNotSupported { .. } => {
                libc::EOPNOTSUPP
            }
            OptionsError::ConfigRead { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            OptionsError::Lsm(e) => e.errno(),
        }
    }
}

/// One row of the option table, as the man page and the shell completion see it (they are
/// generated from the table, so an option added to it appears in both).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionSpec {
    /// The long name, without dashes.
    pub long: &'static str,
    /// The short letter.
    pub short: Option<char>,
    /// It takes an argument.
    pub takes_value: bool,
    /// The argument may be left out (`--opt=value` only).
    pub optional_value: bool,
    /// A `--no-NAME` form exists.
    pub negatable: bool,
}

/// Every row of the option table, in its order.
pub fn option_specs() -> impl Iterator<Item = OptionSpec> {
    table::TABLE.iter().map(|d| OptionSpec {
        long: d.long,
        short: d.short,
        takes_value: d.arg != Arg::No,
        optional_value: d.arg == Arg::Optional,
        negatable: d.negatable,
    })
}

/// The command word of a criu run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// `criu check`: does the kernel have what criu needs.
    Check,
    /// `criu dump`: checkpoint a process.
    Dump,
    /// `criu pre-dump`: copy memory ahead of a dump.
    PreDump,
    /// `criu restore`: bring a process back.
    Restore,
    /// `criu page-server`.
    PageServer,
    /// `criu lazy-pages`: serve the memory of a lazy restore.
    LazyPages,
    /// `criu dedup`: punch the pages a dump holds out of its parent images.
    Dedup,
    /// `criu service`: RPC on a unix socket.
    Service,
    /// `criu swrk FD`: RPC on an inherited socket.
    Swrk,
    /// `criu cpuinfo dump|check`.
    CpuInfo,
}

impl Command {
    /// Every command, in the order criu(8) lists them.
    pub const ALL: [Command; 10] = [
        Command::Dump,
        Command::PreDump,
        Command::Restore,
        Command::Check,
        Command::PageServer,
        Command::LazyPages,
        Command::Dedup,
        Command::Service,
        Command::Swrk,
        Command::CpuInfo,
    ];

    /// Parses a command word as criu(8) spells it.
    pub fn from_word(word: &str) -> Option<Command> {
        Some(match word {
            "check" => Command::Check,
            "dump" => Command::Dump,
            "pre-dump" => Command::PreDump,
            "restore" => Command::Restore,
            "page-server" => Command::PageServer,
            "lazy-pages" => Command::LazyPages,
            "dedup" => Command::Dedup,
            "service" => Command::Service,
            "swrk" => Command::Swrk,
            "cpuinfo" => Command::CpuInfo,
            _ => return None,
        })
    }

    /// The command word.
    pub fn word(self) -> &'static str {
        match self {
            Command::Check => "check",
            Command::Dump => "dump",
            Command::PreDump => "pre-dump",
            Command::Restore => "restore",
            Command::PageServer => "page-server",
            Command::LazyPages => "lazy-pages",
            Command::Dedup => "dedup",
            Command::Service => "service",
            Command::Swrk => "swrk",
            Command::CpuInfo => "cpuinfo",
        }
    }
}

/// What becomes of the dumped process after a successful dump (and of a restored one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FinalState {
    /// Killed (the default for dump).
    #[default]
    Dead,
    /// Left running (`-R/--leave-running`).
    Alive,
    /// Left stopped with `SIGSTOP` (`-s/--leave-stopped`).
    Stopped,
}

/// CRIU's log levels: 0 messages only, 1 errors, 2 warnings (default), 3 info, 4 debug.
pub const DEFAULT_LOG_LEVEL: i32 = 2;
/// CRIU's default `--timeout` (seconds allowed to freeze the tree).
pub const DEFAULT_TIMEOUT: u32 = 10;

/// Every option of one criu run, whatever filled it (command line, configuration files, an RPC
/// request through [`Options::set`]). The engine takes the per-command views
/// [`DumpOptions`] and [`RestoreOptions`] built from it.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// The command word (`None` when only `--help`/`--version` style options were given).
    pub command: Option<Command>,
    /// Words after the command (only `swrk FD` takes one).
    pub command_args: Vec<String>,
    /// `-t/--tree PID`: the root of the tree to dump.
    pub tree: Option<i32>,
    /// `-D/--images-dir DIR` (default `.`), or a descriptor (RPC `images_dir_fd`).
    pub images_dir: DirRef,
    /// `-W/--work-dir DIR` (default: the images directory): logs and pidfiles go here.
    pub work_dir: Option<DirRef>,
    /// `-o/--log-file FILE`, relative to the work dir; `None` logs to stderr.
    pub log_file: Option<PathBuf>,
    /// `-v[N]`, `--verbosity[=N]`: 0..4.
    pub log_level: i32,
    /// `--pidfile FILE`: where restore writes the restored root's pid.
    pub pidfile: Option<PathBuf>,
    /// `-d/--restore-detached` (also `--daemon`).
    pub restore_detached: bool,
    /// `--restore-sibling` / `-S`.
    pub restore_sibling: bool,
    /// `-R` / `-s`: what to do with the dumped process at the end.
    pub final_state: FinalState,
    /// `-j/--shell-job`: the task's session and terminal are the caller's.
    pub shell_job: bool,
    /// `--orphan-pts-master`: a pty slave whose master is outside the tree gets a new master,
    /// handed to the `orphan-pts-master` action script (or the RPC client).
    pub orphan_pts_master: bool,
    /// `--action-script FILE`, repeatable, in the order given.
    pub action_scripts: Vec<PathBuf>,
    /// `--timeout SECONDS`.
    pub timeout: u32,
    /// `--no-default-config` was given (or implied by `--config`).
    pub no_default_config: bool,
    /// `--config FILE`.
    pub config_file: Option<PathBuf>,
    /// `--feature NAME` for `criu check`.
    pub feature: Option<String>,
    /// `--extra` / `--all` for `criu check`.
    pub check_extra: bool,
    /// `--tcp-established`.
    pub tcp_established: bool,
    /// `--tcp-close`: established TCP connections are dumped without their state and restored
    /// closed.
    pub tcp_close: bool,
    /// `--skip-in-flight`: connections in a listener's accept queue are dropped.
    pub skip_in_flight: bool,
    /// `--network-lock`.
    pub network_lock: crate::options::values::NetLockMethod,
    /// `-l/--file-locks`.
    pub file_locks: bool,
    /// `-x/--ext-unix-sk[=INODES]`: external unix sockets are allowed.
    pub ext_unix_sk: bool,
    /// The inodes given with `--ext-unix-sk=INO,INO` (empty: any).
    pub ext_unix_sk_inodes: Vec<u64>,
    /// `--track-mem`.
    pub track_mem: bool,
    /// `--prev-images-dir DIR`.
    pub prev_images_dir: Option<PathBuf>,
    /// `--freeze-cgroup PATH`: a cgroup v2 directory frozen while the tree is seized.
    pub freeze_cgroup: Option<PathBuf>,
    /// `--link-remap`.
    pub link_remap: bool,
    /// `--ghost-limit SIZE` in bytes (default 1 MiB, as CRIU).
    pub ghost_limit: u64,
    /// `-r/--root DIR` for restore.
    pub root: Option<PathBuf>,
    /// `--empty-ns net` (RPC `empty_ns`): `CLONE_NEW*` flags of namespaces made empty at
    /// restore (the runtime sets them up).
    pub empty_ns: u32,
    /// `--inherit-fd fd[N]:RESOURCE`, repeatable.
    pub inherit_fds: Vec<InheritFd>,
    /// `--external KIND[ID]:VALUE`, repeatable.
    pub external: Vec<External>,
    /// `--status-fd FD`.
    pub status_fd: Option<i32>,
    /// `--unprivileged`.
    pub unprivileged: bool,
    /// `--cpu-cap[=CAPS]`: CRIU's mask; without the FPU bit (`--cpu-cap=none`) restore leaves
    /// out saved register state this CPU has no registers for.
    pub cpu_cap: CpuCap,
    /// `--manage-cgroups[=MODE]`.
    pub manage_cgroups: Option<CgroupMode>,
    /// `--cgroup-root [CTL:]PATH`, repeatable.
    pub cgroup_roots: Vec<CgroupRoot>,
    /// `--join-ns NS:{PID|FILE}[,EXTRA]`, repeatable, as given.
    pub join_ns: Vec<String>,
    /// `--cgroup-yard PATH`: a directory holding each hierarchy (`unified`, `cpu`, ...).
    pub cgroup_yard: Option<PathBuf>,
    /// `--cgroup-props`, `--cgroup-props-file`, `--cgroup-dump-controller`.
    pub cgroup_props: CgroupPropsOpts,
    /// Pre-dump, page server and lazy-pages options.
    pub live: LiveOptions,
    /// Options accepted for compatibility that change nothing here, as `(name, argument)`, so
    /// the run can log them.
    pub ignored: Vec<(String, Option<String>)>,
    /// `-h/--help` was given.
    pub help: bool,
    /// `-V/--version` was given.
    pub version: bool,
    /// `--display-stats`: print the dump's or restore's statistics at the end.
    pub display_stats: bool,
    /// `--lsm-profile`, `--lsm-mount-context`.
    pub lsm: LsmOptions,
    /// RPC `exec_cmd`, or the words after `--` with `--exec-cmd`: the command a restore
    /// becomes once the tree runs (it is then the restored root's parent).
    pub exec_cmd: Vec<String>,
    /// `--exec-cmd` was given on the command line (its command is what follows `--`).
    pub exec_cmd_given: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            command: None,
            command_args: Vec::new(),
            tree: None,
            images_dir: DirRef::default(),
            work_dir: None,
            log_file: None,
            log_level: DEFAULT_LOG_LEVEL,
            pidfile: None,
            restore_detached: false,
            restore_sibling: false,
            final_state: FinalState::Dead,
            shell_job: false,
            orphan_pts_master: false,
            action_scripts: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            no_default_config: false,
            config_file: None,
            feature: None,
            check_extra: false,
            tcp_established: false,
            tcp_close: false,
            skip_in_flight: false,
            network_lock: Default::default(),
            file_locks: false,
            ext_unix_sk: false,
            ext_unix_sk_inodes: Vec::new(),
            track_mem: false,
            prev_images_dir: None,
            freeze_cgroup: None,
            link_remap: false,
            ghost_limit: 1 << 20,
            root: None,
            empty_ns: 0,
            inherit_fds: Vec::new(),
            external: Vec::new(),
            status_fd: None,
            unprivileged: false,
            live: LiveOptions::default(),
            cpu_cap: CpuCap::default(),
            manage_cgroups: None,
            cgroup_roots: Vec::new(),
            join_ns: Vec::new(),
            cgroup_yard: None,
            cgroup_props: CgroupPropsOpts::default(),
            ignored: Vec::new(),
            help: false,
            version: false,
            display_stats: false,
            lsm: LsmOptions::default(),
            exec_cmd: Vec::new(),
            exec_cmd_given: false,
        }
    }
}

#[cfg(test)]
mod tests;
