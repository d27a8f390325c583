//! criu test victim: what a dump and restore must keep across processes (issue 20, items 1,
//! 16 and 19).
//!
//! `criu-victim-defects-more MODE OUT READY`: sets up the state MODE names, writes the pids
//! of the processes it made into `OUT.pids` (space separated; the test guards and reaps
//! them), then `ready PID` into READY, and on SIGUSR1 checks it from the inside, writing `ok`
//! into OUT or `bad: WHY`. Then it sleeps until killed. Modes:
//! - `epoll-shared`: an epoll instance held by the victim and its child that watches a pipe
//!   and an eventfd both hold, and a pipe only the victim holds;
//! - `pgrp-helper`: a child L leading its own group, a child M and M's child N in L's group,
//!   then L killed and reaped: M's and N's group has no leader (`OUT.pids`: `L M N`);
//! - `proc-shared`: a child C; a descriptor on `/proc/C/status` inherited by a child D; a
//!   descriptor on `/proc/D/status` of D's own; a zombie child Z whose `/proc/Z` is the
//!   victim's cwd (`OUT.pids`: `C D Z`);
//! - `mapdel-fd`: a file `OUT.mapped` mapped shared and private, then deleted while a
//!   descriptor on it stays open: the mappings and the descriptor must be one file.

use std::sync::atomic::{AtomicBool, Ordering};

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

type Check = Box<dyn FnOnce() -> Result<(), String>>;

fn pipe(flags: i32) -> [i32; 2] {
    let mut p = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into a live local array.
    assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), flags) }, 0, "pipe2");
    p
}

fn write_all(fd: i32, b: &[u8]) -> isize {
    // SAFETY: writes from a live slice.
    unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) }
}

fn pread(fd: i32, len: usize) -> String {
    let mut b = vec![0u8; len];
    // SAFETY: reads into a live buffer of len bytes.
    let n = unsafe { libc::pread(fd, b.as_mut_ptr().cast(), len, 0) };
    b.truncate(n.max(0) as usize);
    String::from_utf8_lossy(&b).into_owned()
}

fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// Forks a child that runs `f` (which should never return: the child then exits); the
/// child's pid in the parent.
fn fork_child(f: impl FnOnce()) -> i32 {
    // SAFETY: the victim is single-threaded here; the child only runs `f`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        f();
        // SAFETY: ends the child without the parent's exit handlers.
        unsafe { libc::_exit(0) };
    }
    pid
}

/// kcmp(KCMP_FILE) of descriptor `fd` in processes `a` and `b`: 0 when it is one open file.
fn same_file(a: i32, b: i32, fd: i32) -> libc::c_long {
    // SAFETY: kcmp compares kernel objects; no memory is passed.
    unsafe { libc::syscall(libc::SYS_kcmp, a, b, 0, fd, fd) }
}

fn epoll_shared() -> (Check, Vec<i32>) {
    let p = pipe(libc::O_NONBLOCK);
    let q = pipe(libc::O_NONBLOCK);
    // SAFETY: plain creation calls and epoll_ctl with live locals.
    let (efd, ep) = unsafe {
        let efd = libc::eventfd(0, libc::EFD_NONBLOCK);
        let ep = libc::epoll_create1(0);
        for (fd, data) in [(p[0], 0xa), (efd, 0xb), (q[0], 0xc)] {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: data,
            };
            assert_eq!(libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev), 0);
        }
        (efd, ep)
    };
    assert!(efd >= 0 && ep >= 0);
    let parent = std::process::id() as i32;
    let child = fork_child(move || {
        // The child holds the epoll, the pipe p and the eventfd, not the pipe q.
        // SAFETY: closing the child's copies.
        unsafe {
            libc::close(q[0]);
            libc::close(q[1]);
        }
        sleep_forever()
    });
    let check: Check = Box::new(move || {
        for (what, fd) in [("epoll", ep), ("pipe", p[0]), ("eventfd", efd)] {
            let r = same_file(parent, child, fd);
            if r != 0 {
                return Err(format!("{what} is not shared with the child (kcmp {r})"));
            }
        }
        let wait = || {
            let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 8];
            // SAFETY: epoll_wait writes at most 8 events into a live array.
            let n = unsafe { libc::epoll_wait(ep, evs.as_mut_ptr(), 8, 200) };
            let mut got: Vec<u64> = evs[..n.max(0) as usize].iter().map(|e| e.u64).collect();
            got.sort_unstable();
            got
        };
        if !wait().is_empty() {
            return Err("epoll reports events before any input".into());
        }
        write_all(p[1], b"x");
        write_all(q[1], b"y");
        let one = 1u64.to_ne_bytes();
        write_all(efd, &one);
        let got = wait();
        if got != [0xa, 0xb, 0xc] {
            return Err(format!("epoll reports {got:x?}, not [a, b, c]"));
        }
        Ok(())
    });
    (check, vec![child])
}

