//! The .deb (`make deb`) passes `lintian` without errors: stripped binaries and libraries, the
//! libraries with a SONAME and mode 0644, an ldconfig trigger, a copyright file and a
//! changelog; and it carries the zsh and fish completions beside the bash ones.

use std::path::{Path, PathBuf};
use std::process::Command;

use compel_criu_tests::bin_dir;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn make(args: &[&str]) -> String {
    let profile = bin_dir()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    run(Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(root())
        .arg(format!("PROFILE={profile}"))
        .args(args)
        .env("CARGO_TARGET_DIR", bin_dir().parent().unwrap())
        .env_remove("MAKEFLAGS"))
}

#[test]
fn the_deb_passes_lintian_without_errors() {
    make(&[]);
    let deb = bin_dir().parent().unwrap().join(format!(
        "compel-criu_{}_amd64.deb",
        env!("CARGO_PKG_VERSION")
    ));
    let _ = std::fs::remove_file(&deb);
    make(&["deb", "DEB_FLAGS=-Zgzip -z1"]);
    let files = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    for f in [
        "./usr/share/zsh/vendor-completions/_criu",
        "./usr/share/zsh/vendor-completions/_compel",
        "./usr/share/fish/vendor_completions.d/crit.fish",
        "./usr/share/bash-completion/completions/criu",
        "./usr/share/doc/compel-criu/copyright",
        "./usr/share/doc/compel-criu/changelog.gz",
    ] {
        assert!(files.contains(f), "{f} missing:\n{files}");
    }
    for lib in ["libcompel.so", "libcriu.so", "libsoccr.so"] {
        let line = files
            .lines()
            .find(|l| l.ends_with(&format!("/usr/lib/{lib}")))
            .unwrap_or_else(|| panic!("{lib} missing"));
        assert!(line.starts_with("-rw-r--r--"), "{line}");
    }
    if Command::new("lintian").arg("--version").output().is_err() {
        eprintln!("lintian checks skipped: no lintian");
        let _ = std::fs::remove_file(&deb);
        return;
    }
    let out = Command::new("lintian")
        .args(["--tag-display-limit", "0"])
        .arg(&deb)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let _ = std::fs::remove_file(&deb);
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{text}");
}
