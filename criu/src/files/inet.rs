//! Inet sockets (`AF_INET`, `AF_INET6`), both sides, as CRIU's `inet_sk_entry`.
//!
//! Dump, through criu's `pidfd_getfd` copy of the task's socket: TCP sockets never connected
//! (bound or not), listeners (connections in their accept queue whose clients are in the tree
//! are taken when the dump ends the tree and come back queued, module `queue`; others are
//! refused by name unless `--skip-in-flight` drops them), established connections with
//! `--tcp-established` only (refused by name without it, as criu(8) does) and closing ones
//! (FIN_WAIT1/2, CLOSE_WAIT, LAST_ACK, CLOSING) the same way, saved with [`soccr`] into
//! `tcp-stream-INO.img` ([`super::tcp`]); with `--tcp-close` they are dumped without their
//! state (no stream image, the inventory's `tcp_close` set) and restored closed;
//! connections in SYN_SENT the same way (their peer read from `/proc/PID/net/tcp`);
//! UDP and UDP-Lite sockets, bound or connected (datagrams waiting in their receive queue are
//! dropped, as CRIU does; an empty corked one keeps its cork in `tcp_opts.cork`, one with a
//! datagram being built is refused by name); ICMP "ping" sockets the same way (their peer, which
//! getpeername does not give, read from `/proc/PID/net/icmp`); raw IP sockets of any protocol
//! (peer from `/proc/PID/net/raw`, CRIU's `ip_opts.raw`); CRIU's `ip_opts` (`IP_TOS`, `IP_TTL`,
//! freebind, pktinfo) and our `transparent`; the shut-down state of UDP sockets (module
//! `diag`) and multicast memberships (module `mcast`). Other types and TCP states are refused by name. In criu's own network
//! namespace each saved connection is locked first (`namespaces::net::conns`). A saved connection stays in repair mode until the tree is killed (its close
//! then sends nothing); when the tree runs on (`-R`) or the dump fails, repair is turned off.
//!
//! Restore: every inet socket of the images is made by the engine at once, listeners first
//! (a connection accepted from a listener shares its port), connections rebuilt with soccr and
//! taken out of repair mode only once all are made, so that no restored end talks to a peer not
//! yet there (the FINs of closing connections and bytes never sent go in at that moment too).
// Unsafe code: raw socket calls (bind, connect, listen, getsockname) with sockaddrs.
#![allow(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use criu_images::names;
use criu_images::pb::{InetSkEntry, IpOptsEntry, TcpOptsEntry};

use super::inet_addr::{addr, words};
use super::socket::{self, DumpSock, SockAt, SocketError, sys};
use super::tcp;

use self::opts::{
    read_ip_opts, read_raw_opts, read_tcp_opts, set_congestion, write_ip_opts, write_raw_opts,
};

mod diag;
mod mcast;
mod opts;
mod queue;

/// TCP states (include/net/tcp_states.h).
pub const TCP_ESTABLISHED: u32 = 1;
/// Closed (never connected, or reset).
pub const TCP_CLOSE: u32 = 7;
/// Listening.
pub const TCP_LISTEN: u32 = 10;

/// The inet sockets met by one dump.
#[derive(Debug, Default)]
pub struct InetDump {
    /// `--tcp-established`.
    pub tcp_established: bool,
    /// `--tcp-close`: connections are dumped without their state (restored closed).
    pub tcp_close: bool,
    /// `--skip-in-flight`: connections in a listener's accept queue are dropped.
    pub skip_in_flight: bool,
    /// Tree in criu's network namespace: each saved connection is locked here first.
    pub conn_lock: Option<crate::namespaces::net::conns::Shared>,
    /// The saved connections: socket inode, stream.
    pub streams: Vec<(u32, tcp::Stream)>,
    /// criu's copies of the saved connections, in repair mode.
    paused: Vec<OwnedFd>,
    /// The tree is killed: keep them in repair mode (their close then sends nothing).
    keep_repair: bool,
    /// Listeners with connections not accepted yet, decided once every socket was met.
    pending: Vec<queue::Pending>,
    /// Every TCP connection of the tree met so far: own address, peer.
    conns: Vec<(SocketAddr, SocketAddr)>,
    /// The queued connections criu accepted, by inode: the listener's file id.
    queued: HashMap<u32, u32>,
    /// [`InetDump::take_queued`] ran.
    queued_taken: bool,
    /// The multicast groups joined in the namespace of a process, by (pid, IPv6), read from
    /// `/proc/PID/net/igmp{,6}` once per process and family, not once per socket.
    mcast_candidates: HashMap<(i32, bool), Vec<(u32, IpAddr)>>,
    /// The shut-down states sock_diag gave.
    shutdowns: diag::ShutdownCache,
}

