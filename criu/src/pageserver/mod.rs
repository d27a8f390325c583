//! The page server: `criu page-server` receives the pages of a dump or pre-dump over TCP and
//! writes them as `pagemap-ID.img` + `pages-N.img` into its images directory, and `criu dump
//! --page-server` / `pre-dump --page-server` send them there instead of writing them locally.
//! The protocol is CRIU's (see [`wire`]), so either side may be CRIU's own.
//!
//! The server takes one session (one dump) and exits, as CRIU's does. Pages ids start at
//! `0x10000`, so that a dump's local images (shared memory is still written locally) and the
//! server's can share one directory. Everything the client sends is checked: an unknown
//! command, a pagemap type, an unaligned or oversized range, a parent entry without parent
//! images or a client that goes away before closing ends the session with an error, and the
//! unfinished pagemap is removed.

pub mod client;
pub mod lazy;
pub mod server;
pub mod tls;
pub mod wire;

pub use client::PageClient;
pub use server::{ServerOptions, run_page_server, run_page_server_with};

/// Errors of the page server and its client.
#[derive(Debug, thiserror::Error)]
pub enum PageServerError {
    /// A socket or file operation failed.
    #[error("page server: {what}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The other side broke the protocol.
    #[error("page server: {0}")]
    Protocol(String),
    /// An image could not be written.
    #[error("page server: {0}")]
    Image(#[from] criu_images::ImageError),
    /// An action script failed at `status-ready`, or the RPC client refused it.
    #[error("page server: status-ready")]
    StatusReady(#[source] crate::scripts::ScriptError),
}

impl PageServerError {
    /// The errno an RPC reply carries.
    pub fn errno(&self) -> i32 {
        match self {
            PageServerError::Io { source, .. } => crate::errno::io(source),
            PageServerError::Protocol(_) => libc::EPROTO,
            PageServerError::Image(e) => crate::errno::image(e),
            PageServerError::StatusReady(e) => e.errno(),
        }
    }
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PageServerError {
    let what = what.into();
    move |source| PageServerError::Io { what, source }
}
