//! Lazy restore (post-copy): `criu restore --lazy-pages` with `criu lazy-pages` serving the
//! private anonymous memory after the tasks resume, from the images or from a page server, and
//! what happens when the daemon dies.
//!
//! The tests run as root, under the test lock and as a child subreaper, and kill and reap
//! what they started.

use std::fs;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use compel_criu_tests::{
    Exit, Scratch, ask_check, become_subreaper, criu_bin, dump_and_reap, free_port, pid_exists,
    restore_detached, skip_if_not_root, test_lock, wait_exit_timeout,
};

/// Starts `criu lazy-pages -D IMG -o lazy.log -v4 EXTRA` (with `CRIU_LAZY_PUSH=0` unless
/// `push`) and waits for its `--status-fd` byte (it listens from then on).
fn lazy_pages(img: &Path, push: bool, extra: &[&str]) -> Child {
    let (r, w): (OwnedFd, OwnedFd) = nix::unistd::pipe().unwrap();
    let wfd = w.as_raw_fd().to_string();
    let child = Command::new(criu_bin())
        .env("CRIU_LAZY_PUSH", if push { "1" } else { "0" })
        .args(["lazy-pages", "-D", img.to_str().unwrap()])
        .args(["--status-fd", &wfd, "-o", "lazy.log", "-v4"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(w);
    let mut b = [1u8; 1];
    let mut rf = fs::File::from(r);
    assert_eq!(
        rf.read(&mut b).unwrap(),
        1,
        "criu lazy-pages did not start:\n{}",
        fs::read_to_string(img.join("lazy.log")).unwrap_or_default()
    );
    child
}

/// Waits up to `secs` for `c` to end; returns whether it succeeded.
fn finish(c: &mut Child, secs: u64, log: &Path) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(st) = c.try_wait().unwrap() {
            return st.success();
        }
        if Instant::now() > end {
            let _ = c.kill();
            let _ = c.wait();
            panic!(
                "{} did not end:\n{}",
                log.display(),
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How many pages the restore left to the daemon, from its log.
fn lazy_pages_left(img: &Path) -> u64 {
    let log = fs::read_to_string(img.join("restore.log")).unwrap();
    log.lines()
        .filter(|l| l.contains("memory left to the lazy-pages daemon"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("lazy_pages="))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum()
}

/// A `key=N` field of a log line.
fn stat(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line}"))
}

/// Kills and reaps a daemon left running when a test fails (a no-op once it was waited for).
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0);
        if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).is_ok() {
            let _ = nix::sys::wait::waitpid(pid, None);
        }
    }
}

/// The daemon's closing line (`all lazy pages are in ...`), once it ended successfully.
fn daemon_done(daemon: &mut Child, img: &Path) -> String {
    let log = img.join("lazy.log");
    let ok = finish(daemon, 60, &log);
    let text = fs::read_to_string(&log).unwrap();
    assert!(ok, "criu lazy-pages failed:\n{text}");
    text.lines()
        .find(|l| l.contains("all lazy pages are in"))
        .unwrap_or_else(|| panic!("{text}"))
        .to_string()
}

fn kill_and_reap(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    assert_eq!(
        wait_exit_timeout(pid, Duration::from_secs(5)),
        Ok(Some(Exit::Signal(libc::SIGKILL)))
    );
}

/// Starts the 64 MiB victim (pattern with holes), dumps it; returns the scratch dir, its pid
/// and the address of its 64 MiB area.
fn dumped_victim() -> (Scratch, i32) {
    let (s, pid, _) = dumped_victim_at();
    (s, pid)
}

fn dumped_victim_at() -> (Scratch, i32, u64) {
    let s = Scratch::new();
    let (mut v, said) = s.spawn_victim(
        env!("CARGO_BIN_EXE_criu-victim-big-memory"),
        &["64", s.ready.to_str().unwrap(), "holes"],
        None,
        Duration::from_secs(30),
    );
    let pid = v.pid();
    let addr = u64::from_str_radix(said.split_whitespace().nth(2).unwrap(), 16).unwrap();
    dump_and_reap(&mut v, &s.img, &[]);
    (s, pid, addr)
}

