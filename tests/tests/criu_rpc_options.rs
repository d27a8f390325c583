//! `criu_opts` fields of issue 16 over `criu swrk`, each shown to have its effect on a live
//! process (the command-line twins of these tests are in `criu_restore_locks.rs`,
//! `criu_sockets.rs`, `criu_restore_session.rs`, `criu_mnt_ns.rs`, `criu_cgroup_props.rs`,
//! `criu_freeze_cgroup.rs`):
//!
//! - `work_dir_fd`: the logs go to the work directory, the images to the images directory;
//! - `file_locks`: a victim holding flock, POSIX and OFD locks is refused without it and gets
//!   them back with it;
//! - `ext_unix_sk`: a socket connected outside the tree is refused without it and connected
//!   again at restore with it;
//! - `shell_job`: a session leader on a terminal is dumped and gets its terminal back;
//! - `ext_mnt` and `root`: a counter in a mount namespace of its own, its host binds named
//!   external at dump and mapped back at restore into a new root;
//! - `manage_cgroups` / `manage_cgroups_mode` and `cg_root`: the modes treat existing and
//!   missing cgroups as criu(8) says; the tree's cgroups are moved;
//! - `freeze_cgroup` and `timeout`: the tree's cgroup is frozen for the dump and thawed after;
//!   a cgroup that cannot freeze (a task of it waits on a FUSE mount nobody serves) fails the
//!   dump after `timeout` seconds, not the default 10.
//!
//! Every test runs as root, under the test lock and as a child subreaper, and kills and reaps
//! what it started; cgroups and mounts it made are removed.

use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use compel_criu_tests::cgroups::{TestCgroups, cgroup_of};
use compel_criu_tests::mnt_ns::{assert_counts_on, counts, spawn_in_ns, table};
use compel_criu_tests::{
    Exit, Scratch, Spawned, become_subreaper, children_of, fd_locks, open_dir, pid_exists, req,
    skip_if_not_root, spawn_counter, swrk_once, test_lock, tracer_pid, tty_nr, wait_exit_timeout,
    wait_file,
};
use criu_images::pb::{CgroupRoot, CriuCgMode, CriuOpts, CriuReqType, CriuResp, ExtMountMap};

const COUNTER: &str = env!("CARGO_BIN_EXE_criu-victim-counter");

/// A `DUMP` of `pid` into `dir` over its own swrk session, `o` adding the options under test.
fn dump(pid: i32, dir: &fs::File, mut o: CriuOpts) -> CriuResp {
    o.images_dir_fd = dir.as_raw_fd();
    o.pid = Some(pid);
    o.log_file.get_or_insert_with(|| "dump.log".into());
    o.log_level.get_or_insert(4);
    let (r, code) = swrk_once(&req(CriuReqType::Dump, o));
    assert_eq!(code, Some(0), "criu swrk did not end cleanly: {r:?}");
    r
}

/// A `RESTORE` from `dir`, `o` adding the options under test.
fn restore(dir: &fs::File, mut o: CriuOpts) -> CriuResp {
    o.images_dir_fd = dir.as_raw_fd();
    o.log_file.get_or_insert_with(|| "restore.log".into());
    o.log_level.get_or_insert(4);
    let (r, code) = swrk_once(&req(CriuReqType::Restore, o));
    assert_eq!(code, Some(0), "criu swrk did not end cleanly: {r:?}");
    r
}

/// The dump succeeded and killed `v`, which is reaped.
fn dumped(r: &CriuResp, v: &mut Spawned, img: &Path) {
    assert!(r.success, "dump: {r:?}\n{}", log(img, "dump.log"));
    assert_eq!(
        wait_exit_timeout(v.pid(), Duration::from_secs(5)),
        Ok(Some(Exit::Signal(libc::SIGKILL)))
    );
    v.mark_reaped();
}

/// The restore succeeded with the root `pid`; a guard for it.
fn restored(r: &CriuResp, pid: i32, logdir: &Path) -> Spawned {
    assert!(r.success, "restore: {r:?}\n{}", log(logdir, "restore.log"));
    let got = r.restore.as_ref().map_or(-1, |x| x.pid);
    let g = Spawned::guard(got);
    assert_eq!(got, pid);
    g
}

fn log(dir: &Path, name: &str) -> String {
    fs::read_to_string(dir.join(name)).unwrap_or_default()
}

fn errmsg(r: &CriuResp) -> &str {
    r.cr_errmsg.as_deref().unwrap_or("")
}

