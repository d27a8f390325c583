//! Infection end to end: real victims (single- and multi-threaded, blocked in syscalls, holding
//! AVX-512 state, job-control stopped, in another network namespace, owned by an unprivileged
//! user) are infected with a parasite, called several times, and cured; then each victim checks
//! itself and exits normally. Faulting, hanging and panicking parasites must not harm the
//! victim either.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use compel::infect::{InfectOptions, Parasite, RpcError, ShmMethod, Stage};
use compel::{RemoteAddr, Task};
use compel_criu_tests::{
    Exit, UNPRIVILEGED_ID, Victim, become_subreaper, command_as_user, is_root,
    make_world_executable, run_as_user, skip_unless, test_lock, wait_state,
};
use nix::errno::Errno;
use nix::sys::signal::Signal;
use parasite_blobs::{demo, testkit};
use testkit::proto::{self as tk, Args};

const T: Duration = Duration::from_secs(10);
const STATE: &str = env!("CARGO_BIN_EXE_victim-infect-state");

fn fields(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_owned).collect()
}

/// A victim-infect-state in `dir`: (victim, pid, counter address, pipe fd, file fd).
fn spawn_state(dir: &std::path::Path) -> (Victim, i32, u64, i32, i32) {
    let v = Victim::spawn(STATE, &[dir.to_str().unwrap()]).unwrap();
    ready_state(v)
}

fn ready_state(mut v: Victim) -> (Victim, i32, u64, i32, i32) {
    let f = fields(&v.expect_line("ready", T).unwrap());
    let pid = f[1].parse().unwrap();
    let counter = u64::from_str_radix(f[2].trim_start_matches("0x"), 16).unwrap();
    // Let the main thread reach its blocking read.
    wait_state(pid, "S", T);
    std::thread::sleep(Duration::from_millis(20));
    (
        v,
        pid,
        counter,
        f[3].parse().unwrap(),
        f[4].parse().unwrap(),
    )
}

/// Sends `check` and expects `ok check N`; then `quit` and a clean exit.
fn check_and_quit(v: &mut Victim) {
    v.write_stdin(b"check\n").unwrap();
    let line = v.expect_line("", T).unwrap();
    assert!(line.starts_with("ok check"), "victim: {line}");
    v.write_stdin(b"quit\n").unwrap();
    let rest = v.read_rest(T);
    assert_eq!(rest.last().map(String::as_str), Some("done ok"), "{rest:?}");
    assert_eq!(v.wait(T), Some(Exit::Code(0)));
}

fn args(a: u64, b: u64) -> Args {
    Args {
        a,
        b,
        ..Args::default()
    }
}

/// A tracing subscriber that keeps every formatted line, for checking forwarded parasite logs.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[test]
fn hello_reports_pid_and_cwd_then_cure_leaves_victim_working() {
    let _g = test_lock();
    become_subreaper();
    let dir = tempfile::tempdir().unwrap();
    let (mut v, pid, ..) = spawn_state(dir.path());
    let mut task = Task::seize(pid).unwrap();
    let mut p = Parasite::infect(&mut task, &demo::blob(), InfectOptions::default()).unwrap();
    for _ in 0..3 {
        let r: demo::proto::HelloReply = p.call_with(demo::proto::CMD_HELLO, &0u64).unwrap();
        assert_eq!(r.pid, pid);
        let cwd = std::str::from_utf8(&r.cwd[..r.cwd_len as usize]).unwrap();
        assert_eq!(cwd, dir.path().canonicalize().unwrap().to_str().unwrap());
    }
    p.cure().unwrap();
    task.detach().unwrap();
    check_and_quit(&mut v);
}

