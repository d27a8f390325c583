//! criu test victim: task and memory state that a dump used to lose, checking itself.
//!
//! `criu-victim-defects-tasks READY MODE...` sets up each MODE (below), writes `ready PID` into
//! READY and waits. On `SIGUSR1` it checks every MODE again and writes `check ok` (or `check bad
//! WHAT...`) into READY.2.
//!
//! Modes:
//! - `loginuid`: audit login uid 4242 (`/proc/self/loginuid`);
//! - `sched`: `SCHED_OTHER | SCHED_RESET_ON_FORK`, nice 3;
//! - `mlock`: an `mlock`ed area and a `MAP_LOCKED` one, both written;
//! - `shared-rw`: a read-only `MAP_SHARED` mapping of a file opened `O_RDWR`, made writable
//!   after the restore;
//! - `posix-timer-thread`: a `SIGEV_THREAD` POSIX timer (glibc's helper thread gets it
//!   through `SIGEV_THREAD_ID`) that fires every 20 ms;
//! - `membarrier`: registered for `MEMBARRIER_CMD_PRIVATE_EXPEDITED`;
//! - `guard`: a guard region (`MADV_GUARD_INSTALL`) in the middle of a written area;
//! - `droppable`: a written `MAP_DROPPABLE` area (it must come back droppable, and empty as
//!   after a drop);
//! - `rseq`: a thread that spends its life inside an rseq critical section (glibc's
//!   registration), counting the aborts that signals to it cause;
//! - `shared-unfaulted`: `MAP_SHARED | MAP_ANONYMOUS` pages written, then dropped from this
//!   process's page tables (`MADV_DONTNEED`): they live on in the object only;
//! - `shared-shrunk`: the same, but shrunk with `mremap` (its dump is refused) and grown
//!   again when checked;
//! - `pgrp-zombie-leader`: a child L leading its own process group, a child M in L's group,
//!   and L killed (a zombie, not reaped); writes `L M` into READY.pids.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static CHECK: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    CHECK.store(true, Ordering::SeqCst);
}

type Check = Box<dyn Fn(&mut Vec<String>)>;

const PAGE: usize = 4096;

/// `mmap` of `len` bytes, asserted to succeed.
fn map(len: usize, prot: i32, flags: i32, fd: i32) -> usize {
    // SAFETY: a fresh mapping chosen by the kernel; nothing of ours is replaced.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, 0) };
    assert_ne!(
        p,
        libc::MAP_FAILED,
        "mmap: {}",
        std::io::Error::last_os_error()
    );
    p as usize
}

/// Fills `len` bytes at `addr` with a pattern seeded by `seed`.
fn fill(addr: usize, len: usize, seed: u8) {
    for i in 0..len {
        // SAFETY: the caller owns `len` writable bytes at `addr`.
        unsafe { *((addr + i) as *mut u8) = (i as u8).wrapping_mul(7).wrapping_add(seed) };
    }
}

/// Whether the pattern of [`fill`] is still at `addr`.
fn filled(addr: usize, len: usize, seed: u8) -> bool {
    // SAFETY: the caller owns `len` readable bytes at `addr`.
    (0..len).all(
        |i| unsafe { *((addr + i) as *const u8) } == (i as u8).wrapping_mul(7).wrapping_add(seed),
    )
}

/// The `/proc/self/smaps` block of the area starting at `addr`: its lines after the header.
fn smaps_of(addr: usize) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let head = format!("{addr:x}-");
    let mut out = Vec::new();
    let mut inside = false;
    for l in text.lines() {
        let is_head = l
            .split_whitespace()
            .next()
            .is_some_and(|w| w.contains('-') && !w.ends_with(':'));
        if is_head {
            inside = l.starts_with(&head);
        } else if inside {
            out.push(l.to_string());
        }
    }
    out
}

/// Whether the area at `addr` has VM flag `flag` (two letters of smaps' `VmFlags`).
fn has_vm_flag(addr: usize, flag: &str) -> bool {
    smaps_of(addr).iter().any(|l| {
        l.strip_prefix("VmFlags:")
            .is_some_and(|f| f.split_whitespace().any(|w| w == flag))
    })
}

