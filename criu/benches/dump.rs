//! Dump time and throughput: a tiny process and one with 1 GiB of touched memory, images on
//! tmpfs, with the floor measured in the same run.
//!
//! `cargo bench -p criu --bench dump` (full: 20 tiny dumps, 7 dumps of 1 GiB);
//! run without `--bench` (as `cargo test --benches` does) it makes one quick sanity round.
//!
//! - **tiny**: `/bin/sleep` (libc, a few dozen pages).
//! - **1 GiB**: a forked child that maps 1 GiB anonymous memory and writes every page.
//! - **tree of 50**: a root with 7 children, each with 6 children of its own, all asleep.
//! - **100 threads**: one process whose 100 threads (and main thread) sleep.
//! - **floor**: writing the same number of bytes from memory into a file on the same tmpfs
//!   (what any dump must at least do), measured between the dumps.
//!
//! The 1 GiB rounds run twice: images on `/dev/shm` (tmpfs as mounted by default, small pages)
//! and on a tmpfs the bench mounts with `huge=within_size` in a mount namespace of its own
//! (left out, with the reason printed, where it may not mount).
//!
//! The dumps use the library (`criu::dump::dump`) with `--leave-running`, so one victim serves
//! every round; one more dump of 1 GiB per file system runs the `criu` binary, for its peak
//! resident memory (`VmHWM`, which it logs at `-v4`). Prints medians, GB/s and the ratio to the floor.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use criu::{DumpOptions, FinalState};

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn dump_once(pid: i32, dir: &Path, _log: &criu::LogSink) -> (Duration, u64) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let opts = DumpOptions {
        final_state: FinalState::Alive,
        ..DumpOptions::new(pid, dir)
    };
    let t = Instant::now();
    let s = criu::dump(&opts, None).expect("dump");
    (t.elapsed(), s.pages_written)
}

/// A child holding `bytes` of written anonymous memory, stdio on /dev/null, no other fds.
fn big_child(bytes: usize) -> i32 {
    let mut fds = [0i32; 2];
    // SAFETY: pipe writes two descriptors into fds.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the bench is single-threaded here; the child only makes raw syscalls.
    match unsafe { libc::fork() } {
        // SAFETY: raw syscalls on the child's own descriptors, and writes into the mapping it
        // just created.
        0 => unsafe {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            libc::dup2(null, 2);
            let p = libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            ) as *mut u8;
            let mut i = 0;
            while i < bytes {
                *p.add(i) = (i / 4096) as u8 | 1;
                i += 4096;
            }
            libc::write(fds[1], b"r".as_ptr() as *const libc::c_void, 1);
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            loop {
                libc::pause();
            }
        },
        pid => {
            let mut b = [0u8; 1];
            // SAFETY: reading one byte into b; closing our pipe ends.
            unsafe {
                libc::close(fds[1]);
                libc::read(fds[0], b.as_mut_ptr() as *mut libc::c_void, 1);
                libc::close(fds[0]);
            }
            pid
        }
    }
}

