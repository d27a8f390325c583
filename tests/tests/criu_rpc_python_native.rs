//! pycriu with its PyO3 image module (`pycriu._images`, crate `pycriu-native`): a Python
//! script (`tests/py/pycriu_images_client.py`) dumps a counting victim over RPC, reads its
//! images with `pycriu.images` (pid, command name, entry counts; every image re-encoded to the
//! same bytes; garbage refused with `MagicException`), and restores it; the victim counts on.
//! The module is built with cargo (`cargo build -p pycriu-native`, what maturin runs) and put
//! beside the package's Python files, as `pip install` would.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use compel_criu_tests::{
    Exit, Spawned, become_subreaper, bin_dir, criu_bin, open_dir, spawn_counter, test_lock,
    wait_exit_timeout,
};

/// `pycriu/` with the Python files and the freshly built native module, in `into`.
fn assemble_package(into: &Path) -> PathBuf {
    let dir = bin_dir();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "pycriu-native"])
        .env("CARGO_TARGET_DIR", dir.parent().unwrap())
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if dir.file_name().and_then(|p| p.to_str()) == Some("release") {
        cmd.arg("--release");
    }
    assert!(cmd.status().unwrap().success(), "building pycriu-native");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../criu/pycriu/pycriu");
    let pkg = into.join("pycriu");
    std::fs::create_dir(&pkg).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "py") {
            std::fs::copy(&p, pkg.join(p.file_name().unwrap())).unwrap();
        }
    }
    std::fs::copy(dir.join("lib_images.so"), pkg.join("_images.abi3.so")).unwrap();
    into.to_path_buf()
}

#[test]
fn a_python_script_dumps_reads_the_images_natively_and_restores() {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("skipped: no python3");
        return;
    }
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let py = tempfile::tempdir().unwrap();
    let path = assemble_package(py.path());
    let img = d.path().join("img");
    std::fs::create_dir(&img).unwrap();
    let out = d.path().join("count");
    let mut v = spawn_counter(env!("CARGO_BIN_EXE_criu-victim-counter"), d.path(), None);

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new("python3")
        .arg(root.join("py/pycriu_images_client.py"))
        .arg(criu_bin())
        .arg(&img)
        .arg(v.pid().to_string())
        .env("PYTHONPATH", &path)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut text = String::new();
    while !text.lines().any(|l| l.starts_with("garbage ")) {
        if stdout.read_line(&mut text).unwrap() == 0 {
            break;
        }
    }
    if text.lines().any(|l| l == "dumped") {
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
    let want = [
        "native True".to_string(),
        "dumped".to_string(),
        format!("pstree PSTREE pid {}", v.pid()),
        // The victim's name, as the kernel cuts it (15 bytes).
        "comm criu-victim-cou".to_string(),
        "inventory count 1".to_string(),
        "garbage refused".to_string(),
        format!("restored {}", v.pid()),
    ];
    for w in &want {
        assert!(lines.contains(&w.as_str()), "missing {w:?}\n{logs}");
    }
    let n: usize = lines
        .iter()
        .find_map(|l| l.strip_prefix("re-encoded "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(n >= 8, "only {n} images re-encoded\n{logs}");
    let before = std::fs::read_to_string(&out).unwrap().lines().count();
    std::thread::sleep(Duration::from_millis(200));
    let after = std::fs::read_to_string(&out).unwrap().lines().count();
    assert!(
        after > before + 5,
        "not counting after restore: {before} -> {after}"
    );
    drop(restored);
}
