//! `--unprivileged` (criu(8)): criu run as a non-root user whose only capability is
//! CAP_CHECKPOINT_RESTORE (ambient, through `setpriv`) dumps that user's own counter and
//! restores it, and it counts on; without `--unprivileged`, or without the capability, criu
//! refuses by name before touching anything.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use compel_criu_tests::{
    Spawned, become_subreaper, criu_bin, criu_victim, have_setpriv, make_world_executable,
    pid_exists, skip_if_not_root, spawn_counter, test_lock, unprivileged_scratch,
    wait_exit_timeout,
};

const NOBODY: u32 = 65534;

/// criu ARGS as uid/gid `NOBODY`, with CAP_CHECKPOINT_RESTORE (ambient) if `cap`.
fn criu_as_nobody(args: &[&str], cap: bool) -> Output {
    let bin = criu_bin();
    make_world_executable(&bin).unwrap();
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid",
        &NOBODY.to_string(),
        "--regid",
        &NOBODY.to_string(),
        "--clear-groups",
    ]);
    if cap {
        c.args([
            "--inh-caps=-all,+checkpoint_restore",
            "--ambient-caps=+checkpoint_restore",
        ]);
    } else {
        c.arg("--inh-caps=-all");
    }
    c.arg("--").arg(&bin).args(args);
    // Its own home: root's is not readable to it (criu reads ~/.criu/default.conf).
    c.env("HOME", "/nonexistent");
    c.stdin(std::process::Stdio::null()).output().unwrap()
}

fn count(d: &Path) -> usize {
    std::fs::read_to_string(d.join("count"))
        .unwrap_or_default()
        .lines()
        .count()
}

#[test]
fn without_the_flag_or_the_capability_criu_refuses_by_name() {
    skip_if_not_root!("without_the_flag_or_the_capability_criu_refuses_by_name");
    if !have_setpriv() {
        eprintln!("skipped: no setpriv");
        return;
    }
    let t = unprivileged_scratch();
    let img = t.path().join("img");
    let img = img.to_str().unwrap();
    let o = criu_as_nobody(&["dump", "-t", "1", "-D", img], true);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("requires --unprivileged"), "{err}");
    let o = criu_as_nobody(&["restore", "-D", img, "--unprivileged"], false);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("CAP_CHECKPOINT_RESTORE"), "{err}");
    assert!(
        std::fs::read_dir(img).unwrap().next().is_none(),
        "nothing written"
    );
}

#[test]
fn a_user_with_only_checkpoint_restore_dumps_and_restores_its_own_process() {
    skip_if_not_root!("a_user_with_only_checkpoint_restore_dumps_and_restores_its_own_process");
    if !have_setpriv() {
        eprintln!("skipped: no setpriv");
        return;
    }
    let _g = test_lock();
    become_subreaper();
    let t = unprivileged_scratch();
    let d = t.path();
    let img = d.join("img");
    let mut v = spawn_counter(&criu_victim("counter"), d, Some(NOBODY));
    let pid = v.pid();
    let o = criu_as_nobody(
        &[
            "dump",
            "-t",
            &pid.to_string(),
            "-D",
            img.to_str().unwrap(),
            "-o",
            "dump.log",
            "-v4",
            "--unprivileged",
        ],
        true,
    );
    assert!(
        o.status.success(),
        "dump: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        std::fs::read_to_string(img.join("dump.log")).unwrap_or_default()
    );
    assert!(
        wait_exit_timeout(pid, Duration::from_secs(5))
            .unwrap()
            .is_some()
    );
    v.mark_reaped();
    let before = count(d);
    let o = criu_as_nobody(
        &[
            "restore",
            "-D",
            img.to_str().unwrap(),
            "-o",
            "restore.log",
            "-v4",
            "-d",
            "--unprivileged",
        ],
        true,
    );
    let _r = Spawned::guard(pid);
    assert!(
        o.status.success(),
        "restore: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        std::fs::read_to_string(img.join("restore.log")).unwrap_or_default()
    );
    assert!(pid_exists(pid));
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(st.contains(&format!("Uid:\t{NOBODY}\t{NOBODY}")), "{st}");
    std::thread::sleep(Duration::from_millis(200));
    assert!(count(d) > before, "the counter did not count on");
}
