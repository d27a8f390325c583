//! criu restore and action scripts: each stage runs the scripts, a failing script aborts the
//! restore (through the library and the command line).
//!
//! Every test runs as root, under the test lock and as a child subreaper, checks what a user
//! would check in /proc and in the task's memory, then kills and reaps what it started. The
//! shared helpers (fixtures, [`Scratch`](compel_criu_tests::Scratch), `restore_and_check`, ...)
//! are the tests crate's.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use compel_criu_tests::{
    SINGLE_PID, Spawned, assert_ok, become_subreaper, criu as run_criu, detached, fixture_cpu_cap,
    fixture_usable, fixtures_dir, hex_field, pid_exists, skip_if_not_root, test_lock, wait_state,
};
use criu::{RestoreOutcome, restore};

/// An action script that records `ACTION PID` lines into `log` and fails at `fail_at`.
fn hook_script(dir: &Path, log: &Path, fail_at: &str) -> PathBuf {
    let p = dir.join("hook.sh");
    fs::write(
        &p,
        format!(
            "#!/bin/sh\necho \"$CRTOOLS_SCRIPT_ACTION ${{CRTOOLS_INIT_PID:-none}}\" >> {}\n\
             [ \"$CRTOOLS_SCRIPT_ACTION\" = \"{fail_at}\" ] && exit 3\nexit 0\n",
            log.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn scripts_for(script: &Path, dir: &Path) -> criu::ActionScripts {
    let sink = criu::LogSink::open(None).unwrap();
    criu::ActionScripts::new(vec![script.to_path_buf()], dir, &sink).unwrap()
}

#[test]
fn action_scripts_run_at_each_stage_and_abort_on_failure() {
    skip_if_not_root!("action_scripts_run_at_each_stage_and_abort_on_failure");
    let _g = test_lock();
    become_subreaper();
    let Some(_bin) = fixture_usable() else {
        return;
    };
    let dir = fixtures_dir().join("single");
    let t = tempfile::tempdir().unwrap();
    let log = t.path().join("stages");

    // A failing pre-restore aborts before anything is created.
    let s = scripts_for(&hook_script(t.path(), &log, "pre-restore"), &dir);
    let err = restore(&detached(&dir), Some(&s)).unwrap_err();
    assert!(err.to_string().contains("pre-restore"), "{err}");
    assert_eq!(fs::read_to_string(&log).unwrap(), "pre-restore none\n");
    assert!(!pid_exists(SINGLE_PID));

    // A failing post-restore kills the restored task.
    fs::remove_file(&log).unwrap();
    let s = scripts_for(&hook_script(t.path(), &log, "post-restore"), &dir);
    let err = restore(&detached(&dir), Some(&s)).unwrap_err();
    assert!(err.to_string().contains("post-restore"), "{err}");
    assert_eq!(
        fs::read_to_string(&log).unwrap(),
        format!("pre-restore none\npost-restore {SINGLE_PID}\n")
    );
    assert!(!pid_exists(SINGLE_PID), "the task was left behind");

    // All stages, in order, with the restored pid.
    fs::remove_file(&log).unwrap();
    let s = scripts_for(&hook_script(t.path(), &log, "never"), &dir);
    let out = restore(&detached(&dir), Some(&s)).unwrap();
    let task = Spawned::guard(SINGLE_PID);
    assert_eq!(out, RestoreOutcome::Detached { pid: SINGLE_PID });
    assert_eq!(
        fs::read_to_string(&log).unwrap(),
        format!(
            "pre-restore none\npost-restore {p}\npre-resume {p}\npost-resume {p}\n",
            p = SINGLE_PID
        )
    );
    assert_eq!(
        wait_state(task.pid(), "S", Duration::from_secs(5)),
        Some('S')
    );
    drop(task);
}

#[test]
fn cli_restore_of_the_fixture_and_a_failing_pre_restore_script() {
    skip_if_not_root!("cli_restore_of_the_fixture_and_a_failing_pre_restore_script");
    let _g = test_lock();
    become_subreaper();
    let Some(_bin) = fixture_usable() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let dir = fixtures_dir().join("single");
    let log = t.path().join("stages");
    let hook = hook_script(t.path(), &log, "pre-restore");
    let o = run_criu(
        &[
            &[
                "restore",
                "-d",
                "-D",
                dir.to_str().unwrap(),
                "-W",
                t.path().to_str().unwrap(),
                "--action-script",
                hook.to_str().unwrap(),
            ],
            fixture_cpu_cap(),
        ]
        .concat(),
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("pre-restore"), "{err}");
    assert!(!pid_exists(SINGLE_PID));

    let o = run_criu(
        &[
            &[
                "restore",
                "-d",
                "-D",
                dir.to_str().unwrap(),
                "-W",
                t.path().to_str().unwrap(),
                "-o",
                "restore.log",
                "-v4",
            ],
            fixture_cpu_cap(),
        ]
        .concat(),
    );
    assert_ok(&o, "criu restore -d of the fixture");
    let task = Spawned::guard(SINGLE_PID);
    assert_eq!(
        wait_state(task.pid(), "S", Duration::from_secs(5)),
        Some('S')
    );
    assert_eq!(hex_field(task.pid(), "SigBlk:"), 1 << (libc::SIGHUP - 1));
    let rlog = fs::read_to_string(t.path().join("restore.log")).unwrap();
    assert!(rlog.contains("tree resumed"), "{rlog}");
    drop(task);
}
