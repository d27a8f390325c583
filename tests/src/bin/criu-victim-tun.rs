//! criu test victim: a process holding a tap device open.
//!
//! `criu-victim-tun OUT READY` opens `/dev/net/tun`, attaches a new tap `crtapf0` (`IFF_TAP |
//! IFF_NO_PI`, not persistent: it lives as long as the descriptor), gives it the address
//! 10.93.0.1/24 and brings it up, then counts into OUT every 5 ms (`1\n`, `2\n`, ...) and writes
//! `ready PID` into READY after the first line.

use std::io::Write;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

fn ip(args: &[&str]) {
    let st = std::process::Command::new("/usr/sbin/ip")
        .args(args)
        .status()
        .expect("run ip");
    assert!(st.success(), "ip {args:?}");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(out), Some(ready)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: criu-victim-tun OUT READY");
        std::process::exit(2);
    };
    // SAFETY: opens the tun device from a static NUL-terminated path.
    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR) };
    assert!(fd >= 0, "open /dev/net/tun");
    // SAFETY: all-zero is a valid ifreq.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, c) in ifr.ifr_name.iter_mut().zip(b"crtapf0") {
        *d = *c as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as i16;
    // SAFETY: TUNSETIFF reads the live ifreq.
    assert_eq!(unsafe { libc::ioctl(fd, TUNSETIFF, &ifr) }, 0, "TUNSETIFF");
    ip(&["addr", "add", "10.93.0.1/24", "dev", "crtapf0"]);
    ip(&["link", "set", "crtapf0", "up"]);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .expect("open output");
    let mut n: u64 = 0;
    loop {
        n += 1;
        writeln!(f, "{n}").expect("write");
        if n == 1 {
            std::fs::write(ready, format!("ready {}", std::process::id())).expect("ready");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
