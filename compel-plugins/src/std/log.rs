//! The log channel to the host: lines written to an fd the host provides (in the init header or
//! with `CMD_SET_LOG`), prefixed with `pie: <tid>: `.

use super::sys;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicI32, AtomicU32, Ordering};

static LOG_FD: AtomicI32 = AtomicI32::new(-1);
static LOG_LEVEL: AtomicU32 = AtomicU32::new(compel_proto::rpc::LOG_INFO);

pub use compel_proto::rpc::{
    LOG_DEBUG as DEBUG, LOG_ERROR as ERROR, LOG_INFO as INFO, LOG_WARN as WARN,
};

/// Sets where log lines go (-1: nowhere) and the most verbose level written.
pub fn set_log(fd: i32, level: u32) {
    LOG_FD.store(fd, Ordering::Relaxed);
    LOG_LEVEL.store(level, Ordering::Relaxed);
}

/// The log fd, or -1.
pub fn log_fd() -> i32 {
    LOG_FD.load(Ordering::Relaxed)
}

/// Whether a message at `level` would be written.
pub fn enabled(level: u32) -> bool {
    log_fd() >= 0 && level <= LOG_LEVEL.load(Ordering::Relaxed)
}

/// A line being built in a fixed buffer (longer lines are cut, never allocated).
struct Line {
    buf: [u8; 512],
    len: usize,
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len() - 1 - self.len; // keep one byte for the newline
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Writes one log line at `level` (use [`log!`](crate::log!)).
pub fn write_fmt(level: u32, args: fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let mut line = Line {
        buf: [0; 512],
        len: 0,
    };
    let _ = write!(line, "pie: {}: ", sys::gettid());
    let _ = line.write_fmt(args);
    line.buf[line.len] = b'\n';
    line.len += 1;
    let _ = sys::write(log_fd(), &line.buf[..line.len]);
}

/// Writes raw bytes as one log line at `level` (the C plugin API uses it).
pub fn write_bytes(level: u32, msg: &[u8]) {
    if !enabled(level) {
        return;
    }
    write_fmt(level, format_args!("{}", Utf8Lossy(msg)));
}

struct Utf8Lossy<'a>(&'a [u8]);

impl fmt::Display for Utf8Lossy<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            f.write_str(chunk.valid())?;
            if !chunk.invalid().is_empty() {
                f.write_str("\u{fffd}")?;
            }
        }
        Ok(())
    }
}

/// Logs a formatted line to the host: `log!(INFO, "x = {}", x)` with a level among `ERROR`,
/// `WARN`, `INFO`, `DEBUG`.
#[macro_export]
macro_rules! log {
    ($level:ident, $($arg:tt)*) => {
        $crate::std::log::write_fmt($crate::std::log::$level, ::core::format_args!($($arg)*))
    };
}
