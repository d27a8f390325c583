//! `criu check`: does this kernel (and this criu's privileges) have what dump and restore need.
//!
//! [`check_all`] runs the required checks and stops at the first that fails, as CRIU does;
//! [`check_feature`] probes one named feature (`criu check --feature NAME`), with CRIU's names.
//!
//! ```no_run
//! match criu::check::check_all() {
//!     Ok(()) => println!("Looks good."),
//!     Err(e) => eprintln!("{e}"),
//! }
//! ```

use std::path::Path;

/// Errors from `criu check`.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// A feature name CRIU does not know.
    #[error("unknown feature {name}")]
    UnknownFeature {
        /// The name given.
        name: String,
    },
    /// A feature this kernel or this criu lacks.
    #[error("{name} is not supported: {why}")]
    Unsupported {
        /// The feature.
        name: String,
        /// What was missing.
        why: String,
    },
}

type Probe = fn() -> Result<(), String>;

fn kernel_at_least(major: u32, minor: u32) -> Result<(), String> {
    let uts = nix::sys::utsname::uname().map_err(|e| format!("uname: {e}"))?;
    let rel = uts.release().to_string_lossy().into_owned();
    let mut it = rel.split(|c: char| !c.is_ascii_digit());
    let ma: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let mi: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    if (ma, mi) >= (major, minor) {
        Ok(())
    } else {
        Err(format!("kernel {rel} is older than {major}.{minor}"))
    }
}

fn path_exists(p: &str) -> Result<(), String> {
    if Path::new(p).exists() {
        Ok(())
    } else {
        Err(format!("{p} does not exist"))
    }
}

fn raw_syscall_works(nr: libc::c_long, args: [libc::c_long; 5], name: &str) -> Result<(), String> {
    // SAFETY: callers pass probes whose arguments are null pointers, invalid descriptors or
    // plain integers, so the kernel either rejects them or acts on no memory of ours.
    let r = unsafe { libc::syscall(nr, args[0], args[1], args[2], args[3], args[4]) };
    if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
        Err(format!("{name} is not implemented"))
    } else {
        if r >= 0 && matches!(name, "pidfd_open" | "userfaultfd" | "memfd_create") {
            // The probe created a descriptor: close it.
            // SAFETY: r is a descriptor the probe just created and nothing else owns.
            unsafe { libc::close(r as libc::c_int) };
        }
        Ok(())
    }
}

fn has_checkpoint_cap() -> Result<(), String> {
    let eff = compel::proc::self_effective_caps().ok_or("no CapEff in /proc/self/status")?;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_SYS_PTRACE: u32 = 19;
    const CAP_CHECKPOINT_RESTORE: u32 = 40;
    let has = |c: u32| eff & (1u64 << c) != 0;
    if (has(CAP_CHECKPOINT_RESTORE) || has(CAP_SYS_ADMIN)) && has(CAP_SYS_PTRACE) {
        Ok(())
    } else {
        Err("criu needs CAP_CHECKPOINT_RESTORE (or CAP_SYS_ADMIN) and CAP_SYS_PTRACE".into())
    }
}

fn map_files() -> Result<(), String> {
    let d = std::fs::read_dir("/proc/self/map_files").map_err(|e| format!("map_files: {e}"))?;
    if let Some(e) = d.flatten().next() {
        std::fs::read_link(e.path()).map_err(|e| format!("map_files link: {e}"))?;
        return Ok(());
    }
    Err("/proc/self/map_files is empty".into())
}

fn kcmp() -> Result<(), String> {
    let pid = std::process::id() as libc::c_long;
    // KCMP_FILE = 0 on fds 0 and 0.
    raw_syscall_works(libc::SYS_kcmp, [pid, pid, 0, 0, 0], "kcmp")
}

fn process_vm_readv() -> Result<(), String> {
    let src = [0x5au8; 16];
    let mut dst = [0u8; 16];
    let local = [std::io::IoSliceMut::new(&mut dst)];
    let remote = [nix::sys::uio::RemoteIoVec {
        base: src.as_ptr() as usize,
        len: src.len(),
    }];
    nix::sys::uio::process_vm_readv(nix::unistd::Pid::this(), &mut { local }, &remote)
        .map_err(|e| format!("process_vm_readv: {e}"))?;
    if dst == src {
        Ok(())
    } else {
        Err("process_vm_readv read wrong bytes".into())
    }
}

fn soft_dirty() -> Result<(), String> {
    use std::io::{Read, Seek, SeekFrom};
    // Clear the soft-dirty bits, dirty one page, and look for bit 55 in its pagemap entry:
    // kernels without CONFIG_MEM_SOFT_DIRTY accept the write but never set the bit.
    std::fs::write("/proc/self/clear_refs", "4")
        .map_err(|e| format!("soft-dirty tracking (clear_refs 4): {e}"))?;
    let mut page = vec![0u8; 8192];
    let addr = page.as_mut_ptr() as usize;
    let aligned = (addr + 4095) & !4095;
    page[aligned - addr] = 1;
    std::hint::black_box(&page);
    let mut f = std::fs::File::open("/proc/self/pagemap").map_err(|e| e.to_string())?;
    f.seek(SeekFrom::Start((aligned / 4096 * 8) as u64))
        .map_err(|e| e.to_string())?;
    let mut b = [0u8; 8];
    f.read_exact(&mut b).map_err(|e| e.to_string())?;
    if u64::from_le_bytes(b) & (1 << 55) != 0 {
        Ok(())
    } else {
        Err("the kernel does not track soft-dirty pages".into())
    }
}

