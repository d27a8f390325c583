//! The receiving side: `criu page-server`. One session: the pagemaps a dump sends, written
//! into the images directory as they arrive.
// Unsafe code: `--daemon` forks and `--status-fd` writes to an inherited descriptor.
#![allow(unsafe_code)]

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};

use criu_images::Pagemap;
use criu_images::names;
use criu_images::pagemap::{PAGE_SIZE, PE_LAZY, PE_PARENT, PE_PRESENT};

use super::wire::*;
use super::{PageServerError, io_err};
use crate::scripts::{Notify, ScriptAction, ScriptError};

/// What `criu page-server` was asked.
#[derive(Clone, Debug, Default)]
pub struct ServerOptions {
    /// The images directory (`-D`).
    pub dir: PathBuf,
    /// `--address` (default `127.0.0.1`).
    pub address: Option<String>,
    /// `--port`.
    pub port: u16,
    /// `--daemon`: go to the background once listening.
    pub daemon: bool,
    /// `--status-fd`: one zero byte is written there once listening.
    pub status_fd: Option<i32>,
    /// `--pidfile`: the serving process's pid.
    pub pidfile: Option<PathBuf>,
    /// `--prev-images-dir`: the parent images (a `parent` link is made to it).
    pub prev_images_dir: Option<PathBuf>,
    /// `--lazy-pages`: serve the pages of the images to a remote `criu lazy-pages` instead of
    /// receiving a dump (see [`super::lazy`]).
    pub lazy: bool,
    /// `--tls` and its files: the session is TLS, the client must present a certificate.
    pub tls: crate::options::TlsOptions,
}

/// Pages ids of the server's pages files start here (CRIU's page server does the same), so
/// that they never clash with those of images a dump writes locally.
pub const FIRST_PAGES_ID: u32 = 0x10000;

/// Runs `criu page-server`: listens, tells `--status-fd`, goes to the background with
/// `--daemon` (the foreground process returns `Ok(Some((pid, port)))` at once; the background
/// one exits when its session ends), serves one session.
///
/// # Errors
/// [`PageServerError`] if it cannot listen or the session fails.
pub fn run_page_server(opts: &ServerOptions) -> Result<Option<(i32, u16)>, PageServerError> {
    let quiet = |_: ScriptAction, _: Option<i32>| -> Result<(), ScriptError> { Ok(()) };
    run_page_server_with(opts, &quiet)
}

/// [`run_page_server`], telling `ready` (action scripts, an RPC client) at `status-ready`:
/// once listening, before `--status-fd`, as CRIU's `status_ready`. With `--daemon` the
/// foreground process tells it, after the pidfile is written and before it returns; a refusal
/// kills the background server and fails the start.
///
/// # Errors
/// As [`run_page_server`]; [`PageServerError::StatusReady`] when `ready` refuses.
pub fn run_page_server_with(
    opts: &ServerOptions,
    ready: &dyn Notify,
) -> Result<Option<(i32, u16)>, PageServerError> {
    if let Some(prev) = &opts.prev_images_dir {
        let link = opts.dir.join("parent");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(prev, &link).map_err(io_err(format!(
            "link {} to {}",
            link.display(),
            prev.display()
        )))?;
    }
    let address = opts.address.as_deref().unwrap_or("127.0.0.1");
    let listener = TcpListener::bind((address, opts.port))
        .map_err(io_err(format!("listen on {address}:{}", opts.port)))?;
    let local = listener.local_addr().map_err(io_err("local address"))?;
    tracing::info!(%local, dir = %opts.dir.display(), "page server listening");
    if opts.daemon {
        // SAFETY: criu is single-threaded here; the child goes on with its own copy of this
        // process and only returns through this function.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io_err("fork")(std::io::Error::last_os_error()));
        }
        if pid > 0 {
            let started = opts
                .pidfile
                .as_ref()
                .map_or(Ok(()), |p| {
                    std::fs::write(p, format!("{pid}\n"))
                        .map_err(io_err(format!("write {}", p.display())))
                })
                .and_then(|()| status_ready(ready, opts.status_fd));
            if let Err(e) = started {
                // SAFETY: `pid` is the child forked above, not yet reaped: it is killed and
                // reaped here, nothing else waits for it.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
                return Err(e);
            }
            return Ok(Some((pid, local.port())));
        }
        // SAFETY: setsid takes no arguments; the status descriptor is the foreground
        // process's to write and close (this copy of it is closed so that a reader sees the
        // end of it when that one closes its own).
        unsafe {
            libc::setsid();
            if let Some(fd) = opts.status_fd {
                libc::close(fd);
            }
        }
        let code = match listener.accept() {
            Ok((sock, _)) => {
                drop(listener);
                match serve_session(sock, opts) {
                    Ok(()) => 0,
                    Err(_) => 1,
                }
            }
            Err(e) => {
                tracing::error!("accept: {e}");
                1
            }
        };
        // The background server never returns into its caller (an RPC session, say).
        std::process::exit(code);
    } else {
        if let Some(p) = &opts.pidfile {
            std::fs::write(p, format!("{}\n", std::process::id()))
                .map_err(io_err(format!("write {}", p.display())))?;
        }
        status_ready(ready, opts.status_fd)?;
    }
    let (sock, peer) = listener.accept().map_err(io_err("accept"))?;
    drop(listener);
    tracing::info!(%peer, "page server session");
    serve_session(sock, opts)?;
    Ok(None)
}

