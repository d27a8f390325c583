//! The blob format: what `compel pack` writes and what the runtime infects.
//!
//! A blob is a flat image meant to be placed at any page-aligned address `base`:
//!
//! ```text
//! [0, text_size)                       code and read-only data   (mapped R+X)
//! [text_size, text_size + data_size)   data                      (mapped R+W)
//! [image_len, image_len + bss_size)    zero-filled               (mapped R+W)
//! ```
//!
//! The image as stored is linked for `base == 0`. Each relocation is the offset of a 64-bit
//! little-endian word in the image to which `base` must be added once the image is in place
//! (what ELF calls `R_X86_64_RELATIVE` with the addend already stored in the word). Symbols are
//! offsets from `base` of the exported entry points and data.
//!
//! On disk (`compel pack`), a [`BlobHeader`] is followed by the image, the relocation table (one
//! `u32` little-endian offset each), the symbol records ([`SymbolRecord`]) and their names.
//! Every field is little-endian.

use crate::Plain;
use core::fmt;

/// The first eight bytes of a blob file.
pub const BLOB_MAGIC: [u8; 8] = *b"CMPLBLOB";
/// The version of the blob format this crate reads and writes.
pub const BLOB_VERSION: u32 = 1;
/// The page size the image layout is aligned to: `text_size` is a multiple of it and the image
/// must be placed at an address aligned to it.
pub const BLOB_PAGE_SIZE: usize = 4096;
/// The name of the symbol the standard entry stub (compel-plugins `std`) defines: the default
/// entry point of a parasite.
pub const DEFAULT_ENTRY: &str = "__export_parasite_head";
/// Symbols whose names start with this prefix are exported: their offsets are recorded in the
/// blob and in the generated code.
pub const EXPORT_PREFIX: &str = "__export_";

/// The header at the start of a blob file.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobHeader {
    /// [`BLOB_MAGIC`].
    pub magic: [u8; 8],
    /// [`BLOB_VERSION`].
    pub version: u32,
    /// `size_of::<BlobHeader>()`; a later version may grow the header.
    pub header_size: u32,
    /// Bytes of code and read-only data at the start of the image (a multiple of
    /// [`BLOB_PAGE_SIZE`]).
    pub text_size: u32,
    /// Bytes of initialised writable data after the text.
    pub data_size: u32,
    /// Bytes of zero-filled writable memory after the image.
    pub bss_size: u32,
    /// Offset of the entry point.
    pub entry: u32,
    /// File offset of the image (`text_size + data_size` bytes).
    pub image_off: u32,
    /// File offset of the relocation table.
    pub relocs_off: u32,
    /// Number of relocations (`u32` each).
    pub relocs_count: u32,
    /// File offset of the symbol records.
    pub syms_off: u32,
    /// Number of symbol records.
    pub syms_count: u32,
    /// File offset of the symbol names.
    pub strtab_off: u32,
    /// Bytes of symbol names.
    pub strtab_size: u32,
    /// Reserved, zero.
    pub flags: u32,
}
const _: () = assert!(core::mem::size_of::<BlobHeader>() == 64);
// SAFETY: repr(C), only integers and byte arrays, no padding (8 + 14 * 4 = 64).
unsafe impl Plain for BlobHeader {}

/// One exported symbol in a blob file.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SymbolRecord {
    /// Offset of the name in the string table.
    pub name_off: u32,
    /// Length of the name in bytes (no terminator).
    pub name_len: u32,
    /// Offset of the symbol from the load base.
    pub offset: u32,
    /// Reserved, zero.
    pub reserved: u32,
}
const _: () = assert!(core::mem::size_of::<SymbolRecord>() == 16);
// SAFETY: repr(C), four u32, no padding.
unsafe impl Plain for SymbolRecord {}

/// What is wrong with a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobError {
    /// The file is shorter than its header says.
    Truncated {
        /// What was being read.
        what: &'static str,
    },
    /// The file does not start with [`BLOB_MAGIC`].
    BadMagic,
    /// The file is of a format version this crate does not read.
    BadVersion {
        /// The version found.
        version: u32,
    },
    /// The layout is inconsistent.
    BadLayout {
        /// Which rule was broken.
        what: &'static str,
    },
    /// A relocation points outside the image.
    BadReloc {
        /// The relocation's offset.
        offset: usize,
    },
    /// A symbol name is not UTF-8 or lies outside the string table.
    BadSymbol {
        /// The index of the symbol record.
        index: usize,
    },
    /// The memory given to [`BlobDesc::copy_into`] or [`BlobDesc::apply_relocs`] is too small.
    MemTooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes given.
        have: usize,
    },
}

