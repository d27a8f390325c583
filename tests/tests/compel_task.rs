//! compel's task-control runtime against real victim processes: seize, inspect, run syscalls
//! inside, detach; each victim then shows through its own output and exit status that it ran on
//! correctly.

use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use compel::{InitialStop, RemoteAddr, SeizeOptions, SyscallMethod, Task, TaskError, TaskState};
use compel_arch::nr;
use compel_criu_tests::{
    Exit, UNPRIVILEGED_ID, Victim, avx_kmask, avx_pattern, become_subreaper, fork_other_tracer,
    make_world_executable, proc_state, run_as_user, signal, skip_if_not_root, skip_unless,
    tracer_pid, wait_exit, wait_state,
};
use nix::sys::signal::Signal;

const T: Duration = Duration::from_secs(10);

fn setup() -> MutexGuard<'static, ()> {
    let g = compel_criu_tests::test_lock();
    become_subreaper();
    g
}

fn spawn(bin: &str, args: &[&str]) -> (Victim, i32) {
    let mut v = Victim::spawn(bin, args).expect("spawn victim");
    v.expect_line("ready", T).unwrap();
    let pid = v.pid();
    (v, pid)
}

const BUSY: &str = env!("CARGO_BIN_EXE_victim-busy");
const BLOCK: &str = env!("CARGO_BIN_EXE_victim-block");
const THREADS: &str = env!("CARGO_BIN_EXE_victim-threads");
const AVX: &str = env!("CARGO_BIN_EXE_victim-avx");
const SECCOMP: &str = env!("CARGO_BIN_EXE_victim-seccomp");

#[test]
fn busy_loop_runs_on_after_remote_syscalls() {
    let _g = setup();
    let (mut v, pid) = spawn(BUSY, &[]);
    // The loop polls stdin with a system call now and then (and may still be returning from
    // writing its ready line on a loaded machine): seize again until the stop is in user mode.
    let mut task = Task::seize(pid).unwrap();
    for _ in 0..50 {
        if task.regs(pid).unwrap().syscall_nr().is_none() {
            break;
        }
        task.detach().unwrap();
        std::thread::sleep(Duration::from_millis(5));
        task = Task::seize(pid).unwrap();
    }
    assert_eq!(task.state(), TaskState::Running);
    assert_eq!(task.threads(), vec![pid]);
    assert_eq!(task.initial_stop(pid), Some(InitialStop::Interrupted));
    assert_eq!(
        tracer_pid(pid),
        Some(nix::unistd::gettid().as_raw()),
        "traced by this thread"
    );
    let before = task.regs(pid).unwrap();
    assert_eq!(
        before.syscall_nr(),
        None,
        "a busy loop is stopped in user mode"
    );
    for _ in 0..50 {
        assert_eq!(task.remote_syscall(nr::GETPID, [0; 6]).unwrap(), pid as i64);
    }
    assert_eq!(task.remote_syscall(nr::GETTID, [0; 6]).unwrap(), pid as i64);
    assert_eq!(
        task.remote_syscall(nr::GETPPID, [0; 6]).unwrap(),
        std::process::id() as i64
    );
    assert_eq!(
        task.remote_syscall(nr::CLOSE, [1 << 20, 0, 0, 0, 0, 0])
            .unwrap(),
        -libc::EBADF as i64
    );
    assert_eq!(task.regs(pid).unwrap(), before, "registers as found");
    assert_eq!(
        compel::ptrace::get_regs(pid).unwrap(),
        before,
        "live registers restored"
    );
    task.detach().unwrap();
    assert_eq!(tracer_pid(pid), Some(0));
    v.write_stdin(b"ping\n").unwrap();
    v.expect_line("pong", T).unwrap();
    v.write_stdin(b"quit\n").unwrap();
    let done = v.expect_line("done", T).unwrap();
    assert!(!done.contains("corrupt"));
    assert_eq!(v.wait(T), Some(Exit::Code(0)));
}

