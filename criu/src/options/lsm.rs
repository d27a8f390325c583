//! `--lsm-profile TYPE:NAME` and `--lsm-mount-context CTX` (RPC `lsm_profile`,
//! `lsm_mount_context`): the security-module label the restored tasks get, and the SELinux
//! `context=` a restored mount gets.
//!
//! This criu saves no LSM labels (its images say `NO_LSM`), so a profile only matters where
//! CRIU would apply one. As CRIU's checks before a dump or restore: `none:...` clears it,
//! a type other than `apparmor`/`selinux` or a value without `:` is refused, and a type the
//! host kernel does not run is refused with CRIU's reason. A profile for the LSM the host does
//! run is refused by name: applying one is not built. `lsm_mount_context` only replaces a
//! `context=` that a restored mount's options carry, and only SELinux gives mounts one: on a
//! host without SELinux it changes nothing (as in CRIU) and is accepted.

use std::path::Path;

/// The LSM options of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LsmOptions {
    /// `--lsm-profile TYPE:NAME` as given.
    pub profile: Option<String>,
    /// `--lsm-mount-context CTX`.
    pub mount_context: Option<String>,
}

/// The security module the host kernel runs, as CRIU tells them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostLsm {
    /// Neither AppArmor nor SELinux.
    None,
    /// AppArmor (its securityfs directory exists).
    AppArmor,
    /// SELinux (selinuxfs is mounted).
    SeLinux,
}

impl HostLsm {
    /// The module of this host: AppArmor when `/sys/kernel/security/apparmor` exists, SELinux
    /// when `/sys/fs/selinux/enforce` does, else none (the order CRIU probes them in).
    pub fn probe() -> HostLsm {
        if Path::new("/sys/kernel/security/apparmor").exists() {
            HostLsm::AppArmor
        } else if Path::new("/sys/fs/selinux/enforce").exists() {
            HostLsm::SeLinux
        } else {
            HostLsm::None
        }
    }
}

/// A `--lsm-profile` a dump or restore cannot honour.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LsmError {
    /// No `TYPE:` prefix.
    #[error("invalid argument {0} for --lsm-profile")]
    NoType(String),
    /// A type other than `apparmor`, `selinux`, `none`.
    #[error("unknown lsm {0}")]
    Unknown(String),
    /// A module the host kernel does not run (CRIU's words).
    #[error("{0} LSM specified but {0} not supported by kernel")]
    NotOnHost(&'static str),
    /// A profile for the module the host runs: this criu does not apply labels.
    #[error(
        "--lsm-profile {0}: applying LSM profiles to restored tasks is not supported by this criu"
    )]
    NotBuilt(String),
}

impl LsmError {
    /// The errno an RPC client reads: `EOPNOTSUPP` for what is not built, else `EINVAL`.
    pub fn errno(&self) -> i32 {
        match self {
            LsmError::NotBuilt(_) => libc::EOPNOTSUPP,
            _ => libc::EINVAL,
        }
    }
}

impl LsmOptions {
    /// CRIU's check of `--lsm-profile` before a dump, pre-dump or restore, on a host running
    /// `host`.
    ///
    /// # Errors
    /// [`LsmError`] as the module docs say.
    pub fn check(&self, host: HostLsm) -> Result<(), LsmError> {
        let Some(p) = &self.profile else {
            return Ok(());
        };
        let Some((kind, _name)) = p.split_once(':') else {
            return Err(LsmError::NoType(p.clone()));
        };
        let (name, wanted) = match kind {
            "none" => return Ok(()),
            "apparmor" => ("apparmor", HostLsm::AppArmor),
            "selinux" => ("selinux", HostLsm::SeLinux),
            _ => return Err(LsmError::Unknown(kind.to_string())),
        };
        if host != wanted {
            return Err(LsmError::NotOnHost(name));
        }
        Err(LsmError::NotBuilt(p.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(p: &str, host: HostLsm) -> Result<(), LsmError> {
        LsmOptions {
            profile: Some(p.into()),
            mount_context: None,
        }
        .check(host)
    }

    #[test]
    fn profiles_are_checked_as_criu_checks_them() {
        assert_eq!(LsmOptions::default().check(HostLsm::None), Ok(()));
        assert_eq!(check("none:", HostLsm::None), Ok(()));
        assert_eq!(check("none:x", HostLsm::AppArmor), Ok(()));
        assert_eq!(
            check("apparmor", HostLsm::None),
            Err(LsmError::NoType("apparmor".into()))
        );
        assert_eq!(
            check("smack:x", HostLsm::None),
            Err(LsmError::Unknown("smack".into()))
        );
        let e = check("apparmor:p", HostLsm::None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "apparmor LSM specified but apparmor not supported by kernel"
        );
        assert_eq!(e.errno(), libc::EINVAL);
        assert_eq!(
            check("selinux:c", HostLsm::AppArmor),
            Err(LsmError::NotOnHost("selinux"))
        );
        let e = check("selinux:c", HostLsm::SeLinux).unwrap_err();
        assert_eq!(e.errno(), libc::EOPNOTSUPP);
    }
}
