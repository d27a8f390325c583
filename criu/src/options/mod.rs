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
mod table;
pub mod values;

use std::path::{Path, PathBuf};

pub use engine::{DumpOptions, InsideMethod, PidMethod, RestoreOptions};
pub use live::{LiveOptions, PreDumpMode};
pub use values::{CgroupMode, CgroupRoot, CpuCap, DirRef, External, InheritFd};

use config::{default_config_files, read_config};
use table::{Arg, Given};

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
            | OptionsError::ConfigSyntax { .. } => libc::EINVAL,
            OptionsError::Deprecated { .. } | OptionsError::CommandNotSupported { .. } => {
                libc::EOPNOTSUPP
            }
            OptionsError::ConfigRead { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
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
    /// `criu lazy-pages` (not supported yet).
    LazyPages,
    /// `criu service`: RPC on a unix socket.
    Service,
    /// `criu swrk FD`: RPC on an inherited socket.
    Swrk,
    /// `criu cpuinfo dump|check`.
    CpuInfo,
}

impl Command {
    /// Every command, in the order criu(8) lists them.
    pub const ALL: [Command; 9] = [
        Command::Dump,
        Command::PreDump,
        Command::Restore,
        Command::Check,
        Command::PageServer,
        Command::LazyPages,
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
    /// `--cgroup-yard PATH` (not acted on yet).
    pub cgroup_yard: Option<PathBuf>,
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
            action_scripts: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            no_default_config: false,
            config_file: None,
            feature: None,
            check_extra: false,
            tcp_established: false,
            file_locks: false,
            ext_unix_sk: false,
            ext_unix_sk_inodes: Vec::new(),
            track_mem: false,
            prev_images_dir: None,
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
            ignored: Vec::new(),
            help: false,
            version: false,
            display_stats: false,
        }
    }
}

impl Options {
    /// Parses `argv` (program name first) together with the configuration files criu reads,
    /// taking `$HOME` and `$CRIU_CONFIG_FILE` from the environment.
    ///
    /// # Errors
    /// Unknown or malformed options, unreadable or malformed configuration files.
    pub fn parse<I: IntoIterator<Item = String>>(argv: I) -> Result<Options, OptionsError> {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let env_cfg = std::env::var_os("CRIU_CONFIG_FILE").map(PathBuf::from);
        Self::parse_with(argv, home.as_deref(), env_cfg.as_deref())
    }

    /// [`Options::parse`] with `$HOME` and `$CRIU_CONFIG_FILE` given explicitly.
    ///
    /// # Errors
    /// As [`Options::parse`].
    pub fn parse_with<I: IntoIterator<Item = String>>(
        argv: I,
        home: Option<&Path>,
        env_config: Option<&Path>,
    ) -> Result<Options, OptionsError> {
        let argv: Vec<String> = argv.into_iter().skip(1).collect();
        // Pre-parse, as CRIU does: --config and --no-default-config decide which files count.
        let mut no_default = false;
        let mut cfg_file: Option<PathBuf> = None;
        for (i, a) in argv.iter().enumerate() {
            if a == "--no-default-config" {
                no_default = true;
            } else if a == "--config" {
                cfg_file = argv.get(i + 1).map(PathBuf::from);
                no_default = true;
            } else if let Some(v) = a.strip_prefix("--config=") {
                cfg_file = Some(PathBuf::from(v));
                no_default = true;
            }
        }
        let mut opts = Options {
            no_default_config: no_default,
            ..Options::default()
        };
        if !no_default {
            for f in default_config_files(home) {
                if let Some(args) = read_config(&f, false)? {
                    opts.apply(&args, false)?;
                }
            }
        }
        if let Some(f) = env_config
            && let Some(args) = read_config(f, false)?
        {
            opts.apply(&args, false)?;
        }
        if let Some(f) = &cfg_file {
            if let Some(args) = read_config(f, true)? {
                opts.apply(&args, false)?;
            }
            opts.config_file = Some(f.clone());
        }
        opts.apply(&argv, true)?;
        if let Some(cmd) = opts.command
            && cmd != Command::Swrk
            // `cpuinfo` takes its action word (`dump`, `check`).
            && let Some(extra) = opts
                .command_args
                .get(usize::from(cmd == Command::CpuInfo))
        {
            return Err(OptionsError::Excessive {
                command: cmd.word().to_string(),
                extra: extra.clone(),
            });
        }
        Ok(opts)
    }

    /// The directory criu changes into: `-W`, else the images directory.
    pub fn effective_work_dir(&self) -> PathBuf {
        self.work_dir.as_ref().unwrap_or(&self.images_dir).path()
    }

