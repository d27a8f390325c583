//! Typed option values: what the command line spells as text and an RPC request carries as
//! fields, parsed once into the form the engine uses.

use std::fmt;
use std::path::PathBuf;

/// A directory given by path (`-D DIR`) or by a descriptor criu holds (RPC's `images_dir_fd`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirRef {
    /// A path, relative to criu's working directory at start.
    Path(PathBuf),
    /// An open descriptor of the directory.
    Fd(i32),
}

impl Default for DirRef {
    fn default() -> Self {
        DirRef::Path(PathBuf::from("."))
    }
}

impl DirRef {
    /// A path that names the directory: the path itself, or `/proc/self/fd/N` for a descriptor.
    pub fn path(&self) -> PathBuf {
        match self {
            DirRef::Path(p) => p.clone(),
            DirRef::Fd(fd) => PathBuf::from(format!("/proc/self/fd/{fd}")),
        }
    }
}

impl fmt::Display for DirRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DirRef::Path(p) => write!(f, "{}", p.display()),
            DirRef::Fd(fd) => write!(f, "descriptor {fd}"),
        }
    }
}

/// `--inherit-fd fd[N]:KEY`: the restored tree takes descriptor `N` of criu for the resource
/// the images call `KEY` (a pipe `pipe:[INODE]`, a file path, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InheritFd {
    /// criu's descriptor.
    pub fd: i32,
    /// The resource it stands for.
    pub key: String,
}

impl InheritFd {
    /// Parses `fd[N]:KEY` (`N` a non-negative number, `KEY` not empty); `None` otherwise.
    pub fn parse(s: &str) -> Option<InheritFd> {
        let rest = s.strip_prefix("fd[")?;
        let (num, key) = rest.split_once("]:")?;
        let fd: i32 = num.parse().ok()?;
        if fd < 0 || key.is_empty() {
            return None;
        }
        Some(InheritFd {
            fd,
            key: key.to_string(),
        })
    }
}

/// `--external KIND[ID]:VALUE` (or `KIND[ID]`): a resource outside the dumped tree that the
/// user vouches for (`mnt[/path]:name`, `dev[MAJ/MIN]:name`, `veth[if]:out@br`, `tty[rdev:dev]`,
/// `unix[ino]`, `file[mnt:ino]`, `net[ino]:key`, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct External {
    /// The word before `[`: `mnt`, `dev`, `veth`, `macvlan`, `tty`, `unix`, `file`, `net`, ...
    pub kind: String,
    /// What is inside the brackets.
    pub id: String,
    /// What follows `]:`, if anything.
    pub value: Option<String>,
}

impl External {
    /// `--ext-mount-map KEY:VALUE` (`mnt[KEY]:VALUE`) or `--ext-mount-map auto` (`mnt[]`).
    pub fn ext_mount_map(s: &str) -> Option<External> {
        if s == "auto" {
            return Some(External {
                kind: "mnt".into(),
                id: String::new(),
                value: None,
            });
        }
        let (k, v) = s.split_once(':')?;
        Some(External {
            kind: "mnt".into(),
            id: k.to_string(),
            value: Some(v.to_string()),
        })
    }

    /// `mnt[]:FLAGS`: `m` (external masters), `s` (external sharing); `-m` and `-s` are
    /// `--enable-external-masters` and `--enable-external-sharing` (the flag without `mnt[]`'s
    /// auto-detection).
    pub fn auto_mnt_flags(flags: &str) -> External {
        External {
            kind: "mnt".into(),
            id: String::new(),
            value: Some(flags.to_string()),
        }
    }

    /// Parses `KIND[ID]` or `KIND[ID]:VALUE` (`KIND` a non-empty word); `None` otherwise.
    pub fn parse(s: &str) -> Option<External> {
        let (kind, rest) = s.split_once('[')?;
        if kind.is_empty() || !kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return None;
        }
        let close = rest.rfind(']')?;
        let id = &rest[..close];
        let value = match &rest[close + 1..] {
            "" => None,
            t => Some(t.strip_prefix(':')?.to_string()),
        };
        Some(External {
            kind: kind.to_string(),
            id: id.to_string(),
            value,
        })
    }
}

