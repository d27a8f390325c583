//! criu test victim: netlink and packet sockets, checking itself after a restore.
//!
//! `criu-victim-sockets-nl OUT READY`: opens a `NETLINK_ROUTE` socket bound by the kernel
//! (port id = pid) in the `RTNLGRP_LINK` group, a second one with a port id of its choosing, a
//! `NETLINK_KOBJECT_UEVENT` socket in group 1, a `SOCK_RAW` packet socket bound to `lo` with
//! `PACKET_AUXDATA`, a promiscuous membership on `lo` and a fanout group, and a `SOCK_DGRAM`
//! packet socket with `TPACKET_V2`; writes `ready PID` into READY. On SIGUSR1 it checks port
//! ids, groups, the packet settings, that the route socket still answers a request, and writes
//! `check ok` or `bad: WHY` into OUT.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static GO: AtomicBool = AtomicBool::new(false);

/// `tpacket_versions::TPACKET_V2`.
const TPACKET_V2: i32 = 1;

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

fn nl_socket(proto: i32, pid: u32, groups: u32) -> RawFd {
    // SAFETY: socket/bind with a live, zero-initialised sockaddr_nl.
    unsafe {
        let s = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, proto);
        assert!(s >= 0, "netlink socket");
        let mut a: libc::sockaddr_nl = std::mem::zeroed();
        a.nl_family = libc::AF_NETLINK as u16;
        a.nl_pid = pid;
        a.nl_groups = groups;
        let r = libc::bind(s, (&a as *const libc::sockaddr_nl).cast(), 12);
        assert_eq!(r, 0, "netlink bind");
        s
    }
}

fn nl_name(s: RawFd) -> (u32, u32) {
    // SAFETY: getsockname writes at most `len` bytes into a live sockaddr_nl.
    unsafe {
        let mut a: libc::sockaddr_nl = std::mem::zeroed();
        let mut len = 12u32;
        libc::getsockname(s, (&mut a as *mut libc::sockaddr_nl).cast(), &mut len);
        (a.nl_pid, a.nl_groups)
    }
}

fn get_int(s: RawFd, level: i32, opt: i32) -> i32 {
    let mut v = 0i32;
    let mut len = 4u32;
    // SAFETY: getsockopt writes an int into a live local.
    unsafe { libc::getsockopt(s, level, opt, (&mut v as *mut i32).cast(), &mut len) };
    v
}

fn set_int(s: RawFd, level: i32, opt: i32, v: i32) {
    // SAFETY: setsockopt reads an int from a live local.
    let r = unsafe { libc::setsockopt(s, level, opt, (&v as *const i32).cast(), 4) };
    assert_eq!(r, 0, "setsockopt {level} {opt}");
}

fn lo_index() -> i32 {
    // SAFETY: a NUL-terminated name.
    unsafe { libc::if_nametoindex(c"lo".as_ptr()) as i32 }
}

/// Sends an `RTM_GETLINK` dump request and reads one answer.
fn route_answers(s: RawFd) -> bool {
    let mut req = [0u8; 32];
    req[0..4].copy_from_slice(&32u32.to_ne_bytes());
    req[4..6].copy_from_slice(&(libc::RTM_GETLINK).to_ne_bytes());
    req[6..8].copy_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    req[8..12].copy_from_slice(&7u32.to_ne_bytes());
    req[16] = libc::AF_UNSPEC as u8;
    // SAFETY: send and recv with live buffers of their lengths.
    unsafe {
        if libc::send(s, req.as_ptr().cast(), req.len(), 0) != 32 {
            return false;
        }
        let mut b = vec![0u8; 65536];
        let tv = libc::timeval {
            tv_sec: 2,
            tv_usec: 0,
        };
        libc::setsockopt(
            s,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            16,
        );
        let n = libc::recv(s, b.as_mut_ptr().cast(), b.len(), 0);
        n > 16 && u16::from_ne_bytes([b[4], b[5]]) == libc::RTM_NEWLINK
    }
}

struct Socks {
    route: RawFd,
    route2: RawFd,
    uevent: RawFd,
    raw: RawFd,
    dgram: RawFd,
    pid: u32,
}