impl InetDump {
    fn unpause(&mut self) {
        for fd in self.paused.drain(..) {
            if let Ok(r) = soccr::Repair::pause(fd.as_fd())
                && let Err(e) = r.resume()
            {
                tracing::warn!("turning tcp repair off after the dump: {e}");
            }
        }
    }
}

impl Drop for InetDump {
    fn drop(&mut self) {
        if !self.keep_repair {
            self.unpause();
        }
    }
}

fn int(fd: RawFd, level: i32, opt: i32, w: &str, name: &str) -> Result<u32, SocketError> {
    socket::get_int(fd, level, opt)
        .map(|v| v as u32)
        .map_err(|source| SocketError::Sys {
            what: format!("{name} of {w}"),
            source,
        })
}

/// The first 32 bytes of `struct tcp_info` (state at 0, unacked at 24, sacked at 28).
fn tcp_info(fd: RawFd, w: &str) -> Result<[u8; 32], SocketError> {
    let mut b = [0u8; 32];
    let mut len = b.len() as libc::socklen_t;
    // SAFETY: getsockopt writes at most len bytes into b.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_TCP,
            libc::TCP_INFO,
            b.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r < 0 || len < 32 {
        return Err(sys(format!("TCP_INFO of {w}")));
    }
    Ok(b)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The socket's own or peer address (`None`: not connected).
fn name(fd: RawFd, peer: bool) -> Option<SocketAddr> {
    // SAFETY: all-zero is a valid sockaddr union.
    let mut s: soccr::SockAddr = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<soccr::SockAddr>() as libc::socklen_t;
    let p = (&mut s as *mut soccr::SockAddr).cast::<libc::sockaddr>();
    // SAFETY: p is writable for len bytes.
    let r = unsafe {
        if peer {
            libc::getpeername(fd, p, &mut len)
        } else {
            libc::getsockname(fd, p, &mut len)
        }
    };
    if r < 0 { None } else { s.to_std() }
}

fn proto_name(p: u32) -> String {
    match p as i32 {
        libc::IPPROTO_TCP => "TCP".into(),
        libc::IPPROTO_UDP => "UDP".into(),
        libc::IPPROTO_UDPLITE => "UDP-Lite".into(),
        libc::IPPROTO_ICMP => "ICMP".into(),
        libc::IPPROTO_ICMPV6 => "ICMPv6".into(),
        libc::IPPROTO_RAW => "raw IP".into(),
        o => format!("protocol {o}"),
    }
}

/// The peer of socket `ino` of `pid` in TCP state `st`, from `/proc/PID/net/KIND` (or `KIND6`:
/// `icmp` for ping sockets, `raw`, `tcp` for a connection in SYN_SENT), where getpeername
/// does not tell it.
fn proc_peer(pid: i32, kind: &str, family: i32, ino: u32, st: u32) -> Option<SocketAddr> {
    queue::rows(pid, kind, family == libc::AF_INET6)
        .into_iter()
        .find(|r| r.ino == ino)
        .filter(|r| r.state == st)
        .map(|r| r.remote)
}

/// Bytes waiting in the send queue (`SIOCOUTQ`).
fn outq(fd: RawFd, w: &str) -> Result<u32, SocketError> {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one int into n.
    if unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) } < 0 {
        return Err(sys(format!("SIOCOUTQ of {w}")));
    }
    Ok(n.max(0) as u32)
}

