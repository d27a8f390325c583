//! criu restore victim: a child subreaper with an orphan it adopted.
//!
//! `criu-victim-subreaper-orphan READY RESULT`: the root becomes a child subreaper and forks A; A
//! forks B and exits; the root reaps A, so B is the root's child now (an orphan it adopted). The
//! root writes `ready ROOT B` into READY and then reaps children in a loop (`waitpid(-1)`), writing
//! `reaped PID STATUS` into RESULT for each.
//!
//! On `SIGUSR1`, B forks C and exits 4. C waits until B is gone and writes `orphan C PPID` into
//! RESULT: with the subreaper kept, its new parent is the root, not init. C then sleeps.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

fn append(path: &str, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("result file");
    f.write_all(format!("{line}\n").as_bytes())
        .expect("write result");
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(std::time::Duration::from_millis(ms));
}

fn b_main(result: &str) -> ! {
    // SAFETY: installs a plain handler that only stores to an atomic.
    unsafe {
        libc::signal(
            libc::SIGUSR1,
            on_usr1 as extern "C" fn(libc::c_int) as usize,
        );
    }
    while !GO.load(Ordering::SeqCst) {
        sleep_ms(2);
    }
    // SAFETY: getpid has no preconditions.
    let b = unsafe { libc::getpid() };
    // SAFETY: B is single-threaded; C only makes plain calls.
    let c = unsafe { libc::fork() };
    if c == 0 {
        loop {
            // SAFETY: getppid has no preconditions.
            let p = unsafe { libc::getppid() };
            if p != b {
                // SAFETY: getpid has no preconditions.
                append(result, &format!("orphan {} {p}", unsafe { libc::getpid() }));
                loop {
                    sleep_ms(1000);
                }
            }
            sleep_ms(1);
        }
    }
    // SAFETY: ends B without running exit handlers.
    unsafe { libc::_exit(4) }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(ready), Some(result)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: criu-victim-subreaper-orphan READY RESULT");
        std::process::exit(2);
    };
    // SAFETY: prctl on ourselves.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) } != 0 {
        eprintln!("PR_SET_CHILD_SUBREAPER failed");
        std::process::exit(1);
    }
    let (bpipe_r, bpipe_w) = {
        let mut p = [0i32; 2];
        // SAFETY: pipe writes two descriptors into a live array.
        assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0);
        (p[0], p[1])
    };
    // SAFETY: single-threaded; the children only make plain calls.
    let a = unsafe { libc::fork() };
    if a == 0 {
        // SAFETY: A is single-threaded; B only makes plain calls.
        let b = unsafe { libc::fork() };
        if b == 0 {
            // SAFETY: closing pipe ends B does not use.
            unsafe {
                libc::close(bpipe_r);
                libc::close(bpipe_w);
            }
            b_main(result);
        }
        // SAFETY: tells the root B's pid through the pipe, then ends A.
        unsafe {
            libc::write(bpipe_w, (&raw const b).cast(), 4);
            libc::_exit(0);
        }
    }
    let mut b: libc::pid_t = 0;
    // SAFETY: reads B's pid from our pipe into a live local, then closes both ends.
    unsafe {
        assert_eq!(libc::read(bpipe_r, (&raw mut b).cast(), 4), 4);
        libc::close(bpipe_r);
        libc::close(bpipe_w);
    }
    let mut st = 0;
    // SAFETY: reaps A with a live status word.
    assert_eq!(unsafe { libc::waitpid(a, &mut st, 0) }, a);
    // Wait until B is ours.
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{b}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1))
            .and_then(|s| s.parse::<i32>().ok());
        if ppid == Some(std::process::id() as i32) {
            break;
        }
        sleep_ms(1);
    }
    let tmp = format!("{ready}.tmp");
    std::fs::write(&tmp, format!("ready {} {b}", std::process::id())).expect("ready");
    std::fs::rename(&tmp, ready).expect("ready rename");
    loop {
        let mut st = 0;
        // SAFETY: waits for any child with a live status word.
        let r = unsafe { libc::waitpid(-1, &mut st, 0) };
        if r > 0 {
            append(result, &format!("reaped {r} {st}"));
        } else {
            sleep_ms(10);
        }
    }
}
