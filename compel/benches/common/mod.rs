//! What the compel benches share: the raw-ptrace baseline (independent of compel's own ptrace
//! layer), the paused victim they measure against, CPU pinning and timing.
//!
//! Included by each bench with `#[path = "common/mod.rs"] mod common;`.

use std::time::Instant;

/// The minimal raw-ptrace baseline: plain `ptrace` and `waitpid` requests.
pub mod raw {
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

    /// `PTRACE_SEIZE`, `PTRACE_INTERRUPT` and the wait for the stop.
    pub fn seize_interrupt(pid: i32) {
        pt(libc::PTRACE_SEIZE, pid, 0, 0);
        pt(libc::PTRACE_INTERRUPT, pid, 0, 0);
        let st = wait(pid);
        assert!(libc::WIFSTOPPED(st));
    }

    /// `PTRACE_DETACH`.
    pub fn detach(pid: i32) {
        pt(libc::PTRACE_DETACH, pid, 0, 0);
    }

    /// One injected syscall `nr` through the `syscall` instruction at `site` (GETREGS, SETREGS,
    /// SINGLESTEP, waitpid, GETREGS, SETREGS back); returns its result.
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

    /// Seize, interrupt, one injected syscall `nr` at `site`, detach.
    pub fn cycle(pid: i32, site: u64, nr: u64) -> i64 {
        seize_interrupt(pid);
        let ret = inject(pid, site, nr);
        detach(pid);
        ret
    }
}

/// Pins task `pid` (0: this thread) to CPU `cpu`.
pub fn pin(pid: i32, cpu: usize) {
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

/// The vDSO's first `syscall` instruction in this process (a forked child has the same
/// mapping).
pub fn vdso_syscall() -> u64 {
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

/// Forks the victim: a child that only sleeps in `pause()` until killed. Returns its pid.
pub fn fork_paused_child() -> i32 {
    // SAFETY: the child only loops in pause() until killed.
    match unsafe { libc::fork() } {
        0 => loop {
            // SAFETY: pause has no arguments.
            unsafe { libc::pause() };
        },
        c if c > 0 => c,
        _ => panic!("fork: {}", std::io::Error::last_os_error()),
    }
}

/// Kills and reaps the victim `child` of [`fork_paused_child`].
pub fn kill_child(child: i32) {
    // SAFETY: kill and waitpid on our own child.
    unsafe {
        libc::kill(child, libc::SIGKILL);
        let mut st = 0;
        libc::waitpid(child, &mut st, 0);
    }
}

/// Baseline and compel alternate in this many rounds, so that drift in the machine's load
/// (other work on these CPUs) hits both alike.
pub const ROUNDS: usize = 10;

/// Runs `f` `n` times after a short warm-up; returns each run's time in microseconds.
pub fn time(n: usize, mut f: impl FnMut()) -> Vec<f64> {
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

/// The median and 90th percentile of some times (microseconds).
#[derive(Clone, Copy)]
pub struct Stats {
    pub median: f64,
    pub p90: f64,
}

/// The [`Stats`] of `v` (not empty).
pub fn stats(mut v: Vec<f64>) -> Stats {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Stats {
        median: v[n / 2],
        p90: v[n * 9 / 10],
    }
}
