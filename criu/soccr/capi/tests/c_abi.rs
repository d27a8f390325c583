//! libsoccr's C ABI: a C program written against CRIU's libsoccr API, built with gcc against our
//! soccr.h and linked once with libsoccr.a and once with libsoccr.so, moves a live connection
//! (in a network namespace of its own).

use std::path::{Path, PathBuf};
use std::process::Command;

/// target/<profile>, where cargo puts libsoccr.a and libsoccr.so.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "libsoccr"])
        .env("CARGO_TARGET_DIR", dir.parent().unwrap())
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if dir.file_name().and_then(|p| p.to_str()) == Some("release") {
        cmd.arg("--release");
    }
    run(&mut cmd);
    assert!(dir.join("libsoccr.a").exists() && dir.join("libsoccr.so").exists());
    dir
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn gcc(work: &Path, out: &str, link: &[&str]) -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let exe = work.join(out);
    run(Command::new("gcc")
        .args(["-O2", "-Wall", "-Werror", "-I"])
        .arg(manifest.join("../include"))
        .arg("-o")
        .arg(&exe)
        .arg(manifest.join("tests/c/migrate.c"))
        .args(link));
    exe
}

#[test]
fn c_program_moves_a_connection_with_the_static_and_the_shared_library() {
    let lib = lib_dir();
    let work = tempfile::tempdir().unwrap();
    let a = lib.join("libsoccr.a");
    let st = gcc(
        work.path(),
        "migrate-static",
        &[a.to_str().unwrap(), "-lpthread", "-ldl", "-lm", "-lgcc_s"],
    );
    let l = format!("-L{}", lib.display());
    let rpath = format!("-Wl,-rpath,{}", lib.display());
    let dy = gcc(work.path(), "migrate-shared", &[&l, "-lsoccr", &rpath]);
    for exe in [st, dy] {
        assert_eq!(run(&mut Command::new(&exe)), "ok\n", "{}", exe.display());
    }
    let ldd = run(Command::new("ldd").arg(work.path().join("migrate-shared")));
    assert!(ldd.contains("libsoccr.so"), "{ldd}");
}
