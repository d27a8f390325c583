//! `criu restore --exec-cmd -- CMD ARGS...` on the command line, as criu(8) has it: once the
//! tree runs, criu becomes the command (same pid), so the restored root is the command's child;
//! and the misuses criu(8) refuses (another command, no command, with `--restore-detached`)
//! are refused before anything is restored.

use std::time::Duration;

use compel_criu_tests::{
    Exit, Spawned, assert_ok, become_subreaper, counts_on, criu, criu_bin, criu_dump, open_dir,
    skip_if_not_root, spawn_counter, test_lock, wait_exit_timeout,
};

const COUNTER: &str = env!("CARGO_BIN_EXE_criu-victim-counter");

#[test]
fn exec_cmd_makes_criu_the_command_and_the_restored_root_its_child() {
    skip_if_not_root!("exec_cmd_makes_criu_the_command_and_the_restored_root_its_child");
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let img = d.path().join("img");
    std::fs::create_dir(&img).unwrap();
    let mut v = spawn_counter(COUNTER, d.path(), None);
    assert_ok(&criu_dump(v.pid(), &img, &[]), "criu dump");
    assert_eq!(
        wait_exit_timeout(v.pid(), Duration::from_secs(5)),
        Ok(Some(Exit::Signal(libc::SIGKILL)))
    );
    v.mark_reaped();
    // The command says who it is and whose parent, then exits 7: criu's own exit status.
    let said = d.path().join("said");
    let script = format!(
        "echo \"$$ $(cat /proc/$$/task/$$/children)\" > {}; exit 7",
        said.display()
    );
    let mut c = std::process::Command::new(criu_bin())
        .args(["restore", "-D"])
        .arg(&img)
        .args(["-o", "restore.log", "--exec-cmd", "--", "sh", "-c", &script])
        .spawn()
        .unwrap();
    let criu_pid = c.id() as i32;
    let status = c.wait().unwrap();
    let restored = Spawned::guard(v.pid());
    assert_eq!(status.code(), Some(7), "criu did not become the command");
    // "PID CHILDREN..." (the children include the `cat` of the command substitution).
    let said = std::fs::read_to_string(&said).unwrap();
    let words: Vec<&str> = said.split_whitespace().collect();
    assert_eq!(words.first(), Some(&&*criu_pid.to_string()), "{said}");
    assert!(
        words[1..].contains(&&*v.pid().to_string()),
        "the restored root {} is not the command's child: {said}",
        v.pid()
    );
    assert!(counts_on(d.path()), "the restored counter does not count");
    drop(restored);
}

#[test]
fn exec_cmd_misuses_are_refused_as_criu_refuses_them() {
    let d = open_dir();
    let dir = d.path().to_str().unwrap();
    for (args, says) in [
        (
            vec!["dump", "-t", "1", "-D", dir, "--exec-cmd", "--", "true"],
            "available for the restore command only",
        ),
        (
            vec!["restore", "-D", dir, "--exec-cmd"],
            "requires a command",
        ),
        (
            vec!["restore", "-D", dir, "-d", "--exec-cmd", "--", "true"],
            "--restore-detached cannot be used together",
        ),
        // Words after the command without --exec-cmd stay an error.
        (
            vec!["restore", "-D", dir, "--", "true"],
            "excessive parameter",
        ),
    ] {
        let o = criu(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
