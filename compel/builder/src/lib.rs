//! Build-time half of compel (layer: host, build tools): compile parasite code into
//! position-independent blobs and describe them in generated Rust modules or C headers.
//!
//! The pipeline for a Rust parasite (a `#![no_std]` crate using `compel_plugins`):
//! 1. `rustc` compiles compel-arch, compel-proto and compel-plugins (with `--cfg
//!    compel_parasite`, which turns on the entry stub, `memcpy` & co and the panic handler) as
//!    rlibs, then the parasite as a static library with fat LTO, for the host target, with
//!    `panic=abort`, `relocation-model=pie`, no unwind tables;
//! 2. `ld` links it with compel's [`LINKER_SCRIPT`] into a static-PIE image: text (R+X) at 0,
//!    data (R+W) on the next page, only relative dynamic relocations;
//! 3. [`Blob::from_elf`] lays the segments out into one flat image, resolves the relocations into
//!    a table of words to rebase, and collects the `__export_*` symbols.
//!
//! A [`Blob`] becomes a run-time loadable file ([`Blob::to_bytes`], `compel pack`), a Rust module
//! ([`Blob::to_rust`], `compel hgen`) or a C header ([`Blob::to_c`], `compel hgen --lang c`).
//! C parasites use [`CSupport`]: compile with its [`cflags`](CSupport::cflags), link with its
//! [`ldflags`](CSupport::ldflags) and plugin archive, then read the image like a Rust one.
//!
//! ```no_run
//! // build.rs of a crate that ships a parasite in parasites/hello:
//! let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
//! let builder = compel_builder::Builder::new(&out);
//! let built = builder.build_rust("parasites/hello".as_ref(), &Default::default())?;
//! for src in &built.sources {
//!     println!("cargo::rerun-if-changed={}", src.display());
//! }
//! compel_builder::write_atomic(&out.join("hello.rs"), built.blob.to_rust("", "hello").as_bytes())
//!     .map_err(|cause| compel_builder::BuildError::Io { path: out.join("hello.rs"), cause })?;
//! # Ok::<(), compel_builder::BuildError>(())
//! ```
#![forbid(unsafe_code)]

mod blob;
mod compile;
mod csupport;
mod elf;
mod error;
mod hgen;
mod link;

pub use blob::Blob;
pub use compile::{Builder, Built, ParasiteOptions, Sources, Toolchain};
pub use csupport::{
    CSupport, INSTALLED_INCLUDE_DIR, INSTALLED_LIB_DIR, PLUGINS, default_cache_dir,
};
pub use error::{BuildError, ElfError};
pub use hgen::Lang;
pub use link::{LINKER_SCRIPT, cflags, ldflags};

use std::io::Write;
use std::path::Path;

/// Writes `data` to `path` atomically: into a temporary file beside it, then renamed over it.
/// On error nothing is left behind (no partial or stale-named output).
///
/// # Errors
/// The directory is not writable, or the disk is full.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(data).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads a linked parasite image from a file.
///
/// # Errors
/// [`BuildError::Io`] or [`BuildError::Elf`], naming the file.
pub fn read_elf_file(path: &Path) -> Result<Blob, BuildError> {
    let data = std::fs::read(path).map_err(BuildError::io(path))?;
    Blob::from_elf(&data).map_err(|cause| BuildError::Elf {
        path: path.to_owned(),
        cause,
    })
}

/// `compel hgen`: reads the image at `input` and writes its description to `output` in `lang`.
/// Nothing is written unless the input is accepted.
///
/// # Errors
/// As [`read_elf_file`], or the output cannot be written.
pub fn hgen_file(input: &Path, output: &Path, lang: Lang, prefix: &str) -> Result<(), BuildError> {
    let blob = read_elf_file(input)?;
    let source = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let text = blob.generate(lang, prefix, &source);
    write_atomic(output, text.as_bytes()).map_err(BuildError::io(output))
}

/// `compel pack`: reads the image at `input` and writes the run-time loadable blob file to
/// `output` ([`Blob::to_bytes`]). Nothing is written unless the input is accepted.
///
/// # Errors
/// As [`read_elf_file`], or the output cannot be written.
pub fn pack_file(input: &Path, output: &Path) -> Result<(), BuildError> {
    let blob = read_elf_file(input)?;
    write_atomic(output, &blob.to_bytes()).map_err(BuildError::io(output))
}