#[test]
fn remote_memory_and_six_argument_syscalls() {
    let _g = setup();
    let (mut v, pid) = spawn(BLOCK, &["read"]);
    wait_state(pid, "S", T);
    let mut task = Task::seize(pid).unwrap();
    let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
    let addr = task
        .remote_syscall(nr::MMAP, [0, 8192, prot, flags, u64::MAX, 0])
        .unwrap();
    assert!(addr > 0 && addr % 4096 == 0, "mmap returned {addr:#x}");
    let addr = RemoteAddr(addr as u64);
    let pattern: Vec<u8> = (0..8192u32).map(|i| (i * 7 % 251) as u8).collect();
    task.write_mem(addr, &pattern).unwrap();
    let mut back = vec![0u8; 8192];
    task.read_mem(addr, &mut back).unwrap();
    assert_eq!(back, pattern);
    // The victim sees it too: make it write(1) from that page.
    let msg = b"got from-remote-page\n";
    task.write_mem(addr, msg).unwrap();
    assert_eq!(
        task.remote_syscall(nr::WRITE, [1, addr.0, msg.len() as u64, 0, 0, 0])
            .unwrap(),
        msg.len() as i64
    );
    assert_eq!(
        task.remote_syscall(nr::MUNMAP, [addr.0, 8192, 0, 0, 0, 0])
            .unwrap(),
        0
    );
    let err = task.read_mem(addr, &mut back).unwrap_err();
    assert!(matches!(err, TaskError::Memory { .. }), "{err}");
    task.detach().unwrap();
    assert_eq!(v.read_line(T).as_deref(), Some("got from-remote-page"));
    v.write_stdin(b"after\n").unwrap();
    assert_eq!(v.read_line(T).as_deref(), Some("got after"));
    v.expect_eof_exit(T);
}

#[test]
fn blocked_read_restarts() {
    let _g = setup();
    let (mut v, pid) = spawn(BLOCK, &["read"]);
    assert_eq!(wait_state(pid, "S", T), Some('S'));
    let mut task = Task::seize(pid).unwrap();
    let regs = task.regs(pid).unwrap();
    assert_eq!(
        regs.syscall_nr(),
        Some(nr::READ as u64),
        "stopped inside read"
    );
    assert!(
        compel_arch::restart::is_restart(regs.syscall_ret()),
        "rax {}",
        regs.syscall_ret()
    );
    for _ in 0..5 {
        assert_eq!(task.remote_syscall(nr::GETPID, [0; 6]).unwrap(), pid as i64);
    }
    task.detach().unwrap();
    v.write_stdin(b"hello\n").unwrap();
    assert_eq!(
        v.read_line(T).as_deref(),
        Some("got hello"),
        "read restarted, no EINTR"
    );
    // Again, now seizing and releasing without any remote call.
    wait_state(pid, "S", T);
    drop(Task::seize(pid).unwrap());
    v.write_stdin(b"again\n").unwrap();
    assert_eq!(v.read_line(T).as_deref(), Some("got again"));
    v.expect_eof_exit(T);
}

fn check_timed(mode: &str, word: &str) {
    let (mut v, pid) = spawn(BLOCK, &[mode, "600"]);
    assert_eq!(wait_state(pid, "S", T), Some('S'));
    std::thread::sleep(Duration::from_millis(50));
    let t0 = Instant::now();
    let mut task = Task::seize(pid).unwrap();
    assert!(
        task.regs(pid).unwrap().syscall_nr().is_some(),
        "{mode}: stopped inside the syscall"
    );
    assert_eq!(task.remote_syscall(nr::GETPID, [0; 6]).unwrap(), pid as i64);
    task.detach().unwrap();
    assert!(t0.elapsed() < Duration::from_millis(300));
    let line = v.expect_line(word, T).unwrap();
    let ms: u64 = line.split(' ').nth(1).unwrap().parse().unwrap();
    assert!((600..3000).contains(&ms), "{mode}: {line}");
    assert_eq!(v.wait(T), Some(Exit::Code(0)), "{mode}: {line}");
}

#[test]
fn nanosleep_restarts_with_remaining_time() {
    let _g = setup();
    check_timed("nanosleep", "slept");
}

#[test]
fn timed_futex_wait_restarts() {
    let _g = setup();
    check_timed("futex", "timedout");
}

