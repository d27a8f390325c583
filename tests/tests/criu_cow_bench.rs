//! Restore benchmark for memory shared copy-on-write (issue 20, item 28): a root that wrote
//! MIB MiB of private anonymous memory and then forked N children that only sleep. After
//! `criu restore -d` it reports the restore's wall time and the sum of `Rss` and of `Pss`
//! (`/proc/PID/smaps_rollup`) over the tree: with the memory shared again the Pss sum stays
//! near one copy, where separate copies cost N + 1.
//!
//! `cargo test -p compel-criu-tests --test criu_cow_bench` runs a quick sanity round (4
//! children, 8 MiB: the Pss sum after restore must stay under two copies). With
//! `CRIU_BENCH=1` it measures 5 restores of 50 children with 16 MiB (`CRIU_BENCH_MIB` to
//! change) and prints the medians; `CRIU_BENCH_BIN` runs another criu binary (e.g. one
//! without the sharing) for the before/after comparison.
//!
//! Needs root; runs under the test lock and as a child subreaper; every task is killed and
//! reaped on drop, also on panic.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, dump_and_reap, skip_if_not_root, test_lock, wait_file,
    workspace_bin,
};

const BIN: &str = env!("CARGO_BIN_EXE_criu-victim-defects-left");

fn criu_bin() -> PathBuf {
    match std::env::var_os("CRIU_BENCH_BIN") {
        Some(p) => PathBuf::from(p),
        None => workspace_bin("criu", "criu"),
    }
}

/// `Rss` and `Pss` (kB) of `pid` from `/proc/PID/smaps_rollup`.
fn rss_pss(pid: i32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("Rss:"), field("Pss:"))
}

/// One round: dump the victim with `n` children and `mib` MiB, restore it timed, sum the
/// memory over the tree; returns (restore seconds, Rss MiB, Pss MiB).
fn round(n: usize, mib: usize) -> (f64, f64, f64) {
    let d = tempfile::tempdir().unwrap();
    let (out, ready) = (d.path().join("out"), d.path().join("ready"));
    let mode = format!("cow-tree:{n}:{mib}");
    let mut v = Spawned::spawn(
        BIN,
        &[&mode, out.to_str().unwrap(), ready.to_str().unwrap()],
        &d.path().join("victim.log"),
        None,
    );
    wait_file(&ready, Duration::from_secs(30));
    let pids: Vec<i32> = std::fs::read_to_string(d.path().join("out.pids"))
        .unwrap()
        .split_whitespace()
        .map(|w| w.parse().unwrap())
        .collect();
    let img = d.path().join("img");
    {
        let _children: Vec<Spawned> = pids.iter().map(|&p| Spawned::guard(p)).collect();
        dump_and_reap(&mut v, &img, &[]);
    }
    let t = Instant::now();
    let o = Command::new(criu_bin())
        .args(["restore", "-d", "-D", img.to_str().unwrap()])
        .output()
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    let _children: Vec<Spawned> = pids.iter().map(|&p| Spawned::guard(p)).collect();
    let root = Spawned::guard(v.pid());
    assert!(
        o.status.success(),
        "restore: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let (mut rss, mut pss) = (0, 0);
    for p in pids.iter().chain(std::iter::once(&v.pid())) {
        let (r, p) = rss_pss(*p);
        rss += r;
        pss += p;
    }
    assert_eq!(ask_check(root.pid(), &out), "ok");
    (secs, rss as f64 / 1024.0, pss as f64 / 1024.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[test]
fn cow_tree_restore() {
    skip_if_not_root!("cow_tree_restore");
    let _g = test_lock();
    become_subreaper();
    if std::env::var_os("CRIU_BENCH").is_none() {
        let (secs, rss, pss) = round(4, 8);
        eprintln!(
            "4 children, 8 MiB: restore {secs:.3} s, Rss sum {rss:.1} MiB, Pss sum {pss:.1} MiB"
        );
        assert!(pss < 16.0, "the Pss sum {pss:.1} MiB is two copies or more");
        return;
    }
    let mib = std::env::var("CRIU_BENCH_MIB")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(16);
    let rounds: Vec<_> = (0..5).map(|_| round(50, mib)).collect();
    let bin = criu_bin();
    println!(
        "criu {}: 50 children sharing {mib} MiB: restore median {:.3} s, Rss sum {:.0} MiB, \
         Pss sum {:.0} MiB",
        Path::new(&bin).display(),
        median(rounds.iter().map(|r| r.0).collect()),
        median(rounds.iter().map(|r| r.1).collect()),
        median(rounds.iter().map(|r| r.2).collect()),
    );
}
