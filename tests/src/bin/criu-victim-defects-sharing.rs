//! criu test victim: processes sharing one descriptor table and fs info, checking themselves.
//!
//! `criu-victim-defects-sharing READY MODE` writes `ready PID` into READY and `PARENT CHILD`
//! into READY.pids once set up, then waits. On `SIGUSR1` it checks and writes `check ok` (or
//! `check bad WHAT...`) into READY.2.
//!
//! Modes:
//! - `files-fs`: a child made with `clone(CLONE_FILES | CLONE_FS)`; both are in READY.d1.
//!   The check: the parent opens a new file and the child must see the same file under that
//!   number; the child enters READY.d2 and the parent must be there too.
//! - `sibling`: a child A, which makes a child C with `CLONE_PARENT | CLONE_FILES` (C shares
//!   A's table, but its parent is ours): a dump must refuse it. READY.pids holds `A C`.
//! - `hugetlb`: 2 MiB of written anonymous `MAP_HUGETLB` memory (needs huge pages in the
//!   pool, `/proc/sys/vm/nr_hugepages`). READY.pids holds `0 0`.
//! - `cwd-dead-proc`: a child C, then this process enters `/proc/C`, kills C and reaps it:
//!   its cwd is the `/proc` directory of a process that has exited. READY.pids holds `C 0`.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicBool, Ordering};

static CHECK: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    CHECK.store(true, Ordering::SeqCst);
}

/// A fork-like `clone` with `flags` (no `CLONE_VM`): 0 in the child, its pid in the parent.
fn clone(flags: libc::c_int) -> i32 {
    // SAFETY: without CLONE_VM and a stack the child continues here on its own copy of the
    // address space, like after fork().
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    assert!(r >= 0, "clone: {}", std::io::Error::last_os_error());
    r as i32
}

fn pipe() -> (std::fs::File, std::fs::File) {
    let mut p = [0i32; 2];
    // SAFETY: pipe writes two descriptors into the live array.
    assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors are fresh and owned only here.
    unsafe {
        (
            std::fs::File::from_raw_fd(p[0]),
            std::fs::File::from_raw_fd(p[1]),
        )
    }
}

fn ino_of_fd(fd: i32) -> Option<u64> {
    // SAFETY: a zeroed stat is a valid buffer for fstat to fill.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat of a descriptor number with a live buffer.
    (unsafe { libc::fstat(fd, &mut st) } == 0).then_some(st.st_ino)
}

fn write_ready(ready: &str, pids: (i32, i32)) {
    std::fs::write(format!("{ready}.pids"), format!("{} {}", pids.0, pids.1)).expect("pids");
    let tmp = format!("{ready}.tmp");
    std::fs::write(&tmp, format!("ready {}", std::process::id())).expect("ready");
    std::fs::rename(&tmp, ready).expect("rename ready");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: criu-victim-defects-sharing READY MODE");
        std::process::exit(2);
    }
    let ready = args[1].clone();
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    match args[2].as_str() {
        "files-fs" => files_fs(&ready),
        "sibling" => sibling(&ready),
        "cwd-dead-proc" => cwd_dead_proc(&ready),
        "hugetlb" => hugetlb(&ready),
        other => {
            eprintln!("unknown mode {other}");
            std::process::exit(2);
        }
    }
}

fn files_fs(ready: &str) {
    let (d1, d2) = (format!("{ready}.d1"), format!("{ready}.d2"));
    std::fs::create_dir(&d1).expect("d1");
    std::fs::create_dir(&d2).expect("d2");
    std::env::set_current_dir(&d1).expect("chdir d1");
    let (mut ask_r, mut ask_w) = pipe();
    let (mut ans_r, mut ans_w) = pipe();
    let child = clone(libc::CLONE_FILES | libc::CLONE_FS);
    if child == 0 {
        // The child: for each fd number asked, answers its inode (0: not open), then enters
        // d2 and answers its cwd.
        loop {
            let mut b = [0u8; 4];
            if ask_r.read_exact(&mut b).is_err() {
                // SAFETY: ends the child.
                unsafe { libc::_exit(0) };
            }
            let fd = i32::from_ne_bytes(b);
            let ino = ino_of_fd(fd).unwrap_or(0);
            let cwd = std::env::current_dir()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            let moved = std::env::set_current_dir(&d2).is_ok();
            let msg = format!("{ino} {moved} {cwd}\n");
            let _ = ans_w.write_all(msg.as_bytes());
        }
    }
    write_ready(ready, (std::process::id() as i32, child));
    loop {
        std::thread::sleep(std::time::Duration::from_millis(10));
        if !CHECK.swap(false, Ordering::SeqCst) {
            continue;
        }
        let mut bad = Vec::new();
        let f = std::fs::File::create(format!("{ready}.probe")).expect("probe");
        let fd = f.as_raw_fd();
        let want = ino_of_fd(fd).unwrap_or(u64::MAX);
        let here = std::env::current_dir()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if here != d1 {
            bad.push(format!("parent-cwd={here}"));
        }
        ask_w.write_all(&fd.to_ne_bytes()).expect("ask");
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while ans_r.read_exact(&mut b).is_ok() && b[0] != b'\n' {
            line.push(b[0]);
        }
        let line = String::from_utf8_lossy(&line).into_owned();
        let mut w = line.splitn(3, ' ');
        let (ino, moved, cwd) = (w.next(), w.next(), w.next());
        if ino != Some(&want.to_string()) {
            bad.push(format!("child-fd-{fd}-ino={ino:?}-want-{want}"));
        }
        if cwd != Some(d1.as_str()) {
            bad.push(format!("child-cwd={cwd:?}"));
        }
        if moved != Some("true") {
            bad.push("child-chdir-failed".into());
        }
        let now = std::env::current_dir()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if now != d2 {
            bad.push(format!("parent-cwd-after-child-chdir={now}"));
        }
        drop(f);
        let _ = std::fs::remove_file(format!("{ready}.probe"));
        let _ = std::env::set_current_dir(&d1);
        let msg = if bad.is_empty() {
            "check ok".to_string()
        } else {
            format!("check bad {}", bad.join(" "))
        };
        std::fs::write(format!("{ready}.2"), msg).expect("check result");
    }
}

fn sibling(ready: &str) {
    let (mut r, mut w) = pipe();
    let a = clone(0);
    if a == 0 {
        drop(r);
        let c = clone(libc::CLONE_PARENT | libc::CLONE_FILES);
        if c == 0 {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        }
        let _ = w.write_all(&c.to_ne_bytes());
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
    drop(w);
    let mut b = [0u8; 4];
    r.read_exact(&mut b).expect("pid of C");
    write_ready(ready, (a, i32::from_ne_bytes(b)));
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

fn cwd_dead_proc(ready: &str) {
    let c = clone(0);
    if c == 0 {
        sleep_forever();
    }
    std::env::set_current_dir(format!("/proc/{c}")).expect("chdir /proc/C");
    // SAFETY: kills and reaps our own child.
    unsafe {
        libc::kill(c, libc::SIGKILL);
        libc::waitpid(c, std::ptr::null_mut(), 0);
    }
    write_ready(ready, (c, 0));
    sleep_forever();
}

fn hugetlb(ready: &str) {
    const LEN: usize = 2 << 20;
    // SAFETY: a fresh mapping chosen by the kernel; nothing of ours is replaced.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED, "mmap MAP_HUGETLB");
    // SAFETY: the mapping is ours and LEN bytes long.
    unsafe { std::ptr::write_bytes(p.cast::<u8>(), 0x5a, LEN) };
    write_ready(ready, (0, 0));
    sleep_forever();
}
