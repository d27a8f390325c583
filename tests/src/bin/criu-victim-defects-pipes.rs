//! criu test victim: pipes and descriptors whose state lives in the open file (issue 20,
//! items 11 to 17).
//!
//! `criu-victim-defects-pipes MODE OUT READY`: sets up the state MODE names, writes
//! `ready PID` into READY, and on SIGUSR1 checks it from the inside, writing `ok` into OUT or
//! `bad: WHY`. Then it sleeps until killed. Modes:
//! - `flags`: a pipe whose write end is non-blocking and read end blocking, and a pipe whose read
//!   end was reopened through `/proc/self/fd/N` as a second, non-blocking open file;
//! - `size`: an empty pipe grown to 1 MiB and one shrunk to 4 KiB;
//! - `sigio`: a pipe read end set up for a signal on input (`O_ASYNC`, `F_SETOWN_EX`,
//!   `F_SETSIG`): writing into the pipe must raise that signal;
//! - `epoll`: an epoll instance whose targets were added under numbers since closed (the file
//!   still held by a dup) or since reused by another file;
//! - `shared`: an eventfd, signalfd, timerfd and (empty) epoll instance made before a `fork`,
//!   held by the victim and its child;
//! - `timerfd`: a periodic timerfd that fired and was not read.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

static GO: AtomicBool = AtomicBool::new(false);
static SIGIO_COUNT: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

extern "C" fn on_io(_: libc::c_int) {
    SIGIO_COUNT.fetch_add(1, Ordering::SeqCst);
}

type Check = Box<dyn FnOnce() -> Result<(), String>>;

fn pipe(flags: i32) -> [i32; 2] {
    let mut p = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into a live local array.
    assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), flags) }, 0, "pipe2");
    p
}

fn getfl(fd: i32) -> i32 {
    // SAFETY: F_GETFL on a descriptor number, no pointers.
    unsafe { libc::fcntl(fd, libc::F_GETFL) }
}

fn nonblock(fd: i32) -> bool {
    getfl(fd) & libc::O_NONBLOCK != 0
}

fn write1(fd: i32, b: u8) -> isize {
    // SAFETY: writes one byte from a live local.
    unsafe { libc::write(fd, (&raw const b).cast(), 1) }
}

fn read1(fd: i32) -> Option<u8> {
    let mut b = 0u8;
    // SAFETY: reads one byte into a live local.
    let n = unsafe { libc::read(fd, (&raw mut b).cast(), 1) };
    (n == 1).then_some(b)
}

fn flags() -> Check {
    let a = pipe(0);
    // SAFETY: F_SETFL on our own descriptor.
    unsafe { libc::fcntl(a[1], libc::F_SETFL, libc::O_NONBLOCK) };
    let b = pipe(0);
    let path = std::ffi::CString::new(format!("/proc/self/fd/{}", b[0])).unwrap();
    // SAFETY: opens a NUL-terminated path.
    let again = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK) };
    assert!(again >= 0, "reopen the pipe");
    Box::new(move || {
        if nonblock(a[0]) {
            return Err("read end of pipe 1 is non-blocking".into());
        }
        if !nonblock(a[1]) {
            return Err("write end of pipe 1 is blocking".into());
        }
        if nonblock(b[0]) {
            return Err("read end of pipe 2 is non-blocking".into());
        }
        if !nonblock(again) {
            return Err("reopened read end of pipe 2 is blocking".into());
        }
        if nonblock(b[1]) {
            return Err("write end of pipe 2 is non-blocking".into());
        }
        if write1(b[1], 7) != 1 || read1(again) != Some(7) {
            return Err("the reopened end is not on pipe 2".into());
        }
        if read1(again).is_some() {
            return Err("pipe 2 holds more than was written".into());
        }
        if write1(a[1], 9) != 1 || read1(a[0]) != Some(9) {
            return Err("pipe 1 does not carry a byte".into());
        }
        Ok(())
    })
}

