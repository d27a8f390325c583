//! `criu check`: does this kernel (and this criu's privileges) have what dump and restore need.
//!
//! [`check_all`] runs the required checks and stops at the first that fails, as CRIU does;
//! [`check_feature`] answers `criu check --feature NAME` for every feature name CRIU knows: a
//! feature is supported when the kernel has it (probed here, not guessed from the version where
//! a probe is possible) *and* this criu handles what it gates. A tool that asks about `timens`
//! wants to know whether a task in a time namespace can be dumped and restored, not only whether
//! the kernel has time namespaces.
//!
//! ```no_run
//! match criu::check_feature("clone3_set_tid") {
//!     Ok(()) => println!("clone3_set_tid is supported"),
//!     Err(e) => eprintln!("{e}"),
//! }
//! ```

use nix::errno::Errno;

/// Why the kernel (or this process's privileges) lacks something.
#[derive(Debug, thiserror::Error)]
pub enum Missing {
    /// The kernel is older than the release that brought the feature.
    #[error("kernel {release} is older than {major}.{minor}")]
    KernelTooOld {
        /// `uname -r`.
        release: String,
        /// The first release with the feature.
        major: u32,
        /// Its minor number.
        minor: u32,
    },
    /// A file the feature shows up as is not there.
    #[error("{path} does not exist")]
    NoPath {
        /// The file.
        path: &'static str,
    },
    /// A probing system call failed.
    #[error("{what}: {errno}")]
    Sys {
        /// The call.
        what: &'static str,
        /// How.
        errno: Errno,
    },
    /// The kernel answered, and the answer is no.
    #[error("{what}")]
    Absent {
        /// What is missing.
        what: &'static str,
    },
}

/// Errors from `criu check`. [`CheckError::errno`] is what an RPC reply carries.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// A feature name CRIU does not know.
    #[error("unknown feature {name}")]
    UnknownFeature {
        /// The name given.
        name: String,
    },
    /// A feature (or required check) the kernel lacks.
    #[error("{name} is not supported: {missing}")]
    Kernel {
        /// The feature.
        name: &'static str,
        /// What the kernel lacks.
        missing: Missing,
    },
    /// A feature the kernel has, gating something this criu does not handle yet.
    #[error("{name} is not supported: the kernel has it, but this criu does not handle {gates}")]
    NotHandled {
        /// The feature.
        name: &'static str,
        /// What it gates that this criu lacks.
        gates: &'static str,
    },
}

impl CheckError {
    /// The errno of an RPC reply: `EINVAL` for an unknown name, `EOPNOTSUPP` otherwise.
    pub fn errno(&self) -> i32 {
        match self {
            CheckError::UnknownFeature { .. } => libc::EINVAL,
            CheckError::Kernel { .. } | CheckError::NotHandled { .. } => libc::EOPNOTSUPP,
        }
    }
}

mod net;
mod probes;

use net::*;
use probes::*;

type Probe = fn() -> Result<(), Missing>;

/// The required checks, in order.
static REQUIRED: &[(&str, Probe)] = &[
    ("capabilities", has_checkpoint_cap),
    ("map_files", map_files),
    ("ns_last_pid", || {
        path_exists("/proc/sys/kernel/ns_last_pid")
    }),
    ("kcmp", kcmp),
    ("process_vm_readv", process_vm_readv),
    ("clone3_set_tid", || kernel_at_least(5, 5)),
    ("rseq", || kernel_at_least(5, 13)),
];

/// One feature of `criu check --feature`: its CRIU name, the kernel probe, and `None` when
/// this criu handles what it gates, else what it does not handle yet.
struct Feature {
    name: &'static str,
    probe: Probe,
    gates: Option<&'static str>,
}

const fn handled(name: &'static str, probe: Probe) -> Feature {
    Feature {
        name,
        probe,
        gates: None,
    }
}