impl fmt::Display for BlobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { what } => write!(f, "blob truncated: {what} extends past the end"),
            Self::BadMagic => f.write_str("not a compel blob (bad magic)"),
            Self::BadVersion { version } => {
                write!(
                    f,
                    "unsupported blob version {version} (this reader knows {BLOB_VERSION})"
                )
            }
            Self::BadLayout { what } => write!(f, "bad blob layout: {what}"),
            Self::BadReloc { offset } => {
                write!(f, "relocation at offset {offset:#x} lies outside the image")
            }
            Self::BadSymbol { index } => write!(f, "bad name for symbol #{index}"),
            Self::MemTooSmall { need, have } => {
                write!(f, "blob needs {need} bytes of memory, {have} given")
            }
        }
    }
}

impl core::error::Error for BlobError {}

/// One exported symbol: a name and its offset from the load base.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Symbol<'a> {
    /// The symbol's name as linked (e.g. `__export_parasite_head`).
    pub name: &'a str,
    /// Its offset from the load base.
    pub offset: usize,
}

/// The relocation table of a blob: offsets of 64-bit words that need the load base added.
#[derive(Clone, Copy, Debug)]
pub enum Relocs<'a> {
    /// A table compiled into the program (generated by `compel hgen`).
    Slice(&'a [u32]),
    /// A table read from a blob file: `u32` little-endian values, checked by [`BlobDesc::parse`].
    Le(&'a [u8]),
}

impl<'a> Relocs<'a> {
    /// The number of relocations.
    pub fn len(&self) -> usize {
        match self {
            Self::Slice(s) => s.len(),
            Self::Le(b) => b.len() / 4,
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The relocation offsets in table order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + 'a {
        let (slice, bytes): (&'a [u32], &'a [u8]) = match *self {
            Self::Slice(s) => (s, &[]),
            Self::Le(b) => (&[], b),
        };
        slice.iter().map(|&o| o as usize).chain(
            bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize),
        )
    }
}

/// The exported symbols of a blob.
#[derive(Clone, Copy, Debug)]
pub enum Symbols<'a> {
    /// A table compiled into the program (generated by `compel hgen`).
    Slice(&'a [Symbol<'a>]),
    /// Records and names read from a blob file, checked by [`BlobDesc::parse`].
    Table {
        /// [`SymbolRecord`]s, little-endian.
        records: &'a [u8],
        /// The names.
        strtab: &'a [u8],
    },
}

impl<'a> Symbols<'a> {
    /// The number of symbols.
    pub fn len(&self) -> usize {
        match self {
            Self::Slice(s) => s.len(),
            Self::Table { records, .. } => records.len() / core::mem::size_of::<SymbolRecord>(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The symbol at `index`, if it exists and is well formed.
    pub fn get(&self, index: usize) -> Option<Symbol<'a>> {
        match *self {
            Self::Slice(s) => s.get(index).copied(),
            Self::Table { records, strtab } => {
                let size = core::mem::size_of::<SymbolRecord>();
                let rec: SymbolRecord = crate::read_plain(records.get(index * size..)?)?;
                let start = rec.name_off as usize;
                let end = start.checked_add(rec.name_len as usize)?;
                let name = core::str::from_utf8(strtab.get(start..end)?).ok()?;
                Some(Symbol {
                    name,
                    offset: rec.offset as usize,
                })
            }
        }
    }

    /// All symbols in table order.
    pub fn iter(&self) -> impl Iterator<Item = Symbol<'a>> + 'a {
        let this = *self;
        (0..this.len()).filter_map(move |i| this.get(i))
    }

    /// The offset of the symbol called `name`.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.iter().find(|s| s.name == name).map(|s| s.offset)
    }
}

/// A blob in memory: everything the runtime needs to place it in a task and start it.
///
/// Built by the code `compel hgen` generates (`blob()`), or by [`BlobDesc::parse`] from a file
/// `compel pack` wrote.
#[derive(Clone, Copy, Debug)]
pub struct BlobDesc<'a> {
    /// Text then data, linked for load base 0.
    pub image: &'a [u8],
    /// Bytes of code and read-only data at the start of `image` (a multiple of
    /// [`BLOB_PAGE_SIZE`], or all of `image` when it has no data).
    pub text_size: usize,
    /// Zero-filled bytes after `image`.
    pub bss_size: usize,
    /// Offset of the entry point.
    pub entry: usize,
    /// Words that need the load base added.
    pub relocs: Relocs<'a>,
    /// Exported symbols.
    pub symbols: Symbols<'a>,
}

