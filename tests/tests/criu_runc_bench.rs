//! runc bench: `runc checkpoint` and `runc restore -d` of the busybox counter container
//! (runc's default namespaces: pid, mount, network, uts, ipc; with this criu as `--criu`)
//! against the baseline of the same run: `criu dump` and `criu restore -d` of the same program
//! (busybox `sh` counting, with its `sleep` child) outside any container. Reports the medians of
//! each, the part of runc's time criu itself spent (the last timestamp of criu's log) and the
//! ratios.
//!
//! `cargo test -p compel-criu-tests --test criu_runc_bench` runs one quick round of each (a
//! sanity check). With `CRIU_BENCH=1` it measures 9 rounds (`CRIU_BENCH_ROUNDS` to change);
//! `CRIU_BENCH_BIN` names the criu to use (a release build), for runc and the baseline alike.
//! Needs root, runc and busybox-static; prints why and exits 0 otherwise. Every container and
//! process is killed and reaped (the bench is a subreaper), also on panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use compel_criu_tests::runc::{COUNTER, Container, reap_until, runc_criu, runc_usable};
use compel_criu_tests::{Spawned, become_subreaper, wait_exit_timeout};

/// The time of the last line of criu log `path` (`(SS.ffffff) ...`), in ms.
fn criu_ms(path: &Path) -> f64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .rev()
        .find_map(|l| {
            l.strip_prefix('(')
                .and_then(|r| r.split_once(')'))
                .and_then(|(t, _)| t.trim().parse::<f64>().ok())
        })
        .map_or(f64::NAN, |s| s * 1000.0)
}

/// Dump phases: (label, a line that ends it, the last such line rather than the first).
const DUMP_PHASES: [(&str, &str, bool); 6] = [
    ("freeze (seize)", "INFO seized pid=", false),
    ("parasites", "inside state read", true),
    ("mounts", "mount namespace dumped", false),
    ("network, memory", "cgroups sets=", false),
    (
        "cgroups, pid/ipc/uts ns",
        "killing the dumped process",
        false,
    ),
    ("kill, wait", "dump finished", false),
];

/// Restore phases, as [`DUMP_PHASES`].
const RESTORE_PHASES: [(&str, &str, bool); 4] = [
    ("mounts", "mount namespace built", false),
    ("network", "network namespace made", false),
    ("tasks, memory", "tree restored", false),
    ("resume", "tree resumed", false),
];

