//! The options of live migration: pre-dumps and the page server.

/// `--pre-dump-mode`: how a pre-dump copies memory (CRIU's `PRE_DUMP_SPLICE` and
/// `PRE_DUMP_READ`, the numbers its inventory stores).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PreDumpMode {
    /// `splice`: the pages are copied while the tree is frozen (CRIU's default).
    #[default]
    Splice,
    /// `read`: the tree runs on while its pages are read (`process_vm_readv`); pages written
    /// meanwhile are caught by the next dump's tracking.
    Read,
}

impl PreDumpMode {
    /// The mode named `s` (`splice` or `read`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "splice" => Some(PreDumpMode::Splice),
            "read" => Some(PreDumpMode::Read),
            _ => None,
        }
    }

    /// The number CRIU's inventory stores (`pre_dump_mode`).
    pub fn number(self) -> u32 {
        match self {
            PreDumpMode::Splice => 1,
            PreDumpMode::Read => 2,
        }
    }
}

/// Pre-dump and page server options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveOptions {
    /// `--pre-dump-mode`.
    pub pre_dump_mode: PreDumpMode,
    /// `--page-server` (dump and pre-dump send their pages to `--address`:`--port`).
    pub page_server: bool,
    /// `--address`.
    pub address: Option<String>,
    /// `--port`.
    pub port: Option<u16>,
    /// RPC `ps.fd` (swrk only): a socket the client already connected to the page server,
    /// criu's own descriptor; used instead of connecting to `address`:`port`.
    pub page_server_fd: Option<i32>,
    /// `--lazy-pages` (restore: leave private anonymous memory to `criu lazy-pages`; dump:
    /// serve it from the frozen tree; page-server: serve it from the images).
    pub lazy_pages: bool,
    /// `--auto-dedup`: dump and pre-dump punch what they hold out of the parent images.
    pub auto_dedup: bool,
    /// `--tls` and its files: the page server connection.
    pub tls: TlsOptions,
}

/// `--tls`, `--tls-cacert`, `--tls-cacrl`, `--tls-cert`, `--tls-key`, `--tls-no-cn-verify`:
/// the page server connection is TLS, both sides present certificates signed by the CA.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// `--tls`.
    pub enabled: bool,
    /// `--tls-cacert` (default `/etc/pki/CA/cacert.pem`).
    pub cacert: Option<std::path::PathBuf>,
    /// `--tls-cacrl`: revoked certificates (none by default).
    pub cacrl: Option<std::path::PathBuf>,
    /// `--tls-cert` (default `/etc/pki/criu/cert.pem`).
    pub cert: Option<std::path::PathBuf>,
    /// `--tls-key` (default `/etc/pki/criu/private/key.pem`).
    pub key: Option<std::path::PathBuf>,
    /// `--tls-no-cn-verify`: the client does not check the server's certificate names the
    /// address it connects to.
    pub no_cn_verify: bool,
}
