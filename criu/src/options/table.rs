//! The option table: every option criu(8) knows, each with the setter that stores it.
//!
//! One row per option, so an option cannot be listed and then dropped: a row's setter either
//! fills a typed field of [`Options`], records the option in [`Options::ignored`] (accepted for
//! compatibility, changes nothing here, logged), or refuses it with a typed error. The command
//! line, configuration files and [`Options::set`] (an RPC request's fields) all go through
//! these rows.

use std::path::PathBuf;

use super::values::{CgroupMode, CgroupRoot, CpuCap, DirRef, External, InheritFd, parse_inodes};
use super::{FinalState, Options, OptionsError};

/// Whether an option takes an argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arg {
    /// A flag.
    No,
    /// Always an argument.
    Required,
    /// An optional argument (`--opt=value`, `-oVALUE`).
    Optional,
}

/// One use of an option, as the setter sees it.
pub(crate) struct Given<'a> {
    /// `false` for the `no-NAME` form of a boolean.
    pub on: bool,
    /// The argument.
    pub value: Option<&'a str>,
    /// The option as the user wrote it (`-t`, `--tree`), for errors.
    pub shown: &'a str,
    /// The name as criu(8) spells it, `no-NAME` for a negated boolean.
    pub name: &'a str,
}

impl Given<'_> {
    fn bad(&self) -> OptionsError {
        OptionsError::BadValue {
            option: self.shown.to_string(),
            value: self.value.unwrap_or_default().to_string(),
        }
    }

    /// The argument of an option whose row says `Required` (the parser guarantees one).
    fn arg(&self) -> Result<&str, OptionsError> {
        self.value.ok_or_else(|| OptionsError::MissingArgument {
            option: self.shown.to_string(),
        })
    }

    fn path(&self) -> Result<PathBuf, OptionsError> {
        self.arg().map(PathBuf::from)
    }
}

type Setter = fn(&mut Options, &Given<'_>) -> Result<(), OptionsError>;

/// One row: the long name, the short letter, the argument, whether a `no-NAME` form exists,
/// and the setter.
pub(crate) struct OptDef {
    pub long: &'static str,
    pub short: Option<char>,
    pub arg: Arg,
    pub negatable: bool,
    pub set: Setter,
}

const fn o(long: &'static str, short: Option<char>, arg: Arg, set: Setter) -> OptDef {
    OptDef {
        long,
        short,
        arg,
        negatable: false,
        set,
    }
}

/// A boolean with a `no-NAME` form.
const fn b(long: &'static str, short: Option<char>, set: Setter) -> OptDef {
    OptDef {
        long,
        short,
        arg: Arg::No,
        negatable: true,
        set,
    }
}

/// Accepted for compatibility: recorded in [`Options::ignored`] and logged.
fn accepted(o: &mut Options, g: &Given<'_>) -> Result<(), OptionsError> {
    o.ignored
        .push((g.name.to_string(), g.value.map(str::to_string)));
    Ok(())
}

/// `atoi`: the leading decimal digits (with an optional sign), 0 if none.
pub(crate) fn atoi(s: &str) -> i64 {
    let t = s.trim_start();
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let n: i64 = digits
        .bytes()
        .take_while(u8::is_ascii_digit)
        .fold(0i64, |a, d| {
            a.saturating_mul(10).saturating_add(i64::from(d - b'0'))
        });
    if neg { -n } else { n }
}

/// CRIU's size syntax: a number with an optional K, M or G suffix.
fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim();
    let (num, mul) = match t.chars().last()? {
        'K' | 'k' => (&t[..t.len() - 1], 1u64 << 10),
        'M' | 'm' => (&t[..t.len() - 1], 1 << 20),
        'G' | 'g' => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mul)
}