/// smaps' `KEY:` of the area at `addr`, in kB.
fn smaps_kb(addr: usize, key: &str) -> u64 {
    smaps_of(addr)
        .iter()
        .find_map(|l| {
            l.strip_prefix(key)?
                .strip_prefix(':')?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(u64::MAX)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: criu-victim-defects-tasks READY MODE...");
        std::process::exit(2);
    }
    let ready = &args[1];
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t);
    }
    let mut checks: Vec<Check> = Vec::new();
    for m in &args[2..] {
        checks.push(match m.as_str() {
            "loginuid" => loginuid(),
            "sched" => sched(),
            "mlock" => mlock(),
            "shared-rw" => shared_rw(ready),
            "posix-timer-thread" => posix_timer_thread(),
            "membarrier" => membarrier(),
            "guard" => guard(),
            "droppable" => droppable(),
            "rseq" => rseq(),
            "shared-unfaulted" => shared_unfaulted(),
            "shared-shrunk" => shared_shrunk(),
            "pgrp-zombie-leader" => pgrp_zombie_leader(ready),
            other => {
                eprintln!("unknown mode {other}");
                std::process::exit(2);
            }
        });
    }
    let tmp = format!("{ready}.tmp");
    std::fs::write(&tmp, format!("ready {}", std::process::id())).expect("ready");
    std::fs::rename(&tmp, ready).expect("rename ready");
    loop {
        std::thread::sleep(std::time::Duration::from_millis(10));
        if CHECK.swap(false, Ordering::SeqCst) {
            let mut bad = Vec::new();
            for c in &checks {
                c(&mut bad);
            }
            let msg = if bad.is_empty() {
                "check ok".to_string()
            } else {
                format!("check bad {}", bad.join(" "))
            };
            std::fs::write(format!("{ready}.2"), msg).expect("check result");
        }
    }
}

fn loginuid() -> Check {
    std::fs::write("/proc/self/loginuid", "4242").expect("write loginuid");
    Box::new(|bad| {
        let now = std::fs::read_to_string("/proc/self/loginuid").unwrap_or_default();
        if now.trim() != "4242" {
            bad.push(format!("loginuid={now}"));
        }
    })
}

fn sched() -> Check {
    // SAFETY: scheduling calls on this process with a live local parameter.
    unsafe {
        let p = libc::sched_param { sched_priority: 0 };
        assert_eq!(
            libc::sched_setscheduler(0, libc::SCHED_OTHER | libc::SCHED_RESET_ON_FORK, &p),
            0
        );
        assert_eq!(libc::setpriority(libc::PRIO_PROCESS, 0, 3), 0);
    }
    Box::new(|bad| {
        // SAFETY: queries of this process's own scheduling.
        let (policy, nice) = unsafe {
            (
                libc::sched_getscheduler(0),
                libc::getpriority(libc::PRIO_PROCESS, 0),
            )
        };
        if policy != libc::SCHED_OTHER | libc::SCHED_RESET_ON_FORK {
            bad.push(format!("policy={policy:#x}"));
        }
        if nice != 3 {
            bad.push(format!("nice={nice}"));
        }
    })
}

fn mlock() -> Check {
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let priv_anon = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
    let a = map(4 * PAGE, rw, priv_anon, -1);
    fill(a, 4 * PAGE, 1);
    // SAFETY: locks our own fresh area.
    let r = unsafe { libc::mlock(a as *const libc::c_void, 4 * PAGE) };
    assert_eq!(r, 0);
    let b = map(2 * PAGE, rw, priv_anon | libc::MAP_LOCKED, -1);
    fill(b, 2 * PAGE, 2);
    Box::new(move |bad| {
        for (addr, len, seed, what) in [(a, 4 * PAGE, 1, "mlock"), (b, 2 * PAGE, 2, "map_locked")] {
            if !has_vm_flag(addr, "lo") {
                bad.push(format!("{what}-not-locked"));
            }
            if smaps_kb(addr, "Locked") != (len / 1024) as u64 {
                bad.push(format!("{what}-locked-kb={}", smaps_kb(addr, "Locked")));
            }
            if !filled(addr, len, seed) {
                bad.push(format!("{what}-contents"));
            }
        }
    })
}

