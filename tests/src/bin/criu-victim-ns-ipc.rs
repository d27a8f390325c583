//! criu test victim: a tree in an IPC namespace of its own, with SysV objects in it.
//!
//! `criu-victim-ns-ipc READY OUTER` makes a new IPC namespace (`unshare`) and in it: a shared
//! memory segment (key 0x5eed, 10000 bytes of a pattern, not attached), a private one of one
//! page, a message queue (key 0x5eee) holding three messages of different types and sizes, and
//! a set of four semaphores (key 0x5eef) with values 1, 7, 0, 300; forks a child that shares
//! the namespace and sleeps, and writes `ready PID CHILD SHMID MSGID SEMID` into READY. On
//! SIGUSR1 it checks that each object is there under its old id and key with its content, that
//! its namespace is not OUTER (the inode of the test's), and that the child is still in it, and
//! writes `check ok` or `check bad: WHY` into READY.2.

use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

const SHM_KEY: libc::key_t = 0x5eed;
const MSG_KEY: libc::key_t = 0x5eee;
const SEM_KEY: libc::key_t = 0x5eef;
const SHM_SIZE: usize = 10000;
const SEMS: [u16; 4] = [1, 7, 0, 300];

fn pattern(i: usize) -> u8 {
    (i * 7 + i / 251) as u8
}

fn messages() -> Vec<(i64, Vec<u8>)> {
    vec![
        (1, b"first".to_vec()),
        (42, (0..3000).map(|i| (i % 253) as u8).collect()),
        (7, Vec::new()),
    ]
}

fn ino(path: &str) -> Result<u64, String> {
    std::fs::metadata(path)
        .map(|m| m.ino())
        .map_err(|e| format!("{path}: {e}"))
}

fn make() -> (i32, i32, i32) {
    // SAFETY: SysV calls with plain arguments and buffers we own.
    unsafe {
        assert_eq!(libc::unshare(libc::CLONE_NEWIPC), 0, "unshare");
        let shm = libc::shmget(SHM_KEY, SHM_SIZE, 0o640 | libc::IPC_CREAT);
        assert!(shm >= 0, "shmget");
        let p = libc::shmat(shm, std::ptr::null(), 0) as *mut u8;
        assert!(p as isize != -1, "shmat");
        for i in 0..SHM_SIZE {
            *p.add(i) = pattern(i);
        }
        assert_eq!(libc::shmdt(p.cast()), 0);
        let private = libc::shmget(libc::IPC_PRIVATE, 4096, 0o600 | libc::IPC_CREAT);
        assert!(private >= 0, "shmget private");
        let msg = libc::msgget(MSG_KEY, 0o600 | libc::IPC_CREAT);
        assert!(msg >= 0, "msgget");
        for (ty, text) in messages() {
            let mut buf = ty.to_ne_bytes().to_vec();
            buf.extend_from_slice(&text);
            assert_eq!(libc::msgsnd(msg, buf.as_ptr().cast(), text.len(), 0), 0);
        }
        let sem = libc::semget(SEM_KEY, SEMS.len() as i32, 0o600 | libc::IPC_CREAT);
        assert!(sem >= 0, "semget");
        let mut v = SEMS;
        assert_eq!(libc::semctl(sem, 0, libc::SETALL, v.as_mut_ptr()), 0);
        (shm, msg, sem)
    }
}

fn check(ids: (i32, i32, i32), child: i32, outer: u64) -> Result<(), String> {
    let mine = ino("/proc/self/ns/ipc")?;
    if mine == outer {
        return Err("back in the test's ipc namespace".into());
    }
    let theirs = ino(&format!("/proc/{child}/ns/ipc"))?;
    if theirs != mine {
        return Err(format!(
            "child {child} is in ipc namespace {theirs}, not {mine}"
        ));
    }
    // SAFETY: SysV calls with plain arguments and buffers we own.
    unsafe {
        let shm = libc::shmget(SHM_KEY, 0, 0);
        if shm != ids.0 {
            return Err(format!(
                "segment of key {SHM_KEY:#x} is id {shm}, not {}",
                ids.0
            ));
        }
        let mut ds: libc::shmid_ds = std::mem::zeroed();
        if libc::shmctl(shm, libc::IPC_STAT, &mut ds) != 0 || ds.shm_segsz != SHM_SIZE {
            return Err(format!("segment size {}", ds.shm_segsz));
        }
        if ds.shm_perm.mode & 0o777 != 0o640 {
            return Err(format!("segment mode {:o}", ds.shm_perm.mode));
        }
        let p = libc::shmat(shm, std::ptr::null(), libc::SHM_RDONLY) as *const u8;
        if p as isize == -1 {
            return Err("shmat".into());
        }
        let bad = (0..SHM_SIZE).find(|&i| *p.add(i) != pattern(i));
        libc::shmdt(p.cast());
        if let Some(i) = bad {
            return Err(format!("segment byte {i} differs"));
        }
        let msg = libc::msgget(MSG_KEY, 0);
        if msg != ids.1 {
            return Err(format!(
                "queue of key {MSG_KEY:#x} is id {msg}, not {}",
                ids.1
            ));
        }
        let mut buf = vec![0u8; 8 + 8192];
        for (k, (ty, text)) in messages().into_iter().enumerate() {
            let n = libc::msgrcv(msg, buf.as_mut_ptr().cast(), 8192, 0, libc::IPC_NOWAIT);
            if n < 0 {
                return Err(format!("message {k} missing"));
            }
            let got_ty = i64::from_ne_bytes(buf[..8].try_into().unwrap());
            if got_ty != ty || buf[8..8 + n as usize] != text[..] {
                return Err(format!("message {k}: type {got_ty}, {n} bytes"));
            }
        }
        if libc::msgrcv(msg, buf.as_mut_ptr().cast(), 8192, 0, libc::IPC_NOWAIT) >= 0 {
            return Err("a fourth message".into());
        }
        let sem = libc::semget(SEM_KEY, 0, 0);
        if sem != ids.2 {
            return Err(format!(
                "semaphores of key {SEM_KEY:#x} are id {sem}, not {}",
                ids.2
            ));
        }
        let mut v = [0u16; 4];
        if libc::semctl(sem, 0, libc::GETALL, v.as_mut_ptr()) != 0 || v != SEMS {
            return Err(format!("semaphore values {v:?}"));
        }
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: criu-victim-ns-ipc READY OUTER");
        std::process::exit(2);
    }
    let ready = &args[1];
    let outer: u64 = args[2].parse().expect("OUTER");
    let ids = make();
    // SAFETY: the child only sleeps until it is killed.
    let child = unsafe { libc::fork() };
    if child == 0 {
        loop {
            // SAFETY: pause has no arguments.
            unsafe { libc::pause() };
        }
    }
    // SAFETY: installs an async-signal-safe handler that only stores an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let t = format!("{ready}.tmp");
    std::fs::write(
        &t,
        format!(
            "ready {} {child} {} {} {}",
            std::process::id(),
            ids.0,
            ids.1,
            ids.2
        ),
    )
    .unwrap();
    std::fs::rename(&t, ready).unwrap();
    loop {
        if GO.swap(false, Ordering::SeqCst) {
            let verdict = match check(ids, child, outer) {
                Ok(()) => "check ok".to_string(),
                Err(e) => format!("check bad: {e}"),
            };
            let out = format!("{ready}.2");
            let t = format!("{out}.tmp");
            std::fs::write(&t, verdict).unwrap();
            std::fs::rename(&t, out).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
