//! Images as untrusted input, fuzzed: the CRIU 4.2 fixture images (`shared/fixtures/criu-4.2`),
//! mutated (bit flips, interesting values, truncation, insertion, duplication), fed to crit's
//! decoder (`criu_images::json::decode_image`) one file at a time, and as whole image
//! directories to the restore's image loading (`criu::images_plan::load`, everything a restore
//! reads and checks before it creates a task). Nothing may panic: every bad input is an error.
//!
//! The suite runs a fixed seed and a bounded count; the bench runs longer:
//! `FUZZ_ITERATIONS=100000 cargo test -p compel-criu-tests --test security_fuzz_images -- --ignored --nocapture`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use compel_criu_tests::fixtures_dir;
use compel_criu_tests::image_gen::mutate;
use compel_criu_tests::rng::Rng;
use criu_images::json::{DecodeOptions, decode_image};

/// Every `.img` under the fixture directories.
fn fixture_images() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in ["single", "tree", "files"] {
        let Ok(rd) = std::fs::read_dir(fixtures_dir().join(sub)) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "img") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Decodes `n` mutants; returns the inputs that panicked (file, iteration).
fn fuzz_decode(seed: u64, n: usize) -> Vec<String> {
    let files = fixture_images();
    assert!(!files.is_empty(), "no fixture images");
    let originals: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    let mut rng = Rng(seed | 1);
    let mut panics = Vec::new();
    for i in 0..n {
        let k = rng.below(files.len());
        let m = mutate(&mut rng, &originals[k]);
        let pretty = rng.below(2) == 0;
        let r = catch_unwind(|| {
            let opts = DecodeOptions {
                pretty,
                no_payload: false,
            };
            // A decoded mutant is encoded back too (crit's round trip).
            if let Ok(v) = decode_image(&m, &files[k], opts)
                && !pretty
            {
                let _ = criu_images::json::encode_image(&v, &files[k]);
            }
        });
        if r.is_err() {
            panics.push(format!("{} (iteration {i})", files[k].display()));
        }
    }
    panics
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Loads `n` image directories with one mutated file each; returns what panicked.
fn fuzz_load(seed: u64, n: usize) -> Vec<String> {
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = ["single", "tree", "files"]
        .iter()
        .filter(|s| fixtures_dir().join(s).join("pstree.img").exists())
        .map(|s| {
            let d = tmp.path().join(s);
            copy_dir(&fixtures_dir().join(s), &d);
            d
        })
        .collect();
    assert!(!dirs.is_empty(), "no fixture image directories");
    let mut rng = Rng(seed.rotate_left(17) | 1);
    let mut panics = Vec::new();
    for i in 0..n {
        let dir = &dirs[rng.below(dirs.len())];
        let mut imgs: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.extension().is_some_and(|x| x == "img")
                    && !p
                        .file_name()
                        .is_some_and(|f| f.to_string_lossy().starts_with("pages-"))
            })
            .collect();
        imgs.sort();
        let f = imgs[rng.below(imgs.len())].clone();
        let orig = std::fs::read(&f).unwrap();
        std::fs::write(&f, mutate(&mut rng, &orig)).unwrap();
        let shell_job = rng.below(2) == 0;
        let r = catch_unwind(AssertUnwindSafe(|| {
            let _ = criu::images_plan::load(dir, shell_job);
        }));
        std::fs::write(&f, &orig).unwrap();
        if r.is_err() {
            panics.push(format!("{} (iteration {i})", f.display()));
        }
    }
    panics
}

#[test]
fn mutated_fixture_images_never_panic_the_decoder_or_the_restore_loader() {
    let seed = 0x5eed_c0de;
    let p = fuzz_decode(seed, 1500);
    assert!(p.is_empty(), "decoder panics: {p:#?}");
    let p = fuzz_load(seed, 150);
    assert!(p.is_empty(), "restore loader panics: {p:#?}");
}

/// The bench: a longer run, seed and count from `FUZZ_SEED` and `FUZZ_ITERATIONS`.
#[test]
#[ignore = "bench: a long fuzzing run"]
fn fuzz_images_long() {
    let n: usize = std::env::var("FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_c0de);
    let t0 = std::time::Instant::now();
    let p = fuzz_decode(seed, n);
    let decode = t0.elapsed();
    let q = fuzz_load(seed, n / 10);
    println!(
        "fuzz: {n} decodes in {decode:?}, {} loads in {:?}, seed {seed:#x}",
        n / 10,
        t0.elapsed() - decode
    );
    assert!(p.is_empty() && q.is_empty(), "panics: {p:#?} {q:#?}");
}