fn counting(count: &Path) -> bool {
    let n = || {
        fs::read_to_string(count)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    let before = n();
    std::thread::sleep(Duration::from_millis(200));
    n() > before
}

#[test]
fn work_dir_fd_takes_the_logs_and_the_images_stay_in_the_images_dir() {
    skip_if_not_root!("work_dir_fd_takes_the_logs_and_the_images_stay_in_the_images_dir");
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let (img, work) = (d.path().join("img"), d.path().join("work"));
    fs::create_dir(&img).unwrap();
    fs::create_dir(&work).unwrap();
    let (dir, wdir) = (
        fs::File::open(&img).unwrap(),
        fs::File::open(&work).unwrap(),
    );
    let mut v = spawn_counter(COUNTER, d.path(), None);
    let with_work = || CriuOpts {
        work_dir_fd: Some(wdir.as_raw_fd()),
        ..Default::default()
    };
    let r = dump(v.pid(), &dir, with_work());
    dumped(&r, &mut v, &work);
    assert!(log(&work, "dump.log").contains("dump"), "no dump log");
    assert!(!img.join("dump.log").exists());
    assert!(img.join("inventory.img").exists(), "no images");
    assert!(!work.join("inventory.img").exists());
    let r = restore(&dir, with_work());
    let g = restored(&r, v.pid(), &work);
    assert!(log(&work, "restore.log").contains("restore"));
    assert!(!img.join("restore.log").exists());
    assert!(counting(&d.path().join("count")));
    drop(g);
}

#[test]
fn file_locks_are_refused_without_it_and_come_back_with_it() {
    skip_if_not_root!("file_locks_are_refused_without_it_and_come_back_with_it");
    let _g = test_lock();
    become_subreaper();
    let s = Scratch::new();
    let files = s.path("files");
    fs::create_dir(&files).unwrap();
    let (mut v, said) = s.spawn_victim(
        env!("CARGO_BIN_EXE_criu-victim-locks"),
        &[files.to_str().unwrap(), s.ready.to_str().unwrap()],
        None,
        Duration::from_secs(30),
    );
    let pid = v.pid();
    let child: i32 = said.split_whitespace().nth(2).unwrap().parse().unwrap();
    let _child_guard = Spawned::guard(child);
    let before: Vec<Vec<String>> = (3..=6).map(|fd| fd_locks(pid, fd)).collect();
    assert_eq!(before.iter().map(Vec::len).sum::<usize>(), 3, "{before:?}");
    let dir = fs::File::open(&s.img).unwrap();
    let r = dump(pid, &dir, CriuOpts::default());
    assert!(!r.success, "{r:?}");
    assert!(errmsg(&r).contains("file locks"), "{r:?}");
    assert_eq!(tracer_pid(pid), Some(0), "left traced");
    let r = dump(
        pid,
        &dir,
        CriuOpts {
            file_locks: Some(true),
            ..Default::default()
        },
    );
    dumped(&r, &mut v, &s.img);
    let _ = compel_criu_tests::wait_exit(child);
    let r = restore(
        &dir,
        CriuOpts {
            file_locks: Some(true),
            ..Default::default()
        },
    );
    let g = restored(&r, pid, &s.img);
    let after: Vec<Vec<String>> = (3..=6).map(|fd| fd_locks(pid, fd)).collect();
    assert_eq!(after, before);
    // They bind: another open file of `a` cannot take the flock.
    let probe = fs::File::open(files.join("a")).unwrap();
    // SAFETY: flock on our own descriptor.
    let r = unsafe { libc::flock(probe.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    assert_eq!(r, -1);
    drop(g);
}

#[test]
fn ext_unix_sk_lets_a_socket_to_the_outside_be_dumped_and_connected_again() {
    skip_if_not_root!("ext_unix_sk_lets_a_socket_to_the_outside_be_dumped_and_connected_again");
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let (out, ready, work) = (
        d.path().join("out"),
        d.path().join("ready"),
        d.path().join("w"),
    );
    fs::create_dir(&work).unwrap();
    let lpath = d.path().join("outside.sock");
    let l = std::os::unix::net::UnixListener::bind(&lpath).unwrap();
    let ext = format!("ext={}", lpath.display());
    let mut v = Spawned::spawn(
        env!("CARGO_BIN_EXE_criu-victim-sockets"),
        &[
            out.to_str().unwrap(),
            ready.to_str().unwrap(),
            work.to_str().unwrap(),
            &ext,
        ],
        &d.path().join("victim.log"),
        None,
    );
    wait_file(&ready, Duration::from_secs(10));
    let kid = (0..500)
        .find_map(|_| {
            let k = children_of(v.pid()).first().copied();
            if k.is_none() {
                std::thread::sleep(Duration::from_millis(10));
            }
            k
        })
        .expect("the victim's child");
    let mut k = Spawned::guard(kid);
    let (_first, _) = l.accept().unwrap();
    let img = d.path().join("img");
    fs::create_dir(&img).unwrap();
    let dir = fs::File::open(&img).unwrap();
    let r = dump(v.pid(), &dir, CriuOpts::default());
    assert!(!r.success, "{r:?}");
    assert!(errmsg(&r).contains("outside the dumped tree"), "{r:?}");
    assert_eq!(
        wait_exit_timeout(v.pid(), Duration::from_millis(100)),
        Ok(None)
    );
    let with = || CriuOpts {
        ext_unix_sk: Some(true),
        ..Default::default()
    };
    let r = dump(v.pid(), &dir, with());
    dumped(&r, &mut v, &img);
    assert!(k.wait(Duration::from_secs(5)).is_some());
    let r = restore(&dir, with());
    let g = restored(&r, v.pid(), &img);
    let _kid = Spawned::guard(kid);
    // The restored socket is a new connection to the same listener.
    let _ = fs::remove_file(&out);
    compel_criu_tests::signal(g.pid(), nix::sys::signal::Signal::SIGUSR1);
    let (mut again, _) = l.accept().unwrap();
    again
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut b = [0u8; 5];
    std::io::Read::read_exact(&mut again, &mut b).unwrap();
    assert_eq!(&b, b"again");
    assert_eq!(wait_file(&out, Duration::from_secs(10)), "check ok");
    drop(g);
}

#[test]
fn shell_job_dumps_a_session_leader_on_a_terminal_and_gives_it_back() {
    skip_if_not_root!("shell_job_dumps_a_session_leader_on_a_terminal_and_gives_it_back");
    let _g = test_lock();
    become_subreaper();
    let (master, pts) = compel_criu_tests::pty();
    let d = open_dir();
    let (count, ready) = (d.path().join("count"), d.path().join("ready"));
    let pid = {
        use std::os::unix::process::CommandExt;
        let slave = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&pts)
            .unwrap();
        let sfd = slave.as_raw_fd();
        let mut cmd = std::process::Command::new(COUNTER);
        cmd.args([count.to_str().unwrap(), ready.to_str().unwrap()]);
        // SAFETY: only async-signal-safe calls in the child: a new session whose controlling
        // terminal is the pty, on fds 0..2, nothing else inherited.
        unsafe {
            cmd.pre_exec(move || {
                libc::setsid();
                libc::ioctl(sfd, libc::TIOCSCTTY, 0);
                for fd in 0..3 {
                    libc::dup2(sfd, fd);
                }
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
                Ok(())
            });
        }
        cmd.spawn().unwrap().id() as i32
    };
    let mut v = Spawned::guard(pid);
    wait_file(&ready, Duration::from_secs(10));
    assert_ne!(tty_nr(pid), 0);
    let img = d.path().join("img");
    fs::create_dir(&img).unwrap();
    let dir = fs::File::open(&img).unwrap();
    let r = dump(pid, &dir, CriuOpts::default());
    assert!(
        !r.success,
        "a terminal's session dumped without shell_job: {r:?}"
    );
    assert!(counting(&count), "the victim does not run on");
    let with = || CriuOpts {
        shell_job: Some(true),
        ..Default::default()
    };
    let r = dump(pid, &dir, with());
    dumped(&r, &mut v, &img);
    let r = restore(&dir, with());
    let g = restored(&r, pid, &img);
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/fd/0")).unwrap(),
        PathBuf::from(&pts)
    );
    assert!(counting(&count), "the restored victim does not count");
    drop(g);
    drop(master);
}

#[test]
fn ext_mnt_and_root_bring_a_mount_namespace_back_into_a_new_root() {
    skip_if_not_root!("ext_mnt_and_root_bring_a_mount_namespace_back_into_a_new_root");
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("rootfs");
    let bins = compel_criu_tests::bin_dir().display().to_string();
    let mut v = spawn_in_ns(d.path(), &root);
    let want = table(v.pid());
    let pid = v.pid();
    let img = d.path().join("img");
    fs::create_dir(&img).unwrap();
    let dir = fs::File::open(&img).unwrap();
    let map = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, val)| ExtMountMap {
                key: k.to_string(),
                val: val.to_string(),
            })
            .collect::<Vec<_>>()
    };
    // Without the map the host binds are refused, the counter runs on.
    let r = dump(pid, &dir, CriuOpts::default());
    assert!(!r.success, "{r:?}");
    assert!(errmsg(&r).contains("mnt["), "{r:?}");
    let at = counts(pid).len();
    std::thread::sleep(Duration::from_millis(200));
    assert!(counts(pid).len() > at, "the counter stopped");
    let at_dump = counts(pid).len();
    let r = dump(
        pid,
        &dir,
        CriuOpts {
            ext_mnt: map(&[("/usr", "usr"), ("/t", "bins")]),
            ..Default::default()
        },
    );
    dumped(&r, &mut v, &img);
    let r = restore(
        &dir,
        CriuOpts {
            root: Some(root.display().to_string()),
            ext_mnt: map(&[("usr", "/usr"), ("bins", &bins)]),
            ..Default::default()
        },
    );
    let g = restored(&r, pid, &img);
    assert_counts_on(pid, at_dump);
    assert_eq!(table(pid), want, "the mount table differs");
    drop(g);
}