fn serve_session(sock: TcpStream, opts: &ServerOptions) -> Result<(), PageServerError> {
    let _ = sock.set_nodelay(true);
    let sock = if opts.tls.enabled {
        let peer = sock
            .peer_addr()
            .map_or_else(|_| "the client".to_string(), |a| a.to_string());
        super::tls::server(sock, &peer, &opts.tls)?
    } else {
        super::tls::Stream::Plain(sock)
    };
    if opts.lazy {
        super::lazy::serve_lazy(sock, &opts.dir).map(|_| ())
    } else {
        serve(sock, &opts.dir)
    }
}

/// CRIU's `status_ready`: the `status-ready` stage (action scripts, an RPC client asked with
/// `notify_scripts`; no pid, as CRIU's), then the `--status-fd` byte.
///
/// # Errors
/// [`PageServerError::StatusReady`] when a script fails or the client refuses; nothing is
/// written to the status descriptor then.
pub(crate) fn status_ready(ready: &dyn Notify, fd: Option<i32>) -> Result<(), PageServerError> {
    ready
        .notify(ScriptAction::StatusReady, None)
        .map_err(PageServerError::StatusReady)?;
    tell_status(fd);
    Ok(())
}

/// `--status-fd`: one zero byte, then the descriptor is closed.
pub(crate) fn tell_status(fd: Option<i32>) {
    if let Some(fd) = fd {
        // SAFETY: writes one byte from a live buffer to a descriptor the caller handed us, then
        // closes it (it is ours to close).
        unsafe {
            let zero = [0u8; 1];
            libc::write(fd, zero.as_ptr().cast(), 1);
            libc::close(fd);
        }
    }
}

/// One pagemap being received.
struct Open {
    dst: u64,
    pagemap_path: PathBuf,
    pages_path: PathBuf,
    pm: Pagemap,
    pages: BufWriter<File>,
    has_parent: bool,
}

impl Open {
    fn finish(mut self) -> Result<(), PageServerError> {
        self.pages
            .flush()
            .map_err(io_err(format!("write {}", self.pages_path.display())))?;
        self.pm.write(&self.pagemap_path)?;
        Ok(())
    }

    fn abandon(self) {
        let _ = std::fs::remove_file(&self.pages_path);
        let _ = std::fs::remove_file(&self.pagemap_path);
    }
}

/// Largest range one entry may name (the x86_64 user address space).
const MAX_PAGES: u64 = (1 << 47) / PAGE_SIZE;

/// Serves one session on `sock`, writing into `dir`.
///
/// # Errors
/// [`PageServerError::Protocol`] for a broken or unfinished session, [`PageServerError::Io`]
/// and [`PageServerError::Image`] for the files; the unfinished pagemap is removed.
pub fn serve(mut sock: impl Read + Write, dir: &Path) -> Result<(), PageServerError> {
    let mut cur: Option<Open> = None;
    let mut next_id = FIRST_PAGES_ID;
    let r = (|| {
        loop {
            let mut b = [0u8; IOV_SIZE];
            match read_full(&mut sock, &mut b) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(PageServerError::Protocol(
                        "the client went away before closing the session".into(),
                    ));
                }
                Err(e) => return Err(io_err("receive a command")(e)),
            }
            let iov = PsIov::decode(&b);
            match iov.command() {
                PS_IOV_OPEN | PS_IOV_OPEN2 => {
                    if let Some(o) = cur.take() {
                        o.finish()?;
                    }
                    let o = open(dir, iov.dst_id, &mut next_id)?;
                    if iov.command() == PS_IOV_OPEN2 {
                        sock.write_all(&[u8::from(o.has_parent)])
                            .map_err(io_err("answer an open"))?;
                    }
                    cur = Some(o);
                }
                PS_IOV_PARENT => {
                    let has = parent_has(dir, iov.dst_id)?;
                    sock.write_all(&i32::from(has).to_ne_bytes())
                        .map_err(io_err("answer a parent query"))?;
                }
                PS_IOV_ADD_F | PS_IOV_ADD | PS_IOV_HOLE => {
                    let flags = match iov.command() {
                        PS_IOV_ADD_F => iov.flags(),
                        PS_IOV_ADD => PE_PRESENT,
                        _ => PE_PARENT,
                    };
                    if cur.as_ref().is_none_or(|o| o.dst != iov.dst_id) {
                        if let Some(o) = cur.take() {
                            o.finish()?;
                        }
                        cur = Some(open(dir, iov.dst_id, &mut next_id)?);
                    }
                    let Some(o) = cur.as_mut() else {
                        continue;
                    };
                    add(&mut sock, o, &iov, flags)?;
                }
                PS_IOV_CLOSE | PS_IOV_FORCE_CLOSE => {
                    if let Some(o) = cur.take() {
                        o.finish()?;
                    }
                    sock.write_all(&0i32.to_ne_bytes())
                        .map_err(io_err("answer the close"))?;
                    // Wait for the client to close first (no TIME_WAIT here).
                    let mut c = [0u8; 1];
                    let _ = sock.read(&mut c);
                    return Ok(());
                }
                PS_IOV_GET => {
                    return Err(PageServerError::Protocol(
                        "PS_IOV_GET outside a lazy-pages session (start the server with \
                         --lazy-pages)"
                            .into(),
                    ));
                }
                other => {
                    return Err(PageServerError::Protocol(format!(
                        "unknown command {other:#x}"
                    )));
                }
            }
        }
    })();
    if let Err(e) = &r {
        tracing::error!("session failed: {e}");
        if let Some(o) = cur.take() {
            o.abandon();
        }
    }
    r
}

