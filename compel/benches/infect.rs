//! Infection latency: seize + infect + one RPC call + cure + detach, against the raw-ptrace
//! baseline (seize, interrupt, one injected `getpid`, detach), in one run.
//!
//! `cargo bench -p compel --bench infect [-- ITERATIONS]`
//!
//! The victim is a forked child sleeping in `pause()`; tracer and victim are pinned to the same
//! CPU, then to different CPUs. Measured:
//! - **baseline**: `PTRACE_SEIZE`, `PTRACE_INTERRUPT`, waitpid, one `getpid` injected at the
//!   vDSO's `syscall` instruction (GETREGS, SETREGS, SINGLESTEP, waitpid, GETREGS, SETREGS),
//!   `PTRACE_DETACH`: the least any injection costs;
//! - **cycle**: `Task::seize`, `Parasite::infect` (testkit blob: memfd, mappings, sockets,
//!   frame, start, ping), one `call_with(CMD_ADD)`, `cure`, `detach`, with the default options
//!   (log channel on);
//! - **cycle, no log**: the same without the log channel (one socket pair fewer, made by the
//!   parasite itself);
//! - **infect+call+cure**: the cycle inside an already seized task.
//!
//! Baseline and compel alternate in rounds so that load drift hits both alike. Prints medians,
//! 90th percentiles and the ratio to the baseline; the target is a cycle under 0.5 ms.

use std::time::Instant;

use compel::Task;
use compel::infect::{InfectOptions, Parasite};
use compel_arch::nr;
use parasite_blobs::testkit::{self, proto as tk};

#[path = "common/mod.rs"]
mod common;
use common::{ROUNDS, fork_paused_child, kill_child, pin, raw, stats, time, vdso_syscall};

fn call_once(task: &mut Task, opts: InfectOptions, pid: i32) {
    let mut p = Parasite::infect(task, &testkit::blob(), opts).expect("infect");
    let a = tk::Args {
        a: 2,
        b: 3,
        ..tk::Args::default()
    };
    let r: tk::Args = p.call_with(tk::CMD_ADD, &a).expect("call");
    assert_eq!((r.r, r.pid), (5, pid));
    p.cure().expect("cure");
}

fn no_log() -> InfectOptions {
    InfectOptions {
        log_level: None,
        ..InfectOptions::default()
    }
}

/// Median time from seize to each stage of a cycle (the hook records instants).
fn breakdown(pid: i32, n: usize) {
    use compel::infect::Stage;
    use std::sync::{Arc, Mutex};
    let names = [
        "seized", "saved", "mapped", "loaded", "started", "answered", "returned", "cured",
        "detached",
    ];
    let mut per: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    for _ in 0..n {
        let marks = Arc::new(Mutex::new(Vec::new()));
        let m2 = marks.clone();
        let t0 = Instant::now();
        let mut t = Task::seize(pid).expect("seize");
        let seized = t0.elapsed();
        let opts = InfectOptions {
            hook: Some(Box::new(move |s| {
                if !matches!(s, Stage::CommandSent(_) | Stage::FiniSent) {
                    m2.lock().unwrap().push(t0.elapsed());
                }
            })),
            ..InfectOptions::default()
        };
        let mut p = Parasite::infect(&mut t, &testkit::blob(), opts).expect("infect");
        let _: tk::Args = p
            .call_with(tk::CMD_ADD, &tk::Args::default())
            .expect("call");
        let answered = t0.elapsed();
        p.cure().expect("cure");
        t.detach().expect("detach");
        let detached = t0.elapsed();
        let m = marks.lock().unwrap().clone();
        let mut all = vec![seized];
        all.extend(&m[..4]);
        all.push(answered);
        all.extend(&m[4..]);
        all.push(detached);
        for (v, d) in per.iter_mut().zip(all) {
            v.push(d.as_nanos() as f64 / 1000.0);
        }
    }
    let line: Vec<String> = names
        .iter()
        .zip(per)
        .map(|(n, v)| format!("{n} {:.0}", stats(v).median))
        .collect();
    println!(
        "  breakdown (median us since seize started): {}",
        line.join(", ")
    );
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(500);
    let site = vdso_syscall();
    let child = fork_paused_child();
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("infect + call + cure latency, {n} iterations each, victim pid {child}, {ncpu} CPUs");
    let mut worst: f64 = 0.0;
    for (label, tracer_cpu, victim_cpu) in [("same CPU", 0, 0), ("cross CPU", 0, 1)] {
        if victim_cpu >= ncpu {
            println!("{label}: skipped, only {ncpu} CPU");
            continue;
        }
        pin(0, tracer_cpu);
        pin(child, victim_cpu);
        std::thread::sleep(std::time::Duration::from_millis(20));
        println!("{label} (tracer on CPU {tracer_cpu}, victim on CPU {victim_cpu}):");
        let mut s: [Vec<f64>; 4] = Default::default();
        let chunk = n.div_ceil(ROUNDS);
        for _ in 0..ROUNDS {
            s[0].extend(time(chunk, || {
                assert_eq!(raw::cycle(child, site, nr::GETPID as u64), child as i64);
            }));
            s[1].extend(time(chunk, || {
                let mut t = Task::seize(child).expect("seize");
                call_once(&mut t, InfectOptions::default(), child);
                t.detach().expect("detach");
            }));
            s[2].extend(time(chunk, || {
                let mut t = Task::seize(child).expect("seize");
                call_once(&mut t, no_log(), child);
                t.detach().expect("detach");
            }));
            let mut t = Task::seize(child).expect("seize");
            s[3].extend(time(chunk, || {
                call_once(&mut t, InfectOptions::default(), child)
            }));
            t.detach().expect("detach");
        }
        let [base, cycle, nolog, inner] = s.map(stats);
        for (what, st) in [
            ("baseline", base),
            ("cycle", cycle),
            ("cycle, no log", nolog),
            ("infect+call+cure", inner),
        ] {
            println!(
                "  {what:<17} median {:>8.1} us  p90 {:>8.1} us  ratio {:>5.2}x",
                st.median,
                st.p90,
                st.median / base.median
            );
        }
        worst = worst.max(cycle.median);
        breakdown(child, chunk * 2);
    }
    println!(
        "target: the whole cycle under 500 us; worst median {worst:.1} us ({})",
        if worst < 500.0 { "met" } else { "NOT met" }
    );
    kill_child(child);
}
