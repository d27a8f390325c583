//! The examples a user copies (`compel/examples/`: hello, fdspy, sampler), run as programs on
//! a live victim: what they print, their exit status on bad input, and the victim unharmed.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use compel_criu_tests::{Exit, Victim, become_subreaper, bin_dir, test_lock, wait_state};

const T: Duration = Duration::from_secs(10);

/// Builds compel's examples (same profile and target dir as this test) once; returns their
/// directory.
fn examples() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = bin_dir();
        let target = dir.parent().unwrap().to_path_buf();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "compel", "--examples"])
            .env("CARGO_TARGET_DIR", &target)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if dir.file_name().and_then(|p| p.to_str()) == Some("release") {
            cmd.arg("--release");
        }
        assert!(
            cmd.status().unwrap().success(),
            "building the examples failed"
        );
        dir.join("examples")
    })
    .clone()
}

fn example(name: &str, args: &[&str]) -> Output {
    Command::new(examples().join(name))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A victim-infect-state: (victim, pid, counter address, pipe fd, file fd).
fn victim(dir: &std::path::Path) -> (Victim, String, String, String, String) {
    let mut v = Victim::spawn(
        env!("CARGO_BIN_EXE_victim-infect-state"),
        &[dir.to_str().unwrap()],
    )
    .unwrap();
    let line = v.expect_line("ready", T).unwrap();
    let f: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
    wait_state(f[1].parse().unwrap(), "S", T);
    (v, f[1].clone(), f[2].clone(), f[3].clone(), f[4].clone())
}

fn check_and_quit(v: &mut Victim) {
    v.write_stdin(b"check\n").unwrap();
    let line = v.expect_line("", T).unwrap();
    assert!(line.starts_with("ok check"), "victim: {line}");
    v.write_stdin(b"quit\n").unwrap();
    assert_eq!(v.wait(T), Some(Exit::Code(0)));
}

#[test]
fn hello_prints_pid_and_cwd() {
    let _g = test_lock();
    become_subreaper();
    let dir = tempfile::tempdir().unwrap();
    let (mut v, pid, ..) = victim(dir.path());
    let o = example("hello", &[&pid]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    let cwd = dir.path().canonicalize().unwrap();
    assert_eq!(
        out,
        format!("pid {pid} (seen from inside), cwd {}\n", cwd.display())
    );
    check_and_quit(&mut v);
}

#[test]
fn fdspy_shows_pipe_and_file_without_consuming() {
    let _g = test_lock();
    become_subreaper();
    let dir = tempfile::tempdir().unwrap();
    let (mut v, pid, _, pipe, file) = victim(dir.path());
    for _ in 0..2 {
        // Twice: the pipe's bytes are still there the second time.
        let o = example("fdspy", &[&pid, &pipe]);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{out}{err}");
        assert!(
            out.contains(&format!("fd {pipe} of {pid}: pipe:[")),
            "{out}"
        );
        assert!(
            out.contains("type pipe, flags O_RDONLY|O_CLOEXEC, offset none"),
            "{out}"
        );
        assert!(out.contains("9 bytes: \"pipe-data\""), "{out}");
    }
    let o = example("fdspy", &[&pid, &file]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(
        out.contains(&format!("victim-infect-state.{pid} (deleted)")),
        "{out}"
    );
    assert!(
        out.contains("type regular file, flags O_RDONLY|O_CLOEXEC, offset 0"),
        "{out}"
    );
    assert!(out.contains("9 bytes: \"file-data\""), "{out}");
    check_and_quit(&mut v);
}

#[test]
fn sampler_reads_a_counter_several_times() {
    let _g = test_lock();
    become_subreaper();
    let dir = tempfile::tempdir().unwrap();
    let (mut v, pid, counter, ..) = victim(dir.path());
    let o = example(
        "sampler",
        &[&pid, "--hz", "20", "--count", "4", "--addr", &counter],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    let values: Vec<u64> = out
        .lines()
        .map(|l| {
            let v = l.split(", value ").nth(1).expect(l);
            v.split(' ').next().unwrap().parse().unwrap()
        })
        .collect();
    assert_eq!(values.len(), 4, "{out}");
    // The victim runs between samples: its worker's counter moves on.
    assert!(values.windows(2).all(|w| w[1] > w[0]), "{values:?}");
    let o = example("sampler", &[&pid, "--count", "1", "--addr", "0x10"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("value unreadable at 0x10 (EFAULT"), "{out}");
    check_and_quit(&mut v);
}

#[test]
fn bad_pid_or_fd_fails_with_a_message() {
    let _g = test_lock();
    become_subreaper();
    let dir = tempfile::tempdir().unwrap();
    let (mut v, pid, ..) = victim(dir.path());
    for (name, args, want) in [
        (
            "hello",
            vec!["999999999"],
            "hello: cannot seize 999999999: no such task",
        ),
        ("hello", vec!["abc"], "hello: bad pid \"abc\""),
        ("hello", vec![], "hello: usage: hello PID"),
        ("fdspy", vec![pid.as_str(), "77"], "is not open in process"),
        (
            "fdspy",
            vec!["999999999", "1"],
            "fdspy: cannot seize 999999999",
        ),
        (
            "sampler",
            vec!["999999999"],
            "sampler: cannot seize 999999999",
        ),
    ] {
        let o = example(name, &args);
        let (out, err) = text(&o);
        assert!(!o.status.success(), "{name} {args:?} succeeded: {out}");
        assert!(err.contains(want), "{name} {args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
    check_and_quit(&mut v);
}
