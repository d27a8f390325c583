//! criu restore victim: a tree of three levels, one session and two process groups, in which
//! every process checks itself.
//!
//! `criu-victim-three-level-tree READY RESULT`: the root calls `setsid()` and forks child A (stays
//! in the root's group) and child B (leads a group of its own); A forks grandchild A1, B forks
//! grandchildren B1 and B2 (in B's group). Every process counts rounds of a 1 ms sleep, in a
//! static and in a heap cell, and keeps 64 KiB of its own pattern on its heap. Each non-root
//! process appends `up PID PPID` to `READY.up` once set up; when all five are up the root
//! writes `ready ROOT A A1 B B1 B2` into READY. On `SIGUSR1` a process checks that it still
//! counts (both counters agree and are past the value they had when it came up), that its
//! pattern is intact and that `getppid()`, `getsid(0)` and `getpgrp()` are what they were, then
//! appends `check ok PID` or `check bad PID WHAT` to RESULT. No descriptor stays open beyond
//! the inherited 0..2; everything runs until killed.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

static CHECK: AtomicBool = AtomicBool::new(false);
static COUNT: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_usr1(_: libc::c_int) {
    CHECK.store(true, Ordering::SeqCst);
}

/// What a process expects of itself: the identity it had when it came up.
struct Me {
    role: u8,
    ppid: i32,
    sid: i32,
    pgid: i32,
}

fn pattern(role: u8, i: usize) -> u8 {
    (role as usize * 31 + i * 7 + i / 251) as u8
}

fn append(path: &str, line: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        // One write of the whole line: lines of different processes never interleave.
        let _ = f.write_all(format!("{line}\n").as_bytes());
    }
}

fn say_up(up: &str) {
    // SAFETY: getppid has no preconditions.
    append(up, &format!("up {} {}", pid(), unsafe { libc::getppid() }));
}

fn pid() -> i32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

/// Sets up, calls `on_up`, then counts forever; answers each SIGUSR1 with a check written to
/// `result`.
fn run(me: &Me, result: &str, on_up: impl FnOnce()) -> ! {
    let mut heap = vec![0u8; 64 << 10];
    for (i, b) in heap.iter_mut().enumerate() {
        *b = pattern(me.role, i);
    }
    let shadow = Box::new(AtomicU64::new(COUNT.load(Ordering::SeqCst)));
    let tick = || {
        std::thread::sleep(Duration::from_millis(1));
        COUNT.fetch_add(1, Ordering::SeqCst);
        shadow.fetch_add(1, Ordering::SeqCst);
    };
    for _ in 0..5 {
        tick();
    }
    let at_up = COUNT.load(Ordering::SeqCst);
    on_up();
    loop {
        tick();
        if !CHECK.swap(false, Ordering::SeqCst) {
            continue;
        }
        let verdict = check(me, &heap, &shadow, at_up, &tick);
        let line = match verdict {
            Ok(()) => format!("check ok {}", pid()),
            Err(what) => format!("check bad {} {what}", pid()),
        };
        append(result, &line);
    }
}

fn check(
    me: &Me,
    heap: &[u8],
    shadow: &AtomicU64,
    at_up: u64,
    tick: &dyn Fn(),
) -> Result<(), String> {
    // SAFETY: getppid, getsid and getpgrp have no preconditions.
    let (ppid, sid, pgid) = unsafe { (libc::getppid(), libc::getsid(0), libc::getpgrp()) };
    if ppid != me.ppid {
        return Err(format!("ppid {ppid}, want {}", me.ppid));
    }
    if sid != me.sid {
        return Err(format!("sid {sid}, want {}", me.sid));
    }
    if pgid != me.pgid {
        return Err(format!("pgid {pgid}, want {}", me.pgid));
    }
    if let Some(i) = (0..heap.len()).find(|&i| heap[i] != pattern(me.role, i)) {
        return Err(format!("heap byte {i} is {:#x}", heap[i]));
    }
    let c0 = COUNT.load(Ordering::SeqCst);
    if c0 <= at_up {
        return Err(format!("counter {c0} not past {at_up}"));
    }
    for _ in 0..20 {
        tick();
    }
    let (c1, s1) = (COUNT.load(Ordering::SeqCst), shadow.load(Ordering::SeqCst));
    if c1 != c0 + 20 {
        return Err(format!("counter went {c0} -> {c1} in 20 rounds"));
    }
    if s1 != c1 {
        return Err(format!("heap counter {s1} != static counter {c1}"));
    }
    Ok(())
}

