//! criu: checkpoint/restore of Linux processes, built as one consumer of compel (layer: engine).
//!
//! The `criu` binary is a thin shell around this library: [`options`] parses the command line
//! and configuration files the way `criu(8)` does, [`log`] sets up the timestamped log,
//! [`scripts`] runs action scripts, [`check`] answers `criu check`, [`dump`] checkpoints a live
//! process tree (with its threads) into an images directory in CRIU's format (its module docs
//! list the flow and the module of each job: seizing, `/proc`, VMAs and pages, files, per-thread
//! state, seccomp, ids and namespaces), [`restore`] brings a process back, and [`pidfile`] writes
//! `--pidfile` the way CRIU does. The image format and the facts dump and restore share (VMA
//! status bits, `TASK_SIZE`, task states, fd types) are the `criu-images` crate's.
//!
//! ```no_run
//! use criu::options::Options;
//!
//! let opts = Options::parse(["criu", "dump", "-t", "1234", "-D", "/tmp/img", "-R"]
//!     .iter().map(|s| s.to_string())).unwrap();
//! let log = criu::log::LogSink::open(None).unwrap();
//! criu::dump::dump(&opts, &log).unwrap();
//! ```

pub mod check;
pub mod dump;
pub mod log;
pub mod options;
pub mod pidfile;
pub mod restore;
pub mod scripts;
