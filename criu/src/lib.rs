//! criu: checkpoint/restore of Linux processes, built as one consumer of compel (layer: engine).
//!
//! # The public surface
//!
//! A caller (the `criu` binary, the RPC service, libcriu-style users, benchmarks, tests) sees a
//! small facade; the engine's modules are private to the crate:
//!
//! - **Commands**: [`dump()`] checkpoints a live process tree (with its threads) into an images
//!   directory in CRIU's format, [`restore()`] brings it back ([`RestoreOutcome`]), and
//!   [`check_all`]/[`check_feature`] answer `criu check`. Their errors ([`DumpError`],
//!   [`RestoreError`], [`CheckError`]) are typed and say which step, pid or file failed.
//! - **Options**: [`Options`] parses a command line and configuration files the way `criu(8)`
//!   does; [`DumpOptions`] and [`RestoreOptions`] are what one dump or restore needs, built
//!   from [`Options`] or filled in directly (as the RPC service does), checked by `validate()`.
//! - **Notifications**: one [`Notify`] callback (a closure, or [`ActionScripts`] running
//!   `--action-script` programs) hears every [`ScriptAction`] of a dump or restore and may stop
//!   it.
//! - **Logging**: [`LogSink`] (where the log goes) and [`install_log`] (timestamped lines).
//! - **Service**: [`service`] (`criu swrk` and `criu service`: CRIU's RPC protocol).
//! - **Inspection**: [`images_plan`] reads a restore's plan from images without restoring (what
//!   tests and tools check: tasks, areas, sessions, whether the saved FPU state fits this CPU);
//!   [`differing_cgroups`] lists the tasks of a tree in other cgroups than criu's.
//!
//! # Inside
//!
//! `dump` lists the flow of a dump and the module of each job (seizing, `/proc`, VMAs and
//! pages, files, per-thread state, seccomp, ids and namespaces); `restore` does the same for a
//! restore (images into a plan, preflight, shared objects, creating the tree, the task's own
//! steps, the restorer, resuming). Each module has one job and stays under about 700 lines; a
//! module that grows past that becomes a folder of its jobs (`restore/child/`, `files/tty/`,
//! `dump/track/`, `namespaces/ipc/`, `namespaces/net/`). Imports run one way: no two modules of the crate import each other (a
//! parent's own submodules aside), and what both sides of a would-be circle need sits in a leaf
//! (`dump/pagemap_scan`, `restore/images/entry`).
//! Open files are in `files`, one module per kind (regular files, pipes, eventfd, epoll, ...)
//! holding both its dump and its restore behind one interface (`files::FileKind` and
//! `files::RestoreFile`). A new kind of file is one new module there plus one line in
//! `files::kinds`; the dump and the restore only dispatch on the kind and keep what all kinds
//! share (file ids, shared open files, ordering). `options` parses, `scripts` runs action
//! scripts, `log` formats the log, `rpc` serves CRIU's RPC protocol, `pidfile` writes
//! `--pidfile`, `cgroups` compares cgroups. The image format and the facts dump and restore
//! share (VMA status bits, `TASK_SIZE`, task states, fd types) are the `criu-images` crate's.
//!
//! ```no_run
//! use criu::{DumpOptions, Options};
//!
//! let opts = Options::parse(["criu", "dump", "-t", "1234", "-D", "/tmp/img", "-R"]
//!     .iter().map(|s| s.to_string())).unwrap();
//! let dump_opts = DumpOptions::from_options(&opts);
//! dump_opts.validate().unwrap();
//! criu::dump(&dump_opts, None).unwrap();
//! ```

// Unsafe code is refused except in the modules that opt in with `#![allow(unsafe_code)]` and say
// why (system calls and memory the kernel or another process shares, without a safe wrapper).
#![deny(unsafe_code)]
// Everything the facade below makes public is documented.
#![warn(missing_docs)]

pub(crate) mod cgroups;
pub(crate) mod check;
pub mod cpuinfo;
pub(crate) mod dump;
pub(crate) mod errno;
pub(crate) mod files;
pub mod lazy;
pub(crate) mod log;
pub(crate) mod namespaces;
pub(crate) mod options;
pub(crate) mod pageserver;
pub(crate) mod pidfd;
pub(crate) mod pidfile;
pub(crate) mod privilege;
pub(crate) mod regs;
pub(crate) mod restore;
pub(crate) mod rpc;
pub(crate) mod scripts;
pub mod stats;

