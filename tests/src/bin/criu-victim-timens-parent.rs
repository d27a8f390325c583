//! criu test victim: a process that made a time namespace for its children.
//!
//! `criu-victim-timens-parent OUT READY`: calls `unshare(CLONE_NEWTIME)` (it stays in its own
//! time namespace; the children it creates from then on enter the new one), sets the new
//! namespace's `CLOCK_MONOTONIC` one day ahead (`/proc/self/timens_offsets`, before any process
//! is in it), and forks a child that dies with it. Both count into OUT (`parent N` and
//! `child N` lines, every 5 ms); once both have counted, the parent writes
//! `ready PARENT CHILD CHILD_MONOTONIC_AHEAD` into READY, the last field 1 when the child's
//! monotonic clock runs a day ahead of the parent's.
//!
//! Exits 3 if the namespace cannot be made (no `CAP_SYS_ADMIN`, or a kernel without time
//! namespaces).

use std::io::Write;
use std::time::Duration;

fn monotonic_s() -> i64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `t`, which we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec
}

fn count(out: &str, who: &str, mut first: impl FnMut()) -> ! {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .expect("open output");
    let mut n: u64 = 0;
    loop {
        n += 1;
        writeln!(f, "{who} {n}").expect("write");
        if n == 1 {
            first();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(out), Some(ready)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: criu-victim-timens-parent OUT READY");
        std::process::exit(2);
    };
    // SAFETY: unshare changes only which time namespace our future children enter.
    if unsafe { libc::unshare(libc::CLONE_NEWTIME) } != 0 {
        eprintln!(
            "unshare(CLONE_NEWTIME): {}",
            std::io::Error::last_os_error()
        );
        std::process::exit(3);
    }
    // Offsets can only be set while no process is in the namespace; a failure leaves it at 0.
    let offset_set = std::fs::write("/proc/self/timens_offsets", "monotonic 86400 0").is_ok();
    let child_clock = format!("{out}.child-clock");
    let parent = std::process::id();
    // SAFETY: the child is single-threaded like us (no threads were started) and runs only
    // its own code below.
    let child = unsafe { libc::fork() };
    if child < 0 {
        eprintln!("fork: {}", std::io::Error::last_os_error());
        std::process::exit(1);
    }
    if child == 0 {
        // SAFETY: prctl on ourselves: die with the parent.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
        if std::os::unix::process::parent_id() != parent {
            std::process::exit(0);
        }
        let now = monotonic_s();
        count(out, "child", || {
            std::fs::write(&child_clock, now.to_string()).expect("child clock");
        });
    }
    let mine = monotonic_s();
    count(out, "parent", || {
        let theirs = loop {
            if let Some(s) = std::fs::read_to_string(&child_clock)
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
            {
                break s;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let ahead = offset_set && theirs - mine >= 86_400 - 60;
        std::fs::write(ready, format!("ready {parent} {child} {}", u8::from(ahead)))
            .expect("ready");
    });
}
