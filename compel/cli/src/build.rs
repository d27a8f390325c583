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
        /// Prefix of the generated names (C default: the output's file name, `parasite.h` gives
        /// `parasite`, as in CRIU's compel).
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
    /// Print the linker flags for a C host program using libcompel (`--static`: the archive).
    Libs,
}

/// The prefix compel is installed under, when it runs from `<prefix>/bin/compel` and
/// `make install` put its C support files there; `None` inside the checkout (`target/<profile>`).
fn installed_prefix() -> Option<(PathBuf, CSupport)> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?;
    if bin.file_name()? != "bin" {
        return None;
    }
    let prefix = bin.parent()?;
    CSupport::installed(prefix).map(|s| (prefix.to_path_buf(), s))
}

fn c_support() -> anyhow::Result<CSupport> {
    if let Some((_, support)) = installed_prefix() {
        return Ok(support);
    }
    let cache = default_cache_dir();
    CSupport::ensure(&Toolchain::from_env(), &Sources::from_workspace(), &cache)
        .with_context(|| format!("building the C plugin archive in {}", cache.display()))
}

/// The language asked for, else C for a `.h` output and Rust otherwise.
fn infer_lang(lang: Option<LangArg>, output: &std::path::Path) -> Lang {
    match lang {
        Some(LangArg::Rust) => Lang::Rust,
        Some(LangArg::C) => Lang::C,
        None if output.extension().is_some_and(|e| e == "h") => Lang::C,
        None => Lang::Rust,
    }
}

/// The prefix of a C header's names when none is given: the output's file name up to its first
/// dot, non-identifier characters as `_` (CRIU's compel does the same), else `parasite`.
fn c_prefix(output: &std::path::Path) -> String {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.split('.').next().unwrap_or_default();
    let p: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if p.is_empty() || p.starts_with(|c: char| c.is_ascii_digit()) {
        "parasite".to_owned()
    } else {
        p
    }
}

/// What a C host links: `-L<dir> -lcompel`, or with `--static` the archive and the system
/// libraries the Rust runtime inside it needs.
fn libs_line(dir: &str, static_libs: bool) -> String {
    if static_libs {
        format!("{dir}/libcompel.a -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc")
    } else {
        format!("-L{dir} -lcompel")
    }
}

pub fn run(cmd: Command, static_libs: bool) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Hgen {
            input,
            output,
            prefix,
            lang,
        } => {
            let lang = infer_lang(lang, &output);
            let prefix = if prefix.is_empty() && lang == Lang::C {
                c_prefix(&output)
            } else {
                prefix
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
            let include = match installed_prefix() {
                Some((_, support)) => support.include,
                None => Sources::from_workspace().include_dir(),
            };
            println!("-I{}", include.display());
        }
        Command::Libs => {
            // Installed: `<prefix>/lib`; in the checkout, next to the binary (target/<profile>).
            let dir = match installed_prefix() {
                Some((prefix, _)) => prefix.join("lib").display().to_string(),
                None => {
                    let exe = std::env::current_exe().context("locating the compel binary")?;
                    exe.parent()
                        .map(|d| d.display().to_string())
                        .unwrap_or_default()
                }
            };
            println!("{}", libs_line(&dir, static_libs));
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    fn parse(args: &[&str]) -> Command {
        Cli::try_parse_from(std::iter::once("compel").chain(args.iter().copied()))
            .map(|c| c.command)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn hgen_arguments() {
        match parse(&["hgen", "-f", "p.elf", "-o", "p.h", "-p", "demo"]) {
            Command::Hgen {
                input,
                output,
                prefix,
                lang: None,
            } => {
                assert_eq!(
                    (input.to_str(), output.to_str(), prefix.as_str()),
                    (Some("p.elf"), Some("p.h"), "demo")
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["hgen", "--file", "p.elf", "--output", "p.rs", "--lang", "c"]),
            Command::Hgen {
                lang: Some(LangArg::C),
                ..
            }
        ));
        assert!(
            Cli::try_parse_from(["compel", "hgen", "-o", "x"]).is_err(),
            "-f is required"
        );
        assert!(
            Cli::try_parse_from(["compel", "hgen", "-f", "a", "-o", "b", "--lang", "go"]).is_err()
        );
    }

    #[test]
    fn flag_commands_parse() {
        assert!(matches!(
            parse(&["pack", "-f", "a", "-o", "b"]),
            Command::Pack { .. }
        ));
        assert!(matches!(parse(&["cflags"]), Command::Cflags));
        assert!(matches!(parse(&["ldflags"]), Command::Ldflags));
        assert!(matches!(parse(&["includes"]), Command::Includes));
        assert!(matches!(parse(&["libs"]), Command::Libs));
        match parse(&["plugins", "std", "fds"]) {
            Command::Plugins { names } => assert_eq!(names, ["std", "fds"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hgen_language_from_the_output_name() {
        assert_eq!(infer_lang(None, "x/parasite.h".as_ref()), Lang::C);
        assert_eq!(infer_lang(None, "parasite.rs".as_ref()), Lang::Rust);
        assert_eq!(
            infer_lang(Some(LangArg::Rust), "parasite.h".as_ref()),
            Lang::Rust
        );
        assert_eq!(
            infer_lang(Some(LangArg::C), "parasite.inc".as_ref()),
            Lang::C
        );
    }

    #[test]
    fn c_prefix_is_the_output_name() {
        assert_eq!(c_prefix("x/parasite.h".as_ref()), "parasite");
        assert_eq!(c_prefix("fd-spy.blob.h".as_ref()), "fd_spy");
        assert_eq!(c_prefix("9.h".as_ref()), "parasite");
    }

    #[test]
    fn static_libs_name_the_archive() {
        assert_eq!(libs_line("/l", false), "-L/l -lcompel");
        assert!(libs_line("/l", true).starts_with("/l/libcompel.a -l"));
    }

    #[test]
    fn hgen_fails_cleanly_on_a_bad_input() {
        let dir = std::env::temp_dir().join(format!("compel-cli-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let input = dir.join("not-elf.txt");
        std::fs::write(&input, "hello").unwrap();
        let output = dir.join("out.h");
        let err = run(
            Command::Hgen {
                input: input.clone(),
                output: output.clone(),
                prefix: String::new(),
                lang: None,
            },
            false,
        )
        .unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            format!("{}: not an ELF file", input.display())
        );
        assert!(!output.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