    /// Sets one option by its criu(8) long name (`tree`, `leave-running`, `no-shell-job`,
    /// `ext-unix-sk`, ...), with its argument as text: the way an RPC request's fields or a
    /// library caller fill the same options the command line does. Prefixes are not accepted
    /// here.
    ///
    /// # Errors
    /// [`OptionsError::Unknown`] for a name criu does not know, [`OptionsError::BadValue`] and
    /// friends as on the command line.
    pub fn set(&mut self, name: &str, value: Option<&str>) -> Result<(), OptionsError> {
        let shown = format!("--{name}");
        let (def, negated) = match table::TABLE.iter().find(|d| d.long == name) {
            Some(d) => (d, false),
            None => match name
                .strip_prefix("no-")
                .and_then(|rest| table::TABLE.iter().find(|d| d.negatable && d.long == rest))
            {
                Some(d) => (d, true),
                None => return Err(OptionsError::Unknown { option: shown }),
            },
        };
        match (def.arg, value) {
            (Arg::No, Some(_)) => {
                return Err(OptionsError::UnexpectedArgument {
                    option: name.to_string(),
                });
            }
            (Arg::Required, None) => return Err(OptionsError::MissingArgument { option: shown }),
            _ => {}
        }
        self.apply_one(def, negated, value, &shown)
    }

    fn apply_one(
        &mut self,
        def: &table::OptDef,
        negated: bool,
        value: Option<&str>,
        shown: &str,
    ) -> Result<(), OptionsError> {
        let name = if negated {
            format!("no-{}", def.long)
        } else {
            def.long.to_string()
        };
        (def.set)(
            self,
            &Given {
                on: !negated,
                value,
                shown,
                name: &name,
            },
        )
    }

    /// Applies one list of arguments (a config file's, or the command line's).
    fn apply(&mut self, args: &[String], positional_ok: bool) -> Result<(), OptionsError> {
        let mut i = 0;
        let mut only_positional = false;
        while i < args.len() {
            let a = &args[i];
            i += 1;
            if only_positional || a == "-" || !a.starts_with('-') {
                if !positional_ok {
                    // getopt stops at the first non-option; CRIU ignores what follows in a file.
                    continue;
                }
                if self.command.is_none() {
                    self.command = Some(
                        Command::from_word(a)
                            .ok_or_else(|| OptionsError::UnknownCommand { command: a.clone() })?,
                    );
                } else {
                    self.command_args.push(a.clone());
                }
                continue;
            }
            if a == "--" {
                only_positional = true;
                continue;
            }
            if let Some(body) = a.strip_prefix("--") {
                let (name, inline) = match body.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_string())),
                    None => (body, None),
                };
                let (spec, negated) = table::find_long(name, a)?;
                let value = match spec.arg {
                    Arg::No => {
                        if inline.is_some() {
                            return Err(OptionsError::UnexpectedArgument {
                                option: spec.long.to_string(),
                            });
                        }
                        None
                    }
                    // In a configuration file `verbosity 4` means level 4: the statement's
                    // value belongs to the option even where getopt would want `=`.
                    Arg::Optional if inline.is_none() && !positional_ok => match args.get(i) {
                        Some(v) if !v.starts_with("--") => {
                            i += 1;
                            Some(v.clone())
                        }
                        _ => None,
                    },
                    Arg::Optional => inline,
                    Arg::Required => match inline {
                        Some(v) => Some(v),
                        None => {
                            let v = args.get(i).cloned().ok_or_else(|| {
                                OptionsError::MissingArgument { option: a.clone() }
                            })?;
                            i += 1;
                            Some(v)
                        }
                    },
                };
                self.apply_one(spec, negated, value.as_deref(), &format!("--{}", spec.long))?;
                continue;
            }
            // A bundle of short options.
            let chars: Vec<char> = a[1..].chars().collect();
            let mut k = 0;
            while k < chars.len() {
                let c = chars[k];
                k += 1;
                let spec = table::find_short(c)?;
                let attached: String = chars[k..].iter().collect();
                let value = match spec.arg {
                    Arg::No => None,
                    Arg::Optional => {
                        k = chars.len();
                        (!attached.is_empty()).then_some(attached)
                    }
                    Arg::Required => {
                        k = chars.len();
                        if attached.is_empty() {
                            let v = args.get(i).cloned().ok_or_else(|| {
                                OptionsError::MissingArgument {
                                    option: format!("-{c}"),
                                }
                            })?;
                            i += 1;
                            Some(v)
                        } else {
                            Some(attached)
                        }
                    }
                };
                self.apply_one(spec, false, value.as_deref(), &format!("-{c}"))?;
            }
        }
        Ok(())
    }
}

