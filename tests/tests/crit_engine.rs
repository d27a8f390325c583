//! `crit` on images our own `criu dump` writes: a live process tree (a session leader, a child in
//! the leader's group, a child leading its own group, a zombie, a shared anonymous page, a pipe
//! with unread data, a file at an offset) is dumped, then every image decodes to JSON and encodes
//! back to the same bytes, `info` counts entries, and `x ps`/`x fds`/`x mems` describe what
//! `/proc` showed of the processes before the dump.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use compel_criu_tests::{become_subreaper, test_lock, wait_exit_timeout, wait_file, workspace_bin};

fn run(bin: &Path, args: &[&str], stdin: Option<&Path>) -> Output {
    let mut c = Command::new(bin);
    c.args(args);
    match stdin {
        Some(p) => c.stdin(std::fs::File::open(p).unwrap()),
        None => c.stdin(Stdio::null()),
    };
    c.output().unwrap()
}

fn ok(bin: &Path, args: &[&str]) -> String {
    let o = run(bin, args, None);
    assert!(
        o.status.success(),
        "{} {args:?} failed: {}",
        bin.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// `(pgid, sid, comm)` of a process as `/proc/PID/stat` shows it (zombies included).
fn stat_of(pid: i32) -> (i32, i32, String) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let open = s.find('(').unwrap();
    let close = s.rfind(')').unwrap();
    let comm = s[open + 1..close].to_string();
    let rest: Vec<&str> = s[close + 2..].split(' ').collect();
    // After the comm: state ppid pgrp session ...
    (rest[2].parse().unwrap(), rest[3].parse().unwrap(), comm)
}

/// Kills and reaps every process of the tree, whatever the test did.
struct Tree(Vec<i32>);

impl Drop for Tree {
    fn drop(&mut self) {
        for &p in &self.0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        for &p in &self.0 {
            let _ = wait_exit_timeout(p, Duration::from_secs(5));
        }
    }
}

#[test]
fn crit_reads_and_rewrites_what_criu_dump_wrote() {
    let _g = test_lock();
    become_subreaper();
    let (criu, crit) = (workspace_bin("criu", "criu"), workspace_bin("crit", "crit"));
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let ready = d.path().join("ready");
    let root = Command::new(env!("CARGO_BIN_EXE_criu-victim-tree"))
        .args([&data, &ready])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut tree = Tree(vec![root.id() as i32]);
    let pids: Vec<i32> = wait_file(&ready, Duration::from_secs(10))
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 4, "ready line: {pids:?}");
    tree.0 = pids.clone();
    // The zombie child exits at once; wait until /proc shows it as one.
    let end = Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(format!("/proc/{}/stat", pids[3]))
        .unwrap()
        .contains(") Z ")
    {
        assert!(Instant::now() < end, "child 3 did not become a zombie");
        std::thread::sleep(Duration::from_millis(5));
    }
    let before: Vec<(i32, (i32, i32, String))> = pids.iter().map(|&p| (p, stat_of(p))).collect();

    let img = d.path().join("img");
    std::fs::create_dir(&img).unwrap();
    let o = run(
        &criu,
        &[
            "dump",
            "-t",
            &pids[0].to_string(),
            "-D",
            img.to_str().unwrap(),
            "-R",
        ],
        None,
    );
    assert!(
        o.status.success(),
        "dump failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );

    // Every image: decode -> encode gives the same bytes; info counts what decode shows.
    let mut files: Vec<PathBuf> = std::fs::read_dir(&img)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "img"))
        .collect();
    files.sort();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for must in ["inventory.img", "pstree.img", "files.img"] {
        assert!(names.iter().any(|n| n == must), "{must} missing: {names:?}");
    }
    let mut checked = 0;
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let info: serde_json::Value =
            serde_json::from_str(&ok(&crit, &["info", f.to_str().unwrap()])).unwrap();
        if name.starts_with("pages-") {
            // Raw page contents: info only.
            assert!(info["count"].as_u64().is_some(), "{name}: {info}");
            continue;
        }
        let json = d.path().join(format!("{name}.json"));
        let back = d.path().join(format!("{name}.back"));
        ok(
            &crit,
            &[
                "decode",
                "-i",
                f.to_str().unwrap(),
                "-o",
                json.to_str().unwrap(),
                "--pretty",
            ],
        );
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        let mut entries = doc["entries"].as_array().map_or(0, Vec::len);
        if doc["magic"] == "PAGEMAP" {
            entries -= 1; // as CRIU's crit, info does not count the pagemap head
        }
        assert_eq!(
            info["count"].as_u64(),
            Some(entries as u64),
            "{name}: info and decode disagree"
        );
        let o = run(
            &crit,
            &["encode", "-o", back.to_str().unwrap()],
            Some(&json),
        );
        assert!(
            o.status.success(),
            "encode of {name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            std::fs::read(f).unwrap() == std::fs::read(&back).unwrap(),
            "{name}: encode(decode(image)) differs from the image"
        );
        checked += 1;
    }
    assert!(
        checked >= 10,
        "only {checked} images round-tripped: {names:?}"
    );

    // x ps: one row per process with the pgid, sid and comm /proc showed.
    let ps = ok(&crit, &["x", img.to_str().unwrap(), "ps"]);
    let rows: Vec<Vec<String>> = ps
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect();
    assert_eq!(rows.len(), 4, "{ps}");
    for (pid, (pgid, sid, comm)) in &before {
        let row = rows
            .iter()
            .find(|r| r[0] == pid.to_string())
            .unwrap_or_else(|| panic!("pid {pid} missing from\n{ps}"));
        assert_eq!(row[1], pgid.to_string(), "pgid of {pid}\n{ps}");
        assert_eq!(row[2], sid.to_string(), "sid of {pid}\n{ps}");
        assert_eq!(&row[3], comm, "comm of {pid}\n{ps}");
    }
    // Child 2 leads its own group, the others are in the root's.
    assert_eq!(before[2].1.0, pids[2]);
    assert_eq!(before[1].1.0, before[0].1.0);

    // x fds: the data file shows under the root, with its path.
    let fds = ok(&crit, &["x", img.to_str().unwrap(), "fds"]);
    let data_path = std::fs::canonicalize(&data).unwrap();
    let root_section: String = fds
        .split_inclusive('\n')
        .skip_while(|l| l.trim_end() != pids[0].to_string())
        .skip(1)
        .take_while(|l| l.starts_with('\t'))
        .collect();
    assert!(
        root_section.contains(data_path.to_str().unwrap()),
        "data file not among the root's fds:\n{fds}"
    );
    assert!(root_section.contains("pipe["), "pipe missing:\n{fds}");

    // x mems: the root's memory map names its executable.
    let mems = ok(&crit, &["x", img.to_str().unwrap(), "mems"]);
    let exe = std::fs::canonicalize(env!("CARGO_BIN_EXE_criu-victim-tree")).unwrap();
    assert!(mems.contains(exe.to_str().unwrap()), "{mems}");

    // -R left the tree running, untouched.
    for &p in &pids[..3] {
        let (pgid, sid, _) = stat_of(p);
        let was = &before.iter().find(|b| b.0 == p).unwrap().1;
        assert_eq!((pgid, sid), (was.0, was.1));
    }
    drop(tree);
    drop(root);
}
