//! criu test victim: what a dump and restore must keep (issue 20, items 3, 10 and 28).
//!
//! `criu-victim-defects-left MODE OUT READY`: sets up the state MODE names, writes the pids
//! of the processes it made into `OUT.pids` (space separated; the test guards and reaps
//! them), then `ready PID` into READY, and on SIGUSR1 checks it from the inside, writing `ok`
//! into OUT or `bad: WHY`. Then it sleeps until killed. Modes:
//! - `session`: the victim becomes a child subreaper and forks A; A calls `setsid` and forks
//!   B (in A's group), C (leading a group of its own) and C's child D (which joins A's group),
//!   then A exits and the victim reaps it: B and C are the victim's, in a session (and B and
//!   D in a group) whose leader is gone (`OUT.pids`: `A B C D`).

use std::sync::atomic::{AtomicBool, Ordering};

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

type Check = Box<dyn FnOnce() -> Result<(), String>>;

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

/// A pipe (read end, write end).
fn pipe() -> (i32, i32) {
    let mut p = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into a live local array.
    assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    (p[0], p[1])
}

fn send(fd: i32, v: &[i32]) {
    let b: Vec<u8> = v.iter().flat_map(|x| x.to_ne_bytes()).collect();
    // SAFETY: writes from a live buffer.
    let n = unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) };
    assert_eq!(n, b.len() as isize);
}

fn recv(fd: i32, n: usize) -> Vec<i32> {
    let mut b = vec![0u8; n * 4];
    let mut got = 0;
    while got < b.len() {
        // SAFETY: reads into the live rest of the buffer.
        let r = unsafe { libc::read(fd, b[got..].as_mut_ptr().cast(), b.len() - got) };
        assert!(r > 0, "read");
        got += r as usize;
    }
    b.chunks(4)
        .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// The parent pid, group and session of `pid` from `/proc/PID/stat` (-1 each when gone).
fn ids(pid: i32) -> (i32, i32, i32) {
    let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest: Vec<i32> = st
        .rsplit_once(')')
        .map(|(_, r)| {
            r.split_whitespace()
                .skip(1)
                .take(3)
                .flat_map(|w| w.parse())
                .collect()
        })
        .unwrap_or_default();
    match rest[..] {
        [pp, pg, si] => (pp, pg, si),
        _ => (-1, -1, -1),
    }
}

fn session() -> (Check, Vec<i32>) {
    // SAFETY: prctl on our own flag.
    assert_eq!(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) }, 0);
    let (r, w) = pipe();
    let a = fork_child(|| {
        // SAFETY: setsid on this fresh child, which leads no group.
        assert!(unsafe { libc::setsid() } > 0, "setsid");
        let b = fork_child(|| sleep_forever());
        let (dr, dw) = pipe();
        let c = fork_child(|| {
            // SAFETY: setpgid of this process.
            assert_eq!(unsafe { libc::setpgid(0, 0) }, 0, "setpgid C");
            fork_child(|| {
                // SAFETY: D joins the session's first group (B keeps it alive): its own
                // group may change to one of its session.
                assert_eq!(unsafe { libc::setpgid(0, libc::getsid(0)) }, 0, "setpgid D");
                // SAFETY: getpid takes nothing.
                send(dw, &[unsafe { libc::getpid() }]);
                sleep_forever()
            });
            sleep_forever()
        });
        let d = recv(dr, 1)[0];
        send(w, &[b, c, d]);
    });
    let v = recv(r, 3);
    let (b, c, d) = (v[0], v[1], v[2]);
    // SAFETY: reaps our own child A.
    let reaped = unsafe { libc::waitpid(a, std::ptr::null_mut(), 0) };
    assert_eq!(reaped, a, "reap A");
    // SAFETY: getpid takes nothing.
    let me = unsafe { libc::getpid() };
    let check: Check = Box::new(move || {
        let want = [(b, (me, a, a)), (c, (me, c, a)), (d, (c, a, a))];
        for (pid, w) in want {
            let got = ids(pid);
            if got != w {
                return Err(format!("{pid}: ppid, pgid, sid {got:?}, not {w:?}"));
            }
        }
        if std::path::Path::new(&format!("/proc/{a}")).exists() {
            return Err(format!("the session leader {a} exists"));
        }
        // SAFETY: signal 0 to a group only checks that it exists.
        if unsafe { libc::kill(-a, 0) } != 0 {
            return Err(format!("group {a} cannot be signalled"));
        }
        Ok(())
    });
    (check, vec![a, b, c, d])
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(mode), Some(out), Some(ready)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("usage: criu-victim-defects-left MODE OUT READY");
        std::process::exit(2);
    };
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let (check, pids) = match mode.as_str() {
        "session" => session(),
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
