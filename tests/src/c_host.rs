//! Building C hosts against our libcompel, as a C user of CRIU's compel would: our `compel`
//! binary for the flags, `libcompel.a` built beside it, gcc for the program.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{bin_dir, workspace_bin};

/// Runs `cmd`, panics with its output unless it succeeds, and returns its stdout.
///
/// # Panics
/// If the command cannot be started or fails.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({:?}):\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Our `compel` binary, with libcompel.a built next to it (what `compel --static libs` names).
///
/// # Panics
/// If building libcompel fails.
pub fn compel_with_libcompel() -> PathBuf {
    let bin = workspace_bin("compel-cli", "compel");
    let dir = bin_dir();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "libcompel"])
        .env("CARGO_TARGET_DIR", dir.parent().expect("a target dir"))
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if dir.file_name().and_then(|p| p.to_str()) == Some("release") {
        cmd.arg("--release");
    }
    run_ok(&mut cmd);
    assert!(
        dir.join("libcompel.a").exists(),
        "libcompel.a was not built"
    );
    bin
}

/// Compiles the C program `text` as `dir/name` with gcc against our headers and static
/// libcompel (`-O2 -Wall -Werror`).
///
/// # Panics
/// If writing the source or compiling fails.
pub fn build_c_host(dir: &Path, name: &str, text: &str) -> PathBuf {
    let compel = compel_with_libcompel();
    std::fs::create_dir_all(dir).expect("create the build directory");
    let c = dir.join(format!("{name}.c"));
    std::fs::write(&c, text).expect("write the C source");
    let includes = run_ok(Command::new(&compel).arg("includes"));
    let libs = run_ok(Command::new(&compel).args(["--static", "libs"]));
    let out = dir.join(name);
    run_ok(
        Command::new("gcc")
            .args(["-O2", "-Wall", "-Werror"])
            .args(includes.split_whitespace())
            .arg("-o")
            .arg(&out)
            .arg(&c)
            .args(libs.split_whitespace()),
    );
    out
}

/// Builds libcriu (same profile and target dir as the running test) and returns its directory.
///
/// # Panics
/// If the build fails.
pub fn build_libcriu() -> PathBuf {
    let dir = bin_dir();
    let target = dir.parent().expect("a target dir").to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "libcriu"])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if dir.file_name().and_then(|p| p.to_str()) == Some("release") {
        cmd.arg("--release");
    }
    run_ok(&mut cmd);
    assert!(dir.join("libcriu.so").exists(), "libcriu.so was not built");
    dir
}

/// Compiles `tests/c/NAME.c` (a client of CRIU's libcriu interface) as `work/NAME` with gcc
/// against our `criu.h`, linked with our libcriu.so.
///
/// # Panics
/// If building libcriu or compiling fails.
pub fn build_libcriu_client(work: &Path, name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = build_libcriu();
    let include = root.join("../criu/libcriu/include");
    let exe = work.join(name);
    run_ok(
        Command::new("gcc")
            .args(["-Wall", "-Werror"])
            .arg(format!("-I{}", include.display()))
            .arg(root.join(format!("c/{name}.c")))
            .arg("-o")
            .arg(&exe)
            .arg(format!("-L{}", lib.display()))
            .arg("-lcriu")
            .arg(format!("-Wl,-rpath,{}", lib.display())),
    );
    exe
}
