//! The options each engine command takes: [`DumpOptions`] and [`RestoreOptions`]. Plain data,
//! built from [`Options`] (the command line, configuration files, an RPC request's
//! `criu_opts`) or filled field by field by a library caller, and checked with `validate()`.
//!
//! Switches that used to be environment variables read deep in the engine are fields here
//! (`fill_helpers`, `uffd`, `pid_method`, `huge_pages`, `restorer_blob`, `inside_method`); the
//! `criu` binary maps the variables into them.

use std::path::PathBuf;

use super::values::{CpuCap, External, InheritFd};
use super::{Command, FinalState, Options, OptionsError};

/// How a dump reads a task's inside state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum InsideMethod {
    /// The dump parasite, falling back to remote syscalls if infection fails.
    #[default]
    Parasite,
    /// compel remote syscalls only (`CRIU_DUMP_INSIDE=syscalls`).
    Syscalls,
}

/// How restore gives the root task its old pid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PidMethod {
    /// `clone3` with `set_tid`, falling back to `ns_last_pid` where the kernel lacks it.
    #[default]
    Clone3,
    /// Always `ns_last_pid` (`CRIU_RESTORE_PID_METHOD=ns_last_pid`).
    NsLastPid,
}

/// How to dump.
#[derive(Clone, Debug, PartialEq)]
pub struct DumpOptions {
    /// `-t`: the root of the tree (required, see [`DumpOptions::validate`]).
    pub tree: Option<i32>,
    /// The images directory (a descriptor is reached as `/proc/self/fd/N`).
    pub images_dir: PathBuf,
    /// What becomes of the tree after the dump.
    pub final_state: FinalState,
    /// `--shell-job`.
    pub shell_job: bool,
    /// `--orphan-pts-master`: a pty slave whose master is outside the tree is dumped.
    pub orphan_pts_master: bool,
    /// `--file-locks`.
    pub file_locks: bool,
    /// `--tcp-established`.
    pub tcp_established: bool,
    /// `--tcp-close`.
    pub tcp_close: bool,
    /// `--skip-in-flight`.
    pub skip_in_flight: bool,
    /// `--network-lock`.
    pub network_lock: crate::options::values::NetLockMethod,
    /// `--ext-unix-sk`.
    pub ext_unix_sk: bool,
    /// `--ext-unix-sk=INO,...`.
    pub ext_unix_sk_inodes: Vec<u64>,
    /// `--external`.
    pub external: Vec<External>,
    /// `--link-remap`.
    pub link_remap: bool,
    /// `--ghost-limit` in bytes.
    pub ghost_limit: u64,
    /// `--timeout` in seconds.
    pub timeout: u32,
    /// `--track-mem`.
    pub track_mem: bool,
    /// `--prev-images-dir`.
    pub prev_images_dir: Option<PathBuf>,
    /// `--freeze-cgroup`.
    pub freeze_cgroup: Option<PathBuf>,
    /// `--page-server --address A --port P`: pages go to that page server.
    pub page_server: Option<(String, u16)>,
    /// RPC `ps.fd`: the page server connection is this descriptor of criu's, made by the
    /// client (with [`DumpOptions::page_server`] set).
    pub page_server_fd: Option<i32>,
    /// `--tls` and its files, for the page server connection.
    pub page_server_tls: super::TlsOptions,
    /// `--pre-dump-mode` (for `pre_dump`).
    pub pre_dump_mode: super::PreDumpMode,
    /// `--auto-dedup`: punch the pages this dump holds out of its parents' pages files.
    pub auto_dedup: bool,
    /// `--lazy-pages --address A --port P`: once the images are written, the tree stays
    /// frozen while a page server there serves its pages to a remote `criu lazy-pages`.
    pub lazy_pages: Option<(String, u16)>,
    /// `--status-fd`: with `--lazy-pages`, one zero byte there once the pages can be fetched.
    pub status_fd: Option<i32>,
    /// `--cpu-cap`.
    pub cpu_cap: CpuCap,
    /// How the inside state is read.
    pub inside_method: InsideMethod,
    /// `--manage-cgroups` (`ignore`: no cgroup directories or properties are saved).
    pub manage_cgroups: Option<super::CgroupMode>,
    /// `--cgroup-root [CTL:]PATH`: the directories saved start there.
    pub cgroup_roots: Vec<super::CgroupRoot>,
    /// Which cgroup properties are saved.
    pub cgroup_props: super::CgroupPropsOpts,
    /// `--cgroup-yard`: where the hierarchies are reached.
    pub cgroup_yard: Option<PathBuf>,
}

impl Default for DumpOptions {
    fn default() -> Self {
        DumpOptions::from_options(&Options::default())
    }
}

impl DumpOptions {
    /// Dump `pid` into `dir`, killing it after (CRIU's defaults otherwise).
    pub fn new(pid: i32, dir: impl Into<PathBuf>) -> Self {
        DumpOptions {
            tree: Some(pid),
            images_dir: dir.into(),
            ..Default::default()
        }
    }

