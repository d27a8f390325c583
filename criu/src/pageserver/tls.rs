//! `--tls`: the page server connection wrapped in TLS (rustls with the ring provider). Both
//! sides present a certificate signed by the CA of `--tls-cacert`; the client checks that the
//! server's certificate names the address it connects to (its subject alternative names, as
//! rustls does) unless `--tls-no-cn-verify`; `--tls-cacrl` lists revoked certificates. The
//! handshake is finished before the first command, so a refused peer is an error at connect
//! time, naming the peer.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore,
    ServerConfig, ServerConnection, SignatureScheme, StreamOwned,
};

use super::PageServerError;
use crate::options::TlsOptions;

const DEFAULT_CACERT: &str = "/etc/pki/CA/cacert.pem";
const DEFAULT_CERT: &str = "/etc/pki/criu/cert.pem";
const DEFAULT_KEY: &str = "/etc/pki/criu/private/key.pem";

/// The page server connection: plain TCP, or TLS over it.
#[derive(Debug)]
pub enum Stream {
    /// Without `--tls`.
    Plain(TcpStream),
    /// The client side of a TLS session.
    Client(Box<StreamOwned<ClientConnection, TcpStream>>),
    /// The server side of a TLS session.
    Server(Box<StreamOwned<ServerConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Client(s) => s.read(buf).map_err(tls_io),
            Stream::Server(s) => s.read(buf).map_err(tls_io),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Client(s) => s.write(buf).map_err(tls_io),
            Stream::Server(s) => s.write(buf).map_err(tls_io),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Client(s) => s.flush().map_err(tls_io),
            Stream::Server(s) => s.flush().map_err(tls_io),
        }
    }
}

/// A TLS failure inside an I/O error says so.
fn tls_io(e: std::io::Error) -> std::io::Error {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(t) => std::io::Error::new(e.kind(), format!("TLS: {t}")),
        None => e,
    }
}

/// What went wrong in an I/O error of the handshake: the TLS error itself if it is one.
fn handshake_cause(e: &std::io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(t) => t.to_string(),
        None => e.to_string(),
    }
}

fn tls_err(what: impl std::fmt::Display) -> PageServerError {
    PageServerError::Protocol(format!("TLS: {what}"))
}

fn open(path: &Path) -> Result<BufReader<File>, PageServerError> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|e| tls_err(format!("open {}: {e}", path.display())))
}

fn path_or(p: &Option<PathBuf>, default: &str) -> PathBuf {
    p.clone().unwrap_or_else(|| PathBuf::from(default))
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PageServerError> {
    let v = rustls_pemfile::certs(&mut open(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(format!("read {}: {e}", path.display())))?;
    if v.is_empty() {
        return Err(tls_err(format!("no certificate in {}", path.display())));
    }
    Ok(v)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, PageServerError> {
    rustls_pemfile::private_key(&mut open(path)?)
        .map_err(|e| tls_err(format!("read {}: {e}", path.display())))?
        .ok_or_else(|| tls_err(format!("no private key in {}", path.display())))
}

fn crls(o: &TlsOptions) -> Result<Vec<CertificateRevocationListDer<'static>>, PageServerError> {
    let Some(path) = &o.cacrl else {
        return Ok(Vec::new());
    };
    rustls_pemfile::crls(&mut open(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(format!("read {}: {e}", path.display())))
}

fn roots(o: &TlsOptions) -> Result<Arc<RootCertStore>, PageServerError> {
    let path = path_or(&o.cacert, DEFAULT_CACERT);
    let mut store = RootCertStore::empty();
    for c in certs(&path)? {
        store
            .add(c)
            .map_err(|e| tls_err(format!("CA certificate in {}: {e}", path.display())))?;
    }
    Ok(Arc::new(store))
}

fn own(
    o: &TlsOptions,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PageServerError> {
    Ok((
        certs(&path_or(&o.cert, DEFAULT_CERT))?,
        key(&path_or(&o.key, DEFAULT_KEY))?,
    ))
}

/// The server's certificate checked against the CA, and its names against the address unless
/// `--tls-no-cn-verify`.
#[derive(Debug)]
struct Verifier {
    inner: Arc<WebPkiServerVerifier>,
    check_name: bool,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The chain and revocation are checked before the name: a name error means the
        // certificate itself is good.
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            r => r,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Runs the handshake to its end; a refusal by the peer is an error here.
fn handshake<C, D>(conn: &mut C, sock: &mut TcpStream, peer: &str) -> Result<(), PageServerError>
where
    C: std::ops::DerefMut<Target = rustls::ConnectionCommon<D>>,
    D: rustls::SideData,
{
    while conn.is_handshaking() {
        conn.complete_io(sock).map_err(|e| {
            tls_err(format!(
                "handshake with {peer} failed: {}",
                handshake_cause(&e)
            ))
        })?;
    }
    // A TLS 1.3 server answers on the client's certificate after the client's last message:
    // flush it so that a refusal comes back before the first command.
    while conn.wants_write() {
        conn.write_tls(sock)
            .map_err(|e| tls_err(format!("handshake with {peer} failed: {e}")))?;
    }
    Ok(())
}

/// Wraps the client's connection to `address` in TLS.
///
/// # Errors
/// [`PageServerError::Protocol`] naming the file or the peer if the certificates cannot be
/// read or the handshake fails.
pub fn client(
    mut sock: TcpStream,
    address: &str,
    o: &TlsOptions,
) -> Result<Stream, PageServerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let inner = WebPkiServerVerifier::builder_with_provider(roots(o)?, provider.clone())
        .with_crls(crls(o)?)
        .build()
        .map_err(tls_err)?;
    let (chain, key) = own(o)?;
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier {
            inner,
            check_name: !o.no_cn_verify,
        }))
        .with_client_auth_cert(chain, key)
        .map_err(tls_err)?;
    let name = ServerName::try_from(address.to_string())
        .map_err(|e| tls_err(format!("server name {address}: {e}")))?;
    let mut conn = ClientConnection::new(Arc::new(config), name).map_err(tls_err)?;
    handshake(&mut conn, &mut sock, address)?;
    tracing::info!(%address, "TLS session with the page server");
    Ok(Stream::Client(Box::new(StreamOwned::new(conn, sock))))
}

/// Wraps the server's accepted connection from `peer` in TLS; the client must present a
/// certificate signed by the CA.
///
/// # Errors
/// [`PageServerError::Protocol`] naming the file or the peer if the certificates cannot be
/// read or the handshake fails.
pub fn server(mut sock: TcpStream, peer: &str, o: &TlsOptions) -> Result<Stream, PageServerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(o)?, provider.clone())
        .with_crls(crls(o)?)
        .build()
        .map_err(tls_err)?;
    let (chain, key) = own(o)?;
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(tls_err)?;
    let mut conn = ServerConnection::new(Arc::new(config)).map_err(tls_err)?;
    handshake(&mut conn, &mut sock, peer)?;
    tracing::info!(%peer, "TLS session with the client");
    Ok(Stream::Server(Box::new(StreamOwned::new(conn, sock))))
}