#[test]
fn calls_errno_logs_fds_and_safe_peeks() {
    let _g = test_lock();
    become_subreaper();
    let dir = tempfile::tempdir().unwrap();
    let (mut v, pid, counter, pipe_fd, _) = spawn_state(dir.path());
    let cap = Captured::default();
    let w = cap.clone();
    let sub = tracing_subscriber::fmt()
        .with_writer(move || w.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    let mut stages = Vec::new();
    tracing::subscriber::with_default(sub, || {
        let mut task = Task::seize(pid).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let opts = InfectOptions {
            hook: Some(Box::new(move |s| s2.lock().unwrap().push(s))),
            ..InfectOptions::default()
        };
        let mut p = Parasite::infect(&mut task, &testkit::blob(), opts).unwrap();
        // Several calls, each seeing the task's pid from inside.
        for i in 0..5u64 {
            let r: Args = p.call_with(tk::CMD_ADD, &args(i, 40)).unwrap();
            assert_eq!((r.r, r.pid, r.tid), (i + 40, pid, pid));
        }
        // A failing command reports its errno, and the parasite keeps serving.
        let e = p.call_with::<Args, Args>(tk::CMD_FAIL, &args(libc::EPERM as u64, 0));
        assert_eq!(e.unwrap_err().errno(), Some(Errno::EPERM));
        let e = p.call_with::<Args, Args>(999, &args(0, 0)).unwrap_err();
        assert_eq!(e.errno(), Some(Errno::ENOSYS));
        // Memory read from inside: the worker's counter moves; a bad address is EFAULT.
        let r: Args = p.call_with(tk::CMD_PEEK, &args(counter, 8)).unwrap();
        assert_eq!(r.r, 8);
        let n = u64::from_ne_bytes(r.data[..8].try_into().unwrap());
        assert!(n > 0, "counter {n}");
        let e = p
            .call_with::<Args, Args>(tk::CMD_PEEK, &args(8, 8))
            .unwrap_err();
        assert_eq!(e.errno(), Some(Errno::EFAULT));
        // An fd out of the task: the victim's pipe still holds its bytes.
        write_args(&mut p, &args(pipe_fd as u64, 0));
        let fds = p.call_fds(tk::CMD_SEND_FD, &[]).unwrap();
        assert_eq!(fds.len(), 1);
        let mut f = std::fs::File::from(fds.into_iter().next().unwrap());
        let mut got = String::new();
        f.read_to_string(&mut got).unwrap();
        assert_eq!(got, "pipe-data");
        // Log lines arrive in our tracing.
        let _: Args = p.call_with(tk::CMD_LOG, &args(3, 0)).unwrap();
        // A syscall run in the daemon thread while the parasite idles.
        assert_eq!(
            p.syscall(compel_arch::nr::GETPID, [0; 6]).unwrap(),
            pid as i64
        );
        let r: Args = p.call_with(tk::CMD_ADD, &args(1, 1)).unwrap();
        assert_eq!(r.r, 2);
        p.cure().unwrap();
        task.detach().unwrap();
        stages = seen.lock().unwrap().clone();
    });
    let text = cap.text();
    for i in 1..=3 {
        assert!(
            text.contains(&format!("testkit line {i} of 3")),
            "log line {i} missing:\n{text}"
        );
    }
    assert!(
        !text.contains("WARN"),
        "warnings during a clean run:\n{text}"
    );
    assert_eq!(stages.first(), Some(&Stage::Saved));
    let fini = stages.iter().position(|s| *s == Stage::FiniSent).unwrap();
    assert_eq!(
        &stages[fini..],
        &[Stage::FiniSent, Stage::Returned, Stage::Cured]
    );
    check_and_quit(&mut v);
}

fn write_args<T: std::borrow::BorrowMut<Task>>(p: &mut Parasite<T>, a: &Args) {
    compel_proto::write_plain(p.payload_mut(), a);
}

#[test]
fn avx512_state_survives_while_blocked_in_read() {
    let _g = test_lock();
    become_subreaper();
    skip_unless!(compel_arch::cpu_has_avx512f(), "the CPU has no AVX-512F");
    let mut v = Victim::spawn(env!("CARGO_BIN_EXE_victim-infect-avx"), &[]).unwrap();
    let pid: i32 = fields(&v.expect_line("ready", T).unwrap())[1]
        .parse()
        .unwrap();
    // A first round proves the victim's check works without us.
    v.write_stdin(b"abc\n").unwrap();
    assert_eq!(v.read_line(T).as_deref(), Some("ok 4"));
    wait_state(pid, "S", T);
    std::thread::sleep(Duration::from_millis(20));
    let mut task = Task::seize(pid).unwrap();
    let mut p = Parasite::infect(&mut task, &testkit::blob(), InfectOptions::default()).unwrap();
    for _ in 0..3 {
        let _: Args = p.call_with(tk::CMD_CLOBBER, &args(0, 0)).unwrap();
    }
    let r: Args = p.call_with(tk::CMD_ADD, &args(2, 3)).unwrap();
    assert_eq!(r.r, 5);
    p.cure().unwrap();
    task.detach().unwrap();
    v.write_stdin(b"xy\n").unwrap();
    assert_eq!(v.read_line(T).as_deref(), Some("ok 3"));
    v.expect_eof_exit(T);
}

#[test]
fn avx_state_survives_while_spinning_in_user_code() {
    let _g = test_lock();
    become_subreaper();
    skip_unless!(compel_arch::cpu_has_avx(), "the CPU has no AVX");
    let mut v = Victim::spawn(env!("CARGO_BIN_EXE_victim-avx"), &[]).unwrap();
    let f = fields(&v.expect_line("ready", T).unwrap());
    let pid: i32 = f[1].parse().unwrap();
    let flag = RemoteAddr(u64::from_str_radix(f[2].trim_start_matches("0x"), 16).unwrap());
    std::thread::sleep(Duration::from_millis(20));
    let mut task = Task::seize(pid).unwrap();
    let mut p = Parasite::infect(&mut task, &testkit::blob(), InfectOptions::default()).unwrap();
    let _: Args = p.call_with(tk::CMD_CLOBBER, &args(0, 0)).unwrap();
    p.cure().unwrap();
    task.write_mem(flag, &1u32.to_ne_bytes()).unwrap();
    task.detach().unwrap();
    assert_eq!(v.read_line(T).as_deref(), Some("ok"));
    assert_eq!(v.wait(T), Some(Exit::Code(0)));
}

#[test]
fn trap_mode_runs_commands_in_each_worker_thread() {
    let _g = test_lock();
    become_subreaper();
    let mut v = Victim::spawn(env!("CARGO_BIN_EXE_victim-threads"), &["3"]).unwrap();
    let pid: i32 = fields(&v.expect_line("ready", T).unwrap())[1]
        .parse()
        .unwrap();
    let mut tids = Vec::new();
    for _ in 0..3 {
        tids.push(
            fields(&v.expect_line("tid", T).unwrap())[1]
                .parse::<i32>()
                .unwrap(),
        );
    }
    std::thread::sleep(Duration::from_millis(30));
    v.write_stdin(b"count\n").unwrap();
    let before = fields(&v.expect_line("counts", T).unwrap());
    std::thread::sleep(Duration::from_millis(20));
    let mut task = Task::seize(pid).unwrap();
    assert_eq!(task.threads().len(), 4);
    let mut p = Parasite::infect(&mut task, &testkit::blob(), InfectOptions::default()).unwrap();
    for (i, &tid) in tids.iter().enumerate() {
        write_args(&mut p, &args(i as u64, 100));
        p.run_in_thread(tid, tk::CMD_ADD).unwrap();
        let r: Args = compel_proto::read_plain(p.payload()).unwrap();
        assert_eq!((r.r, r.pid, r.tid), (i as u64 + 100, pid, tid));
        write_args(&mut p, &args(0, 0));
        p.run_in_thread(tid, tk::CMD_CLOBBER).unwrap();
        write_args(&mut p, &args(libc::EACCES as u64, 0));
        let e = p.run_in_thread(tid, tk::CMD_FAIL).unwrap_err();
        assert_eq!(e.errno(), Some(Errno::EACCES));
        // The daemon still answers between trap runs.
        let r: Args = p.call_with(tk::CMD_ADD, &args(7, 8)).unwrap();
        assert_eq!((r.r, r.tid), (15, pid));
    }
    assert!(matches!(
        p.run_in_thread(pid, tk::CMD_ADD),
        Err(RpcError::Trap { .. })
    ));
    p.cure().unwrap();
    task.detach().unwrap();
    std::thread::sleep(Duration::from_millis(30));
    v.write_stdin(b"count\n").unwrap();
    let after = fields(&v.expect_line("counts", T).unwrap());
    for i in 1..=3 {
        let (b, a): (u64, u64) = (before[i].parse().unwrap(), after[i].parse().unwrap());
        assert!(
            a > b,
            "worker {i} stopped counting: {before:?} -> {after:?}"
        );
    }
    v.close_stdin();
    assert_eq!(v.expect_line("done", T).unwrap(), "done");
    assert_eq!(v.wait(T), Some(Exit::Code(0)));
}

/// victim-block MODE: infect while it sleeps in the kernel; the syscall completes afterwards.
fn blocked_victim(mode: &[&str], expect_prefix: &str) {
    let _g = test_lock();
    become_subreaper();
    let mut v = Victim::spawn(env!("CARGO_BIN_EXE_victim-block"), mode).unwrap();
    let pid: i32 = fields(&v.expect_line("ready", T).unwrap())[1]
        .parse()
        .unwrap();
    wait_state(pid, "S", T);
    std::thread::sleep(Duration::from_millis(30));
    let mut task = Task::seize(pid).unwrap();
    let mut p = Parasite::infect(&mut task, &testkit::blob(), InfectOptions::default()).unwrap();
    for i in 0..3 {
        let r: Args = p.call_with(tk::CMD_ADD, &args(i, i)).unwrap();
        assert_eq!(r.r, 2 * i);
    }
    let _: Args = p.call_with(tk::CMD_CLOBBER, &args(0, 0)).unwrap();
    p.cure().unwrap();
    task.detach().unwrap();
    if mode[0] == "read" {
        v.write_stdin(b"hello\n").unwrap();
        assert_eq!(v.read_line(T).as_deref(), Some("got hello"));
        v.close_stdin();
    }
    let line = v.expect_line(expect_prefix, T).unwrap();
    assert!(line.starts_with(expect_prefix), "{line}");
    assert_eq!(v.wait(T), Some(Exit::Code(0)), "after {line}");
}

#[test]
fn victim_blocked_in_read() {
    blocked_victim(&["read"], "eof");
}

#[test]
fn victim_blocked_in_nanosleep_restarts_it() {
    blocked_victim(&["nanosleep", "400"], "slept");
}

#[test]
fn victim_blocked_in_futex_with_timeout() {
    blocked_victim(&["futex", "400"], "timedout");
}

#[test]
fn stopped_victim_stays_stopped() {
    let _g = test_lock();
    become_subreaper();
    let dir = tempfile::tempdir().unwrap();
    let (mut v, pid, ..) = spawn_state(dir.path());
    v.signal(Signal::SIGSTOP).unwrap();
    assert_eq!(wait_state(pid, "T", T), Some('T'));
    let mut task = Task::seize(pid).unwrap();
    let mut p = Parasite::infect(&mut task, &testkit::blob(), InfectOptions::default()).unwrap();
    let r: Args = p.call_with(tk::CMD_ADD, &args(20, 22)).unwrap();
    assert_eq!(r.r, 42);
    p.cure().unwrap();
    task.detach().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(compel_criu_tests::proc_state(pid), Some('T'));
    v.signal(Signal::SIGCONT).unwrap();
    check_and_quit(&mut v);
}

/// A parasite that faults, hangs or panics: the call fails, the host cures, the victim runs on.
fn misbehaving(cmd: u32, timeout: Duration) -> RpcError {
    let _g = test_lock();
    become_subreaper();
    let dir = tempfile::tempdir().unwrap();
    let (mut v, pid, ..) = spawn_state(dir.path());
    let mut task = Task::seize(pid).unwrap();
    let opts = InfectOptions {
        timeout,
        ..InfectOptions::default()
    };
    let mut p = Parasite::infect(&mut task, &testkit::blob(), opts).unwrap();
    let e = p.call_with::<Args, Args>(cmd, &args(0, 0)).unwrap_err();
    // Cured already: later calls say so.
    assert!(matches!(
        p.call_with::<Args, Args>(tk::CMD_ADD, &args(0, 0)),
        Err(RpcError::NotRunning { .. })
    ));
    drop(p);
    task.detach().unwrap();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    assert!(
        !maps.contains("compel-parasite"),
        "region left behind:\n{maps}"
    );
    check_and_quit(&mut v);
    e
}

#[test]
fn faulting_parasite_does_not_kill_the_victim() {
    let e = misbehaving(tk::CMD_CRASH, T);
    assert!(matches!(e, RpcError::ThreadStopped { .. }), "{e}");
}

#[test]
fn hanging_parasite_times_out_and_victim_runs_on() {
    let e = misbehaving(tk::CMD_SPIN, Duration::from_millis(300));
    assert!(matches!(e, RpcError::Timeout { .. }), "{e}");
}

#[test]
fn panicking_parasite_returns_by_itself() {
    let e = misbehaving(tk::CMD_PANIC, T);
    assert!(matches!(e, RpcError::Closed { .. }), "{e}");
}

#[test]
fn map_files_fallback_works() {
    let _g = test_lock();
    become_subreaper();
    skip_unless!(is_root(), "map_files needs CAP_CHECKPOINT_RESTORE");
    let dir = tempfile::tempdir().unwrap();
    let (mut v, pid, ..) = spawn_state(dir.path());
    let mut task = Task::seize(pid).unwrap();
    let opts = InfectOptions {
        shm: ShmMethod::MapFiles,
        ..InfectOptions::default()
    };
    let mut p = Parasite::infect(&mut task, &testkit::blob(), opts).unwrap();
    let r: Args = p.call_with(tk::CMD_ADD, &args(1, 2)).unwrap();
    assert_eq!(r.r, 3);
    p.cure().unwrap();
    task.detach().unwrap();
    check_and_quit(&mut v);
}

#[test]
fn victim_in_another_network_namespace() {
    let _g = test_lock();
    become_subreaper();
    skip_unless!(
        is_root(),
        "creating a network namespace needs CAP_SYS_ADMIN"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(STATE);
    cmd.arg(dir.path());
    // SAFETY: unshare only changes this (child) process's namespaces before exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (mut v, pid, ..) = ready_state(Victim::spawn_command(cmd).unwrap());
    let theirs = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(theirs, ours, "the victim should be in its own netns");
    let mut task = Task::seize(pid).unwrap();
    let mut p = Parasite::infect(&mut task, &testkit::blob(), InfectOptions::default()).unwrap();
    for i in 0..3 {
        let r: Args = p.call_with(tk::CMD_ADD, &args(i, 1)).unwrap();
        assert_eq!(r.r, i + 1);
    }
    p.cure().unwrap();
    task.detach().unwrap();
    check_and_quit(&mut v);
}

#[test]
fn unprivileged_user_infects_own_process() {
    let _g = test_lock();
    become_subreaper();
    skip_unless!(
        is_root(),
        "needs root to create the unprivileged user's processes"
    );
    make_world_executable(std::path::Path::new(STATE)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(dir.path(), Some(UNPRIVILEGED_ID), Some(UNPRIVILEGED_ID)).unwrap();
    let mut cmd = command_as_user(STATE, UNPRIVILEGED_ID, UNPRIVILEGED_ID);
    cmd.arg(dir.path());
    let (mut v, pid, ..) = ready_state(Victim::spawn_command(cmd).unwrap());
    let code = run_as_user(UNPRIVILEGED_ID, UNPRIVILEGED_ID, || {
        let mut task = match Task::seize(pid) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("seize: {e}");
                return 10;
            }
        };
        let mut p = match Parasite::infect(&mut task, &testkit::blob(), InfectOptions::default())
        {
            Ok(p) => p,
            Err(e) => {
                eprintln!("infect: {e}");
                return 11;
            }
        };
        let ok = matches!(p.call_with::<Args, Args>(tk::CMD_ADD, &args(2, 2)), Ok(r) if r.r == 4 && r.pid == pid);
        if p.cure().is_err() || !ok {
            return 12;
        }
        if task.detach().is_err() { 13 } else { 0 }
    })
    .unwrap();
    assert_eq!(code, 0);
    check_and_quit(&mut v);
}

/// Runs an infection in a forked child (the "host") that stops at `stage`; the test kills it
/// with SIGKILL there. The victim must survive and keep working.
fn host_killed_at(stage: Stage) {
    let _g = test_lock();
    become_subreaper();
    let dir = tempfile::tempdir().unwrap();
    let (mut v, pid, ..) = spawn_state(dir.path());
    let (rd, wr) = nix::unistd::pipe().unwrap();
    // SAFETY: the child only runs the infection (no locks held by other threads are needed:
    // the test lock is held by this thread) and ends with _exit.
    let host = unsafe { libc::fork() };
    assert!(host >= 0);
    if host == 0 {
        drop(rd);
        let mut wr = Some(std::fs::File::from(wr));
        let hook = move |s: Stage| {
            if s == stage
                && let Some(mut w) = wr.take()
            {
                use std::io::Write;
                let _ = w.write_all(b"x");
                drop(w);
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        };
        let opts = InfectOptions {
            hook: Some(Box::new(hook)),
            ..InfectOptions::default()
        };
        let run = || -> Option<()> {
            let mut task = Task::seize(pid).ok()?;
            let mut p = Parasite::infect(&mut task, &testkit::blob(), opts).ok()?;
            let _: Args = p.call_with(tk::CMD_SLEEP, &args(300, 0)).ok()?;
            p.cure().ok()?;
            task.detach().ok()
        };
        let code = if run().is_some() { 0 } else { 1 };
        // SAFETY: _exit ends the forked child without running the parent's handlers.
        unsafe { libc::_exit(code) };
    }
    drop(wr);
    let mut r = std::fs::File::from(rd);
    let mut b = [0u8; 1];
    let n = r.read(&mut b).unwrap();
    assert_eq!(n, 1, "the host never reached {stage:?}");
    // SAFETY: kill on the host child we forked.
    unsafe { libc::kill(host, libc::SIGKILL) };
    assert_eq!(
        compel_criu_tests::wait_exit(host).unwrap(),
        Exit::Signal(libc::SIGKILL)
    );
    // The victim is no longer traced and runs its own code again.
    let end = Instant::now() + T;
    while compel_criu_tests::tracer_pid(pid) != Some(0) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(compel_criu_tests::tracer_pid(pid), Some(0));
    check_and_quit(&mut v);
}

#[test]
fn host_killed_after_saving_state() {
    host_killed_at(Stage::Saved);
}

#[test]
fn host_killed_after_mapping() {
    host_killed_at(Stage::Mapped);
}

#[test]
fn host_killed_before_start() {
    host_killed_at(Stage::Loaded);
}

#[test]
fn host_killed_while_parasite_idles() {
    host_killed_at(Stage::Started);
}

#[test]
fn host_killed_during_a_command() {
    host_killed_at(Stage::CommandSent(tk::CMD_SLEEP));
}

#[test]
fn host_killed_after_fini() {
    host_killed_at(Stage::FiniSent);
}

#[test]
fn other_children_of_the_host_are_not_reaped() {
    let _g = test_lock();
    become_subreaper();
    let dir = tempfile::tempdir().unwrap();
    let (mut v, pid, ..) = spawn_state(dir.path());
    // A child of ours that exits while we infect: compel must not reap it.
    let mut other = Command::new("true").spawn().unwrap();
    let other_pid = other.id() as i32;
    let mut task = Task::seize(pid).unwrap();
    let mut p = Parasite::infect(&mut task, &testkit::blob(), InfectOptions::default()).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let _: Args = p.call_with(tk::CMD_ADD, &args(1, 1)).unwrap();
    p.cure().unwrap();
    task.detach().unwrap();
    // Still ours to reap, with its status.
    assert_eq!(
        compel_criu_tests::wait_exit(other_pid).unwrap(),
        Exit::Code(0)
    );
    let _ = other.try_wait();
    check_and_quit(&mut v);
}

/// Everything of one thread an infection could change.
#[derive(Debug, PartialEq)]
struct ThreadSnap {
    regs: compel::UserRegs,
    /// The xsave area without its header and software bytes (which describe, not hold, state).
    xsave: Vec<u8>,
    sigmask: u64,
}

fn snap_thread(task: &mut Task, tid: i32) -> ThreadSnap {
    let regs = compel::ptrace::get_regs(tid).unwrap();
    let sigmask = compel::ptrace::get_sigmask(tid).unwrap();
    let x = task.xsave(tid).unwrap();
    let b = x.bytes();
    let mut xsave = b[..compel_arch::FPX_SW_BYTES_OFFSET].to_vec();
    xsave.extend_from_slice(&b[compel_arch::XSAVE_HDR_OFFSET + compel_arch::XSAVE_HDR_SIZE..]);
    ThreadSnap {
        regs,
        xsave,
        sigmask,
    }
}

/// The fd table: number, what it points at, its flags and position. A descriptor closed while
/// the table is read (the parasite still settling in, during infection) is left out.
fn snap_fds(pid: i32) -> Vec<(i32, String, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let e = e.unwrap();
        let fd: i32 = e.file_name().to_str().unwrap().parse().unwrap();
        let (Ok(target), Ok(info)) = (
            std::fs::read_link(e.path()),
            std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")),
        ) else {
            continue;
        };
        let keep: Vec<&str> = info
            .lines()
            .filter(|l| l.starts_with("pos:") || l.starts_with("flags:"))
            .collect();
        out.push((fd, target.display().to_string(), keep.join(" ")));
    }
    out.sort();
    out
}

#[test]
fn transparency_registers_xsave_mask_maps_fds() {
    let _g = test_lock();
    become_subreaper();
    let dir = tempfile::tempdir().unwrap();
    let (mut v, pid, counter, pipe_fd, file_fd) = spawn_state(dir.path());
    let mut task = Task::seize(pid).unwrap();
    let tids = task.threads();
    assert_eq!(tids.len(), 2, "main and worker");
    let worker = tids[1];
    let before: Vec<ThreadSnap> = tids.iter().map(|&t| snap_thread(&mut task, t)).collect();
    let maps_before = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let fds_before = snap_fds(pid);
    let mut p = Parasite::infect(&mut task, &testkit::blob(), InfectOptions::default()).unwrap();
    // While infected, the region and two sockets are visible: the snapshots can tell.
    let maps_during = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    assert!(maps_during.contains("compel-parasite"), "{maps_during}");
    assert_ne!(snap_fds(pid), fds_before);
    let _: Args = p.call_with(tk::CMD_CLOBBER, &args(0, 0)).unwrap();
    let _: Args = p.call_with(tk::CMD_LOG, &args(2, 0)).unwrap();
    let _: Args = p.call_with(tk::CMD_PEEK, &args(counter, 8)).unwrap();
    for fd in [pipe_fd, file_fd] {
        write_args(&mut p, &args(fd as u64, 0));
        assert_eq!(p.call_fds(tk::CMD_SEND_FD, &[]).unwrap().len(), 1);
    }
    write_args(&mut p, &args(0, 0));
    p.run_in_thread(worker, tk::CMD_CLOBBER).unwrap();
    p.cure().unwrap();
    let after: Vec<ThreadSnap> = tids.iter().map(|&t| snap_thread(&mut task, t)).collect();
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        assert_eq!(b.regs, a.regs, "thread {} registers", tids[i]);
        assert_eq!(b.sigmask, a.sigmask, "thread {} signal mask", tids[i]);
        if let Some(off) = b.xsave.iter().zip(&a.xsave).position(|(x, y)| x != y) {
            panic!("thread {}: xsave differs at byte {off}", tids[i]);
        }
        assert_eq!(b.xsave.len(), a.xsave.len());
    }
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap(),
        maps_before
    );
    assert_eq!(snap_fds(pid), fds_before);
    task.detach().unwrap();
    // The victim's own view: mask, alternate stack, handler; and the handler still runs on the
    // alternate stack.
    v.signal(Signal::SIGUSR1).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    v.write_stdin(b"usr1\n").unwrap();
    assert_eq!(v.expect_line("usr1", T).unwrap(), "usr1 1 offstack 0");
    check_and_quit(&mut v);
}

