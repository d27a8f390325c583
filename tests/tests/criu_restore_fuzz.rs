//! Whole restores of damaged images, fuzzed: CRIU 4.2's `single` fixture with one image file
//! mutated (bit flips, interesting bytes, truncation, insertion), restored by `criu restore -d`
//! inside a throwaway pid + mount + net namespace made for each run (`unshare`), where every
//! mount (of the namespace's own `/proc`, `/proc/sys`) is read-only and a scratch tmpfs
//! holding the images and the fixture's program is put over `/tmp`. criu must end by itself (no hang, no
//! panic, no signal), and nothing may be left behind: the namespace takes whatever a restore
//! that still succeeded started with it, the tmpfs takes what it wrote, and the test checks
//! that no child, no task with the fixture's pid and nothing new in the images copy remain.
//!
//! The suite runs a fixed seed and a bounded count; the bench runs longer:
//! `FUZZ_ITERATIONS=500 cargo test -p compel-criu-tests --test criu_restore_fuzz -- --ignored --nocapture`.

use compel_criu_tests::fuzz_ns::restore_in_ns;
use compel_criu_tests::rng::Rng;
use compel_criu_tests::{
    SINGLE_PID, become_subreaper, copy_dir, fixture_usable, fixtures_dir, our_children, pid_exists,
    skip_if_not_root, test_lock,
};

const INTERESTING: [u8; 8] = [0, 1, 0x7f, 0x80, 0xff, 0x10, 0x40, 0x0a];

/// A mutated copy of `data`, past its 8 bytes of magic most of the time.
fn mutate(rng: &mut Rng, data: &[u8]) -> Vec<u8> {
    let mut d = data.to_vec();
    let keep = if rng.below(5) == 0 { 0 } else { 8.min(d.len()) };
    for _ in 0..1 + rng.below(3) {
        let span = d.len().saturating_sub(keep);
        match rng.below(5) {
            0 if span > 0 => {
                let i = keep + rng.below(span);
                d[i] ^= 1 << rng.below(8);
            }
            1 if span > 0 => {
                let i = keep + rng.below(span);
                d[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => d.truncate(keep + rng.below(span + 1)),
            3 if span >= 4 => {
                // A 32-bit size or count made huge.
                let i = keep + rng.below(span - 3);
                d[i..i + 4].copy_from_slice(&[0xff, 0xff, 0xff, 0x7f]);
            }
            _ => {
                let at = keep + rng.below(span + 1);
                let n = 1 + rng.below(12);
                let bytes: Vec<u8> = (0..n).map(|_| rng.bits() as u8).collect();
                d.splice(at..at, bytes);
            }
        }
    }
    d
}

/// `n` restores of mutated copies of the `single` fixture; returns how many failed cleanly
/// and how many still restored.
fn fuzz(seed: u64, n: usize) -> Option<(usize, usize)> {
    let _g = test_lock();
    become_subreaper();
    // Whether this CPU can take the fixture's FPU state (the check wants the fixture's program
    // at /tmp/fx for a moment; the namespaces below bring their own copy).
    drop(fixture_usable()?);
    let src = fixtures_dir().join("single");
    let files: Vec<_> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "img"))
        .collect();
    let work = tempfile::tempdir().unwrap();
    // Control: the images as they are restore in the namespace.
    let images = work.path().join("control");
    std::fs::create_dir(&images).unwrap();
    std::fs::create_dir(images.with_extension("ns")).unwrap();
    copy_dir(&src, &images);
    assert_eq!(
        restore_in_ns(&images),
        Ok(0),
        "the unmutated fixture: {}",
        std::fs::read_to_string(images.with_extension("err")).unwrap_or_default()
    );
    let mut rng = Rng(seed);
    let (mut failed, mut restored) = (0, 0);
    for i in 0..n {
        let images = work.path().join(format!("run{i}"));
        std::fs::create_dir(&images).unwrap();
        std::fs::create_dir(images.with_extension("ns")).unwrap();
        copy_dir(&src, &images);
        let victim = &files[rng.below(files.len())];
        let name = victim.file_name().unwrap();
        let data = std::fs::read(victim).unwrap();
        let bad = mutate(&mut rng, &data);
        std::fs::write(images.join(name), &bad).unwrap();
        let before: Vec<_> = std::fs::read_dir(&images)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        match restore_in_ns(&images) {
            Ok(0) => restored += 1,
            Ok(_) => failed += 1,
            Err(e) => panic!("{e} on a mutated {name:?} (run {i}, seed {seed:#x})"),
        }
        // Nothing was added to the images (the root was read-only, the log went to the tmpfs).
        let after: Vec<_> = std::fs::read_dir(&images)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            before.len(),
            after.len(),
            "run {i} added files to the images"
        );
        std::fs::remove_dir_all(&images).unwrap();
        // The tmpfs went with the namespace: its mount point is empty.
        assert_eq!(
            std::fs::read_dir(images.with_extension("ns"))
                .unwrap()
                .count(),
            0,
            "run {i} left files behind"
        );
        // Nothing runs on: no child of ours, no task with the fixture's pid in our namespace.
        assert_eq!(our_children(), Vec::<i32>::new(), "run {i} left children");
        assert!(!pid_exists(SINGLE_PID), "run {i} left pid {SINGLE_PID}");
    }
    Some((failed, restored))
}

#[test]
fn mutated_fixture_restores_fail_cleanly_and_leave_nothing() {
    skip_if_not_root!("mutated_fixture_restores_fail_cleanly_and_leave_nothing");
    let Some((failed, restored)) = fuzz(0x00c0_ffee, 40) else {
        return;
    };
    eprintln!("{failed} failed cleanly, {restored} restored anyway");
    // Most mutations are caught.
    assert!(failed > restored, "{failed} failed, {restored} restored");
}

#[test]
#[ignore = "long fuzzing run: FUZZ_ITERATIONS=N, run with --ignored --nocapture"]
fn mutated_fixture_restores_long_run() {
    skip_if_not_root!("mutated_fixture_restores_long_run");
    let n = std::env::var("FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x0bad_cafe);
    if let Some((failed, restored)) = fuzz(seed, n) {
        eprintln!("seed {seed:#x}: {failed} failed cleanly, {restored} restored anyway");
    }
}
