//! Bad inputs to hgen and pack: a clear one-line error naming the file and the problem, and no
//! output file left behind.

use compel_builder::{Lang, hgen_file, pack_file};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

type Run<'a> = dyn Fn(&Path) -> Result<(), compel_builder::BuildError> + 'a;

/// Runs hgen (both languages) and pack on `input`; each must fail with a one-line message
/// containing `want` and leave no file in the output directory.
fn rejects(input: &Path, want: &str) {
    let out = tempfile::tempdir().unwrap();
    let runs: [(&str, Box<Run<'_>>); 3] = [
        (
            "hgen rust",
            Box::new(|o| hgen_file(input, o, Lang::Rust, "")),
        ),
        ("hgen c", Box::new(|o| hgen_file(input, o, Lang::C, "p"))),
        ("pack", Box::new(|o| pack_file(input, o))),
    ];
    for (what, run) in runs {
        let output = out.path().join("out");
        let err = run(&output).expect_err(what).to_string();
        assert!(!err.contains('\n'), "{what}: not one line: {err:?}");
        assert!(err.contains(want), "{what}: {err:?} does not say {want:?}");
        assert!(
            err.starts_with(&input.display().to_string()),
            "{what}: {err:?} does not name the file"
        );
        let left: Vec<_> = std::fs::read_dir(out.path()).unwrap().collect();
        assert!(left.is_empty(), "{what}: left {left:?} behind");
    }
}

fn variant(dir: &Path, name: &str, edit: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut data = std::fs::read(fixture("relocs-pie.elf")).unwrap();
    edit(&mut data);
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    path
}

#[test]
fn not_elf() {
    rejects(&fixture("relocs.S"), "not an ELF file");
}

#[test]
fn elf32() {
    let dir = tempfile::tempdir().unwrap();
    rejects(&variant(dir.path(), "elf32", |d| d[4] = 1), "32-bit ELF");
}

#[test]
fn wrong_machine() {
    let dir = tempfile::tempdir().unwrap();
    // e_machine = 183 (aarch64).
    rejects(
        &variant(dir.path(), "aarch64", |d| {
            d[18..20].copy_from_slice(&183u16.to_le_bytes())
        }),
        "wrong machine 183",
    );
}

#[test]
fn truncated() {
    let dir = tempfile::tempdir().unwrap();
    for len in [10, 63, 100, 0x1010, 0x2050] {
        rejects(
            &variant(dir.path(), &format!("cut{len}"), |d| d.truncate(len)),
            "truncated or malformed ELF",
        );
    }
}

#[test]
fn undefined_symbol() {
    rejects(
        &fixture("undefined.elf"),
        "undefined symbol `missing_function`",
    );
}

#[test]
fn relocatable_object_and_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    // e_type = ET_REL.
    rejects(
        &variant(dir.path(), "rel", |d| {
            d[16..18].copy_from_slice(&1u16.to_le_bytes())
        }),
        "relocatable object",
    );
    rejects(&dir.path().join("does-not-exist"), "No such file");
}

#[test]
fn writable_and_executable_segment() {
    let dir = tempfile::tempdir().unwrap();
    // The first program header's p_flags (at e_phoff + 4) becomes R+W+X.
    let path = variant(dir.path(), "wx", |d| {
        let phoff = u64::from_le_bytes(d[32..40].try_into().unwrap()) as usize;
        d[phoff + 4..phoff + 8].copy_from_slice(&7u32.to_le_bytes());
    });
    rejects(&path, "writable and executable (sections .text");
}

/// Corrupted images (bytes of the headers and tables overwritten, pseudo-randomly but
/// reproducibly) are rejected or read, never a panic.
#[test]
fn corrupted_images_never_panic() {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for name in [
        "relocs-pie.elf",
        "relocs-relr.elf",
        "relocs-shared.elf",
        "undefined.elf",
    ] {
        let clean = std::fs::read(fixture(name)).unwrap();
        let mut accepted = 0;
        for _ in 0..3000 {
            let mut data = clean.clone();
            for _ in 0..1 + next() % 4 {
                // Mostly the ELF and program headers, sometimes anywhere (section headers,
                // dynamic relocations, symbol tables).
                let at = if next().is_multiple_of(2) {
                    next() as usize % 0x100
                } else {
                    next() as usize % data.len()
                };
                data[at] = next() as u8;
            }
            if let Ok(blob) = compel_builder::Blob::from_elf(&data) {
                accepted += 1;
                // Whatever was accepted is a consistent blob.
                let bytes = blob.to_bytes();
                compel_proto::blob::BlobDesc::parse(&bytes).unwrap();
            }
        }
        assert!(accepted < 3000, "{name}: corruption was never noticed");
    }
}
