//! The `compel` binary's build-time subcommands, run as a user runs them: `hgen` gives the golden
//! output for the committed fixture images, `pack` writes a blob that parses, bad inputs fail
//! with one line and leave no output file, and the C-build helpers print usable flags.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use compel_criu_tests::workspace_bin;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../compel/builder/tests/fixtures")
}

fn compel(args: &[&str]) -> Output {
    Command::new(workspace_bin("compel-cli", "compel"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let o = compel(args);
    assert!(
        o.status.success(),
        "compel {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn hgen_matches_the_golden_outputs() {
    let d = tempfile::tempdir().unwrap();
    for img in ["relocs-pie.elf", "relocs-relr.elf", "relocs-shared.elf"] {
        let input = fixtures().join(img);
        for (ext, lang) in [("rs", "rust"), ("h", "c")] {
            let out = d.path().join(format!("{img}.{ext}"));
            // The goldens use the default C prefix `parasite`; without -p the C prefix comes
            // from the output's file name (as in CRIU's compel).
            let mut args = vec!["hgen", "-f", s(&input), "-o", s(&out), "--lang", lang];
            if lang == "c" {
                args.extend(["-p", "parasite"]);
            }
            ok(&args);
            let golden = fixtures().join(format!("{img}.{ext}.golden"));
            assert_eq!(
                std::fs::read_to_string(&out).unwrap(),
                std::fs::read_to_string(&golden).unwrap(),
                "{img} as {lang}"
            );
        }
    }
}

#[test]
fn pack_writes_a_blob_the_runtime_parses() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("p.blob");
    ok(&[
        "pack",
        "-f",
        s(&fixtures().join("relocs-pie.elf")),
        "-o",
        s(&out),
    ]);
    let bytes = std::fs::read(&out).unwrap();
    let desc = compel_proto::blob::BlobDesc::parse(&bytes).expect("packed blob parses");
    assert!(!desc.image.is_empty());
    assert!(!desc.relocs.is_empty(), "the fixture has relocations");
}

#[test]
fn bad_inputs_fail_in_one_line_and_write_nothing() {
    let d = tempfile::tempdir().unwrap();
    let not_elf = fixtures().join("relocs.S");
    let undefined = fixtures().join("undefined.elf");
    let missing = d.path().join("nope.elf");
    for (cmd, input, want) in [
        ("hgen", &not_elf, "not an ELF file"),
        ("pack", &not_elf, "not an ELF file"),
        ("hgen", &undefined, "undefined symbol `missing_function`"),
        ("pack", &missing, "nope.elf"),
    ] {
        let out = d.path().join(format!("{cmd}.out"));
        let o = compel(&[cmd, "-f", s(input), "-o", s(&out)]);
        assert!(!o.status.success(), "{cmd} {input:?} succeeded");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(want), "{cmd} {input:?}: {err}");
        assert!(!out.exists(), "{cmd} left {out:?} behind");
    }
}

#[test]
fn c_build_helpers_print_flags_that_exist() {
    let cflags = ok(&["cflags"]);
    assert!(
        cflags.contains("-fpie") && cflags.contains("-nostdlib"),
        "{cflags}"
    );
    let includes = ok(&["includes"]);
    let dir = includes.trim().strip_prefix("-I").expect("an -I flag");
    assert!(
        Path::new(dir).join("compel/plugins/std.h").is_file(),
        "{includes}"
    );
    let plugins = ok(&["plugins", "std"]);
    for archive in plugins.split_whitespace() {
        assert!(Path::new(archive).is_file(), "{archive} missing");
    }
    let ldflags = ok(&["ldflags"]);
    assert!(!ldflags.trim().is_empty());
    assert!(ok(&["libs"]).contains("-lcompel"));
}