/// Forks a child that runs `body` and never returns there.
fn fork(body: impl FnOnce()) -> i32 {
    // SAFETY: the process is single-threaded, so the child may run Rust code freely.
    let p = unsafe { libc::fork() };
    if p < 0 {
        eprintln!("fork: {}", std::io::Error::last_os_error());
        std::process::exit(4);
    }
    if p == 0 {
        body();
        std::process::exit(5);
    }
    p
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(ready), Some(result)) = (args.get(1).cloned(), args.get(2).cloned()) else {
        eprintln!("usage: criu-victim-three-level-tree READY RESULT");
        std::process::exit(2);
    };
    let up = format!("{ready}.up");
    // SAFETY: setsid has no memory-safety preconditions.
    if unsafe { libc::setsid() } < 0 {
        eprintln!("setsid: {}", std::io::Error::last_os_error());
        std::process::exit(3);
    }
    // SAFETY: installs a handler that only stores to an atomic; children inherit it.
    unsafe {
        libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t);
    }
    let root = pid();
    // SAFETY: getppid has no preconditions.
    let root_parent = unsafe { libc::getppid() };
    let a = fork(|| {
        let a = pid();
        fork(|| {
            let me = Me {
                role: 2,
                ppid: a,
                sid: root,
                pgid: root,
            };
            run(&me, &result, || say_up(&up));
        });
        let me = Me {
            role: 1,
            ppid: root,
            sid: root,
            pgid: root,
        };
        run(&me, &result, || say_up(&up));
    });
    let b = fork(|| {
        let b = pid();
        // SAFETY: setpgid on this very process.
        unsafe { libc::setpgid(0, 0) };
        for role in [4, 5] {
            fork(|| {
                let me = Me {
                    role,
                    ppid: b,
                    sid: root,
                    pgid: b,
                };
                run(&me, &result, || say_up(&up));
            });
        }
        let me = Me {
            role: 3,
            ppid: root,
            sid: root,
            pgid: b,
        };
        run(&me, &result, || say_up(&up));
    });
    // The parent moves B too, so that B's group exists whoever runs first.
    // SAFETY: setpgid on our own child.
    unsafe { libc::setpgid(b, b) };
    let me = Me {
        role: 0,
        ppid: root_parent,
        sid: root,
        pgid: root,
    };
    run(&me, &result, || wait_for_tree(&ready, &up, root, a, b));
}

/// Waits until the five other processes are up, then writes `ready ROOT A A1 B B1 B2`.
fn wait_for_tree(ready: &str, up: &str, root: i32, a: i32, b: i32) {
    // Wait for the five others to come up.
    let (mut a1, mut bs) = (0, Vec::new());
    for _ in 0..10_000 {
        let text = std::fs::read_to_string(up).unwrap_or_default();
        let ups: Vec<(i32, i32)> = text
            .lines()
            .filter_map(|l| {
                let mut w = l.split(' ').skip(1).map(|x| x.parse::<i32>().ok());
                Some((w.next()??, w.next()??))
            })
            .collect();
        if ups.len() == 5 {
            a1 = ups.iter().find(|u| u.1 == a).map_or(0, |u| u.0);
            bs = ups.iter().filter(|u| u.1 == b).map(|u| u.0).collect();
            bs.sort();
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    if a1 == 0 || bs.len() != 2 {
        eprintln!("criu-victim-three-level-tree: the tree did not come up");
        std::process::exit(6);
    }
    let tmp = format!("{ready}.tmp");
    std::fs::write(
        &tmp,
        format!("ready {root} {a} {a1} {b} {} {}", bs[0], bs[1]),
    )
    .expect("ready");
    std::fs::rename(&tmp, ready).expect("ready");
}