fn getpgid(pid: i32) -> i32 {
    // SAFETY: getpgid takes a pid only.
    unsafe { libc::getpgid(pid) }
}

fn pgrp_helper() -> (Check, Vec<i32>) {
    let l = fork_child(|| sleep_forever());
    // SAFETY: setpgid of our own child.
    assert_eq!(unsafe { libc::setpgid(l, l) }, 0, "setpgid L");
    let ask = pipe(0);
    let answer = pipe(0);
    let m = fork_child(move || {
        // M makes N and moves it into L's group (a parent may move its child).
        let n = fork_child(|| sleep_forever());
        let mut b = [0u8; 4];
        // SAFETY: reads 4 bytes into a live local; setpgid of our own child.
        unsafe {
            libc::read(ask[0], b.as_mut_ptr().cast(), 4);
            assert_eq!(libc::setpgid(n, i32::from_ne_bytes(b)), 0, "setpgid N");
        }
        write_all(answer[1], &n.to_ne_bytes());
        sleep_forever()
    });
    // SAFETY: setpgid of our own child.
    assert_eq!(unsafe { libc::setpgid(m, l) }, 0, "setpgid M");
    write_all(ask[1], &l.to_ne_bytes());
    let mut b = [0u8; 4];
    // SAFETY: reads 4 bytes into a live local.
    let got = unsafe { libc::read(answer[0], b.as_mut_ptr().cast(), 4) };
    assert_eq!(got, 4);
    let n = i32::from_ne_bytes(b);
    // SAFETY: a kill and a reap of our own child, closing our own pipes.
    unsafe {
        libc::kill(l, libc::SIGKILL);
        libc::waitpid(l, std::ptr::null_mut(), 0);
        for fd in [ask[0], ask[1], answer[0], answer[1]] {
            libc::close(fd);
        }
    }
    let check: Check = Box::new(move || {
        let (gm, gn) = (getpgid(m), getpgid(n));
        if gm != l || gn != l {
            return Err(format!("M is in group {gm}, N in {gn}, not {l}"));
        }
        // SAFETY: kill with signal 0 only checks.
        if unsafe { libc::kill(l, 0) } == 0 {
            return Err(format!("the group leader {l} exists"));
        }
        // SAFETY: kill with signal 0 only checks.
        if unsafe { libc::kill(-l, 0) } != 0 {
            return Err(format!("group {l} cannot be signalled"));
        }
        Ok(())
    });
    (check, vec![l, m, n])
}

fn open_ro(p: &str) -> i32 {
    let c = std::ffi::CString::new(p).unwrap();
    // SAFETY: open with a NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY) };
    assert!(fd >= 0, "open {p}: {}", std::io::Error::last_os_error());
    fd
}

fn proc_shared(out: &str) -> (Check, Vec<i32>) {
    let c = fork_child(|| sleep_forever());
    let fc = open_ro(&format!("/proc/{c}/status"));
    let verdict = format!("{out}.d");
    let d = fork_child(move || {
        // D holds the parent's descriptor on /proc/C/status and one on its own status; on
        // SIGUSR1 it checks both and writes its verdict into OUT.d.
        let me = std::process::id();
        let own = open_ro(&format!("/proc/{me}/status"));
        loop {
            std::thread::sleep(std::time::Duration::from_millis(5));
            if !GO.swap(false, Ordering::SeqCst) {
                continue;
            }
            let a = pread(fc, 4096);
            let b = pread(own, 4096);
            let v = if !a.lines().any(|l| l == format!("Pid:\t{c}")) {
                "bad: D's inherited descriptor is not on C's status".to_string()
            } else if !b.lines().any(|l| l == format!("Pid:\t{me}")) {
                "bad: D's own descriptor is not on its status".to_string()
            } else {
                "ok".to_string()
            };
            let _ = std::fs::write(&verdict, v);
        }
    });
    let z = fork_child(|| {
        // SAFETY: ends the child at once; it stays a zombie.
        unsafe { libc::_exit(7) }
    });
    // Z is a zombie once it exited; the victim never reaps it.
    loop {
        // SAFETY: a zeroed siginfo_t is a valid buffer; WNOWAIT leaves Z a zombie.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid on our own child with a live buffer.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                z as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r == 0 {
            break;
        }
    }
    std::env::set_current_dir(format!("/proc/{z}")).expect("chdir /proc/Z");
    let out = out.to_string();
    let check: Check = Box::new(move || {
        let a = pread(fc, 4096);
        if !a.lines().any(|l| l == format!("Pid:\t{c}")) {
            return Err("the descriptor is not on C's status".into());
        }
        let cwd = std::fs::read_link("/proc/self/cwd").map_err(|e| e.to_string())?;
        if cwd != std::path::Path::new(&format!("/proc/{z}")) {
            return Err(format!("cwd is {}", cwd.display()));
        }
        let st = std::fs::read_to_string("stat").map_err(|e| format!("cwd stat: {e}"))?;
        if !st.starts_with(&format!("{z} (")) || !st.contains(") Z ") {
            return Err(format!("cwd is not the zombie's: {st}"));
        }
        // SAFETY: kill of our own child D.
        unsafe { libc::kill(d, libc::SIGUSR1) };
        let path = format!("{out}.d");
        for _ in 0..400 {
            if let Ok(v) = std::fs::read_to_string(&path)
                && !v.is_empty()
            {
                return if v == "ok" { Ok(()) } else { Err(v) };
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Err("D did not answer".into())
    });
    (check, vec![c, d, z])
}

fn map(fd: i32, flags: i32) -> usize {
    // SAFETY: a new mapping of one page wherever the kernel likes.
    let a = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            fd,
            0,
        )
    };
    assert_ne!(a, libc::MAP_FAILED, "mmap");
    a as usize
}

