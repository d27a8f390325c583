//! criu restore: bringing back processes from images, CRIU 4.2's own first.
//!
//! Every test runs as root, under the test lock and as a child subreaper, restores with
//! `--restore-detached` semantics through the library (the restored task is this process's
//! child), checks what a user would check in /proc and in the task's memory, then kills and
//! reaps it.

use std::fs;
use std::io::IoSliceMut;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use compel_criu_tests::{
    OwnTmpfs, Spawned, ask_check, assert_ok, become_subreaper, criu as run_criu, criu_bin,
    criu_dump, criu_env, dump_and_reap, fixtures_dir, pid_exists, skip_if_not_root, stat_ids,
    test_lock, wait_exit_timeout, wait_file, wait_state,
};
use criu::restore::{RestoreError, RestoreOptions, RestoreOutcome, restore};
use nix::sys::signal::{Signal, kill};
use nix::sys::uio::{RemoteIoVec, process_vm_readv};
use nix::unistd::Pid;

const SINGLE_PID: i32 = 12791;

/// CRIU's fixture program `NAME` put where its images say it was (`/tmp/fx/NAME`), same
/// bytes. Dropping it removes the file again if this test put it there, and `/tmp/fx` once it
/// is empty, also when the test fails.
struct FixtureBinary {
    path: PathBuf,
    created: bool,
}

impl FixtureBinary {
    fn install(name: &str) -> FixtureBinary {
        let path = Path::new("/tmp/fx").join(name);
        let want = fs::read(fixtures_dir().join("programs").join(name)).expect("fixture binary");
        let created = fs::read(&path).ok().as_deref() != Some(&want[..]);
        if created {
            fs::create_dir_all("/tmp/fx").unwrap();
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            fs::write(&tmp, &want).unwrap();
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).unwrap();
            fs::rename(&tmp, &path).unwrap();
        }
        FixtureBinary { path, created }
    }
}

impl Drop for FixtureBinary {
    fn drop(&mut self) {
        if self.created {
            let _ = fs::remove_file(&self.path);
            let _ = fs::remove_dir("/tmp/fx");
        }
    }
}

/// [`FixtureBinary::install`] of the `single` fixture's program.
fn install_fixture_binary() -> FixtureBinary {
    FixtureBinary::install("single")
}

/// Whether the `single` fixture can be restored here: its pid is free and its saved register
/// state fits this CPU, leaving out what this CPU has no registers for (it was written on an
/// AVX-512 machine; its restores pass `--cpu-cap=none` where needed: it sits in pause(), where
/// vector registers are dead). Says why not. Installs the fixture's binary; the guard returned
/// when it is usable removes it again.
fn fixture_usable() -> Option<FixtureBinary> {
    if pid_exists(SINGLE_PID) {
        eprintln!("skipped: pid {SINGLE_PID} recorded in the fixture is taken");
        return None;
    }
    let bin = install_fixture_binary();
    let dir = fixtures_dir().join("single");
    let tree = criu::restore::images::load(&dir, false).expect("fixture images load");
    if let Some(reason) = fpu_misfit(&tree) {
        eprintln!("skipped: the fixture's FPU state does not fit this CPU: {reason}");
        return None;
    }
    Some(bin)
}

/// Why the tasks of `tree` cannot be restored on this CPU even with `--cpu-cap=none` (saved
/// register state this CPU lays out differently), if they cannot.
fn fpu_misfit(tree: &criu::restore::plan::TreePlan) -> Option<String> {
    let ours =
        criu::restore::layout::Special::from_maps(&criu::restore::layout::self_maps().unwrap());
    tree.alive().find_map(|(_, t)| {
        match criu::restore::prepare::preflight_against(t, &ours, false) {
            Err(RestoreError::Fpu { reason }) => Some(reason),
            _ => None,
        }
    })
}

/// Whether this CPU lacks registers the `single` fixture has saved state for (it was written
/// on an AVX-512 machine): its restores then need `--cpu-cap=none`. Worked out once.
fn fixture_needs_cpu_cap_none() -> bool {
    static NEEDS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *NEEDS.get_or_init(|| needs_cpu_cap_none(&fixtures_dir().join("single")))
}

/// Whether a task or thread in the images in `dir` has saved state for registers this CPU
/// lacks (false if the images do not load: the restore then fails on its own).
fn needs_cpu_cap_none(dir: &Path) -> bool {
    criu::restore::images::load(dir, false).is_ok_and(|tree| {
        tree.alive().any(|(_, t)| {
            t.threads
                .iter()
                .map(|th| &th.fpu)
                .any(|f| matches!(criu::restore::fpu::build(f), Err(RestoreError::Fpu { .. })))
        })
    })
}

/// `--cpu-cap=none` when the fixture needs it, else nothing.
fn fixture_cpu_cap() -> &'static [&'static str] {
    if fixture_needs_cpu_cap_none() {
        &["--cpu-cap=none"]
    } else {
        &[]
    }
}

fn status_field(pid: i32, key: &str) -> String {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
        .unwrap_or_default()
}

fn hex_field(pid: i32, key: &str) -> u64 {
    u64::from_str_radix(&status_field(pid, key), 16).unwrap()
}

fn read_mem(pid: i32, addr: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let n = process_vm_readv(
        Pid::from_raw(pid),
        &mut [IoSliceMut::new(&mut buf)],
        &[RemoteIoVec {
            base: addr as usize,
            len,
        }],
    )
    .unwrap_or_else(|e| panic!("process_vm_readv {addr:#x}: {e}"));
    assert_eq!(n, len);
    buf
}

/// The task's general registers and xsave area, read by seizing and interrupting it.
fn regs_and_xstate(pid: i32) -> (libc::user_regs_struct, Vec<u8>) {
    use nix::sys::ptrace;
    use nix::sys::wait::{WaitPidFlag, waitpid};
    let p = Pid::from_raw(pid);
    ptrace::seize(p, ptrace::Options::empty()).unwrap();
    ptrace::interrupt(p).unwrap();
    waitpid(p, Some(WaitPidFlag::__WALL)).unwrap();
    let regs = ptrace::getregs(p).unwrap();
    // The rseq registration (PTRACE_GET_RSEQ_CONFIGURATION): area, size, signature.
    let mut rseq = [0u64; 3];
    // SAFETY: the kernel writes at most 24 bytes (pointer, size, signature, flags) into rseq.
    let n = unsafe { libc::ptrace(0x420f, pid, 24usize, rseq.as_mut_ptr()) };
    assert!(
        n > 0,
        "PTRACE_GET_RSEQ_CONFIGURATION: {}",
        std::io::Error::last_os_error()
    );
    assert_eq!(rseq[0], 140_598_985_531_488, "rseq area");
    assert_eq!(rseq[1] & 0xffff_ffff, 32, "rseq size");
    assert_eq!(rseq[1] >> 32, 1_392_848_979, "rseq signature");
    let mut buf = vec![0u8; 16384];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: PTRACE_GETREGSET writes at most iov_len bytes into buf, a live buffer.
    let r = unsafe { libc::ptrace(libc::PTRACE_GETREGSET, pid, 0x202usize, &mut iov) };
    assert_eq!(
        r,
        0,
        "PTRACE_GETREGSET: {}",
        std::io::Error::last_os_error()
    );
    buf.truncate(iov.iov_len);
    ptrace::detach(p, None).unwrap();
    (regs, buf)
}

/// Detached restore options for a fixture's images (with `--cpu-cap=none` where this CPU needs
/// it).
fn detached(dir: &Path) -> RestoreOptions {
    RestoreOptions {
        images_dir: dir.to_path_buf(),
        detach: true,
        no_fpu_check: needs_cpu_cap_none(dir),
        ..Default::default()
    }
}

