//! The C ABI end to end: a C parasite built only from what `compel cflags/ldflags/plugins` give
//! (through compel-builder's `CSupport`, which those commands print), its header from hgen, and
//! a C host (`tests/c/host.c`) built against `compel/include/compel.h` and linked with
//! libcompel, which infects a live victim, calls it, takes an fd out, runs a syscall and a
//! command in another thread, and cures it. The victim then checks itself.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use compel_builder::{CSupport, Lang, Sources, Toolchain, hgen_file};
use compel_criu_tests::{Exit, Victim, become_subreaper, bin_dir, test_lock, wait_state};

const T: Duration = Duration::from_secs(10);

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds libcompel (same profile and target dir as this test) and returns its directory.
fn build_libcompel() -> PathBuf {
    let dir = bin_dir();
    let target = dir.parent().unwrap().to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "libcompel"])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if dir.file_name().and_then(|p| p.to_str()) == Some("release") {
        cmd.arg("--release");
    }
    run(&mut cmd);
    assert!(dir.join("libcompel.so").exists());
    dir
}

fn build_host(work: &Path) -> PathBuf {
    let c = Path::new(env!("CARGO_MANIFEST_DIR")).join("c");
    let support = CSupport::ensure(
        &Toolchain::from_env(),
        &Sources::from_workspace(),
        &work.join("cache"),
    )
    .unwrap();
    run(Command::new("gcc")
        .args(support.cflags())
        .args(["-Wall", "-Werror", "-c"])
        .arg(c.join("parasite.c"))
        .arg("-o")
        .arg(work.join("parasite.o")));
    let plugins = support.plugins(&["std".into(), "fds".into()]).unwrap();
    run(Command::new("ld")
        .args(support.ldflags())
        .arg("-o")
        .arg(work.join("parasite.elf"))
        .arg(work.join("parasite.o"))
        .args(plugins));
    hgen_file(
        &work.join("parasite.elf"),
        &work.join("cpar.h"),
        Lang::C,
        "cpar",
    )
    .unwrap();
    let lib = build_libcompel();
    let include = Sources::from_workspace().include_dir();
    run(Command::new("gcc")
        .args(["-Wall", "-Werror"])
        .arg(format!("-I{}", include.display()))
        .arg(format!("-I{}", work.display()))
        .arg(c.join("host.c"))
        .arg("-o")
        .arg(work.join("host"))
        .arg(format!("-L{}", lib.display()))
        .arg("-lcompel")
        .arg(format!("-Wl,-rpath,{}", lib.display())));
    work.join("host")
}

#[test]
fn c_host_infects_with_a_c_parasite() {
    let _g = test_lock();
    become_subreaper();
    let work = tempfile::tempdir().unwrap();
    let host = build_host(work.path());
    let cwd = tempfile::tempdir().unwrap();
    let mut v = Victim::spawn(
        env!("CARGO_BIN_EXE_victim-infect-state"),
        &[cwd.path().to_str().unwrap()],
    )
    .unwrap();
    let ready = v.expect_line("ready", T).unwrap();
    let f: Vec<&str> = ready.split_whitespace().collect();
    let (pid, pipe_fd) = (f[1], f[3]);
    wait_state(pid.parse().unwrap(), "S", T);
    std::thread::sleep(Duration::from_millis(20));
    let out = Command::new(&host).args([pid, pipe_fd]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "host failed:\n{stdout}{stderr}");
    let cwd = cwd.path().canonicalize().unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("bad pid: "), "{stdout}");
    assert_eq!(
        lines[1..],
        [
            format!("pid {pid} cwd {} double 42", cwd.display()).as_str(),
            "failing command: -1",
            "fd data pipe-data",
            format!("syscall getpid {pid}").as_str(),
            "thread ok out 10",
            "parasite log lines 2",
            "cured",
        ],
        "{stdout}{stderr}"
    );
    v.write_stdin(b"check\n").unwrap();
    let line = v.expect_line("", T).unwrap();
    assert!(line.starts_with("ok check"), "{line}");
    v.write_stdin(b"quit\n").unwrap();
    assert_eq!(v.wait(T), Some(Exit::Code(0)));
}