fn tiny_child() -> std::process::Child {
    let mut c = Command::new("sleep");
    c.arg("1000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: close_range is async-signal-safe.
    unsafe {
        c.pre_exec(|| {
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    let child = c.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    child
}

fn floor(bytes: usize, buf: &[u8], dir: &Path) -> Duration {
    let p = dir.join("floor.img");
    let t = Instant::now();
    let mut f = std::fs::File::create(&p).unwrap();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len());
        f.write_all(&buf[..n]).unwrap();
        left -= n;
    }
    drop(f);
    let d = t.elapsed();
    std::fs::remove_file(&p).unwrap();
    d
}

/// Forks the 50-process tree (own process group, led by its root); returns every pid, the
/// root first, then its children, then theirs (the order they must be reaped in).
fn tree_child() -> Vec<i32> {
    const KIDS: usize = 7;
    const GRANDKIDS: usize = 6;
    let mut fds = [0i32; 2];
    // SAFETY: pipe writes two descriptors into fds.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // Each process reports (level, pid) through the pipe, 8 bytes, atomic under PIPE_BUF.
    // SAFETY: the child only makes raw syscalls (fork, write, pause).
    let root = unsafe { libc::fork() };
    if root == 0 {
        // SAFETY: raw syscalls in the forked children, no allocation, no locks.
        unsafe {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            libc::dup2(null, 2);
            libc::setpgid(0, 0);
            let report = |level: i32| {
                let rec = [level, libc::getpid()];
                libc::write(fds[1], rec.as_ptr() as *const libc::c_void, 8);
            };
            for _ in 0..KIDS {
                if libc::fork() == 0 {
                    for _ in 0..GRANDKIDS {
                        if libc::fork() == 0 {
                            report(2);
                            loop {
                                libc::pause();
                            }
                        }
                    }
                    report(1);
                    loop {
                        libc::pause();
                    }
                }
            }
            report(0);
            loop {
                libc::pause();
            }
        }
    }
    // SAFETY: closing our write end so reads end if the tree dies.
    unsafe { libc::close(fds[1]) };
    let total = 1 + KIDS + KIDS * GRANDKIDS;
    let mut by_level: [Vec<i32>; 3] = Default::default();
    for _ in 0..total {
        let mut rec = [0i32; 2];
        // SAFETY: reads 8 bytes into rec.
        let n = unsafe { libc::read(fds[0], rec.as_mut_ptr() as *mut libc::c_void, 8) };
        assert_eq!(n, 8, "tree child died while starting");
        by_level[rec[0] as usize].push(rec[1]);
    }
    // SAFETY: closing our read end.
    unsafe { libc::close(fds[0]) };
    by_level.concat()
}

/// A child with `n` sleeping threads besides its main thread.
fn threads_child(n: usize) -> i32 {
    let mut fds = [0i32; 2];
    // SAFETY: pipe writes two descriptors into fds.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: called before any dump, while the bench has no other thread, so the child may
    // start threads (no lock can be held by a thread that did not come along).
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        for _ in 0..n {
            std::thread::spawn(|| {
                loop {
                    std::thread::sleep(Duration::from_secs(1000));
                }
            });
        }
        // SAFETY: raw syscalls on the child's own descriptors.
        unsafe {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            libc::dup2(null, 2);
            libc::write(fds[1], b"r".as_ptr() as *const libc::c_void, 1);
            libc::close(fds[1]);
            libc::close(fds[0]);
            loop {
                libc::pause();
            }
        }
    }
    let mut b = [0u8; 1];
    // SAFETY: reading one byte into b; closing our pipe ends.
    unsafe {
        libc::close(fds[1]);
        libc::read(fds[0], b.as_mut_ptr() as *mut libc::c_void, 1);
        libc::close(fds[0]);
    }
    pid
}

/// Kills the tree's process group and reaps root, children, grandchildren in that order
/// (each level is re-parented to us, a subreaper, once its parent is reaped).
fn kill_tree(pids: &[i32]) {
    // SAFETY: signals the tree's own process group, then reaps each of its pids.
    unsafe {
        libc::kill(-pids[0], libc::SIGKILL);
        for &p in pids {
            libc::waitpid(p, std::ptr::null_mut(), libc::__WALL);
        }
    }
}

fn kill(pid: i32) {
    // SAFETY: kill and waitpid on our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}

/// Runs the `criu` binary to dump `pid` into `dir` (`-R`); returns its wall time and the peak
/// resident memory it logs (`VmHWM` in kB, the file pages it mapped included). Not
/// `ru_maxrss`: that also holds what the bench had resident when it spawned criu.
fn dumper_peak(pid: i32, dir: &Path) -> (Duration, u64) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let t = Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_criu"))
        .args([
            "dump",
            "-R",
            "-v4",
            "-o",
            "peak.log",
            "-t",
            &pid.to_string(),
            "-D",
        ])
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let t = t.elapsed();
    assert!(o.status.success(), "criu dump: {o:?}");
    let log = std::fs::read_to_string(dir.join("peak.log")).unwrap();
    let kb = log
        .lines()
        .find_map(|l| l.split("peak memory of this criu: ").nth(1))
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("criu logs its peak memory at -v4");
    (t, kb)
}

/// Medians of `runs` dumps of the 1 GiB victim into `dir`, each followed by its floor.
struct BigRounds {
    dump: Duration,
    floor: Duration,
    written: u64,
    /// Every dump's time, in order (ms).
    runs: String,
}

fn big_rounds(pid: i32, dir: &Path, runs: usize, buf: &[u8], log: &criu::LogSink) -> BigRounds {
    let mut dumps = Vec::new();
    let mut floors = Vec::new();
    let mut written = 0;
    for _ in 0..runs {
        let (t, p) = dump_once(pid, &dir.join("big"), log);
        dumps.push(t);
        written = p * 4096;
        let _ = std::fs::remove_dir_all(dir.join("big"));
        floors.push(floor(written as usize, buf, dir));
    }
    let runs = dumps
        .iter()
        .map(|d| format!("{:.0}", d.as_secs_f64() * 1e3))
        .collect::<Vec<_>>()
        .join(" ");
    BigRounds {
        dump: median(&mut dumps),
        floor: median(&mut floors),
        written,
        runs,
    }
}

/// A tmpfs mounted with `huge=within_size` (huge folios for the file pages) in a mount
/// namespace of this process's own, so nothing outside sees it; unmounted and removed on drop.
struct HugeTmpfs(PathBuf);

impl HugeTmpfs {
    /// Must run before the bench forks or starts threads: only this thread moves to the new
    /// mount namespace.
    fn mount(at: PathBuf, bytes: usize) -> Result<HugeTmpfs, String> {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        // SAFETY: unshare and mount take no pointers but the C strings built here, which
        // outlive the calls.
        unsafe {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(format!("unshare: {}", std::io::Error::last_os_error()));
            }
            if libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                return Err(format!(
                    "make / private: {}",
                    std::io::Error::last_os_error()
                ));
            }
            std::fs::create_dir_all(&at).map_err(|e| format!("mkdir: {e}"))?;
            let target = CString::new(at.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
            let data = CString::new(format!("huge=within_size,size={bytes},mode=0700"))
                .map_err(|e| e.to_string())?;
            if libc::mount(
                c"criu-bench".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                data.as_ptr() as *const libc::c_void,
            ) != 0
            {
                let e = std::io::Error::last_os_error();
                let _ = std::fs::remove_dir(&at);
                return Err(format!("mount tmpfs: {e}"));
            }
        }
        Ok(HugeTmpfs(at))
    }
}