#[test]
fn restores_criu_4_2_single_fixture() {
    skip_if_not_root!("restores_criu_4_2_single_fixture");
    let _g = test_lock();
    become_subreaper();
    let Some(_bin) = fixture_usable() else {
        return;
    };
    let dir = fixtures_dir().join("single");
    let out = restore(&detached(&dir), None);
    let out = match out {
        Ok(o) => o,
        Err(e) => panic!("restore failed: {e} ({e:?})"),
    };
    assert_eq!(out, RestoreOutcome::Detached { pid: SINGLE_PID });
    let task = Spawned::guard(SINGLE_PID);
    let pid = task.pid();

    // Alive and sleeping in pause().
    assert_eq!(
        wait_state(pid, "S", Duration::from_secs(5)),
        Some('S'),
        "restored task is not sleeping"
    );
    assert_eq!(status_field(pid, "Name:"), "single");
    // SIGHUP blocked; SIGUSR1 caught; SIGALRM ignored.
    assert_eq!(hex_field(pid, "SigBlk:"), 1 << (libc::SIGHUP - 1));
    assert_ne!(hex_field(pid, "SigCgt:") & (1 << (libc::SIGUSR1 - 1)), 0);
    assert_ne!(hex_field(pid, "SigIgn:") & (1 << (libc::SIGALRM - 1)), 0);
    // /etc/hostname at offset 3 on fd 3, /dev/null on 0..2 and 10.
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/fd/3")).unwrap(),
        Path::new("/etc/hostname")
    );
    let fdinfo = fs::read_to_string(format!("/proc/{pid}/fdinfo/3")).unwrap();
    assert!(fdinfo.starts_with("pos:\t3\n"), "fdinfo/3: {fdinfo}");
    for fd in [0, 1, 2, 10] {
        assert_eq!(
            fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap(),
            Path::new("/dev/null")
        );
    }
    // fd 251 was the write end of a pipe whose reader is not in the image: a fresh pipe.
    let p251 = fs::read_link(format!("/proc/{pid}/fd/251")).unwrap();
    assert!(p251.to_string_lossy().starts_with("pipe:"), "{p251:?}");
    let fdinfo = fs::read_to_string(format!("/proc/{pid}/fdinfo/251")).unwrap();
    assert!(
        fdinfo.contains("flags:\t01\n") || fdinfo.contains("flags:\t02000001\n"),
        "{fdinfo}"
    );
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/exe")).unwrap(),
        Path::new("/tmp/fx/single")
    );
    // The anonymous mapping: 0x17 on both sides of the PROT_NONE hole.
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    assert!(maps.contains("7fdfc0b55000-7fdfc0b56000 ---p"), "{maps}");
    assert!(
        read_mem(pid, 0x7fdf_c0b5_4000, 4096)
            .iter()
            .all(|b| *b == 0x17)
    );
    assert!(
        read_mem(pid, 0x7fdf_c0b5_6000, 4096)
            .iter()
            .all(|b| *b == 0x17)
    );
    // The heap holds the 64 KiB 0x42 pattern.
    let heap = read_mem(pid, 0x562c_345f_a000, 0x21000);
    let run = heap
        .split(|b| *b != 0x42)
        .map(<[u8]>::len)
        .max()
        .unwrap_or(0);
    assert!(run >= 1 << 16, "longest 0x42 run in the heap: {run}");
    // This kernel's vDSO sits where the task had it, and nothing of the restorer is left: the
    // image's 25 areas, with the data area shown as [vvar] + [vvar_vclock].
    assert!(
        maps.contains(
            "7fdfc0b5f000-7fdfc0b61000 r-xp 00000000 00:00 0                          [vdso]"
        ),
        "{maps}"
    );
    assert!(
        maps.contains(
            "7fdfc0b59000-7fdfc0b5d000 r--p 00000000 00:00 0                          [vvar]"
        ),
        "{maps}"
    );
    assert_eq!(maps.lines().count(), 26, "{maps}");

    // Directories, umask, limits as dumped.
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/cwd")).unwrap(),
        Path::new("/tmp/fx")
    );
    assert_eq!(status_field(pid, "Umask:"), "0022");
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let limit = |name: &str| -> Vec<String> {
        let l = limits.lines().find(|l| l.starts_with(name)).unwrap();
        l[name.len()..]
            .split_whitespace()
            .take(2)
            .map(str::to_string)
            .collect()
    };
    assert_eq!(limit("Max open files"), ["20000", "20000"]);
    assert_eq!(limit("Max stack size"), ["8388608", "unlimited"]);
    assert_eq!(limit("Max core file size"), ["0", "unlimited"]);

    // Registers and the extended FPU state are the image's (read through ptrace).
    let (regs, xstate) = regs_and_xstate(pid);
    assert_eq!(regs.r15, 0x7fdf_c0b9_4020);
    assert_eq!(regs.r14, 0x562c_1115_1dd8);
    assert_eq!(regs.r13, 0x7ffc_e1b7_98b8);
    assert_eq!(regs.rbx, 0x7ffc_e1b7_9670);
    assert_eq!(regs.fs_base, 0x7fdf_c096_9740);
    if let Some((off, len)) = compel_arch::xsave_component(7) {
        let core: criu_images::pb::CoreEntry = criu_images::ImageDir::new(&dir)
            .read_core(SINGLE_PID as u32)
            .unwrap();
        let want: Vec<u8> = core
            .thread_info
            .unwrap()
            .fpregs
            .xsave
            .unwrap()
            .hi16_zmm
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        assert_eq!(want.len(), len);
        assert!(want.iter().any(|b| *b != 0));
        assert_eq!(
            &xstate[off..off + len],
            &want[..],
            "zmm16..31 differ from the image"
        );
    }

    // Its handler runs and it goes back to pause().
    kill(Pid::from_raw(pid), Signal::SIGUSR1).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(wait_exit_timeout(pid, Duration::from_millis(10)), Ok(None));
    assert_eq!(wait_state(pid, "S", Duration::from_secs(5)), Some('S'));
    drop(task);
}

#[test]
fn busy_pid_fails_before_anything_runs() {
    skip_if_not_root!("busy_pid_fails_before_anything_runs");
    let _g = test_lock();
    // Our own pid is certainly taken: point a copy of the fixture at it.
    let t = tempfile::tempdir().unwrap();
    copy_dir(&fixtures_dir().join("single"), t.path());
    let me = std::process::id();
    let pstree = criu_images::pb::PstreeEntry {
        pid: me,
        ppid: 0,
        pgid: me,
        sid: me,
        threads: vec![me],
    };
    let d = criu_images::ImageDir::new(t.path());
    d.write_pstree(&[pstree]).unwrap();
    for name in ["core", "mm", "ids", "fs", "pagemap"] {
        fs::rename(
            t.path().join(format!("{name}-{SINGLE_PID}.img")),
            t.path().join(format!("{name}-{me}.img")),
        )
        .unwrap();
    }
    let _bin = install_fixture_binary();
    let err = restore(&detached(t.path()), None).unwrap_err();
    assert!(
        matches!(err, RestoreError::PidBusy { pid } if pid == me as i32),
        "{err:?}"
    );
    assert!(err.to_string().contains(&me.to_string()));
}

