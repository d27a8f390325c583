//! `sampler PID [--hz N] [--count M] [--addr ADDR]`: a profiler-like sampler. N times per
//! second it infects process PID with the sampler parasite, takes one sample from inside (the
//! process's CPU time and peak RSS as the process itself sees them, and the `u64` at ADDR if
//! given), and cures it again: between samples the process runs freely. Prints one line per
//! sample and the cost of each infect→sample→cure cycle.
//!
//! ```text
//! $ cargo run -p compel --example sampler -- 1234 --hz 5 --count 3 --addr 0x55d0c0de1000
//! sample 1: cpu 12.345 ms, maxrss 2048 KiB, value 17 (cycle 412 us)
//! ```

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use compel::Task;
use compel::infect::{InfectOptions, Parasite};
use parasite_blobs::sampler::{self, proto::Sample};

struct Opts {
    pid: i32,
    hz: u32,
    count: u32,
    addr: u64,
}

fn parse() -> anyhow::Result<Opts> {
    let mut it = std::env::args().skip(1);
    let mut o = Opts {
        pid: 0,
        hz: 10,
        count: 10,
        addr: 0,
    };
    let mut pid = None;
    while let Some(a) = it.next() {
        let mut val = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--hz" => o.hz = val("--hz")?.parse().context("--hz")?,
            "--count" => o.count = val("--count")?.parse().context("--count")?,
            "--addr" => {
                let v = val("--addr")?;
                o.addr = u64::from_str_radix(v.trim_start_matches("0x"), 16)
                    .with_context(|| format!("bad address {v:?}"))?;
            }
            _ if pid.is_none() => pid = Some(a.parse().with_context(|| format!("bad pid {a:?}"))?),
            _ => bail!("unexpected argument {a:?}"),
        }
    }
    let Some(pid) = pid else {
        bail!("usage: sampler PID [--hz N] [--count M] [--addr ADDR]");
    };
    if o.hz == 0 || o.hz > 1000 {
        bail!("--hz must be 1..=1000");
    }
    o.pid = pid;
    Ok(o)
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match parse().and_then(|o| run(&o)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sampler: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// One infect → sample → cure cycle.
fn sample_once(pid: i32, addr: u64) -> anyhow::Result<Sample> {
    let mut task = Task::seize(pid).with_context(|| format!("cannot seize {pid}"))?;
    let opts = InfectOptions {
        log_level: None,
        ..InfectOptions::default()
    };
    let mut parasite = Parasite::infect(&mut task, &sampler::blob(), opts)
        .with_context(|| format!("cannot infect {pid}"))?;
    let args = Sample {
        addr,
        ..Sample::default()
    };
    let s: Sample = parasite
        .call_with(sampler::proto::CMD_SAMPLE, &args)
        .context("sample command")?;
    parasite.cure().context("cure")?;
    task.detach().context("detach")?;
    Ok(s)
}

fn run(o: &Opts) -> anyhow::Result<()> {
    let period = Duration::from_secs(1) / o.hz;
    let mut next = Instant::now();
    for i in 1..=o.count {
        let t0 = Instant::now();
        let s = sample_once(o.pid, o.addr)?;
        let cycle = t0.elapsed();
        let value = match (o.addr, s.value_errno) {
            (0, _) => String::new(),
            (_, 0) => format!(", value {}", s.value),
            (a, e) => format!(
                ", value unreadable at {a:#x} ({})",
                nix::errno::Errno::from_raw(e)
            ),
        };
        println!(
            "sample {i}: cpu {:.3} ms, maxrss {} KiB{value} (cycle {} us)",
            s.cpu_ns as f64 / 1e6,
            s.maxrss_kib,
            cycle.as_micros()
        );
        next += period;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    Ok(())
}