    /// The dump options of parsed options.
    pub fn from_options(o: &Options) -> Self {
        DumpOptions {
            tree: o.tree,
            images_dir: o.images_dir.path(),
            final_state: o.final_state,
            shell_job: o.shell_job,
            orphan_pts_master: o.orphan_pts_master,
            file_locks: o.file_locks,
            tcp_established: o.tcp_established,
            tcp_close: o.tcp_close,
            skip_in_flight: o.skip_in_flight,
            network_lock: o.network_lock,
            ext_unix_sk: o.ext_unix_sk,
            ext_unix_sk_inodes: o.ext_unix_sk_inodes.clone(),
            external: o.external.clone(),
            link_remap: o.link_remap,
            ghost_limit: o.ghost_limit,
            timeout: o.timeout,
            track_mem: o.track_mem,
            prev_images_dir: o.prev_images_dir.clone(),
            freeze_cgroup: o.freeze_cgroup.clone(),
            manage_cgroups: o.manage_cgroups,
            cgroup_roots: o.cgroup_roots.clone(),
            cgroup_props: o.cgroup_props.clone(),
            cgroup_yard: o.cgroup_yard.clone(),
            pre_dump_mode: o.live.pre_dump_mode,
            page_server: o.live.page_server.then(|| {
                (
                    o.live.address.clone().unwrap_or_else(|| "127.0.0.1".into()),
                    o.live.port.unwrap_or(0),
                )
            }),
            page_server_fd: o.live.page_server_fd,
            page_server_tls: o.live.tls.clone(),
            auto_dedup: o.live.auto_dedup,
            lazy_pages: (o.live.lazy_pages && !o.live.page_server).then(|| {
                (
                    o.live.address.clone().unwrap_or_else(|| "127.0.0.1".into()),
                    o.live.port.unwrap_or(0),
                )
            }),
            status_fd: o.status_fd,
            cpu_cap: o.cpu_cap,
            inside_method: InsideMethod::default(),
        }
    }

    /// Checks the options make a dump.
    ///
    /// # Errors
    /// [`OptionsError::Missing`] without a tree.
    pub fn validate(&self) -> Result<(), OptionsError> {
        match self.tree {
            Some(p) if p > 0 => Ok(()),
            _ => Err(OptionsError::Missing {
                command: Command::Dump.word(),
                option: "-t PID",
            }),
        }
    }
}

/// How to restore.
#[derive(Clone, Debug, PartialEq)]
pub struct RestoreOptions {
    /// The images directory (a descriptor is reached as `/proc/self/fd/N`).
    pub images_dir: PathBuf,
    /// `-d`: do not wait for the task, leave it to run on its own.
    pub detach: bool,
    /// `--restore-sibling`: the tree becomes the caller's sibling (RPC).
    pub sibling: bool,
    /// `--shell-job`: the task keeps criu's session and terminal.
    pub shell_job: bool,
    /// `--orphan-pts-master`: a pty slave whose master was outside the tree gets a new pty;
    /// its master goes to the `orphan-pts-master` notification.
    pub orphan_pts_master: bool,
    /// `--tcp-close`: TCP connections come back closed, whatever the dump saved.
    pub tcp_close: bool,
    /// `--pidfile`: where to write the restored pid.
    pub pidfile: Option<PathBuf>,
    /// `--cpu-cap`: without its FPU bit (`--cpu-cap=none`), saved register state this CPU has
    /// no registers for is left out instead of refused.
    pub cpu_cap: CpuCap,
    /// `-r/--root`.
    pub root: Option<PathBuf>,
    /// `--empty-ns`: `CLONE_NEW*` flags of namespaces made empty.
    pub empty_ns: u32,
    /// `--inherit-fd`.
    pub inherit_fds: Vec<InheritFd>,
    /// `--external`.
    pub external: Vec<External>,
    /// `--ext-unix-sk`.
    pub ext_unix_sk: bool,
    /// `--ext-unix-sk=INO,...`.
    pub ext_unix_sk_inodes: Vec<u64>,
    /// `--tcp-established`.
    pub tcp_established: bool,
    /// `--network-lock`.
    pub network_lock: crate::options::values::NetLockMethod,
    /// `--file-locks`.
    pub file_locks: bool,
    /// Fill helpers for large memories (off: `CRIU_RESTORE_FILL_HELPER=0`, to measure).
    pub fill_helpers: bool,
    /// Fill memory with userfaultfd (off: `CRIU_RESTORE_UFFD=0`, fault pages in and read).
    pub uffd: bool,
    /// Give wholly saved 2 MiB blocks huge pages where the system allows them (off:
    /// `CRIU_RESTORE_THP=0`).
    pub huge_pages: bool,
    /// How the root gets its pid.
    pub pid_method: PidMethod,
    /// A restorer blob file that replaces the built-in one (`CRIU_RESTORER_BLOB`, debugging).
    pub restorer_blob: Option<PathBuf>,
    /// `--manage-cgroups` (`None`: CRIU's default, `soft`).
    pub manage_cgroups: Option<super::CgroupMode>,
    /// `--cgroup-root [CTL:]PATH`.
    pub cgroup_roots: Vec<super::CgroupRoot>,
    /// `--cgroup-yard`: where the hierarchies are reached.
    pub cgroup_yard: Option<PathBuf>,
    /// `--join-ns NS:{PID|FILE}[,EXTRA]`: namespaces the tree joins instead of getting them
    /// from the images.
    pub join_ns: Vec<String>,
    /// `--lazy-pages`: the socket of the `criu lazy-pages` daemon (`lazy-pages.socket` in the
    /// work directory) that fills the tasks' private anonymous memory after they resume.
    pub lazy_pages: Option<PathBuf>,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            images_dir: PathBuf::new(),
            detach: false,
            sibling: false,
            shell_job: false,
            orphan_pts_master: false,
            tcp_close: false,
            pidfile: None,
            cpu_cap: CpuCap::default(),
            root: None,
            empty_ns: 0,
            inherit_fds: Vec::new(),
            external: Vec::new(),
            ext_unix_sk: false,
            ext_unix_sk_inodes: Vec::new(),
            tcp_established: false,
            network_lock: Default::default(),
            file_locks: false,
            fill_helpers: true,
            uffd: true,
            huge_pages: true,
            pid_method: PidMethod::default(),
            restorer_blob: None,
            manage_cgroups: None,
            cgroup_roots: Vec::new(),
            cgroup_yard: None,
            join_ns: Vec::new(),
            lazy_pages: None,
        }
    }
}