#[test]
fn futex_wait_sees_remote_write() {
    let _g = setup();
    let (mut v, pid) = spawn(BLOCK, &["futex-flag"]);
    let flag = v.expect_line("flag", T).unwrap();
    let addr = u64::from_str_radix(flag.split(' ').nth(1).unwrap(), 16).unwrap();
    assert_eq!(wait_state(pid, "S", T), Some('S'));
    let mut task = Task::seize(pid).unwrap();
    assert_eq!(task.regs(pid).unwrap().syscall_nr(), Some(nr::FUTEX as u64));
    task.write_mem(RemoteAddr(addr), &1u32.to_ne_bytes())
        .unwrap();
    let wake = (libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG) as u64;
    // Nobody waits right now (the thread is ours), so the wake finds no waiter.
    assert_eq!(
        task.remote_syscall(nr::FUTEX, [addr, wake, 1, 0, 0, 0])
            .unwrap(),
        0
    );
    task.detach().unwrap();
    // The restarted FUTEX_WAIT sees the changed word and returns: one wait only.
    assert_eq!(v.read_line(T).as_deref(), Some("flagged 1"));
    assert_eq!(v.wait(T), Some(Exit::Code(0)));
}

#[test]
fn epoll_wait_completes() {
    let _g = setup();
    let (mut v, pid) = spawn(BLOCK, &["epoll"]);
    assert_eq!(wait_state(pid, "S", T), Some('S'));
    let mut task = Task::seize(pid).unwrap();
    assert_eq!(
        task.regs(pid).unwrap().syscall_nr(),
        Some(nr::EPOLL_WAIT as u64)
    );
    assert_eq!(task.remote_syscall(nr::GETPID, [0; 6]).unwrap(), pid as i64);
    task.detach().unwrap();
    v.write_stdin(b"x\n").unwrap();
    let line = v.expect_line("got x", T).unwrap();
    // epoll_wait is never restarted by the kernel after a stop: EINTR (once) is allowed, as
    // after SIGSTOP/SIGCONT, and the victim retries.
    let eintr: u32 = line.rsplit('=').next().unwrap().parse().unwrap();
    assert!(eintr <= 1, "{line}");
    v.expect_eof_exit(T);
}

#[test]
fn every_thread_is_seized_and_usable() {
    let _g = setup();
    let (mut v, pid) = spawn(THREADS, &["3"]);
    let mut tids = vec![pid];
    for _ in 0..3 {
        let l = v.expect_line("tid", T).unwrap();
        tids.push(l[4..].parse().unwrap());
    }
    std::thread::sleep(Duration::from_millis(20));
    let mut task = Task::seize(pid).unwrap();
    let mut seized = task.threads();
    assert_eq!(seized[0], pid, "leader first");
    seized.sort();
    tids.sort();
    assert_eq!(seized, tids);
    for &tid in &tids {
        assert_eq!(proc_state(tid), Some('t'), "thread {tid} is stopped");
        assert_eq!(
            task.remote_syscall_in(tid, nr::GETTID, [0; 6]).unwrap(),
            tid as i64
        );
        assert_eq!(
            task.remote_syscall_in(tid, nr::GETPID, [0; 6]).unwrap(),
            pid as i64
        );
    }
    assert!(matches!(
        task.remote_syscall_in(1, nr::GETPID, [0; 6]),
        Err(TaskError::NotOurThread { tid: 1, .. })
    ));
    task.detach().unwrap();
    v.write_stdin(b"count\n").unwrap();
    let c1 = v.expect_line("counts", T).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    v.write_stdin(b"count\n").unwrap();
    let c2 = v.expect_line("counts", T).unwrap();
    let parse =
        |l: &str| -> Vec<u64> { l.split(' ').skip(1).map(|x| x.parse().unwrap()).collect() };
    for (a, b) in parse(&c1).iter().zip(parse(&c2)) {
        assert!(b > *a, "every worker runs on: {c1} then {c2}");
    }
    v.close_stdin();
    assert_eq!(v.expect_line("done", T).as_deref(), Ok("done"));
    assert_eq!(v.wait(T), Some(Exit::Code(0)));
}

