//! `compel syscall -t PID NAME [ARG...]`.

use std::process::ExitCode;

/// Arguments of `compel syscall`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The task (pid or tid) to run the syscall in.
    #[arg(short = 't', long = "tree")]
    pub pid: i32,
    /// The syscall's kernel name, e.g. `getpid`.
    pub name: String,
    /// Up to six numeric arguments (decimal or 0x hex).
    pub args: Vec<String>,
}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("syscall: not implemented yet")
}