impl InetDump {
    /// Called once the dump is over: `killed` when the tree was killed (saved connections then
    /// stay in repair mode until they are closed).
    pub fn dump_done(&mut self, killed: bool) {
        self.keep_repair = killed;
        if !killed {
            // Before the tree runs again.
            self.unpause();
        }
    }

    /// Once every socket of the tree was met: criu's accepted copies of the connections
    /// queued on the tree's listeners whose clients are in the tree (`tree_dies`: the dump
    /// ends the tree), to be dumped as files held by no task; refused by name otherwise
    /// (module `queue`).
    ///
    /// # Errors
    /// [`SocketError::InetUnaccepted`], [`SocketError::InetUnacceptedLive`],
    /// [`SocketError::Sys`].
    pub fn take_queued(&mut self, tree_dies: bool) -> Result<Vec<OwnedFd>, SocketError> {
        if std::mem::replace(&mut self.queued_taken, true) || self.pending.is_empty() {
            return Ok(Vec::new());
        }
        let pol = queue::Policy {
            tree_dies,
            skip_in_flight: self.skip_in_flight,
            tcp_close: self.tcp_close,
        };
        let taken = queue::take(std::mem::take(&mut self.pending), &self.conns, pol)?;
        let mut out = Vec::with_capacity(taken.len());
        for (fd, ino, listener) in taken {
            self.queued.insert(ino, listener);
            out.push(fd);
        }
        Ok(out)
    }

