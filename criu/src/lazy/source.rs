//! Where the lazy-pages daemon takes saved pages from: the images (through the parent chain)
//! or a page server asked with `PS_IOV_GET`.

use std::collections::HashMap;
use std::io::{Read, Write};

use criu_images::pagemap::{PAGE_SIZE, PE_PRESENT};

use super::images::LocalPages;
use super::{LazyError, io_err};
use crate::pageserver::wire::{IOV_SIZE, PS_IOV_ADD_F, PS_IOV_GET, PsIov};

/// Where pages come from.
pub(super) enum Source {
    Local(HashMap<i32, LocalPages>),
    Remote {
        sock: crate::pageserver::tls::Stream,
        peer: String,
    },
}

impl Source {
    /// Reads saved pages of `pid` from image address `img` into `buf` (its whole length,
    /// which lies inside one saved run).
    pub(super) fn fetch(
        &mut self,
        dir: &std::path::Path,
        pid: i32,
        img: u64,
        buf: &mut [u8],
    ) -> Result<(), LazyError> {
        match self {
            Source::Local(map) => {
                let lp = match map.entry(pid) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(LocalPages::open(dir, pid)?)
                    }
                };
                let mut at = 0;
                while at < buf.len() {
                    let n = lp.read(img + at as u64, &mut buf[at..])?;
                    if n == 0 {
                        return Err(LazyError::Image {
                            file: criu_images::names::pagemap(pid as u32),
                            reason: format!(
                                "lazy page {:#x} is not in the images (its pages are on a page \
                                 server: use --page-server)",
                                img + at as u64
                            ),
                        });
                    }
                    at += n;
                }
                Ok(())
            }
            Source::Remote { sock, peer } => {
                let nr = buf.len() as u64 / PAGE_SIZE;
                let req = PsIov::new(PS_IOV_GET, 0, nr, img, pid as u64);
                sock.write_all(&req.encode())
                    .map_err(io_err(format!("ask the page server {peer} for pages")))?;
                let mut b = [0u8; IOV_SIZE];
                sock.read_exact(&mut b)
                    .map_err(io_err(format!("the page server {peer} does not answer")))?;
                let r = PsIov::decode(&b);
                if r.command() != PS_IOV_ADD_F
                    || r.flags() & PE_PRESENT == 0
                    || r.vaddr != img
                    || r.nr_pages != nr
                {
                    return Err(LazyError::Protocol(format!(
                        "the page server {peer} answered {} pages at {:#x} (command {:#x}) \
                         for {nr} pages of task {pid} at {img:#x}",
                        r.nr_pages, r.vaddr, r.cmd
                    )));
                }
                sock.read_exact(buf).map_err(io_err(format!(
                    "receive pages of task {pid} at {img:#x} from {peer}"
                )))?;
                Ok(())
            }
        }
    }
}