pub use cgroups::{Differs, differing as differing_cgroups};
pub use check::{CheckError, Missing, check_all, check_feature, feature_names};
pub use dump::dedup::{DedupError, DedupStats, dedup};
pub use dump::{DumpError, DumpSummary, INCOMPLETE_MARKER, INSIDE_METHOD_ENV, dump, pre_dump};
pub use log::{LogError, LogSink, install as install_log};
pub use options::values::NetLockMethod;
pub use options::{
    CgroupMode, CgroupRoot, Command, CpuCap, DEFAULT_LOG_LEVEL, DEFAULT_TIMEOUT, DirRef,
    DumpOptions, External, FinalState, InheritFd, InsideMethod, LiveOptions, OptionSpec, Options,
    OptionsError, PidMethod, PreDumpMode, RestoreOptions, USAGE, option_specs,
};
pub use pageserver::{
    PageServerError, ServerOptions as PageServerOptions, run_page_server, run_page_server_with,
};
pub use privilege::{PrivilegeError, apply_privilege, check_privilege};
pub use restore::{RestoreError, RestoreOutcome, restore};
pub use scripts::{ActionScripts, Notify, ScriptAction, ScriptError, ScriptStatus};

/// criu as a service: `criu swrk` (one RPC session on an inherited socket) and `criu service`
/// (a listening socket), speaking CRIU's `rpc.proto`.
pub mod service {
    use std::path::{Path, PathBuf};

    pub use crate::rpc::{RpcError, ServiceOptions, criu_release, implementation, swrk};

    /// Runs `criu service`: listens on `opts.address` and serves each connection in a child
    /// process, logging into `log`.
    ///
    /// # Errors
    /// [`RpcError`] when the socket cannot be set up (a failing request is answered, not
    /// returned).
    pub fn run(opts: &ServiceOptions, log: &crate::LogSink) -> Result<(), RpcError> {
        crate::rpc::service(opts, log)
    }

    /// The service socket's address: `address`, or CRIU's default (`./criu_service.socket`).
    pub fn address_or_default(address: Option<&Path>) -> PathBuf {
        crate::rpc::service::address_or_default(address)
    }
}

/// A restore's plan read from images, without restoring anything: the tasks with their
/// threads, areas and files, the tree's parents and sessions. Tools and tests inspect it;
/// [`restore()`](crate::restore()) builds the same plan first.
///
/// ```no_run
/// let tree = criu::images_plan::load(std::path::Path::new("/tmp/img"), false).unwrap();
/// for (_, task) in tree.alive() {
///     println!("pid {} with {} areas", task.pid, task.vmas.len());
/// }
/// ```
pub mod images_plan {
    pub use crate::restore::images::load;
    pub use crate::restore::plan::{
        FpuPlan, SessionOp, TaskPlan, ThreadPlan, TreePlan, Vma, VmaKind,
    };
    pub use crate::restore::session::session_ops;

    use crate::RestoreError;

    /// Why the tasks of `tree` cannot be restored on this CPU even with `--cpu-cap=none` (saved
    /// register state this CPU lays out differently), if they cannot: the reason of the first
    /// task whose preflight against this machine fails on its FPU state.
    ///
    /// # Errors
    /// If this process's own special mappings (`/proc/self/maps`) cannot be read.
    pub fn fpu_misfit(tree: &TreePlan) -> Result<Option<String>, RestoreError> {
        let ours =
            crate::restore::layout::Special::from_maps(&crate::restore::layout::self_maps()?);
        Ok(tree.alive().find_map(|(_, t)| {
            match crate::restore::prepare::preflight_against(t, &ours, false, false) {
                Err(RestoreError::Fpu { reason }) => Some(reason),
                _ => None,
            }
        }))
    }

    /// Whether a task or thread of `tree` has saved state for registers this CPU lacks: its
    /// restore then needs `--cpu-cap=none` (`cpu_cap` in [`RestoreOptions`](crate::RestoreOptions)).
    pub fn needs_cpu_cap_none(tree: &TreePlan) -> bool {
        tree.alive().any(|(_, t)| {
            t.threads
                .iter()
                .map(|th| &th.fpu)
                .any(|f| matches!(crate::restore::fpu::build(f), Err(RestoreError::Fpu { .. })))
        })
    }
}