    /// Dumps the inet socket `s` (criu's copy `s.sk` of the task's descriptor `s.at`, family
    /// `family`) as file `s.id`.
    ///
    /// # Errors
    /// [`SocketError::InetUnaccepted`], [`SocketError::InetNoAddresses`],
    /// [`SocketError::TcpEstablished`], [`SocketError::InetStateNotDumped`],
    /// [`SocketError::InetProtocol`] naming the socket, its family, protocol and state for what
    /// is not handled; [`SocketError::TcpRepair`], [`SocketError::Sys`].
    pub fn add(&mut self, s: &DumpSock<'_>, family: i32) -> Result<InetSkEntry, SocketError> {
        let DumpSock { at, sk, flags, id } = *s;
        let SockAt { pid, fd, ino } = at;
        let raw = sk.as_raw_fd();
        let fam = socket::family_name(family);
        let w = format!("fd {fd} of {pid} (socket:[{ino}], {fam})");
        let ty = int(raw, libc::SOL_SOCKET, libc::SO_TYPE, &w, "SO_TYPE")?;
        let proto = int(raw, libc::SOL_SOCKET, libc::SO_PROTOCOL, &w, "SO_PROTOCOL")?;
        let pn = proto_name(proto);
        let repair = |error| SocketError::TcpRepair {
            who: format!("{w}: {pn} tcp repair"),
            error,
        };
        let src = name(raw, false);
        let mut dst = name(raw, true);
        let mut state = TCP_CLOSE;
        let mut backlog = 0;
        let mut shutdown = None;
        let tcp_opts;
        match (ty as i32, proto as i32) {
            (libc::SOCK_STREAM, libc::IPPROTO_TCP) => {
                let ti = tcp_info(raw, &w)?;
                state = u32::from(ti[0]);
                match state {
                    TCP_LISTEN => {
                        // Connections not accepted yet: taken, dropped or refused once every
                        // socket of the tree was met ([`InetDump::take_queued`]).
                        if u32_at(&ti, 24) != 0
                            && let Some(local) = src
                        {
                            self.pending.push(queue::Pending {
                                who: w.clone(),
                                pid,
                                id,
                                local,
                                copy: sk.try_clone().map_err(|source| SocketError::Sys {
                                    what: format!("dup of {w}"),
                                    source,
                                })?,
                            });
                        }
                        backlog = u32_at(&ti, 28);
                    }
                    TCP_CLOSE => {}
                    st if soccr::supported(st) => {
                        if st == soccr::state::SYN_SENT && dst.is_none() {
                            // getpeername fails before the handshake.
                            dst = proc_peer(pid, "tcp", family, ino, 2);
                        }
                        let (Some(s), Some(d)) = (src, dst) else {
                            return Err(SocketError::InetNoAddresses { who: w, proto: pn });
                        };
                        self.conns.push((s, d));
                        if self.tcp_close {
                            // Restored closed: nothing of the connection is saved, and it is
                            // never put in repair mode (killing the tree closes it normally).
                            tracing::info!("{w}: {s} -> {d} dumped to be restored closed");
                        } else if !self.tcp_established {
                            return Err(SocketError::TcpEstablished {
                                who: w,
                                proto: pn,
                                src: s,
                                dst: d,
                            });
                        } else {
                            let copy = sk.try_clone().map_err(|source| SocketError::Sys {
                                what: format!("dup of {w}"),
                                source,
                            })?;
                            // Before repair mode: from here nothing the peer sends is answered
                            // with a reset once the socket is gone.
                            if let Some(l) = &self.conn_lock {
                                let mut l = l.lock().unwrap_or_else(|p| p.into_inner());
                                l.lock(s, d).map_err(|error| SocketError::ConnLock {
                                    who: w.clone(),
                                    error,
                                })?;
                            }
                            let r = soccr::Repair::pause(copy.as_fd()).map_err(repair)?;
                            // Kept paused from here on (the Drop of the dump turns it back).
                            self.paused.push(copy.try_clone().map_err(|source| {
                                SocketError::Sys {
                                    what: format!("dup of {w}"),
                                    source,
                                }
                            })?);
                            let saved = r.save_as(Some(d)).map_err(repair)?;
                            r.release();
                            let mut st = tcp::Stream::from_saved(&saved);
                            st.entry.nodelay = Some(
                                int(raw, libc::SOL_TCP, libc::TCP_NODELAY, &w, "TCP_NODELAY")? != 0,
                            );
                            st.entry.cork =
                                Some(int(raw, libc::SOL_TCP, libc::TCP_CORK, &w, "TCP_CORK")? != 0);
                            self.streams.push((ino, st));
                        }
                    }
                    s => {
                        return Err(SocketError::InetStateNotDumped {
                            who: w,
                            proto: pn,
                            state: soccr::state::name(s),
                        });
                    }
                }
                tcp_opts = Some(read_tcp_opts(raw, &w)?);
            }
            // UDP, UDP-Lite, and ICMP "ping" sockets (their bound port is the echo id).
            (
                libc::SOCK_DGRAM,
                libc::IPPROTO_UDP
                | libc::IPPROTO_UDPLITE
                | libc::IPPROTO_ICMP
                | libc::IPPROTO_ICMPV6,
            ) => {
                let udp = matches!(proto as i32, libc::IPPROTO_UDP | libc::IPPROTO_UDPLITE);
                if !udp {
                    // getpeername fails on a connected ping socket (its peer has no port).
                    dst =
                        proc_peer(pid, "icmp", family, ino, 1).map(|a| SocketAddr::new(a.ip(), 0));
                }
                if dst.is_some() {
                    state = TCP_ESTABLISHED;
                }
                if udp {
                    // CRIU's sk_shutdown values are the kernel's (1 read, 2 write, 3 both).
                    shutdown = self
                        .shutdowns
                        .get(sk.as_fd(), pid, ino, family, proto as i32)
                        .filter(|&s| s != 0)
                        .map(i32::from);
                }
                let mut t = TcpOptsEntry::default();
                if udp && int(raw, libc::SOL_UDP, libc::UDP_CORK, &w, "UDP_CORK")? != 0 {
                    // A corked datagram being built cannot be read back: refused by name. An
                    // empty corked socket keeps its cork in `tcp_opts.cork`, which CRIU's
                    // reader ignores for UDP (CRIU refuses every corked socket).
                    let pending = outq(raw, &w)?;
                    if pending != 0 {
                        return Err(SocketError::UdpCorked {
                            who: w,
                            proto: pn,
                            pending,
                        });
                    }
                    t.cork = Some(true);
                }
                // Datagrams waiting to be read are not kept (as in CRIU): said at -v3.
                let mut first: libc::c_int = 0;
                // SAFETY: SIOCINQ (FIONREAD) writes one int into `first`.
                if unsafe { libc::ioctl(raw, libc::FIONREAD, &mut first) } == 0 && first > 0 {
                    tracing::info!(socket = %w, first_datagram = first, "queued datagrams dropped");
                }
                tcp_opts = Some(t);
            }
            // Raw IP sockets, any protocol (their bound "port" is the protocol); the peer of a
            // connected one is read from /proc, as getpeername needs a port.
            (libc::SOCK_RAW, _) => {
                dst = proc_peer(pid, "raw", family, ino, 1);
                if dst.is_some() {
                    state = TCP_ESTABLISHED;
                }
                tcp_opts = None;
            }
            _ => return Err(SocketError::InetProtocol { who: w, proto: pn }),
        }
        let unspec = |f: i32| {
            if f == libc::AF_INET6 {
                IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            } else {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            }
        };
        let queued_on = self.queued.get(&ino).copied();
        let mcast = if ty as i32 == libc::SOCK_STREAM {
            Vec::new()
        } else {
            let v6 = family == libc::AF_INET6;
            let groups = self
                .mcast_candidates
                .entry((pid, v6))
                .or_insert_with(|| mcast::candidates(pid, v6));
            mcast::read(raw, groups, family, &w)
        };
        let v6only = if family == libc::AF_INET6 {
            Some(
                int(
                    raw,
                    libc::IPPROTO_IPV6,
                    libc::IPV6_V6ONLY,
                    &w,
                    "IPV6_V6ONLY",
                )? != 0,
            )
        } else {
            None
        };
        Ok(InetSkEntry {
            id,
            ino,
            family: family as u32,
            r#type: ty,
            proto,
            state,
            src_port: src.map_or(0, |a| u32::from(a.port())),
            dst_port: dst.map_or(0, |a| u32::from(a.port())),
            // A queued connection has no descriptor yet: accept(2) gives its flags.
            flags: if queued_on.is_some() {
                0
            } else {
                flags & !(libc::O_CLOEXEC as u32)
            },
            backlog,
            src_addr: words(src.map_or(unspec(family), |a| a.ip())),
            dst_addr: words(dst.map_or(unspec(family), |a| a.ip())),
            fown: socket::read_fown(raw),
            opts: socket::read_opts(raw, &w)?,
            v6only,
            ip_opts: Some(IpOptsEntry {
                raw: if ty as i32 == libc::SOCK_RAW {
                    Some(read_raw_opts(raw, family, proto as i32, &w)?)
                } else {
                    None
                },
                ..read_ip_opts(raw, family, ty as i32, &w)?
            }),
            ifname: None,
            ns_id: None,
            shutdown,
            tcp_opts,
            queued_on,
            mcast,
        })
    }

