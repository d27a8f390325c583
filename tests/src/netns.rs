//! A network namespace of the test's own: [`in_netns`] runs code on a thread that unshared
//! one (loopback only, brought up), so that nothing a test does reaches the host's network.
// Unsafe code: unshare(2) and the SIOCSIFFLAGS ioctl that brings `lo` up.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Runs `f` on a thread of its own in a new network namespace whose `lo` is up; processes it
/// starts (victims, criu, nft) are in that namespace too, and the namespace goes away with
/// the last of them.
pub fn in_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        // SAFETY: unshare only changes this thread's namespaces.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
        // SAFETY: a plain socket(2); checked below.
        let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
        assert!(s >= 0);
        // SAFETY: s is a fresh fd we own.
        let s = unsafe { OwnedFd::from_raw_fd(s) };
        // SAFETY: all-zero is a valid ifreq.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, c) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *c as libc::c_char;
        }
        ifr.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as i16;
        // SAFETY: SIOCSIFFLAGS reads the ifreq we pass.
        let r = unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) };
        assert_eq!(r, 0, "lo up");
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}