/// The usage text `criu --help` prints.
pub const USAGE: &str = "\
Usage:
  criu dump|pre-dump -t PID [<options>]
  criu restore [<options>]
  criu check [--feature FEAT]
  criu cpuinfo dump|check
  criu service [--address PATH] | criu swrk FD

Commands:
  dump           checkpoint a process tree identified by pid
  restore        restore a process tree
  check          checks whether the kernel supports what criu needs
  cpuinfo        dump this CPU's description, or check an image's against it
  service        serve RPC requests on a unix socket
  swrk           serve one RPC client on an inherited socket

Options:
  -t|--tree PID         checkpoint the process tree rooted at PID
  -D|--images-dir DIR   directory for image files (default .)
  -W|--work-dir DIR     directory to cd into and to write logs and pidfiles in
  -o|--log-file FILE    log file name (relative to the work dir)
  -v[v...]|-vNUM|--verbosity=NUM
                        verbosity: 0 messages, 1 errors, 2 warnings (default),
                        3 info, 4 debug
  -R|--leave-running    leave the dumped tasks running
  -s|--leave-stopped    leave the dumped tasks stopped
  -d|--restore-detached detach from the restored tasks
  -j|--shell-job        allow a process attached to the caller's terminal
  --pidfile FILE        write the restored root task's pid to FILE
  --action-script FILE  run FILE at each stage (repeatable)
  --timeout SECONDS     how long freezing may take (default 10)
  --cpu-cap[=CAPS]      restore: with none, leave out saved register state this
                        CPU has no registers for instead of refusing
  --config FILE         read options from FILE (no default config files then)
  --no-default-config   do not read /etc/criu/default.conf and ~/.criu/default.conf
  --feature NAME        with check: check one kernel feature
  --display-stats       print the dump's or restore's statistics at the end
  -h|--help             show this text
  -V|--version          show the version
