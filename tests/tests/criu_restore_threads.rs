//! criu dump and restore of threads: a pool of threads with their own masks and names, vector
//! registers of a spinning task.
//!
//! Every test runs as root, under the test lock and as a child subreaper, checks what a user
//! would check in /proc and in the task's memory, then kills and reaps what it started. The
//! shared helpers (fixtures, [`Scratch`](compel_criu_tests::Scratch), `restore_and_check`, ...)
//! are the tests crate's.

use std::fs;
use std::time::Duration;

use compel_criu_tests::{
    Scratch, Spawned, become_subreaper, dump_and_reap, pid_exists, ready_numbers, restore_d,
    restore_in_background, skip_if_not_root, test_lock, wait_exit_timeout, wait_file, wait_resumed,
};
use nix::sys::signal::{Signal, kill};
use nix::sys::uio::RemoteIoVec;
use nix::unistd::Pid;

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
fn dump_then_restore_a_pool_of_eight_threads() {
    skip_if_not_root!("dump_then_restore_a_pool_of_eight_threads");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let (mut v, r) = dir.spawn_victim(
        env!("CARGO_BIN_EXE_criu-victim-worker-threads"),
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