const fn not_yet(name: &'static str, probe: Probe, gates: &'static str) -> Feature {
    Feature {
        name,
        probe,
        gates: Some(gates),
    }
}

/// Every feature name CRIU 4.2 knows, in CRIU's order.
static FEATURES: &[Feature] = &[
    handled("mnt_id", mnt_id),
    handled("mem_dirty_track", dirty_track),
    handled("aio_remap", aio_remap),
    handled("timerfd", timerfd),
    not_yet("tun", tun, "tun devices"),
    not_yet("tun_ns", || kernel_at_least(5, 2), "tun devices"),
    handled("userns", || path_exists("/proc/self/ns/user")),
    handled("fdinfo_lock", fdinfo_lock),
    handled("seccomp_suspend", || kernel_at_least(4, 3)),
    handled("seccomp_filters", || kernel_at_least(4, 4)),
    handled("loginuid", || path_exists("/proc/self/loginuid")),
    handled("cgroupns", || path_exists("/proc/self/ns/cgroup")),
    not_yet(
        "autofs",
        || line_in("/proc/filesystems", "nodev\tautofs", "no autofs filesystem"),
        "autofs mounts",
    ),
    handled("tcp_half_closed", tcp_half_closed),
    not_yet(
        "compat_cr",
        || path_exists("/proc/sys/abi/vsyscall32"),
        "32-bit tasks",
    ),
    handled("uffd", || {
        raw_syscall_works(
            libc::SYS_userfaultfd,
            [libc::O_CLOEXEC as _, 0, 0, 0, 0],
            "userfaultfd",
            true,
        )
    }),
    handled("uffd-noncoop", lazy_pages),
    not_yet(
        "can_map_vdso",
        || kernel_at_least(4, 9),
        "moving the vDSO (restore needs the same vDSO layout)",
    ),
    not_yet(
        "sk_ns",
        || path_exists("/proc/self/ns/net"),
        "network namespaces",
    ),
    not_yet(
        "sk_unix_file",
        sk_unix_file,
        "reaching a unix socket's bound file through the socket (SIOCUNIXFILE); unix sockets \
         are dumped by the name sock_diag reports",
    ),
    not_yet("net_diag_raw", net_diag_raw, "raw sockets"),
    not_yet("nsid", netns_ids, "network namespaces"),
    not_yet("link_nsid", netns_ids, "network namespaces"),
    handled("kcmp_epoll", kcmp_epoll),
    handled("timens", || path_exists("/proc/self/ns/time")),
    handled("external_net_ns", || Ok(())),
    handled("clone3_set_tid", || kernel_at_least(5, 5)),
    not_yet("newifindex", newifindex, "network devices"),
    not_yet(
        "nftables",
        || path_exists("/proc/net/netfilter"),
        "nftables network locking",
    ),
    not_yet("has_ipt_legacy", ipt_legacy, "iptables network locking"),
    not_yet("pidfd_store", pidfd_open, "the RPC pidfd store"),
    handled("ns_pid", || {
        line_in(
            "/proc/self/status",
            "NSpid:",
            "no NSpid in /proc/self/status",
        )
    }),
    not_yet(
        "apparmor_stacking",
        || path_exists("/sys/kernel/security/apparmor"),
        "AppArmor profiles",
    ),
    not_yet(
        "network_lock_nftables",
        || path_exists("/proc/net/netfilter"),
        "nftables network locking",
    ),
    handled("sockopt_buf_lock", sockopt_buf_lock),
    handled("memfd_hugetlb", || kernel_at_least(4, 14)),
    not_yet(
        "move_mount_set_group",
        move_mount_set_group,
        "mount namespaces",
    ),
    not_yet(
        "openat2",
        || raw_syscall_works(libc::SYS_openat2, [-1, 0, 0, 0, 0], "openat2", true),
        "openat2 path resolution",
    ),
    handled("get_rseq_conf", || kernel_at_least(5, 13)),
    handled("ipv6_freebind", ipv6_freebind),
    handled("pagemap_scan", pagemap_scan),
    not_yet(
        "timer_cr_ids",
        || kernel_at_least(6, 15),
        "restoring posix timer ids with PR_TIMER_CREATE_RESTORE_IDS",
    ),
    not_yet(
        "overlayfs_maps",
        || {
            line_in(
                "/proc/filesystems",
                "nodev\toverlay",
                "no overlay filesystem",
            )
        },
        "overlayfs mappings",
    ),
    not_yet(
        "breakpoints",
        || kernel_at_least(2, 6),
        "hardware breakpoints",
    ),
    handled("pagemap_scan_guard_pages", || kernel_at_least(6, 14)),
];

