//! The error type of image reading and writing.

use std::path::PathBuf;

/// Everything that can go wrong reading or writing an image file. Each variant names the file
/// and, for format problems, the byte offset where the problem starts.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// An I/O call on the file failed.
    #[error("{}: {op} failed", file.display())]
    Io {
        /// The image file.
        file: PathBuf,
        /// What was being done (`"open"`, `"read"`, `"write"`, ...).
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file does not start with a known image magic.
    #[error("{}: offset {offset}: unknown magic {magic:#x} (not a CRIU image, or a raw one such as pages-N.img)", file.display())]
    UnknownMagic {
        /// The image file.
        file: PathBuf,
        /// Offset of the magic.
        offset: u64,
        /// The value found.
        magic: u32,
    },
    /// The file is an image, but not of the expected type.
    #[error("{}: offset {offset}: expected a {expected} image, found magic {found:#x}", file.display())]
    WrongMagic {
        /// The image file.
        file: PathBuf,
        /// Offset of the magic.
        offset: u64,
        /// Name of the expected image type.
        expected: &'static str,
        /// The magic found.
        found: u32,
    },
    /// The file ends in the middle of something.
    #[error("{}: offset {offset}: truncated {what}: {have} of {need} bytes", file.display())]
    Truncated {
        /// The image file.
        file: PathBuf,
        /// Offset where the incomplete item starts.
        offset: u64,
        /// What was being read (`"magic"`, `"entry size"`, `"entry"`, `"extra payload"`).
        what: &'static str,
        /// Bytes needed.
        need: u64,
        /// Bytes available.
        have: u64,
    },
    /// An entry's protobuf payload does not decode as the expected message.
    #[error("{}: offset {offset}: bad {message} entry: {reason}", file.display())]
    Decode {
        /// The image file.
        file: PathBuf,
        /// Offset of the entry (its size field).
        offset: u64,
        /// The message type expected.
        message: &'static str,
        /// Why it does not decode.
        reason: String,
    },
    /// A required entry is missing.
    #[error("{}: offset {offset}: missing {message} entry", file.display())]
    Missing {
        /// The image file.
        file: PathBuf,
        /// End of the data read so far.
        offset: u64,
        /// The message type expected.
        message: &'static str,
    },
    /// A value in an image is inconsistent (e.g. a pagemap entry overflowing the address space).
    #[error("{}: offset {offset}: {what}", file.display())]
    Invalid {
        /// The image file.
        file: PathBuf,
        /// Offset of the entry at fault.
        offset: u64,
        /// What is wrong.
        what: String,
    },
}
