//! What tools read from the images and logs of these file kinds: `-v4` dump logs name the kind
//! of each file as it is dumped; our crit prints CRIU 4.2's own file-kind images (ttys,
//! memfd, fifo data, files) exactly as CRIU's crit did, and our memfd images with the same
//! fields; `pages_written + shpages_written` of `stats-dump` match the pages files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use compel_criu_tests::{
    Spawned, become_subreaper, dump_and_reap, fixtures_dir, ready_numbers, spawn_ready,
    spawn_ready_in, test_lock, wait_exit_timeout, wait_file, workspace_bin,
};

fn crit(args: &[&str]) -> String {
    let o = std::process::Command::new(workspace_bin("crit", "crit"))
        .args(args)
        .output()
        .expect("run crit");
    assert!(o.status.success(), "crit {args:?}: {o:?}");
    String::from_utf8(o.stdout).expect("utf-8 from crit")
}

/// The kinds the `dumping file` lines of `log` name.
fn logged_kinds(log: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).expect("dump.log");
    let mut k: Vec<String> = text
        .lines()
        .filter(|l| l.contains("dumping file"))
        .filter_map(|l| l.split("kind=").nth(1))
        .filter_map(|r| r.split_whitespace().next())
        .map(|s| s.trim_matches('"').to_string())
        .collect();
    k.sort();
    k.dedup();
    k
}

#[test]
fn v4_dump_logs_name_each_file_kind() {
    let _g = test_lock();
    become_subreaper();
    // FIFOs (with the REG entries of their paths, and pipes of the victim's stdio).
    let d = tempfile::tempdir().unwrap();
    let mut v = spawn_ready_in(
        env!("CARGO_BIN_EXE_criu-victim-fifo"),
        d.path(),
        "fifos",
        &[],
    );
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    let kinds = logged_kinds(&img.join("dump.log"));
    assert!(kinds.contains(&"fifo".to_string()), "{kinds:?}");
    // pidfds.
    let d = tempfile::tempdir().unwrap();
    let mut v = spawn_ready(
        env!("CARGO_BIN_EXE_criu-victim-pidfd-thread"),
        d.path(),
        &[],
    );
    let child: i32 = std::fs::read_to_string(d.path().join("out.pids"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let mut c = Spawned::guard(child);
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    let _ = c.wait(Duration::from_secs(5));
    let kinds = logged_kinds(&img.join("dump.log"));
    assert!(kinds.contains(&"pidfd".to_string()), "{kinds:?}");
    // memfds.
    let d = tempfile::tempdir().unwrap();
    let mut v = spawn_ready(env!("CARGO_BIN_EXE_criu-victim-memfd-seal"), d.path(), &[]);
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    let kinds = logged_kinds(&img.join("dump.log"));
    assert!(kinds.contains(&"memfd".to_string()), "{kinds:?}");
    // Every descriptor of the dumped task has its line (3 stdio + the memfd at least).
    let log = std::fs::read_to_string(img.join("dump.log")).unwrap();
    assert!(
        log.lines().filter(|l| l.contains("dumping file")).count() >= 2,
        "{log}"
    );
}

/// CRIU 4.2's file-kind images and their crit JSON (`fixtures/criu-4.2/files`).
fn fixture(name: &str) -> (PathBuf, PathBuf) {
    let dir = fixtures_dir().join("files");
    (
        dir.join(name),
        dir.join("crit-json").join(format!("{name}.json")),
    )
}

#[test]
fn crit_prints_criu_file_kind_images_as_criu_crit_did() {
    for name in [
        "tty-info.img",
        "tty-data.img",
        "memfd.img",
        "fifo-data.img",
        "files.img",
        "fdinfo-2.img",
        "fdinfo-3.img",
        "pagemap-shmem-5296.img",
    ] {
        let (img, json) = fixture(name);
        let ours = crit(&["decode", "--pretty", "-i", img.to_str().unwrap()]);
        let theirs = std::fs::read_to_string(&json).expect("the fixture's crit json");
        assert_eq!(
            ours.trim_end(),
            theirs.trim_end(),
            "crit decode --pretty of CRIU's {name}"
        );
    }
}

/// The field names of crit JSON `v`, at every depth.
fn keys(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                out.push(k.clone());
                keys(x, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| keys(x, out)),
        _ => {}
    }
}

fn key_set(v: &serde_json::Value) -> Vec<String> {
    let mut k = Vec::new();
    keys(v, &mut k);
    k.sort();
    k.dedup();
    k
}

/// Present pages in the pagemaps named `prefix*` of `dir`.
fn pagemap_pages(dir: &Path, prefix: &str) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with(prefix) || (prefix == "pagemap-" && name.starts_with("pagemap-shmem-"))
        {
            continue;
        }
        let j: serde_json::Value =
            serde_json::from_str(&crit(&["decode", "-i", p.to_str().unwrap()])).unwrap();
        for e in j["entries"].as_array().unwrap().iter().skip(1) {
            let present = e["flags"].as_str().is_none_or(|f| f.contains("PRESENT"));
            if present {
                n += e["nr_pages"].as_u64().unwrap_or(0);
            }
        }
    }
    n
}

#[test]
fn memfd_dump_prints_like_criu_and_stats_count_every_page_written() {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let (out, ready) = (d.path().join("out"), d.path().join("ready"));
    let mut v = Spawned::spawn(
        env!("CARGO_BIN_EXE_criu-victim-memfd-map"),
        &[out.to_str().unwrap(), ready.to_str().unwrap()],
        &d.path().join("victim.log"),
        None,
    );
    let said = wait_file(&ready, Duration::from_secs(10));
    let child = ready_numbers(&said, 2)[0];
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    let _ = wait_exit_timeout(child, Duration::from_secs(5));
    // memfd.img: CRIU's fields (seals printed as flag names).
    let ours: serde_json::Value = serde_json::from_str(&crit(&[
        "decode",
        "-i",
        img.join("memfd.img").to_str().unwrap(),
    ]))
    .unwrap();
    let theirs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("memfd.img").1).unwrap()).unwrap();
    assert_eq!(ours["magic"], theirs["magic"]);
    let mut want = key_set(&theirs);
    want.retain(|k| k != "seals"); // only on sealed memfds
    let got = key_set(&ours);
    for k in &want {
        assert!(got.contains(k), "our memfd.img lacks {k}: {ours}");
    }
    // stats-dump: every page the pages files hold is counted, private and shared.
    let stats: serde_json::Value = serde_json::from_str(&crit(&[
        "decode",
        "-i",
        img.join("stats-dump").to_str().unwrap(),
    ]))
    .unwrap();
    let s = &stats["entries"][0]["dump"];
    let written = s["pages_written"].as_u64().unwrap();
    let shwritten = s["shpages_written"].as_u64().unwrap();
    assert!(shwritten > 0, "the memfds' pages are shared pages: {s}");
    assert_eq!(written, pagemap_pages(&img, "pagemap-"), "{s}");
    assert_eq!(shwritten, pagemap_pages(&img, "pagemap-shmem-"), "{s}");
    let pages_bytes: u64 = std::fs::read_dir(&img)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("pages-"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert_eq!(
        (written + shwritten) * 4096,
        pages_bytes,
        "pages_written + shpages_written against the pages files: {s}"
    );
}
