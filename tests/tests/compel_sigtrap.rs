//! A program's own `SIGTRAP` handler survives compel: single-stepping a remote syscall, the
//! `int3` of a planted syscall stub, a parasite's infection and cure, and a `criu dump -R` all
//! make the kernel force `SIGTRAP` on the thread, which resets the handler to `SIG_DFL` if the
//! thread blocks `SIGTRAP` at that moment. Each test lets victim-sigtrap prove its handler
//! runs, lets compel (or criu) work on it, and asks it to raise `SIGTRAP` again.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use compel::infect::{InfectOptions, Parasite};
use compel::{SeizeOptions, SyscallMethod, Task};
use compel_criu_tests::{
    Exit, Victim, assert_ok, become_subreaper, criu_dump, test_lock, wait_state,
};
use parasite_blobs::testkit;
use testkit::proto::{self as tk, Args};

const T: Duration = Duration::from_secs(10);

/// Spawns victim-sigtrap, checks its handler runs once, and waits until it sleeps in `read`.
fn spawn_trapping() -> (Victim, i32) {
    let mut v = Victim::spawn(env!("CARGO_BIN_EXE_victim-sigtrap"), &[]).unwrap();
    let line = v.expect_line("ready", T).unwrap();
    let pid: i32 = line.split(' ').nth(1).unwrap().parse().unwrap();
    v.write_stdin(b"trap\n").unwrap();
    assert_eq!(v.read_line(T).as_deref(), Some("trapped 1"));
    wait_state(pid, "S", T);
    std::thread::sleep(Duration::from_millis(20));
    (v, pid)
}

/// Asks the victim to raise `SIGTRAP` again: its handler must run (not the default action,
/// which kills it), then it exits normally.
fn handler_still_runs(mut v: Victim) {
    v.write_stdin(b"trap\n").unwrap();
    let line = v.read_line(T);
    v.close_stdin();
    let exit = v.wait(T);
    assert_eq!(
        (line.as_deref(), exit),
        (Some("trapped 2"), Some(Exit::Code(0))),
        "the victim's SIGTRAP handler did not run"
    );
}

fn remote_syscalls_with(method: SyscallMethod) {
    let _g = test_lock();
    become_subreaper();
    let (v, pid) = spawn_trapping();
    let mut task = Task::seize_with(
        pid,
        SeizeOptions {
            method,
            ..SeizeOptions::default()
        },
    )
    .unwrap();
    for _ in 0..3 {
        assert_eq!(
            task.remote_syscall(compel_arch::nr::GETPID, [0; 6])
                .unwrap(),
            i64::from(pid)
        );
    }
    task.detach().unwrap();
    handler_still_runs(v);
}

#[test]
fn handler_survives_single_stepped_remote_syscalls() {
    remote_syscalls_with(SyscallMethod::Vdso);
}

#[test]
fn handler_survives_remote_syscalls_through_a_planted_int3() {
    remote_syscalls_with(SyscallMethod::PatchCode);
}

#[test]
fn handler_survives_infection_and_cure() {
    let _g = test_lock();
    become_subreaper();
    let (v, pid) = spawn_trapping();
    let mut task = Task::seize(pid).unwrap();
    let mut p = Parasite::infect(&mut task, &testkit::blob(), InfectOptions::default()).unwrap();
    let a = Args {
        a: 2,
        b: 3,
        ..Args::default()
    };
    let r: Args = p.call_with(tk::CMD_ADD, &a).unwrap();
    assert_eq!(r.r, 5);
    p.cure().unwrap();
    task.detach().unwrap();
    handler_still_runs(v);
}

#[test]
fn handler_survives_criu_dump_leaving_it_running() {
    let _g = test_lock();
    become_subreaper();
    let (v, pid) = spawn_trapping();
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let img = d.path().join("img");
    std::fs::create_dir_all(&img).unwrap();
    let o = criu_dump(pid, &img, &["-R"]);
    assert_ok(&o, "dump -R");
    handler_still_runs(v);
}