fn nspid() -> Result<(), String> {
    let s = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    if s.lines().any(|l| l.starts_with("NSpid:")) {
        Ok(())
    } else {
        Err("no NSpid in /proc/self/status".into())
    }
}

fn mnt_id() -> Result<(), String> {
    let s = std::fs::read_to_string("/proc/self/fdinfo/0")
        .or_else(|_| std::fs::read_to_string("/proc/self/fdinfo/1"))
        .map_err(|e| e.to_string())?;
    if s.lines().any(|l| l.starts_with("mnt_id:")) {
        Ok(())
    } else {
        Err("no mnt_id in fdinfo".into())
    }
}

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

/// Named features, with CRIU's names. A name CRIU knows but this table lacks is reported as not
/// supported; any other name is unknown.
static FEATURES: &[(&str, Probe)] = &[
    ("mnt_id", mnt_id),
    ("mem_dirty_track", soft_dirty),
    ("timerfd", || kernel_at_least(3, 19)),
    ("userns", || path_exists("/proc/self/ns/user")),
    ("fdinfo_lock", || kernel_at_least(4, 1)),
    ("seccomp_suspend", || kernel_at_least(4, 3)),
    ("seccomp_filters", || kernel_at_least(4, 4)),
    ("loginuid", || path_exists("/proc/self/loginuid")),
    ("cgroupns", || path_exists("/proc/self/ns/cgroup")),
    ("uffd", || {
        raw_syscall_works(
            libc::SYS_userfaultfd,
            [libc::O_CLOEXEC as _, 0, 0, 0, 0],
            "userfaultfd",
        )
    }),
    ("can_map_vdso", || kernel_at_least(4, 9)),
    ("kcmp_epoll", || kernel_at_least(4, 13)),
    ("timens", || path_exists("/proc/self/ns/time")),
    ("clone3_set_tid", || kernel_at_least(5, 5)),
    ("pidfd_store", || {
        raw_syscall_works(
            libc::SYS_pidfd_open,
            [std::process::id() as _, 0, 0, 0, 0],
            "pidfd_open",
        )
    }),
    ("ns_pid", nspid),
    ("memfd_hugetlb", || kernel_at_least(4, 14)),
    ("openat2", || {
        raw_syscall_works(libc::SYS_openat2, [-1, 0, 0, 0, 0], "openat2")
    }),
    ("get_rseq_conf", || kernel_at_least(5, 13)),
    ("pagemap_scan", || kernel_at_least(6, 7)),
    ("pagemap_scan_guard_pages", || kernel_at_least(6, 14)),
    ("timer_cr_ids", || kernel_at_least(6, 15)),
];

/// Feature names CRIU knows that this criu does not probe (reported as not supported).
static CRIU_ONLY: &[&str] = &[
    "aio_remap",
    "tun",
    "tun_ns",
    "autofs",
    "tcp_half_closed",
    "compat_cr",
    "uffd-noncoop",
    "sk_ns",
    "sk_unix_file",
    "net_diag_raw",
    "nsid",
    "link_nsid",
    "external_net_ns",
    "newifindex",
    "nftables",
    "has_ipt_legacy",
    "apparmor_stacking",
    "network_lock_nftables",
    "sockopt_buf_lock",
    "move_mount_set_group",
    "ipv6_freebind",
    "overlayfs_maps",
    "breakpoints",
];

/// Runs the required checks; the first failure is the error.
///
/// # Errors
/// [`CheckError::Unsupported`] naming the first missing piece.
pub fn check_all() -> Result<(), CheckError> {
    for (name, probe) in REQUIRED {
        tracing::debug!("checking {name}");
        probe().map_err(|why| CheckError::Unsupported {
            name: (*name).to_string(),
            why,
        })?;
    }
    Ok(())
}

/// All feature names `--feature` accepts.
pub fn feature_names() -> Vec<&'static str> {
    FEATURES
        .iter()
        .map(|(n, _)| *n)
        .chain(CRIU_ONLY.iter().copied())
        .collect()
}

/// Probes one named feature.
///
/// # Errors
/// [`CheckError::UnknownFeature`] for names CRIU does not know, [`CheckError::Unsupported`] for
/// features this kernel or this criu lacks.
pub fn check_feature(name: &str) -> Result<(), CheckError> {
    if let Some((_, probe)) = FEATURES.iter().find(|(n, _)| *n == name) {
        return probe().map_err(|why| CheckError::Unsupported {
            name: name.to_string(),
            why,
        });
    }
    if CRIU_ONLY.contains(&name) {
        return Err(CheckError::Unsupported {
            name: name.to_string(),
            why: "not implemented by this criu".into(),
        });
    }
    Err(CheckError::UnknownFeature {
        name: name.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_probe() {
        // This machine: kernel 6.18, no soft-dirty.
        check_feature("timens").unwrap();
        check_feature("clone3_set_tid").unwrap();
        check_feature("pidfd_store").unwrap();
        assert!(matches!(
            check_feature("mem_dirty_track"),
            Err(CheckError::Unsupported { .. })
        ));
        assert!(matches!(
            check_feature("tun"),
            Err(CheckError::Unsupported { .. })
        ));
        assert!(matches!(
            check_feature("no_such_thing"),
            Err(CheckError::UnknownFeature { .. })
        ));
        process_vm_readv().unwrap();
        map_files().unwrap();
    }
}
