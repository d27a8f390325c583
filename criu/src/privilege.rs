//! Who may run a dump or a restore (criu(8)'s `--unprivileged`): criu needs
//! `CAP_CHECKPOINT_RESTORE` (or `CAP_SYS_ADMIN`) in its effective set; as root nothing else is
//! asked; a non-root criu must be told `--unprivileged` and then accepts its limits (its own
//! processes only, no cgroup management). Anything it then cannot do is refused by the code
//! that meets it, naming what was refused.
//!
//! ```no_run
//! criu::check_privilege(true).expect("criu needs CAP_CHECKPOINT_RESTORE");
//! ```

#![allow(unsafe_code)]

const CAP_SYS_ADMIN: u32 = 21;
const CAP_CHECKPOINT_RESTORE: u32 = 40;

/// Why this criu may not dump or restore.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// Neither capability is effective.
    #[error(
        "criu needs the CAP_CHECKPOINT_RESTORE (or CAP_SYS_ADMIN) capability: \
         setcap cap_checkpoint_restore+eip on the binary, or run it with that ambient capability"
    )]
    NoCapability,
    /// Not root and not told `--unprivileged`.
    #[error("running as non-root (uid {uid}) requires --unprivileged")]
    NeedsUnprivileged {
        /// The effective uid.
        uid: u32,
    },
    /// `/proc/self/status` or `prctl` failed.
    #[error("checking criu's own capabilities: {0}")]
    Io(#[source] std::io::Error),
}

fn cap_eff() -> Result<u64, PrivilegeError> {
    compel::proc::self_effective_caps().ok_or_else(|| {
        PrivilegeError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "no CapEff in /proc/self/status",
        ))
    })
}

/// Checks criu may dump or restore (see the module); a non-root criu with `unprivileged` is made
/// dumpable again (file capabilities clear it), so that its `/proc/self` is its own.
///
/// # Errors
/// [`PrivilegeError::NoCapability`], [`PrivilegeError::NeedsUnprivileged`].
pub fn check_privilege(unprivileged: bool) -> Result<(), PrivilegeError> {
    let eff = cap_eff()?;
    let has = |c: u32| eff & (1u64 << c) != 0;
    if !has(CAP_CHECKPOINT_RESTORE) && !has(CAP_SYS_ADMIN) {
        return Err(PrivilegeError::NoCapability);
    }
    let uid = nix::unistd::geteuid().as_raw();
    if uid == 0 {
        return Ok(());
    }
    if !unprivileged {
        return Err(PrivilegeError::NeedsUnprivileged { uid });
    }
    // SAFETY: PR_SET_DUMPABLE with 1 changes only this process's dumpable flag.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) } != 0 {
        return Err(PrivilegeError::Io(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// The `--unprivileged` rules for one run with options `o`, on every path (command line, swrk,
/// service): a dump, pre-dump or restore checks criu's privilege ([`check_privilege`]), and an
/// unprivileged one leaves cgroups alone unless told otherwise (`--manage-cgroups`), as CRIU.
///
/// # Errors
/// As [`check_privilege`].
pub fn apply_privilege(o: &mut crate::options::Options) -> Result<(), PrivilegeError> {
    use crate::options::Command;
    if !matches!(
        o.command,
        Some(Command::Dump | Command::PreDump | Command::Restore)
    ) {
        return Ok(());
    }
    check_privilege(o.unprivileged)?;
    if o.unprivileged && o.manage_cgroups.is_none() {
        o.manage_cgroups = Some(crate::options::CgroupMode::Ignore);
    }
    Ok(())
}

impl PrivilegeError {
    /// The errno a client sees.
    pub fn errno(&self) -> i32 {
        match self {
            PrivilegeError::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
            _ => libc::EPERM,
        }
    }
}
