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

use std::time::Instant;

use compel::Task;
use compel_arch::nr;

/// The minimal raw-ptrace baseline, independent of compel's own ptrace layer.
mod raw {
    use compel_arch::UserRegs;

    fn pt(req: libc::c_uint, pid: i32, addr: usize, data: usize) {
        // SAFETY: callers pass integers or pointers to live, correctly sized locals.
        let rc = unsafe {
            libc::ptrace(
                req,
                pid,
                addr as *mut libc::c_void,
                data as *mut libc::c_void,
            )
        };
        assert!(
            rc != -1,
            "ptrace {req:#x}: {}",
            std::io::Error::last_os_error()
        );
    }

    fn wait(pid: i32) -> i32 {
        let mut st = 0;
        // SAFETY: st is a live local.
        let rc = unsafe { libc::waitpid(pid, &mut st, libc::__WALL) };
        assert_eq!(rc, pid, "waitpid: {}", std::io::Error::last_os_error());
        st
    }

    pub fn seize_interrupt(pid: i32) {
        pt(libc::PTRACE_SEIZE, pid, 0, 0);
        pt(libc::PTRACE_INTERRUPT, pid, 0, 0);
        let st = wait(pid);
        assert!(libc::WIFSTOPPED(st));
    }

    pub fn detach(pid: i32) {
        pt(libc::PTRACE_DETACH, pid, 0, 0);
    }

    pub fn getregs(pid: i32) -> UserRegs {
        let mut r = UserRegs::default();
        pt(
            libc::PTRACE_GETREGS,
            pid,
            0,
            &mut r as *mut UserRegs as usize,
        );
        r
    }

    pub fn setregs(pid: i32, r: &UserRegs) {
        pt(libc::PTRACE_SETREGS, pid, 0, r as *const UserRegs as usize);
    }

    /// One injected syscall through the `syscall` instruction at `site`.
    pub fn inject(pid: i32, site: u64, nr: u64) -> i64 {
        let saved = getregs(pid);
        let mut r = saved;
        r.rax = nr;
        r.orig_rax = u64::MAX;
        r.rip = site;
        setregs(pid, &r);
        pt(libc::PTRACE_SINGLESTEP, pid, 0, 0);
        let st = wait(pid);
        assert!(libc::WIFSTOPPED(st) && libc::WSTOPSIG(st) == libc::SIGTRAP);
        let ret = getregs(pid).rax as i64;
        setregs(pid, &saved);
        ret
    }
}

fn pin(pid: i32, cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let rc = libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(
            rc,
            0,
            "sched_setaffinity({pid}, {cpu}): {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The vDSO's first `syscall` instruction in this process (the child inherits the mapping).
fn vdso_syscall() -> u64 {
    // SAFETY: getauxval only reads the auxiliary vector.
    let base = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) } as usize;
    assert_ne!(base, 0, "no vDSO");
    // SAFETY: the vDSO image is mapped readable at `base`; two pages hold its code here.
    let img = unsafe { std::slice::from_raw_parts(base as *const u8, 8192) };
    let off = img
        .windows(2)
        .position(|w| w == compel_arch::SYSCALL_INSN)
        .expect("syscall in vDSO");
    (base + off) as u64
}

struct Stats {
    median: f64,
    p90: f64,
}

const ROUNDS: usize = 10;

/// Runs `f` `n` times after a short warm-up; returns each run's time in microseconds.
fn time(n: usize, mut f: impl FnMut()) -> Vec<f64> {
    for _ in 0..n / 10 + 1 {
        f();
    }
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_nanos() as f64 / 1000.0
        })
        .collect()
}

fn stats(mut v: Vec<f64>) -> Stats {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Stats {
        median: v[n / 2],
        p90: v[n * 9 / 10],
    }
}

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
    // SAFETY: the child only loops in pause() until killed.
    let child = match unsafe { libc::fork() } {
        0 => loop {
            // SAFETY: pause has no arguments.
            unsafe { libc::pause() };
        },
        c if c > 0 => c,
        _ => panic!("fork: {}", std::io::Error::last_os_error()),
    };
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
                raw::seize_interrupt(child);
                assert_eq!(raw::inject(child, site, nr::GETPID as u64), child as i64);
                raw::detach(child);
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
    // SAFETY: kill and waitpid on our own child.
    unsafe {
        libc::kill(child, libc::SIGKILL);
        let mut st = 0;
        libc::waitpid(child, &mut st, 0);
    }
}
