//! libcriu end to end: a C program written against CRIU's `criu.h` (`tests/c/libcriu_client.c`),
//! built with gcc against our `criu/libcriu/include/criu.h` and linked with our libcriu.so,
//! asks our `criu` for its version and features, gets the errors bad requests earn, and dumps
//! and restores a counting victim with notifications going to its callback.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use compel_criu_tests::c_host::build_libcriu_client;
use compel_criu_tests::{
    Exit, Spawned, become_subreaper, criu_bin, test_lock, wait_exit_timeout, wait_file,
};

#[test]
fn a_c_program_on_libcriu_dumps_and_restores_a_victim() {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let client = build_libcriu_client(d.path(), "libcriu_client");
    let img = d.path().join("img");
    std::fs::create_dir(&img).unwrap();
    let out = d.path().join("count");
    let ready = d.path().join("ready");
    let mut v = Spawned::spawn(
        env!("CARGO_BIN_EXE_criu-victim-counter"),
        &[out.to_str().unwrap(), ready.to_str().unwrap()],
        &d.path().join("victim.log"),
        None,
    );
    wait_file(&ready, Duration::from_secs(10));

    let mut child = Command::new(&client)
        .arg(criu_bin())
        .arg(&img)
        .arg(v.pid().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut text = String::new();
    // Up to the dump's result: then the victim is dead and must be reaped before its pid can
    // come back.
    while !text.lines().any(|l| l.starts_with("dumped ")) {
        if stdout.read_line(&mut text).unwrap() == 0 {
            break;
        }
    }
    if text.lines().any(|l| l == "dumped 0") {
        assert_eq!(
            wait_exit_timeout(v.pid(), Duration::from_secs(5)),
            Ok(Some(Exit::Signal(libc::SIGKILL))),
            "the dump did not kill the victim"
        );
    }
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(b"go\n");
    drop(stdin);
    stdout.read_to_string(&mut text).unwrap();
    let o = child.wait_with_output().unwrap();
    let logs = || {
        format!(
            "stdout:\n{text}\nstderr:\n{}\ndump.log:\n{}\nrestore.log:\n{}",
            String::from_utf8_lossy(&o.stderr),
            std::fs::read_to_string(img.join("dump.log")).unwrap_or_default(),
            std::fs::read_to_string(img.join("restore.log")).unwrap_or_default()
        )
    };
    // The dump killed the victim; whatever restore brought back is reaped by this guard.
    v.mark_reaped();
    let restored = Spawned::guard(v.pid());
    assert!(o.status.success(), "the C client failed\n{}", logs());
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.contains(&"version 40200"), "{}", logs());
    assert!(lines.contains(&"at least 4.2: 1"), "{}", logs());
    assert!(lines.contains(&"features 0 mem_track 1"), "{}", logs());
    assert!(
        lines.contains(
            &format!(
                "dump without images dir {} errno {}",
                -libc::EBADE,
                libc::EBADRQC
            )
            .as_str()
        ),
        "{}",
        logs()
    );
    assert!(
        lines.contains(&format!("unreachable service {}", -libc::ECONNREFUSED).as_str()),
        "{}",
        logs()
    );
    let pre = lines.iter().position(|l| l.starts_with("notify pre-dump "));
    let post = lines
        .iter()
        .position(|l| l.starts_with("notify post-dump "));
    assert!(pre.is_some() && post > pre, "{}", logs());
    assert!(lines.contains(&"dumped 0"), "{}", logs());
    assert!(
        lines.iter().any(|l| l.starts_with("notify post-restore ")),
        "{}",
        logs()
    );
    assert!(
        lines.contains(&format!("restored {}", v.pid()).as_str()),
        "{}",
        logs()
    );
    // The restored victim counts on.
    let before = std::fs::read_to_string(&out).unwrap().lines().count();
    std::thread::sleep(Duration::from_millis(200));
    let after = std::fs::read_to_string(&out).unwrap().lines().count();
    assert!(
        after > before + 5,
        "not counting after restore: {before} -> {after}"
    );
    drop(restored);
}
