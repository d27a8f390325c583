//! criu test victim: signal, timer, limit and credential state that checks itself.
//!
//! `criu-victim-state READY` sets up
//!
//! - a `SIGUSR1` handler (`SA_RESTART | SA_SIGINFO`, blocking `SIGUSR2` while it runs),
//!   `SIGUSR2` ignored, `SIGHUP` blocked;
//! - `ITIMER_REAL` of 1000 s with a 500 s interval, and a POSIX timer on `CLOCK_MONOTONIC`
//!   signalling `SIGRTMIN+1` with value `0x1234`, armed for 800 s with a 400 s interval;
//! - `RLIMIT_NOFILE` soft limit 1000, `RLIMIT_CORE` soft limit 0;
//! - umask 027, an alternate signal stack of 64 KiB, the name `statevic`, `no_new_privs`,
//!   parent-death signal `SIGWINCH` (ignored by default, so a restored task survives criu's exit), child-subreaper;
//!
//! writes `ready PID HANDLER ALTSTACK TIMERID` into READY and waits. On `SIGUSR1` it checks all of
//! it again (except the parent-death signal, which a detached restore drops because criu, the
//! parent, exits right away; the dump tests check it in the image) and writes `check ok` (or
//! `check bad WHAT...`) into READY.2.

use std::sync::atomic::{AtomicBool, Ordering};

static CHECK: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    CHECK.store(true, Ordering::SeqCst);
}

const ALT_SIZE: usize = 64 << 10;

fn main() {
    let Some(ready) = std::env::args().nth(1) else {
        eprintln!("usage: criu-victim-state READY");
        std::process::exit(2);
    };
    let alt: &'static mut [u8] = Box::leak(vec![0u8; ALT_SIZE].into_boxed_slice());
    let mut timer: libc::timer_t = std::ptr::null_mut();
    // SAFETY: plain libc calls on this process with valid, owned arguments.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_usr1 as *const () as usize;
        sa.sa_flags = libc::SA_RESTART | libc::SA_SIGINFO;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaddset(&mut sa.sa_mask, libc::SIGUSR2);
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
        libc::signal(libc::SIGUSR2, libc::SIG_IGN);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());

        let it = libc::itimerval {
            it_interval: libc::timeval {
                tv_sec: 500,
                tv_usec: 0,
            },
            it_value: libc::timeval {
                tv_sec: 1000,
                tv_usec: 0,
            },
        };
        libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut());
        let mut sev: libc::sigevent = std::mem::zeroed();
        sev.sigev_notify = libc::SIGEV_SIGNAL;
        sev.sigev_signo = libc::SIGRTMIN() + 1;
        sev.sigev_value = libc::sigval {
            sival_ptr: 0x1234 as *mut libc::c_void,
        };
        assert_eq!(
            libc::timer_create(libc::CLOCK_MONOTONIC, &mut sev, &mut timer),
            0
        );
        let its = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 400,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: 800,
                tv_nsec: 0,
            },
        };
        assert_eq!(libc::timer_settime(timer, 0, &its, std::ptr::null_mut()), 0);

        let mut rl: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl);
        rl.rlim_cur = 1000;
        libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        libc::getrlimit(libc::RLIMIT_CORE, &mut rl);
        rl.rlim_cur = 0;
        libc::setrlimit(libc::RLIMIT_CORE, &rl);

        libc::umask(0o027);
        let ss = libc::stack_t {
            ss_sp: alt.as_mut_ptr() as *mut libc::c_void,
            ss_flags: 0,
            ss_size: ALT_SIZE,
        };
        libc::sigaltstack(&ss, std::ptr::null_mut());
        libc::prctl(
            libc::PR_SET_NAME,
            c"statevic".as_ptr() as libc::c_ulong,
            0,
            0,
            0,
        );
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGWINCH, 0, 0, 0);
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    let tmp = format!("{ready}.tmp");
    std::fs::write(
        &tmp,
        format!(
            "ready {} {:#x} {:#x} {}",
            std::process::id(),
            on_usr1 as *const () as usize,
            alt.as_ptr() as usize,
            timer as usize
        ),
    )
    .expect("ready");
    std::fs::rename(&tmp, &ready).expect("rename ready");
    loop {
        // Poll the flag (a pause() loop could miss a signal that lands just before it).
        std::thread::sleep(std::time::Duration::from_millis(10));
        if CHECK.swap(false, Ordering::SeqCst) {
            let bad = check(timer, alt.as_ptr() as usize);
            let msg = if bad.is_empty() {
                "check ok".to_string()
            } else {
                format!("check bad {}", bad.join(" "))
            };
            std::fs::write(format!("{ready}.2"), msg).expect("check result");
        }
    }
}

fn check(timer: libc::timer_t, alt: usize) -> Vec<&'static str> {
    let mut bad = Vec::new();
    // SAFETY: queries of this process's own state into owned locals.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGUSR1, std::ptr::null(), &mut sa);
        if sa.sa_sigaction != on_usr1 as *const () as usize
            || sa.sa_flags & (libc::SA_RESTART | libc::SA_SIGINFO)
                != libc::SA_RESTART | libc::SA_SIGINFO
            || libc::sigismember(&sa.sa_mask, libc::SIGUSR2) != 1
        {
            bad.push("sigusr1");
        }
        libc::sigaction(libc::SIGUSR2, std::ptr::null(), &mut sa);
        if sa.sa_sigaction != libc::SIG_IGN {
            bad.push("sigusr2");
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigprocmask(libc::SIG_BLOCK, std::ptr::null(), &mut set);
        if libc::sigismember(&set, libc::SIGHUP) != 1 {
            bad.push("blocked");
        }
        let mut it: libc::itimerval = std::mem::zeroed();
        libc::getitimer(libc::ITIMER_REAL, &mut it);
        if it.it_interval.tv_sec != 500 || it.it_value.tv_sec < 900 || it.it_value.tv_sec > 1000 {
            bad.push("itimer");
        }
        let mut its: libc::itimerspec = std::mem::zeroed();
        if libc::timer_gettime(timer, &mut its) != 0
            || its.it_interval.tv_sec != 400
            || its.it_value.tv_sec < 700
        {
            bad.push("posix_timer");
        }
        let mut rl: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl);
        if rl.rlim_cur != 1000 {
            bad.push("nofile");
        }
        libc::getrlimit(libc::RLIMIT_CORE, &mut rl);
        if rl.rlim_cur != 0 {
            bad.push("core");
        }
        let old = libc::umask(0o027);
        if old != 0o027 {
            bad.push("umask");
        }
        let mut ss: libc::stack_t = std::mem::zeroed();
        libc::sigaltstack(std::ptr::null(), &mut ss);
        if ss.ss_sp as usize != alt || ss.ss_size != ALT_SIZE {
            bad.push("sigaltstack");
        }
        let mut name = [0u8; 16];
        libc::prctl(
            libc::PR_GET_NAME,
            name.as_mut_ptr() as libc::c_ulong,
            0,
            0,
            0,
        );
        if !name.starts_with(b"statevic\0") {
            bad.push("comm");
        }
        if libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1 {
            bad.push("no_new_privs");
        }
        let mut sub: libc::c_int = 0;
        libc::prctl(
            libc::PR_GET_CHILD_SUBREAPER,
            &mut sub as *mut libc::c_int as libc::c_ulong,
            0,
            0,
            0,
        );
        if sub != 1 {
            bad.push("subreaper");
        }
    }
    bad
}
