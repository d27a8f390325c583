//! criu's log: where it goes (`-o FILE` relative to the work dir, else stderr), how verbose it is
//! (`-v0..4`), and its line format: every line starts with the time since the run began and the
//! pid of the criu process, `(00.012345) 4242  INFO message`.
//!
//! The binary installs the subscriber with [`install`]; the engine only uses `tracing` macros.
//! [`LogSink::fd`] gives the descriptor that action scripts write their output into.
//!
//! ```no_run
//! let sink = criu::LogSink::open(Some(std::path::Path::new("dump.log"))).unwrap();
//! criu::install_log(4, &sink);
//! tracing::info!("written into dump.log with a timestamp");
//! ```

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// Errors setting up the log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The log file cannot be created.
    #[error("cannot open log file {path}")]
    Open {
        /// The file, as given (relative to the work dir).
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// stderr cannot be duplicated.
    #[error("cannot duplicate stderr for the log")]
    Stderr(#[source] std::io::Error),
}

impl LogError {
    /// The errno an RPC reply carries: the OS error.
    pub fn errno(&self) -> i32 {
        match self {
            LogError::Open { source, .. } | LogError::Stderr(source) => {
                source.raw_os_error().unwrap_or(libc::EIO)
            }
        }
    }
}

/// The open log destination.
#[derive(Clone, Debug)]
pub struct LogSink {
    file: Arc<File>,
    path: Option<PathBuf>,
}

impl LogSink {
    /// Opens the log: `path` is created (truncated, mode 0600, appending) relative to the current
    /// directory, i.e. the work dir once criu has changed into it; `None` logs to stderr.
    ///
    /// # Errors
    /// [`LogError`] when the file cannot be created.
    pub fn open(path: Option<&Path>) -> Result<LogSink, LogError> {
        let file = match path {
            Some(p) if p != Path::new("-") => OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                // Never through a symlink someone left in the work directory.
                .custom_flags(libc::O_APPEND | libc::O_NOFOLLOW)
                .mode(0o600)
                .open(p)
                .map_err(|source| LogError::Open {
                    path: p.to_path_buf(),
                    source,
                })?,
            _ => {
                let fd = std::io::stderr()
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(LogError::Stderr)?;
                File::from(fd)
            }
        };
        Ok(LogSink {
            file: Arc::new(file),
            path: path.map(Path::to_path_buf),
        })
    }

    /// The log's descriptor (action scripts get duplicates of it as stdout and stderr).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// The log file's path, `None` for stderr.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

struct SinkWriter(Arc<File>);

impl Write for SinkWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        (&*self.0).write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The line prefix: seconds and microseconds since the run started, and criu's pid.
struct Stamp {
    start: Instant,
    pid: u32,
}

impl FormatTime for Stamp {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        let t = self.start.elapsed();
        write!(
            w,
            "({:02}.{:06}) {}",
            t.as_secs(),
            t.subsec_micros(),
            self.pid
        )
    }
}

/// The tracing level filter for a CRIU verbosity: 0 nothing, 1 errors, 2 warnings, 3 info,
/// 4 debug, 5 and more trace.
pub fn level_filter(verbosity: i32) -> tracing_subscriber::filter::LevelFilter {
    use tracing_subscriber::filter::LevelFilter;
    match verbosity {
        i32::MIN..=0 => LevelFilter::OFF,
        1 => LevelFilter::ERROR,
        2 => LevelFilter::WARN,
        3 => LevelFilter::INFO,
        4 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

/// Installs the global subscriber writing into `sink` at `verbosity`. Returns `false` when a
/// subscriber was already installed (then nothing changes).
pub fn install(verbosity: i32, sink: &LogSink) -> bool {
    tracing::subscriber::set_global_default(subscriber(verbosity, sink)).is_ok()
}

/// The subscriber [`install`] installs, for a caller that scopes it itself (the RPC server logs
/// each request into that request's own log file).
pub fn subscriber(verbosity: i32, sink: &LogSink) -> impl tracing::Subscriber + Send + Sync {
    let file = sink.file.clone();
    tracing_subscriber::fmt()
        .with_max_level(level_filter(verbosity))
        .with_timer(Stamp {
            start: Instant::now(),
            pid: std::process::id(),
        })
        .with_ansi(false)
        .with_target(false)
        .with_writer(move || SinkWriter(file.clone()))
        .finish()
}
