//! `--display-stats` and the statistics images: `criu dump --display-stats` prints CRIU's dump
//! statistics on stdout and writes `stats-dump`, whose page counts match the pagemaps it wrote;
//! `criu restore --display-stats` prints the restore statistics and writes `stats-restore`;
//! `crit` decodes both with CRIU's field names, as it decodes CRIU's own.
//!
//! Every test runs as root, under the test lock and as a child subreaper, and kills and reaps
//! what it started.

use std::path::{Path, PathBuf};
use std::time::Duration;

use compel_criu_tests::{
    Scratch, Spawned, assert_ok_log, become_subreaper, criu, criu_dump, criu_on_terminal,
    fixtures_dir, skip_if_not_root, stdout_text, test_lock, wait_exit_timeout, workspace_bin,
};
use criu_images::Pagemap;
use criu_images::pagemap::PE_PRESENT;

fn crit() -> PathBuf {
    workspace_bin("crit", "crit")
}

/// `crit decode -i FILE` as JSON.
fn crit_decode(file: &Path) -> serde_json::Value {
    let o = std::process::Command::new(crit())
        .args(["decode", "-i", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "crit decode {}: {o:?}", file.display());
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Present pages in every `pagemap-PREFIX*.img` of `dir`.
fn present_pages(dir: &Path, prefix: &str) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        let private = prefix == "pagemap-" && name.starts_with("pagemap-shmem-");
        if !name.starts_with(prefix) || private {
            continue;
        }
        let pm = Pagemap::read(dir.join(&name)).unwrap();
        n += pm
            .runs()
            .unwrap()
            .iter()
            .filter(|r| r.flags & PE_PRESENT != 0)
            .map(|r| r.nr_pages)
            .sum::<u64>();
    }
    n
}

/// The number printed on `LABEL: N (0xN)`, checking the hex agrees.
fn printed(out: &str, label: &str) -> u64 {
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("{label}: ")))
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{out}"));
    let rest = &line[label.len() + 2..];
    let mut words = rest.split_whitespace();
    let n: u64 = words.next().unwrap().parse().unwrap();
    assert_eq!(words.next(), Some(format!("({n:#x})").as_str()), "{line}");
    n
}

/// The microseconds printed on `LABEL: N us`.
fn printed_us(out: &str, label: &str) -> u64 {
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("{label}: ")))
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{out}"));
    let n = line[label.len() + 2..].strip_suffix(" us").unwrap();
    n.parse().unwrap()
}

/// The memory victim (private, file-backed and shared anonymous memory): the dump prints its
/// statistics, which agree with `stats-dump` as crit decodes it and with the pagemaps: pages
/// written are the private pagemaps' present pages, shared pages written the shmem pagemap's.
/// The restore prints its own, and `stats-restore` says as many pages were restored as the
/// pagemaps hold.
#[test]
fn display_stats_prints_what_the_stats_images_hold() {
    skip_if_not_root!("display_stats_prints_what_the_stats_images_hold");
    let _g = test_lock();
    become_subreaper();
    let s = Scratch::new();
    let data = s.path("data");
    let (mut v, _) = s.spawn_victim(
        env!("CARGO_BIN_EXE_criu-victim-memory"),
        &[data.to_str().unwrap(), s.ready.to_str().unwrap()],
        None,
        Duration::from_secs(10),
    );
    let o = criu_dump(
        v.pid(),
        &s.img,
        &["-o", "dump.log", "-v4", "--display-stats"],
    );
    assert_ok_log(&o, "criu dump --display-stats", &s.img.join("dump.log"));
    assert_eq!(
        wait_exit_timeout(v.pid(), Duration::from_secs(5)),
        Ok(Some(compel_criu_tests::Exit::Signal(libc::SIGKILL)))
    );
    v.mark_reaped();
    let out = stdout_text(&o);
    assert!(out.starts_with("Displaying dump stats:\n"), "{out}");
    let private = present_pages(&s.img, "pagemap-");
    let shared = present_pages(&s.img, "pagemap-shmem-");
    assert!(private > 1000, "the victim has megabytes of private memory");
    assert_eq!(
        shared, 3,
        "the victim's shared anonymous memory holds 3 pages"
    );
    assert_eq!(printed(&out, "Memory pages written"), private);
    assert!(printed(&out, "Memory pages scanned") >= private);
    assert_eq!(printed(&out, "Memory pages skipped from parent"), 0);
    assert_eq!(printed(&out, "Lazy memory pages"), 0);
    let frozen = printed_us(&out, "Frozen time");
    assert!(frozen > 0);
    assert!(printed_us(&out, "Freezing time") > 0);
    // Reading and writing the pages happen while the tree is frozen (each is summed over the
    // threads that do it, which can overlap, hence twice).
    let memdump = printed_us(&out, "Memory dump time");
    let memwrite = printed_us(&out, "Memory write time");
    assert!(memdump > 0 && memwrite > 0, "{out}");
    assert!(memdump + memwrite <= 2 * frozen, "{out}");

    let j = crit_decode(&s.img.join("stats-dump"));
    assert_eq!(j["magic"], "STATS");
    let d = &j["entries"][0]["dump"];
    assert_eq!(d["pages_written"], private);
    assert_eq!(d["shpages_written"], shared);
    assert_eq!(d["frozen_time"], frozen);
    assert_eq!(d["memdump_time"], memdump);
    // The same fields as CRIU 4.2's own stats-dump, decoded by the same crit.
    let theirs = crit_decode(&fixtures_dir().join("tree/stats-dump"));
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(d), keys(&theirs["entries"][0]["dump"]));

    let o = criu(&[
        "restore",
        "-D",
        s.img.to_str().unwrap(),
        "-o",
        "restore.log",
        "-v4",
        "-d",
        "--display-stats",
        "--pidfile",
        "restored.pid",
    ]);
    assert_ok_log(
        &o,
        "criu restore --display-stats",
        &s.img.join("restore.log"),
    );
    let _restored = Spawned::guard(v.pid());
    let out = stdout_text(&o);
    assert!(out.starts_with("Displaying restore stats:\n"), "{out}");
    // Every page put back into memory: the private ones and the shared ones (mapped once here).
    assert_eq!(printed(&out, "Pages restored"), private + shared);
    assert_eq!(printed(&out, "Pages compared"), 0);
    assert_eq!(printed(&out, "Pages skipped COW"), 0);
    let restore = printed_us(&out, "Restore time");
    let forking = printed_us(&out, "Forking time");
    assert!(forking > 0 && forking < restore, "{out}");
    let j = crit_decode(&s.img.join("stats-restore"));
    let r = &j["entries"][0]["restore"];
    assert_eq!(r["pages_restored"], private + shared);
    assert_eq!(r["restore_time"], restore);
    assert_eq!(r["forking_time"], forking);
}