fn shared_rw(ready: &str) -> Check {
    let path = format!("{ready}.shared-rw");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("create the shared file");
    f.set_len(PAGE as u64).expect("size the shared file");
    use std::os::fd::AsRawFd;
    let a = map(PAGE, libc::PROT_READ, libc::MAP_SHARED, f.as_raw_fd());
    drop(f);
    Box::new(move |bad| {
        // SAFETY: our own shared file mapping of one page; written only once it is writable.
        unsafe {
            let r = libc::mprotect(
                a as *mut libc::c_void,
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
            );
            if r != 0 {
                bad.push(format!("mprotect={}", std::io::Error::last_os_error()));
                return;
            }
            *(a as *mut u8) = b'x';
            libc::msync(a as *mut libc::c_void, PAGE, libc::MS_SYNC);
        }
        if std::fs::read(&path).ok().and_then(|d| d.first().copied()) != Some(b'x') {
            bad.push("shared-write-lost".into());
        }
    })
}

static TICKS: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_tick(_: libc::sigval) {
    TICKS.fetch_add(1, Ordering::SeqCst);
}

fn posix_timer_thread() -> Check {
    // struct sigevent on x86_64: sigev_value, sigev_signo, sigev_notify, then (for
    // SIGEV_THREAD) the function and its attributes; 64 bytes in all.
    let mut sev = [0u64; 8];
    sev[1] = (libc::SIGEV_THREAD as u32 as u64) << 32;
    sev[2] = on_tick as *const () as u64;
    let mut timer: libc::timer_t = std::ptr::null_mut();
    let every = libc::timespec {
        tv_sec: 0,
        tv_nsec: 20_000_000,
    };
    // SAFETY: `sev` is a complete struct sigevent; the timer id goes into a live local.
    unsafe {
        assert_eq!(
            libc::timer_create(libc::CLOCK_MONOTONIC, sev.as_mut_ptr().cast(), &mut timer),
            0,
            "timer_create: {}",
            std::io::Error::last_os_error()
        );
        let its = libc::itimerspec {
            it_interval: every,
            it_value: every,
        };
        assert_eq!(libc::timer_settime(timer, 0, &its, std::ptr::null_mut()), 0);
    }
    // Wait until glibc's helper thread has delivered a first tick.
    while TICKS.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let timer = timer as usize;
    Box::new(move |bad| {
        let before = TICKS.load(Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(300));
        let after = TICKS.load(Ordering::SeqCst);
        if after < before + 3 {
            bad.push(format!("ticks {before}->{after}"));
        }
        // SAFETY: reads the timer's setting into a zeroed local.
        let mut its: libc::itimerspec = unsafe { std::mem::zeroed() };
        // SAFETY: timer_gettime fills the live local `its` for our own timer id.
        if unsafe { libc::timer_gettime(timer as libc::timer_t, &mut its) } != 0
            || its.it_interval.tv_nsec != 20_000_000
        {
            bad.push("timer-interval".into());
        }
    })
}

fn membarrier_cmd(cmd: i32) -> i64 {
    // SAFETY: membarrier with integer arguments only.
    unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0u32, 0i32) }
}

fn membarrier() -> Check {
    const PRIVATE_EXPEDITED: i32 = 1 << 3;
    const REGISTER_PRIVATE_EXPEDITED: i32 = 1 << 4;
    const PRIVATE_EXPEDITED_SYNC_CORE: i32 = 1 << 5;
    const REGISTER_PRIVATE_EXPEDITED_SYNC_CORE: i32 = 1 << 6;
    const GET_REGISTRATIONS: i32 = 1 << 9;
    assert_eq!(membarrier_cmd(REGISTER_PRIVATE_EXPEDITED), 0);
    assert_eq!(membarrier_cmd(REGISTER_PRIVATE_EXPEDITED_SYNC_CORE), 0);
    Box::new(|bad| {
        if membarrier_cmd(PRIVATE_EXPEDITED) != 0 {
            bad.push(format!(
                "private-expedited={}",
                std::io::Error::last_os_error()
            ));
        }
        if membarrier_cmd(PRIVATE_EXPEDITED_SYNC_CORE) != 0 {
            bad.push(format!("sync-core={}", std::io::Error::last_os_error()));
        }
        let want = (REGISTER_PRIVATE_EXPEDITED | REGISTER_PRIVATE_EXPEDITED_SYNC_CORE) as i64;
        let got = membarrier_cmd(GET_REGISTRATIONS);
        if got != want {
            bad.push(format!("registrations={got:#x}"));
        }
    })
}

