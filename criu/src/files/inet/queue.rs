//! Connections waiting in a TCP listener's accept queue, not accepted yet (CRIU refuses them).
//!
//! Dump: once every socket of the tree was met, each queued connection (seen in
//! `/proc/PID/net/tcp{,6}`: no inode, the listener's port) is paired with its client end in
//! the tree by address and port. When every queued connection of a listener has its client
//! in the tree and the dump ends the tree, criu accepts them from its copy of the listener and
//! dumps each as an inet entry held by no task, `queued_on` the listener's file id, with its
//! `tcp-stream` image (the bytes the client sent that it received); with `--tcp-close` they
//! are dropped, as their clients come back closed. A client outside the tree is refused by
//! name (unless `--skip-in-flight` drops those connections), and so is a dump that leaves
//! the tree running (accepting cannot be undone).
//!
//! Restore: the client end is not rebuilt with TCP repair but connected again, for real, to
//! the restored listener from its own address and port, so that the listener's queue holds a
//! new connection with the same addresses; the bytes the queued end had received, then the
//! client's unacknowledged and unsent bytes, are written into it, and a client that had shut
//! its side down does it again. Both ends are new, so nobody sees the sequence numbers change.
//! While the network is locked (criu's lock lets packets with the repair mark through) both
//! sockets carry that mark for the handshake, the listener's own mark is put back once its
//! queue holds the connection, the client's once its bytes are written.
// Unsafe code: accept4, connect, poll, fstat on raw descriptors.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use super::super::socket::{self, SocketError, sys};

/// One line of `/proc/PID/net/tcp` (or `udp`, `raw`, ...): local and remote address, state,
/// socket inode (0: no file, as a connection in an accept queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Row {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: u32,
    pub ino: u32,
}

