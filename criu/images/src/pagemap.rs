//! Pagemaps: which pages of a task's memory are saved, and where their contents are in the raw
//! `pages-N.img` file.
//!
//! `pagemap-PID.img` (or `pagemap-shmem-ID.img`) holds one [`PagemapHead`] (naming the pages file
//! by its id) and then [`PagemapEntry`]s in address order. Entries flagged [`PE_PRESENT`] have
//! their pages, one after the other, in `pages-<pages_id>.img`; [`PE_PARENT`] entries are in the
//! parent checkpoint; [`PE_LAZY`] ones may be restored lazily.

use std::io::{Read, Write};
use std::path::Path;

use crate::error::ImageError;
use crate::image::{ImageReader, ImageWriter};
use crate::magic;
use crate::names;
use crate::pb::{PagemapEntry, PagemapHead};

/// Page size of the images (x86_64).
pub const PAGE_SIZE: u64 = 4096;
/// The pages are in the parent checkpoint.
pub const PE_PARENT: u32 = 1 << 0;
/// The pages may be restored lazily.
pub const PE_LAZY: u32 = 1 << 1;
/// The pages are in this checkpoint's pages file.
pub const PE_PRESENT: u32 = 1 << 2;

impl PagemapEntry {
    /// A new-style entry of `nr_pages` pages at `vaddr` with `flags`.
    pub fn new(vaddr: u64, nr_pages: u64, flags: u32) -> Self {
        Self {
            vaddr,
            compat_nr_pages: 0,
            in_parent: None,
            flags: Some(flags),
            nr_pages: Some(nr_pages),
        }
    }

    /// Number of pages (new `nr_pages`, or the old `compat_nr_pages`).
    pub fn pages(&self) -> u64 {
        self.nr_pages.unwrap_or(u64::from(self.compat_nr_pages))
    }

    /// Flags (new `flags`, or derived from the old `in_parent`).
    pub fn effective_flags(&self) -> u32 {
        match self.flags {
            Some(f) => f,
            None if self.in_parent == Some(true) => PE_PARENT,
            None => PE_PRESENT,
        }
    }

    /// Whether the pages are in this checkpoint's pages file.
    pub fn is_present(&self) -> bool {
        self.effective_flags() & PE_PRESENT != 0
    }

    /// End address (exclusive), if it does not overflow.
    pub fn end(&self) -> Option<u64> {
        self.pages()
            .checked_mul(PAGE_SIZE)
            .and_then(|l| self.vaddr.checked_add(l))
    }
}

/// One run of saved pages with its place in the pages file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRun {
    /// Start address in the task.
    pub vaddr: u64,
    /// Number of pages.
    pub nr_pages: u64,
    /// Flags (`PE_*`).
    pub flags: u32,
    /// Offset of the first page in `pages-N.img` (meaningful when [`PE_PRESENT`]).
    pub file_offset: u64,
}

impl PageRun {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.nr_pages * PAGE_SIZE
    }

    /// Whether the run has no pages.
    pub fn is_empty(&self) -> bool {
        self.nr_pages == 0
    }
}

/// A whole pagemap image.
///
/// ```no_run
/// use criu_images::pagemap::Pagemap;
/// let pm = Pagemap::read("dir/pagemap-42.img")?;
/// let pages = std::fs::read(std::path::Path::new("dir").join(pm.pages_file_name()))?;
/// for run in pm.runs()? {
///     let bytes = &pages[run.file_offset as usize..][..run.len() as usize];
///     println!("{:#x}: {} pages, first byte {:#x}", run.vaddr, run.nr_pages, bytes[0]);
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pagemap {
    /// Id of the pages file (`pages-<id>.img`).
    pub pages_id: u32,
    /// Entries in address order.
    pub entries: Vec<PagemapEntry>,
}

impl Pagemap {
    /// Reads a pagemap image file.
    ///
    /// # Errors
    /// I/O and format errors; a missing head.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, ImageError> {
        Self::read_from(ImageReader::open_expect(path, magic::PAGEMAP)?)
    }

    /// Reads a pagemap from an opened image.
    ///
    /// # Errors
    /// Format errors; a missing head.
    pub fn read_from<R: Read>(mut r: ImageReader<R>) -> Result<Self, ImageError> {
        let head: PagemapHead = r.read_one()?;
        let entries = r.read_entries::<PagemapEntry>()?;
        let pm = Self {
            pages_id: head.pages_id,
            entries,
        };
        // Validate address arithmetic once, so that runs() users need not.
        pm.runs().map_err(|what| ImageError::Invalid {
            file: r.file().into(),
            offset: 0,
            what,
        })?;
        Ok(pm)
    }

    /// Writes the pagemap image to `path`.
    ///
    /// # Errors
    /// I/O errors.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), ImageError> {
        let w = ImageWriter::create(path, magic::PAGEMAP)?;
        self.write_to(w)?.finish()?;
        Ok(())
    }

    /// Writes the head and entries to an image writer (created with [`magic::PAGEMAP`]).
    ///
    /// # Errors
    /// I/O errors.
    pub fn write_to<W: Write>(&self, mut w: ImageWriter<W>) -> Result<ImageWriter<W>, ImageError> {
        w.write_entry(&PagemapHead {
            pages_id: self.pages_id,
        })?;
        for e in &self.entries {
            w.write_entry(e)?;
        }
        Ok(w)
    }

    /// Name of the pages file of this pagemap.
    pub fn pages_file_name(&self) -> String {
        names::pages(self.pages_id)
    }

    /// Appends a run, merging it into the previous entry when contiguous with equal flags.
    pub fn push(&mut self, vaddr: u64, nr_pages: u64, flags: u32) {
        if let Some(last) = self.entries.last_mut()
            && last.effective_flags() == flags
            && last.flags.is_some()
            && last.end() == Some(vaddr)
        {
            last.nr_pages = Some(last.pages() + nr_pages);
            return;
        }
        self.entries.push(PagemapEntry::new(vaddr, nr_pages, flags));
    }

    /// The runs with their offsets in the pages file.
    ///
    /// # Errors
    /// A description of the first entry whose address range or file offset overflows, or that is
    /// not page aligned.
    pub fn runs(&self) -> Result<Vec<PageRun>, String> {
        let mut off: u64 = 0;
        let mut out = Vec::with_capacity(self.entries.len());
        for (i, e) in self.entries.iter().enumerate() {
            if e.vaddr % PAGE_SIZE != 0 {
                return Err(format!(
                    "pagemap entry {i}: vaddr {:#x} not page aligned",
                    e.vaddr
                ));
            }
            let len = e.pages().checked_mul(PAGE_SIZE);
            let end = e.end();
            let (Some(len), Some(_)) = (len, end) else {
                return Err(format!(
                    "pagemap entry {i}: {:#x} + {} pages overflows",
                    e.vaddr,
                    e.pages()
                ));
            };
            let flags = e.effective_flags();
            out.push(PageRun {
                vaddr: e.vaddr,
                nr_pages: e.pages(),
                flags,
                file_offset: off,
            });
            if flags & PE_PRESENT != 0 {
                off = off
                    .checked_add(len)
                    .ok_or_else(|| format!("pagemap entry {i}: pages file offset overflows"))?;
            }
        }
        Ok(out)
    }

    /// Total number of pages stored in the pages file.
    pub fn present_pages(&self) -> u64 {
        self.entries
            .iter()
            .filter(|e| e.is_present())
            .map(|e| e.pages())
            .sum()
    }
}
