//! Relocation correctness without ptrace: a parasite built by the builder is placed at a random
//! address in this process and a function of it that depends on absolute addresses is called.

mod common;

use common::{Placed, build, manifest_dir};
use compel_proto::blob::BlobDesc;

type Describe = unsafe extern "C" fn(*mut u8, usize, u64) -> usize;

fn describe(placed: &Placed, offset: usize, x: u64) -> String {
    // SAFETY: `offset` is `__export_describe` of the placed, relocated blob, an
    // `extern "C" fn(*mut u8, usize, u64) -> usize`.
    let f: Describe = unsafe { std::mem::transmute::<usize, Describe>(placed.addr(offset)) };
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for its length; the function writes at most that.
    let n = unsafe { f(buf.as_mut_ptr(), buf.len(), x) };
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

const EXPECTED_7: &str = "relocated #1: double(7)=14 square(7)=49 negate(7)=18446744073709551609 pi=3.142 hex=0x7 Some(\"dbg\")";

#[test]
fn rust_parasite_runs_at_a_random_address() {
    let out = tempfile::tempdir().unwrap();
    let built = build(&manifest_dir().join("tests/parasites/relocs"), out.path());
    let blob = &built.blob;
    assert!(!blob.relocs.is_empty(), "a pointer table needs relocations");
    let describe_off = blob.symbol("__export_describe").expect("exported describe");
    let calls_off = blob.symbol("__export_calls").expect("exported counter");
    assert!(
        calls_off >= blob.text_size,
        "a mutable static lives in data"
    );

    let placed = Placed::new(&blob.desc());
    assert_eq!(describe(&placed, describe_off, 7), EXPECTED_7);
    let second = describe(&placed, describe_off, 3);
    assert!(
        second.starts_with("relocated #2: double(3)=6 square(3)=9"),
        "{second}"
    );
    // SAFETY: the counter is a u32 in the placed blob's data.
    let calls = unsafe { std::ptr::read_volatile(placed.addr(calls_off) as *const u32) };
    assert_eq!(calls, 2);
}

#[test]
fn packed_file_loads_like_the_compiled_blob_and_builds_are_deterministic() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let dir = manifest_dir().join("tests/parasites/relocs");
    let first = build(&dir, a.path());
    // The same crate named another way: the blob must not depend on the path spelling.
    let second = build(&dir.join("../relocs"), b.path());
    assert_eq!(first.blob, second.blob, "same input, same blob");
    assert_eq!(first.blob.to_rust("", "x"), second.blob.to_rust("", "x"));

    let file = a.path().join("relocs.blob");
    compel_builder::pack_file(&first.elf, &file).unwrap();
    let bytes = std::fs::read(&file).unwrap();
    let desc = BlobDesc::parse(&bytes).unwrap();
    assert_eq!(desc.image, &first.blob.image[..]);
    let off = desc.symbol("__export_describe").unwrap();
    let placed = Placed::new(&desc);
    assert_eq!(describe(&placed, off, 7), EXPECTED_7);
}

#[test]
fn parasite_without_handler_or_entry_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let krate = dir.path().join("lonely");
    std::fs::create_dir_all(krate.join("src")).unwrap();
    std::fs::write(
        krate.join("src/lib.rs"),
        "#![no_std]\n#[unsafe(no_mangle)]\npub extern \"C\" fn __export_start() -> u32 { \
         compel_plugins::std::sys::getpid() as u32 }\n",
    )
    .unwrap();
    let builder = compel_builder::Builder::new(&dir.path().join("out"));
    let err = builder
        .build_rust(&krate, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("defines no command handler"), "{err}");

    // With its own entry point it builds, without the service loop.
    let opts = compel_builder::ParasiteOptions {
        entry: "__export_start".into(),
        ..Default::default()
    };
    let built = builder.build_rust(&krate, &opts).unwrap();
    assert_eq!(
        built.blob.entry,
        built.blob.symbol("__export_start").unwrap()
    );
    assert_eq!(
        built.blob.symbol("__export_parasite_main"),
        None,
        "no service loop linked in"
    );
    assert!(
        built.sources.iter().any(|s| s.ends_with("src/lib.rs")),
        "{:?}",
        built.sources
    );

    // A crate that does not compile: the compiler's message is in the error.
    std::fs::write(krate.join("src/lib.rs"), "#![no_std]\nfn broken( {}\n").unwrap();
    let err = builder.build_rust(&krate, &opts).unwrap_err().to_string();
    assert!(err.starts_with("rustc failed building lonely:"), "{err}");
}