fn size() -> Check {
    let big = pipe(0);
    let small = pipe(0);
    // SAFETY: fcntl on our own descriptors.
    unsafe {
        assert!(libc::fcntl(big[1], libc::F_SETPIPE_SZ, 1 << 20) >= 1 << 20);
        assert!(libc::fcntl(small[1], libc::F_SETPIPE_SZ, 4096) == 4096);
    }
    Box::new(move || {
        // SAFETY: fcntl on our own descriptors.
        let (b, s) = unsafe {
            (
                libc::fcntl(big[0], libc::F_GETPIPE_SZ),
                libc::fcntl(small[0], libc::F_GETPIPE_SZ),
            )
        };
        if b != 1 << 20 {
            return Err(format!("empty 1 MiB pipe came back with {b} bytes"));
        }
        if s != 4096 {
            return Err(format!("empty 4 KiB pipe came back with {s} bytes"));
        }
        Ok(())
    })
}

/// `struct f_owner_ex`.
#[repr(C)]
struct OwnerEx {
    ty: i32,
    pid: i32,
}

fn sigio() -> Check {
    let sig = libc::SIGRTMIN() + 3;
    // SAFETY: installs a handler that only updates an atomic.
    unsafe { libc::signal(sig, on_io as *const () as libc::sighandler_t) };
    let p = pipe(libc::O_NONBLOCK);
    let me = std::process::id() as i32;
    // SAFETY: fcntl on our own descriptor with a live f_owner_ex.
    unsafe {
        let ex = OwnerEx { ty: 1, pid: me };
        assert_eq!(
            libc::fcntl(p[0], 15, &ex as *const OwnerEx),
            0,
            "F_SETOWN_EX"
        );
        assert_eq!(libc::fcntl(p[0], 10, sig), 0, "F_SETSIG");
        let fl = libc::fcntl(p[0], libc::F_GETFL);
        assert_eq!(libc::fcntl(p[0], libc::F_SETFL, fl | libc::O_ASYNC), 0);
    }
    Box::new(move || {
        if getfl(p[0]) & libc::O_ASYNC == 0 {
            return Err("O_ASYNC was dropped".into());
        }
        let mut ex = OwnerEx { ty: 0, pid: 0 };
        // SAFETY: F_GETOWN_EX writes a live f_owner_ex; F_GETSIG takes no pointer.
        let (r, s) = unsafe {
            (
                libc::fcntl(p[0], 16, &mut ex as *mut OwnerEx),
                libc::fcntl(p[0], 11),
            )
        };
        if r != 0 || ex.pid != me || ex.ty != 1 {
            return Err(format!("owner is {} (type {}), not {me}", ex.pid, ex.ty));
        }
        if s != sig {
            return Err(format!("F_GETSIG is {s}, not {sig}"));
        }
        let before = SIGIO_COUNT.load(Ordering::SeqCst);
        write1(p[1], 1);
        for _ in 0..200 {
            if SIGIO_COUNT.load(Ordering::SeqCst) > before {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Err("no signal on input".into())
    })
}

fn epoll() -> Check {
    let a = pipe(libc::O_NONBLOCK);
    let b = pipe(libc::O_NONBLOCK);
    // SAFETY: epoll calls on our own descriptors with live locals.
    let ep = unsafe { libc::epoll_create1(0) };
    assert!(ep >= 0);
    let add = |fd: i32, data: u64| {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: data,
        };
        // SAFETY: epoll_ctl on our own descriptors with a live event.
        let r = unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) };
        assert_eq!(r, 0);
    };
    add(a[0], 0xa);
    add(b[0], 0xb);
    // Pipe a's read end moves to another number; pipe b's read end number is reused by a
    // new pipe's read end (b's file is still held through its dup).
    // SAFETY: dup/close/pipe on our own descriptors.
    let (a_now, b_now, c) = unsafe {
        let a_now = libc::dup(a[0]);
        libc::close(a[0]);
        let b_now = libc::dup(b[0]);
        libc::close(b[0]);
        let c = pipe(libc::O_NONBLOCK);
        (a_now, b_now, c)
    };
    let _ = (a_now, b_now, c);
    Box::new(move || {
        write1(a[1], 1);
        write1(b[1], 2);
        write1(c[1], 3);
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 8];
        // SAFETY: epoll_wait writes at most 8 events into a live array.
        let n = unsafe { libc::epoll_wait(ep, evs.as_mut_ptr(), 8, 1000) };
        let mut got: Vec<u64> = evs[..n.max(0) as usize].iter().map(|e| e.u64).collect();
        got.sort_unstable();
        if got != [0xa, 0xb] {
            return Err(format!("epoll reports {got:x?}, not [a, b]"));
        }
        Ok(())
    })
}