/// `--cpu-cap`: which CPU compatibility checks restore makes, CRIU's bit mask (RPC's
/// `cpu_cap`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuCap(pub u32);

impl CpuCap {
    /// No check at all.
    pub const NONE: u32 = 0;
    /// The saved FPU state must fit this CPU.
    pub const FPU: u32 = 1;
    /// The CPU must be the same model (strict).
    pub const CPU: u32 = 1 << 1;
    /// The instruction sets must match.
    pub const INS: u32 = 1 << 2;
    /// Write the CPU image on dump, read it on restore.
    pub const IMAGE: u32 = 1 << 3;
    /// `all`.
    pub const ALL: u32 = Self::FPU | Self::CPU | Self::INS;
    /// Without `--cpu-cap`.
    pub const DEFAULT: u32 = Self::FPU | Self::INS;

    /// Parses a `--cpu-cap` argument: a comma list of `all`, `fpu`, `cpu`, `ins`, `none`, each
    /// item optionally preceded by `^` to take it away; bare `--cpu-cap` (`None`) is `all`. A
    /// list replaces the default. `None` for a word outside that set.
    pub fn parse(arg: Option<&str>) -> Option<CpuCap> {
        let Some(arg) = arg else {
            return Some(CpuCap(Self::ALL | Self::IMAGE));
        };
        let mut cap = 0u32;
        for item in arg.split(',').map(str::trim) {
            let (inverse, word) = match item.strip_prefix('^') {
                Some(w) => (true, w),
                None => (false, item),
            };
            let bits = match word {
                "all" => Self::ALL,
                "fpu" => Self::FPU,
                "cpu" => Self::CPU,
                "ins" => Self::INS,
                "none" => {
                    cap = if inverse { Self::ALL } else { Self::NONE };
                    continue;
                }
                _ => return None,
            };
            if inverse {
                cap &= !bits;
            } else {
                cap |= bits;
            }
        }
        if cap != Self::NONE {
            cap |= Self::IMAGE;
        }
        Some(CpuCap(cap))
    }

    /// Whether the saved FPU state is checked against this CPU.
    pub fn fpu(self) -> bool {
        self.0 & Self::FPU != 0
    }
}

impl Default for CpuCap {
    fn default() -> Self {
        CpuCap(Self::DEFAULT)
    }
}

/// `--cgroup-props`, `--cgroup-props-file`, `--cgroup-dump-controller`: which cgroup properties
/// a dump saves (CRIU's built-in lists, changed by the given descriptions) and for which
/// controllers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupPropsOpts {
    /// `--cgroup-props STRING`: a description of controller properties.
    pub inline: Option<String>,
    /// `--cgroup-props-file FILE`: the same, read from a file.
    pub file: Option<PathBuf>,
    /// `--cgroup-dump-controller NAME`, repeatable: only these controllers' directories and
    /// properties are saved (all when empty).
    pub dump_controllers: Vec<String>,
}

/// `--manage-cgroups[=MODE]`: how restore treats the tree's cgroups (CRIU's modes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupMode {
    /// `ignore`: leave cgroups alone.
    Ignore,
    /// `none`.
    None,
    /// `props`: restore properties only.
    Props,
    /// `soft` (bare `--manage-cgroups`).
    Soft,
    /// `full`.
    Full,
    /// `strict`.
    Strict,
}

impl CgroupMode {
    /// The mode word.
    pub fn word(self) -> &'static str {
        match self {
            CgroupMode::Ignore => "ignore",
            CgroupMode::None => "none",
            CgroupMode::Props => "props",
            CgroupMode::Soft => "soft",
            CgroupMode::Full => "full",
            CgroupMode::Strict => "strict",
        }
    }

    /// Parses a mode word; bare `--manage-cgroups` (`None`) is `soft`.
    pub fn parse(arg: Option<&str>) -> Option<CgroupMode> {
        Some(match arg {
            None | Some("soft") => CgroupMode::Soft,
            Some("ignore") => CgroupMode::Ignore,
            Some("none") => CgroupMode::None,
            Some("props") => CgroupMode::Props,
            Some("full") => CgroupMode::Full,
            Some("strict") => CgroupMode::Strict,
            Some(_) => return None,
        })
    }
}

