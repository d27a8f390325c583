//! Every image kind as untrusted input (issue 23): for each of the kinds criu-images knows
//! (`criu_images::magic::MAGICS`: 68 kinds besides the two header magics and `KDAT`, not only
//! those in the fixtures), a random but well-formed image is built from the schema
//! (`compel_criu_tests::image_gen`), checked to decode, then damaged and fed
//!
//! - to crit's decoder and encoder and to the raw entry framing, many times per kind;
//! - to the restore's image loading (`criu::images_plan::load`), under the name a restore reads
//!   it from, in copies of CRIU 4.2's `single` and `files` fixture directories;
//! - as root, to a whole `criu restore` of the `single` fixture with that file added or
//!   replaced (kinds the fixture has: its own file damaged), run in a throwaway pid + mount +
//!   net namespace (`compel_criu_tests::fuzz_ns`): criu ends by itself, never panics (exit code
//!   and "panicked" on stderr), and leaves no task, no child and no file behind.
//!
//! Nothing may panic or hang: every bad input is an error. The suite runs a fixed seed and a
//! bounded count; the bench runs longer:
//! `FUZZ_ITERATIONS=2000 cargo test -p compel-criu-tests --test security_fuzz_kinds -- --ignored --nocapture`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use compel_criu_tests::fuzz_ns::restore_in_ns;
use compel_criu_tests::image_gen::{self, DirIds};
use compel_criu_tests::rng::Rng;
use compel_criu_tests::{
    SINGLE_PID, become_subreaper, copy_dir, fixture_usable, fixtures_dir, our_children, pid_exists,
    skip_if_not_root, test_lock,
};
use criu_images::json::{DecodeOptions, decode_image, encode_image};
use criu_images::{ImageDir, ImageReader};

/// Kinds with no layout of their own: not images of an images directory (`KDAT` is criu's
/// cache of kernel facts in `/run`).
const NO_LAYOUT: [&str; 1] = ["KDAT"];