/// How long each phase of criu log `path` took, in ms (a phase whose line is missing takes 0).
fn phases(path: &Path, marks: &[(&str, &str, bool)]) -> Vec<f64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let at = |l: &str| {
        l.strip_prefix('(')
            .and_then(|r| r.split_once(')'))
            .and_then(|(t, _)| t.trim().parse::<f64>().ok())
            .map(|s| s * 1000.0)
    };
    let mut prev = 0.0;
    marks
        .iter()
        .map(|(_, m, last)| {
            let mut hits = text.lines().filter(|l| l.contains(m)).filter_map(at);
            let t = if *last { hits.next_back() } else { hits.next() };
            let t = t.unwrap_or(prev).max(prev);
            let d = t - prev;
            prev = t;
            d
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One round: checkpoint ms, restore ms, criu's dump ms, criu's restore ms, and criu's
/// phases of each.
struct Round {
    ck: f64,
    rs: f64,
    criu_ck: f64,
    criu_rs: f64,
    dump_phases: Vec<f64>,
    restore_phases: Vec<f64>,
}

impl Round {
    fn new(ck: Duration, rs: Duration, dump_log: &Path, restore_log: &Path) -> Round {
        Round {
            ck: ms(ck),
            rs: ms(rs),
            criu_ck: criu_ms(dump_log),
            criu_rs: criu_ms(restore_log),
            dump_phases: phases(dump_log, &DUMP_PHASES),
            restore_phases: phases(restore_log, &RESTORE_PHASES),
        }
    }
}

type Rounds = Vec<Round>;

fn container_rounds(n: usize) -> Rounds {
    let c = Container::counter(None);
    c.run();
    let mut out = Vec::new();
    for r in 0..n {
        let (ck, rs) = c.round_trip(r, &[], &[]);
        let (_, work, _) = c.round_dirs(r);
        out.push(Round::new(
            ck,
            rs,
            &work.join("dump.log"),
            &work.join("restore.log"),
        ));
    }
    out
}

fn count_len(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("count"))
        .unwrap_or_default()
        .lines()
        .count()
}

fn wait_growing(dir: &Path, past: usize) {
    let end = Instant::now() + Duration::from_secs(5);
    while count_len(dir) <= past + 5 {
        assert!(Instant::now() < end, "the plain counter stopped at {past}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn criu(args: &[&str], log: &Path) -> Duration {
    let t0 = Instant::now();
    let o = Command::new(runc_criu())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run criu");
    let took = t0.elapsed();
    assert!(
        o.status.success(),
        "criu {args:?}: {}\n{}",
        o.status,
        std::fs::read_to_string(log).unwrap_or_default()
    );
    took
}

fn plain_rounds(n: usize) -> Rounds {
    let dir = tempfile::tempdir().expect("bench dir");
    let d = dir.path();
    // Its own session (not a shell job), stdio on /dev/null, counting into d/count.
    let child = Command::new("setsid")
        .args([
            "/bin/busybox",
            "sh",
            "-c",
            &COUNTER.replace("/count", "count"),
        ])
        .current_dir(d)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the plain counter");
    let guard = Spawned::from_child(child);
    let pid = guard.pid();
    wait_growing(d, 0);
    let mut out = Vec::new();
    for r in 0..n {
        let img: PathBuf = d.join(format!("img{r}"));
        std::fs::create_dir(&img).expect("image dir");
        let i = img.to_str().expect("utf-8 path");
        let p = pid.to_string();
        let dump_log = img.join("dump.log");
        let ck = criu(
            &["dump", "-t", &p, "-D", i, "-o", "dump.log", "-v4"],
            &dump_log,
        );
        // The counter (ours) and its sleep (reparented to us) are reaped: their pids must be
        // free for the restore.
        let _ = wait_exit_timeout(pid, Duration::from_secs(5));
        reap_until(pid, &std::sync::atomic::AtomicBool::new(true));
        let at = count_len(d);
        let restore_log = img.join("restore.log");
        let rs = criu(
            &["restore", "-D", i, "-o", "restore.log", "-v4", "-d"],
            &restore_log,
        );
        wait_growing(d, at);
        out.push(Round::new(ck, rs, &dump_log, &restore_log));
    }
    // Kills and reaps the restored counter (ours again: reparented to us), then its sleep.
    drop(guard);
    reap_until(pid, &std::sync::atomic::AtomicBool::new(true));
    out
}

fn main() {
    if !runc_usable() {
        return;
    }
    become_subreaper();
    let full = std::env::var_os("CRIU_BENCH").is_some();
    let n = if full {
        std::env::var("CRIU_BENCH_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(9)
    } else {
        1
    };
    let c = container_rounds(n);
    let p = plain_rounds(n);
    let col = |v: &Rounds, f: &dyn Fn(&Round) -> f64| median(v.iter().map(f).collect());
    let (cc, cr, ccd, ccr) = (
        col(&c, &|x| x.ck),
        col(&c, &|x| x.rs),
        col(&c, &|x| x.criu_ck),
        col(&c, &|x| x.criu_rs),
    );
    let (pc, pr, pcd, pcr) = (
        col(&p, &|x| x.ck),
        col(&p, &|x| x.rs),
        col(&p, &|x| x.criu_ck),
        col(&p, &|x| x.criu_rs),
    );
    println!(
        "runc bench ({n} rounds, medians, criu {})",
        runc_criu().display()
    );
    println!("                          total ms   criu's own ms");
    println!("runc checkpoint          {cc:9.1}   {ccd:9.1}");
    println!("runc restore -d          {cr:9.1}   {ccr:9.1}");
    println!("plain criu dump          {pc:9.1}   {pcd:9.1}");
    println!("plain criu restore -d    {pr:9.1}   {pcr:9.1}");
    println!("criu's phases (ms)           container     plain");
    for (i, (label, _, _)) in DUMP_PHASES.iter().enumerate() {
        let (a, b) = (
            col(&c, &|x| x.dump_phases[i]),
            col(&p, &|x| x.dump_phases[i]),
        );
        println!("  dump: {label:<24}{a:9.1} {b:9.1}");
    }
    for (i, (label, _, _)) in RESTORE_PHASES.iter().enumerate() {
        let (a, b) = (
            col(&c, &|x| x.restore_phases[i]),
            col(&p, &|x| x.restore_phases[i]),
        );
        println!("  restore: {label:<21}{a:9.1} {b:9.1}");
    }
    println!(
        "ratio container/plain: checkpoint {:.2}, restore {:.2}",
        cc / pc,
        cr / pr
    );
}