/// `--cgroup-root [CONTROLLER:]/PATH`: where restored cgroups go (for one controller or all).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupRoot {
    /// The controller, or `None` for every controller.
    pub controller: Option<String>,
    /// The new root.
    pub path: PathBuf,
}

impl CgroupRoot {
    /// Parses `[CONTROLLER:]PATH`.
    pub fn parse(s: &str) -> CgroupRoot {
        match s.split_once(':') {
            Some((c, p)) => CgroupRoot {
                controller: Some(c.to_string()),
                path: PathBuf::from(p),
            },
            None => CgroupRoot {
                controller: None,
                path: PathBuf::from(s),
            },
        }
    }
}

/// `-x/--ext-unix-sk[=INO,INO...]` parsed: the inode list (empty means "any external unix
/// socket"). `None` when an inode is not a positive number.
pub fn parse_inodes(s: &str) -> Option<Vec<u64>> {
    s.split(',')
        .filter(|w| !w.is_empty())
        .map(|w| w.trim().parse::<u64>().ok().filter(|&n| n > 0))
        .collect()
}

/// How the network is locked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NetLockMethod {
    /// iptables rules (criu(8)'s default).
    #[default]
    Iptables,
    /// An nftables table.
    Nftables,
    /// No rules, only the action scripts.
    Skip,
}

impl NetLockMethod {
    /// `iptables`, `nftables` or `skip`.
    pub fn parse(s: &str) -> Option<NetLockMethod> {
        match s {
            "iptables" => Some(NetLockMethod::Iptables),
            "nftables" => Some(NetLockMethod::Nftables),
            "skip" => Some(NetLockMethod::Skip),
            _ => None,
        }
    }

    /// The RPC enum's value (`IPTABLES = 1`, `NFTABLES = 2`, `SKIP = 3`).
    pub fn from_rpc(v: i32) -> Option<NetLockMethod> {
        match v {
            1 => Some(NetLockMethod::Iptables),
            2 => Some(NetLockMethod::Nftables),
            3 => Some(NetLockMethod::Skip),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inherit_fd() {
        assert_eq!(
            InheritFd::parse("fd[3]:pipe:[1234]"),
            Some(InheritFd {
                fd: 3,
                key: "pipe:[1234]".into()
            })
        );
        assert_eq!(InheritFd::parse("fd[3]:"), None);
        assert_eq!(InheritFd::parse("fd[-1]:x"), None);
        assert_eq!(InheritFd::parse("3:x"), None);
    }

    #[test]
    fn external() {
        let e = External::parse("mnt[/data]:vol").unwrap();
        assert_eq!((e.kind.as_str(), e.id.as_str()), ("mnt", "/data"));
        assert_eq!(e.value.as_deref(), Some("vol"));
        let e = External::parse("tty[8800:3]").unwrap();
        assert_eq!((e.id.as_str(), e.value), ("8800:3", None));
        assert_eq!(External::parse("unix[5]x"), None);
        assert_eq!(External::parse("plain"), None);
        assert_eq!(External::parse("[x]:y"), None);
    }

    #[test]
    fn cpu_cap_and_inodes() {
        assert_eq!(CpuCap::parse(Some("none")), Some(CpuCap(0)));
        assert_eq!(
            CpuCap::parse(Some("fpu")),
            Some(CpuCap(CpuCap::FPU | CpuCap::IMAGE))
        );
        assert_eq!(
            CpuCap::parse(Some("all,^cpu")),
            Some(CpuCap(CpuCap::FPU | CpuCap::INS | CpuCap::IMAGE))
        );
        assert_eq!(CpuCap::parse(Some("avx")), None);
        assert!(CpuCap::default().fpu());
        assert_eq!(parse_inodes("12,34"), Some(vec![12, 34]));
        assert_eq!(parse_inodes("12,x"), None);
        assert_eq!(parse_inodes("0"), None);
    }
}