impl<'a> BlobDesc<'a> {
    /// Reads a blob file written by `compel pack` (or [`BlobDesc`] serialised by the builder),
    /// borrowing from `file`.
    ///
    /// # Errors
    /// A [`BlobError`] naming what is wrong: the file is untrusted and fully checked.
    pub fn parse(file: &'a [u8]) -> Result<Self, BlobError> {
        let hdr: BlobHeader =
            crate::read_plain(file).ok_or(BlobError::Truncated { what: "header" })?;
        if hdr.magic != BLOB_MAGIC {
            return Err(BlobError::BadMagic);
        }
        if hdr.version != BLOB_VERSION {
            return Err(BlobError::BadVersion {
                version: hdr.version,
            });
        }
        if (hdr.header_size as usize) < core::mem::size_of::<BlobHeader>() {
            return Err(BlobError::BadLayout {
                what: "header size too small",
            });
        }
        let image_len = (hdr.text_size as usize)
            .checked_add(hdr.data_size as usize)
            .ok_or(BlobError::BadLayout {
                what: "image size overflows",
            })?;
        let image = range(file, hdr.image_off, image_len, "image")?;
        let relocs = range(
            file,
            hdr.relocs_off,
            (hdr.relocs_count as usize).saturating_mul(4),
            "relocations",
        )?;
        let records = range(
            file,
            hdr.syms_off,
            (hdr.syms_count as usize).saturating_mul(core::mem::size_of::<SymbolRecord>()),
            "symbols",
        )?;
        let strtab = range(
            file,
            hdr.strtab_off,
            hdr.strtab_size as usize,
            "symbol names",
        )?;
        let desc = BlobDesc {
            image,
            text_size: hdr.text_size as usize,
            bss_size: hdr.bss_size as usize,
            entry: hdr.entry as usize,
            relocs: Relocs::Le(relocs),
            symbols: Symbols::Table { records, strtab },
        };
        desc.validate()?;
        Ok(desc)
    }

    /// Checks the layout rules: text within the image and page-aligned (unless it is the whole
    /// image), entry in the text, relocations inside the image, symbols well formed and inside
    /// the memory the blob occupies.
    ///
    /// # Errors
    /// The first rule broken.
    pub fn validate(&self) -> Result<(), BlobError> {
        if self.text_size > self.image.len() {
            return Err(BlobError::BadLayout {
                what: "text larger than the image",
            });
        }
        if !self.text_size.is_multiple_of(BLOB_PAGE_SIZE) && self.text_size != self.image.len() {
            return Err(BlobError::BadLayout {
                what: "text size not page-aligned",
            });
        }
        if self.entry >= self.text_size {
            return Err(BlobError::BadLayout {
                what: "entry point outside the text",
            });
        }
        if self.image.len().checked_add(self.bss_size).is_none() {
            return Err(BlobError::BadLayout {
                what: "memory size overflows",
            });
        }
        for offset in self.relocs.iter() {
            if offset
                .checked_add(8)
                .is_none_or(|end| end > self.image.len())
            {
                return Err(BlobError::BadReloc { offset });
            }
        }
        for index in 0..self.symbols.len() {
            match self.symbols.get(index) {
                Some(sym) if sym.offset <= self.mem_size() => {}
                _ => return Err(BlobError::BadSymbol { index }),
            }
        }
        Ok(())
    }

    /// Bytes of memory the blob occupies once placed: image plus bss.
    pub fn mem_size(&self) -> usize {
        self.image.len() + self.bss_size
    }

    /// [`mem_size`](Self::mem_size) rounded up to whole pages: what to map.
    pub fn map_size(&self) -> usize {
        self.mem_size().div_ceil(BLOB_PAGE_SIZE) * BLOB_PAGE_SIZE
    }