impl Drop for HugeTmpfs {
    fn drop(&mut self) {
        use std::os::unix::ffi::OsStrExt;
        if let Ok(t) = std::ffi::CString::new(self.0.as_os_str().as_bytes()) {
            // SAFETY: umount2 reads the C string, which outlives the call.
            unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (tiny_runs, big_runs, big) = if full {
        (20, 7, 1usize << 30)
    } else {
        (2, 1, 64usize << 20)
    };
    let base: PathBuf =
        PathBuf::from("/dev/shm").join(format!("criu-bench-{}", std::process::id()));
    std::fs::create_dir_all(&base).unwrap();
    // Removes the images from tmpfs even if a dump panics.
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(base.clone());
    // Declared after the cleanup so it is unmounted first.
    let huge = HugeTmpfs::mount(
        PathBuf::from(format!("/tmp/criu-bench-huge-{}", std::process::id())),
        2 * big + (256 << 20),
    );
    let log = criu::LogSink::open(None).unwrap();
    // The tree's grandchildren come to us when their parents die: reap them here.
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) only sets a flag on this process.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    // Forked before any dump has started a thread (the 100-thread child starts threads).
    let tree = tree_child();
    let threaded = threads_child(100);
    struct Victims(Vec<i32>, i32);
    impl Drop for Victims {
        fn drop(&mut self) {
            kill_tree(&self.0);
            kill(self.1);
        }
    }
    let victims = Victims(tree, threaded);
    let many_runs = if full { 9 } else { 1 };
    for (what, pid, tasks) in [
        ("tree of 50 processes", victims.0[0], 50.0),
        ("process with 100 threads", victims.1, 101.0),
    ] {
        let mut times = Vec::new();
        for _ in 0..many_runs {
            times.push(dump_once(pid, &base.join("many"), &log).0);
        }
        let m = median(&mut times);
        println!(
            "dump {what}: median {:.2} ms over {many_runs} runs, {:.3} ms per task",
            m.as_secs_f64() * 1e3,
            m.as_secs_f64() * 1e3 / tasks
        );
    }
    drop(victims);

    let mut tiny = tiny_child();
    let tpid = tiny.id() as i32;
    let mut times = Vec::new();
    let mut pages = 0;
    for _ in 0..tiny_runs {
        let (t, p) = dump_once(tpid, &base.join("tiny"), &log);
        times.push(t);
        pages = p;
    }
    let _ = tiny.kill();
    let _ = tiny.wait();
    let tiny_med = median(&mut times);
    println!(
        "dump tiny (sleep, {pages} pages): median {:.2} ms over {tiny_runs} runs (target < 15 ms)",
        tiny_med.as_secs_f64() * 1e3
    );

    let pid = big_child(big);
    let buf = vec![0x5au8; 64 << 20];
    let mut dirs = vec![("tmpfs", base.clone())];
    match &huge {
        Ok(h) => dirs.push(("tmpfs huge=within_size", h.0.clone())),
        Err(e) => println!("no huge-page tmpfs ({e}): its rounds are left out"),
    }
    for (what, dir) in dirs {
        let r = big_rounds(pid, &dir, big_runs, &buf, &log);
        let gbs = |t: Duration| r.written as f64 / t.as_secs_f64() / 1e9;
        println!(
            "dump {} MiB touched, images on {what}: median {:.3} s, {:.2} GB/s over {big_runs} runs \
             (target < 0.35 s for 1 GiB); runs {}",
            big >> 20,
            r.dump.as_secs_f64(),
            gbs(r.dump),
            r.runs
        );
        println!(
            "floor (write {} MiB to {what}): median {:.3} s, {:.2} GB/s; dump/floor = {:.2}",
            r.written >> 20,
            r.floor.as_secs_f64(),
            gbs(r.floor),
            r.dump.as_secs_f64() / r.floor.as_secs_f64()
        );
        let (t, kb) = dumper_peak(pid, &dir.join("big"));
        let _ = std::fs::remove_dir_all(dir.join("big"));
        println!(
            "criu dump binary, images on {what}: peak RSS {} MiB (VmHWM), {:.3} s",
            kb >> 10,
            t.as_secs_f64()
        );
    }
    kill(pid);
    let _ = std::fs::remove_dir_all(&base);
}
