//! `compel hgen` on fixed inputs (images committed in tests/fixtures, made by make.sh from their
//! assembly sources): golden Rust and C output, and the relocation semantics behind it. Every
//! relocation kind the reader accepts appears in one of the images: RELATIVE (RELA), RELR,
//! R_X86_64_64 against a symbol, against an absolute symbol and against an undefined weak one,
//! GLOB_DAT and JUMP_SLOT.
//!
//! `UPDATE_GOLDEN=1 cargo test -p compel-builder --test hgen_golden` rewrites the golden files.

use compel_builder::{Blob, Lang, hgen_file};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn read(name: &str) -> Blob {
    compel_builder::read_elf_file(&fixture(name)).unwrap_or_else(|e| panic!("{e}"))
}

fn word(blob: &Blob, off: usize) -> u64 {
    u64::from_le_bytes(blob.image[off..off + 8].try_into().unwrap())
}

fn check_golden(elf: &str) {
    let out = tempfile::tempdir().unwrap();
    for (lang, ext) in [(Lang::Rust, "rs"), (Lang::C, "h")] {
        let generated = out.path().join(format!("out.{ext}"));
        hgen_file(&fixture(elf), &generated, lang, "").unwrap();
        let text = std::fs::read_to_string(&generated).unwrap();
        let golden = fixture(&format!("{elf}.{ext}.golden"));
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&golden, &text).unwrap();
        }
        let want = std::fs::read_to_string(&golden)
            .unwrap_or_else(|e| panic!("{}: {e}", golden.display()));
        assert!(
            text == want,
            "{} differs from {}:\n{text}",
            generated.display(),
            golden.display()
        );
    }
}

#[test]
fn symbolic_relocations_of_a_shared_object() {
    let blob = read("relocs-shared.elf");
    // GLOB_DAT value, JUMP_SLOT func, R_X86_64_64 func, RELATIVE msg, msg + 3, R_X86_64_64 table.
    assert_eq!(
        blob.relocs,
        vec![0x1120, 0x1140, 0x1148, 0x1150, 0x1158, 0x1178]
    );
    assert_eq!(
        word(&blob, 0x1120),
        0x1170,
        "GLOB_DAT resolves to the symbol"
    );
    assert_eq!(
        word(&blob, 0x1140),
        0x14,
        "JUMP_SLOT resolves to the function"
    );
    assert_eq!(
        word(&blob, 0x1148),
        0x14,
        "R_X86_64_64 resolves to the function"
    );
    assert_eq!(word(&blob, 0x1158), word(&blob, 0x1150) + 3, "addend kept");
    assert_eq!(
        word(&blob, 0x1160),
        0x1234,
        "absolute symbol: value, no relocation"
    );
    assert_eq!(
        word(&blob, 0x1168),
        0,
        "undefined weak: zero, no relocation"
    );
    assert_eq!(blob.text_size, 0x1000);
    assert_eq!(blob.symbol("__export_value"), Some(0x1178));
    assert!(
        blob.symbol("__export_scratch").unwrap() >= blob.image.len(),
        "bss symbol after the image"
    );
    assert_eq!(blob.mem_size(), 0x11e4);
    check_golden("relocs-shared.elf");
}

#[test]
fn packed_relative_relocations() {
    let relr = read("relocs-relr.elf");
    let rela = read("relocs-pie.elf");
    // The same object linked both ways: as many words need the base (func, msg, msg + 3, table).
    assert_eq!(relr.relocs.len(), 4);
    assert_eq!(rela.relocs.len(), 4);
    for blob in [&relr, &rela] {
        let table = blob.symbol("__export_value").unwrap() - 0x30;
        assert_eq!(word(blob, table + 0x18), 0x1234, "absolute symbol");
        assert_eq!(word(blob, table + 0x20), 0, "undefined weak");
        assert!(blob.relocs.contains(&(table as u32 + 8)));
    }
    check_golden("relocs-relr.elf");
    check_golden("relocs-pie.elf");
}
