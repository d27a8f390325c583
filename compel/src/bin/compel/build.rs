//! Build-time subcommands: `hgen`, `pack`, `cflags`, `ldflags`, `plugins`, `includes`, `libs`.

use anyhow::Context;
use compel_builder::{CSupport, Lang, Sources, Toolchain, default_cache_dir};
use std::path::PathBuf;
use std::process::ExitCode;

/// The language `hgen` writes.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum LangArg {
    /// A Rust module.
    Rust,
    /// A C header.
    C,
}

/// The build-time subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Describe a linked parasite image as a Rust module or a C header.
    Hgen {
        /// The linked parasite image (static-PIE ELF).
        #[arg(short = 'f', long = "file")]
        input: PathBuf,
        /// Where to write the module or header.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// Prefix of the generated names (C default: `parasite`).
        #[arg(short = 'p', long = "prefix", default_value = "")]
        prefix: String,
        /// Output language (default: C if OUTPUT ends in `.h`, else Rust).
        #[arg(long = "lang", value_enum)]
        lang: Option<LangArg>,
    },
    /// Write the run-time loadable blob file of a linked parasite image.
    Pack {
        /// The linked parasite image (static-PIE ELF).
        #[arg(short = 'f', long = "file")]
        input: PathBuf,
        /// Where to write the blob.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
    /// Print the gcc flags for compiling C parasite code.
    Cflags,
    /// Print the ld flags for linking a C parasite (objects and `compel plugins` follow them).
    Ldflags,
    /// Print the plugin archive(s) to link into a C parasite (std, fds, shmem; all by default).
    Plugins {
        /// Plugin names.
        names: Vec<String>,
    },
    /// Print the include flags for compel's C headers.
    Includes,
    /// Print the linker flags for a C host program using libcompel.
    Libs,
}

fn c_support() -> anyhow::Result<CSupport> {
    let cache = default_cache_dir();
    CSupport::ensure(&Toolchain::from_env(), &Sources::from_workspace(), &cache)
        .with_context(|| format!("building the C plugin archive in {}", cache.display()))
}

pub fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Hgen {
            input,
            output,
            prefix,
            lang,
        } => {
            let lang = match lang {
                Some(LangArg::Rust) => Lang::Rust,
                Some(LangArg::C) => Lang::C,
                None if output.extension().is_some_and(|e| e == "h") => Lang::C,
                None => Lang::Rust,
            };
            compel_builder::hgen_file(&input, &output, lang, &prefix)?;
        }
        Command::Pack { input, output } => compel_builder::pack_file(&input, &output)?,
        Command::Cflags => println!("{}", c_support()?.cflags().join(" ")),
        Command::Ldflags => println!("{}", c_support()?.ldflags().join(" ")),
        Command::Plugins { names } => {
            let files = c_support()?.plugins(&names)?;
            let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            println!("{}", files.join(" "));
        }
        Command::Includes => {
            println!("-I{}", Sources::from_workspace().include_dir().display());
        }
        Command::Libs => {
            let exe = std::env::current_exe().context("locating the compel binary")?;
            let dir = exe
                .parent()
                .map(|d| d.display().to_string())
                .unwrap_or_default();
            println!("-L{dir} -lcompel");
        }
    }
    Ok(ExitCode::SUCCESS)
}
