//! The `compel syscall` command line against real victims.
//!
//! The `compel` binary belongs to another package, so `env!("CARGO_BIN_EXE_compel")` is not
//! available here; [`compel_criu_tests::workspace_bin`] builds it with the same cargo, profile
//! and target dir as this test (a no-op when it is up to date) and returns its path.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::MutexGuard;
use std::time::Duration;

use compel_criu_tests::{
    Exit, UNPRIVILEGED_ID, Victim, become_subreaper, command_as_user, fork_other_tracer,
    make_world_executable, proc_state, signal, skip_if_not_root, tracer_pid, wait_exit, wait_state,
    workspace_bin,
};
use nix::sys::signal::Signal;

const T: Duration = Duration::from_secs(10);
const BLOCK: &str = env!("CARGO_BIN_EXE_victim-block");

fn setup() -> (MutexGuard<'static, ()>, PathBuf) {
    let g = compel_criu_tests::test_lock();
    become_subreaper();
    (g, workspace_bin("compel-cli", "compel"))
}

fn compel(bin: &PathBuf, args: &[&str]) -> Output {
    Command::new(bin).args(args).output().expect("run compel")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim_end().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim_end().to_string()
}

fn reading_victim() -> (Victim, i32) {
    let mut v = Victim::spawn(BLOCK, &["read"]).unwrap();
    v.expect_line("ready", T).unwrap();
    let pid = v.pid();
    assert_eq!(wait_state(pid, "S", T), Some('S'));
    (v, pid)
}

/// The victim is untraced, answers a line and exits 0 at end of input.
fn finish(mut v: Victim) {
    assert_eq!(tracer_pid(v.pid()), Some(0));
    v.write_stdin(b"still-here\n").unwrap();
    assert_eq!(v.read_line(T).as_deref(), Some("got still-here"));
    v.expect_eof_exit(T);
}

#[test]
fn getpid_prints_the_pid() {
    let (_g, bin) = setup();
    let (v, pid) = reading_victim();
    let p = pid.to_string();
    let o = compel(&bin, &["syscall", "-t", &p, "getpid"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), p);
    let o = compel(&bin, &["syscall", "--tree", &p, "getppid"]);
    assert_eq!(stdout(&o), std::process::id().to_string());
    // By number, and with arguments: kill(pid, 0) succeeds.
    let o = compel(&bin, &["syscall", "-t", &p, "62", &p, "0"]);
    assert_eq!((stdout(&o).as_str(), o.status.success()), ("0", true));
    finish(v);
}

#[test]
fn failure_prints_errno_by_name() {
    let (_g, bin) = setup();
    let (v, pid) = reading_victim();
    let p = pid.to_string();
    let o = compel(&bin, &["syscall", "-t", &p, "close", "0x7777"]);
    assert!(!o.status.success());
    assert!(stdout(&o).starts_with("-9 EBADF"), "{}", stdout(&o));
    // Negative arguments: openat(AT_FDCWD = -100, NULL) fails with EFAULT.
    let o = compel(&bin, &["syscall", "-t", &p, "openat", "-100", "0", "0"]);
    assert!(stdout(&o).starts_with("-14 EFAULT"), "{}", stdout(&o));
    finish(v);
}

#[test]
fn close_takes_effect_in_the_task() {
    let (_g, bin) = setup();
    let (mut v, pid) = reading_victim();
    // Close the victim's stdin behind its back: its restarted read then fails (EBADF).
    let o = compel(&bin, &["syscall", "-t", &pid.to_string(), "close", "0"]);
    assert_eq!(stdout(&o), "0", "{}", stderr(&o));
    assert_eq!(v.read_line(T).as_deref(), Some("error"));
    assert_eq!(v.wait(T), Some(Exit::Code(3)));
}

#[test]
fn stopped_task_stays_stopped() {
    let (_g, bin) = setup();
    let (v, pid) = reading_victim();
    v.signal(Signal::SIGSTOP).unwrap();
    assert_eq!(wait_state(pid, "T", T), Some('T'));
    let o = compel(&bin, &["syscall", "-t", &pid.to_string(), "getpid"]);
    assert_eq!(stdout(&o), pid.to_string(), "{}", stderr(&o));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(proc_state(pid), Some('T'));
    v.signal(Signal::SIGCONT).unwrap();
    finish(v);
}

fn assert_one_line_error(o: &Output, needle: &str) {
    assert!(!o.status.success());
    assert_eq!(stdout(o), "", "nothing on stdout");
    let err = stderr(o);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.starts_with("compel: ") && err.contains(needle),
        "{err:?} lacks {needle:?}"
    );
}

