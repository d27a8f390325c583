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
//! - **cycle, no log**: the same without the log channel (two fewer remote syscalls);
//! - **infect+call+cure**: the cycle inside an already seized task.
//!
//! Baseline and compel alternate in rounds so that load drift hits both alike. Prints medians,
//! 90th percentiles and the ratio to the baseline; the target is a cycle under 0.5 ms.

use std::time::Instant;

use compel::Task;
use compel::infect::{InfectOptions, Parasite};
use compel_arch::{UserRegs, nr};
use parasite_blobs::testkit::{self, proto as tk};

/// The minimal raw-ptrace baseline, independent of compel.
mod raw {
    use super::UserRegs;

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

    fn getregs(pid: i32) -> UserRegs {
        let mut r = UserRegs::default();
        pt(
            libc::PTRACE_GETREGS,
            pid,
            0,
            &mut r as *mut UserRegs as usize,
        );
        r
    }

    fn setregs(pid: i32, r: &UserRegs) {
        pt(libc::PTRACE_SETREGS, pid, 0, r as *const UserRegs as usize);
    }

    /// Seize, interrupt, one injected syscall `nr` at `site`, detach.
    pub fn cycle(pid: i32, site: u64, nr: u64) -> i64 {
        pt(libc::PTRACE_SEIZE, pid, 0, 0);
        pt(libc::PTRACE_INTERRUPT, pid, 0, 0);
        assert!(libc::WIFSTOPPED(wait(pid)));
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
        pt(libc::PTRACE_DETACH, pid, 0, 0);
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
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The vDSO's first `syscall` instruction (the forked child has the same mapping).
fn vdso_syscall() -> u64 {
    // SAFETY: getauxval only reads the auxiliary vector.
    let base = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) } as usize;
    assert_ne!(base, 0, "no vDSO");
    // SAFETY: the vDSO image is mapped readable at `base`; two pages hold its code.
    let img = unsafe { std::slice::from_raw_parts(base as *const u8, 8192) };
    let off = img
        .windows(2)
        .position(|w| w == compel_arch::SYSCALL_INSN)
        .expect("syscall in vDSO");
    (base + off) as u64
}

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

/// (median, p90) in microseconds.
fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[v.len() * 9 / 10])
}

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

const ROUNDS: usize = 10;

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
        .map(|(n, v)| format!("{n} {:.0}", stats(v).0))
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
    // SAFETY: the child only loops in pause() until killed.
    let child = match unsafe { libc::fork() } {
        0 => loop {
            // SAFETY: pause has no arguments.
            unsafe { libc::pause() };
        },
        c if c > 0 => c,
        _ => panic!("fork: {}", std::io::Error::last_os_error()),
    };
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
                st.0,
                st.1,
                st.0 / base.0
            );
        }
        worst = worst.max(cycle.0);
        breakdown(child, chunk * 2);
    }
    println!(
        "target: the whole cycle under 500 us; worst median {worst:.1} us ({})",
        if worst < 500.0 { "met" } else { "NOT met" }
    );
    // SAFETY: kill and waitpid on our own child.
    unsafe {
        libc::kill(child, libc::SIGKILL);
        let mut st = 0;
        libc::waitpid(child, &mut st, 0);
    }
}