    /// Writes `tcp-stream-INO.img` of every saved connection into `dir`.
    ///
    /// # Errors
    /// [`SocketError::Sys`] naming the image.
    pub fn write(&self, dir: &std::path::Path) -> Result<(), SocketError> {
        for (ino, st) in &self.streams {
            tcp::write(dir, *ino, st)?;
        }
        Ok(())
    }
}

/// Checks inet entries before anything is made.
///
/// # Errors
/// [`SocketError::BadImage`], or [`SocketError::InetStateNotRestored`] naming what is not
/// restored.
pub fn check(entries: &[InetSkEntry]) -> Result<(), SocketError> {
    for e in entries {
        let bad = |what: &str| SocketError::BadImage {
            file: names::FILES.into(),
            reason: format!("inet socket id {}: {what}", e.id),
        };
        if e.family != libc::AF_INET as u32 && e.family != libc::AF_INET6 as u32 {
            return Err(bad("family"));
        }
        if e.shutdown.is_some_and(|s| !(0..=3).contains(&s)) {
            return Err(bad("shutdown"));
        }
        if addr(e.family, &e.src_addr, e.src_port).is_none()
            || addr(e.family, &e.dst_addr, e.dst_port).is_none()
        {
            return Err(bad("address"));
        }
        let ok = match (e.r#type as i32, e.proto as i32) {
            (libc::SOCK_STREAM, libc::IPPROTO_TCP) => {
                matches!(e.state, TCP_CLOSE | TCP_LISTEN) || soccr::supported(e.state)
            }
            (
                libc::SOCK_DGRAM,
                libc::IPPROTO_UDP
                | libc::IPPROTO_UDPLITE
                | libc::IPPROTO_ICMP
                | libc::IPPROTO_ICMPV6,
            )
            | (libc::SOCK_RAW, _) => matches!(e.state, TCP_CLOSE | TCP_ESTABLISHED),
            _ => false,
        };
        if !ok {
            return Err(SocketError::InetStateNotRestored {
                id: e.id,
                proto: proto_name(e.proto),
                state: soccr::state::name(e.state),
            });
        }
    }
    Ok(())
}

