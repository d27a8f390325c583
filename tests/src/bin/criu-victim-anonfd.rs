//! criu test victim: anonymous-inode files.
//!
//! `criu-victim-anonfd READY` opens an eventfd with counter 5, an epoll instance watching it for
//! `EPOLLIN` with data `0xabc`, a `CLOCK_MONOTONIC` timerfd armed for 100 s with a 3 s
//! interval, and a signalfd for `SIGUSR2` (blocked); writes `ready PID EFD EPFD TFD SFD` into
//! READY and sleeps.

fn main() {
    let Some(ready) = std::env::args().nth(1) else {
        eprintln!("usage: criu-victim-anonfd READY");
        std::process::exit(2);
    };
    // SAFETY: plain libc calls creating descriptors this program owns, with live arguments.
    let (efd, epfd, tfd, sfd) = unsafe {
        let efd = libc::eventfd(5, libc::EFD_NONBLOCK);
        let epfd = libc::epoll_create1(libc::EPOLL_CLOEXEC);
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 0xabc,
        };
        libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, efd, &mut ev);
        let tfd = libc::timerfd_create(libc::CLOCK_MONOTONIC, 0);
        let its = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 3,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: 100,
                tv_nsec: 0,
            },
        };
        libc::timerfd_settime(tfd, 0, &its, std::ptr::null_mut());
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let sfd = libc::signalfd(-1, &set, 0);
        (efd, epfd, tfd, sfd)
    };
    assert!(efd >= 0 && epfd >= 0 && tfd >= 0 && sfd >= 0);
    let tmp = format!("{ready}.tmp");
    std::fs::write(
        &tmp,
        format!("ready {} {efd} {epfd} {tfd} {sfd}", std::process::id()),
    )
    .unwrap();
    std::fs::rename(&tmp, &ready).unwrap();
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}
