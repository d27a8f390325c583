//! criu restore victim: a timerfd set with an absolute time.
//!
//! `criu-victim-abs-timerfd READY`: arms a `CLOCK_REALTIME` timerfd for now + 100 s with
//! `TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET` (the latter needs an absolute time), writes
//! `ready PID FD` into READY and sleeps.

fn main() {
    let Some(ready) = std::env::args().nth(1) else {
        eprintln!("usage: criu-victim-abs-timerfd READY");
        std::process::exit(2);
    };
    // SAFETY: plain libc calls on a descriptor this program owns, with live arguments.
    let fd = unsafe {
        let fd = libc::timerfd_create(libc::CLOCK_REALTIME, 0);
        assert!(fd >= 0, "timerfd_create");
        let mut now: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_REALTIME, &mut now);
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: now.tv_sec + 100,
                tv_nsec: now.tv_nsec,
            },
        };
        let flags = libc::TFD_TIMER_ABSTIME | libc::TFD_TIMER_CANCEL_ON_SET;
        assert_eq!(
            libc::timerfd_settime(fd, flags, &spec, std::ptr::null_mut()),
            0,
            "timerfd_settime"
        );
        fd
    };
    let tmp = format!("{ready}.tmp");
    std::fs::write(&tmp, format!("ready {} {fd}", std::process::id())).expect("ready");
    std::fs::rename(&tmp, &ready).expect("ready rename");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}