/// The option table: the options CRIU 4.x knows, so that everything real tools pass parses.
pub(crate) static TABLE: &[OptDef] = &[
    o("tree", Some('t'), Arg::Required, |o, g| {
        let pid = atoi(g.arg()?);
        if pid <= 0 || pid > i64::from(i32::MAX) {
            return Err(g.bad());
        }
        o.tree = Some(pid as i32);
        Ok(())
    }),
    o("leave-stopped", Some('s'), Arg::No, |o, _| {
        o.final_state = FinalState::Stopped;
        Ok(())
    }),
    o("leave-running", Some('R'), Arg::No, |o, _| {
        o.final_state = FinalState::Alive;
        Ok(())
    }),
    b("restore-detached", Some('d'), |o, g| {
        o.restore_detached = g.on;
        Ok(())
    }),
    b("restore-sibling", Some('S'), |o, g| {
        o.restore_sibling = g.on;
        Ok(())
    }),
    b("daemon", None, |o, g| {
        o.restore_detached = g.on;
        Ok(())
    }),
    o("images-dir", Some('D'), Arg::Required, |o, g| {
        o.images_dir = DirRef::Path(g.path()?);
        Ok(())
    }),
    o("work-dir", Some('W'), Arg::Required, |o, g| {
        o.work_dir = Some(DirRef::Path(g.path()?));
        Ok(())
    }),
    o("log-file", Some('o'), Arg::Required, |o, g| {
        o.log_file = Some(g.path()?);
        Ok(())
    }),
    o("join-ns", Some('J'), Arg::Required, |o, g| {
        o.join_ns.push(g.arg()?.to_string());
        Ok(())
    }),
    o("root", Some('r'), Arg::Required, |o, g| {
        o.root = Some(g.path()?);
        Ok(())
    }),
    o("ext-unix-sk", Some('x'), Arg::Optional, |o, g| {
        if let Some(v) = g.value {
            let inodes = parse_inodes(v).ok_or_else(|| g.bad())?;
            o.ext_unix_sk_inodes.extend(inodes);
        }
        o.ext_unix_sk = true;
        Ok(())
    }),
    o("help", Some('h'), Arg::No, |o, _| {
        o.help = true;
        Ok(())
    }),
    b("tcp-established", None, |o, g| {
        o.tcp_established = g.on;
        Ok(())
    }),
    o("close", None, Arg::Required, accepted),
    b("log-pid", None, accepted),
    o("version", Some('V'), Arg::No, |o, _| {
        o.version = true;
        Ok(())
    }),
    b("evasive-devices", None, accepted),
    o("pidfile", None, Arg::Required, |o, g| {
        o.pidfile = Some(g.path()?);
        Ok(())
    }),
    o("veth-pair", None, Arg::Required, accepted),
    o("action-script", None, Arg::Required, |o, g| {
        o.action_scripts.push(g.path()?);
        Ok(())
    }),
    b("link-remap", None, |o, g| {
        o.link_remap = g.on;
        Ok(())
    }),
    b("shell-job", Some('j'), |o, g| {
        o.shell_job = g.on;
        Ok(())
    }),
    b("orphan-pts-master", None, |o, g| {
        o.orphan_pts_master = g.on;
        Ok(())
    }),
    b("file-locks", Some('l'), |o, g| {
        o.file_locks = g.on;
        Ok(())
    }),
    b("page-server", None, |o, g| {
        o.live.page_server = g.on;
        Ok(())
    }),
    o("address", None, Arg::Required, |o, g| {
        o.live.address = Some(g.arg()?.to_string());
        Ok(())
    }),
    o("port", None, Arg::Required, |o, g| {
        o.live.port = Some(g.arg()?.trim().parse().map_err(|_| g.bad())?);
        Ok(())
    }),
    o("prev-images-dir", None, Arg::Required, |o, g| {
        o.prev_images_dir = Some(g.path()?);
        Ok(())
    }),
    o("ms", None, Arg::No, |_, g| {
        Err(OptionsError::Deprecated {
            option: g.shown.to_string(),
        })
    }),
    b("track-mem", None, |o, g| {
        o.track_mem = g.on;
        Ok(())
    }),
    b("auto-dedup", None, |o, g| {
        o.live.auto_dedup = g.on;
        Ok(())
    }),
    o("libdir", Some('L'), Arg::Required, accepted),
    o("cpu-cap", None, Arg::Optional, |o, g| {
        o.cpu_cap = CpuCap::parse(g.value).ok_or_else(|| g.bad())?;
        Ok(())
    }),
    b("force-irmap", None, accepted),
    // CRIU's older spellings of `--external mnt[KEY]:VALUE` and `--external mnt[]` (auto).
    o("ext-mount-map", Some('M'), Arg::Required, |o, g| {
        o.external
            .push(External::ext_mount_map(g.arg()?).ok_or_else(|| g.bad())?);
        Ok(())
    }),
    o("exec-cmd", None, Arg::No, |o, _| {
        o.exec_cmd_given = true;
        Ok(())
    }),
    o("manage-cgroups", None, Arg::Optional, |o, g| {
        o.manage_cgroups = Some(CgroupMode::parse(g.value).ok_or_else(|| g.bad())?);
        Ok(())
    }),
    o("cgroup-root", None, Arg::Required, |o, g| {
        o.cgroup_roots.push(CgroupRoot::parse(g.arg()?));
        Ok(())
    }),
    o("inherit-fd", None, Arg::Required, |o, g| {
        o.inherit_fds
            .push(InheritFd::parse(g.arg()?).ok_or_else(|| g.bad())?);
        Ok(())
    }),
    o("feature", None, Arg::Required, |o, g| {
        o.feature = Some(g.arg()?.to_string());
        Ok(())
    }),
    o("skip-mnt", None, Arg::Required, accepted),
    o("enable-fs", None, Arg::Required, accepted),
    o("enable-external-sharing", None, Arg::No, |o, _| {
        o.external.push(External::auto_mnt_flags("-s"));
        Ok(())
    }),
    o("enable-external-masters", None, Arg::No, |o, _| {
        o.external.push(External::auto_mnt_flags("-m"));
        Ok(())
    }),
    o("freeze-cgroup", None, Arg::Required, |o, g| {
        o.freeze_cgroup = Some(g.path()?);
        Ok(())
    }),
    o("ghost-limit", None, Arg::Required, |o, g| {
        o.ghost_limit = parse_size(g.arg()?).ok_or_else(|| g.bad())?;
        Ok(())
    }),
    o("irmap-scan-path", None, Arg::Required, accepted),
    o("lsm-profile", None, Arg::Required, |o, g| {
        o.lsm.profile = Some(g.arg()?.to_string());
        Ok(())
    }),
    o("timeout", None, Arg::Required, |o, g| {
        o.timeout = u32::try_from(atoi(g.arg()?)).map_err(|_| g.bad())?;
        Ok(())
    }),
    o("external", None, Arg::Required, |o, g| {
        o.external
            .push(External::parse(g.arg()?).ok_or_else(|| g.bad())?);
        Ok(())
    }),
    o("empty-ns", None, Arg::Required, |o, g| {
        // Only the network namespace can be made empty (as CRIU).
        match g.value {
            Some("net") => o.empty_ns |= libc::CLONE_NEWNET as u32,
            _ => return Err(g.bad()),
        }
        Ok(())
    }),
    o("lazy-pages", None, Arg::No, |o, _| {
        o.live.lazy_pages = true;
        Ok(())
    }),
    b("extra", None, |o, g| {
        o.check_extra = g.on;
        Ok(())
    }),
    b("experimental", None, accepted),
    o("all", None, Arg::No, |o, _| {
        o.check_extra = true;
        Ok(())
    }),
    o("cgroup-props", None, Arg::Required, |o, g| {
        o.cgroup_props.inline = Some(g.arg()?.to_string());
        Ok(())
    }),
    o("cgroup-props-file", None, Arg::Required, |o, g| {
        o.cgroup_props.file = Some(g.path()?);
        Ok(())
    }),
    o("cgroup-dump-controller", None, Arg::Required, |o, g| {
        o.cgroup_props.dump_controllers.push(g.arg()?.to_string());
        Ok(())
    }),
    b("skip-in-flight", None, |o, g| {
        o.skip_in_flight = g.on;
        Ok(())
    }),
    b("deprecated", None, accepted),
    b("display-stats", None, |o, g| {
        o.display_stats = g.on;
        Ok(())
    }),
    b("weak-sysctls", None, accepted),
    o("status-fd", None, Arg::Required, |o, g| {
        o.status_fd = Some(g.arg()?.trim().parse().map_err(|_| g.bad())?);
        Ok(())
    }),
    b("tcp-close", None, |o, g| {
        o.tcp_close = g.on;
        Ok(())
    }),
    o("verbosity", Some('v'), Arg::Optional, |o, g| {
        match g.value {
            // -vvvv: one for the -v itself and one per further v.
            Some(v) if v.starts_with('v') => o.log_level += v.len() as i32 + 1,
            Some(v) => o.log_level = atoi(v).clamp(0, 100) as i32,
            None => o.log_level += 1,
        }
        Ok(())
    }),
    o("ps-socket", None, Arg::Required, accepted),
    b("stream", None, accepted),
    // Both decide which files are read before parsing; recorded here for the record.
    o("config", None, Arg::Required, |o, g| {
        o.config_file = Some(g.path()?);
        o.no_default_config = true;
        Ok(())
    }),
    o("no-default-config", None, Arg::No, |o, _| {
        o.no_default_config = true;
        Ok(())
    }),
    o("tls-cacert", None, Arg::Required, |o, g| {
        o.live.tls.cacert = Some(g.path()?);
        Ok(())
    }),
    o("tls-cacrl", None, Arg::Required, |o, g| {
        o.live.tls.cacrl = Some(g.path()?);
        Ok(())
    }),
    o("tls-cert", None, Arg::Required, |o, g| {
        o.live.tls.cert = Some(g.path()?);
        Ok(())
    }),
    o("tls-key", None, Arg::Required, |o, g| {
        o.live.tls.key = Some(g.path()?);
        Ok(())
    }),
    b("tls", None, |o, g| {
        o.live.tls.enabled = g.on;
        Ok(())
    }),
    o("tls-no-cn-verify", None, Arg::No, |o, _| {
        o.live.tls.no_cn_verify = true;
        Ok(())
    }),
    o("cgroup-yard", None, Arg::Required, |o, g| {
        o.cgroup_yard = Some(g.path()?);
        Ok(())
    }),
    o("pre-dump-mode", None, Arg::Required, |o, g| {
        o.live.pre_dump_mode = super::PreDumpMode::parse(g.arg()?).ok_or_else(|| g.bad())?;
        Ok(())
    }),
    o("file-validation", None, Arg::Required, accepted),
    b("skip-file-rwx-check", None, accepted),
    o("lsm-mount-context", None, Arg::Required, |o, g| {
        o.lsm.mount_context = Some(g.arg()?.to_string());
        Ok(())
    }),
    o("network-lock", None, Arg::Required, |o, g| {
        o.network_lock =
            crate::options::values::NetLockMethod::parse(g.arg()?).ok_or_else(|| g.bad())?;
        Ok(())
    }),
    b("mntns-compat-mode", None, accepted),
    b("unprivileged", None, |o, g| {
        o.unprivileged = g.on;
        Ok(())
    }),
    b("ghost-fiemap", None, accepted),
    b("allow-uprobes", None, accepted),
];