/// 64 MiB of a known pattern (with holes that must read as zeros) restored lazily from the
/// images with the background push off: the restore fills none of it, the victim runs and
/// checks every byte, and every page it reads comes in on its fault (the holes as zero
/// pages); the daemon ends once the last saved page is in.
#[test]
fn lazy_restore_on_faults_from_the_images() {
    skip_if_not_root!("lazy_restore_on_faults_from_the_images");
    let _g = test_lock();
    become_subreaper();
    let (s, pid) = dumped_victim();
    let mut daemon = lazy_pages(&s.img, false, &[]);
    let _kill = KillOnDrop(daemon.id() as i32);
    let restored = restore_detached(&s.img, &["--lazy-pages"]);
    assert_eq!(restored, pid);
    let left = lazy_pages_left(&s.img);
    assert!(
        left >= 64 * 256 - 64,
        "the restore left {left} pages to the daemon"
    );
    let verdict = check(pid, &s.ready, &[&s.img.join("lazy.log")]);
    assert_eq!(verdict.trim(), "check ok");
    // Without the push, pages the victim never touches (its heap, libc's data) stay in the
    // images: the daemon ends when the victim does.
    kill_and_reap(pid);
    let done = daemon_done(&mut daemon, &s.img);
    // Every page of the 64 MiB area but the 16 holes came in on a fault.
    assert!(stat(&done, "fault_pages") >= 64 * 256 - 16, "{done}");
    assert_eq!(
        stat(&done, "fault_pages") + stat(&done, "dropped_pages"),
        left,
        "{done}"
    );
    assert_eq!(stat(&done, "pushed_pages"), 0, "{done}");
    // The 16 holes (one page in 4 MiB) were never saved: zero pages on their faults.
    assert!(stat(&done, "zero_pages") >= 16, "{done}");
}

