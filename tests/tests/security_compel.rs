//! compel's security properties, checked on live tasks: the C ABI refuses a task its caller
//! could not ptrace (the kernel's check, relied on and tested here as the Rust API's is in
//! `compel_task.rs`); while a parasite runs, no mapping of the task is writable and executable
//! at once, and its sockets have no name another process could connect to (a socket pair made
//! inside the task, the host's end taken over its pidfd).

use std::process::Command;
use std::time::Duration;

use compel::Task;
use compel::infect::{InfectOptions, Parasite};
use compel_criu_tests::c_host::{build_c_host, run_ok};
use compel_criu_tests::{
    UNPRIVILEGED_ID, Victim, become_subreaper, command_as_user, make_world_executable,
    skip_if_not_root, test_lock, wait_state,
};
use parasite_blobs::testkit::{self, proto as tk};

const T: Duration = Duration::from_secs(10);
const BLOCK: &str = env!("CARGO_BIN_EXE_victim-block");

/// Tries to prepare task argv[1] and says what happened.
const PREPARE_C: &str = r#"#include <stdio.h>
#include <stdlib.h>
#include <compel/infect.h>

int main(int argc, char **argv)
{
	struct parasite_ctl *ctl = compel_prepare(atoi(argv[1]));

	if (!ctl) {
		printf("refused: %s\n", compel_last_error());
		return 0;
	}
	compel_cure(ctl);
	printf("prepared\n");
	return 0;
}
"#;

#[test]
fn the_c_abi_refuses_a_task_its_caller_could_not_ptrace() {
    skip_if_not_root!("the_c_abi_refuses_a_task_its_caller_could_not_ptrace");
    let _g = test_lock();
    become_subreaper();
    let work = tempfile::tempdir().unwrap();
    let host = build_c_host(work.path(), "prepare", PREPARE_C);
    make_world_executable(&host).unwrap();
    // A root-owned victim: nobody may not ptrace it.
    let mut v = Victim::spawn(BLOCK, &["read"]).unwrap();
    v.expect_line("ready", T).unwrap();
    let pid = v.pid();
    wait_state(pid, "S", T);
    let out = run_ok(command_as_user(&host, UNPRIVILEGED_ID, UNPRIVILEGED_ID).arg(pid.to_string()));
    assert!(out.starts_with("refused: "), "{out}");
    assert!(out.contains(&pid.to_string()), "{out}");
    // Untouched: not traced, and it answers.
    assert_eq!(compel_criu_tests::tracer_pid(pid), Some(0));
    v.write_stdin(b"x\n").unwrap();
    assert_eq!(v.read_line(T).as_deref(), Some("got x"));
    // Root's own run of the same program prepares it.
    let out = run_ok(Command::new(&host).arg(pid.to_string()));
    assert_eq!(out, "prepared\n");
    v.write_stdin(b"y\n").unwrap();
    assert_eq!(v.read_line(T).as_deref(), Some("got y"));
    v.expect_eof_exit(T);
}

/// The `socket:[INODE]` inodes among task `pid`'s fds.
fn socket_inodes(pid: i32) -> Vec<u64> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let Ok(link) = std::fs::read_link(e.unwrap().path()) else {
            continue;
        };
        let l = link.to_string_lossy().into_owned();
        if let Some(ino) = l.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
            out.push(ino.parse().unwrap());
        }
    }
    out
}

#[test]
fn a_running_parasite_has_no_writable_code_and_no_named_socket() {
    let _g = test_lock();
    become_subreaper();
    let mut v = Victim::spawn(BLOCK, &["read"]).unwrap();
    v.expect_line("ready", T).unwrap();
    let pid = v.pid();
    wait_state(pid, "S", T);
    let before = socket_inodes(pid);
    let mut task = Task::seize(pid).unwrap();
    let mut p = Parasite::infect(&mut task, &testkit::blob(), InfectOptions::default()).unwrap();
    let r: tk::Args = p
        .call_with(
            tk::CMD_ADD,
            &tk::Args {
                a: 2,
                b: 3,
                ..tk::Args::default()
            },
        )
        .unwrap();
    assert_eq!(r.r, 5);
    // W^X: no mapping is writable and executable at once; the parasite's code is r-x.
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    for line in maps.lines() {
        let perms = line.split_whitespace().nth(1).unwrap();
        assert!(
            !(perms.contains('w') && perms.contains('x')),
            "writable and executable: {line}"
        );
    }
    let base = format!("{:x}-", p.remote_base().get());
    let text = maps.lines().find(|l| l.starts_with(&base)).unwrap();
    assert!(
        text.split_whitespace().nth(1).unwrap().starts_with("r-x"),
        "{text}"
    );
    // The sockets the parasite holds (new since infection) are unnamed: no path, no
    // abstract name, nothing another process could connect to.
    let new: Vec<u64> = socket_inodes(pid)
        .into_iter()
        .filter(|i| !before.contains(i))
        .collect();
    assert!(!new.is_empty(), "the parasite holds no socket");
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/unix")).unwrap();
    for ino in &new {
        let row = table
            .lines()
            .skip(1)
            .find(|l| l.split_whitespace().nth(6) == Some(&ino.to_string()))
            .unwrap_or_else(|| panic!("socket {ino} not in /proc/{pid}/net/unix"));
        assert_eq!(row.split_whitespace().count(), 7, "named socket: {row}");
    }
    p.cure().unwrap();
    task.detach().unwrap();
    v.write_stdin(b"x\n").unwrap();
    assert_eq!(v.read_line(T).as_deref(), Some("got x"));
    v.expect_eof_exit(T);
}