    /// Bytes of initialised writable data.
    pub fn data_size(&self) -> usize {
        self.image.len() - self.text_size
    }

    /// The offset of the exported symbol `name`.
    pub fn symbol(&self, name: &str) -> Option<usize> {
        self.symbols.find(name)
    }

    /// Copies the image into `mem` and zero-fills the bss after it. Relocations are not applied.
    ///
    /// # Errors
    /// [`BlobError::MemTooSmall`] if `mem` is shorter than [`mem_size`](Self::mem_size).
    pub fn copy_into(&self, mem: &mut [u8]) -> Result<(), BlobError> {
        let need = self.mem_size();
        let Some(dst) = mem.get_mut(..need) else {
            return Err(BlobError::MemTooSmall {
                need,
                have: mem.len(),
            });
        };
        dst[..self.image.len()].copy_from_slice(self.image);
        dst[self.image.len()..].fill(0);
        Ok(())
    }

    /// Applies the relocations to a copy of the image in `mem` that will run at address `base`.
    /// Apply them once: each adds `base` to a word.
    ///
    /// # Errors
    /// [`BlobError::MemTooSmall`] or [`BlobError::BadReloc`].
    pub fn apply_relocs(&self, mem: &mut [u8], base: u64) -> Result<(), BlobError> {
        if mem.len() < self.image.len() {
            return Err(BlobError::MemTooSmall {
                need: self.image.len(),
                have: mem.len(),
            });
        }
        for offset in self.relocs.iter() {
            let word = offset
                .checked_add(8)
                .and_then(|end| mem.get_mut(offset..end))
                .ok_or(BlobError::BadReloc { offset })?;
            let mut v = [0u8; 8];
            v.copy_from_slice(word);
            word.copy_from_slice(&u64::from_le_bytes(v).wrapping_add(base).to_le_bytes());
        }
        Ok(())
    }
}

fn range<'a>(
    file: &'a [u8],
    off: u32,
    len: usize,
    what: &'static str,
) -> Result<&'a [u8], BlobError> {
    let start = off as usize;
    start
        .checked_add(len)
        .and_then(|end| file.get(start..end))
        .ok_or(BlobError::Truncated { what })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relocs_add_base_once_per_word() {
        let mut image = [0u8; 32];
        image[8..16].copy_from_slice(&0x10u64.to_le_bytes());
        image[24..32].copy_from_slice(&0x18u64.to_le_bytes());
        let desc = BlobDesc {
            image: &image,
            text_size: 32,
            bss_size: 0,
            entry: 0,
            relocs: Relocs::Slice(&[8, 24]),
            symbols: Symbols::Slice(&[]),
        };
        desc.validate().unwrap();
        let mut mem = [0u8; 32];
        desc.copy_into(&mut mem).unwrap();
        desc.apply_relocs(&mut mem, 0x7000_0000).unwrap();
        assert_eq!(
            u64::from_le_bytes(mem[8..16].try_into().unwrap()),
            0x7000_0010
        );
        assert_eq!(
            u64::from_le_bytes(mem[24..32].try_into().unwrap()),
            0x7000_0018
        );
        assert_eq!(&mem[..8], &[0; 8]);
    }

    #[test]
    fn reloc_past_the_image_is_rejected() {
        let image = [0u8; 16];
        let desc = BlobDesc {
            image: &image,
            text_size: 16,
            bss_size: 0,
            entry: 0,
            relocs: Relocs::Slice(&[9]),
            symbols: Symbols::Slice(&[]),
        };
        assert_eq!(desc.validate(), Err(BlobError::BadReloc { offset: 9 }));
    }

    #[test]
    fn parse_rejects_garbage() {
        assert_eq!(
            BlobDesc::parse(b"short").unwrap_err(),
            BlobError::Truncated { what: "header" }
        );
        let mut f = [0u8; 64];
        assert_eq!(BlobDesc::parse(&f).unwrap_err(), BlobError::BadMagic);
        f[..8].copy_from_slice(&BLOB_MAGIC);
        f[8] = 9;
        assert_eq!(
            BlobDesc::parse(&f).unwrap_err(),
            BlobError::BadVersion { version: 9 }
        );
    }
}