#[test]
fn manage_cgroups_modes_and_cg_root_over_rpc() {
    skip_if_not_root!("manage_cgroups_modes_and_cg_root_over_rpc");
    if !TestCgroups::have("pids") {
        eprintln!("skipped: no v1 pids hierarchy here");
        return;
    }
    let _g = test_lock();
    become_subreaper();
    let mut cg = TestCgroups::new("rpc-cg");
    let mut moved = TestCgroups::new("rpc-cg-moved");
    let d = open_dir();
    let img = d.path().join("img");
    fs::create_dir(&img).unwrap();
    let dir = fs::File::open(&img).unwrap();
    let mut v = spawn_counter(COUNTER, d.path(), None);
    let pid = v.pid();
    cg.make("pids", "");
    cg.set("pids", "", "pids.max", "77");
    cg.enter("pids", "", pid);
    let r = dump(pid, &dir, CriuOpts::default());
    dumped(&r, &mut v, &img);
    let top = cg.shown("");
    let mode = |m: CriuCgMode| CriuOpts {
        manage_cgroups_mode: Some(m as i32),
        ..Default::default()
    };
    // props puts the saved limit back on the existing cgroup, soft (also plain
    // manage_cgroups) leaves it.
    for (o, want) in [
        (mode(CriuCgMode::Props), "77"),
        (mode(CriuCgMode::Soft), "99"),
        (
            CriuOpts {
                manage_cgroups: Some(true),
                ..Default::default()
            },
            "99",
        ),
    ] {
        cg.set("pids", "", "pids.max", "99");
        let r = restore(&dir, o);
        let g = restored(&r, pid, &img);
        assert_eq!(cgroup_of(pid, "pids").as_deref(), Some(top.as_str()));
        assert_eq!(cg.get("pids", "", "pids.max"), want);
        drop(g);
    }
    // strict refuses the existing one; nothing is left.
    let r = restore(&dir, mode(CriuCgMode::Strict));
    assert!(!r.success && errmsg(&r).contains("exists already"), "{r:?}");
    assert!(!pid_exists(pid));
    // ignore: the tree stays in criu's cgroup.
    cg.remove_all();
    let r = restore(&dir, mode(CriuCgMode::Ignore));
    let g = restored(&r, pid, &img);
    assert_eq!(cgroup_of(pid, "pids"), cgroup_of("self", "pids"));
    assert!(!cg.path("pids", "").exists());
    drop(g);
    // cg_root moves the tree's cgroup; full makes it with the saved limit.
    moved.make("pids", "");
    let r = restore(
        &dir,
        CriuOpts {
            cg_root: vec![CgroupRoot {
                ctrl: Some("pids".into()),
                path: moved.shown(""),
            }],
            ..mode(CriuCgMode::Full)
        },
    );
    let g = restored(&r, pid, &img);
    assert_eq!(
        cgroup_of(pid, "pids").as_deref(),
        Some(moved.shown("").as_str())
    );
    assert_eq!(moved.get("pids", "", "pids.max"), "77");
    assert!(!cg.path("pids", "").exists());
    drop(g);
}

