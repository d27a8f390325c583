//! criu: checkpoint/restore of Linux processes, built as one consumer of compel (layer: engine).
//!
//! The `criu` binary is a thin shell around this library: [`options`] parses the command line
//! and configuration files the way `criu(8)` does, [`log`] sets up the timestamped log,
//! [`scripts`] runs action scripts, [`check`] answers `criu check`, [`cgroups`]
//! compares a tree's cgroups with criu's, [`dump`] checkpoints a live
//! process tree (with its threads) into an images directory in CRIU's format (its module docs
//! list the flow and the module of each job: seizing, `/proc`, VMAs and pages, files, per-thread
//! state, seccomp, ids and namespaces), [`restore`] brings a process back, and [`pidfile`] writes
//! `--pidfile` the way CRIU does. The image format and the facts dump and restore share (VMA
//! status bits, `TASK_SIZE`, task states, fd types) are the `criu-images` crate's.
//!
//! Open files are in [`files`], one module per kind (regular files, pipes, eventfd, epoll, ...)
//! holding both its dump and its restore behind one interface ([`files::FileKind`] and
//! [`files::RestoreFile`]). A new kind of file is one new module there plus one line in
//! [`files::kinds`]; the dump ([`dump::files`]) and the restore only dispatch on the kind and
//! keep what all kinds share (file ids, shared open files, ordering).
//!
//! ```no_run
//! use criu::options::{DumpOptions, Options};
//!
//! let opts = Options::parse(["criu", "dump", "-t", "1234", "-D", "/tmp/img", "-R"]
//!     .iter().map(|s| s.to_string())).unwrap();
//! let dump_opts = DumpOptions::from_options(&opts);
//! dump_opts.validate().unwrap();
//! criu::dump::dump(&dump_opts, None).unwrap();
//! ```

pub mod cgroups;
pub mod check;
pub mod dump;
pub mod files;
pub mod log;
pub mod options;
pub mod pidfile;
pub mod restore;
pub mod rpc;
pub mod scripts;