/// The row of a long name: exact names (and `no-NAME` of booleans) first, then an unambiguous
/// prefix, as `getopt_long` does. Returns the row and whether the `no-` form was used.
pub(crate) fn find_long(name: &str, shown: &str) -> Result<(&'static OptDef, bool), OptionsError> {
    if let Some(d) = TABLE.iter().find(|d| d.long == name) {
        return Ok((d, false));
    }
    if let Some(rest) = name.strip_prefix("no-")
        && let Some(d) = TABLE.iter().find(|d| d.negatable && d.long == rest)
    {
        return Ok((d, true));
    }
    let mut found: Vec<(&'static OptDef, bool)> = TABLE
        .iter()
        .filter(|d| d.long.starts_with(name))
        .map(|d| (d, false))
        .collect();
    if let Some(rest) = name.strip_prefix("no-") {
        found.extend(
            TABLE
                .iter()
                .filter(|d| d.negatable && d.long.starts_with(rest))
                .map(|d| (d, true)),
        );
    }
    match found.len() {
        0 => Err(OptionsError::Unknown {
            option: shown.to_string(),
        }),
        1 => Ok(found[0]),
        _ => Err(OptionsError::Ambiguous {
            option: shown.to_string(),
        }),
    }
}

/// The row of a short letter.
pub(crate) fn find_short(c: char) -> Result<&'static OptDef, OptionsError> {
    TABLE
        .iter()
        .find(|d| d.short == Some(c))
        .ok_or_else(|| OptionsError::Unknown {
            option: format!("-{c}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row does something observable: it changes the options (a typed field or the list
    /// of accepted-and-ignored options) or refuses with a typed error. No row can be listed and
    /// silently dropped.
    #[test]
    fn every_row_has_an_effect() {
        const SAMPLES: &[&str] = &[
            "7",
            "fd[3]:pipe:[1]",
            "mnt[/x]:y",
            "/some/path",
            "soft",
            "all",
            "net",
            "read",
            "nftables",
        ];
        let mut names = std::collections::HashSet::new();
        for d in TABLE {
            assert!(names.insert(d.long), "--{} listed twice", d.long);
            if let Some(c) = d.short {
                assert_eq!(
                    TABLE.iter().filter(|e| e.short == Some(c)).count(),
                    1,
                    "-{c} listed twice"
                );
            }
            let shown = format!("--{}", d.long);
            let values: Vec<Option<&str>> = match d.arg {
                Arg::No => vec![None],
                Arg::Optional => vec![None],
                Arg::Required => SAMPLES.iter().copied().map(Some).collect(),
            };
            let mut effect = false;
            for value in values {
                let mut opts = Options::default();
                let given = Given {
                    on: true,
                    value,
                    shown: &shown,
                    name: d.long,
                };
                match (d.set)(&mut opts, &given) {
                    Ok(()) => {
                        if opts != Options::default() {
                            effect = true;
                            break;
                        }
                    }
                    Err(OptionsError::Deprecated { .. }) => {
                        effect = true;
                        break;
                    }
                    Err(_) => {}
                }
            }
            assert!(effect, "--{} is listed but changes nothing", d.long);
        }
    }

    #[test]
    fn negated_booleans_clear() {
        for d in TABLE.iter().filter(|d| d.negatable) {
            let mut opts = Options::default();
            let name = format!("no-{}", d.long);
            let given = Given {
                on: false,
                value: None,
                shown: &name,
                name: &name,
            };
            (d.set)(&mut opts, &given).unwrap();
            let on = Given {
                on: true,
                value: None,
                shown: &name,
                name: d.long,
            };
            let mut set = Options::default();
            (d.set)(&mut set, &on).unwrap();
            assert!(
                opts != set || !opts.ignored.is_empty(),
                "--no-{} is the same as --{}",
                d.long,
                d.long
            );
        }
    }
}
