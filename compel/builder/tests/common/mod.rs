//! Helpers of the builder's tests: build a parasite into a temporary directory, place a blob in
//! this process's memory at a random address.
#![allow(dead_code)]

use compel_builder::{Builder, Built, ParasiteOptions};
use compel_proto::blob::{BLOB_PAGE_SIZE, BlobDesc};
use std::path::{Path, PathBuf};

/// The builder's own directory.
pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds the parasite crate at `dir` into `out`.
pub fn build(dir: &Path, out: &Path) -> Built {
    let builder = Builder::new(out);
    match builder.build_rust(dir, &ParasiteOptions::default()) {
        Ok(b) => b,
        Err(e) => panic!("building {}: {e}", dir.display()),
    }
}

/// A blob placed in this process: text R+X, data and bss R+W, relocated for its address.
pub struct Placed {
    pub base: usize,
    pub size: usize,
}

impl Placed {
    /// Maps `blob` at a random page-aligned address, copies it, applies the relocations and
    /// protects the text.
    pub fn new(blob: &BlobDesc<'_>) -> Placed {
        let size = blob.map_size();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as usize ^ d.as_secs() as usize)
            .unwrap_or(12345);
        let mut base = 0;
        for attempt in 0..16usize {
            let hint = 0x2000_0000_0000
                + ((nanos.wrapping_mul(2654435761).wrapping_add(attempt * 7919)) & 0xff_ffff)
                    * BLOB_PAGE_SIZE;
            // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping.
            let p = unsafe {
                libc::mmap(
                    hint as *mut libc::c_void,
                    size,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                    -1,
                    0,
                )
            };
            if p != libc::MAP_FAILED {
                base = p as usize;
                break;
            }
        }
        assert_ne!(base, 0, "no free address found");
        // SAFETY: [base, base + size) is the fresh mapping made above, only ours.
        let mem = unsafe { std::slice::from_raw_parts_mut(base as *mut u8, size) };
        blob.copy_into(mem).expect("copy");
        blob.apply_relocs(mem, base as u64).expect("relocate");
        if blob.text_size > 0 {
            // SAFETY: the text part of our own mapping; nothing writes it any more.
            let r = unsafe {
                libc::mprotect(
                    base as *mut libc::c_void,
                    blob.text_size.div_ceil(BLOB_PAGE_SIZE) * BLOB_PAGE_SIZE,
                    libc::PROT_READ | libc::PROT_EXEC,
                )
            };
            assert_eq!(r, 0, "mprotect");
        }
        Placed { base, size }
    }

    /// The address of the symbol at `offset`.
    pub fn addr(&self, offset: usize) -> usize {
        self.base + offset
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        // SAFETY: the mapping made in new(), no longer used (functions of it have returned).
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.size) };
    }
}
