//! The sending side: a dump's pagemaps and the pages they name, read from the task's memory
//! (`/proc/PID/mem`, which also reads areas the task may not read itself), sent to a page
//! server.
// Unsafe code: borrowing the page server socket a client handed over by number (RPC ps.fd).
#![allow(unsafe_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;

use crate::options::TlsOptions;
use std::os::unix::fs::FileExt;

use criu_images::Pagemap;
use criu_images::pagemap::{PAGE_SIZE, PE_PARENT, PE_PRESENT};

use super::wire::{IOV_SIZE, PS_IOV_ADD_F, PS_IOV_CLOSE, PS_IOV_OPEN2, PsIov, pid_dst};
use super::{PageServerError, io_err};

/// A connection to a page server.
#[derive(Debug)]
pub struct PageClient {
    sock: super::tls::Stream,
    peer: String,
}

impl PageClient {
    /// Connects to the page server at `address`:`port`, over TLS with `tls.enabled`.
    ///
    /// # Errors
    /// [`PageServerError::Io`] if it cannot be reached, [`PageServerError::Protocol`] if the
    /// TLS handshake fails.
    pub fn connect(
        address: &str,
        port: u16,
        tls: &TlsOptions,
    ) -> Result<PageClient, PageServerError> {
        let peer = format!("{address}:{port}");
        let sock =
            TcpStream::connect((address, port)).map_err(io_err(format!("connect to {peer}")))?;
        let _ = sock.set_nodelay(true);
        tracing::info!(%peer, "connected to the page server");
        let sock = if tls.enabled {
            super::tls::client(sock, address, tls)?
        } else {
            super::tls::Stream::Plain(sock)
        };
        Ok(PageClient { sock, peer })
    }

    /// The page server connection a dump or pre-dump uses: descriptor `fd` of criu's when the
    /// client connected it (RPC `ps.fd`, criu keeps its own copy), else a connection to
    /// `address`:`port`.
    ///
    /// # Errors
    /// [`PageServerError`] if the descriptor cannot be taken or the connection made.
    pub fn open(
        address: &str,
        port: u16,
        fd: Option<i32>,
        tls: &TlsOptions,
    ) -> Result<PageClient, PageServerError> {
        let Some(fd) = fd else {
            return PageClient::connect(address, port, tls);
        };
        let peer = format!("fd {fd}");
        // SAFETY: fcntl(F_DUPFD_CLOEXEC) takes integers only; a number that is not an open
        // descriptor fails with EBADF.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return Err(io_err(format!("take the page server socket ({peer})"))(
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: `dup` was just made and nothing else owns it.
        let own = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(dup) };
        let sock = TcpStream::from(own);
        let _ = sock.set_nodelay(true);
        tracing::info!(%peer, "page server connection given by the client");
        let sock = if tls.enabled {
            super::tls::client(sock, address, tls)?
        } else {
            super::tls::Stream::Plain(sock)
        };
        Ok(PageClient { sock, peer })
    }

    /// The connection and the server's `address:port`, for a caller that speaks its own part of
    /// the protocol (the lazy-pages daemon asks for pages).
    pub(crate) fn into_parts(self) -> (super::tls::Stream, String) {
        (self.sock, self.peer)
    }

    fn send(&mut self, iov: PsIov) -> Result<(), PageServerError> {
        self.sock
            .write_all(&iov.encode())
            .map_err(io_err(format!("send to {}", self.peer)))
    }

    /// Sends `pm`, the pagemap of `pid`, with the contents of its present pages read from the
    /// task's memory; returns the bytes of pages sent.
    ///
    /// # Errors
    /// [`PageServerError::Io`] if the task's memory or the socket fails,
    /// [`PageServerError::Protocol`] if the pagemap has parent entries and the server has no
    /// parent images.
    pub fn send_pagemap(&mut self, pid: i32, pm: &Pagemap) -> Result<u64, PageServerError> {
        let dst = pid_dst(pid as u32);
        self.send(PsIov::new(PS_IOV_OPEN2, 0, 0, 0, dst))?;
        let mut has_parent = [0u8; 1];
        self.sock
            .read_exact(&mut has_parent)
            .map_err(io_err(format!(
                "the page server {} does not answer",
                self.peer
            )))?;
        if has_parent[0] == 0
            && pm
                .entries
                .iter()
                .any(|e| e.effective_flags() & PE_PARENT != 0)
        {
            return Err(PageServerError::Protocol(format!(
                "the server has no parent images for {pid} (start it with --prev-images-dir)"
            )));
        }
        let mem = File::open(format!("/proc/{pid}/mem"))
            .map_err(io_err(format!("open the memory of {pid}")))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut sent = 0u64;
        for e in &pm.entries {
            let flags = e.effective_flags();
            self.send(PsIov::new(PS_IOV_ADD_F, flags, e.pages(), e.vaddr, dst))?;
            if flags & PE_PRESENT == 0 {
                continue;
            }
            let mut at = e.vaddr;
            let end = e.vaddr + e.pages() * PAGE_SIZE;
            while at < end {
                let n = ((end - at) as usize).min(buf.len());
                mem.read_exact_at(&mut buf[..n], at)
                    .map_err(io_err(format!("read memory of {pid} at {at:#x}")))?;
                self.sock
                    .write_all(&buf[..n])
                    .map_err(io_err(format!("send pages to {}", self.peer)))?;
                at += n as u64;
                sent += n as u64;
            }
        }
        Ok(sent)
    }

    /// Ends the session: the server finishes its images and answers its status.
    ///
    /// # Errors
    /// [`PageServerError::Io`] if it does not answer, [`PageServerError::Protocol`] for a
    /// status other than 0.
    pub fn close(mut self) -> Result<(), PageServerError> {
        self.send(PsIov::new(PS_IOV_CLOSE, 0, 0, 0, 0))?;
        let mut st = [0u8; 4];
        self.sock.read_exact(&mut st).map_err(io_err(format!(
            "the page server {} does not answer",
            self.peer
        )))?;
        let status = i32::from_ne_bytes(st);
        if status != 0 {
            return Err(PageServerError::Protocol(format!(
                "the page server {} ended with status {status}",
                self.peer
            )));
        }
        let _ = IOV_SIZE;
        Ok(())
    }
}