/// Whether reading the byte at `addr` kills a forked child with `SIGSEGV`.
fn read_faults(addr: usize) -> bool {
    // SAFETY: the child only reads one byte and calls _exit; the parent reaps it.
    unsafe {
        let pid = libc::fork();
        if pid == 0 {
            let v = std::ptr::read_volatile(addr as *const u8);
            libc::_exit(i32::from(v == 0xff));
        }
        let mut st = 0;
        libc::waitpid(pid, &mut st, 0);
        libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGSEGV
    }
}

fn guard() -> Check {
    const MADV_GUARD_INSTALL: i32 = 102;
    let a = map(
        8 * PAGE,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
    );
    fill(a, 8 * PAGE, 3);
    // SAFETY: guard pages in the middle of our own area.
    let r = unsafe {
        libc::madvise(
            (a + 3 * PAGE) as *mut libc::c_void,
            2 * PAGE,
            MADV_GUARD_INSTALL,
        )
    };
    assert_eq!(
        r,
        0,
        "MADV_GUARD_INSTALL: {}",
        std::io::Error::last_os_error()
    );
    assert!(read_faults(a + 3 * PAGE));
    Box::new(move |bad| {
        for page in [3, 4] {
            if !read_faults(a + page * PAGE) {
                bad.push(format!("guard-page-{page}-readable"));
            }
        }
        if read_faults(a + 2 * PAGE) || read_faults(a + 5 * PAGE) {
            bad.push("neighbour-faults".into());
        }
        if !filled(a, 3 * PAGE, 3) {
            bad.push("below-guard-contents".into());
        }
        let above = a + 5 * PAGE;
        // The pattern of [`fill`] continues from offset 5 pages.
        // SAFETY: our own readable pages above the guard.
        let same = (0..3 * PAGE).all(|i| unsafe { *((above + i) as *const u8) }
            == ((5 * PAGE + i) as u8).wrapping_mul(7).wrapping_add(3));
        if !same {
            bad.push("above-guard-contents".into());
        }
    })
}

fn droppable() -> Check {
    const MAP_DROPPABLE: i32 = 0x08;
    let a = map(
        4 * PAGE,
        libc::PROT_READ | libc::PROT_WRITE,
        MAP_DROPPABLE | libc::MAP_ANONYMOUS,
        -1,
    );
    fill(a, 4 * PAGE, 4);
    Box::new(move |bad| {
        if !has_vm_flag(a, "dp") {
            bad.push("not-droppable".into());
        }
        // SAFETY: our own readable area of 4 pages.
        if !(0..4 * PAGE).all(|i| unsafe { *((a + i) as *const u8) } == 0) {
            bad.push("old-contents".into());
        }
        fill(a, 4 * PAGE, 5);
        if !filled(a, 4 * PAGE, 5) {
            bad.push("not-writable".into());
        }
    })
}

static ABORTS: AtomicU64 = AtomicU64::new(0);
static SPINNER: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

unsafe extern "C" {
    /// glibc's offset of the thread's rseq area from the thread pointer.
    static __rseq_offset: isize;
    /// glibc's registered rseq area size (0: glibc did not register).
    static __rseq_size: u32;
    /// Enters the critical section below forever: points the `rseq_cs` field at `field` to
    /// the section and spins inside it; each abort adds one to `*aborts` and enters again.
    fn victim_rseq_spin(field: *mut u64, aborts: *const AtomicU64) -> !;
}

// The section [start, post) is one jump to itself; the abort handler, behind the x86 rseq
// signature, counts and enters again. Its struct rseq_cs (32-byte aligned) is in .data.
core::arch::global_asm!(
    ".pushsection .text.victim_rseq_spin,\"ax\",@progbits",
    ".globl victim_rseq_spin",
    "victim_rseq_spin:",
    "1:",
    "lea rax, [rip + victim_rseq_cs]",
    "mov [rdi], rax",
    "victim_rseq_start:",
    "jmp victim_rseq_start",
    "victim_rseq_post:",
    ".long 0x53053053",
    "victim_rseq_abort:",
    "lock inc qword ptr [rsi]",
    "jmp 1b",
    ".popsection",
    ".pushsection .data.victim_rseq_cs,\"aw\",@progbits",
    ".balign 32",
    "victim_rseq_cs:",
    ".long 0, 0",
    ".quad victim_rseq_start",
    ".quad victim_rseq_post - victim_rseq_start",
    ".quad victim_rseq_abort",
    ".popsection",
);

extern "C" fn on_usr2(_: libc::c_int) {}

