//! Restore benchmark: `criu restore -d` of a tiny process and of one with 1 GiB of touched
//! memory, images on tmpfs, against the floor of reading the same page bytes back into fresh
//! memory in the same run; and restore of many tasks (one process with 100 threads, a tree of
//! 50 processes: `criu-victim-sleeper-pool`) against spawning the same victim fresh (fork+exec
//! until it reports ready), with the cost per task and the ratio restore/spawn.
//!
//! `cargo test -p compel-criu-tests --test criu_restore_bench` runs a quick sanity round (one
//! restore of a tiny and a 64 MiB process, each checking its memory itself; one restore of 4
//! threads and of a tree of 4). With `CRIU_BENCH=1` (best with `--release`) it measures: 20
//! tiny restores and 7 restores of 1 GiB (`CRIU_BENCH_MIB` to change), 9 of each many-task
//! victim, and prints medians, GB/s and the ratios. A victim `criu restore` says it cannot
//! restore yet ("unsupported") is reported as skipped.
//!
//! Every restored task is killed and reaped by pid (the bench is a subreaper), also on panic.
//! Needs root; prints why and exits 0 otherwise.

use std::fs;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use compel_criu_tests::{
    OwnTmpfs, Spawned, become_subreaper, is_root, stat_ids, wait_exit, wait_file, workspace_bin,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The criu binary: `CRIU_BENCH_BIN` if set (e.g. a release build), else this profile's build.
fn criu_bin() -> PathBuf {
    match std::env::var_os("CRIU_BENCH_BIN") {
        Some(p) => PathBuf::from(p),
        None => workspace_bin("criu", "criu"),
    }
}

fn criu(args: &[&str]) {
    let o = criu_output(args);
    assert!(
        o.status.success(),
        "criu {args:?}: {:?}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
}

fn criu_output(args: &[&str]) -> std::process::Output {
    Command::new(criu_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run criu")
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Dumps a `mib` MiB victim into `img` and returns its pid (free again: the victim is reaped).
fn make_images(mib: usize, work: &Path, img: &Path) -> i32 {
    fs::create_dir_all(img).unwrap();
    let ready = work.join(format!("ready-{mib}"));
    let mut victim = Spawned::spawn(
        env!("CARGO_BIN_EXE_criu-victim-big-memory"),
        &[&mib.to_string(), &ready.display().to_string()],
        Path::new("/dev/null"),
        None,
    );
    let pid = victim.pid();
    wait_file(&ready, Duration::from_secs(60));
    criu(&["dump", "-t", &pid.to_string(), "-D", img.to_str().unwrap()]);
    wait_exit(pid).unwrap();
    victim.mark_reaped();
    pid
}

/// One `criu restore -d`; returns its wall time. The task is left running.
fn restore_once(img: &Path) -> f64 {
    restore_with(img, &[])
}

/// One `criu restore -d` with extra environment; returns its wall time.
fn restore_with(img: &Path, env: &[(&str, &str)]) -> f64 {
    let t = Instant::now();
    let o = Command::new(criu_bin())
        .args(["restore", "-d", "-D", img.to_str().unwrap()])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run criu");
    let el = t.elapsed().as_secs_f64();
    assert!(
        o.status.success(),
        "criu restore {env:?}: {:?}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    el
}

fn check_and_kill(pid: i32, ready: &Path) {
    let verdict = ready.with_extension("2");
    let _ = fs::remove_file(&verdict);
    kill(Pid::from_raw(pid), Signal::SIGUSR1).unwrap();
    let v = wait_file(&verdict, Duration::from_secs(60));
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    wait_exit(pid).unwrap();
    assert_eq!(v.trim(), "check ok", "restored victim's memory check");
}

fn kill_and_reap(pid: i32) {
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    wait_exit(pid).unwrap();
}

/// The floor: read the page files of `img` into fresh anonymous memory.
fn floor_once(img: &Path) -> f64 {
    let files = page_files(img);
    let t = Instant::now();
    for f in files {
        let len = fs::metadata(&f).unwrap().len() as usize;
        let mut buf: Vec<u8> = Vec::with_capacity(len);
        fs::File::open(&f).unwrap().read_to_end(&mut buf).unwrap();
        assert_eq!(buf.len(), len);
        std::hint::black_box(&buf);
    }
    t.elapsed().as_secs_f64()
}

/// The floor with huge pages: read the page files of `img` into fresh anonymous memory advised
/// `MADV_HUGEPAGE` (2 MiB aligned), the best a plain program can do with huge pages.
fn floor_huge(img: &Path) -> f64 {
    let files = page_files(img);
    let t = Instant::now();
    for f in files {
        let len = fs::metadata(&f).unwrap().len() as usize;
        let map = len + (2 << 20);
        // SAFETY: a fresh private anonymous mapping of our own, unmapped below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let at = (p as usize).next_multiple_of(2 << 20);
        // SAFETY: advice on that mapping; `at..at + len` lies inside it and nothing else
        // refers to it while the slice lives.
        let buf = unsafe {
            libc::madvise(at as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
            std::slice::from_raw_parts_mut(at as *mut u8, len)
        };
        fs::File::open(&f).unwrap().read_exact(buf).unwrap();
        std::hint::black_box(&buf);
        // SAFETY: unmaps the mapping made above; `buf` is not used after this.
        unsafe { libc::munmap(p, map) };
    }
    t.elapsed().as_secs_f64()
}

fn page_files(img: &Path) -> Vec<PathBuf> {
    fs::read_dir(img)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("pages-"))
        })
        .collect()
}

/// The raw read bandwidth: the page files into one buffer allocated and touched beforehand.
fn raw_read_once(img: &Path, buf: &mut [u8]) -> f64 {
    let files = page_files(img);
    let t = Instant::now();
    for p in files {
        let mut f = fs::File::open(&p).unwrap();
        let len = fs::metadata(&p).unwrap().len() as usize;
        f.read_exact(&mut buf[..len]).unwrap();
    }
    t.elapsed().as_secs_f64()
}

fn pages_bytes(img: &Path) -> u64 {
    page_files(img)
        .into_iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum()
}

fn bench(mib: usize, runs: usize, base: &Path, on: &str) {
    let img = base.join(format!("img-{mib}"));
    let pid = make_images(mib, base, &img);
    let _guard = Spawned::guard(pid);
    let bytes = pages_bytes(&img);
    let mut buf = vec![1u8; bytes as usize];
    // First restore, not counted (a warm-up after the allocations above): the victim checks
    // its memory.
    restore_once(&img);
    check_and_kill(pid, &base.join(format!("ready-{mib}")));
    let mut times = Vec::new();
    let mut small = Vec::new();
    let mut floors = Vec::new();
    let mut huge_floors = Vec::new();
    let mut raws = Vec::new();
    for _ in 0..runs {
        times.push(restore_once(&img));
        kill_and_reap(pid);
        floors.push(floor_once(&img));
        if mib > 0 {
            small.push(restore_with(&img, &[("CRIU_RESTORE_THP", "0")]));
            kill_and_reap(pid);
            huge_floors.push(floor_huge(&img));
        }
        raws.push(raw_read_once(&img, &mut buf));
    }
    if mib > 0 {
        let ms = |v: &[f64]| {
            v.iter()
                .map(|s| format!("{:.0}", s * 1e3))
                .collect::<Vec<_>>()
        };
        println!(
            "restore {mib:>5} MiB{on}, every run in order (ms): {:?}; small pages only: {:?}",
            ms(&times),
            ms(&small),
        );
    }
    let t = median(&mut times);
    let f = median(&mut floors);
    let r = median(&mut raws);
    let gbs = |s: f64| bytes as f64 / s / 1e9;
    // "ms (GB/s)" of a time for the page bytes.
    let at = |s: f64| format!("{:8.2} ms ({:5.2} GB/s)", s * 1e3, gbs(s));
    if mib > 0 {
        let s = median(&mut small);
        let h = median(&mut huge_floors);
        println!(
            "restore {mib:>5} MiB{on}, small pages only (CRIU_RESTORE_THP=0): median {}, ratio to the floor {:5.2} | floor into huge pages (MADV_HUGEPAGE) {}, restore/that {:5.2} | huge/small restore {:5.2}",
            at(s),
            s / f.max(1e-9),
            at(h),
            t / h.max(1e-9),
            t / s.max(1e-9),
        );
    }
    println!(
        "restore {mib:>5} MiB{on}: median {} | floor (read into fresh memory) {}, ratio {:5.2} | raw read {}, ratio {:5.2} | {} runs",
        at(t),
        at(f),
        t / f.max(1e-9),
        at(r),
        t / r.max(1e-9),
        runs,
    );
    let _ = fs::remove_dir_all(&img);
}

/// The tasks of one pool victim (`criu-victim-sleeper-pool`): its pids, root first, then children,
/// then grandchildren. Dropping it kills them all and reaps them in that order (each level is
/// ours once its parent has exited, the bench being a subreaper), unless that was done already.
struct Pool {
    pids: Vec<i32>,
}

impl Pool {
    fn kill_and_reap(&mut self) {
        for &p in &self.pids {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
        for &p in &self.pids {
            let _ = wait_exit(p);
        }
        self.pids.clear();
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.kill_and_reap();
    }
}

/// Starts `criu-victim-sleeper-pool KIND N READY` and waits (polling every 20 µs) until it wrote
/// READY; returns the pool and the time from fork to READY.
fn spawn_pool(kind: &str, n: usize, ready: &Path) -> (Pool, f64) {
    let _ = fs::remove_file(ready);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_criu-victim-sleeper-pool"));
    cmd.args([kind, &n.to_string(), ready.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: the closure only makes an async-signal-safe syscall in the child.
    unsafe {
        cmd.pre_exec(|| {
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    let t = Instant::now();
    // Reaped by pid through `Pool`, not through `Child`.
    let root = cmd.spawn().expect("spawn criu-victim-sleeper-pool").id() as i32;
    let mut pool = Pool { pids: vec![root] };
    let end = t + Duration::from_secs(60);
    let text = loop {
        if let Ok(s) = fs::read_to_string(ready)
            && !s.is_empty()
        {
            break s;
        }
        assert!(Instant::now() < end, "{} did not appear", ready.display());
        std::thread::sleep(Duration::from_micros(20));
    };
    let took = t.elapsed().as_secs_f64();
    let pids: Vec<i32> = text
        .split_whitespace()
        .skip(1)
        .map(|w| w.parse().expect("pid in READY"))
        .collect();
    assert_eq!(pids.first(), Some(&pool.pids[0]), "READY names the root");
    pool.pids = pids;
    (pool, took)
}

/// `/proc/PID/status`'s `Threads:` count, or None if the process is gone.
fn thread_count(pid: i32) -> Option<usize> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))?
        .trim()
        .parse()
        .ok()
}

/// Checks that a restored pool is all there: every pid runs (not a zombie), with the thread
/// count it had; returns the pool that now owns the restored tasks.
fn check_restored(pids: &[i32], threads: usize) -> Pool {
    let pool = Pool {
        pids: pids.to_vec(),
    };
    for &p in pids {
        let st = compel_criu_tests::proc_state(p);
        assert!(
            st.is_some_and(|c| c != 'Z' && c != 'X'),
            "restored pid {p} is not running ({st:?})"
        );
    }
    assert_eq!(
        thread_count(pids[0]),
        Some(threads),
        "threads of restored pid {}",
        pids[0]
    );
    pool
}

/// After a failed restore: kills and reaps whatever of `pids` was created, i.e. those that run
/// as children of this process or of another of `pids` (a pid that belongs to someone else is
/// left alone).
fn kill_leftovers(pids: &[i32]) {
    let me = std::process::id() as i32;
    let ppid = |p: i32| stat_ids(p).map(|s| s.1);
    let ours: Vec<i32> = pids
        .iter()
        .copied()
        .filter(|&p| ppid(p).is_some_and(|pp| pp == me || pids.contains(&pp)))
        .collect();
    drop(Pool { pids: ours });
}

/// Restore of a pool victim (`threads` or `tree` with `n`) against spawning it fresh.
fn bench_pool(kind: &str, n: usize, runs: usize, base: &Path) {
    // (label, tasks, processes, threads per process)
    let (what, tasks, procs, threads) = match kind {
        "threads" => (format!("process with {n} threads"), n + 1, 1, n + 1),
        _ => (format!("tree of {n} processes"), n, n, 1),
    };
    let ready = base.join(format!("ready-{kind}-{n}"));
    let mut spawns = Vec::new();
    for _ in 0..runs {
        let (mut pool, t) = spawn_pool(kind, n, &ready);
        assert_eq!(pool.pids.len(), procs, "pids in READY");
        assert_eq!(thread_count(pool.pids[0]), Some(threads), "threads");
        spawns.push(t);
        pool.kill_and_reap();
    }

    let img = base.join(format!("img-{kind}-{n}"));
    fs::create_dir_all(&img).unwrap();
    let (mut pool, _) = spawn_pool(kind, n, &ready);
    let pids = pool.pids.clone();
    criu(&[
        "dump",
        "-t",
        &pids[0].to_string(),
        "-D",
        img.to_str().unwrap(),
    ]);
    // The dump killed the tree; reap it.
    pool.kill_and_reap();

    let mut times = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let o = criu_output(&["restore", "-d", "-D", img.to_str().unwrap()]);
        let took = t.elapsed().as_secs_f64();
        let err = String::from_utf8_lossy(&o.stderr);
        if !o.status.success() {
            kill_leftovers(&pids);
        }
        if !o.status.success() && err.contains("unsupported") {
            let why = err
                .lines()
                .find(|l| l.contains("unsupported"))
                .unwrap_or("")
                .trim();
            println!("restore {what}: skipped, criu cannot restore it yet ({why})");
            return;
        }
        assert!(o.status.success(), "criu restore: {:?}\n{err}", o.status);
        let mut restored = check_restored(&pids, threads);
        times.push(took);
        restored.kill_and_reap();
    }
    let r = median(&mut times);
    let s = median(&mut spawns);
    println!(
        "restore {what} ({tasks} tasks): median {:7.2} ms, {:6.3} ms per task | spawn fresh (fork+exec until ready) {:7.2} ms, {:6.3} ms per task | restore/spawn {:5.2} | {runs} runs",
        r * 1e3,
        r * 1e3 / tasks as f64,
        s * 1e3,
        s * 1e3 / tasks as f64,
        r / s.max(1e-9),
    );
}

fn main() {
    if !is_root() {
        eprintln!("skipped criu_restore_bench: needs root");
        return;
    }
    become_subreaper();
    let full = std::env::var_os("CRIU_BENCH").is_some_and(|v| v == "1");
    let big: usize = std::env::var("CRIU_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 1024 } else { 64 });
    let base = PathBuf::from(format!(
        "/dev/shm/criu-restore-bench-{}",
        std::process::id()
    ));
    fs::create_dir_all(&base).unwrap();
    // A tmpfs with huge folios (huge=within_size) in a mount namespace of the bench's own:
    // images there are read from huge pages. Made before any victim, so all share it.
    let huge = OwnTmpfs::mount(
        Path::new(&format!(
            "/tmp/criu-restore-bench-huge-{}",
            std::process::id()
        )),
        &format!("huge=within_size,size={}m,mode=0700", 2 * big + 256),
    );
    let result = std::panic::catch_unwind(|| {
        bench(0, if full { 20 } else { 1 }, &base, "");
        bench(big, if full { 7 } else { 1 }, &base, "");
        match &huge {
            Ok(h) => bench(
                big,
                if full { 7 } else { 1 },
                h.path(),
                " (huge-page tmpfs)",
            ),
            Err(e) => println!("no huge-page tmpfs ({e}): its round is left out"),
        }
        let (many, many_runs) = if full { (100, 9) } else { (4, 1) };
        bench_pool("threads", many, many_runs, &base);
        bench_pool("tree", if full { 50 } else { 4 }, many_runs, &base);
    });
    let _ = fs::remove_dir_all(&base);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
