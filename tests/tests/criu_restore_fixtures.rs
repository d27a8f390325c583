//! criu restore of CRIU 4.2's own fixture images: the `single` task and the `tree`
//! fixture come back as CRIU wrote them, with and without `--restore-detached`, also through the
//! `ns_last_pid` fallback.
//!
//! Every test runs as root, under the test lock and as a child subreaper, checks what a user
//! would check in /proc and in the task's memory, then kills and reaps what it started. The
//! shared helpers (fixtures, [`Scratch`](compel_criu_tests::Scratch), `restore_and_check`, ...)
//! are the tests crate's.

use std::fs;
use std::path::Path;
use std::time::Duration;

use compel_criu_tests::{
    FixtureBinary, SINGLE_PID, Spawned, become_subreaper, criu_bin, detached, fixture_cpu_cap,
    fixture_needs_cpu_cap_none, fixture_usable, fixtures_dir, fpu_misfit, hex_field, pid_exists,
    read_mem, skip_if_not_root, stat_ids, status_field, test_lock, wait_exit_timeout, wait_state,
};
use criu::{CpuCap, RestoreOptions, RestoreOutcome, restore};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

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
        cpu_cap: if fixture_needs_cpu_cap_none() {
            CpuCap(CpuCap::NONE)
        } else {
            CpuCap::default()
        },
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

/// CRIU 4.2's `tree` fixture: a session leader with a thread, a child in its group, a child
/// leading its own group, and one shared anonymous page (written by CRIU as a memfd). The plan
/// must see all of that; where this CPU fits the saved vector state and the pids are free, the
/// tree comes back with every pid, parent, group and session, still sharing its page.
#[test]
fn criu_4_2_tree_fixture_plans_and_restores() {
    use criu::images_plan::{SessionOp, VmaKind};
    skip_if_not_root!("criu_4_2_tree_fixture_plans_and_restores");
    let _g = test_lock();
    become_subreaper();
    let dir = fixtures_dir().join("tree");
    let _bin = FixtureBinary::install("tree");
    let tree = criu::images_plan::load(&dir, false).expect("tree fixture loads");
    let pids: Vec<i32> = tree.tasks.iter().map(|t| t.pid).collect();
    assert_eq!(pids, [12809, 12811, 12812]);
    assert_eq!(tree.parent, [None, Some(0), Some(0)]);
    // Group leaders are created before their siblings (a group whose leader is a zombie needs
    // it): 12812 leads its own group, so it comes before 12811.
    assert_eq!(tree.order, [0, 2, 1]);
    assert_eq!(tree.tasks[0].others().len(), 1, "the root's second thread");
    let ops = criu::images_plan::session_ops(&tree, false).unwrap();
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