fn copy_dir(from: &Path, to: &Path) {
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
            fs::set_permissions(to.join(e.file_name()), fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
}

#[test]
fn corrupt_or_truncated_images_fail_cleanly() {
    skip_if_not_root!("corrupt_or_truncated_images_fail_cleanly");
    let _g = test_lock();
    let _bin = install_fixture_binary();
    let src = fixtures_dir().join("single");
    // (file, damage, what the message must name)
    type Damage = fn(&mut Vec<u8>);
    let cases: [(&str, Damage, &str); 5] = [
        (
            "core-12791.img",
            |b| b.truncate(b.len() / 2),
            "core-12791.img",
        ),
        ("mm-12791.img", |b| b[0] ^= 0xff, "mm-12791.img"),
        ("pagemap-12791.img", |b| b.truncate(20), "pagemap-12791.img"),
        ("pages-1.img", |b| b.truncate(4096), "pages-1.img"),
        ("inventory.img", |b| b.clear(), "inventory.img"),
    ];
    for (file, damage, needle) in cases {
        let t = tempfile::tempdir().unwrap();
        copy_dir(&src, t.path());
        let p = t.path().join(file);
        let mut b = fs::read(&p).unwrap();
        damage(&mut b);
        fs::write(&p, &b).unwrap();
        let err = restore(&detached(t.path()), None).expect_err(file);
        let msg = err.to_string();
        assert!(msg.contains(needle), "{file}: {msg}");
        assert!(!pid_exists(SINGLE_PID) || !matches!(err, RestoreError::Task { .. }));
    }
    // A missing image.
    let t = tempfile::tempdir().unwrap();
    copy_dir(&src, t.path());
    fs::remove_file(t.path().join("fs-12791.img")).unwrap();
    let err = restore(&detached(t.path()), None).unwrap_err();
    assert!(err.to_string().contains("fs-12791.img"), "{err}");
}

/// An action script that records `ACTION PID` lines into `log` and fails at `fail_at`.
fn hook_script(dir: &Path, log: &Path, fail_at: &str) -> PathBuf {
    let p = dir.join("hook.sh");
    fs::write(
        &p,
        format!(
            "#!/bin/sh\necho \"$CRTOOLS_SCRIPT_ACTION ${{CRTOOLS_INIT_PID:-none}}\" >> {}\n\
             [ \"$CRTOOLS_SCRIPT_ACTION\" = \"{fail_at}\" ] && exit 3\nexit 0\n",
            log.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn scripts_for(script: &Path, dir: &Path) -> criu::scripts::ActionScripts {
    let sink = criu::log::LogSink::open(None).unwrap();
    criu::scripts::ActionScripts::new(vec![script.to_path_buf()], dir, &sink).unwrap()
}

#[test]
fn action_scripts_run_at_each_stage_and_abort_on_failure() {
    skip_if_not_root!("action_scripts_run_at_each_stage_and_abort_on_failure");
    let _g = test_lock();
    become_subreaper();
    let Some(_bin) = fixture_usable() else {
        return;
    };
    let dir = fixtures_dir().join("single");
    let t = tempfile::tempdir().unwrap();
    let log = t.path().join("stages");

    // A failing pre-restore aborts before anything is created.
    let s = scripts_for(&hook_script(t.path(), &log, "pre-restore"), &dir);
    let err = restore(&detached(&dir), Some(&s)).unwrap_err();
    assert!(err.to_string().contains("pre-restore"), "{err}");
    assert_eq!(fs::read_to_string(&log).unwrap(), "pre-restore none\n");
    assert!(!pid_exists(SINGLE_PID));

    // A failing post-restore kills the restored task.
    fs::remove_file(&log).unwrap();
    let s = scripts_for(&hook_script(t.path(), &log, "post-restore"), &dir);
    let err = restore(&detached(&dir), Some(&s)).unwrap_err();
    assert!(err.to_string().contains("post-restore"), "{err}");
    assert_eq!(
        fs::read_to_string(&log).unwrap(),
        format!("pre-restore none\npost-restore {SINGLE_PID}\n")
    );
    assert!(!pid_exists(SINGLE_PID), "the task was left behind");

    // All stages, in order, with the restored pid.
    fs::remove_file(&log).unwrap();
    let s = scripts_for(&hook_script(t.path(), &log, "never"), &dir);
    let out = restore(&detached(&dir), Some(&s)).unwrap();
    let task = Spawned::guard(SINGLE_PID);
    assert_eq!(out, RestoreOutcome::Detached { pid: SINGLE_PID });
    assert_eq!(
        fs::read_to_string(&log).unwrap(),
        format!(
            "pre-restore none\npost-restore {p}\npre-resume {p}\npost-resume {p}\n",
            p = SINGLE_PID
        )
    );
    assert_eq!(
        wait_state(task.pid(), "S", Duration::from_secs(5)),
        Some('S')
    );
    drop(task);
}

#[test]
fn without_detach_restore_waits_and_reports_how_the_task_ended() {
    skip_if_not_root!("without_detach_restore_waits_and_reports_how_the_task_ended");
    let _g = test_lock();
    become_subreaper();
    let Some(_bin) = fixture_usable() else {
        return;
    };
    let dir = fixtures_dir().join("single");
    let t = tempfile::tempdir().unwrap();
    let pidfile = t.path().join("pid");
    let opts = RestoreOptions {
        images_dir: dir,
        detach: false,
        pidfile: Some(pidfile.clone()),
        no_fpu_check: fixture_needs_cpu_cap_none(),
        ..Default::default()
    };
    let waiter = std::thread::spawn(move || restore(&opts, None));
    // The pidfile appears once the task is restored.
    let mut n = 0;
    while !pidfile.exists() && n < 500 {
        std::thread::sleep(Duration::from_millis(10));
        n += 1;
    }
    assert_eq!(
        fs::read_to_string(&pidfile).unwrap(),
        SINGLE_PID.to_string()
    );
    assert_eq!(
        wait_state(SINGLE_PID, "S", Duration::from_secs(5)),
        Some('S')
    );
    assert!(
        !waiter.is_finished(),
        "restore returned while the task runs"
    );
    kill(Pid::from_raw(SINGLE_PID), Signal::SIGTERM).unwrap();
    let out = waiter.join().unwrap().unwrap();
    assert_eq!(
        out,
        RestoreOutcome::Killed {
            pid: SINGLE_PID,
            signal: libc::SIGTERM
        }
    );
    assert_eq!(out.exit_code(), 128 + libc::SIGTERM);
    assert!(!pid_exists(SINGLE_PID));
}

// ---- our own dump, then restore: the victims check themselves ----

/// The numbers of a victim's ready line after its first `skip` words (`ready PID A B ...`).
fn ready_numbers(said: &str, skip: usize) -> Vec<i32> {
    said.split_whitespace()
        .skip(skip)
        .map(|w| w.parse().unwrap_or_else(|_| panic!("ready line {said}")))
        .collect()
}

/// A test's scratch directory: `img/` for the images, `ready` for the victim's ready file, and
/// `victim.log` for its output (where [`restore_and_check`] looks for it).
struct Scratch {
    tmp: tempfile::TempDir,
    img: PathBuf,
    ready: PathBuf,
}

impl Scratch {
    fn new() -> Scratch {
        let tmp = tempfile::tempdir().unwrap();
        let img = tmp.path().join("img");
        fs::create_dir(&img).unwrap();
        let ready = tmp.path().join("ready");
        Scratch { tmp, img, ready }
    }

    /// `name` in the scratch directory.
    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Starts `bin ARGS` (as user and group `uid` if given) with its output into `victim.log`,
    /// waits up to `timeout` for the ready file and returns the victim and what the file says.
    fn spawn_victim(
        &self,
        bin: &str,
        args: &[&str],
        uid: Option<u32>,
        timeout: Duration,
    ) -> (Spawned, String) {
        let v = Spawned::spawn(bin, args, &self.path("victim.log"), uid);
        let said = wait_file(&self.ready, timeout);
        (v, said)
    }

    /// Starts `bin ARGS`, lets it run `settle` once it is ready, dumps it (which kills it),
    /// restores it and has it check itself ([`restore_and_check`]).
    fn round_trip(&self, bin: &str, args: &[&str], timeout: Duration, settle: Duration) {
        let (mut v, _) = self.spawn_victim(bin, args, None, timeout);
        std::thread::sleep(settle);
        dump_and_reap(&mut v, &self.img, &[]);
        restore_and_check(v.pid(), &self.img, &self.ready);
    }
}

/// `criu restore -d -D IMG`, asserted to succeed; returns a guard for the restored task `pid`.
fn restore_d(img: &Path, pid: i32) -> Spawned {
    let o = run_criu(&["restore", "-d", "-D", img.to_str().unwrap()]);
    assert_ok(&o, "criu restore -d");
    Spawned::guard(pid)
}

/// `criu restore` without `-d`, in the background: it stays the task's parent.
fn restore_in_background(img: &Path) -> std::process::Child {
    std::process::Command::new(criu_bin())
        .args([
            "restore",
            "-D",
            img.to_str().unwrap(),
            "-o",
            "restore.log",
            "-v4",
        ])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until `pid` runs as itself, untraced (the restore is over), or panics with criu's log.
fn wait_resumed(pid: i32, img: &Path, criu: &mut std::process::Child) {
    let end = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let st = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let traced = st
            .lines()
            .find_map(|l| l.strip_prefix("TracerPid:"))
            .map(|v| v.trim() != "0")
            .unwrap_or(true);
        // Before the restorer renames it, the new task is a copy of criu (and untraced for a
        // moment right after the clone): wait for its own name and no tracer.
        let own_name = !st.is_empty() && !st.starts_with("Name:\tcriu\n");
        if own_name && !traced && !st.contains("State:\tZ") {
            return;
        }
        if let Ok(Some(status)) = criu.try_wait() {
            let log = fs::read_to_string(img.join("restore.log")).unwrap_or_default();
            panic!("criu restore ended early ({status:?}):\n{log}");
        }
        assert!(
            std::time::Instant::now() < end,
            "pid {pid} did not resume:\n{}",
            fs::read_to_string(img.join("restore.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Restores `img` with criu staying the parent, asks the victim (pid `pid`) to check itself
/// with SIGUSR1, expects `check ok` in `ready.2`, then kills it and checks criu's exit code.
fn restore_and_check(pid: i32, img: &Path, ready: &Path) {
    let mut criu = restore_in_background(img);
    wait_resumed(pid, img, &mut criu);
    let check = ready.with_extension("2");
    let _ = fs::remove_file(&check);
    kill(Pid::from_raw(pid), Signal::SIGUSR1).unwrap();
    // Generous: a debug-built victim checking megabytes byte by byte on a loaded machine.
    let end = std::time::Instant::now() + Duration::from_secs(30);
    let verdict = loop {
        if let Ok(s) = fs::read_to_string(&check)
            && !s.is_empty()
        {
            break s;
        }
        if std::time::Instant::now() > end {
            let st = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let status = criu.wait();
            panic!(
                "no verdict from pid {pid}; criu {status:?}\nstatus:\n{st}\nvictim log:\n{}\nrestore log:\n{}",
                fs::read_to_string(img.parent().unwrap().join("victim.log")).unwrap_or_default(),
                fs::read_to_string(img.join("restore.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let status = criu.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(128 + libc::SIGKILL),
        "criu restore's exit status"
    );
    assert!(!pid_exists(pid));
    assert_eq!(
        verdict.trim(),
        "check ok",
        "the restored victim's own check"
    );
}

#[test]
fn dump_then_restore_memory_victim() {
    skip_if_not_root!("dump_then_restore_memory_victim");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let data = dir.path("data");
    dir.round_trip(
        env!("CARGO_BIN_EXE_criu-victim-memory"),
        &[data.to_str().unwrap(), dir.ready.to_str().unwrap()],
        Duration::from_secs(10),
        Duration::from_millis(50),
    );
}

/// 96 MiB of saved pages: the restore shares the fill with a helper process (above 64 MiB),
/// and every byte must still land where it belongs.
#[test]
fn dump_then_restore_a_big_memory_victim() {
    skip_if_not_root!("dump_then_restore_a_big_memory_victim");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    dir.round_trip(
        env!("CARGO_BIN_EXE_criu-rvictim-big"),
        &["96", dir.ready.to_str().unwrap()],
        Duration::from_secs(30),
        Duration::ZERO,
    );
}

/// One area as /proc/PID/smaps shows it: flags, resident and huge-page kB.
#[derive(Debug, PartialEq)]
struct AreaSmaps {
    flags: String,
    rss_kb: u64,
    huge_kb: u64,
}

/// The smaps entry of the area `start..end` of `pid` (it must be an area of its own).
fn area_smaps(pid: i32, start: u64, end: u64) -> AreaSmaps {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let head = format!("{start:x}-{end:x} ");
    // The entry: its header line, then `Key: value` lines up to and including VmFlags.
    let body: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with(&head))
        .skip(1)
        .scan(false, |done, l| {
            let take = !*done;
            *done |= l.starts_with("VmFlags:");
            take.then_some(l)
        })
        .collect();
    assert!(!body.is_empty(), "no area {head}in\n{text}");
    let kb = |key: &str| {
        body.iter()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
            .unwrap()
    };
    AreaSmaps {
        flags: body
            .iter()
            .find_map(|l| l.strip_prefix("VmFlags:"))
            .unwrap()
            .trim()
            .to_string(),
        rss_kb: kb("Rss:"),
        huge_kb: kb("AnonHugePages:"),
    }
}

/// The 2 MiB blocks of `start..end` that hold no hole of criu-rvictim-big's `holes` pattern
/// (page 700 of every 1024), in kB: what can come back on huge pages.
fn whole_blocks_kb(start: u64, end: u64) -> u64 {
    const BLOCK: u64 = 2 << 20;
    let hole_in = |b: u64| {
        (b..b + BLOCK)
            .step_by(4096)
            .any(|a| ((a - start) / 4096) % 1024 == 700)
    };
    (start.next_multiple_of(BLOCK)..end & !(BLOCK - 1))
        .step_by(BLOCK as usize)
        .filter(|&b| !hole_in(b))
        .count() as u64
        * 2048
}

/// A 40 MiB area with a hole in every 4 MiB comes back with wholly saved 2 MiB blocks on huge
/// pages and the blocks with a hole on small pages: the same flags (nothing like `hg` added),
/// the same resident size, every byte (and hole) intact, no userfaultfd left open. With
/// `CRIU_RESTORE_THP=0` it comes back on small pages only, filled with `UFFDIO_COPY` and,
/// with `CRIU_RESTORE_UFFD=0` too, by faulting pages in and reading into them.
#[test]
fn whole_blocks_of_saved_memory_come_back_on_huge_pages() {
    skip_if_not_root!("whole_blocks_of_saved_memory_come_back_on_huge_pages");
    let _g = test_lock();
    become_subreaper();
    let thp = fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .is_ok_and(|s| !s.contains("[never]"));
    let dir = Scratch::new();
    let (mut v, said) = dir.spawn_victim(
        env!("CARGO_BIN_EXE_criu-rvictim-big"),
        &["40", dir.ready.to_str().unwrap(), "holes"],
        None,
        Duration::from_secs(30),
    );
    let start = u64::from_str_radix(said.split_whitespace().nth(2).unwrap(), 16).unwrap();
    let end = start + (40 << 20);
    let before = area_smaps(v.pid(), start, end);
    assert_eq!(before.rss_kb, 40 * 1024 - 10 * 4, "{before:?}");
    dump_and_reap(&mut v, &dir.img, &[]);
    let check = dir.ready.with_extension("2");
    let variants: [&[(&str, &str)]; 3] = [
        &[],
        &[("CRIU_RESTORE_THP", "0")],
        &[("CRIU_RESTORE_THP", "0"), ("CRIU_RESTORE_UFFD", "0")],
    ];
    for env in variants {
        let small_only = !env.is_empty();
        let o = criu_env(&["restore", "-d", "-D", dir.img.to_str().unwrap()], env);
        assert_ok(&o, "criu restore -d");
        let task = Spawned::guard(v.pid());
        let after = area_smaps(task.pid(), start, end);
        assert_eq!(after.flags, before.flags, "{env:?}");
        assert_eq!(after.rss_kb, before.rss_kb, "{env:?}");
        if thp && !small_only {
            // Blocks with a hole never; whole blocks until huge pages come dearer than small
            // ones (a host that must back them first), so at least the first.
            let whole = whole_blocks_kb(start, end);
            assert!(
                after.huge_kb <= whole && after.huge_kb >= whole.min(2048),
                "{after:?}, whole blocks {whole} kB"
            );
        } else {
            assert_eq!(after.huge_kb, 0, "{env:?}: {after:?}");
        }
        let _ = fs::remove_file(&check);
        assert_eq!(ask_check(task.pid(), &check).trim(), "check ok", "{env:?}");
        // The userfaultfd that filled small pages is gone.
        for e in fs::read_dir(format!("/proc/{}/fd", task.pid())).unwrap() {
            let target = fs::read_link(e.unwrap().path()).unwrap_or_default();
            assert!(
                !target.to_string_lossy().contains("userfaultfd"),
                "{env:?}: {target:?}"
            );
        }
        drop(task);
    }
}

/// The pages `img` saved for `pid` in all, and the saved bytes of its 40 MiB area at `start`
/// in address order.
fn saved_area(img: &Path, pid: i32, start: u64) -> (u64, Vec<u8>) {
    let pm = criu_images::Pagemap::read(img.join(format!("pagemap-{pid}.img"))).unwrap();
    let pages = fs::read(img.join(pm.pages_file_name())).unwrap();
    let mut area = Vec::new();
    for r in pm.runs().unwrap() {
        let (lo, hi) = (
            r.vaddr.max(start),
            (r.vaddr + r.len()).min(start + (40 << 20)),
        );
        if lo < hi && r.flags & criu_images::pagemap::PE_PRESENT != 0 {
            let off = (r.file_offset + lo - r.vaddr) as usize;
            area.extend_from_slice(&pages[off..off + (hi - lo) as usize]);
        }
    }
    (pm.present_pages(), area)
}

/// Runs `f` on a thread of its own in a new mount namespace where a tmpfs with `opts` is
/// mounted on `at` ([`OwnTmpfs`]); the namespace goes away with the last task in it.
fn in_own_tmpfs(at: &Path, opts: &str, f: impl FnOnce() + Send) {
    std::thread::scope(|s| {
        s.spawn(|| {
            let _tmpfs = OwnTmpfs::mount(at, opts).unwrap();
            f();
        });
    });
}

/// A dump whose image file system fills up (a 16 MiB tmpfs for 40 MiB of pages; with huge
/// pages the pages file is allocated whole and fails there, without them a write fails) says
/// so, marks the images incomplete and leaves the victim running untouched.
#[test]
fn a_dump_onto_a_full_tmpfs_fails_and_the_victim_runs_on() {
    skip_if_not_root!("a_dump_onto_a_full_tmpfs_fails_and_the_victim_runs_on");
    let _g = test_lock();
    become_subreaper();
    for opts in ["huge=within_size,size=16m", "size=16m"] {
        let dir = Scratch::new();
        let small = dir.path("small");
        in_own_tmpfs(&small, opts, || {
            let (v, _) = dir.spawn_victim(
                env!("CARGO_BIN_EXE_criu-rvictim-big"),
                &["40", dir.ready.to_str().unwrap()],
                None,
                Duration::from_secs(30),
            );
            let o = criu_dump(v.pid(), &small, &[]);
            assert!(!o.status.success(), "{opts}: the dump succeeded");
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                err.contains("pages-1.img") && err.contains("No space left"),
                "{opts}: {err}"
            );
            let marker = small.join(criu::dump::INCOMPLETE_MARKER);
            assert!(marker.exists(), "{opts}: no {marker:?}");
            assert!(!small.join("inventory.img").exists(), "{opts}");
            // The partial pages file is gone, so the marker could say why.
            assert!(!small.join("pages-1.img").exists(), "{opts}");
            let why = fs::read_to_string(&marker).unwrap();
            assert!(why.contains("No space left"), "{opts}: {why}");
            assert_eq!(compel_criu_tests::tracer_pid(v.pid()), Some(0), "{opts}");
            let check = dir.ready.with_extension("2");
            assert_eq!(ask_check(v.pid(), &check).trim(), "check ok", "{opts}");
            drop(v);
        });
    }
}

/// A dump onto a tmpfs mounted with huge folios (`huge=within_size`) fills its pages file through
/// a shared mapping, two threads at a time: the images must hold exactly the bytes a dump that
/// writes them with write(2) saves, and restore.
#[test]
fn a_dump_onto_a_huge_page_tmpfs_saves_the_same_bytes() {
    skip_if_not_root!("a_dump_onto_a_huge_page_tmpfs_saves_the_same_bytes");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let huge = dir.path("huge");
    in_own_tmpfs(&huge, "huge=within_size,size=256m", || {
        let (mut v, said) = dir.spawn_victim(
            env!("CARGO_BIN_EXE_criu-rvictim-big"),
            &["40", dir.ready.to_str().unwrap(), "holes"],
            None,
            Duration::from_secs(30),
        );
        let pid = v.pid();
        let start = u64::from_str_radix(said.split_whitespace().nth(2).unwrap(), 16).unwrap();
        // The reference, written with write(2): the scratch directory is not on tmpfs.
        assert_ok(&criu_dump(pid, &dir.img, &["-R"]), "criu dump -R");
        let img = huge.join("img");
        fs::create_dir(&img).unwrap();
        dump_and_reap(&mut v, &img, &["-v4", "-o", "dump.log"]);
        let log = fs::read_to_string(img.join("dump.log")).unwrap();
        assert!(
            log.contains("pages-1.img filled through a mapping"),
            "{log}"
        );
        // The victim ran on between the dumps (its stack may differ): the 40 MiB area it
        // leaves alone must be saved byte for byte the same, and as many pages in all.
        let (written, mapped) = (
            saved_area(&dir.img, pid, start),
            saved_area(&img, pid, start),
        );
        assert_eq!(written.0, mapped.0, "pages in all");
        assert_eq!(
            written.1.len(),
            (40 << 20) - 10 * 4096,
            "the area without its holes"
        );
        assert!(written.1 == mapped.1, "the area's saved bytes differ");
        restore_and_check(pid, &img, &dir.ready);
    });
}

/// `Seccomp` and `Seccomp_filters` of thread `tid` of `pid`, as /proc shows them.
fn seccomp_of(pid: i32, tid: i32) -> (String, String) {
    let st = fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
    let field = |k: &str| {
        st.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    (field("Seccomp:"), field("Seccomp_filters:"))
}

/// Threads under seccomp come back under it: filter mode with the same two filters (the
/// second with its LOG flag) for the main thread, a thread started after them and a child
/// forked after them, strict mode for a thread blocked in read, none for a thread started
/// before; the victim checks that the filters still bind it.
#[test]
fn threads_under_seccomp_come_back_under_the_same_filters() {
    skip_if_not_root!("threads_under_seccomp_come_back_under_the_same_filters");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let (mut v, said) = dir.spawn_victim(
        env!("CARGO_BIN_EXE_criu-rvictim-seccomp"),
        &[dir.ready.to_str().unwrap()],
        None,
        Duration::from_secs(30),
    );
    let ids = ready_numbers(&said, 1);
    let (pid, child) = (ids[0], ids[4]);
    // Killed and reaped whatever happens (after the parent, whose death hands it to us).
    let _child_guard = Spawned::guard(child);
    let threads = &ids[..4];
    let before: Vec<_> = threads.iter().map(|&t| seccomp_of(pid, t)).collect();
    let s = |m: &str, n: &str| (m.to_string(), n.to_string());
    // main, early, late, strict
    assert_eq!(
        before,
        [s("2", "2"), s("0", "0"), s("2", "2"), s("1", "0")],
        "{said}"
    );
    assert_eq!(seccomp_of(child, child), s("2", "2"));
    dump_and_reap(&mut v, &dir.img, &[]);
    let _ = compel_criu_tests::wait_exit(child);
    let table = criu_images::ImageDir::new(&dir.img)
        .read_seccomp()
        .unwrap()
        .seccomp_filters;
    // Main thread, late thread and child share one chain: one entry per filter.
    assert_eq!(table.len(), 2, "{table:?}");
    assert_eq!((table[0].prev, table[0].flags), (None, None));
    assert_eq!((table[1].prev, table[1].flags), (Some(0), Some(2)));
    // A damaged seccomp.img (two filters naming each other) is refused before anything runs.
    let bad = dir.path("bad");
    fs::create_dir(&bad).unwrap();
    copy_dir(&dir.img, &bad);
    let mut looped = table.clone();
    looped[0].prev = Some(1);
    criu_images::ImageDir::new(&bad)
        .write_seccomp(&criu_images::pb::SeccompEntry {
            seccomp_filters: looped,
        })
        .unwrap();
    let o = run_criu(&["restore", "-d", "-D", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("seccomp.img") && err.contains("loops"),
        "{err}"
    );
    assert!(!pid_exists(pid));
    let task = restore_d(&dir.img, pid);
    let after: Vec<_> = threads.iter().map(|&t| seccomp_of(pid, t)).collect();
    assert_eq!(after, before);
    assert_eq!(seccomp_of(child, child), s("2", "2"));
    let check = dir.ready.with_extension("2");
    assert_eq!(ask_check(task.pid(), &check).trim(), "check ok");
    drop(task);
}

/// The `lock:` lines of `/proc/PID/fdinfo/FD` without the kernel's running number.
fn fd_locks(pid: i32, fd: i32) -> Vec<String> {
    fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("lock:"))
        .map(|l| {
            let rest = l.split_once(':').map_or(l, |(_, r)| r);
            rest.split_whitespace().collect::<Vec<_>>().join(" ")
        })
        .collect()
}

/// A flock, a POSIX record lock (its file open twice) and an OFD lock, the flock and the OFD
/// lock shared with a child through inherited open files: a dump without --file-locks refuses
/// and leaves the processes running; with it the locks are saved once each and come back held
/// by the same descriptors in both processes; a lock taken by someone else meanwhile fails the
/// restore cleanly.
#[test]
fn file_locks_come_back_with_file_locks() {
    skip_if_not_root!("file_locks_come_back_with_file_locks");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let files = dir.path("files");
    fs::create_dir(&files).unwrap();
    let (mut v, said) = dir.spawn_victim(
        env!("CARGO_BIN_EXE_criu-rvictim-locks"),
        &[files.to_str().unwrap(), dir.ready.to_str().unwrap()],
        None,
        Duration::from_secs(30),
    );
    let pid = v.pid();
    let child: i32 = said.split_whitespace().nth(2).unwrap().parse().unwrap();
    // Killed and reaped whatever happens (after the parent, whose death hands it to us).
    let _child_guard = Spawned::guard(child);
    let before: Vec<Vec<String>> = (3..=6).map(|fd| fd_locks(pid, fd)).collect();
    // The child shares the open files, so their flock and OFD lock, not the POSIX lock.
    let child_before: Vec<Vec<String>> = (3..=6).map(|fd| fd_locks(child, fd)).collect();
    assert_eq!(
        child_before,
        [before[0].clone(), vec![], vec![], before[3].clone()]
    );
    // fdinfo shows a lock on the descriptor it was taken through (not on fd 5, on `b` too).
    let counts: Vec<usize> = before.iter().map(|l| l.len()).collect();
    assert_eq!(counts, [1, 1, 0, 1], "{before:?}");
    assert!(
        before[0][0].starts_with("FLOCK ADVISORY WRITE"),
        "{before:?}"
    );
    assert!(
        before[1][0].starts_with("POSIX ADVISORY WRITE"),
        "{before:?}"
    );
    assert!(
        before[3][0].starts_with("OFDLCK ADVISORY READ"),
        "{before:?}"
    );

    let o = criu_dump(pid, &dir.img, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--file-locks"), "{err}");
    assert_eq!(compel_criu_tests::tracer_pid(pid), Some(0));
    assert_eq!(
        (3..=6).map(|fd| fd_locks(pid, fd)).collect::<Vec<_>>(),
        before
    );

    dump_and_reap(&mut v, &dir.img, &["--file-locks"]);
    let _ = compel_criu_tests::wait_exit(child);
    let saved: Vec<criu_images::pb::FileLockEntry> = criu_images::read_all(
        dir.img.join("filelocks.img"),
        criu_images::magic::FILE_LOCKS,
    )
    .unwrap();
    let mut got: Vec<_> = saved
        .iter()
        .map(|l| (l.flag, l.r#type, l.pid, l.fd, l.start, l.len))
        .collect();
    got.sort();
    let (rd, wr) = (libc::F_RDLCK as u32, libc::F_WRLCK as u32);
    assert_eq!(
        got,
        [
            (1, wr, pid, 4, 10, 20),
            (2, wr, pid, 3, 0, 0),
            (4, rd, pid, 6, 0, 0)
        ]
    );

    // Someone else holds the flock now: the restore fails at that step and leaves nothing.
    let other = fs::File::open(files.join("a")).unwrap();
    // SAFETY: flock on our own descriptor.
    let r = unsafe { libc::flock(other.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    assert_eq!(r, 0);
    let o = run_criu(&["restore", "-d", "-D", dir.img.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("file locks"), "{err}");
    assert!(!pid_exists(pid));
    drop(other);

    let task = restore_d(&dir.img, pid);
    let after: Vec<Vec<String>> = (3..=6).map(|fd| fd_locks(pid, fd)).collect();
    assert_eq!(after, before);
    let child_after: Vec<Vec<String>> = (3..=6).map(|fd| fd_locks(child, fd)).collect();
    assert_eq!(child_after, child_before);
    // And they bind: another open file of `a` cannot take the flock.
    let probe = fs::File::open(files.join("a")).unwrap();
    // SAFETY: flock on our own descriptor.
    let r = unsafe { libc::flock(probe.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    assert_eq!(r, -1);
    drop(task);
}

/// A process that turned huge pages off for itself (PR_SET_THP_DISABLE) gets none from the
/// restore either, and still has them off.
#[test]
fn a_process_without_huge_pages_gets_none_back() {
    skip_if_not_root!("a_process_without_huge_pages_gets_none_back");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let (mut v, said) = dir.spawn_victim(
        env!("CARGO_BIN_EXE_criu-rvictim-big"),
        &["16", dir.ready.to_str().unwrap(), "nothp"],
        None,
        Duration::from_secs(30),
    );
    let start = u64::from_str_radix(said.split_whitespace().nth(2).unwrap(), 16).unwrap();
    let thp_line = |pid: i32| {
        fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find(|l| l.starts_with("THP_enabled:"))
            .map(str::to_string)
    };
    let before = thp_line(v.pid());
    dump_and_reap(&mut v, &dir.img, &[]);
    let task = restore_d(&dir.img, v.pid());
    let after = area_smaps(task.pid(), start, start + (16 << 20));
    assert_eq!(after.huge_kb, 0, "{after:?}");
    assert_eq!(after.rss_kb, 16 << 10);
    assert_eq!(thp_line(task.pid()), before);
    let check = dir.ready.with_extension("2");
    let _ = fs::remove_file(&check);
    assert_eq!(ask_check(task.pid(), &check).trim(), "check ok");
}

#[test]
fn dump_then_restore_state_victim() {
    skip_if_not_root!("dump_then_restore_state_victim");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    dir.round_trip(
        env!("CARGO_BIN_EXE_criu-victim-state"),
        &[dir.ready.to_str().unwrap()],
        Duration::from_secs(10),
        Duration::from_millis(50),
    );
}

#[test]
fn dump_then_restore_files_victim() {
    skip_if_not_root!("dump_then_restore_files_victim");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let work = dir.path("w");
    fs::create_dir(&work).unwrap();
    dir.round_trip(
        env!("CARGO_BIN_EXE_criu-victim-files"),
        &[work.to_str().unwrap(), dir.ready.to_str().unwrap()],
        Duration::from_secs(10),
        Duration::from_millis(50),
    );
    // The deleted file's stand-in is gone again.
    let left: Vec<_> = fs::read_dir(&work)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("ghost"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn dump_then_detached_restore_counter_keeps_counting() {
    skip_if_not_root!("dump_then_detached_restore_counter_keeps_counting");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let out = dir.path("out");
    let (mut v, _) = dir.spawn_victim(
        env!("CARGO_BIN_EXE_criu-victim-counter"),
        &[out.to_str().unwrap(), dir.ready.to_str().unwrap()],
        None,
        Duration::from_secs(10),
    );
    std::thread::sleep(Duration::from_millis(100));
    dump_and_reap(&mut v, &dir.img, &[]);
    let at_dump = fs::read_to_string(&out).unwrap().lines().count();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(fs::read_to_string(&out).unwrap().lines().count(), at_dump);
    let pidfile = dir.path("pidfile");
    let o = run_criu(&[
        "restore",
        "-d",
        "-D",
        dir.img.to_str().unwrap(),
        "--pidfile",
        pidfile.to_str().unwrap(),
        "-o",
        "restore.log",
    ]);
    assert_ok(&o, "criu restore -d");
    let task = Spawned::guard(v.pid());
    assert_eq!(fs::read_to_string(&pidfile).unwrap(), v.pid().to_string());
    std::thread::sleep(Duration::from_millis(200));
    let text = fs::read_to_string(&out).unwrap();
    let nums: Vec<u64> = text.lines().map(|l| l.parse().unwrap()).collect();
    assert!(
        nums.len() > at_dump + 5,
        "it did not keep counting: {} -> {}",
        at_dump,
        nums.len()
    );
    for (i, n) in nums.iter().enumerate() {
        assert_eq!(*n, i as u64 + 1, "the sequence broke at line {}", i + 1);
    }
    drop(task);
}

#[test]
fn dump_then_restore_state_victim_of_another_uid() {
    skip_if_not_root!("dump_then_restore_state_victim_of_another_uid");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    fs::set_permissions(dir.tmp.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let uid = compel_criu_tests::UNPRIVILEGED_ID;
    let (mut v, _) = dir.spawn_victim(
        env!("CARGO_BIN_EXE_criu-victim-state"),
        &[dir.ready.to_str().unwrap()],
        Some(uid),
        Duration::from_secs(10),
    );
    std::thread::sleep(Duration::from_millis(50));
    dump_and_reap(&mut v, &dir.img, &[]);
    let mut criu = restore_in_background(&dir.img);
    wait_resumed(v.pid(), &dir.img, &mut criu);
    // Its credentials are the victim's, not criu's.
    let uids = status_field(v.pid(), "Uid:");
    assert_eq!(uids, format!("{uid}\t{uid}\t{uid}\t{uid}"));
    assert_eq!(hex_field(v.pid(), "CapEff:"), 0);
    assert_eq!(status_field(v.pid(), "NoNewPrivs:"), "1");
    kill(Pid::from_raw(v.pid()), Signal::SIGUSR1).unwrap();
    let verdict = wait_file(&dir.ready.with_extension("2"), Duration::from_secs(10));
    kill(Pid::from_raw(v.pid()), Signal::SIGKILL).unwrap();
    criu.wait().unwrap();
    assert_eq!(verdict.trim(), "check ok");
}

#[test]
fn dump_then_restore_shared_anonymous_memory() {
    skip_if_not_root!("dump_then_restore_shared_anonymous_memory");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    dir.round_trip(
        env!("CARGO_BIN_EXE_criu-rvictim-shared"),
        &[dir.ready.to_str().unwrap()],
        Duration::from_secs(10),
        Duration::ZERO,
    );
}

/// A `siginfo_t` for a signal sent by `kill` from pid `from`.
fn siginfo_user(sig: i32, from: u32) -> Vec<u8> {
    let mut b = vec![0u8; 128];
    b[0..4].copy_from_slice(&sig.to_le_bytes());
    // si_errno = 0, si_code = SI_USER (0), then si_pid and si_uid.
    b[16..20].copy_from_slice(&from.to_le_bytes());
    b
}

#[test]
fn pending_signals_in_the_images_are_pending_again() {
    skip_if_not_root!("pending_signals_in_the_images_are_pending_again");
    let _g = test_lock();
    become_subreaper();
    let Some(_bin) = fixture_usable() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    copy_dir(&fixtures_dir().join("single"), t.path());
    let d = criu_images::ImageDir::new(t.path());
    let mut core = d.read_core(SINGLE_PID as u32).unwrap();
    // SIGHUP is blocked in the fixture: one process-wide and one thread-directed instance.
    let q = |sig| criu_images::pb::SignalQueueEntry {
        signals: vec![criu_images::pb::SiginfoEntry {
            siginfo: siginfo_user(sig, 1),
        }],
    };
    core.tc.as_mut().unwrap().signals_s = Some(q(libc::SIGHUP));
    core.thread_core.as_mut().unwrap().signals_p = Some(q(libc::SIGHUP));
    d.write_core(SINGLE_PID as u32, &core).unwrap();
    restore(&detached(t.path()), None).unwrap();
    let task = Spawned::guard(SINGLE_PID);
    assert_eq!(
        wait_state(task.pid(), "S", Duration::from_secs(5)),
        Some('S')
    );
    assert_eq!(hex_field(task.pid(), "ShdPnd:"), 1 << (libc::SIGHUP - 1));
    assert_eq!(hex_field(task.pid(), "SigPnd:"), 1 << (libc::SIGHUP - 1));
    drop(task);

    // Seccomp filter mode naming no filter, or a filter seccomp.img does not have: refused
    // before anything runs.
    for filter in [None, Some(5)] {
        let th = core.thread_core.as_mut().unwrap();
        (th.seccomp_mode, th.seccomp_filter) = (Some(2), filter);
        d.write_core(SINGLE_PID as u32, &core).unwrap();
        let err = restore(&detached(t.path()), None).unwrap_err();
        assert!(matches!(err, RestoreError::BadImage { .. }), "{err:?}");
        assert!(err.to_string().contains("seccomp"), "{err}");
        assert!(!pid_exists(SINGLE_PID));
    }
    assert!(!pid_exists(SINGLE_PID));
}

#[test]
fn cli_restore_of_the_fixture_and_a_failing_pre_restore_script() {
    skip_if_not_root!("cli_restore_of_the_fixture_and_a_failing_pre_restore_script");
    let _g = test_lock();
    become_subreaper();
    let Some(_bin) = fixture_usable() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let dir = fixtures_dir().join("single");
    let log = t.path().join("stages");
    let hook = hook_script(t.path(), &log, "pre-restore");
    let o = run_criu(
        &[
            &[
                "restore",
                "-d",
                "-D",
                dir.to_str().unwrap(),
                "-W",
                t.path().to_str().unwrap(),
                "--action-script",
                hook.to_str().unwrap(),
            ],
            fixture_cpu_cap(),
        ]
        .concat(),
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("pre-restore"), "{err}");
    assert!(!pid_exists(SINGLE_PID));

    let o = run_criu(
        &[
            &[
                "restore",
                "-d",
                "-D",
                dir.to_str().unwrap(),
                "-W",
                t.path().to_str().unwrap(),
                "-o",
                "restore.log",
                "-v4",
            ],
            fixture_cpu_cap(),
        ]
        .concat(),
    );
    assert_ok(&o, "criu restore -d of the fixture");
    let task = Spawned::guard(SINGLE_PID);
    assert_eq!(
        wait_state(task.pid(), "S", Duration::from_secs(5)),
        Some('S')
    );
    assert_eq!(hex_field(task.pid(), "SigBlk:"), 1 << (libc::SIGHUP - 1));
    let rlog = fs::read_to_string(t.path().join("restore.log")).unwrap();
    assert!(rlog.contains("tree resumed"), "{rlog}");
    drop(task);
}

#[test]
fn detached_restore_survives_criu_exit_despite_a_parent_death_signal() {
    skip_if_not_root!("detached_restore_survives_criu_exit_despite_a_parent_death_signal");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    // The state victim sets PR_SET_PDEATHSIG(SIGKILL) on itself.
    let (mut v, _) = dir.spawn_victim(
        env!("CARGO_BIN_EXE_criu-victim-state"),
        &[dir.ready.to_str().unwrap()],
        None,
        Duration::from_secs(10),
    );
    dump_and_reap(&mut v, &dir.img, &[]);
    let task = restore_d(&dir.img, v.pid());
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        wait_exit_timeout(task.pid(), Duration::from_millis(10)),
        Ok(None),
        "the task died"
    );
    assert!(matches!(
        wait_state(task.pid(), "S", Duration::from_secs(5)),
        Some('S')
    ));
    assert_eq!(status_field(task.pid(), "Name:"), "statevic");
    drop(task);
}

#[test]
fn a_stopped_task_comes_back_stopped() {
    skip_if_not_root!("a_stopped_task_comes_back_stopped");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let out = dir.path("out");
    let (mut v, _) = dir.spawn_victim(
        env!("CARGO_BIN_EXE_criu-victim-counter"),
        &[out.to_str().unwrap(), dir.ready.to_str().unwrap()],
        None,
        Duration::from_secs(10),
    );
    kill(Pid::from_raw(v.pid()), Signal::SIGSTOP).unwrap();
    assert_eq!(wait_state(v.pid(), "T", Duration::from_secs(5)), Some('T'));
    dump_and_reap(&mut v, &dir.img, &[]);
    let task = restore_d(&dir.img, v.pid());
    assert_eq!(
        wait_state(task.pid(), "T", Duration::from_secs(5)),
        Some('T')
    );
    let n = fs::read_to_string(&out).unwrap().lines().count();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        fs::read_to_string(&out).unwrap().lines().count(),
        n,
        "it ran while stopped"
    );
    kill(Pid::from_raw(task.pid()), Signal::SIGCONT).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let nums: Vec<u64> = fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert!(nums.len() > n, "it did not continue after SIGCONT");
    for (i, k) in nums.iter().enumerate() {
        assert_eq!(*k, i as u64 + 1);
    }
    drop(task);
}

/// Field 7 of /proc/PID/stat: the controlling terminal's device number (0: none).
fn tty_nr(pid: i32) -> u64 {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &s[s.rfind(')').unwrap() + 2..];
    rest.split(' ').nth(4).unwrap().parse().unwrap()
}

#[test]
fn a_session_leader_gets_its_terminal_back() {
    skip_if_not_root!("a_session_leader_gets_its_terminal_back");
    let _g = test_lock();
    become_subreaper();
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two descriptors into live locals; name, termios, winsize are null.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0);
    let pts = fs::read_link(format!("/proc/self/fd/{slave}")).unwrap();
    let dir = Scratch::new();
    let out = dir.path("out");
    let v_pid = {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_criu-victim-counter"));
        cmd.args([out.to_str().unwrap(), dir.ready.to_str().unwrap()]);
        // SAFETY: only async-signal-safe syscalls in the child: a new session whose
        // controlling terminal is the pty, on fds 0..2, nothing else inherited.
        unsafe {
            cmd.pre_exec(move || {
                libc::setsid();
                libc::ioctl(slave, libc::TIOCSCTTY, 0);
                for fd in 0..3 {
                    libc::dup2(slave, fd);
                }
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
                Ok(())
            });
        }
        cmd.spawn().unwrap().id() as i32
    };
    // SAFETY: the slave end is the child's now; the master stays open for the whole test.
    unsafe { libc::close(slave) };
    let mut v = Spawned::guard(v_pid);
    wait_file(&dir.ready, Duration::from_secs(10));
    let tty = tty_nr(v.pid());
    assert_ne!(tty, 0);
    // A task on a terminal is dumped as a shell job (its terminal saved by path).
    dump_and_reap(&mut v, &dir.img, &["--shell-job"]);
    let task = restore_d(&dir.img, v.pid());
    assert_eq!(
        fs::read_link(format!("/proc/{}/fd/0", task.pid())).unwrap(),
        pts
    );
    assert_eq!(
        tty_nr(task.pid()),
        tty,
        "the terminal is not its controlling terminal again"
    );
    assert_eq!(status_field(task.pid(), "NSsid:"), task.pid().to_string());
    drop(task);

    // As a shell job: criu runs in the terminal's session and the task joins it.
    let mut criu = {
        use std::os::unix::process::CommandExt;
        let path = std::ffi::CString::new(pts.as_os_str().as_encoded_bytes()).unwrap();
        let mut cmd = std::process::Command::new(criu_bin());
        cmd.args([
            "restore",
            "--shell-job",
            "-D",
            dir.img.to_str().unwrap(),
            "-o",
            "restore.log",
        ])
        .stdin(std::process::Stdio::null());
        // SAFETY: only async-signal-safe calls: a new session with the pty as its terminal.
        unsafe {
            cmd.pre_exec(move || {
                libc::setsid();
                let fd = libc::open(path.as_ptr(), libc::O_RDWR);
                libc::ioctl(fd, libc::TIOCSCTTY, 0);
                Ok(())
            });
        }
        cmd.spawn().unwrap()
    };
    wait_resumed(v.pid(), &dir.img, &mut criu);
    assert_eq!(status_field(v.pid(), "NSsid:"), criu.id().to_string());
    assert_eq!(tty_nr(v.pid()), tty);
    assert_eq!(
        fs::read_link(format!("/proc/{}/fd/1", v.pid())).unwrap(),
        pts
    );
    kill(Pid::from_raw(v.pid()), Signal::SIGKILL).unwrap();
    assert_eq!(criu.wait().unwrap().code(), Some(128 + libc::SIGKILL));
    assert!(!pid_exists(v.pid()));
    // SAFETY: closing our master end.
    unsafe { libc::close(master) };
}

#[test]
fn vector_registers_survive_dump_and_restore_of_a_spinning_task() {
    skip_if_not_root!("vector_registers_survive_dump_and_restore_of_a_spinning_task");
    if !compel_arch::cpu_has_avx() {
        eprintln!("skipped: the CPU has no AVX");
        return;
    }
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let log = dir.path("victim.log");
    // It fills ymm/zmm and k registers, then spins in user code (no syscall) until its flag is
    // set, then compares the registers and prints `ok`.
    let mut v = Spawned::spawn(env!("CARGO_BIN_EXE_victim-avx"), &[], &log, None);
    let ready = wait_file(&log, Duration::from_secs(10));
    let f: Vec<&str> = ready.split_whitespace().collect();
    assert_eq!(f[0], "ready", "{ready}");
    let flag = u64::from_str_radix(f[2], 16).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    dump_and_reap(&mut v, &dir.img, &[]);
    let task = restore_d(&dir.img, v.pid());
    std::thread::sleep(Duration::from_millis(50));
    let one = 1u32.to_ne_bytes();
    nix::sys::uio::process_vm_writev(
        Pid::from_raw(task.pid()),
        &[std::io::IoSlice::new(&one)],
        &[RemoteIoVec {
            base: flag as usize,
            len: 4,
        }],
    )
    .unwrap();
    let exit = wait_exit_timeout(task.pid(), Duration::from_secs(20)).unwrap();
    std::mem::forget(task);
    let text = fs::read_to_string(&log).unwrap();
    assert_eq!(exit, Some(compel_criu_tests::Exit::Code(0)), "{text}");
    assert!(text.ends_with("ok\n"), "{text}");
}

#[test]
fn a_signal_sent_while_restoring_reaches_the_tasks_own_handler() {
    skip_if_not_root!("a_signal_sent_while_restoring_reaches_the_tasks_own_handler");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    // Enough memory that the restore takes a while.
    let (mut v, _) = dir.spawn_victim(
        env!("CARGO_BIN_EXE_criu-rvictim-big"),
        &["96", dir.ready.to_str().unwrap()],
        None,
        Duration::from_secs(30),
    );
    dump_and_reap(&mut v, &dir.img, &[]);
    let mut criu = restore_in_background(&dir.img);
    // As soon as the pid exists (still criu's copy, restoring), send SIGUSR1.
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while !pid_exists(v.pid()) {
        assert!(std::time::Instant::now() < end, "the task never appeared");
        std::thread::sleep(Duration::from_micros(200));
    }
    let name = status_field(v.pid(), "Name:");
    kill(Pid::from_raw(v.pid()), Signal::SIGUSR1).unwrap();
    assert_eq!(
        name, "criu",
        "the signal came after the restore: the test proves nothing"
    );
    let verdict = wait_file(&dir.ready.with_extension("2"), Duration::from_secs(30));
    kill(Pid::from_raw(v.pid()), Signal::SIGKILL).unwrap();
    let status = criu.wait().unwrap();
    assert_eq!(
        verdict.trim(),
        "check ok",
        "(signal sent while its name was {name:?})"
    );
    assert_eq!(status.code(), Some(128 + libc::SIGKILL));
}

#[test]
fn the_ns_last_pid_fallback_gives_the_same_pid() {
    skip_if_not_root!("the_ns_last_pid_fallback_gives_the_same_pid");
    let _g = test_lock();
    become_subreaper();
    let Some(_bin) = fixture_usable() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let dir = fixtures_dir().join("single");
    let o = std::process::Command::new(criu_bin())
        .args(["restore", "-d", "-D", dir.to_str().unwrap()])
        .args(["-W", t.path().to_str().unwrap(), "-o", "restore.log", "-v4"])
        .args(fixture_cpu_cap())
        .env("CRIU_RESTORE_PID_METHOD", "ns_last_pid")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    // Another process may take the pid between the write and the fork: then it fails cleanly.
    if !o.status.success() {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("in use"), "{err}");
        assert!(!pid_exists(SINGLE_PID));
        eprintln!("ns_last_pid race lost: {err}");
    } else {
        let task = Spawned::guard(SINGLE_PID);
        assert_eq!(
            wait_state(task.pid(), "S", Duration::from_secs(5)),
            Some('S')
        );
        assert_eq!(status_field(task.pid(), "Name:"), "single");
        drop(task);
    }
}

#[test]
fn damaged_images_never_panic_the_reader() {
    // Deterministic pseudo-random damage (xorshift) to every image but the raw pages: reading
    // must end in a result, never a panic.
    let _g = test_lock();
    let _bin = install_fixture_binary();
    let src = fixtures_dir().join("single");
    assert!(criu::restore::images::load(&src, false).is_ok());
    let files: Vec<PathBuf> = fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "img"))
        .filter(|p| {
            !p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("pages-")
        })
        .collect();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let t = tempfile::tempdir().unwrap();
    copy_dir(&src, t.path());
    let mut errors = 0;
    for round in 0..300 {
        let f = &files[(next() % files.len() as u64) as usize];
        let name = f.file_name().unwrap();
        let orig = fs::read(f).unwrap();
        let mut b = orig.clone();
        match round % 3 {
            0 => b.truncate((next() % (b.len() as u64 + 1)) as usize),
            1 => {
                for _ in 0..1 + next() % 4 {
                    let i = (next() % b.len().max(1) as u64) as usize;
                    if let Some(v) = b.get_mut(i) {
                        *v ^= (next() % 255 + 1) as u8;
                    }
                }
            }
            _ => {
                let i = (next() % (b.len() as u64 + 1)) as usize;
                let junk: Vec<u8> = (0..next() % 16).map(|_| next() as u8).collect();
                b.splice(i..i, junk);
            }
        }
        fs::write(t.path().join(name), &b).unwrap();
        let r = std::panic::catch_unwind(|| criu::restore::images::load(t.path(), false));
        let r =
            r.unwrap_or_else(|_| panic!("the reader panicked on damaged {name:?} (round {round})"));
        errors += r.is_err() as usize;
        fs::write(t.path().join(name), &orig).unwrap();
    }
    assert!(
        errors > 100,
        "only {errors} of 300 damaged image sets were refused"
    );
    assert!(
        errors < 300,
        "every damaged set was refused: the undamaged parts never loaded"
    );
}

#[test]
fn the_nice_value_comes_back() {
    skip_if_not_root!("the_nice_value_comes_back");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let out = dir.path("out");
    let (mut v, _) = dir.spawn_victim(
        env!("CARGO_BIN_EXE_criu-victim-counter"),
        &[out.to_str().unwrap(), dir.ready.to_str().unwrap()],
        None,
        Duration::from_secs(10),
    );
    // SAFETY: setpriority on our own child.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, v.pid() as u32, 7) };
    assert_eq!(r, 0);
    let nice = |pid: i32| -> i64 {
        let s = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let rest = &s[s.rfind(')').unwrap() + 2..];
        rest.split(' ').nth(16).unwrap().parse().unwrap()
    };
    assert_eq!(nice(v.pid()), 7);
    dump_and_reap(&mut v, &dir.img, &[]);
    let task = restore_d(&dir.img, v.pid());
    assert_eq!(nice(task.pid()), 7);
    drop(task);
}

#[test]
fn failures_inside_the_new_task_name_the_step_and_leave_nothing() {
    skip_if_not_root!("failures_inside_the_new_task_name_the_step_and_leave_nothing");
    let _g = test_lock();
    become_subreaper();
    let Some(_bin) = fixture_usable() else {
        return;
    };
    let src = fixtures_dir().join("single");

    // A working directory that is gone: the child fails while setting up its directories.
    let t = tempfile::tempdir().unwrap();
    copy_dir(&src, t.path());
    let d = criu_images::ImageDir::new(t.path());
    let mut files = d.read_files().unwrap();
    let cwd = files.iter_mut().find(|f| f.id == 9).unwrap();
    cwd.reg.as_mut().unwrap().name = "/nonexistent-criu-cwd".into();
    d.write_files(&files).unwrap();
    let err = restore(&detached(t.path()), None).unwrap_err();
    assert!(
        matches!(&err, RestoreError::Task { stage, .. } if *stage == "root, cwd and umask"),
        "{err:?}"
    );
    assert!(err.to_string().contains("ENOENT"), "{err}");
    assert!(!pid_exists(SINGLE_PID), "the failed task was left behind");

    // A POSIX timer on a clock that does not exist: the restorer fails at its timers.
    let t = tempfile::tempdir().unwrap();
    copy_dir(&src, t.path());
    let d = criu_images::ImageDir::new(t.path());
    let mut core = d.read_core(SINGLE_PID as u32).unwrap();
    core.tc
        .as_mut()
        .unwrap()
        .timers
        .as_mut()
        .unwrap()
        .posix
        .push(criu_images::pb::PosixTimerEntry {
            it_id: 0,
            clock_id: 99,
            si_signo: libc::SIGALRM as u32,
            it_sigev_notify: 0,
            sival_ptr: 0,
            overrun: 0,
            isec: 0,
            insec: 0,
            vsec: 1,
            vnsec: 0,
            notify_thread_id: None,
        });
    d.write_core(SINGLE_PID as u32, &core).unwrap();
    let err = restore(&detached(t.path()), None).unwrap_err();
    assert!(
        matches!(&err, RestoreError::Task { stage, .. } if *stage == "posix timers"),
        "{err:?}"
    );
    assert!(!pid_exists(SINGLE_PID), "the failed task was left behind");
}

#[test]
fn dump_then_restore_a_pool_of_eight_threads() {
    skip_if_not_root!("dump_then_restore_a_pool_of_eight_threads");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let (mut v, r) = dir.spawn_victim(
        env!("CARGO_BIN_EXE_criu-rvictim-threads"),
        &["8", dir.ready.to_str().unwrap()],
        None,
        Duration::from_secs(10),
    );
    let tids = ready_numbers(&r, 2);
    assert_eq!(tids.len(), 8, "{r}");
    std::thread::sleep(Duration::from_millis(50));
    dump_and_reap(&mut v, &dir.img, &[]);
    for t in &tids {
        assert!(!pid_exists(*t));
    }
    let mut criu = restore_in_background(&dir.img);
    wait_resumed(v.pid(), &dir.img, &mut criu);
    let mut task: Vec<i32> = fs::read_dir(format!("/proc/{}/task", v.pid()))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().parse().unwrap())
        .collect();
    task.sort_unstable();
    let mut want = tids.clone();
    want.push(v.pid());
    want.sort_unstable();
    assert_eq!(task, want, "the threads did not come back with their tids");
    kill(Pid::from_raw(v.pid()), Signal::SIGUSR1).unwrap();
    let verdict = wait_file(&dir.ready.with_extension("2"), Duration::from_secs(30));
    kill(Pid::from_raw(v.pid()), Signal::SIGKILL).unwrap();
    let status = criu.wait().unwrap();
    assert_eq!(verdict.trim(), "check ok");
    assert_eq!(status.code(), Some(128 + libc::SIGKILL));
}

/// CRIU 4.2's `tree` fixture: a session leader with a thread, a child in its group, a child
/// leading its own group, and one shared anonymous page (written by CRIU as a memfd). The plan
/// must see all of that; where this CPU fits the saved vector state and the pids are free, the
/// tree comes back with every pid, parent, group and session, still sharing its page.
#[test]
fn criu_4_2_tree_fixture_plans_and_restores() {
    use criu::restore::plan::{SessionOp, VmaKind};
    skip_if_not_root!("criu_4_2_tree_fixture_plans_and_restores");
    let _g = test_lock();
    become_subreaper();
    let dir = fixtures_dir().join("tree");
    let _bin = FixtureBinary::install("tree");
    let tree = criu::restore::images::load(&dir, false).expect("tree fixture loads");
    let pids: Vec<i32> = tree.tasks.iter().map(|t| t.pid).collect();
    assert_eq!(pids, [12809, 12811, 12812]);
    assert_eq!(tree.parent, [None, Some(0), Some(0)]);
    assert_eq!(tree.order, [0, 1, 2]);
    assert_eq!(tree.tasks[0].others().len(), 1, "the root's second thread");
    let ops = criu::restore::session::session_ops(&tree, false).unwrap();
    assert_eq!(
        ops,
        [SessionOp::Setsid, SessionOp::Inherit, SessionOp::Setpgid(0)]
    );
    let shm: Vec<Vec<u64>> = tree
        .tasks
        .iter()
        .map(|t| {
            t.vmas
                .iter()
                .filter_map(|v| match v.kind {
                    VmaKind::AnonShared { shmid } => Some(shmid),
                    _ => None,
                })
                .collect()
        })
        .collect();
    assert_eq!(shm[0].len(), 1, "{shm:?}");
    assert!(
        shm.iter().all(|s| *s == shm[0]),
        "one object in all: {shm:?}"
    );

    // With --cpu-cap=none where this CPU lacks the fixture's vector registers: every task sits
    // in pause(), where they are dead.
    let fits = fpu_misfit(&tree).is_none();
    if !fits || !pids.iter().chain(&[12813]).all(|p| !pid_exists(*p)) {
        eprintln!("restore part skipped: CPU lacks the fixture's vector state or a pid is taken");
        return;
    }
    let out = restore(&detached(&dir), None);
    // Dropped root first: its children then come to us (the subreaper) to be reaped.
    let guards: Vec<Spawned> = pids.iter().map(|p| Spawned::guard(*p)).collect();
    let out = out.unwrap_or_else(|e| panic!("restore failed: {e} ({e:?})"));
    assert_eq!(out, RestoreOutcome::Detached { pid: 12809 });
    let ids: Vec<_> = pids.iter().map(|p| stat_ids(*p).unwrap()).collect();
    assert_eq!(ids[0].2, 12809);
    assert_eq!(ids[0].3, 12809);
    assert_eq!((ids[1].1, ids[1].2, ids[1].3), (12809, 12809, 12809));
    assert_eq!((ids[2].1, ids[2].2, ids[2].3), (12809, 12812, 12809));
    assert!(Path::new("/proc/12809/task/12813").exists());
    drop(guards);
}

/// The fields of `/proc/PID/fdinfo/FD`, line by line.
fn fdinfo(pid: i32, fd: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap_or_default()
}

/// An eventfd (counter 5, non-blocking), an epoll watching it (EPOLLIN, data 0xabc), a
/// monotonic timerfd (100 s, interval 3 s) and a signalfd for SIGUSR2 come back at their
/// numbers with their counter, targets, clock and setting, and mask.
#[test]
fn eventfd_epoll_timerfd_and_signalfd_come_back() {
    skip_if_not_root!("eventfd_epoll_timerfd_and_signalfd_come_back");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let (mut v, r) = dir.spawn_victim(
        env!("CARGO_BIN_EXE_criu-victim-anonfd"),
        &[dir.ready.to_str().unwrap()],
        None,
        Duration::from_secs(10),
    );
    let fds = ready_numbers(&r, 2);
    let [efd, epfd, tfd, sfd] = fds[..] else {
        panic!("ready line {r}");
    };
    dump_and_reap(&mut v, &dir.img, &[]);
    let o = run_criu(&[
        "restore",
        "-d",
        "-D",
        dir.img.to_str().unwrap(),
        "-o",
        "restore.log",
    ]);
    assert_ok(&o, "criu restore -d");
    let task = Spawned::guard(v.pid());
    let pid = task.pid();
    for (fd, what) in [
        (efd, "anon_inode:[eventfd]"),
        (epfd, "anon_inode:[eventpoll]"),
        (tfd, "anon_inode:[timerfd]"),
        (sfd, "anon_inode:[signalfd]"),
    ] {
        let link = fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
        assert_eq!(link.to_string_lossy(), what, "fd {fd}");
    }
    let e = fdinfo(pid, efd);
    assert!(
        e.contains("eventfd-count:                5\n") || e.contains("eventfd-count: 5"),
        "{e}"
    );
    let flags = e
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .map(|f| u32::from_str_radix(f.trim(), 8).unwrap())
        .unwrap();
    assert_ne!(
        flags & libc::O_NONBLOCK as u32,
        0,
        "eventfd flags {flags:o}"
    );
    let ep = fdinfo(pid, epfd);
    let target = ep
        .lines()
        .find(|l| l.starts_with("tfd:"))
        .unwrap_or_else(|| panic!("no epoll target: {ep}"));
    let w: Vec<&str> = target.split_whitespace().collect();
    assert_eq!(w[1], efd.to_string(), "{target}");
    // The kernel always adds EPOLLERR and EPOLLHUP to what was asked.
    let events = (libc::EPOLLIN | libc::EPOLLERR | libc::EPOLLHUP) as u32;
    assert_eq!(u32::from_str_radix(w[3], 16).unwrap(), events, "{target}");
    assert_eq!(u64::from_str_radix(w[5], 16).unwrap(), 0xabc, "{target}");
    let t = fdinfo(pid, tfd);
    assert!(t.contains("clockid: 1\n"), "{t}");
    assert!(t.contains("it_interval: (3, 0)"), "{t}");
    let secs: i64 = t
        .lines()
        .find_map(|l| l.strip_prefix("it_value: ("))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{t}"));
    assert!((80..=100).contains(&secs), "timer left {secs} s: {t}");
    let s = fdinfo(pid, sfd);
    let mask = s
        .lines()
        .find_map(|l| l.strip_prefix("sigmask:"))
        .map(|m| u64::from_str_radix(m.trim(), 16).unwrap())
        .unwrap_or_else(|| panic!("{s}"));
    assert_eq!(mask, 1 << (libc::SIGUSR2 - 1), "{s}");
    drop(task);
}

/// A timerfd set with an absolute time and `TFD_TIMER_CANCEL_ON_SET` comes back set the same
/// way, with the time it had left.
#[test]
fn an_absolute_timerfd_comes_back_absolute() {
    skip_if_not_root!("an_absolute_timerfd_comes_back_absolute");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let (mut v, r) = dir.spawn_victim(
        env!("CARGO_BIN_EXE_criu-rvictim-abstimer"),
        &[dir.ready.to_str().unwrap()],
        None,
        Duration::from_secs(10),
    );
    let tfd: i32 = r
        .split_whitespace()
        .nth(2)
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("ready line {r}"));
    dump_and_reap(&mut v, &dir.img, &[]);
    let o = run_criu(&[
        "restore",
        "-d",
        "-D",
        dir.img.to_str().unwrap(),
        "-o",
        "restore.log",
    ]);
    assert_ok(&o, "criu restore -d");
    let task = Spawned::guard(v.pid());
    let t = fdinfo(task.pid(), tfd);
    assert!(t.contains("clockid: 0\n"), "{t}");
    let flags = t
        .lines()
        .find_map(|l| l.strip_prefix("settime flags:"))
        .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
        .unwrap_or_else(|| panic!("{t}"));
    let want = (libc::TFD_TIMER_ABSTIME | libc::TFD_TIMER_CANCEL_ON_SET) as u32;
    assert_eq!(flags, want, "{t}");
    let secs: i64 = t
        .lines()
        .find_map(|l| l.strip_prefix("it_value: ("))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{t}"));
    assert!((80..=100).contains(&secs), "timer left {secs} s: {t}");
    drop(task);
}
