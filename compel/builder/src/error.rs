//! The builder's errors: one enum for reading a linked image, one for the build pipeline.

use std::path::PathBuf;

/// What is wrong with an ELF image given to [`Blob::from_elf`](crate::Blob::from_elf).
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    /// Not an ELF file at all.
    #[error("not an ELF file")]
    NotElf,
    /// A 32-bit ELF file.
    #[error("32-bit ELF: only x86_64 (ELF64) images are supported")]
    Elf32,
    /// An ELF file for another machine.
    #[error("wrong machine {machine} in ELF header: only x86_64 (62) is supported")]
    WrongMachine {
        /// `e_machine`.
        machine: u16,
    },
    /// A header or table extends past the end of the file or is inconsistent.
    #[error("truncated or malformed ELF: {0}")]
    Malformed(#[from] object::read::Error),
    /// An inconsistency the ELF reader does not check itself.
    #[error("truncated or malformed ELF: {what}")]
    Format {
        /// What is wrong.
        what: &'static str,
    },
    /// A relocatable object that still needs linking.
    #[error(
        "relocatable object (ET_REL): link it first with `ld $(compel ldflags) -o OUT OBJ $(compel plugins)`"
    )]
    Relocatable,
    /// Not a position-independent image.
    #[error("ELF type {e_type} is not position independent: link with `ld $(compel ldflags)`")]
    NotPie {
        /// `e_type`.
        e_type: u16,
    },
    /// The image asks for a dynamic linker.
    #[error("image needs a dynamic linker (PT_INTERP): link with -static -pie --no-dynamic-linker")]
    DynamicLinker,
    /// The image needs a shared library.
    #[error("image needs shared library `{name}`: parasites are linked statically")]
    NeedsLibrary {
        /// The library (`DT_NEEDED`).
        name: String,
    },
    /// Thread-local storage, which a parasite cannot have.
    #[error("thread-local storage in section {section} is not supported in a parasite")]
    Tls {
        /// The TLS section (or `PT_TLS`).
        section: String,
    },
    /// A segment both writable and executable.
    #[error("segment at {addr:#x} is writable and executable (sections {sections})")]
    WritableExec {
        /// Its address.
        addr: u64,
        /// The sections in it.
        sections: String,
    },
    /// The segments cannot be laid out as text then data.
    #[error("bad layout: {what} at {addr:#x} (sections {sections})")]
    Layout {
        /// What rule was broken.
        what: &'static str,
        /// The address concerned.
        addr: u64,
        /// The sections concerned.
        sections: String,
    },
    /// A relocation type the runtime cannot apply.
    #[error(
        "unsupported relocation {kind} (type {r_type}) against `{symbol}` at {offset:#x} in {section}"
    )]
    UnsupportedReloc {
        /// Its name (`R_X86_64_...`).
        kind: &'static str,
        /// Its number.
        r_type: u32,
        /// The symbol it refers to (empty if none).
        symbol: String,
        /// Where it applies.
        offset: u64,
        /// The section holding `offset`.
        section: String,
    },
    /// A symbol nothing defines.
    #[error("undefined symbol `{symbol}`{}", reloc_site(.offset, .section))]
    UndefinedSymbol {
        /// The symbol.
        symbol: String,
        /// Where a relocation needs it, if one does.
        offset: Option<u64>,
        /// The section holding `offset`.
        section: String,
    },
    /// A relocation outside the loaded image.
    #[error("relocation {kind} at {offset:#x} lies outside the loaded image")]
    RelocOutsideImage {
        /// Its name.
        kind: &'static str,
        /// Where it applies.
        offset: u64,
    },
    /// Two relocations for the same word.
    #[error("two relocations at {offset:#x} in {section}")]
    DuplicateReloc {
        /// The word.
        offset: u64,
        /// The section holding it.
        section: String,
    },
    /// Two exported symbols with the same name.
    #[error("exported symbol `{name}` is defined twice")]
    DuplicateSymbol {
        /// The name.
        name: String,
    },
    /// The entry point is not in the code.
    #[error("entry point {entry:#x} is not in the executable segment")]
    BadEntry {
        /// `e_entry`.
        entry: u64,
    },
    /// The image is empty or too large for the blob format.
    #[error("image size {size:#x} is not supported (empty, or more than 64 MiB)")]
    BadSize {
        /// Bytes of memory it needs.
        size: u64,
    },
}

fn reloc_site(offset: &Option<u64>, section: &str) -> String {
    match offset {
        Some(o) => format!(" (relocation at {o:#x} in {section})"),
        None => String::new(),
    }
}

/// What went wrong building a parasite or the C support files.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A file could not be read or written.
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause (part of this error's message, so not a `source`).
        cause: std::io::Error,
    },
    /// A linked image was rejected.
    #[error("{}: {cause}", path.display())]
    Elf {
        /// The image.
        path: PathBuf,
        /// What is wrong with it (part of this error's message, so not a `source`).
        cause: ElfError,
    },
    /// A tool could not be started.
    #[error("cannot run `{tool}`: {cause} (is it installed? set {env} to its path)")]
    Spawn {
        /// The tool.
        tool: String,
        /// The environment variable that overrides it.
        env: &'static str,
        /// The cause (part of this error's message).
        cause: std::io::Error,
    },
    /// A tool failed.
    #[error("{tool} failed building {what}: {message}")]
    Tool {
        /// The tool (`rustc`, `ld`, `cc`).
        tool: String,
        /// What it was building.
        what: String,
        /// Its first error lines.
        message: String,
    },
    /// A parasite crate directory without a source root.
    #[error("{}: no src/lib.rs or src/main.rs: a parasite crate needs one", dir.display())]
    NoCrateRoot {
        /// The crate directory.
        dir: PathBuf,
    },
    /// A name that is not an identifier.
    #[error("`{name}` is not a valid crate name (letters, digits, `_` and `-`)")]
    BadName {
        /// The name.
        name: String,
    },
    /// An unknown plugin.
    #[error("unknown plugin `{name}` (known: std, fds, shmem)")]
    UnknownPlugin {
        /// The name.
        name: String,
    },
}

impl BuildError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |cause| Self::Io { path, cause }
    }
}