/// A FUSE mount nobody serves: whoever touches it waits (killable, so no cgroup freezer can
/// stop it) until the mount is detached and the device closed, on drop.
struct StuckFuse {
    /// Held (never read) so the connection stays up until dropped.
    _dev: OwnedFd,
    at: PathBuf,
}

impl StuckFuse {
    fn mount(at: &Path) -> Option<StuckFuse> {
        fs::create_dir_all(at).unwrap();
        // SAFETY: open with a literal path; the descriptor is owned at once.
        let fd = unsafe { libc::open(c"/dev/fuse".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            eprintln!("skipped: no /dev/fuse");
            return None;
        }
        // SAFETY: `fd` was just opened and nothing else owns it.
        let dev = unsafe { OwnedFd::from_raw_fd(fd) };
        let data = format!("fd={fd},rootmode=40000,user_id=0,group_id=0");
        if let Err(e) = nix::mount::mount(
            Some("crtest"),
            at,
            Some("fuse"),
            nix::mount::MsFlags::empty(),
            Some(data.as_str()),
        ) {
            eprintln!("skipped: cannot mount fuse: {e}");
            return None;
        }
        Some(StuckFuse {
            _dev: dev,
            at: at.to_path_buf(),
        })
    }
}

impl Drop for StuckFuse {
    fn drop(&mut self) {
        // Detached first; the device closes after this (a field), which aborts the waits.
        let _ = nix::mount::umount2(&self.at, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn freeze_cgroup_freezes_for_the_dump_and_timeout_bounds_the_wait() {
    skip_if_not_root!("freeze_cgroup_freezes_for_the_dump_and_timeout_bounds_the_wait");
    let Some(v2) = TestCgroups::v2() else {
        return;
    };
    let _g = test_lock();
    become_subreaper();
    let mut cg = TestCgroups::new("rpc-freeze");
    let cgdir = cg.make(v2, "");
    if !cgdir.join("cgroup.freeze").exists() {
        eprintln!("skipped: no cgroup.freeze");
        return;
    }
    let d = open_dir();
    let img = d.path().join("img");
    fs::create_dir(&img).unwrap();
    let dir = fs::File::open(&img).unwrap();
    let count = d.path().join("count");
    let v = spawn_counter(COUNTER, d.path(), None);
    cg.enter(v2, "", v.pid());
    let freeze = |timeout: Option<u32>| CriuOpts {
        freeze_cgroup: Some(cgdir.display().to_string()),
        leave_running: Some(true),
        timeout,
        ..Default::default()
    };
    // The cgroup is frozen for the dump, thawed after; the tree runs on.
    let r = dump(v.pid(), &dir, freeze(None));
    assert!(r.success, "{r:?}\n{}", log(&img, "dump.log"));
    assert!(log(&img, "dump.log").contains("cgroup frozen"));
    assert_eq!(cg.get(v2, "", "cgroup.freeze"), "0");
    assert!(counting(&count), "the victim does not run on");

    // A task of the cgroup that cannot be frozen: the dump gives up after `timeout` seconds.
    let Some(fuse) = StuckFuse::mount(&d.path().join("fuse")) else {
        return;
    };
    let stuck = Spawned::spawn(
        "/bin/sh",
        &[
            "-c",
            &format!(
                "echo $$ > {}/cgroup.procs; exec stat {}/x",
                cgdir.display(),
                fuse.at.display()
            ),
            "sh",
        ],
        &d.path().join("stuck.log"),
        None,
    );
    let t0 = Instant::now();
    while !compel_criu_tests::status_field(stuck.pid(), "State:").starts_with('D') {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the task is not stuck"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    for t in [1u32, 3] {
        let t0 = Instant::now();
        let r = dump(v.pid(), &dir, freeze(Some(t)));
        let took = t0.elapsed();
        assert!(!r.success, "{r:?}");
        assert!(
            errmsg(&r).contains(&format!("not frozen after {t}s")),
            "{r:?}"
        );
        let t = Duration::from_secs(u64::from(t));
        assert!(took >= t && took < t + Duration::from_secs(4), "{took:?}");
        assert_eq!(cg.get(v2, "", "cgroup.freeze"), "0", "left frozen");
        assert_eq!(tracer_pid(v.pid()), Some(0), "left traced");
        assert!(counting(&count), "the victim does not run on");
    }
    drop(fuse);
    drop(stuck);
    drop(v);
    cg.remove_all();
}
