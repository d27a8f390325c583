//! The serving side of lazy restore: `criu page-server --lazy-pages` and `criu dump
//! --lazy-pages` answer `PS_IOV_GET` requests of a remote `criu lazy-pages` with pages of the
//! images in their directory (a `PS_IOV_ADD_F` with `PE_PRESENT` and the pages, as CRIU's page
//! server answers), until the client closes the session.
//!
//! A request names the task by its pid (`dst_id`, not shifted: CRIU's lazy-pages sends the
//! pid as is), the first address and the number of pages. The answer holds at most what was
//! asked, from the first address on, as far as the images hold saved pages without a gap; a
//! request for pages the images do not hold, or for a task they do not have, ends the
//! session with an error (CRIU's server does the same).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;

use criu_images::pagemap::{PAGE_SIZE, PE_PRESENT};

use super::wire::*;
use super::{PageServerError, io_err};
use crate::lazy::images::LocalPages;

/// Largest request served at once (CRIU's lazy-pages asks for at most 4 MiB).
const MAX_GET: u64 = 16 << 20;

/// Serves `PS_IOV_GET` requests on `sock` from the images in `dir` until the client closes
/// the session (or the connection); returns the bytes of pages sent.
///
/// # Errors
/// [`PageServerError::Protocol`] for a request the images cannot answer or another command,
/// [`PageServerError::Io`] for the socket.
pub fn serve_lazy(mut sock: impl Read + Write, dir: &Path) -> Result<u64, PageServerError> {
    let mut tasks: HashMap<u64, LocalPages> = HashMap::new();
    let mut buf = vec![0u8; MAX_GET as usize];
    let mut sent = 0u64;
    loop {
        let mut b = [0u8; IOV_SIZE];
        match sock.read_exact(&mut b) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                tracing::info!(sent, "the lazy-pages client went away: session over");
                return Ok(sent);
            }
            Err(e) => return Err(io_err("receive a request")(e)),
        }
        let iov = PsIov::decode(&b);
        match iov.command() {
            PS_IOV_GET => {}
            PS_IOV_CLOSE | PS_IOV_FORCE_CLOSE => {
                sock.write_all(&0i32.to_ne_bytes())
                    .map_err(io_err("answer the close"))?;
                tracing::info!(sent, "lazy session over");
                return Ok(sent);
            }
            other => {
                return Err(PageServerError::Protocol(format!(
                    "command {other:#x} in a lazy-pages session (only PS_IOV_GET and close)"
                )));
            }
        }
        let pid = iov.dst_id;
        if pid == 0 || pid > i32::MAX as u64 {
            return Err(PageServerError::Protocol(format!("no task {pid}")));
        }
        if !iov.vaddr.is_multiple_of(PAGE_SIZE)
            || iov.nr_pages == 0
            || iov.nr_pages > MAX_GET / PAGE_SIZE
        {
            return Err(PageServerError::Protocol(format!(
                "bad request of task {pid}: {} pages at {:#x}",
                iov.nr_pages, iov.vaddr
            )));
        }
        let lp = match tasks.entry(pid) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(LocalPages::open(dir, pid as i32).map_err(|e| {
                    PageServerError::Protocol(format!("pages of task {pid} asked for: {e}"))
                })?)
            }
        };
        let want = (iov.nr_pages * PAGE_SIZE) as usize;
        let mut got = 0usize;
        while got < want {
            let n = lp
                .read(iov.vaddr + got as u64, &mut buf[got..want])
                .map_err(|e| PageServerError::Protocol(e.to_string()))?;
            if n == 0 {
                break;
            }
            got += n;
        }
        if got == 0 {
            return Err(PageServerError::Protocol(format!(
                "task {pid} has no saved page at {:#x}",
                iov.vaddr
            )));
        }
        let nr = got as u64 / PAGE_SIZE;
        let head = PsIov::new(PS_IOV_ADD_F, PE_PRESENT, nr, iov.vaddr, iov.dst_id);
        sock.write_all(&head.encode())
            .and_then(|()| sock.write_all(&buf[..got]))
            .map_err(io_err(format!(
                "send pages of task {pid} at {:#x}",
                iov.vaddr
            )))?;
        sent += got as u64;
    }
}

/// `criu dump --lazy-pages`: listens at `address:port`, calls `ready` once listening (the
/// `status-ready` notification and `--status-fd`; an error there ends the dump before anything
/// is served), serves one lazy-pages session from the images just written in `dir` (over TLS
/// with `tls.enabled`), and returns when the client closed it.
///
/// # Errors
/// [`PageServerError`] if it cannot listen or the session fails; `ready`'s error as it is.
pub fn serve_dump<E: From<PageServerError>>(
    dir: &Path,
    address: &str,
    port: u16,
    tls: &crate::options::TlsOptions,
    ready: impl FnOnce() -> Result<(), E>,
) -> Result<u64, E> {
    let listener = std::net::TcpListener::bind((address, port))
        .map_err(io_err(format!("listen on {address}:{port}")))?;
    let local = listener.local_addr().map_err(io_err("local address"))?;
    tracing::info!(%local, "serving lazy pages: the tree stays frozen until they are all sent");
    ready()?;
    let (sock, peer) = listener.accept().map_err(io_err("accept"))?;
    drop(listener);
    tracing::info!(%peer, "lazy-pages client");
    let _ = sock.set_nodelay(true);
    if tls.enabled {
        Ok(serve_lazy(super::tls::server(sock, &peer.to_string(), tls)?, dir)?)
    } else {
        Ok(serve_lazy(sock, dir)?)
    }
}
