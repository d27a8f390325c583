//! Filling [`Options`] from the command line and the configuration files, one option at a
//! time through the option table.

use std::path::PathBuf;

use super::config::{default_config_files, read_config};
use super::table::{Arg, Given};
use super::*;

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
        if opts.exec_cmd_given {
            // As criu(8): `criu restore --exec-cmd -- CMD ARGS...`, not detached.
            if opts.command != Some(Command::Restore) {
                return Err(OptionsError::ExecCmd {
                    why: "is available for the restore command only",
                });
            }
            if opts.command_args.is_empty() {
                return Err(OptionsError::ExecCmd {
                    why: "requires a command (after --)",
                });
            }
            if opts.restore_detached {
                return Err(OptionsError::ExecCmd {
                    why: "and --restore-detached cannot be used together",
                });
            }
            opts.exec_cmd = std::mem::take(&mut opts.command_args);
        }
        if matches!(
            opts.command,
            Some(Command::Dump | Command::PreDump | Command::Restore)
        ) {
            opts.lsm.check(super::lsm::HostLsm::probe())?;
        }
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
    pub(super) fn apply(
        &mut self,
        args: &[String],
        positional_ok: bool,
    ) -> Result<(), OptionsError> {
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
