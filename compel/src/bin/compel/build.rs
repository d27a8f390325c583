//! Build-time subcommands: `hgen`, `pack`, `cflags`, `ldflags`, `plugins`, `includes`, `libs`.

use std::process::ExitCode;

/// The build-time subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {}

pub fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {}
}
