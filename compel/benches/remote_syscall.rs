//! Remote-syscall latency: compel against a minimal raw-ptrace baseline, in one run.
//!
//! `cargo bench -p compel --bench remote_syscall [-- ITERATIONS]`
//!
//! The victim is a forked child sleeping in `pause()`. Measured, with tracer and victim pinned
//! to the same CPU and then to different CPUs (`sched_setaffinity`):
//! - **call**: one injected `getpid` in an already seized task. Baseline: GETREGS, SETREGS with
//!   the call at the vDSO's `syscall` instruction, SINGLESTEP, waitpid, GETREGS, SETREGS back.
//!   compel: `Task::remote_syscall` (which also blocks signals around the call).
//! - **cycle**: seize, interrupt, wait, one `getpid`, detach. Baseline: the raw requests above;
//!   compel: `Task::seize` + `remote_syscall` + `detach` (which also classify the task, list its
//!   threads, find the vDSO and check seccomp as needed).
//! - **seize/detach**: the cycle without the call.
//!
//! Baseline and compel alternate in rounds. Prints the median and 90th percentile of each, and
//! compel's ratio to the baseline.

use compel::Task;
use compel_arch::nr;

#[path = "common/mod.rs"]
mod common;
use common::{ROUNDS, Stats, fork_paused_child, kill_child, pin, raw, stats, time, vdso_syscall};

fn row(what: &str, base: &Stats, ours: &Stats) {
    println!(
        "  {what:<14} baseline {:>8.2} us (p90 {:>8.2})   compel {:>8.2} us (p90 {:>8.2})   ratio {:.2}x",
        base.median,
        base.p90,
        ours.median,
        ours.p90,
        ours.median / base.median
    );
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(3000);
    let site = vdso_syscall();
    let child = fork_paused_child();
    let ncpu = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!("remote syscall latency, {n} iterations each, victim pid {child}, {ncpu} CPUs");
    let me = 0; // sched_setaffinity(0) is this thread
    let mut worst_call_ratio: f64 = 0.0;
    for (label, tracer_cpu, victim_cpu) in [("same CPU", 0, 0), ("cross CPU", 0, 1)] {
        if victim_cpu >= ncpu {
            println!("{label}: skipped, only {ncpu} CPU");
            continue;
        }
        pin(me, tracer_cpu);
        pin(child, victim_cpu);
        std::thread::sleep(std::time::Duration::from_millis(20));
        println!("{label} (tracer on CPU {tracer_cpu}, victim on CPU {victim_cpu}):");

        // Baseline and compel alternate in ROUNDS chunks so that drift in the machine's load
        // (other work on these CPUs) hits both alike.
        let mut samples: [Vec<f64>; 6] = Default::default();
        let chunk = n.div_ceil(ROUNDS);
        for _ in 0..ROUNDS {
            // call: within a seized task.
            raw::seize_interrupt(child);
            samples[0].extend(time(chunk, || {
                assert_eq!(raw::inject(child, site, nr::GETPID as u64), child as i64);
            }));
            raw::detach(child);
            let mut task = Task::seize(child).expect("seize");
            samples[1].extend(time(chunk, || {
                assert_eq!(
                    task.remote_syscall(nr::GETPID, [0; 6]).unwrap(),
                    child as i64
                );
            }));
            task.detach().expect("detach");
            // cycle: seize + call + detach.
            samples[2].extend(time(chunk / 2, || {
                assert_eq!(raw::cycle(child, site, nr::GETPID as u64), child as i64);
            }));
            samples[3].extend(time(chunk / 2, || {
                let mut t = Task::seize(child).unwrap();
                assert_eq!(t.remote_syscall(nr::GETPID, [0; 6]).unwrap(), child as i64);
                t.detach().unwrap();
            }));
            // seize/detach only.
            samples[4].extend(time(chunk / 2, || {
                raw::seize_interrupt(child);
                raw::detach(child);
            }));
            samples[5].extend(time(chunk / 2, || {
                Task::seize(child).unwrap().detach().unwrap();
            }));
        }
        let st: Vec<Stats> = samples.into_iter().map(stats).collect();
        row("call", &st[0], &st[1]);
        worst_call_ratio = worst_call_ratio.max(st[1].median / st[0].median);
        row("cycle", &st[2], &st[3]);
        row("seize/detach", &st[4], &st[5]);
    }
    println!(
        "target: remote syscall within 1.20x of the baseline; worst measured call ratio {:.2}x ({})",
        worst_call_ratio,
        if worst_call_ratio <= 1.2 {
            "met"
        } else {
            "NOT met"
        }
    );
    kill_child(child);
}
