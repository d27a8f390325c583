//! `--pidfile FILE`: the pid written as decimal without a newline into a file that must not
//! exist yet (created exclusively, as CRIU does), relative to the work dir. The restore writes
//! it ([`write_pidfile`]) once the tree runs; `RestoreOptions::pidfile` names it.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Errors writing a pidfile.
#[derive(Debug, thiserror::Error)]
pub enum PidfileError {
    /// The file exists already or cannot be created.
    #[error("cannot create pidfile {path}")]
    Create {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Writing the pid failed.
    #[error("cannot write pidfile {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl PidfileError {
    /// The errno an RPC reply carries: the OS error.
    pub fn errno(&self) -> i32 {
        match self {
            PidfileError::Create { source, .. } | PidfileError::Write { source, .. } => {
                source.raw_os_error().unwrap_or(libc::EIO)
            }
        }
    }
}

/// Creates `path` exclusively (mode 0600) and writes `pid` into it, without a newline.
///
/// # Errors
/// [`PidfileError::Create`] when the file exists or cannot be created, [`PidfileError::Write`].
pub fn write_pidfile(path: &Path, pid: i32) -> Result<(), PidfileError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| PidfileError::Create {
            path: path.to_path_buf(),
            source,
        })?;
    f.write_all(pid.to_string().as_bytes())
        .map_err(|source| PidfileError::Write {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_no_newline() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pid");
        write_pidfile(&p, 4242).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"4242");
        assert!(matches!(
            write_pidfile(&p, 1),
            Err(PidfileError::Create { .. })
        ));
        assert_eq!(std::fs::read(&p).unwrap(), b"4242");
    }
}