fn page(a: usize, len: usize) -> Vec<u8> {
    // SAFETY: `a` is a live mapping of at least one page, never unmapped.
    unsafe { std::slice::from_raw_parts(a as *const u8, len) }.to_vec()
}

fn ino(path: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

fn mapdel_fd(out: &str) -> (Check, Vec<i32>) {
    let p = format!("{out}.mapped");
    let c = std::ffi::CString::new(p.clone()).unwrap();
    // SAFETY: open with a NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_CREAT | libc::O_RDWR, 0o600) };
    assert!(fd >= 0, "open");
    let mut data = vec![b'm'; 4096];
    data[..11].copy_from_slice(b"mapped data");
    // SAFETY: writes from a live buffer.
    let wrote = unsafe { libc::pwrite(fd, data.as_ptr().cast(), 4096, 0) };
    assert_eq!(wrote, 4096);
    let sh = map(fd, libc::MAP_SHARED);
    let pr = map(fd, libc::MAP_PRIVATE);
    std::fs::remove_file(&p).unwrap();
    let check: Check = Box::new(move || {
        if page(sh, 4096) != data || page(pr, 4096) != data {
            return Err("a mapping of the deleted file lost its content".into());
        }
        let fd_ino = ino(&format!("/proc/self/fd/{fd}"));
        let sh_ino = ino(&format!("/proc/self/map_files/{:x}-{:x}", sh, sh + 4096));
        let pr_ino = ino(&format!("/proc/self/map_files/{:x}-{:x}", pr, pr + 4096));
        if fd_ino.is_none() || fd_ino != sh_ino || fd_ino != pr_ino {
            return Err(format!(
                "the descriptor and the mappings are different files ({fd_ino:?} {sh_ino:?} {pr_ino:?})"
            ));
        }
        // SAFETY: a zeroed stat is valid for fstat to fill.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat of our descriptor into a live stat.
        unsafe { libc::fstat(fd, &mut st) };
        if st.st_nlink != 0 {
            return Err(format!("the file has {} links", st.st_nlink));
        }
        // SAFETY: writes from a live buffer.
        unsafe { libc::pwrite(fd, b"NEW".as_ptr().cast(), 3, 0) };
        if page(sh, 3) != b"NEW" {
            return Err("a write through the descriptor is not in the shared mapping".into());
        }
        Ok(())
    });
    (check, Vec::new())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(mode), Some(out), Some(ready)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("usage: criu-victim-defects-more MODE OUT READY");
        std::process::exit(2);
    };
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let (check, pids) = match mode.as_str() {
        "epoll-shared" => epoll_shared(),
        "pgrp-helper" => pgrp_helper(),
        "proc-shared" => proc_shared(out),
        "mapdel-fd" => mapdel_fd(out),
        other => {
            eprintln!("unknown mode {other}");
            std::process::exit(2);
        }
    };
    let pids: Vec<String> = pids.iter().map(|p| p.to_string()).collect();
    std::fs::write(format!("{out}.pids"), pids.join(" ")).expect("pids");
    std::fs::write(ready, format!("ready {}", std::process::id())).expect("ready");
    while !GO.load(Ordering::SeqCst) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let verdict = match check() {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("bad: {e}"),
    };
    std::fs::write(out, verdict).expect("out");
    sleep_forever()
}
