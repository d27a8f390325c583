//! The `compel` command line (package `compel-cli`, binary `compel`): a thin layer over the
//! compel and compel-builder libraries. It lives in its own crate so that the `compel` library
//! does not pull in clap, anyhow, tracing-subscriber and the builder for its users.

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
