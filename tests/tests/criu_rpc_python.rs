//! pycriu end to end: a Python script written against CRIU's pycriu interface
//! (`tests/py/pycriu_client.py`), with our `criu/pycriu` on its path, checks, gets the error a
//! bad dump earns, and dumps and restores a counting victim through our `criu`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use compel_criu_tests::{
    Exit, Spawned, become_subreaper, criu_bin, spawn_counter, test_lock, wait_exit_timeout,
};

#[test]
fn a_python_script_on_pycriu_dumps_and_restores_a_victim() {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("skipped: no python3");
        return;
    }
    let _g = test_lock();
    become_subreaper();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let img = d.path().join("img");
    std::fs::create_dir(&img).unwrap();
    let out = d.path().join("count");
    let mut v = spawn_counter(env!("CARGO_BIN_EXE_criu-victim-counter"), d.path(), None);

    let mut child = Command::new("python3")
        .arg(root.join("py/pycriu_client.py"))
        .arg(criu_bin())
        .arg(&img)
        .arg(v.pid().to_string())
        .env("PYTHONPATH", root.join("../criu/pycriu"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut text = String::new();
    while !text.lines().any(|l| l.starts_with("dumped ")) {
        if stdout.read_line(&mut text).unwrap() == 0 {
            break;
        }
    }
    if text.lines().any(|l| l.starts_with("dumped ")) {
        assert_eq!(
            wait_exit_timeout(v.pid(), Duration::from_secs(5)),
            Ok(Some(Exit::Signal(libc::SIGKILL))),
            "the dump did not kill the victim"
        );
    }
    v.mark_reaped();
    let restored = Spawned::guard(v.pid());
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(b"go\n");
    drop(stdin);
    stdout.read_to_string(&mut text).unwrap();
    let o = child.wait_with_output().unwrap();
    let logs = format!(
        "stdout:\n{text}\nstderr:\n{}\nrestore.log:\n{}",
        String::from_utf8_lossy(&o.stderr),
        std::fs::read_to_string(img.join("restore.log")).unwrap_or_default()
    );
    assert!(o.status.success(), "the script failed\n{logs}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.contains(&"check ok"), "{logs}");
    assert!(lines.contains(&"missing process: DUMP"), "{logs}");
    assert!(lines.contains(&"dumped restored=False"), "{logs}");
    assert!(
        lines.contains(&format!("restored {}", v.pid()).as_str()),
        "{logs}"
    );
    let before = std::fs::read_to_string(&out).unwrap().lines().count();
    std::thread::sleep(Duration::from_millis(200));
    let after = std::fs::read_to_string(&out).unwrap().lines().count();
    assert!(
        after > before + 5,
        "not counting after restore: {before} -> {after}"
    );
    drop(restored);
}