fn shared(out: &str) -> Check {
    // SAFETY: plain creation calls with live locals.
    let (efd, sfd, tfd, ep) = unsafe {
        let efd = libc::eventfd(5, 0);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        let sfd = libc::signalfd(-1, &set, 0);
        let tfd = libc::timerfd_create(libc::CLOCK_MONOTONIC, 0);
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 100,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: 100,
                tv_nsec: 0,
            },
        };
        libc::timerfd_settime(tfd, 0, &spec, std::ptr::null_mut());
        let ep = libc::epoll_create1(0);
        (efd, sfd, tfd, ep)
    };
    assert!(efd >= 0 && sfd >= 0 && tfd >= 0 && ep >= 0);
    let parent = std::process::id() as i32;
    // SAFETY: the child only sleeps and polls its parent, then exits.
    let child = unsafe { libc::fork() };
    if child > 0 {
        // The test reaps the child (it is orphaned to the test when the dump kills the tree).
        std::fs::write(format!("{out}.child"), child.to_string()).expect("child file");
    }
    if child == 0 {
        loop {
            // SAFETY: getppid/_exit take nothing.
            if unsafe { libc::getppid() } != parent {
                // SAFETY: ends the child without running the parent's exit handlers.
                unsafe { libc::_exit(0) };
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    Box::new(move || {
        const KCMP_FILE: i32 = 0;
        for (what, fd) in [
            ("eventfd", efd),
            ("signalfd", sfd),
            ("timerfd", tfd),
            ("epoll", ep),
        ] {
            // SAFETY: kcmp compares kernel objects; no memory is passed.
            let r = unsafe { libc::syscall(libc::SYS_kcmp, parent, child, KCMP_FILE, fd, fd) };
            if r != 0 {
                return Err(format!("{what} is not shared with the child (kcmp {r})"));
            }
        }
        let mut v = 0u64;
        // SAFETY: reads 8 bytes into a live u64.
        unsafe { libc::read(efd, (&raw mut v).cast(), 8) };
        if v != 5 {
            return Err(format!("eventfd holds {v}"));
        }
        Ok(())
    })
}

fn timerfd() -> Check {
    // SAFETY: timerfd calls with live locals.
    let t = unsafe {
        let t = libc::timerfd_create(libc::CLOCK_MONOTONIC, 0);
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 100_000_000,
            },
            it_value: libc::timespec {
                tv_sec: 0,
                tv_nsec: 10_000_000,
            },
        };
        assert_eq!(libc::timerfd_settime(t, 0, &spec, std::ptr::null_mut()), 0);
        t
    };
    std::thread::sleep(std::time::Duration::from_millis(50));
    Box::new(move || {
        // SAFETY: itimerspec is plain old data; all-zero is a valid value.
        let mut cur: libc::itimerspec = unsafe { std::mem::zeroed() };
        // SAFETY: timerfd_gettime writes a live itimerspec.
        unsafe { libc::timerfd_gettime(t, &mut cur) };
        if cur.it_interval.tv_nsec != 100_000_000 || cur.it_interval.tv_sec != 0 {
            return Err(format!(
                "interval {}.{:09}",
                cur.it_interval.tv_sec, cur.it_interval.tv_nsec
            ));
        }
        let mut ticks = 0u64;
        // SAFETY: reads 8 bytes into a live u64 (blocking: the timer fired).
        let n = unsafe { libc::read(t, (&raw mut ticks).cast(), 8) };
        if n != 8 || ticks == 0 {
            return Err("the timer had not fired".into());
        }
        let mut fds = libc::pollfd {
            fd: t,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: polls one live pollfd.
        if unsafe { libc::poll(&mut fds, 1, 2000) } != 1 {
            return Err("the timer stopped".into());
        }
        Ok(())
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(mode), Some(out), Some(ready)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("usage: criu-victim-defects-pipes MODE OUT READY");
        std::process::exit(2);
    };
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let check = match mode.as_str() {
        "flags" => flags(),
        "size" => size(),
        "sigio" => sigio(),
        "epoll" => epoll(),
        "shared" => shared(out),
        "timerfd" => timerfd(),
        other => {
            eprintln!("unknown mode {other}");
            std::process::exit(2);
        }
    };
    std::fs::write(ready, format!("ready {}", std::process::id())).expect("ready");
    while !GO.load(Ordering::SeqCst) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let verdict = match check() {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("bad: {e}"),
    };
    std::fs::write(out, verdict).expect("out");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}
