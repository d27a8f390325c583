//! `crit` end to end on the images CRIU 4.2 wrote for the fixture programs
//! (shared/fixtures/criu-4.2): its JSON is CRIU crit's, character for character; encoding gives
//! the images back byte for byte; `info` and `x` describe what the programs are.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use compel_criu_tests::workspace_bin;

fn crit() -> PathBuf {
    workspace_bin("crit", "crit")
}

fn fixtures() -> PathBuf {
    compel_criu_tests::fixtures_dir()
}

fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(crit())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn crit");
    let mut input = child.stdin.take().unwrap();
    if let Some(data) = stdin {
        input.write_all(data).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let o = run(args, None);
    assert!(
        o.status.success(),
        "crit {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// `(image path, CRIU crit's pretty JSON path)` for every fixture image that crit decodes.
fn pairs() -> Vec<(PathBuf, PathBuf)> {
    let mut v = Vec::new();
    for set in ["single", "tree"] {
        let dir = fixtures().join(set);
        for e in std::fs::read_dir(dir.join("crit-json")).unwrap() {
            let j = e.unwrap().path();
            let img = dir.join(j.file_stem().unwrap());
            v.push((img, j));
        }
    }
    v.sort();
    assert_eq!(v.len(), 39);
    v
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn decode_pretty_is_criu_crit_output_and_encode_gives_the_image_back() {
    let tmp = tempfile::tempdir().unwrap();
    for (img, json) in pairs() {
        let want = std::fs::read_to_string(&json).unwrap();
        let out = tmp.path().join("out.json");
        ok(&["decode", "--pretty", "-i", s(&img), "-o", s(&out)]);
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            want,
            "decode of {}",
            img.display()
        );
        // show = decode --pretty to stdout, with a final newline.
        assert_eq!(
            ok(&["show", s(&img)]),
            format!("{want}\n"),
            "show of {}",
            img.display()
        );
        // CRIU crit's JSON encodes to the very bytes CRIU wrote.
        let back = tmp.path().join("back.img");
        ok(&["encode", "-i", s(&json), "-o", s(&back)]);
        assert_eq!(
            std::fs::read(&back).unwrap(),
            std::fs::read(&img).unwrap(),
            "encode of {}",
            json.display()
        );
    }
}

#[test]
fn plain_decode_pipes_into_encode() {
    for (img, _) in pairs() {
        let bytes = std::fs::read(&img).unwrap();
        let dec = run(&["decode"], Some(&bytes));
        assert!(
            dec.status.success(),
            "{}",
            String::from_utf8_lossy(&dec.stderr)
        );
        // Non-pretty output is one line, as Python's json.dump without indent.
        assert_eq!(dec.stdout.iter().filter(|&&b| b == b'\n').count(), 1);
        let enc = run(&["encode"], Some(&dec.stdout));
        assert!(
            enc.status.success(),
            "{}",
            String::from_utf8_lossy(&enc.stderr)
        );
        assert_eq!(
            enc.stdout,
            bytes,
            "stdin/stdout round trip of {}",
            img.display()
        );
    }
}

#[test]
fn info_counts_entries_and_pages() {
    for (img, json) in pairs() {
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let info: serde_json::Value = serde_json::from_str(&ok(&["info", s(&img)])).unwrap();
        let mut n = doc["entries"].as_array().unwrap().len();
        if doc["magic"] == "PAGEMAP" {
            n -= 1; // the head is not counted
        }
        assert_eq!(
            info,
            serde_json::json!({"magic": doc["magic"], "count": n}),
            "{}",
            img.display()
        );
    }
    let pages = fixtures().join("single/pages-1.img");
    let info: serde_json::Value = serde_json::from_str(&ok(&["info", s(&pages)])).unwrap();
    let size = std::fs::metadata(&pages).unwrap().len();
    assert_eq!(
        info,
        serde_json::json!({"magic": "PAGES", "count": size / 4096, "size": size})
    );
}

#[test]
fn show_nopl_hides_payloads_but_not_entries() {
    let tmp = tempfile::tempdir().unwrap();
    // A pipe-data image with a 5-byte payload, made with encode.
    let json = tmp.path().join("pd.json");
    std::fs::write(&json, r#"{"magic": "PIPES_DATA", "entries": [{"pipe_id": 7, "bytes": 5, "extra": "aGVsbG8=\n"}]}"#)
        .unwrap();
    let img = tmp.path().join("pipes-data.img");
    ok(&["encode", "-i", s(&json), "-o", s(&img)]);
    let bytes = std::fs::read(&img).unwrap();
    assert!(bytes.ends_with(b"hello"));
    let full: serde_json::Value = serde_json::from_str(&ok(&["show", s(&img)])).unwrap();
    assert_eq!(full["entries"][0]["extra"], "aGVsbG8=\n");
    let nopl: serde_json::Value = serde_json::from_str(&ok(&["show", "--nopl", s(&img)])).unwrap();
    assert_eq!(nopl["entries"][0]["extra"], "... <5B>");
    assert_eq!(nopl["entries"][0]["pipe_id"], 7);
}

#[test]
fn x_ps_shows_the_process_trees() {
    let single = ok(&["x", s(&fixtures().join("single")), "ps"]);
    assert_eq!(
        single,
        "    PID   PGID    SID   COMM\n  12791  12791  12791   single\n"
    );
    // tree.c: a session leader and two children, the second in its own process group.
    let tree = ok(&["x", s(&fixtures().join("tree")), "ps"]);
    let lines: Vec<&str> = tree.lines().collect();
    assert_eq!(lines.len(), 4, "{tree}");
    let rows: Vec<Vec<&str>> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let leader = rows[0][0];
    assert_eq!(rows[0], [leader, leader, leader, "tree"]);
    assert!(
        lines[2].ends_with("       tree") && lines[3].ends_with("       tree"),
        "children are indented: {tree}"
    );
    assert_eq!(
        rows[1][1], leader,
        "first child stays in the leader's group"
    );
    assert_eq!(rows[2][1], rows[2][0], "second child leads its own group");
    assert!(
        rows[1..].iter().all(|r| r[2] == leader),
        "all in the leader's session"
    );
}

#[test]
fn x_fds_shows_open_files() {
    let out = ok(&["x", s(&fixtures().join("single")), "fds"]);
    // single.c opens /etc/hostname (fd 3 after stdio); cwd and root were /tmp/fx and /.
    assert!(out.starts_with("12791\n"), "{out}");
    assert!(out.contains("\t      3: /etc/hostname\n"), "{out}");
    assert!(out.contains("\t      0: /dev/null\n"), "{out}");
    assert!(out.contains("\t    cwd: /tmp/fx\n"), "{out}");
    assert!(out.contains("\t   root: /\n"), "{out}");
    assert!(out.lines().any(|l| l.contains(": pipe[")), "{out}");
}

#[test]
fn x_mems_shows_the_memory_maps() {
    let out = ok(&["x", s(&fixtures().join("single")), "mems"]);
    assert!(
        out.contains("\texe                                     /tmp/fx/single\n"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("r-x /usr/lib/x86_64-linux-gnu/libc.so.6 + 0x")),
        "{out}"
    );
    // CRIU 4.2 marks the main stack by MAP_GROWSDOWN only, which crit shows as "[stack?]".
    assert!(out.lines().any(|l| l.ends_with("rw- [stack?]")), "{out}");
    assert!(
        out.lines().any(|l| l.ends_with("--x [vsyscall] *")),
        "{out}"
    );
    assert!(out.lines().any(|l| l.ends_with(" [vdso]")), "{out}");
    // The 3-page anonymous mapping with a PROT_NONE page in the middle: rw-, then a one-page ---,
    // then rw- (the last part may merge with a neighbouring anonymous area).
    let areas: Vec<(u64, u64, String)> = out
        .lines()
        .filter_map(|l| {
            let l = l.trim_start_matches('\t');
            let (range, rest) = l.split_at(36.min(l.len()));
            let (a, b) = range.trim().split_once('-')?;
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
                rest.to_string(),
            ))
        })
        .collect();
    assert!(
        areas.windows(3).any(|w| w[0].2 == "rw-"
            && w[1].2 == "---"
            && w[2].2 == "rw-"
            && w[1].1 - w[1].0 == 4096
            && w[0].1 == w[1].0
            && w[1].1 == w[2].0),
        "{out}"
    );
    // tree.c: the MAP_SHARED anonymous page (CRIU 4.2 saves it as a memfd-like shared file
    // mapping, shown "(s)") is at the same address in all three tasks.
    let out = ok(&["x", s(&fixtures().join("tree")), "mems"]);
    let shm: Vec<&str> = out.lines().filter(|l| l.ends_with(" (s)")).collect();
    assert_eq!(shm.len(), 3, "{out}");
    let first = shm[0].split_whitespace().next().unwrap();
    assert!(
        shm.iter().all(|l| l.contains("rw-") && l.contains(first)),
        "{out}"
    );
    let range: Vec<u64> = first
        .split('-')
        .map(|x| u64::from_str_radix(x, 16).unwrap())
        .collect();
    assert_eq!(range[1] - range[0], 4096);
}

#[test]
fn x_rss_lists_saved_pages_against_areas() {
    let out = ok(&["x", s(&fixtures().join("single")), "rss"]);
    let mm = ok(&["x", s(&fixtures().join("single")), "mems"]);
    assert!(out.starts_with("12791\n"), "{out}");
    // Every page run line names its start and page count; together they are the 46 pages saved.
    let runs: Vec<u64> = out
        .lines()
        .filter_map(|l| l.strip_prefix('\t'))
        .filter(|l| !l.starts_with(' '))
        .map(|l| {
            l.split(" / ")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(runs.iter().sum::<u64>(), 46, "{out}");
    assert_eq!(runs.len(), 12);
    // The binary's data pages are shown against its file mapping.
    assert!(out.contains("/tmp/fx/single"), "{out}");
    assert!(mm.contains("/tmp/fx/single"));
}