/// An address as `/proc/net/tcp` prints it: each 32-bit word of the network-order address in
/// hex as the host reads it, then `:PORT` in hex.
fn parse_addr(s: &str, v6: bool) -> Option<SocketAddr> {
    let (a, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::new();
    for i in (0..a.len()).step_by(8) {
        let w = u32::from_str_radix(a.get(i..i + 8)?, 16).ok()?;
        bytes.extend_from_slice(&w.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 if !v6 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 if v6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The lines of `/proc/PID/net/KIND` (`KIND6` for IPv6) that parse; unreadable: none.
pub(super) fn rows(pid: i32, kind: &str, v6: bool) -> Vec<Row> {
    let file = format!("/proc/{pid}/net/{kind}{}", if v6 { "6" } else { "" });
    let Ok(text) = std::fs::read_to_string(file) else {
        return Vec::new();
    };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            Some(Row {
                local: parse_addr(c.get(1)?, v6)?,
                remote: parse_addr(c.get(2)?, v6)?,
                state: u32::from_str_radix(c.get(3)?, 16).ok()?,
                ino: c.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

/// An address with a v4-mapped IPv6 address as IPv4 (a dual-stack listener sees an IPv4
/// client so).
pub(super) fn canon(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// A listener of the tree with connections not accepted yet.
#[derive(Debug)]
pub(super) struct Pending {
    /// The listener in messages.
    pub who: String,
    /// Its process (whose `/proc/PID/net` shows its namespace).
    pub pid: i32,
    /// Its file id.
    pub id: u32,
    /// Its address.
    pub local: SocketAddr,
    /// criu's copy of it.
    pub copy: OwnedFd,
}

/// What to do with the queued connections of the tree's listeners.
#[derive(Debug, Clone, Copy)]
pub(super) struct Policy {
    pub tree_dies: bool,
    pub skip_in_flight: bool,
    pub tcp_close: bool,
}

/// The queued connections of `p` (local, remote), from `/proc`.
fn queued_of(p: &Pending) -> Vec<(SocketAddr, SocketAddr)> {
    let mut out = Vec::new();
    for v6 in [false, true] {
        for r in rows(p.pid, "tcp", v6) {
            let (l, a) = (canon(r.local), canon(p.local));
            let ours = l.port() == a.port() && (a.ip().is_unspecified() || l.ip() == a.ip());
            // In the queue: established (or its client shut down) and no file yet.
            let queued = r.ino == 0
                && (r.state == soccr::state::ESTABLISHED || r.state == soccr::state::CLOSE_WAIT);
            if ours && queued {
                out.push((l, canon(r.remote)));
            }
        }
    }
    out
}

/// The queued connections of the listeners `pending` whose client ends are among `conns`
/// (own address, peer) of the tree: criu's accepted copies, by inode, with the listener's file
/// id. Refused by name: clients outside the tree (unless `--skip-in-flight`), and queued
/// connections of a tree that keeps running.
///
/// # Errors
/// [`SocketError::InetUnaccepted`], [`SocketError::InetUnacceptedLive`],
/// [`SocketError::Sys`].
pub(super) fn take(
    pending: Vec<Pending>,
    conns: &[(SocketAddr, SocketAddr)],
    pol: Policy,
) -> Result<Vec<(OwnedFd, u32, u32)>, SocketError> {
    let in_tree = |local: SocketAddr, remote: SocketAddr| {
        conns
            .iter()
            .any(|&(s, d)| canon(s) == remote && canon(d) == local)
    };
    let mut out = Vec::new();
    for p in pending {
        let q = queued_of(&p);
        let outside = q.iter().filter(|&&(l, r)| !in_tree(l, r)).count() as u32;
        let inside = q.len() as u32 - outside;
        if outside > 0 && !pol.skip_in_flight {
            return Err(SocketError::InetUnaccepted {
                who: p.who,
                proto: "TCP".into(),
                pending: outside,
            });
        }
        if outside > 0 {
            tracing::info!("{}: skipping {outside} in-flight connection(s)", p.who);
        }
        if inside == 0 {
            continue;
        }
        if pol.tcp_close {
            tracing::info!(
                "{}: {inside} queued connection(s) dropped: their clients come back closed",
                p.who
            );
            continue;
        }
        if !pol.tree_dies {
            if pol.skip_in_flight {
                tracing::info!("{}: skipping {inside} queued connection(s)", p.who);
                continue;
            }
            return Err(SocketError::InetUnacceptedLive {
                who: p.who,
                pending: inside,
            });
        }
        // The listener is the task's (blocking, maybe): accept only what poll says is there.
        while ready(p.copy.as_raw_fd()) {
            // SAFETY: accept4 with null address pointers only returns a new descriptor.
            let fd = unsafe {
                libc::accept4(
                    p.copy.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => break,
                    Some(libc::EINTR | libc::ECONNABORTED) => continue,
                    _ => {
                        return Err(SocketError::Sys {
                            what: format!("accepting a queued connection of {}", p.who),
                            source: e,
                        });
                    }
                }
            }
            // SAFETY: fd is a new descriptor owned by nothing else.
            let c = unsafe { OwnedFd::from_raw_fd(fd) };
            let (Some(l), Some(r)) = (super::name(fd, false), super::name(fd, true)) else {
                continue;
            };
            let (l, r) = (canon(l), canon(r));
            if !in_tree(l, r) {
                if pol.skip_in_flight {
                    tracing::info!("{}: skipping the connection from {r}", p.who);
                    continue;
                }
                return Err(SocketError::InetUnaccepted {
                    who: p.who,
                    proto: "TCP".into(),
                    pending: 1,
                });
            }
            let ino = ino_of(fd).ok_or_else(|| sys(format!("fstat of a child of {}", p.who)))?;
            tracing::info!("{}: taking the queued connection {r} -> {l}", p.who);
            out.push((c, ino, p.id));
        }
    }
    Ok(out)
}

/// A connection waits in the accept queue of `listener`.
fn ready(listener: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd: listener,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll reads and writes one live pollfd.
    unsafe { libc::poll(&mut p, 1, 0) > 0 && p.revents & libc::POLLIN != 0 }
}

fn ino_of(fd: RawFd) -> Option<u32> {
    // SAFETY: all-zero is a valid stat buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes into a live stat.
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return None;
    }
    u32::try_from(st.st_ino).ok()
}

/// The mark of packets criu's network lock lets through.
const MARK: u32 = soccr::raw::MARK;

/// How long a handshake or a write on loopback may take.
const WAIT: Duration = Duration::from_secs(5);

/// Waits for `ev` on `fd` until `end`.
fn wait(fd: RawFd, ev: i16, end: Instant) -> bool {
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let mut p = libc::pollfd {
            fd,
            events: ev,
            revents: 0,
        };
        // SAFETY: poll reads and writes one live pollfd.
        let r = unsafe { libc::poll(&mut p, 1, left.as_millis().max(1) as i32) };
        if r > 0 {
            return true;
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return false;
        }
    }
}

/// Connections in the accept queue of `listener` (`tcpi_unacked` of a listener).
fn queue_len(listener: RawFd) -> u32 {
    let mut b = [0u8; 32];
    let mut len = b.len() as libc::socklen_t;
    // SAFETY: getsockopt writes at most len bytes into b.
    let r = unsafe {
        libc::getsockopt(
            listener,
            libc::SOL_TCP,
            libc::TCP_INFO,
            b.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r < 0 || len < 28 {
        return 0;
    }
    u32::from_ne_bytes([b[24], b[25], b[26], b[27]])
}

/// Rebuilds a queued connection: `sk` (fresh, options set, blocking) is bound to `src` and
/// connected to the listener `listener` at `dst` (`addrs`); then `data` is written into it
/// and, with `shut`, its sending side shut down. `mark` is `sk`'s own mark, put back at the
/// end.
///
/// # Errors
/// [`SocketError::Sys`] naming `who`.
pub(super) fn reconnect(
    sk: RawFd,
    listener: RawFd,
    (src, dst): (SocketAddr, SocketAddr),
    data: &[&[u8]],
    shut: bool,
    mark: u32,
    who: &str,
) -> Result<(), SocketError> {
    let lmark = socket::get_int(listener, libc::SOL_SOCKET, libc::SO_MARK).unwrap_or(0);
    // Marked, the handshake passes criu's lock (setting a mark needs CAP_NET_ADMIN: without
    // it, there is no lock either).
    let marked = socket::set_int(sk, libc::SOL_SOCKET, libc::SO_MARK, MARK as i32).is_ok()
        && socket::set_int(listener, libc::SOL_SOCKET, libc::SO_MARK, MARK as i32).is_ok();
    let before = queue_len(listener);
    let r = handshake(sk, listener, src, dst, before, who);
    if marked {
        let _ = socket::set_int(listener, libc::SOL_SOCKET, libc::SO_MARK, lmark);
    }
    r?;
    let end = Instant::now() + WAIT;
    for mut b in data.iter().copied() {
        while !b.is_empty() {
            // SAFETY: send reads b.len() bytes from a live slice.
            let n = unsafe {
                libc::send(
                    sk,
                    b.as_ptr().cast(),
                    b.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n >= 0 {
                b = &b[n as usize..];
                continue;
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EAGAIN) && wait(sk, libc::POLLOUT, end) {
                continue;
            }
            return Err(SocketError::Sys {
                what: format!("writing the queued bytes of {who}"),
                source: e,
            });
        }
    }
    // SAFETY: shutdown takes no pointers.
    if shut && unsafe { libc::shutdown(sk, libc::SHUT_WR) } < 0 {
        return Err(sys(format!("shutting down {who}")));
    }
    if marked {
        socket::set_int(sk, libc::SOL_SOCKET, libc::SO_MARK, mark as i32).map_err(|source| {
            SocketError::Sys {
                what: format!("setsockopt SO_MARK on {who}"),
                source,
            }
        })?;
    }
    Ok(())
}

fn handshake(
    sk: RawFd,
    listener: RawFd,
    src: SocketAddr,
    dst: SocketAddr,
    before: u32,
    who: &str,
) -> Result<(), SocketError> {
    super::bind_or_connect(sk, src, false).map_err(|()| sys(format!("binding {who}")))?;
    // SAFETY: fcntl on a socket we own.
    let fl = unsafe { libc::fcntl(sk, libc::F_GETFL) };
    // SAFETY: F_SETFL with integer flags on the socket `sk`, which this restore made and owns.
    if fl < 0 || unsafe { libc::fcntl(sk, libc::F_SETFL, fl | libc::O_NONBLOCK) } < 0 {
        return Err(sys(format!("setting the flags of {who}")));
    }
    let end = Instant::now() + WAIT;
    if super::bind_or_connect(sk, dst, true).is_err()
        && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINPROGRESS)
    {
        return Err(sys(format!("connecting {who} to its listener again")));
    }
    if !wait(sk, libc::POLLOUT, end) {
        return Err(SocketError::Sys {
            what: format!("connecting {who} to its listener again"),
            source: std::io::Error::from(std::io::ErrorKind::TimedOut),
        });
    }
    let err = socket::get_int(sk, libc::SOL_SOCKET, libc::SO_ERROR).unwrap_or(0);
    if err != 0 {
        return Err(SocketError::Sys {
            what: format!("connecting {who} to its listener again"),
            source: std::io::Error::from_raw_os_error(err),
        });
    }
    // The listener's end is made when our ACK arrives.
    while queue_len(listener) <= before {
        if Instant::now() >= end {
            return Err(SocketError::Sys {
                what: format!("queueing {who} on its listener"),
                source: std::io::Error::from(std::io::ErrorKind::TimedOut),
            });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    // SAFETY: F_SETFL putting back the flags read from our own socket `sk` above.
    if unsafe { libc::fcntl(sk, libc::F_SETFL, fl) } < 0 {
        return Err(sys(format!("setting the flags of {who}")));
    }
    Ok(())
}

/// The queued connections of `entries` by the inode of their client's entry: (the queued
/// entry's inode, the listener's file id).
pub(super) fn pairs(
    entries: &[criu_images::pb::InetSkEntry],
) -> Result<HashMap<u32, (u32, u32)>, String> {
    let mut out = HashMap::new();
    for q in entries {
        let Some(lid) = q.queued_on else { continue };
        let addrs = |e: &criu_images::pb::InetSkEntry| {
            let s = super::addr(e.family, &e.src_addr, e.src_port)?;
            let d = super::addr(e.family, &e.dst_addr, e.dst_port)?;
            Some((canon(s), canon(d)))
        };
        let (qs, qd) = addrs(q).ok_or(format!("queued inet socket id {}: address", q.id))?;
        if !entries
            .iter()
            .any(|l| l.id == lid && l.state == super::TCP_LISTEN && l.queued_on.is_none())
        {
            return Err(format!(
                "queued inet socket id {}: no listener with id {lid}",
                q.id
            ));
        }
        let client = entries
            .iter()
            .filter(|c| c.queued_on.is_none() && c.state != super::TCP_LISTEN)
            .filter(|c| c.proto == libc::IPPROTO_TCP as u32)
            .find(|c| addrs(c) == Some((qd, qs)))
            .ok_or(format!("queued inet socket id {}: no client end", q.id))?;
        if out.insert(client.ino, (q.ino, lid)).is_some() {
            return Err(format!(
                "inet socket id {}: client of two queued connections",
                client.id
            ));
        }
    }
    Ok(out)
}
