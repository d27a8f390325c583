//! [`Blob`]: an owned blob, as read from a linked image, and its file form.

use compel_proto::blob::{
    BLOB_MAGIC, BLOB_VERSION, BlobDesc, BlobHeader, Relocs, SymbolRecord, Symbols,
};
use compel_proto::{Plain, as_bytes};

/// A parasite blob: a flat image linked for load base 0, the words to relocate, the exported
/// symbols. Made by [`Blob::from_elf`]; turned into a file by [`Blob::to_bytes`] or into code by
/// [`Blob::to_rust`](crate::Blob::to_rust) / [`Blob::to_c`](crate::Blob::to_c).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    /// Text (from offset 0, `text_size` bytes) then data.
    pub image: Vec<u8>,
    /// Bytes of code and read-only data at the start of `image`.
    pub text_size: usize,
    /// Zero-filled bytes after `image`.
    pub bss_size: usize,
    /// Offset of the entry point.
    pub entry: usize,
    /// Offsets of the 64-bit words to which the load base is added, ascending.
    pub relocs: Vec<u32>,
    /// Exported symbols and their offsets, sorted by name.
    pub symbols: Vec<(String, usize)>,
}

impl Blob {
    /// Bytes of memory the blob occupies: image plus bss.
    pub fn mem_size(&self) -> usize {
        self.image.len() + self.bss_size
    }

    /// The offset of the exported symbol `name`.
    pub fn symbol(&self, name: &str) -> Option<usize> {
        self.symbols
            .iter()
            .find(|(n, _)| n == name)
            .map(|&(_, o)| o)
    }

    /// The run-time loadable file form (what `compel pack` writes): a
    /// [`BlobHeader`], the image, the relocations, the symbol records and names. Deterministic.
    pub fn to_bytes(&self) -> Vec<u8> {
        fn align8(v: &mut Vec<u8>) {
            v.resize(v.len().div_ceil(8) * 8, 0);
        }
        let hdr_size = std::mem::size_of::<BlobHeader>();
        let mut out = vec![0u8; hdr_size];
        let image_off = out.len();
        out.extend_from_slice(&self.image);
        align8(&mut out);
        let relocs_off = out.len();
        for r in &self.relocs {
            out.extend_from_slice(&r.to_le_bytes());
        }
        align8(&mut out);
        let syms_off = out.len();
        let mut strtab = Vec::new();
        for (name, offset) in &self.symbols {
            let rec = SymbolRecord {
                name_off: strtab.len() as u32,
                name_len: name.len() as u32,
                offset: *offset as u32,
                reserved: 0,
            };
            out.extend_from_slice(&record_le(&rec));
            strtab.extend_from_slice(name.as_bytes());
        }
        let strtab_off = out.len();
        out.extend_from_slice(&strtab);
        let hdr = BlobHeader {
            magic: BLOB_MAGIC,
            version: BLOB_VERSION.to_le(),
            header_size: (hdr_size as u32).to_le(),
            text_size: (self.text_size as u32).to_le(),
            data_size: ((self.image.len() - self.text_size) as u32).to_le(),
            bss_size: (self.bss_size as u32).to_le(),
            entry: (self.entry as u32).to_le(),
            image_off: (image_off as u32).to_le(),
            relocs_off: (relocs_off as u32).to_le(),
            relocs_count: (self.relocs.len() as u32).to_le(),
            syms_off: (syms_off as u32).to_le(),
            syms_count: (self.symbols.len() as u32).to_le(),
            strtab_off: (strtab_off as u32).to_le(),
            strtab_size: (strtab.len() as u32).to_le(),
            flags: 0,
        };
        out[..hdr_size].copy_from_slice(as_bytes(&hdr));
        out
    }

    /// Borrows the blob as the runtime's descriptor. The symbol table is not carried (it would
    /// borrow names this blob owns in another shape); use [`Blob::symbol`] or parse
    /// [`Blob::to_bytes`] for a descriptor with symbols.
    pub fn desc(&self) -> BlobDesc<'_> {
        BlobDesc {
            image: &self.image,
            text_size: self.text_size,
            bss_size: self.bss_size,
            entry: self.entry,
            relocs: Relocs::Slice(&self.relocs),
            symbols: Symbols::Slice(&[]),
        }
    }
}

fn record_le<T: Plain>(rec: &T) -> Vec<u8> {
    // Records are all u32 fields: write each little-endian (a no-op on x86_64, explicit anyway).
    as_bytes(rec)
        .chunks_exact(4)
        .flat_map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]).to_le_bytes())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_form_round_trips() {
        let mut image = vec![0u8; 4096 + 16];
        image[4096..4104].copy_from_slice(&0x10u64.to_le_bytes());
        let blob = Blob {
            image,
            text_size: 4096,
            bss_size: 100,
            entry: 4,
            relocs: vec![4096],
            symbols: vec![("__export_a".into(), 4), ("__export_b".into(), 4100)],
        };
        let bytes = blob.to_bytes();
        let desc = BlobDesc::parse(&bytes).unwrap();
        assert_eq!(desc.image, &blob.image[..]);
        assert_eq!((desc.text_size, desc.bss_size, desc.entry), (4096, 100, 4));
        assert_eq!(desc.relocs.iter().collect::<Vec<_>>(), vec![4096]);
        assert_eq!(desc.symbol("__export_b"), Some(4100));
        assert_eq!(desc.symbols.len(), 2);
        // Truncating anywhere is reported, never a panic.
        for len in 0..bytes.len() {
            assert!(BlobDesc::parse(&bytes[..len]).is_err(), "len {len}");
        }
    }

    #[test]
    fn corrupted_files_are_rejected_or_safe() {
        let mut image = vec![0u8; 4096 + 64];
        image[4096..4104].copy_from_slice(&0x10u64.to_le_bytes());
        let blob = Blob {
            image,
            text_size: 4096,
            bss_size: 10,
            entry: 0,
            relocs: vec![4096, 4104],
            symbols: vec![("__export_x".into(), 8)],
        };
        let clean = blob.to_bytes();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..5000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut bytes = clean.clone();
            // The header and the tables after the image.
            let at = if state.is_multiple_of(2) {
                (state >> 8) as usize % 64
            } else {
                4096 + 64 + (state >> 8) as usize % (clean.len() - 4160)
            };
            bytes[at] = (state >> 40) as u8;
            if let Ok(desc) = BlobDesc::parse(&bytes) {
                if desc.mem_size() > 1 << 20 {
                    continue; // a corrupted bss size: valid, but not worth filling here
                }
                let mut mem = vec![0u8; desc.mem_size()];
                desc.copy_into(&mut mem).unwrap();
                desc.apply_relocs(&mut mem, 0x1000).unwrap();
                let _ = desc.symbols.iter().count();
            }
        }
    }
}
