//! criu: checkpoint/restore of Linux processes, built as one consumer of compel (layer: engine).
//!
//! The `criu` binary is a thin shell around this library: [`options`] parses the command line
//! and configuration files the way `criu(8)` does, [`log`] sets up the timestamped log,
//! [`scripts`] runs action scripts, [`check`] answers `criu check`, [`cgroups`] compares a tree's
//! cgroups with criu's, [`dump`] checkpoints a live
//! process tree (with its threads) into an images directory in CRIU's format, [`restore`] brings
//! a process back, and
//! [`pidfile`] writes `--pidfile` the way CRIU does.
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
pub mod log;
pub mod options;
pub mod pidfile;
pub mod restore;
pub mod rpc;
pub mod scripts;