#[test]
fn bad_input_is_a_one_line_error_and_leaves_the_task_alone() {
    let (_g, bin) = setup();
    let (v, pid) = reading_victim();
    let p = pid.to_string();
    assert_one_line_error(
        &compel(&bin, &["syscall", "-t", &p, "getpidd"]),
        "unknown syscall name",
    );
    assert_one_line_error(
        &compel(&bin, &["syscall", "-t", &p, "close", "seven"]),
        "bad syscall argument",
    );
    let seven = [
        "syscall", "-t", &p, "read", "1", "2", "3", "4", "5", "6", "7",
    ];
    assert_one_line_error(&compel(&bin, &seven), "at most 6 arguments");
    assert_one_line_error(
        &compel(&bin, &["syscall", "-t", "2147483647", "getpid"]),
        "no such task",
    );
    // A zombie.
    #[allow(clippy::zombie_processes)] // reaped below with wait_exit
    let z = Command::new("true").spawn().unwrap();
    let zpid = z.id() as i32;
    assert_eq!(wait_state(zpid, "Z", T), Some('Z'));
    assert_one_line_error(
        &compel(&bin, &["syscall", "-t", &zpid.to_string(), "getpid"]),
        "zombie",
    );
    assert_eq!(wait_exit(zpid).unwrap(), Exit::Code(0));
    // Traced by someone else: a compel-independent tracer (a forked helper).
    let (helper, seized) = fork_other_tracer(pid);
    assert!(seized, "the helper seized the victim");
    let o = compel(&bin, &["syscall", "-t", &p, "getpid"]);
    assert_one_line_error(&o, &format!("already traced by pid {helper}"));
    signal(helper, Signal::SIGKILL);
    assert_eq!(wait_exit(helper).unwrap(), Exit::Signal(libc::SIGKILL));
    assert_eq!(wait_state(pid, "S", T), Some('S'));
    finish(v);
}

#[test]
fn permission_denied_for_another_users_task() {
    let (_g, bin) = setup();
    skip_if_not_root!(
        "permission_denied_for_another_users_task (needs root to run as another uid)"
    );
    make_world_executable(&bin).unwrap();
    let (v, pid) = reading_victim();
    let o = command_as_user(&bin, UNPRIVILEGED_ID, UNPRIVILEGED_ID)
        .args(["syscall", "-t", &pid.to_string(), "getpid"])
        .output()
        .unwrap();
    assert_one_line_error(&o, &format!("permission denied to trace task {pid}"));
    finish(v);
}

#[test]
fn unprivileged_user_on_own_task() {
    let (_g, bin) = setup();
    skip_if_not_root!("unprivileged_user_on_own_task (needs root to run as another uid)");
    make_world_executable(&bin).unwrap();
    make_world_executable(std::path::Path::new(BLOCK)).unwrap();
    let mut v = Victim::spawn_command({
        let mut c = command_as_user(BLOCK, UNPRIVILEGED_ID, UNPRIVILEGED_ID);
        c.arg("read");
        c
    })
    .unwrap();
    v.expect_line("ready", T).unwrap();
    let pid = v.pid();
    wait_state(pid, "S", T);
    // compel, as the same user, is not the victim's parent: the kernel's plain ptrace rules
    // (same uid, dumpable) allow it; no Yama here.
    let o = command_as_user(&bin, UNPRIVILEGED_ID, UNPRIVILEGED_ID)
        .args(["syscall", "-t", &pid.to_string(), "getuid"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), UNPRIVILEGED_ID.to_string());
    finish(v);
}

#[test]
fn runs_in_the_thread_given() {
    let (_g, bin) = setup();
    let threads = env!("CARGO_BIN_EXE_victim-threads");
    let mut v = Victim::spawn(threads, &["2"]).unwrap();
    v.expect_line("ready", T).unwrap();
    let tid = v.expect_line("tid", T).unwrap()[4..].to_string();
    let o = compel(&bin, &["syscall", "-t", &tid, "gettid"]);
    assert_eq!(stdout(&o), tid, "{}", stderr(&o));
    let o = compel(&bin, &["syscall", "-t", &tid, "getpid"]);
    assert_eq!(stdout(&o), v.pid().to_string());
    v.close_stdin();
    assert_eq!(v.expect_line("done", T).as_deref(), Ok("done"));
    assert_eq!(v.wait(T), Some(Exit::Code(0)));
}

#[test]
fn version_and_help() {
    let (_g, bin) = setup();
    let o = compel(&bin, &["--version"]);
    assert!(o.status.success());
    assert!(stdout(&o).starts_with("compel "), "{}", stdout(&o));
    let o = compel(&bin, &["--help"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("syscall"));
    let o = compel(&bin, &["syscall", "--help"]);
    assert!(stdout(&o).contains("--tree"));
}
