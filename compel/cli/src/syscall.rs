//! `compel syscall -t PID NAME [ARG...]`: run one syscall inside a live task.

use std::process::ExitCode;

use anyhow::{Context, bail};
use compel::Task;

/// Arguments of `compel syscall`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The task (pid or tid) to run the syscall in.
    #[arg(short = 't', long = "tree")]
    pub pid: i32,
    /// The syscall's kernel name, e.g. `getpid` (or its number).
    pub name: String,
    /// Up to six numeric arguments (decimal, negative decimal or 0x hex).
    #[arg(allow_negative_numbers = true)]
    pub args: Vec<String>,
}

/// Parses a syscall argument: decimal (possibly negative) or `0x` hex.
pub fn parse_arg(s: &str) -> anyhow::Result<u64> {
    let t = s.trim();
    let v = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else if let Some(neg) = t.strip_prefix('-') {
        neg.parse::<i64>()
            .ok()
            .and_then(|v| v.checked_neg())
            .map(|v| v as u64)
    } else {
        t.parse::<u64>().ok()
    };
    v.with_context(|| format!("bad syscall argument {s:?}: expected a decimal or 0x hex number"))
}

/// Resolves a syscall name (or number) to its number.
pub fn resolve(name: &str) -> anyhow::Result<usize> {
    if let Some(nr) = compel::syscall_number(name) {
        return Ok(nr);
    }
    if let Ok(nr) = name.parse::<usize>()
        && compel::syscall_name(nr).is_some()
    {
        return Ok(nr);
    }
    bail!("unknown syscall name {name:?} ({})", compel_arch::ARCH_NAME)
}

/// Formats a raw syscall result: the number, and for `-errno` values the errno's name and text.
pub fn format_result(ret: i64) -> (String, bool) {
    if (-4095..0).contains(&ret) {
        let e = nix::errno::Errno::from_raw(-ret as i32);
        (format!("{ret} {e:?} ({})", e.desc()), false)
    } else {
        (ret.to_string(), true)
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    // Everything that can be checked without touching the task is checked first.
    let nr = resolve(&args.name)?;
    if args.args.len() > 6 {
        bail!(
            "a syscall takes at most 6 arguments, got {}",
            args.args.len()
        );
    }
    let mut regs = [0u64; 6];
    for (slot, a) in regs.iter_mut().zip(&args.args) {
        *slot = parse_arg(a)?;
    }
    let mut task = Task::seize(args.pid).context("cannot seize the task")?;
    let ret = task
        .remote_syscall(nr, regs)
        .with_context(|| format!("running {} in task {}", args.name, args.pid));
    task.detach()
        .with_context(|| format!("detaching from task {}", args.pid))?;
    let (text, ok) = format_result(ret?);
    println!("{text}");
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_parse() {
        assert_eq!(parse_arg("0").unwrap(), 0);
        assert_eq!(parse_arg("42").unwrap(), 42);
        assert_eq!(parse_arg("0x1F").unwrap(), 31);
        assert_eq!(parse_arg("-100").unwrap(), (-100i64) as u64);
        assert!(parse_arg("ten").is_err());
        assert!(parse_arg("0xzz").is_err());
        assert!(parse_arg("").is_err());
    }

    #[test]
    fn names_resolve() {
        assert_eq!(resolve("getpid").unwrap(), 39);
        assert_eq!(resolve("39").unwrap(), 39);
        assert!(resolve("getpidd").is_err());
        assert!(resolve("99999").is_err());
    }

    #[test]
    fn results_format() {
        assert_eq!(format_result(1234), ("1234".to_string(), true));
        let (t, ok) = format_result(-9);
        assert!(!ok);
        assert!(t.starts_with("-9 EBADF"), "{t}");
    }
}