";

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Options, OptionsError> {
        let mut v = vec!["criu".to_string()];
        v.extend(args.iter().map(|s| s.to_string()));
        Options::parse_with(v, None, None)
    }

    #[test]
    fn dump_basics() {
        let o = p(&["dump", "-t", "12", "-D", "img", "-W", "wd", "-o", "d.log"]).unwrap();
        assert_eq!(o.command, Some(Command::Dump));
        assert_eq!(o.tree, Some(12));
        assert_eq!(o.images_dir, DirRef::Path(PathBuf::from("img")));
        assert_eq!(o.effective_work_dir(), Path::new("wd"));
        assert_eq!(o.log_file, Some(PathBuf::from("d.log")));
        assert_eq!(o.final_state, FinalState::Dead);
        let o = p(&["-t12", "--images-dir=x", "dump"]).unwrap();
        assert_eq!(o.tree, Some(12));
        assert_eq!(o.effective_work_dir(), Path::new("x"));
        assert!(p(&["dump", "-t", "0"]).is_err());
        assert!(p(&["dump", "-t", "abc"]).is_err());
        assert!(p(&["dump", "-t"]).is_err());
    }

    #[test]
    fn verbosity_spellings() {
        assert_eq!(p(&["check"]).unwrap().log_level, 2);
        assert_eq!(p(&["check", "-v"]).unwrap().log_level, 3);
        assert_eq!(p(&["check", "-v4"]).unwrap().log_level, 4);
        assert_eq!(p(&["check", "-vvv"]).unwrap().log_level, 5);
        assert_eq!(p(&["check", "-v", "-v"]).unwrap().log_level, 4);
        assert_eq!(p(&["check", "--verbosity=1"]).unwrap().log_level, 1);
        assert_eq!(p(&["check", "--verbosity"]).unwrap().log_level, 3);
        assert_eq!(p(&["check", "-verbosity=0"]).unwrap().log_level, 0);
        assert_eq!(p(&["check", "-v0"]).unwrap().log_level, 0);
    }

    #[test]
    fn bundles_flags_and_states() {
        let o = p(&["dump", "-Rj", "-t1"]).unwrap();
        assert_eq!(o.final_state, FinalState::Alive);
        assert!(o.shell_job);
        assert_eq!(p(&["dump", "-s"]).unwrap().final_state, FinalState::Stopped);
        let o = p(&["restore", "-d", "--pidfile", "pf"]).unwrap();
        assert!(o.restore_detached);
        assert_eq!(o.pidfile, Some(PathBuf::from("pf")));
        let o = p(&["restore", "--restore-detached", "--no-restore-detached"]).unwrap();
        assert!(!o.restore_detached);
        let o = p(&["dump", "--shell-job", "--tcp-established", "--file-locks"]).unwrap();
        assert!(o.shell_job && o.tcp_established && o.file_locks);
        // Unambiguous prefix, ambiguous prefix, unknown.
        assert_eq!(p(&["dump", "--tre", "5"]).unwrap().tree, Some(5));
        assert!(matches!(
            p(&["dump", "--tcp"]),
            Err(OptionsError::Ambiguous { .. })
        ));
        assert!(matches!(
            p(&["dump", "--bogus"]),
            Err(OptionsError::Unknown { .. })
        ));
        assert!(matches!(
            p(&["dump", "-q"]),
            Err(OptionsError::Unknown { .. })
        ));
        assert!(matches!(
            p(&["frobnicate"]),
            Err(OptionsError::UnknownCommand { .. })
        ));
        assert!(matches!(
            p(&["dump", "extra"]),
            Err(OptionsError::Excessive { .. })
        ));
        assert!(matches!(
            p(&["dump", "--leave-running=1"]),
            Err(OptionsError::UnexpectedArgument { .. })
        ));
    }

    #[test]
    fn repeatable_and_ignored() {
        let o = p(&[
            "dump",
            "--action-script",
            "/a",
            "--action-script=/b",
            "--timeout",
            "30",
            "--manage-cgroups=ignore",
            "--ext-mount-map",
            "auto",
            "--no-evasive-devices",
        ])
        .unwrap();
        assert_eq!(
            o.action_scripts,
            vec![PathBuf::from("/a"), PathBuf::from("/b")]
        );
        assert_eq!(o.timeout, 30);
        assert_eq!(o.manage_cgroups, Some(CgroupMode::Ignore));
        assert!(
            o.ignored
                .contains(&("ext-mount-map".to_string(), Some("auto".to_string())))
        );
        assert!(
            o.ignored
                .contains(&("no-evasive-devices".to_string(), None))
        );
    }

    #[test]
    fn cpu_cap() {
        assert!(p(&["restore"]).unwrap().cpu_cap.fpu());
        assert!(p(&["restore", "--cpu-cap"]).unwrap().cpu_cap.fpu());
        assert!(p(&["restore", "--cpu-cap=fpu,cpu"]).unwrap().cpu_cap.fpu());
        assert!(!p(&["restore", "--cpu-cap=none"]).unwrap().cpu_cap.fpu());
        assert!(!p(&["restore", "--cpu-cap=cpu,ins"]).unwrap().cpu_cap.fpu());
        assert!(p(&["restore", "--cpu-cap=avx"]).is_err());
    }

    #[test]
    fn typed_values_and_set() {
        let o = p(&[
            "restore",
            "--inherit-fd",
            "fd[5]:pipe:[77]",
            "--external",
            "mnt[/data]:vol",
            "-x12,13",
            "--cgroup-root",
            "cpu:/new",
            "--cgroup-yard",
            "/yard",
        ])
        .unwrap();
        assert_eq!(
            o.inherit_fds,
            vec![InheritFd {
                fd: 5,
                key: "pipe:[77]".into()
            }]
        );
        assert_eq!(o.external[0].kind, "mnt");
        assert!(o.ext_unix_sk);
        assert_eq!(o.ext_unix_sk_inodes, vec![12, 13]);
        assert_eq!(o.cgroup_roots[0].controller.as_deref(), Some("cpu"));
        assert_eq!(o.cgroup_yard, Some(PathBuf::from("/yard")));
        assert!(matches!(
            p(&["restore", "--inherit-fd", "5:x"]),
            Err(OptionsError::BadValue { .. })
        ));
        assert!(matches!(
            p(&["restore", "--external", "noshape"]),
            Err(OptionsError::BadValue { .. })
        ));
        assert!(matches!(
            p(&["dump", "--ms"]),
            Err(OptionsError::Deprecated { .. })
        ));
        // The same options filled by name, as an RPC request does.
        let mut o = Options::default();
        o.set("tree", Some("42")).unwrap();
        o.set("leave-running", None).unwrap();
        o.set("shell-job", None).unwrap();
        o.set("no-shell-job", None).unwrap();
        o.set("cpu-cap", Some("none")).unwrap();
        assert_eq!(o.tree, Some(42));
        assert_eq!(o.final_state, FinalState::Alive);
        assert!(!o.shell_job && !o.cpu_cap.fpu());
        assert_eq!(o.set("tre", Some("1")).unwrap_err().errno(), libc::EINVAL);
        assert!(o.set("tree", None).is_err());
        assert!(o.set("leave-running", Some("1")).is_err());
        assert_eq!(o.set("ms", None).unwrap_err().errno(), libc::EOPNOTSUPP);
    }
}
