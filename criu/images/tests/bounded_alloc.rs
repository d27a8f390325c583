//! Sizes read from an image never turn into a large allocation (issue 23).
//!
//! A counting global allocator records the largest single request. Crafted images claim huge
//! sizes where an image carries a size: the entry-size word (up to `u32::MAX`), protobuf
//! length prefixes inside an entry (up to 2^63), extra payload lengths (`u64::MAX`), behind
//! every known magic, plus random bytes (fixed seed, bounded count). Every read must fail (or
//! succeed) without a panic, and no allocation may exceed [`LIMIT`]: memory follows the bytes
//! the file really holds, never what it claims.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use criu_images::json::{self, DecodeOptions};
use criu_images::{ImageReader, magic};

/// The largest single allocation any input here may cause (the inputs are a few KiB).
const LIMIT: usize = 4 << 20;

struct Counting;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; only a counter is kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LARGEST.fetch_max(l.size(), Ordering::Relaxed);
        // SAFETY: the caller's layout contract is passed on as is.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from `System.alloc` with layout `l`.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        LARGEST.fetch_max(n, Ordering::Relaxed);
        // SAFETY: as for dealloc; the new size is the caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn header(m: u32) -> Vec<u8> {
    magic::header(m)
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect()
}

/// Reads `bytes` every way an image is read: framing, entries, extra payloads, JSON decode.
fn exercise(bytes: &[u8]) {
    let name = Path::new("crafted.img");
    let _ = json::decode_image(bytes, name, DecodeOptions::pretty());
    let _ = json::info(bytes, name);
    if let Ok(mut r) = ImageReader::new(bytes, name) {
        for _ in 0..=bytes.len() {
            match r.read_entry_bytes() {
                Ok(Some(_)) => {
                    let _ = r.read_extra(u64::MAX);
                }
                Ok(None) | Err(_) => break,
            }
        }
    }
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(
        largest <= LIMIT,
        "an input of {} bytes made an allocation of {largest} bytes",
        bytes.len()
    );
}

#[test]
fn huge_claimed_sizes_allocate_nothing_large() {
    let mut rng = Rng(0x5eed_0023_0023_5eed);
    let claims: [u64; 6] = [
        u64::from(u32::MAX),
        1 << 30,
        (1 << 30) - 1,
        1 << 31,
        1 << 40,
        u64::MAX >> 1,
    ];
    for &(_, m) in magic::MAGICS {
        for &claim in &claims {
            // The entry-size word claims `claim` (as u32) but a few bytes follow.
            let mut b = header(m);
            b.extend_from_slice(&(claim as u32).to_le_bytes());
            let n = rng.below(64);
            b.extend(rng.bytes(n));
            exercise(&b);
            // A well-framed entry whose fields (1..16, length-delimited) claim `claim` bytes.
            let mut e = Vec::new();
            let field = 1 + rng.below(16) as u64;
            varint(field << 3 | 2, &mut e);
            varint(claim, &mut e);
            let n = rng.below(32);
            e.extend(rng.bytes(n));
            let mut b = header(m);
            b.extend_from_slice(&(e.len() as u32).to_le_bytes());
            b.extend(&e);
            exercise(&b);
            // A packed repeated field of `claim` varints, few of them present.
            let mut e = Vec::new();
            varint(field << 3 | 2, &mut e);
            varint(claim.min(1 << 20), &mut e);
            e.extend(std::iter::repeat_n(0x01, rng.below(100)));
            let mut b = header(m);
            b.extend_from_slice(&(e.len() as u32).to_le_bytes());
            b.extend(&e);
            exercise(&b);
        }
    }
}

#[test]
fn random_entries_allocate_only_what_they_carry() {
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let magics: Vec<u32> = magic::MAGICS.iter().map(|m| m.1).collect();
    for _ in 0..2000 {
        let m = magics[rng.below(magics.len())];
        let mut b = header(m);
        for _ in 0..1 + rng.below(3) {
            let len = rng.below(128);
            // Now and then the size word lies.
            let word = if rng.below(4) == 0 {
                rng.next() as u32
            } else {
                len as u32
            };
            b.extend_from_slice(&word.to_le_bytes());
            b.extend(rng.bytes(len));
        }
        exercise(&b);
    }
}