fn check(s: &Socks) -> Result<(), String> {
    if nl_name(s.route) != (s.pid, 1 << (libc::RTNLGRP_LINK - 1)) {
        return Err(format!("route socket name {:?}", nl_name(s.route)));
    }
    if nl_name(s.route2).0 != 0x7000_0000 + s.pid {
        return Err(format!(
            "second route socket port {:#x}",
            nl_name(s.route2).0
        ));
    }
    if nl_name(s.uevent).1 != 1 {
        return Err(format!("uevent groups {:?}", nl_name(s.uevent)));
    }
    if !route_answers(s.route2) {
        return Err("the route socket does not answer".into());
    }
    // SAFETY: getsockname writes at most `len` bytes into a live sockaddr_ll.
    let ifindex = unsafe {
        let mut a: libc::sockaddr_ll = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        libc::getsockname(s.raw, (&mut a as *mut libc::sockaddr_ll).cast(), &mut len);
        a.sll_ifindex
    };
    if ifindex != lo_index() {
        return Err(format!("packet socket bound to {ifindex}"));
    }
    if get_int(s.raw, libc::SOL_PACKET, libc::PACKET_AUXDATA) != 1 {
        return Err("PACKET_AUXDATA".into());
    }
    if get_int(s.raw, libc::SOL_PACKET, libc::PACKET_FANOUT) != 0x4242 {
        return Err(format!(
            "fanout {:#x}",
            get_int(s.raw, libc::SOL_PACKET, libc::PACKET_FANOUT)
        ));
    }
    if get_int(s.dgram, libc::SOL_PACKET, libc::PACKET_VERSION) != TPACKET_V2 {
        return Err("PACKET_VERSION".into());
    }
    if get_int(s.dgram, libc::SOL_SOCKET, libc::SO_TYPE) != libc::SOCK_DGRAM {
        return Err("packet socket type".into());
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, out, ready] = &args[..] else {
        eprintln!("usage: criu-victim-sockets-nl OUT READY");
        std::process::exit(2);
    };
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let pid = std::process::id();
    let route = nl_socket(libc::NETLINK_ROUTE, 0, 1 << (libc::RTNLGRP_LINK - 1));
    let route2 = nl_socket(libc::NETLINK_ROUTE, 0x7000_0000 + pid, 0);
    let uevent = nl_socket(libc::NETLINK_KOBJECT_UEVENT, 0, 1);
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: socket/bind/setsockopt on our own sockets with live arguments.
    let (raw, dgram) = unsafe {
        let raw = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto));
        let dgram = libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, 0);
        assert!(raw >= 0 && dgram >= 0, "packet sockets");
        let mut a: libc::sockaddr_ll = std::mem::zeroed();
        a.sll_family = libc::AF_PACKET as u16;
        a.sll_protocol = proto;
        a.sll_ifindex = lo_index();
        let r = libc::bind(
            raw,
            (&a as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        assert_eq!(r, 0, "packet bind");
        let mr = libc::packet_mreq {
            mr_ifindex: lo_index(),
            mr_type: libc::PACKET_MR_PROMISC as u16,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        let r = libc::setsockopt(
            raw,
            libc::SOL_PACKET,
            libc::PACKET_ADD_MEMBERSHIP,
            (&mr as *const libc::packet_mreq).cast(),
            std::mem::size_of::<libc::packet_mreq>() as u32,
        );
        assert_eq!(r, 0, "membership");
        (raw, dgram)
    };
    set_int(raw, libc::SOL_PACKET, libc::PACKET_AUXDATA, 1);
    set_int(raw, libc::SOL_PACKET, libc::PACKET_FANOUT, 0x4242);
    set_int(dgram, libc::SOL_PACKET, libc::PACKET_VERSION, TPACKET_V2);
    let socks = Socks {
        route,
        route2,
        uevent,
        raw,
        dgram,
        pid,
    };
    let tmp = format!("{ready}.tmp");
    std::fs::write(&tmp, format!("ready {pid}")).unwrap();
    std::fs::rename(&tmp, ready).unwrap();
    loop {
        while !GO.swap(false, Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let verdict = match check(&socks) {
            Ok(()) => "check ok".to_string(),
            Err(e) => format!("bad: {e}"),
        };
        let tmp = format!("{out}.tmp");
        std::fs::write(&tmp, verdict).unwrap();
        std::fs::rename(&tmp, out).unwrap();
    }
}
