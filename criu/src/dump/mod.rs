//! `criu dump`: checkpoint one live process into an images directory in CRIU's format.

pub mod proc;

use crate::log::LogSink;
use crate::options::Options;

/// Errors of a dump, each naming the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// No `-t PID`.
    #[error("no pid to dump: use -t PID")]
    NoPid,
}

/// Dumps the process `opts.tree` into `opts.images_dir`.
///
/// # Errors
/// [`DumpError`] naming the failed step.
pub fn dump(opts: &Options, _log: &LogSink) -> Result<(), DumpError> {
    let _pid = opts.tree.ok_or(DumpError::NoPid)?;
    Ok(())
}