impl RestoreOptions {
    /// Restore from `dir`, waiting for the task, not a shell job, no pidfile.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        RestoreOptions {
            images_dir: dir.into(),
            ..Default::default()
        }
    }

    /// The restore options of parsed options (a relative pidfile is relative to the work
    /// directory).
    pub fn from_options(o: &Options) -> Self {
        RestoreOptions {
            images_dir: o.images_dir.path(),
            detach: o.restore_detached,
            sibling: o.restore_sibling,
            shell_job: o.shell_job,
            orphan_pts_master: o.orphan_pts_master,
            tcp_close: o.tcp_close,
            pidfile: o.pidfile.as_ref().map(|p| o.effective_work_dir().join(p)),
            cpu_cap: o.cpu_cap,
            root: o.root.clone(),
            empty_ns: o.empty_ns,
            inherit_fds: o.inherit_fds.clone(),
            external: o.external.clone(),
            ext_unix_sk: o.ext_unix_sk,
            ext_unix_sk_inodes: o.ext_unix_sk_inodes.clone(),
            tcp_established: o.tcp_established,
            network_lock: o.network_lock,
            file_locks: o.file_locks,
            manage_cgroups: o.manage_cgroups,
            cgroup_roots: o.cgroup_roots.clone(),
            cgroup_yard: o.cgroup_yard.clone(),
            join_ns: o.join_ns.clone(),
            lazy_pages: o
                .live
                .lazy_pages
                .then(|| o.effective_work_dir().join(crate::lazy::SOCKET_NAME)),
            ..Default::default()
        }
    }

    /// Checks the options make a restore.
    ///
    /// # Errors
    /// [`OptionsError::Requires`] for `--restore-sibling` without `--restore-detached` (as
    /// CRIU), [`OptionsError::BadValue`] for a descriptor given twice to `--inherit-fd`.
    pub fn validate(&self) -> Result<(), OptionsError> {
        if self.sibling && !self.detach {
            return Err(OptionsError::Requires {
                option: "--restore-sibling",
                needs: "--restore-detached",
            });
        }
        for (i, a) in self.inherit_fds.iter().enumerate() {
            if self.inherit_fds[..i].iter().any(|b| b.fd == a.fd) {
                return Err(OptionsError::BadValue {
                    option: "--inherit-fd".into(),
                    value: format!("fd[{}]:{}", a.fd, a.key),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_and_validated() {
        assert!(DumpOptions::default().validate().is_err());
        assert!(DumpOptions::new(5, "/x").validate().is_ok());
        let mut o = Options::default();
        o.set("inherit-fd", Some("fd[3]:a")).unwrap();
        o.set("cpu-cap", Some("none")).unwrap();
        let r = RestoreOptions::from_options(&o);
        assert!(!r.cpu_cap.fpu() && r.uffd && r.fill_helpers && r.huge_pages);
        r.validate().unwrap();
        o.set("inherit-fd", Some("fd[3]:b")).unwrap();
        assert!(RestoreOptions::from_options(&o).validate().is_err());
        let mut r = RestoreOptions::new("/x");
        r.sibling = true;
        assert!(matches!(r.validate(), Err(OptionsError::Requires { .. })));
        r.detach = true;
        r.validate().unwrap();
        // An RPC request names the images directory by descriptor.
        let mut o = Options {
            images_dir: super::super::DirRef::Fd(7),
            ..Options::default()
        };
        o.set("tree", Some("9")).unwrap();
        let d = DumpOptions::from_options(&o);
        assert_eq!(d.images_dir, PathBuf::from("/proc/self/fd/7"));
        d.validate().unwrap();
    }
}