#[test]
fn daemon_in_a_worker_thread_and_trap_in_the_leader() {
    let _g = test_lock();
    become_subreaper();
    let mut v = Victim::spawn(env!("CARGO_BIN_EXE_victim-threads"), &["2"]).unwrap();
    let pid: i32 = fields(&v.expect_line("ready", T).unwrap())[1]
        .parse()
        .unwrap();
    let worker: i32 = fields(&v.expect_line("tid", T).unwrap())[1]
        .parse()
        .unwrap();
    v.expect_line("tid", T).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let mut task = Task::seize(pid).unwrap();
    let opts = InfectOptions {
        thread: Some(worker),
        ..InfectOptions::default()
    };
    let mut p = Parasite::infect(&mut task, &testkit::blob(), opts).unwrap();
    assert_eq!(p.tid(), worker);
    let r: Args = p.call_with(tk::CMD_ADD, &args(1, 2)).unwrap();
    assert_eq!((r.r, r.pid, r.tid), (3, pid, worker));
    write_args(&mut p, &args(4, 5));
    p.run_in_thread(pid, tk::CMD_ADD).unwrap();
    let r: Args = compel_proto::read_plain(p.payload()).unwrap();
    assert_eq!((r.r, r.tid), (9, pid));
    let _: Args = p.call_with(tk::CMD_CLOBBER, &args(0, 0)).unwrap();
    p.cure().unwrap();
    task.detach().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    v.write_stdin(b"count\n").unwrap();
    v.expect_line("counts", T).unwrap();
    v.close_stdin();
    assert_eq!(v.expect_line("done", T).unwrap(), "done");
    assert_eq!(v.wait(T), Some(Exit::Code(0)));
}

#[test]
fn seccomp_filtered_victim() {
    let _g = test_lock();
    become_subreaper();
    skip_unless!(is_root(), "suspending seccomp needs CAP_SYS_ADMIN");
    let mut v = Victim::spawn(env!("CARGO_BIN_EXE_victim-seccomp"), &[]).unwrap();
    let pid: i32 = fields(&v.expect_line("ready", T).unwrap())[1]
        .parse()
        .unwrap();
    wait_state(pid, "S", T);
    let mut task = Task::seize(pid).unwrap();
    assert!(task.seccomp_suspended());
    let mut p = Parasite::infect(&mut task, &testkit::blob(), InfectOptions::default()).unwrap();
    // The filter makes getpid fail for the task; the parasite runs with it suspended.
    let r: Args = p.call_with(tk::CMD_ADD, &args(1, 1)).unwrap();
    assert_eq!((r.r, r.pid), (2, pid));
    p.cure().unwrap();
    task.detach().unwrap();
    v.write_stdin(b"getpid\n").unwrap();
    assert_eq!(v.expect_line("getpid", T).unwrap(), "getpid -1 1");
    v.close_stdin();
    v.expect_line("eof", T).unwrap();
    assert_eq!(v.wait(T), Some(Exit::Code(0)));
}