/// Sends `n` SIGUSR2s to the spinner, 10 ms apart (each delivery aborts its section).
fn poke_spinner(n: usize) {
    let tid = SPINNER.load(Ordering::SeqCst);
    for _ in 0..n {
        // SAFETY: a signal with an empty handler to a thread of this process.
        unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, libc::SIGUSR2) };
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn rseq() -> Check {
    // SAFETY: glibc's exported rseq facts, constant after start-up.
    let (offset, size) = unsafe { (__rseq_offset, __rseq_size) };
    assert!(
        size >= 20,
        "glibc did not register rseq (size {size}; GLIBC_TUNABLES=glibc.pthread.rseq=0?)"
    );
    // SAFETY: installs an empty handler.
    unsafe { libc::signal(libc::SIGUSR2, on_usr2 as *const () as libc::sighandler_t) };
    std::thread::spawn(move || {
        let tp: u64;
        // SAFETY: reads the thread pointer (its first word points at itself on x86_64).
        unsafe { core::arch::asm!("mov {}, fs:0", out(reg) tp) };
        // SAFETY: gettid has no arguments.
        SPINNER.store(unsafe { libc::gettid() }, Ordering::SeqCst);
        let field = (tp as i64 + offset as i64 + 8) as *mut u64;
        // SAFETY: `field` is this thread's own rseq_cs field in glibc's registered area.
        unsafe { victim_rseq_spin(field, &ABORTS) }
    });
    while SPINNER.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    while ABORTS.load(Ordering::SeqCst) < 3 {
        poke_spinner(1);
    }
    Box::new(|bad| {
        let before = ABORTS.load(Ordering::SeqCst);
        poke_spinner(20);
        let after = ABORTS.load(Ordering::SeqCst);
        if after < before + 10 {
            bad.push(format!("rseq-aborts {before}->{after}"));
        }
    })
}

fn shared_unfaulted() -> Check {
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let a = map(4 * PAGE, rw, libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1);
    fill(a, 4 * PAGE, 6);
    let at = (a + PAGE) as *mut libc::c_void;
    // SAFETY: drops our own page-table entries; the pages stay in the shared object.
    let r = unsafe { libc::madvise(at, 2 * PAGE, libc::MADV_DONTNEED) };
    assert_eq!(r, 0);
    Box::new(move |bad| {
        if !filled(a, 4 * PAGE, 6) {
            bad.push("shared-pages-lost".into());
        }
    })
}

fn shared_shrunk() -> Check {
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let a = map(4 * PAGE, rw, libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1);
    fill(a, 4 * PAGE, 7);
    // SAFETY: shrinks our own mapping in place.
    let p = unsafe { libc::mremap(a as *mut libc::c_void, 4 * PAGE, 2 * PAGE, 0) };
    assert_eq!(p as usize, a);
    Box::new(move |bad| {
        // SAFETY: grows our own mapping again, wherever the kernel finds room.
        let p = unsafe {
            libc::mremap(
                a as *mut libc::c_void,
                2 * PAGE,
                4 * PAGE,
                libc::MREMAP_MAYMOVE,
            )
        };
        if p == libc::MAP_FAILED || !filled(p as usize, 4 * PAGE, 7) {
            bad.push("shrunk-pages-lost".into());
        }
        // SAFETY: back to the shrunk size, for the next check.
        unsafe { libc::mremap(p, 4 * PAGE, 2 * PAGE, 0) };
    })
}

fn pgrp_zombie_leader(ready: &str) -> Check {
    // SAFETY: each child only pauses until killed; the parent sets the groups.
    let (l, m) = unsafe {
        let l = libc::fork();
        if l == 0 {
            loop {
                libc::pause();
            }
        }
        assert_eq!(libc::setpgid(l, l), 0);
        let m = libc::fork();
        if m == 0 {
            loop {
                libc::pause();
            }
        }
        assert_eq!(libc::setpgid(m, l), 0);
        libc::kill(l, libc::SIGKILL);
        (l, m)
    };
    loop {
        let st = std::fs::read_to_string(format!("/proc/{l}/stat")).unwrap_or_default();
        if st
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    std::fs::write(format!("{ready}.pids"), format!("{l} {m}")).expect("pids");
    Box::new(move |bad| {
        // SAFETY: getpgid of our own child.
        let g = unsafe { libc::getpgid(m) };
        if g != l {
            bad.push(format!("group-of-m={g}"));
        }
    })
}