/// Asks the victim to check itself and returns its verdict; on a timeout, panics with the
/// logs.
fn check(pid: i32, ready: &Path, logs: &[&Path]) -> String {
    let file = ready.with_extension("2");
    let _ = fs::remove_file(&file);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(t) = fs::read_to_string(&file)
            && !t.is_empty()
        {
            return t;
        }
        if Instant::now() > end {
            let mut all = String::new();
            for l in logs {
                all += &format!("--- {}:\n{}\n", l.display(), compel_criu_tests::tail(l, 40));
            }
            let st = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            panic!("no verdict from {pid}\n{st}\n{all}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The same with the background push: whatever the victim did not touch first is pushed,
/// and every page the restore left out comes in exactly once.
#[test]
fn lazy_restore_pushes_the_rest() {
    skip_if_not_root!("lazy_restore_pushes_the_rest");
    let _g = test_lock();
    become_subreaper();
    let (s, pid) = dumped_victim();
    let mut daemon = lazy_pages(&s.img, true, &[]);
    let _kill = KillOnDrop(daemon.id() as i32);
    assert_eq!(restore_detached(&s.img, &["--lazy-pages"]), pid);
    let left = lazy_pages_left(&s.img);
    let verdict = ask_check(pid, &s.ready.with_extension("2"));
    assert_eq!(verdict.trim(), "check ok");
    let done = daemon_done(&mut daemon, &s.img);
    assert_eq!(
        stat(&done, "fault_pages") + stat(&done, "pushed_pages"),
        left,
        "{done}"
    );
    let _ = fs::remove_file(s.ready.with_extension("2"));
    assert_eq!(
        ask_check(pid, &s.ready.with_extension("2")).trim(),
        "check ok"
    );
    kill_and_reap(pid);
}

/// Overwrites the bytes of the pages of `[a, b)` in the pages file of `pid` in `img` with
/// 0xa5, so that a restore that read them from there would fail its check.
fn spoil_pages(img: &Path, pid: i32, a: u64, b: u64) -> u64 {
    use std::os::unix::fs::FileExt;
    let pm = criu_images::Pagemap::read(img.join(format!("pagemap-{pid}.img"))).unwrap();
    let f = fs::OpenOptions::new()
        .write(true)
        .open(img.join(pm.pages_file_name()))
        .unwrap();
    let mut spoiled = 0;
    for r in pm.runs().unwrap() {
        let (x, y) = (r.vaddr.max(a), (r.vaddr + r.len()).min(b));
        if r.flags & criu_images::pagemap::PE_PRESENT != 0 && x < y {
            let len = (y - x) as usize;
            f.write_all_at(&vec![0xa5u8; len], r.file_offset + (x - r.vaddr))
                .unwrap();
            spoiled += (y - x) / 4096;
        }
    }
    spoiled
}

/// Post-copy through a page server: `criu page-server --lazy-pages` serves the source images
/// and `criu lazy-pages --page-server` asks it for every page, both on the loopback of a
/// network namespace the test made; the destination's copy of the images has the pages of
/// the victim's 64 MiB area spoiled, so its check passes only with the pages that came over
/// the network.
#[test]
fn lazy_restore_through_a_page_server_in_a_netns() {
    skip_if_not_root!("lazy_restore_through_a_page_server_in_a_netns");
    let _g = test_lock();
    become_subreaper();
    let (s, pid, addr) = dumped_victim_at();
    let dst = s.path("dst");
    fs::create_dir(&dst).unwrap();
    compel_criu_tests::copy_dir(&s.img, &dst);
    // The 64 MiB area is lazy (the main stack is not: it is restored at once).
    assert!(spoil_pages(&dst, pid, addr, addr + (64 << 20)) >= 64 * 256 - 16);
    let port = free_port().to_string();
    let criu = criu_bin();
    let criu = criu.to_str().unwrap();
    // Both ends in one new network namespace: the page server in the background, the daemon
    // in the foreground (it says when it listens through a fifo: its --status-fd).
    let fifo = s.path("status");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let script = format!(
        "ip link set lo up && \
         {criu} page-server --lazy-pages -D {src} --address 127.0.0.1 --port {port} \
            -o page-server.log -v4 & \
         sleep 0.3; exec {criu} lazy-pages -D {dst} --page-server --address 127.0.0.1 \
            --port {port} -o lazy.log -v4 --status-fd 3 3>{fifo}",
        src = s.img.display(),
        dst = dst.display(),
        fifo = fifo.display(),
    );
    let mut daemon = Command::new("/usr/bin/unshare")
        .args(["--net", "--", "sh", "-c", &script])
        .env("CRIU_LAZY_PUSH", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _kill = KillOnDrop(daemon.id() as i32);
    let mut b = [1u8; 1];
    let n = fs::File::open(&fifo).unwrap().read(&mut b).unwrap();
    assert_eq!(
        n,
        1,
        "criu lazy-pages did not start:\n{}",
        fs::read_to_string(dst.join("lazy.log")).unwrap_or_default()
    );
    assert_eq!(restore_detached(&dst, &["--lazy-pages"]), pid);
    let left = lazy_pages_left(&dst);
    let verdict = check(
        pid,
        &s.ready,
        &[&dst.join("lazy.log"), &s.img.join("page-server.log")],
    );
    assert_eq!(verdict.trim(), "check ok");
    kill_and_reap(pid);
    let done = daemon_done(&mut daemon, &dst);
    assert!(stat(&done, "fault_pages") >= 64 * 256 - 16, "{done}");
    assert_eq!(
        stat(&done, "fault_pages") + stat(&done, "dropped_pages"),
        left,
        "{done}"
    );
    let ps_log = fs::read_to_string(s.img.join("page-server.log")).unwrap_or_default();
    assert!(ps_log.contains("lazy session over"), "{ps_log}");
}

/// The daemon dies (SIGKILL) while the restored victim still misses most of its memory: the
/// watchdog kills the victim instead of letting it read zeros or wait forever.
#[test]
fn lazy_restore_daemon_death_kills_the_tree() {
    skip_if_not_root!("lazy_restore_daemon_death_kills_the_tree");
    let _g = test_lock();
    become_subreaper();
    let (s, pid) = dumped_victim();
    let mut daemon = lazy_pages(&s.img, false, &[]);
    let _kill = KillOnDrop(daemon.id() as i32);
    assert_eq!(restore_detached(&s.img, &["--lazy-pages"]), pid);
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    // The victim is asked to read all of its memory: it must die, not hang.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGUSR1,
    );
    assert_eq!(
        wait_exit_timeout(pid, Duration::from_secs(10)),
        Ok(Some(Exit::Signal(libc::SIGKILL))),
        "the victim outlived its lazy-pages daemon"
    );
    assert!(
        !s.ready.with_extension("2").exists(),
        "the victim checked its memory without its pages"
    );
}

/// Without a daemon the restore fails cleanly before creating anything.
#[test]
fn lazy_restore_without_a_daemon_fails_cleanly() {
    skip_if_not_root!("lazy_restore_without_a_daemon_fails_cleanly");
    let _g = test_lock();
    become_subreaper();
    let (s, pid) = dumped_victim();
    let o = compel_criu_tests::criu(&[
        "restore",
        "-D",
        s.img.to_str().unwrap(),
        "--lazy-pages",
        "-d",
    ]);
    assert!(!o.status.success());
    let err = compel_criu_tests::stderr_text(&o);
    assert!(err.contains("lazy-pages.socket"), "{err}");
    assert!(!pid_exists(pid));
}

/// `criu dump --lazy-pages` keeps the tree frozen while it serves the pages it saved: a client
/// asking with `PS_IOV_GET` gets the victim's pattern; once it closes the session the dump
/// ends and the victim is gone.
#[test]
fn dump_lazy_pages_serves_until_closed() {
    use std::io::Write;
    skip_if_not_root!("dump_lazy_pages_serves_until_closed");
    let _g = test_lock();
    become_subreaper();
    let s = Scratch::new();
    let (mut v, said) = s.spawn_victim(
        env!("CARGO_BIN_EXE_criu-victim-big-memory"),
        &["8", s.ready.to_str().unwrap()],
        None,
        Duration::from_secs(30),
    );
    let pid = v.pid();
    let addr = u64::from_str_radix(said.split_whitespace().nth(2).unwrap(), 16).unwrap();
    let port = free_port();
    let p = port.to_string();
    let t = pid.to_string();
    let mut dump = Command::new(criu_bin())
        .args([
            "dump",
            "-t",
            &t,
            "-D",
            s.img.to_str().unwrap(),
            "-o",
            "dump.log",
            "-v4",
        ])
        .args(["--lazy-pages", "--address", "127.0.0.1", "--port", &p])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = s.img.join("dump.log");
    let end = Instant::now() + Duration::from_secs(30);
    while !fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("serving lazy pages")
    {
        assert!(
            Instant::now() < end,
            "{}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(
            dump.try_wait().unwrap().is_none(),
            "{}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Frozen (stopped under ptrace) while serving.
    let st = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(st.contains("State:\tt") || st.contains("State:\tT"), "{st}");
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let page = 5u64;
    let req = iov(7, 0, 3, addr + page * 4096, pid as u64);
    c.write_all(&req).unwrap();
    let mut head = [0u8; 32];
    c.read_exact(&mut head).unwrap();
    assert_eq!(
        u32::from_ne_bytes(head[0..4].try_into().unwrap()),
        (4 << 16) | 6
    );
    assert_eq!(u64::from_ne_bytes(head[8..16].try_into().unwrap()), 3);
    let mut data = vec![0u8; 3 * 4096];
    c.read_exact(&mut data).unwrap();
    for (k, chunk) in data.chunks(4096).enumerate() {
        let pg = (page as usize) + k;
        for (i, b) in chunk.iter().enumerate() {
            assert_eq!(*b, ((pg * 31 + i) & 0xff) as u8, "page {pg} byte {i}");
        }
    }
    c.write_all(&iov(0x1023, 0, 0, 0, 0)).unwrap();
    let mut st = [0u8; 4];
    c.read_exact(&mut st).unwrap();
    assert_eq!(i32::from_ne_bytes(st), 0);
    drop(c);
    assert!(
        finish(&mut dump, 30, &log),
        "{}",
        fs::read_to_string(&log).unwrap()
    );
    assert_eq!(
        wait_exit_timeout(pid, Duration::from_secs(5)),
        Ok(Some(Exit::Signal(libc::SIGKILL)))
    );
    v.mark_reaped();
}

/// One `page_server_iov` on the wire.
fn iov(cmd: u32, flags: u32, nr: u64, vaddr: u64, dst: u64) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[0..4].copy_from_slice(&((flags << 16) | cmd).to_ne_bytes());
    b[8..16].copy_from_slice(&nr.to_ne_bytes());
    b[16..24].copy_from_slice(&vaddr.to_ne_bytes());
    b[24..32].copy_from_slice(&dst.to_ne_bytes());
    b
}

/// CRIU 4.2's own images (the `single` fixture: its heap and anonymous areas are `PE_LAZY`
/// entries as CRIU wrote them) restored lazily by ours: every page the restore left out comes
/// in through the daemon, and the task's heap then holds exactly the bytes of CRIU's pages
/// file.
#[test]
fn lazy_restore_of_criu_4_2_single_fixture() {
    use std::os::unix::fs::FileExt;
    skip_if_not_root!("lazy_restore_of_criu_4_2_single_fixture");
    let _g = test_lock();
    become_subreaper();
    let Some(_bin) = compel_criu_tests::fixture_usable() else {
        return;
    };
    let s = Scratch::new();
    compel_criu_tests::copy_dir(&compel_criu_tests::fixtures_dir().join("single"), &s.img);
    let mut daemon = lazy_pages(&s.img, true, &[]);
    let _kill = KillOnDrop(daemon.id() as i32);
    let mut extra = vec!["--lazy-pages"];
    extra.extend_from_slice(compel_criu_tests::fixture_cpu_cap());
    let pid = restore_detached(&s.img, &extra);
    assert_eq!(pid, compel_criu_tests::SINGLE_PID);
    let _task = compel_criu_tests::Spawned::guard(pid);
    let left = lazy_pages_left(&s.img);
    assert!(left > 0, "nothing left to the daemon");
    let done = daemon_done(&mut daemon, &s.img);
    assert_eq!(
        stat(&done, "fault_pages") + stat(&done, "pushed_pages"),
        left,
        "{done}"
    );
    let pm = criu_images::Pagemap::read(s.img.join(format!("pagemap-{pid}.img"))).unwrap();
    let pages = fs::File::open(s.img.join(pm.pages_file_name())).unwrap();
    let mem = fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mm = criu_images::ImageDir::new(&s.img)
        .read_mm(pid as u32)
        .unwrap();
    let mut checked = 0;
    for r in pm.runs().unwrap() {
        // The heap: the program does not touch it while it sleeps (other areas hold its
        // thread's rseq area, which the kernel updates).
        let in_heap = mm.vmas.iter().any(|v| {
            v.start <= r.vaddr && r.vaddr < v.end && v.status & criu_images::vma::status::HEAP != 0
        });
        if r.flags & criu_images::pagemap::PE_LAZY == 0 || !in_heap {
            continue;
        }
        let mut want = vec![0u8; r.len() as usize];
        let mut got = vec![0u8; r.len() as usize];
        pages.read_exact_at(&mut want, r.file_offset).unwrap();
        mem.read_exact_at(&mut got, r.vaddr).unwrap();
        assert!(want == got, "lazy run at {:#x} differs", r.vaddr);
        checked += r.nr_pages;
    }
    assert!(checked >= 16, "{checked} heap pages checked");
    assert!(pid_exists(pid));
}