fn bind_or_connect(fd: RawFd, a: SocketAddr, connect: bool) -> Result<(), ()> {
    let s = soccr::SockAddr::from(a);
    let len = if a.is_ipv6() {
        std::mem::size_of::<libc::sockaddr_in6>()
    } else {
        std::mem::size_of::<libc::sockaddr_in>()
    } as libc::socklen_t;
    let p = (&s as *const soccr::SockAddr).cast::<libc::sockaddr>();
    // SAFETY: p points at a live sockaddr of len bytes.
    let r = unsafe {
        if connect {
            libc::connect(fd, p, len)
        } else {
            libc::bind(fd, p, len)
        }
    };
    if r < 0 { Err(()) } else { Ok(()) }
}

/// Makes every inet socket of `entries` held by a task (`wanted` file ids), numbered `min` or
/// above; `streams` are the saved connections by socket inode. Connections leave repair mode
/// once all are made.
///
/// # Errors
/// [`SocketError`] naming the socket.
pub fn create_all(
    entries: &[InetSkEntry],
    wanted: &HashSet<u32>,
    streams: &HashMap<u32, tcp::Stream>,
    min: i32,
) -> Result<HashMap<u32, OwnedFd>, SocketError> {
    let mut out: HashMap<u32, OwnedFd> = HashMap::new();
    let mut repaired = Vec::new();
    // Clients of connections queued on a listener: connected to it again (module `queue`).
    let pairs = queue::pairs(entries).map_err(|reason| SocketError::BadImage {
        file: names::FILES.into(),
        reason,
    })?;
    let queue_pos = |e: &InetSkEntry| {
        pairs.get(&e.ino).map_or(0, |&(q, _)| {
            1 + entries.iter().position(|x| x.ino == q).unwrap_or(0)
        })
    };
    let mut order: Vec<&InetSkEntry> = entries
        .iter()
        .filter(|e| wanted.contains(&e.id) && e.queued_on.is_none())
        .collect();
    // Listeners first: a connection accepted from one binds its port again; the clients of
    // queued connections last, in queue order.
    order.sort_by_key(|e| (e.state != TCP_LISTEN, queue_pos(e)));
    for e in order {
        let who = format!("inet socket id {} (socket:[{}])", e.id, e.ino);
        let src = addr(e.family, &e.src_addr, e.src_port).ok_or_else(|| SocketError::BadImage {
            file: names::FILES.into(),
            reason: format!("{who}: address"),
        })?;
        let dst = addr(e.family, &e.dst_addr, e.dst_port).ok_or_else(|| SocketError::BadImage {
            file: names::FILES.into(),
            reason: format!("{who}: address"),
        })?;
        // SAFETY: socket() takes no pointers; the result is checked and owned.
        let fd = unsafe {
            libc::socket(
                e.family as i32,
                e.r#type as i32 | libc::SOCK_CLOEXEC,
                e.proto as i32,
            )
        };
        if fd < 0 {
            return Err(sys(format!("creating {who}")));
        }
        // SAFETY: fd was just created and is owned by nothing else.
        let s = unsafe { OwnedFd::from_raw_fd(fd) };
        let sk = s.as_raw_fd();
        let mut fins = None;
        // IP_TOS first: setting it changes SO_PRIORITY, which the socket options then set.
        if let Some(o) = &e.ip_opts {
            write_ip_opts(sk, e.family as i32, o, &who)?;
            if let Some(r) = &o.raw
                && e.r#type == libc::SOCK_RAW as u32
            {
                write_raw_opts(sk, e.family as i32, e.proto as i32, r, &who)?;
            }
        }
        socket::write_opts(sk, &e.opts, &who)?;
        let set = |level: i32, opt: i32, v: u32, name: &str| {
            socket::set_int(sk, level, opt, v as i32).map_err(|source| SocketError::Sys {
                what: format!("setsockopt {name} on {who}"),
                source,
            })
        };
        // Raw sockets refuse IPV6_V6ONLY (they have no v4-mapped side).
        if let Some(v) = e.v6only.filter(|_| e.r#type != libc::SOCK_RAW as u32) {
            set(
                libc::IPPROTO_IPV6,
                libc::IPV6_V6ONLY,
                v as u32,
                "IPV6_V6ONLY",
            )?;
        }
        let tcp = e.proto == libc::IPPROTO_TCP as u32 && e.r#type == libc::SOCK_STREAM as u32;
        for m in e.mcast.iter().filter(|_| !tcp) {
            mcast::join(sk, e.family as i32, m, &who)?;
        }
        let udp = e.r#type == libc::SOCK_DGRAM as u32
            && matches!(e.proto as i32, libc::IPPROTO_UDP | libc::IPPROTO_UDPLITE);
        if udp && e.tcp_opts.as_ref().and_then(|t| t.cork) == Some(true) {
            set(libc::SOL_UDP, libc::UDP_CORK, 1, "UDP_CORK")?;
        }
        if tcp && let Some(t) = &e.tcp_opts {
            for (v, opt, name) in [
                (t.keepcnt, libc::TCP_KEEPCNT, "TCP_KEEPCNT"),
                (t.keepidle, libc::TCP_KEEPIDLE, "TCP_KEEPIDLE"),
                (t.keepintvl, libc::TCP_KEEPINTVL, "TCP_KEEPINTVL"),
                (t.nodelay.map(u32::from), libc::TCP_NODELAY, "TCP_NODELAY"),
                (t.user_timeout, libc::TCP_USER_TIMEOUT, "TCP_USER_TIMEOUT"),
            ] {
                if let Some(v) = v.filter(|&v| v != 0) {
                    set(libc::SOL_TCP, opt, v, name)?;
                }
            }
            if let Some(c) = &t.congestion {
                set_congestion(sk, c, &who)?;
            }
        }
        let closed = tcp && soccr::supported(e.state) && !streams.contains_key(&e.ino);
        let queued = pairs.get(&e.ino).filter(|_| tcp && !closed);
        let connected = tcp && soccr::supported(e.state) && !closed && queued.is_none();
        match (tcp, e.state) {
            // The client of a connection queued on a listener of the tree.
            (true, _) if queued.is_some() => {
                let &(qino, lid) = queued.ok_or(SocketError::BadImage {
                    file: names::FILES.into(),
                    reason: format!("{who}: queued peer"),
                })?;
                let missing = |ino: u32| SocketError::BadImage {
                    file: names::tcp_stream(ino),
                    reason: format!("{who}: missing"),
                };
                let c = streams.get(&e.ino).ok_or_else(|| missing(e.ino))?;
                let q = streams.get(&qino).ok_or_else(|| missing(qino))?;
                let shut = entries
                    .iter()
                    .any(|x| x.ino == qino && x.state == soccr::state::CLOSE_WAIT);
                let l = out.get(&lid).ok_or_else(|| SocketError::BadImage {
                    file: names::FILES.into(),
                    reason: format!("{who}: listener id {lid} not made"),
                })?;
                queue::reconnect(
                    sk,
                    l.as_raw_fd(),
                    (src, dst),
                    &[&q.inq, &c.outq],
                    shut,
                    e.opts.so_mark.unwrap_or(0),
                    &who,
                )?;
                if c.entry.cork == Some(true) {
                    set(libc::SOL_TCP, libc::TCP_CORK, 1, "TCP_CORK")?;
                }
            }
            // Dumped with --tcp-close: a socket shut down both ways, neither bound nor
            // connected, so that its reads see the end of the stream and its writes EPIPE.
            (true, _) if closed => {
                // SAFETY: shutdown takes no pointers.
                if unsafe { libc::shutdown(sk, libc::SHUT_RDWR) } < 0
                    && std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOTCONN)
                {
                    return Err(sys(format!("shutting down {who}")));
                }
            }
            (true, st) if soccr::supported(st) => {
                let st = streams.get(&e.ino).ok_or_else(|| SocketError::BadImage {
                    file: names::tcp_stream(e.ino),
                    reason: format!("{who}: missing"),
                })?;
                let saved = st.to_saved(e.state, src, dst);
                let repair = |error| SocketError::TcpRepair {
                    who: who.clone(),
                    error,
                };
                let r = soccr::Repair::pause(s.as_fd()).map_err(repair)?;
                let f = r.restore_deferred(&saved).map_err(repair)?;
                r.release();
                fins = Some(f);
                if st.entry.cork == Some(true) {
                    set(libc::SOL_TCP, libc::TCP_CORK, 1, "TCP_CORK")?;
                }
            }
            (_, TCP_LISTEN) => {
                bind_or_connect(sk, src, false).map_err(|()| sys(format!("binding {who}")))?;
                // SAFETY: listen takes no pointers.
                if unsafe { libc::listen(sk, e.backlog.min(i32::MAX as u32) as i32) } < 0 {
                    return Err(sys(format!("listening on {who}")));
                }
            }
            _ => {
                if e.src_port != 0 {
                    bind_or_connect(sk, src, false).map_err(|()| sys(format!("binding {who}")))?;
                }
                // A connected ping socket's peer has no port.
                if !tcp && (e.dst_port != 0 || e.state == TCP_ESTABLISHED) {
                    bind_or_connect(sk, dst, true)
                        .map_err(|()| sys(format!("connecting {who}")))?;
                }
                // A UDP socket shut down (unconnected: the kernel keeps the state and says
                // ENOTCONN).
                if let Some(how) = e.shutdown.filter(|&h| udp && (1..=3).contains(&h)) {
                    // SAFETY: shutdown takes no pointers.
                    if unsafe { libc::shutdown(sk, how - 1) } < 0
                        && std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOTCONN)
                    {
                        return Err(sys(format!("shutting down {who}")));
                    }
                }
            }
        }
        let fl = e.flags as i32 & (libc::O_NONBLOCK | libc::O_ASYNC);
        // SAFETY: fcntl on a socket we own.
        if fl != 0 && unsafe { libc::fcntl(sk, libc::F_SETFL, fl) } < 0 {
            return Err(sys(format!("setting the flags of {who}")));
        }
        let s = socket::move_up(s, min)?;
        if connected {
            repaired.push((e.id, s.as_raw_fd(), fins));
        }
        out.insert(e.id, s);
    }
    // Both ends of a closing connection exist now: the FINs they exchanged go in.
    for (id, fd, fins) in &mut repaired {
        if let Some(f) = fins.take() {
            // SAFETY: fd belongs to a socket in `out`, alive for this borrow.
            let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(*fd) };
            f.finish_fd(b).map_err(|error| SocketError::TcpRepair {
                who: format!("inet socket id {id}: fins"),
                error,
            })?;
        }
    }
    for (id, fd, _) in repaired {
        // SAFETY: fd belongs to a socket in `out`, alive for this borrow.
        let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let r = soccr::Repair::pause(b).and_then(|r| r.resume());
        r.map_err(|error| SocketError::TcpRepair {
            who: format!("inet socket id {id}"),
            error,
        })?;
    }
    Ok(out)
}
