//! `hello PID`: infects process PID with the demo parasite, which answers one RPC with the pid
//! and the current working directory it sees from inside; prints them and cures the process,
//! which runs on unharmed.
//!
//! ```text
//! $ cargo run -p compel --example hello -- 1234
//! pid 1234 (seen from inside), cwd /home/me/project
//! ```

use anyhow::{Context, bail};
use compel::Task;
use compel::infect::{InfectOptions, Parasite};
use parasite_blobs::demo::{self, proto::HelloReply};

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hello: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(pid), None) = (args.next(), args.next()) else {
        bail!("usage: hello PID");
    };
    let pid: i32 = pid.parse().with_context(|| format!("bad pid {pid:?}"))?;
    let mut task = Task::seize(pid).with_context(|| format!("cannot seize {pid}"))?;
    let mut parasite = Parasite::infect(&mut task, &demo::blob(), InfectOptions::default())
        .with_context(|| format!("cannot infect {pid}"))?;
    let reply: HelloReply = parasite
        .call_with(demo::proto::CMD_HELLO, &0u64)
        .context("hello command")?;
    parasite.cure().context("cure")?;
    task.detach().context("detach")?;
    let len = (reply.cwd_len as usize).min(reply.cwd.len());
    let cwd = String::from_utf8_lossy(&reply.cwd[..len]);
    println!("pid {} (seen from inside), cwd {cwd}", reply.pid);
    Ok(())
}