#[test]
fn seize_while_threads_come_and_go() {
    let _g = setup();
    let (mut v, pid) = spawn(THREADS, &["churn"]);
    std::thread::sleep(Duration::from_millis(50));
    for _ in 0..30 {
        let mut task = Task::seize(pid).unwrap();
        let tids = task.threads();
        assert!(tids.len() >= 2, "leader and spawner at least: {tids:?}");
        for tid in tids {
            // Every thread we hold is stopped and usable (none of them can exit meanwhile).
            assert_eq!(
                task.remote_syscall_in(tid, nr::GETTID, [0; 6]).unwrap(),
                tid as i64
            );
        }
        task.detach().unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    v.close_stdin();
    let done = v.expect_line("done", T).unwrap();
    let created: u64 = done[5..].parse().unwrap();
    assert!(created > 0, "{done}");
    assert_eq!(v.wait(T), Some(Exit::Code(0)));
}

/// Spawns victim-avx; returns it, its flag address and whether it uses AVX-512.
fn spawn_avx() -> Option<(Victim, i32, RemoteAddr, bool)> {
    let mut v = Victim::spawn(AVX, &[]).unwrap();
    let line = v.expect_line("", T).unwrap();
    if line == "no avx" {
        return None;
    }
    let f: Vec<&str> = line.split(' ').collect();
    assert_eq!(f[0], "ready", "{line}");
    let pid = v.pid();
    let flag = RemoteAddr(u64::from_str_radix(f[2], 16).unwrap());
    // Let it reach its spin loop (it is a busy loop: state R).
    std::thread::sleep(Duration::from_millis(50));
    Some((v, pid, flag, f[3] == "avx512"))
}

#[test]
fn vector_registers_survive_and_are_read_exactly() {
    let _g = setup();
    skip_unless!(compel_arch::cpu_has_avx(), "the CPU has no AVX");
    let (mut v, pid, flag, avx512) = spawn_avx().unwrap();
    if !avx512 {
        eprintln!("note: the CPU has no AVX-512F; checking ymm registers only");
    }
    let mut task = Task::seize(pid).unwrap();
    let xs = task.xsave(pid).unwrap();
    assert!(
        xs.bytes().len() >= compel_arch::xsave_size().unwrap(),
        "whole area"
    );
    let width = if avx512 { 64 } else { 32 };
    for r in 0..16 {
        let expect: Vec<u8> = (0..16).map(|b| avx_pattern(r, b)).collect();
        assert_eq!(xs.xmm(r).unwrap(), &expect[..], "xmm{r}");
        let ymm_hi = &xs.component(compel_arch::XFEATURE_YMM).unwrap()[r * 16..r * 16 + 16];
        let expect: Vec<u8> = (16..32).map(|b| avx_pattern(r, b)).collect();
        assert_eq!(ymm_hi, &expect[..], "ymm{r} upper half");
    }
    if avx512 {
        let zhi = xs
            .component(compel_arch::XFEATURE_AVX512_ZMM_HI256)
            .unwrap();
        for r in 0..16 {
            let expect: Vec<u8> = (32..width).map(|b| avx_pattern(r, b)).collect();
            assert_eq!(
                &zhi[r * 32..r * 32 + 32],
                &expect[..],
                "zmm{r} upper 256 bits"
            );
        }
        let hi16 = xs.component(compel_arch::XFEATURE_AVX512_HI16_ZMM).unwrap();
        for r in 16..32 {
            let expect: Vec<u8> = (0..width).map(|b| avx_pattern(r, b)).collect();
            assert_eq!(&hi16[(r - 16) * 64..(r - 15) * 64], &expect[..], "zmm{r}");
        }
        let k = xs.component(compel_arch::XFEATURE_AVX512_OPMASK).unwrap();
        for i in 1..8 {
            let got = u16::from_le_bytes([k[i * 8], k[i * 8 + 1]]);
            assert_eq!(got, avx_kmask(i), "k{i}");
        }
    }
    // Remote syscalls and a write-back of the same state leave the registers intact.
    for _ in 0..10 {
        assert_eq!(task.remote_syscall(nr::GETPID, [0; 6]).unwrap(), pid as i64);
    }
    task.set_xsave(pid, &xs).unwrap();
    assert_eq!(task.xsave(pid).unwrap().bytes(), xs.bytes());
    task.write_mem(flag, &1u32.to_ne_bytes()).unwrap();
    task.detach().unwrap();
    assert_eq!(
        v.read_line(T).as_deref(),
        Some("ok"),
        "the victim found its registers intact"
    );
    assert_eq!(v.wait(T), Some(Exit::Code(0)));
}

#[test]
fn changed_vector_register_is_seen_by_the_victim() {
    let _g = setup();
    skip_unless!(compel_arch::cpu_has_avx(), "the CPU has no AVX");
    let (mut v, pid, flag, avx512) = spawn_avx().unwrap();
    let mut task = Task::seize(pid).unwrap();
    let mut xs = task.xsave(pid).unwrap();
    // Flip one byte in the upper half of register 7 (ymm7's upper 128 bits, or for AVX-512 the
    // top 256 bits of zmm7): only a correct offset reaches the victim's register.
    let (comp, off) = if avx512 {
        (compel_arch::XFEATURE_AVX512_ZMM_HI256, 7 * 32 + 5)
    } else {
        (compel_arch::XFEATURE_YMM, 7 * 16 + 5)
    };
    xs.component_mut(comp).unwrap()[off] ^= 0xff;
    task.set_xsave(pid, &xs).unwrap();
    task.write_mem(flag, &1u32.to_ne_bytes()).unwrap();
    task.detach().unwrap();
    let want = if avx512 {
        "mismatch zmm7"
    } else {
        "mismatch ymm7"
    };
    assert_eq!(v.read_line(T).as_deref(), Some(want));
    assert_eq!(v.wait(T), Some(Exit::Code(1)));
}

#[test]
fn stopped_task_stays_stopped() {
    let _g = setup();
    let (mut v, pid) = spawn(BLOCK, &["read"]);
    wait_state(pid, "S", T);
    v.signal(Signal::SIGSTOP).unwrap();
    assert_eq!(wait_state(pid, "T", T), Some('T'));
    let mut task = Task::seize(pid).unwrap();
    assert_eq!(task.state(), TaskState::Stopped);
    assert_eq!(
        task.initial_stop(pid),
        Some(InitialStop::GroupStopped(libc::SIGSTOP))
    );
    assert_eq!(task.remote_syscall(nr::GETPID, [0; 6]).unwrap(), pid as i64);
    task.detach().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        proc_state(pid),
        Some('T'),
        "still job-control stopped after detach"
    );
    assert_eq!(tracer_pid(pid), Some(0));
    v.write_stdin(b"while-stopped\n").unwrap();
    assert_eq!(
        v.read_line(Duration::from_millis(200)),
        None,
        "a stopped task reads nothing"
    );
    v.signal(Signal::SIGCONT).unwrap();
    assert_eq!(v.read_line(T).as_deref(), Some("got while-stopped"));
    v.expect_eof_exit(T);
}

