//! The blobs compiled into parasite-blobs are exactly what compel's builder makes from their
//! sources now: build.rs is not stale, and a build is deterministic (another output directory,
//! another process, the same bytes).

use compel_builder::{Builder, ParasiteOptions, Sources};

#[test]
fn demo_blob_matches_a_fresh_build() {
    let out = tempfile::tempdir().unwrap();
    let dir = Sources::from_workspace()
        .root
        .join("parasite-blobs/parasites/demo");
    let built = Builder::new(out.path())
        .build_rust(&dir, &ParasiteOptions::default())
        .unwrap();
    let shipped = parasite_blobs::demo::blob();
    assert!(
        built.blob.image == shipped.image,
        "image differs from parasite_blobs::demo"
    );
    assert_eq!(
        built.blob.relocs,
        shipped.relocs.iter().map(|r| r as u32).collect::<Vec<_>>()
    );
    assert_eq!(
        (built.blob.text_size, built.blob.bss_size, built.blob.entry),
        (shipped.text_size, shipped.bss_size, shipped.entry)
    );
    let names: Vec<(String, usize)> = shipped
        .symbols
        .iter()
        .map(|s| (s.name.to_owned(), s.offset))
        .collect();
    assert_eq!(built.blob.symbols, names);
    // The packed file form carries the same blob.
    let bytes = built.blob.to_bytes();
    let parsed = compel_proto::blob::BlobDesc::parse(&bytes).unwrap();
    assert_eq!(
        parsed.symbol("__export_parasite_main"),
        Some(parasite_blobs::demo::SYM_PARASITE_MAIN)
    );
}