/// Runs the decoder, the encoder of what decoded, and the raw framing over `bytes`.
fn exercise(bytes: &[u8], name: &Path) -> bool {
    let decoded = decode_image(bytes, name, DecodeOptions::default());
    let _ = decode_image(bytes, name, DecodeOptions::pretty());
    let _ = criu_images::json::info(bytes, name);
    if let Ok(mut r) = ImageReader::new(bytes, name) {
        for _ in 0..=bytes.len() {
            match r.read_entry_bytes() {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
    match decoded {
        Ok(v) => {
            let _ = encode_image(&v, name);
            true
        }
        Err(e) => {
            assert!(!e.to_string().is_empty(), "an error with no message");
            false
        }
    }
}

/// `per_kind` mutants of generated images of every kind through the decoders; returns the
/// panics (kind, iteration) and how many kinds were covered.
fn fuzz_decode(seed: u64, per_kind: usize) -> (Vec<String>, usize) {
    let mut rng = Rng(seed | 1);
    let mut panics = Vec::new();
    let mut kinds = 0;
    for kind in image_gen::kinds() {
        let Some(first) = image_gen::image(&mut rng, kind) else {
            assert!(NO_LAYOUT.contains(&kind), "no image generated for {kind}");
            continue;
        };
        kinds += 1;
        let name = PathBuf::from(format!("{}.img", kind.to_lowercase()));
        // The generator makes images the decoder takes: else the mutants below would test
        // nothing past the first entry.
        let back = decode_image(&first, &name, DecodeOptions::default())
            .unwrap_or_else(|e| panic!("a generated {kind} image does not decode: {e}"));
        encode_image(&back, &name)
            .unwrap_or_else(|e| panic!("a generated {kind} image does not encode back: {e}"));
        for i in 0..per_kind {
            let base = if i % 4 == 0 {
                first.clone()
            } else {
                image_gen::image(&mut rng, kind).expect("generated before")
            };
            let m = image_gen::mutate(&mut rng, &base);
            if catch_unwind(|| exercise(&m, &name)).is_err() {
                panics.push(format!("{kind} (iteration {i})"));
            }
        }
    }
    (panics, kinds)
}

/// The root task's pid and ids of a fixture directory.
fn dir_ids(dir: &Path) -> DirIds {
    let d = ImageDir::new(dir);
    let tree = d.read_pstree().expect("the fixture's pstree");
    let pid = tree[0].pid;
    DirIds {
        pid,
        ids: d.read_ids(pid).expect("the fixture's ids"),
    }
}

/// The image of kind `kind` a run writes into `dir`: the directory's own file of that name
/// damaged, or a generated one (damaged three times out of four).
fn bad_image(rng: &mut Rng, kind: &str, file: &Path) -> Option<Vec<u8>> {
    match std::fs::read(file) {
        Ok(own) => Some(image_gen::mutate(rng, &own)),
        Err(_) => {
            let fresh = image_gen::image(rng, kind)?;
            Some(if rng.below(4) == 0 {
                fresh
            } else {
                image_gen::mutate(rng, &fresh)
            })
        }
    }
}

/// Every kind, `rounds` times, in copies of the fixture directories, through the restore's
/// image loading; returns the panics.
fn fuzz_load(seed: u64, rounds: usize) -> Vec<String> {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = Rng(seed.rotate_left(29) | 1);
    let mut panics = Vec::new();
    for sub in ["single", "files"] {
        let src = fixtures_dir().join(sub);
        if !src.join("pstree.img").exists() {
            continue;
        }
        let ids = dir_ids(&src);
        for round in 0..rounds {
            for kind in image_gen::kinds() {
                let Some(name) = image_gen::file_name(kind, &ids) else {
                    continue;
                };
                let dir = tmp.path().join(format!("{sub}-{round}-{kind}"));
                std::fs::create_dir(&dir).unwrap();
                copy_dir(&src, &dir);
                let Some(bad) = bad_image(&mut rng, kind, &dir.join(&name)) else {
                    continue;
                };
                std::fs::write(dir.join(&name), bad).unwrap();
                let shell_job = rng.below(2) == 0;
                let r = catch_unwind(AssertUnwindSafe(|| {
                    let _ = criu::images_plan::load(&dir, shell_job);
                }));
                if r.is_err() {
                    panics.push(format!("{sub}/{name} (round {round})"));
                }
                std::fs::remove_dir_all(&dir).unwrap();
            }
        }
    }
    panics
}

#[test]
fn every_image_kind_is_generated_and_its_mutants_never_panic_the_decoder() {
    let (p, kinds) = fuzz_decode(0x5eed_4b1d, 200);
    assert!(p.is_empty(), "decoder panics: {p:#?}");
    // Every magic but the two headers and KDAT.
    assert_eq!(
        kinds,
        criu_images::magic::MAGICS.len() - 2 - NO_LAYOUT.len()
    );
}

#[test]
fn every_image_kind_damaged_in_an_images_dir_never_panics_the_restore_loader() {
    let p = fuzz_load(0x5eed_4b1d, 2);
    assert!(p.is_empty(), "restore loader panics: {p:#?}");
}

/// `rounds` whole restores per kind of the `single` fixture with that kind's image damaged or
/// added, each in a throwaway namespace; returns (failed cleanly, restored anyway).
fn fuzz_restore(seed: u64, rounds: usize) -> Option<(usize, usize)> {
    let _g = test_lock();
    become_subreaper();
    drop(fixture_usable()?);
    let src = fixtures_dir().join("single");
    let ids = dir_ids(&src);
    let work = tempfile::tempdir().unwrap();
    let mut rng = Rng(seed.rotate_left(7) | 1);
    let (mut failed, mut restored) = (0, 0);
    let mut run = 0;
    for round in 0..rounds {
        for kind in image_gen::kinds() {
            let Some(name) = image_gen::file_name(kind, &ids) else {
                continue;
            };
            let images = work.path().join(format!("run{run}"));
            std::fs::create_dir(&images).unwrap();
            std::fs::create_dir(images.with_extension("ns")).unwrap();
            copy_dir(&src, &images);
            let Some(bad) = bad_image(&mut rng, kind, &images.join(&name)) else {
                continue;
            };
            std::fs::write(images.join(&name), &bad).unwrap();
            let before = std::fs::read_dir(&images).unwrap().count();
            match restore_in_ns(&images) {
                Ok(0) => restored += 1,
                Ok(_) => failed += 1,
                Err(e) => {
                    panic!("{e}\non a damaged {name} ({kind}, round {round}, seed {seed:#x})")
                }
            }
            assert_eq!(
                std::fs::read_dir(&images).unwrap().count(),
                before,
                "the restore with a damaged {name} added files to the images"
            );
            assert_eq!(
                std::fs::read_dir(images.with_extension("ns"))
                    .unwrap()
                    .count(),
                0,
                "the restore with a damaged {name} left files behind"
            );
            assert_eq!(
                our_children(),
                Vec::<i32>::new(),
                "the restore with a damaged {name} left children"
            );
            assert!(
                !pid_exists(SINGLE_PID),
                "the restore with a damaged {name} left pid {SINGLE_PID}"
            );
            std::fs::remove_dir_all(&images).unwrap();
            std::fs::remove_file(images.with_extension("err")).unwrap();
            run += 1;
        }
    }
    Some((failed, restored))
}

#[test]
fn every_image_kind_damaged_in_a_whole_restore_fails_cleanly_in_a_throwaway_namespace() {
    skip_if_not_root!(
        "every_image_kind_damaged_in_a_whole_restore_fails_cleanly_in_a_throwaway_namespace"
    );
    let Some((failed, restored)) = fuzz_restore(0x00c0_ffee, 1) else {
        return;
    };
    eprintln!("{failed} failed cleanly, {restored} restored anyway");
    // Damaged core, mm, pagemap, pstree, ids, inventory, files, fdinfo, fs images each stop
    // the restore.
    assert!(failed >= 9, "{failed} failed, {restored} restored");
}

/// The bench: more rounds, seed and count from `FUZZ_SEED` and `FUZZ_ITERATIONS` (mutants
/// per kind for the decoders; a tenth of it rounds of loads, a hundredth whole restores).
#[test]
#[ignore = "bench: a long fuzzing run of every image kind"]
fn every_image_kind_long_run() {
    let n: usize = std::env::var("FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x0bad_4b1d);
    let t0 = std::time::Instant::now();
    let (p, kinds) = fuzz_decode(seed, n);
    assert!(p.is_empty(), "decoder panics: {p:#?}");
    println!("{kinds} kinds x {n} decodes in {:?}", t0.elapsed());
    let t0 = std::time::Instant::now();
    let p = fuzz_load(seed, (n / 10).max(1));
    assert!(p.is_empty(), "restore loader panics: {p:#?}");
    println!("{} rounds of loads in {:?}", (n / 10).max(1), t0.elapsed());
    if nix::unistd::geteuid().is_root() {
        let t0 = std::time::Instant::now();
        if let Some((failed, restored)) = fuzz_restore(seed, (n / 100).max(1)) {
            println!(
                "restores: {failed} failed cleanly, {restored} restored anyway, in {:?}",
                t0.elapsed()
            );
        }
    }
}