#[test]
fn signal_sent_while_seized_is_delivered_once_after() {
    let _g = setup();
    // victim-block read has no SIGUSR1 handler: delivery kills it with SIGUSR1. While seized
    // the signal must not act; after detach it must, exactly as if we had never been there.
    let (mut v, pid) = spawn(BLOCK, &["read"]);
    wait_state(pid, "S", T);
    let mut task = Task::seize(pid).unwrap();
    v.signal(Signal::SIGUSR1).unwrap();
    assert_eq!(task.remote_syscall(nr::GETPID, [0; 6]).unwrap(), pid as i64);
    assert_eq!(proc_state(pid), Some('t'));
    task.detach().unwrap();
    assert_eq!(v.wait(T), Some(Exit::Signal(libc::SIGUSR1)));
}

#[test]
fn queued_signals_are_neither_lost_nor_duplicated() {
    let _g = setup();
    let (mut v, pid) = spawn(BLOCK, &["read-sig"]);
    wait_state(pid, "S", T);
    let rt = libc::SIGRTMIN() + 1;
    let mut task = Task::seize(pid).unwrap();
    let send = |sig| {
        // SAFETY: kill with a valid pid and signal number.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    };
    send(rt);
    assert_eq!(task.remote_syscall(nr::GETPID, [0; 6]).unwrap(), pid as i64);
    send(rt);
    send(libc::SIGUSR1);
    assert_eq!(task.remote_syscall(nr::GETPID, [0; 6]).unwrap(), pid as i64);
    send(rt);
    task.detach().unwrap();
    v.write_stdin(b"x\n").unwrap();
    // Handlers ran after detach (SA_RESTART: the read went on); each queued signal once.
    let line = v.expect_line("got x", T).unwrap();
    assert_eq!(line, "got x usr1=1 rt=3");
    // And a signal arriving while a thread sits in a signal-delivery-stop at seize time is
    // delivered once too: seize right after sending.
    send(rt);
    let task = Task::seize(pid).unwrap();
    task.detach().unwrap();
    v.write_stdin(b"y\n").unwrap();
    assert_eq!(v.expect_line("got y", T).unwrap(), "got y usr1=1 rt=4");
    // Many rounds, racing the signal's delivery against the seize: some rounds catch the
    // thread in the signal's delivery-stop (the path that re-delivers it on detach).
    let rounds = 200;
    let mut caught = 0;
    for _ in 0..rounds {
        send(rt);
        let mut task = Task::seize(pid).unwrap();
        if task.initial_stop(pid) == Some(InitialStop::Signal(rt)) {
            caught += 1;
        }
        assert_eq!(task.remote_syscall(nr::GETPID, [0; 6]).unwrap(), pid as i64);
        task.detach().unwrap();
    }
    eprintln!("{caught} of {rounds} rounds seized the task in the signal's delivery-stop");
    v.write_stdin(b"z\n").unwrap();
    assert_eq!(
        v.expect_line("got z", T).unwrap(),
        format!("got z usr1=1 rt={}", 4 + rounds)
    );
    v.expect_eof_exit(T);
}

#[test]
fn seize_during_sigstop_delivery_keeps_the_stop() {
    let _g = setup();
    // Send SIGSTOP and seize at once: whether we catch it pending, in delivery or done, the
    // task must end up stopped after detach.
    for _ in 0..5 {
        let (mut v, pid) = spawn(BLOCK, &["read"]);
        wait_state(pid, "S", T);
        v.signal(Signal::SIGSTOP).unwrap();
        let mut task = Task::seize(pid).unwrap();
        assert_eq!(task.remote_syscall(nr::GETPID, [0; 6]).unwrap(), pid as i64);
        task.detach().unwrap();
        assert_eq!(wait_state(pid, "T", T), Some('T'));
        v.signal(Signal::SIGCONT).unwrap();
        v.write_stdin(b"x\n").unwrap();
        assert_eq!(v.read_line(T).as_deref(), Some("got x"));
        v.expect_eof_exit(T);
    }
}

#[test]
fn seccomp_filter_is_suspended_for_remote_syscalls() {
    let _g = setup();
    skip_if_not_root!("seccomp_filter_is_suspended_for_remote_syscalls");
    let (mut v, pid) = spawn(SECCOMP, &[]);
    v.write_stdin(b"getpid\n").unwrap();
    assert_eq!(
        v.read_line(T).as_deref(),
        Some("getpid -1 1"),
        "the filter works"
    );
    wait_state(pid, "S", T);
    let mut task = Task::seize(pid).unwrap();
    assert!(task.seccomp_suspended());
    assert_eq!(task.remote_syscall(nr::GETPID, [0; 6]).unwrap(), pid as i64);
    task.detach().unwrap();
    v.write_stdin(b"getpid\n").unwrap();
    assert_eq!(
        v.read_line(T).as_deref(),
        Some("getpid -1 1"),
        "the filter is back"
    );
    v.expect_eof_exit(T);
}

#[test]
fn patched_code_method_restores_the_bytes() {
    let _g = setup();
    let (mut v, pid) = spawn(BLOCK, &["read"]);
    wait_state(pid, "S", T);
    let opts = SeizeOptions {
        method: SyscallMethod::PatchCode,
        ..SeizeOptions::default()
    };
    let mut task = Task::seize_with(pid, opts).unwrap();
    let maps = task.maps().unwrap();
    let code = maps
        .iter()
        .find(|m| m.executable() && !m.name.starts_with('['))
        .unwrap()
        .start;
    let mut before = [0u8; 16];
    task.read_mem(code, &mut before).unwrap();
    assert_eq!(task.remote_syscall(nr::GETPID, [0; 6]).unwrap(), pid as i64);
    assert_eq!(task.remote_syscall(nr::GETTID, [0; 6]).unwrap(), pid as i64);
    let mut after = [0u8; 16];
    task.read_mem(code, &mut after).unwrap();
    assert_eq!(before, after, "code bytes restored");
    task.detach().unwrap();
    v.write_stdin(b"x\n").unwrap();
    assert_eq!(v.read_line(T).as_deref(), Some("got x"));
    v.expect_eof_exit(T);
}

#[test]
fn low_level_resume_and_wait() {
    let _g = setup();
    let (mut v, pid) = spawn(BLOCK, &["read"]);
    wait_state(pid, "S", T);
    let mut task = Task::seize(pid).unwrap();
    let saved = task.regs(pid).unwrap();
    // Run getpid by hand at the vDSO's syscall instruction, as injection code does.
    let auxv = compel::proc::auxv_vdso(pid).unwrap().unwrap();
    let mut img = vec![0u8; 8192];
    let n = task.read_mem_partial(auxv, &mut img).unwrap();
    let off = img[..n]
        .windows(2)
        .position(|w| w == compel_arch::SYSCALL_INSN)
        .unwrap();
    let mut r = saved;
    r.set_syscall(nr::GETPID as u64, [0; 6]);
    r.set_ip(auxv.0 + off as u64);
    task.set_regs(pid, &r).unwrap();
    task.resume(pid, compel::Resume::SingleStep).unwrap();
    assert_eq!(
        task.wait_stop(pid).unwrap(),
        compel::ptrace::Stop::Signal(libc::SIGTRAP)
    );
    let after = task.regs(pid).unwrap();
    assert_eq!(after.syscall_ret(), pid as i64);
    assert_eq!(after.ip(), auxv.0 + off as u64 + 2);
    task.set_regs(pid, &saved).unwrap();
    task.detach().unwrap();
    v.write_stdin(b"x\n").unwrap();
    assert_eq!(
        v.read_line(T).as_deref(),
        Some("got x"),
        "read restarted after manual restore"
    );
    v.expect_eof_exit(T);
}

#[test]
fn sigmask_and_tls_match_proc() {
    let _g = setup();
    let (mut v, pid) = spawn(BLOCK, &["read"]);
    wait_state(pid, "S", T);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let blk = status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .unwrap()
        .trim();
    let mut task = Task::seize(pid).unwrap();
    assert_eq!(
        task.sigmask(pid).unwrap(),
        u64::from_str_radix(blk, 16).unwrap()
    );
    assert_ne!(task.tls(pid).unwrap(), 0, "a Rust program has a TLS base");
    // Block SIGUSR2 and leave it blocked: /proc shows it after detach.
    let mask = task.sigmask(pid).unwrap() | 1 << (libc::SIGUSR2 - 1);
    task.set_sigmask(pid, mask).unwrap();
    assert_eq!(task.remote_syscall(nr::GETPID, [0; 6]).unwrap(), pid as i64);
    task.detach().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let blk = status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .unwrap()
        .trim();
    assert_eq!(u64::from_str_radix(blk, 16).unwrap(), mask);
    v.signal(Signal::SIGUSR2).unwrap(); // blocked: does not kill it
    v.write_stdin(b"x\n").unwrap();
    assert_eq!(v.read_line(T).as_deref(), Some("got x"));
}

#[test]
fn task_killed_while_seized_is_reported_gone() {
    let _g = setup();
    let (mut v, pid) = spawn(BLOCK, &["read"]);
    wait_state(pid, "S", T);
    let mut task = Task::seize(pid).unwrap();
    assert_eq!(task.remote_syscall(nr::GETPID, [0; 6]).unwrap(), pid as i64);
    v.signal(Signal::SIGKILL).unwrap();
    let e = task.remote_syscall(nr::GETPID, [0; 6]).unwrap_err();
    assert!(e.is_gone(), "{e}");
    drop(task); // detaching a dead task neither hangs nor panics
    match e {
        // compel's own wait saw the death (and, the victim being our child, reaped it).
        TaskError::Died { how, .. } => {
            assert_eq!(how, "killed by signal 9");
            v.mark_reaped();
        }
        _ => assert_eq!(v.wait(T), Some(Exit::Signal(libc::SIGKILL))),
    }
}

#[test]
fn bad_targets_fail_cleanly() {
    let _g = setup();
    // Nonexistent.
    assert!(matches!(
        Task::seize(i32::MAX),
        Err(TaskError::NoSuchTask { .. })
    ));
    assert_eq!(compel::classify(i32::MAX).unwrap(), TaskState::Dead);
    assert!(matches!(Task::seize(0), Err(TaskError::NoSuchTask { .. })));
    // Zombie: a child that exited and is not reaped yet.
    // Reaped below by pid with wait_exit, after the zombie checks.
    #[allow(clippy::zombie_processes)]
    let z = std::process::Command::new("true").spawn().unwrap();
    let zpid = z.id() as i32;
    assert_eq!(wait_state(zpid, "Z", T), Some('Z'));
    assert_eq!(compel::classify(zpid).unwrap(), TaskState::Zombie);
    let e = Task::seize(zpid).unwrap_err();
    assert!(matches!(e, TaskError::Zombie { .. }), "{e}");
    assert_eq!(wait_exit(zpid).unwrap(), Exit::Code(0));
    // Traced by another process: a forked helper seizes the victim first.
    let (mut v, pid) = spawn(BLOCK, &["read"]);
    wait_state(pid, "S", T);
    let (helper, seized) = fork_other_tracer(pid);
    assert!(seized, "helper seized the victim");
    assert_eq!(
        compel::classify(pid).unwrap(),
        TaskState::Traced { tracer: helper }
    );
    match Task::seize(pid) {
        Err(TaskError::TracedByOther { pid: p, tracer }) => {
            assert_eq!((p, tracer), (pid, helper));
        }
        other => panic!("expected TracedByOther, got {other:?}"),
    }
    signal(helper, Signal::SIGKILL);
    assert_eq!(wait_exit(helper).unwrap(), Exit::Signal(libc::SIGKILL));
    // The victim was untouched by us and released by the dead helper.
    assert_eq!(wait_state(pid, "S", T), Some('S'));
    v.write_stdin(b"x\n").unwrap();
    assert_eq!(v.read_line(T).as_deref(), Some("got x"));
    v.expect_eof_exit(T);
}

#[test]
fn unprivileged_user_on_own_process() {
    let _g = setup();
    skip_if_not_root!("unprivileged_user_on_own_process (needs root to drop to another uid)");
    for bin in [BLOCK, SECCOMP] {
        make_world_executable(std::path::Path::new(bin)).unwrap();
    }
    let me = std::process::id() as i32;
    let code = run_as_user(UNPRIVILEGED_ID, UNPRIVILEGED_ID, || {
        // Our own process: works.
        let (mut v, pid) = spawn(BLOCK, &["read"]);
        wait_state(pid, "S", T);
        let mut task = Task::seize(pid).expect("seize own process");
        assert!(!task.seccomp_suspended());
        assert_eq!(task.remote_syscall(nr::GETPID, [0; 6]).unwrap(), pid as i64);
        assert_eq!(
            task.remote_syscall(nr::GETUID, [0; 6]).unwrap(),
            UNPRIVILEGED_ID as i64
        );
        task.detach().unwrap();
        v.write_stdin(b"x\n").unwrap();
        assert_eq!(v.read_line(T).as_deref(), Some("got x"));
        v.expect_eof_exit(T);
        // Root's process (the test runner): refused, cleanly.
        match Task::seize(me) {
            Err(TaskError::PermissionDenied { pid, .. }) => assert_eq!(pid, me),
            other => panic!("expected PermissionDenied, got {other:?}"),
        }
        // Our own process with a seccomp filter: we cannot suspend it, and say so.
        let (mut v, pid) = spawn(SECCOMP, &[]);
        wait_state(pid, "S", T);
        let e = Task::seize(pid).unwrap_err();
        assert!(
            matches!(e, TaskError::SeccompNeedsCapSysAdmin { .. }),
            "{e}"
        );
        assert!(e.to_string().contains("CAP_SYS_ADMIN"));
        assert_eq!(tracer_pid(pid), Some(0), "released");
        v.write_stdin(b"getpid\n").unwrap();
        assert_eq!(v.read_line(T).as_deref(), Some("getpid -1 1"));
        0
    })
    .unwrap();
    assert_eq!(code, 0, "the unprivileged part failed (see its output)");
}
