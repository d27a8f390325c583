//! The `compel` command line (package `compel-cli`, binary `compel`): a thin layer over the
//! compel and compel-builder libraries. It lives in its own crate so that the `compel` library
//! does not pull in clap, anyhow, tracing-subscriber and the builder for its users.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};

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
