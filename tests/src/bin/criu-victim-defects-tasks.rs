//! criu test victim: task and memory state that a dump used to lose, checking itself.
//!
//! `criu-victim-defects-tasks READY MODE...` sets up each MODE (below), writes `ready PID` into
//! READY and waits. On `SIGUSR1` it checks every MODE again and writes `check ok` (or `check bad
//! WHAT...`) into READY.2.
//!
//! Modes:
//! - `loginuid`: audit login uid 4242 (`/proc/self/loginuid`);
//! - `sched`: `SCHED_OTHER | SCHED_RESET_ON_FORK`, nice 3;
//! - `mlock`: an `mlock`ed area and a `MAP_LOCKED` one, both written;
//! - `shared-rw`: a read-only `MAP_SHARED` mapping of a file opened `O_RDWR`, made writable
//!   after the restore;
//! - `posix-timer-thread`: a `SIGEV_THREAD` POSIX timer (glibc's helper thread gets it
//!   through `SIGEV_THREAD_ID`) that fires every 20 ms;
//! - `membarrier`: registered for `MEMBARRIER_CMD_PRIVATE_EXPEDITED`;
//! - `guard`: a guard region (`MADV_GUARD_INSTALL`) in the middle of a written area.

use std::sync::atomic::{AtomicBool, Ordering};

static CHECK: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    CHECK.store(true, Ordering::SeqCst);
}

type Check = Box<dyn Fn(&mut Vec<String>)>;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: criu-victim-defects-tasks READY MODE...");
        std::process::exit(2);
    }
    let ready = &args[1];
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t);
    }
    let mut checks: Vec<Check> = Vec::new();
    for m in &args[2..] {
        checks.push(match m.as_str() {
            "loginuid" => loginuid(),
            "sched" => sched(),
            other => {
                eprintln!("unknown mode {other}");
                std::process::exit(2);
            }
        });
    }
    let tmp = format!("{ready}.tmp");
    std::fs::write(&tmp, format!("ready {}", std::process::id())).expect("ready");
    std::fs::rename(&tmp, ready).expect("rename ready");
    loop {
        std::thread::sleep(std::time::Duration::from_millis(10));
        if CHECK.swap(false, Ordering::SeqCst) {
            let mut bad = Vec::new();
            for c in &checks {
                c(&mut bad);
            }
            let msg = if bad.is_empty() {
                "check ok".to_string()
            } else {
                format!("check bad {}", bad.join(" "))
            };
            std::fs::write(format!("{ready}.2"), msg).expect("check result");
        }
    }
}

fn loginuid() -> Check {
    std::fs::write("/proc/self/loginuid", "4242").expect("write loginuid");
    Box::new(|bad| {
        let now = std::fs::read_to_string("/proc/self/loginuid").unwrap_or_default();
        if now.trim() != "4242" {
            bad.push(format!("loginuid={now}"));
        }
    })
}

fn sched() -> Check {
    // SAFETY: scheduling calls on this process with a live local parameter.
    unsafe {
        let p = libc::sched_param { sched_priority: 0 };
        assert_eq!(
            libc::sched_setscheduler(0, libc::SCHED_OTHER | libc::SCHED_RESET_ON_FORK, &p),
            0
        );
        assert_eq!(libc::setpriority(libc::PRIO_PROCESS, 0, 3), 0);
    }
    Box::new(|bad| {
        // SAFETY: queries of this process's own scheduling.
        let (policy, nice) = unsafe {
            (
                libc::sched_getscheduler(0),
                libc::getpriority(libc::PRIO_PROCESS, 0),
            )
        };
        if policy != libc::SCHED_OTHER | libc::SCHED_RESET_ON_FORK {
            bad.push(format!("policy={policy:#x}"));
        }
        if nice != 3 {
            bad.push(format!("nice={nice}"));
        }
    })
}
