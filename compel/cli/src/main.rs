//! The `compel` command line (package `compel-cli`, binary `compel`): a thin layer over the
//! compel and compel-builder libraries. It lives in its own crate so that the `compel` library
//! does not pull in clap, anyhow, tracing-subscriber and the builder for its users.
#![forbid(unsafe_code)]

use clap::{CommandFactory, Parser, Subcommand};

mod build;
mod syscall;

/// compel: parasite code injection for Linux.
#[derive(Parser, Debug)]
#[command(name = "compel", version, about, long_about = None)]
struct Cli {
    /// With `libs`: print the static library (and what it needs) instead of `-lcompel`, as
    /// CRIU's `compel --static libs` does.
    #[arg(short = 's', long = "static", global = true)]
    static_libs: bool,
    /// CRIU's flag for 32-bit (compat) parasites: refused, this compel builds x86_64 ones.
    #[arg(short = 'c', long = "compat", global = true)]
    compat: bool,
    /// CRIU's log level option (accepted; use RUST_LOG for this compel's own log).
    #[arg(short = 'l', long = "log-level", global = true, value_name = "N")]
    _log_level: Option<u32>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one syscall inside a live task and print its result.
    Syscall(syscall::Args),
    #[command(flatten)]
    Build(build::Command),
    /// Print this program's man page (roff) or shell completion (bash, zsh, fish), generated from this parser.
    #[command(hide = true)]
    Generate {
        #[arg(value_enum)]
        what: Generate,
    },
}

/// What `compel generate` prints.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Generate {
    /// compel(1) in roff.
    Man,
    /// A bash completion script.
    Bash,
    /// A zsh completion script.
    Zsh,
    /// A fish completion script.
    Fish,
}

/// compel(1), from the parser above.
fn page() -> clidoc::Page {
    let mut page = clidoc::Page::from_clap(&Cli::command(), "1");
    page.summary = "parasite code injection into live Linux tasks".to_owned();
    page.description = vec![
        "compel runs code inside a live task: it stops the task with ptrace, maps a parasite \
         blob into it, and talks to the parasite over a socket. The build commands describe and \
         link parasites (Rust or C) and print the flags a C program needs to use libcompel."
            .to_owned(),
        "The global options go before the command.".to_owned(),
    ];
    page.sections = vec![
        (
            "Files".to_owned(),
            vec![
                "Installed, compel prints paths under its prefix (the directory above the one \
                 holding the binary): PREFIX/lib/compel/libcompel_plugins.a, \
                 PREFIX/lib/compel/compel.lds, PREFIX/include/compel and PREFIX/lib. Run from a \
                 build tree, it builds the plugin archive into $COMPEL_CACHE_DIR (else \
                 $XDG_CACHE_HOME/compel, else ~/.cache/compel)."
                    .to_owned(),
            ],
        ),
        (
            "Examples".to_owned(),
            vec![
                "  gcc $(compel cflags) -c parasite.c -o parasite.o\n  \
                 ld $(compel ldflags) parasite.o $(compel plugins) -o parasite.elf\n  \
                 compel hgen -f parasite.elf -o parasite.h\n  \
                 gcc $(compel includes) host.c $(compel libs) -o host\n  \
                 compel syscall -p PID getpid"
                    .to_owned(),
            ],
        ),
        (
            "Exit status".to_owned(),
            vec!["0 on success, 1 on an error (printed on stderr), 2 on a usage error.".to_owned()],
        ),
    ];
    page
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if cli.compat {
        eprintln!("compel: --compat (32-bit parasites) is not supported, only x86_64");
        return std::process::ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Syscall(args) => syscall::run(args),
        Command::Build(cmd) => build::run(cmd, cli.static_libs),
        Command::Generate { what } => {
            match what {
                Generate::Man => print!("{}", page().roff()),
                Generate::Bash => print!("{}", page().bash()),
                Generate::Zsh => print!("{}", page().zsh()),
                Generate::Fish => print!("{}", page().fish()),
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("compel: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn criu_global_flags_parse_before_the_action() {
        let cli = Cli::try_parse_from(["compel", "--static", "libs"]).unwrap();
        assert!(cli.static_libs && !cli.compat);
        let cli = Cli::try_parse_from(["compel", "-l", "4", "hgen", "-f", "a", "-o", "b.h"]);
        assert!(cli.is_ok());
        let cli = Cli::try_parse_from(["compel", "-c", "cflags"]).unwrap();
        assert!(cli.compat);
    }
}
