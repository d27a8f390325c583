//! Property test: the decoder never panics, whatever bytes it is given.
//!
//! A small deterministic generator (xorshift, fixed seeds, so a failure is reproducible) feeds
//! `json::decode_image`, `json::info` and `ImageReader` with: purely random bytes, random bytes
//! behind every known magic, and CRIU 4.2's fixture images with bytes flipped, cut, duplicated or
//! inserted. Each call must return `Ok` or an error that names the file; a panic fails the test.
//! A successful decode must also encode back without a panic.

mod fixture_dir;
use std::path::{Path, PathBuf};

use criu_images::json::{self, DecodeOptions};
use criu_images::{ImageReader, magic};

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

fn fixture_files() -> Vec<PathBuf> {
    let root = fixture_dir::fixtures();
    let mut out = Vec::new();
    for sub in ["single", "tree"] {
        let Ok(rd) = std::fs::read_dir(root.join(sub)) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "img")
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("pages-"))
            {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Runs every decoder over `bytes`; returns whether the full JSON decode succeeded.
fn exercise(bytes: &[u8], name: &Path) -> bool {
    let decoded = json::decode_image(bytes, name, DecodeOptions::pretty());
    let _ = json::info(bytes, name);
    if let Ok(mut r) = ImageReader::new(bytes, name) {
        // Walk the raw framing until it ends or fails; bounded by the input size.
        for _ in 0..=bytes.len() {
            match r.read_entry_bytes() {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
    match decoded {
        Ok(doc) => {
            let _ = json::encode_image(&doc, name);
            true
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.is_empty(), "an error with no message for {name:?}");
            false
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let name = Path::new("random.img");
    for _ in 0..3000 {
        let n = rng.below(300);
        exercise(&rng.bytes(n), name);
    }
}

#[test]
fn random_entries_behind_every_magic_never_panic() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let name = Path::new("magic.img");
    let magics: Vec<u32> = magic::MAGICS.iter().map(|m| m.1).collect();
    assert!(magics.len() > 30, "the magic table looks incomplete");
    for &m in &magics {
        for _ in 0..40 {
            let mut b = Vec::new();
            for word in magic::header(m) {
                b.extend_from_slice(&word.to_le_bytes());
            }
            // One or two framed entries of random protobuf-looking bytes.
            for _ in 0..1 + rng.below(2) {
                let len = rng.below(64);
                b.extend_from_slice(&(len as u32).to_le_bytes());
                b.extend(rng.bytes(len));
            }
            exercise(&b, name);
        }
    }
}

#[test]
fn mutated_fixtures_never_panic() {
    let files = fixture_files();
    assert!(
        files.len() >= 20,
        "CRIU 4.2 fixtures not found (set CRIU_FIXTURES); found {}",
        files.len()
    );
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    let mut decoded_ok = 0;
    for f in &files {
        let orig = std::fs::read(f).unwrap();
        assert!(
            exercise(&orig, f),
            "the unmodified fixture {f:?} must decode"
        );
        for _ in 0..150 {
            let mut b = orig.clone();
            match rng.below(4) {
                0 => {
                    for _ in 0..1 + rng.below(4) {
                        let i = rng.below(b.len());
                        b[i] ^= 1 << rng.below(8);
                    }
                }
                1 => b.truncate(rng.below(b.len())),
                2 => {
                    let i = rng.below(b.len());
                    let n = 1 + rng.below(16);
                    let extra = rng.bytes(n);
                    b.splice(i..i, extra);
                }
                _ => {
                    let i = rng.below(b.len());
                    let j = (i + rng.below(32)).min(b.len());
                    let chunk = b[i..j].to_vec();
                    b.splice(j..j, chunk);
                }
            }
            if exercise(&b, f) {
                decoded_ok += 1;
            }
        }
    }
    // Some mutations land in payload bytes and still decode: the generator reached deep code.
    assert!(decoded_ok > 0, "no mutated image decoded at all");
}