/// Reads exactly `b`; `Ok(false)` on a clean end of stream before the first byte.
fn read_full(sock: &mut impl Read, b: &mut [u8]) -> std::io::Result<bool> {
    let mut got = 0;
    while got < b.len() {
        match sock.read(&mut b[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn pagemap_name(dst: u64) -> Result<String, PageServerError> {
    match decode_dst(dst) {
        Some((true, pid)) if pid > 0 && pid <= u64::from(u32::MAX) => {
            Ok(names::pagemap(pid as u32))
        }
        Some((false, shmid)) => Ok(names::pagemap_shmem(shmid)),
        _ => Err(PageServerError::Protocol(format!(
            "unknown pagemap {dst:#x} (type {})",
            dst & 0xff
        ))),
    }
}

fn parent_has(dir: &Path, dst: u64) -> Result<bool, PageServerError> {
    let name = pagemap_name(dst)?;
    Ok(dir.join("parent").join(name).exists())
}

fn open(dir: &Path, dst: u64, next_id: &mut u32) -> Result<Open, PageServerError> {
    let name = pagemap_name(dst)?;
    let pages_id = *next_id;
    *next_id += 1;
    let pages_path = dir.join(names::pages(pages_id));
    let f =
        File::create(&pages_path).map_err(io_err(format!("create {}", pages_path.display())))?;
    tracing::debug!(%name, pages_id, "pagemap opened");
    Ok(Open {
        dst,
        pagemap_path: dir.join(&name),
        pages_path,
        pm: Pagemap {
            pages_id,
            entries: Vec::new(),
        },
        pages: BufWriter::with_capacity(1 << 20, f),
        has_parent: parent_has(dir, dst)?,
    })
}

fn add(sock: &mut impl Read, o: &mut Open, iov: &PsIov, flags: u32) -> Result<(), PageServerError> {
    if !iov.vaddr.is_multiple_of(PAGE_SIZE)
        || iov.nr_pages == 0
        || iov.nr_pages > MAX_PAGES
        || iov.vaddr.checked_add(iov.nr_pages * PAGE_SIZE).is_none()
    {
        return Err(PageServerError::Protocol(format!(
            "bad range {:#x} + {} pages",
            iov.vaddr, iov.nr_pages
        )));
    }
    if flags & !(PE_PARENT | PE_LAZY | PE_PRESENT) != 0
        || flags & (PE_PARENT | PE_PRESENT) == 0
        || flags & PE_PARENT != 0 && flags & PE_PRESENT != 0
    {
        return Err(PageServerError::Protocol(format!(
            "bad pagemap flags {flags:#x}"
        )));
    }
    if flags & PE_PARENT != 0 && !o.has_parent {
        return Err(PageServerError::Protocol(format!(
            "pages {:#x} + {} are in the parent, but there are no parent images (start the \
             page server with --prev-images-dir)",
            iov.vaddr, iov.nr_pages
        )));
    }
    o.pm.push(iov.vaddr, iov.nr_pages, flags);
    if flags & PE_PRESENT != 0 {
        let len = iov.nr_pages * PAGE_SIZE;
        let copied = std::io::copy(&mut (&mut *sock).take(len), &mut o.pages)
            .map_err(io_err(format!("receive pages at {:#x}", iov.vaddr)))?;
        if copied != len {
            return Err(PageServerError::Protocol(format!(
                "the client went away in the middle of the pages at {:#x} ({copied} of {len} bytes)",
                iov.vaddr
            )));
        }
    }
    Ok(())
}