/// Runs the required checks; the first failure is the error.
///
/// # Errors
/// [`CheckError::Kernel`] naming the first missing piece.
pub fn check_all() -> Result<(), CheckError> {
    for (name, probe) in REQUIRED {
        tracing::debug!("checking {name}");
        probe().map_err(|missing| CheckError::Kernel { name, missing })?;
    }
    Ok(())
}

/// All feature names `--feature` accepts, in CRIU's order.
pub fn feature_names() -> Vec<&'static str> {
    FEATURES.iter().map(|f| f.name).collect()
}

/// Answers one named feature: the kernel has it and this criu handles what it gates.
///
/// # Errors
/// [`CheckError::UnknownFeature`] for names CRIU does not know, [`CheckError::Kernel`] when
/// the kernel lacks the feature, [`CheckError::NotHandled`] when it has it but this criu does
/// not handle what it gates.
pub fn check_feature(name: &str) -> Result<(), CheckError> {
    let Some(f) = FEATURES.iter().find(|f| f.name == name) else {
        return Err(CheckError::UnknownFeature {
            name: name.to_string(),
        });
    };
    (f.probe)().map_err(|missing| CheckError::Kernel {
        name: f.name,
        missing,
    })?;
    match f.gates {
        None => Ok(()),
        Some(gates) => Err(CheckError::NotHandled {
            name: f.name,
            gates,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_probe() {
        // This machine: kernel 6.18, no soft-dirty.
        check_feature("clone3_set_tid").unwrap();
        check_feature("pagemap_scan").unwrap();
        check_feature("seccomp_filters").unwrap();
        check_feature("kcmp_epoll").unwrap();
        check_feature("sockopt_buf_lock").unwrap();
        // No soft-dirty, but userfaultfd write-protect tracking (what pre-dump uses here).
        check_feature("mem_dirty_track").unwrap();
        // Trees in their own time and pid namespaces are dumped and restored.
        check_feature("timens").unwrap();
        check_feature("ns_pid").unwrap();
        check_feature("tcp_half_closed").unwrap();
        check_feature("ipv6_freebind").unwrap();
        check_feature("aio_remap").unwrap();
        // The kernel has these; this criu does not handle what they gate.
        for name in [
            "tun",
            "sk_unix_file",
            "newifindex",
            "move_mount_set_group",
            "net_diag_raw",
            "link_nsid",
        ] {
            assert!(
                matches!(check_feature(name), Err(CheckError::NotHandled { .. })),
                "{name}: {:?}",
                check_feature(name)
            );
        }
        let e = check_feature("no_such_thing").unwrap_err();
        assert!(matches!(e, CheckError::UnknownFeature { .. }));
        assert_eq!(e.errno(), libc::EINVAL);
        process_vm_readv().unwrap();
        map_files().unwrap();
    }

    #[test]
    fn names_are_unique_and_criu_s() {
        let names = feature_names();
        let set: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(set.len(), names.len());
        assert_eq!(names.len(), 45);
        assert_eq!(names[0], "mnt_id");
        assert_eq!(names[names.len() - 1], "pagemap_scan_guard_pages");
    }
}
