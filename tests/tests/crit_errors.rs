//! `crit` on bad input: one line on stderr naming the file and the offset (or JSON location),
//! exit status 1, never a panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use compel_criu_tests::workspace_bin;

const IMG_COMMON: u32 = 0x5456_4319;
const PSTREE: u32 = 0x5027_3030;

fn crit(args: &[&str]) -> Output {
    Command::new(workspace_bin("crit", "crit"))
        .args(args)
        .output()
        .expect("spawn crit")
}

fn image(words: &[u32], tail: &[u8]) -> Vec<u8> {
    let mut v: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    v.extend_from_slice(tail);
    v
}

/// Runs crit on `file`, which must fail cleanly with a message containing every `want`.
fn fails(args: &[&str], file: &Path, want: &[&str]) {
    let o = crit(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(1),
        "crit {args:?}: status {:?}, stderr {err}",
        o.status
    );
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
    assert!(
        err.contains(file.to_str().unwrap()),
        "file not named: {err}"
    );
    for w in want {
        assert!(err.contains(w), "{w:?} missing from: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

#[test]
fn corrupt_binary_images() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        ("empty.img", vec![], vec!["offset 0", "truncated magic"]),
        (
            "text.img",
            b"hello, world\n".to_vec(),
            vec!["offset 0", "unknown magic 0x6c6c6568"],
        ),
        (
            "half-magic.img",
            image(&[IMG_COMMON], &[0x30, 0x30]),
            vec!["offset 4", "truncated magic"],
        ),
        (
            "unknown.img",
            image(&[IMG_COMMON, 0x1234_5678], &[]),
            vec!["offset 4", "unknown magic 0x12345678"],
        ),
        (
            "short-size.img",
            image(&[IMG_COMMON, PSTREE], &[5, 0]),
            vec!["offset 8", "truncated entry size"],
        ),
        (
            "short-entry.img",
            image(&[IMG_COMMON, PSTREE, 100], &[8, 1]),
            vec!["offset 8", "truncated entry", "2 of 100"],
        ),
        (
            "bad-varint.img",
            image(&[IMG_COMMON, PSTREE, 2], &[0x08, 0xff]),
            vec!["offset 8", "bad pstree_entry entry"],
        ),
        (
            "wire-type.img",
            image(&[IMG_COMMON, PSTREE, 2], &[0x0d, 0x01]),
            vec!["offset 8", "pstree_entry"],
        ),
        // Only the pid: ppid, pgid and sid are required.
        (
            "missing.img",
            image(&[IMG_COMMON, PSTREE, 2], &[0x08, 0x05]),
            vec!["offset 8", "missing required field"],
        ),
        // A good entry, then a bad one: the offset is the second entry's.
        (
            "second.img",
            image(
                &[IMG_COMMON, PSTREE, 8],
                &[0x08, 1, 0x10, 0, 0x18, 1, 0x20, 1, 3, 0, 0, 0, 0x08],
            ),
            vec!["offset 20", "truncated entry"],
        ),
    ];
    for (name, data, want) in cases {
        let p = write(d, name, &data);
        fails(&["decode", "-i", p.to_str().unwrap()], &p, &want);
        fails(&["show", p.to_str().unwrap()], &p, &want);
        fails(&["info", p.to_str().unwrap()], &p, &want);
    }
    // A raw pages file is not decodable, and says so.
    let p = write(d, "pages-1.img", &[0x17; 4096]);
    fails(
        &["decode", "-i", p.to_str().unwrap()],
        &p,
        &["unknown magic", "pages-N.img"],
    );
    // ... and a pages file that is not whole pages is refused by info.
    let p = write(d, "pages-2.img", &[0x17; 100]);
    fails(
        &["info", p.to_str().unwrap()],
        &p,
        &["offset 0", "not a whole number of pages"],
    );
    // A missing file.
    let p = d.join("nope.img");
    fails(&["decode", "-i", p.to_str().unwrap()], &p, &["cannot read"]);
}

#[test]
fn wrong_json() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let cases: Vec<(&str, &str, Vec<&str>)> = vec![
        (
            "syntax.json",
            "{\"magic\": \"PSTREE\",\n \"entries\": [}",
            vec!["line 2", "invalid JSON"],
        ),
        ("binary.json", "\u{1}\u{2}", vec!["line 1", "invalid JSON"]),
        ("nomagic.json", r#"{"entries": []}"#, vec!["magic: missing"]),
        (
            "badmagic.json",
            r#"{"magic": "NOPE", "entries": []}"#,
            vec!["magic", "unknown image magic \"NOPE\""],
        ),
        (
            "entries.json",
            r#"{"magic": "PSTREE", "entries": 3}"#,
            vec!["entries: missing or not a list"],
        ),
        (
            "required.json",
            r#"{"magic": "PSTREE", "entries": [{"pid": 1, "ppid": 0, "pgid": 1}]}"#,
            vec!["entries[0].sid", "missing required field"],
        ),
        (
            "unknown-field.json",
            r#"{"magic": "FS", "entries": [{"cwd_id": 1, "root_id": 2, "colour": 3}]}"#,
            vec!["entries[0].colour", "unknown field"],
        ),
        (
            "range.json",
            r#"{"magic": "FS", "entries": [{"cwd_id": 4294967296, "root_id": 2}]}"#,
            vec!["entries[0].cwd_id", "out of range"],
        ),
        (
            "flag.json",
            r#"{"magic": "PAGEMAP", "entries": [{"pages_id": 1}, {"vaddr": "0x1000", "compat_nr_pages": 0, "flags": "PE_SHINY"}]}"#,
            vec!["entries[1].flags", "unknown flag \"PE_SHINY\""],
        ),
        (
            "enum.json",
            r#"{"magic": "FDINFO", "entries": [{"id": 1, "flags": 0, "type": "SOCKS", "fd": 0}]}"#,
            vec!["entries[0].type", "not a value of enum fd_types"],
        ),
        (
            "base64.json",
            r#"{"magic": "PIPES_DATA", "entries": [{"pipe_id": 1, "bytes": 1, "extra": "A"}]}"#,
            vec!["entries[0].extra", "base64"],
        ),
        (
            "list.json",
            r#"{"magic": "PSTREE", "entries": [{"pid": 1, "ppid": 0, "pgid": 1, "sid": 1, "threads": 1}]}"#,
            vec!["entries[0].threads", "expected a list"],
        ),
    ];
    for (name, text, want) in cases {
        let p = write(d, name, text.as_bytes());
        fails(
            &[
                "encode",
                "-i",
                p.to_str().unwrap(),
                "-o",
                d.join("out.img").to_str().unwrap(),
            ],
            &p,
            &want,
        );
    }
}

#[test]
fn fixture_bytes_cut_anywhere_fail_cleanly() {
    let dir = compel_criu_tests::fixtures_dir().join("single");
    let t = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(dir.join("core-12791.img")).unwrap();
    // Every cut inside the header, the size or the single entry is an error naming an offset.
    for cut in [1, 4, 7, 9, 12, 100, bytes.len() - 1] {
        let p = write(t.path(), "core-cut.img", &bytes[..cut]);
        fails(
            &["decode", "--pretty", "-i", p.to_str().unwrap()],
            &p,
            &["offset"],
        );
    }
}