/// Without `--display-stats` the statistics are written but not printed: a dump prints
/// nothing on stdout.
#[test]
fn stats_are_written_without_being_printed() {
    skip_if_not_root!("stats_are_written_without_being_printed");
    let _g = test_lock();
    become_subreaper();
    let s = Scratch::new();
    let (mut v, _) = s.spawn_victim(
        env!("CARGO_BIN_EXE_criu-victim-counter"),
        &[s.path("out").to_str().unwrap(), s.ready.to_str().unwrap()],
        None,
        Duration::from_secs(10),
    );
    compel_criu_tests::dump_and_reap(&mut v, &s.img, &[]);
    let j = crit_decode(&s.img.join("stats-dump"));
    let d = &j["entries"][0]["dump"];
    assert_eq!(d["pages_written"], present_pages(&s.img, "pagemap-"));
    // The victim is gone: a dump of its pid fails.
    let o = criu_dump(v.pid(), &s.img, &["--display-stats", "-o", "gone.log"]);
    assert!(!o.status.success(), "dumping a reaped pid must fail");
    assert_eq!(stdout_text(&o), "", "a failed dump displays no statistics");
}

/// A dump of 300 MiB with stderr on a terminal draws its progress there at the default
/// verbosity (pages written out of pages to write, up to all of them) and not at `-v1`.
#[test]
fn a_big_dump_shows_progress_on_a_terminal() {
    skip_if_not_root!("a_big_dump_shows_progress_on_a_terminal");
    let _g = test_lock();
    become_subreaper();
    let s = Scratch::new();
    let (mut v, _) = s.spawn_victim(
        env!("CARGO_BIN_EXE_criu-victim-big-memory"),
        &["300", s.ready.to_str().unwrap()],
        None,
        Duration::from_secs(60),
    );
    let pid = v.pid().to_string();
    let img = s.img.to_str().unwrap();
    let (st, quiet) =
        criu_on_terminal(&["dump", "-t", &pid, "-D", img, "-o", "d1.log", "-v1", "-R"]);
    assert!(st.success(), "{quiet}");
    assert!(
        !quiet.contains("pages written"),
        "-v1 draws no progress: {quiet}"
    );
    let (st, drawn) = criu_on_terminal(&["dump", "-t", &pid, "-D", img, "-o", "d2.log"]);
    assert!(st.success(), "{drawn}");
    assert_eq!(
        wait_exit_timeout(v.pid(), Duration::from_secs(5)),
        Ok(Some(compel_criu_tests::Exit::Signal(libc::SIGKILL)))
    );
    v.mark_reaped();
    let pages = present_pages(&s.img, "pagemap-");
    assert!(pages >= 300 * 256, "{pages} pages written");
    let reports: Vec<&str> = drawn
        .split(['\r', '\n'])
        .filter(|l| l.contains("pages written"))
        .collect();
    assert!(reports.len() > 2, "progress drawn: {drawn:?}");
    let last = reports.last().unwrap();
    assert!(last.ends_with("(100 %)"), "{last}");
    assert!(last.starts_with(&format!("pid {pid}: ")), "{last}");
}
