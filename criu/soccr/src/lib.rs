//! soccr: checkpoint and restore of one TCP connection through the kernel's TCP repair mode.
//!
//! [`Repair::pause`] puts a socket into repair mode (it then neither sends nor answers
//! anything), [`Repair::save`] reads everything needed to rebuild the connection into a
//! [`Saved`] (plain, serde-able data), and [`Repair::restore`] rebuilds it into a fresh,
//! unconnected socket of the same family that is itself paused. [`Repair::resume`] turns repair
//! mode off (the connection runs again); [`Repair::release`] forgets the socket and leaves it in
//! repair mode (what a caller does before closing a saved socket: a socket closed in repair mode
//! sends neither FIN nor RST).
//!
//! The caller must make sure no packet reaches or leaves the connection between pause and
//! resume (a network lock), as with CRIU's libsoccr. Supported states: ESTABLISHED and the
//! closing ones, FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT, LAST_ACK, CLOSING ([`supported`]); others
//! are refused by name. A closing connection is rebuilt as CRIU's libsoccr does: as an
//! established one whose sequence numbers leave room for the FINs, then our FIN queued with
//! `shutdown(2)` in repair mode and the peer's FIN (and its acknowledgement of ours) sent to
//! the socket as hand-made packets through a raw socket ([`raw`], `CAP_NET_RAW`).
//!
//! The C ABI with the names and struct layouts of CRIU's libsoccr (`include/soccr.h`) is the
//! `libsoccr` package (`capi/`, `libsoccr.so` and `libsoccr.a`), built on the single steps
//! below ([`set_repair`], [`save_data`], [`read_queue`], [`sock_name`], [`restore_data`]).

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use serde::{Deserialize, Serialize};

pub mod raw;

/// Socket options and ioctls of TCP repair (linux/tcp.h, linux/sockios.h).
pub mod sys {
    pub const TCP_REPAIR: i32 = 19;
    pub const TCP_REPAIR_QUEUE: i32 = 20;
    pub const TCP_QUEUE_SEQ: i32 = 21;
    pub const TCP_REPAIR_OPTIONS: i32 = 22;
    pub const TCP_TIMESTAMP: i32 = 24;
    pub const TCP_REPAIR_WINDOW: i32 = 29;
    pub const TCP_NO_QUEUE: i32 = 0;
    pub const TCP_RECV_QUEUE: i32 = 1;
    pub const TCP_SEND_QUEUE: i32 = 2;
    pub const SIOCINQ: u64 = 0x541B;
    pub const SIOCOUTQ: u64 = 0x5411;
    pub const SIOCOUTQNSD: u64 = 0x894B;
    pub const TCPI_OPT_TIMESTAMPS: u32 = 1;
    pub const TCPI_OPT_SACK: u32 = 2;
    pub const TCPI_OPT_WSCALE: u32 = 4;
    pub const TCPOPT_MAXSEG: u32 = 2;
    pub const TCPOPT_WINDOW: u32 = 3;
    pub const TCPOPT_SACK_PERM: u32 = 4;
    pub const TCPOPT_TIMESTAMP: u32 = 8;
}

/// TCP states (include/net/tcp_states.h).
pub mod state {
    pub const ESTABLISHED: u32 = 1;
    pub const SYN_SENT: u32 = 2;
    pub const SYN_RECV: u32 = 3;
    pub const FIN_WAIT1: u32 = 4;
    pub const FIN_WAIT2: u32 = 5;
    pub const TIME_WAIT: u32 = 6;
    pub const CLOSE: u32 = 7;
    pub const CLOSE_WAIT: u32 = 8;
    pub const LAST_ACK: u32 = 9;
    pub const LISTEN: u32 = 10;
    pub const CLOSING: u32 = 11;

    /// The kernel's name of a TCP state.
    pub fn name(s: u32) -> &'static str {
        match s {
            ESTABLISHED => "ESTABLISHED",
            SYN_SENT => "SYN_SENT",
            SYN_RECV => "SYN_RECV",
            FIN_WAIT1 => "FIN_WAIT1",
            FIN_WAIT2 => "FIN_WAIT2",
            TIME_WAIT => "TIME_WAIT",
            CLOSE => "CLOSE",
            CLOSE_WAIT => "CLOSE_WAIT",
            LAST_ACK => "LAST_ACK",
            LISTEN => "LISTEN",
            CLOSING => "CLOSING",
            _ => "unknown",
        }
    }
}

/// `SkData::flags`: the window fields were read (TCP_REPAIR_WINDOW, Linux 4.8+).
pub const FLAGS_WINDOW: u32 = 0x1;

/// Errors of soccr; each names the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("fd {fd}: {what}: {source}")]
    Sys {
        fd: RawFd,
        what: &'static str,
        source: io::Error,
    },
    #[error("fd {fd}: tcp state {} ({state}) is not supported", state::name(*state))]
    State { fd: RawFd, state: u32 },
    #[error("fd {fd}: {queue} queue holds {got} bytes, {want} expected")]
    Queue {
        fd: RawFd,
        queue: &'static str,
        got: usize,
        want: usize,
    },
    #[error("fd {fd}: {msg}")]
    Invalid { fd: RawFd, msg: String },
}

impl Error {
    fn sys(fd: RawFd, what: &'static str) -> Self {
        Error::Sys {
            fd,
            what,
            source: io::Error::last_os_error(),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// The connection's numbers, field for field CRIU's `struct libsoccr_sk_data` (repr(C), so the
/// C ABI hands it over as is).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkData {
    pub state: u32,
    pub inq_len: u32,
    pub inq_seq: u32,
    pub outq_len: u32,
    pub outq_seq: u32,
    pub unsq_len: u32,
    pub opt_mask: u32,
    pub mss_clamp: u32,
    pub snd_wscale: u32,
    pub rcv_wscale: u32,
    pub timestamp: u32,
    pub flags: u32,
    pub snd_wl1: u32,
    pub snd_wnd: u32,
    pub max_window: u32,
    pub rcv_wnd: u32,
    pub rcv_wup: u32,
}

/// Everything needed to rebuild a connection: numbers, both addresses, both queues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub data: SkData,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// Received, not yet read by the program (`inq_len` bytes).
    pub recv_queue: Vec<u8>,
    /// Written, not yet acknowledged by the peer (`outq_len` bytes; the last `unsq_len` of
    /// them were never sent).
    pub send_queue: Vec<u8>,
}

/// A socket in repair mode.
#[derive(Debug)]
pub struct Repair<'a> {
    fd: BorrowedFd<'a>,
}

impl<'a> Repair<'a> {
    /// Turns repair mode on.
    pub fn pause(fd: BorrowedFd<'a>) -> Result<Self> {
        set_repair(fd.as_raw_fd(), true)?;
        Ok(Repair { fd })
    }

    /// Reads the connection's state, addresses and queues.
    pub fn save(&self) -> Result<Saved> {
        self.save_as(None)
    }

    /// [`Repair::save`], with the peer's address given by the caller where getpeername does not
    /// tell it (a connection still in SYN_SENT; CRIU takes it from sock_diag).
    pub fn save_as(&self, peer: Option<SocketAddr>) -> Result<Saved> {
        let fd = self.fd.as_raw_fd();
        let mut data = save_data(fd)?;
        let (rq_seq, recv_queue) = read_queue(fd, sys::TCP_RECV_QUEUE, data.inq_len)?;
        let (sq_seq, send_queue) = read_queue(fd, sys::TCP_SEND_QUEUE, data.outq_len)?;
        data.inq_seq = rq_seq;
        data.outq_seq = sq_seq;
        Ok(Saved {
            data,
            src: sock_name(fd, false)?,
            dst: match peer {
                Some(p) => p,
                None => sock_name(fd, true)?,
            },
            recv_queue,
            send_queue,
        })
    }

    /// Rebuilds `saved` into this socket (fresh, unbound, of the addresses' family), closing
    /// states included (their FINs: see [`restore_fins`]).
    pub fn restore(&self, saved: &Saved) -> Result<()> {
        self.restore_deferred(saved)?.finish(self)
    }

    /// Rebuilds `saved` like [`Repair::restore`] but for the FINs of a closing connection,
    /// which [`Fins::finish`] sends: a caller that restores both ends of a connection calls it
    /// once both exist (an end answering a FIN with nobody there would be reset).
    pub fn restore_deferred(&self, saved: &Saved) -> Result<Fins> {
        let fd = self.fd.as_raw_fd();
        let mut data = saved.data;
        let (src, dst) = (SockAddr::from(saved.src), SockAddr::from(saved.dst));
        restore_data(
            fd,
            &mut data,
            &src,
            &dst,
            Some(&saved.recv_queue),
            Some(&saved.send_queue),
        )?;
        Ok(Fins {
            data,
            src,
            dst,
            send_queue: saved.send_queue.clone(),
        })
    }

    /// Turns repair mode off: the connection runs again.
    pub fn resume(self) -> Result<()> {
        set_repair(self.fd.as_raw_fd(), false)
    }

    /// Forgets the socket, leaving it in repair mode.
    pub fn release(self) {}
}

/// What is left of a closing connection's restore ([`Repair::restore_deferred`]).
#[derive(Clone)]
pub struct Fins {
    data: SkData,
    src: SockAddr,
    dst: SockAddr,
    send_queue: Vec<u8>,
}

impl std::fmt::Debug for Fins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fins")
            .field("state", &state::name(self.data.state))
            .field("src", &self.src.to_std())
            .field("dst", &self.dst.to_std())
            .finish()
    }
}

impl Fins {
    /// Sends the FINs (and the acknowledgement) of [`restore_fins`] to the socket of `r`, the
    /// one the restore was made into.
    pub fn finish(mut self, r: &Repair<'_>) -> Result<()> {
        let fd = r.fd.as_raw_fd();
        restore_fins(
            fd,
            &mut self.data,
            &self.src,
            &self.dst,
            Some(&self.send_queue),
        )
    }

    /// The same for a socket that is no longer held as a [`Repair`] (it must be the one the
    /// restore was made into, still in repair mode).
    pub fn finish_fd(mut self, fd: BorrowedFd<'_>) -> Result<()> {
        let fd = fd.as_raw_fd();
        restore_fins(
            fd,
            &mut self.data,
            &self.src,
            &self.dst,
            Some(&self.send_queue),
        )
    }
}

/// Turns TCP repair mode of `fd` on or off (what [`Repair::pause`] and [`Repair::resume`] do;
/// a single step for callers that keep the socket themselves, as the C ABI does).
///
/// # Errors
/// [`Error::Sys`] naming the step.
pub fn set_repair(fd: RawFd, on: bool) -> Result<()> {
    setsockopt_u32(fd, sys::TCP_REPAIR, on as u32).map_err(|_| {
        Error::sys(
            fd,
            if on {
                "tcp repair on"
            } else {
                "tcp repair off"
            },
        )
    })
}

fn setsockopt_u32(fd: RawFd, opt: i32, val: u32) -> std::result::Result<(), ()> {
    setsockopt_raw(fd, opt, &val)
}

fn setsockopt_raw<T>(fd: RawFd, opt: i32, val: &T) -> std::result::Result<(), ()> {
    // SAFETY: val points to a live T of size_of::<T>() bytes; the kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_TCP,
            opt,
            (val as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 { Err(()) } else { Ok(()) }
}

/// getsockopt into `buf`; returns the length the kernel wrote.
fn getsockopt_raw(fd: RawFd, opt: i32, buf: &mut [u8]) -> std::result::Result<usize, ()> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: buf is writable for len bytes and len is passed by pointer as the kernel expects.
    let r = unsafe { libc::getsockopt(fd, libc::SOL_TCP, opt, buf.as_mut_ptr().cast(), &mut len) };
    if r < 0 { Err(()) } else { Ok(len as usize) }
}

fn getsockopt_u32(fd: RawFd, opt: i32, what: &'static str) -> Result<u32> {
    let mut b = [0u8; 4];
    match getsockopt_raw(fd, opt, &mut b) {
        Ok(4) => Ok(u32::from_ne_bytes(b)),
        Ok(n) => Err(Error::Invalid {
            fd,
            msg: format!("{what}: {n} bytes"),
        }),
        Err(()) => Err(Error::sys(fd, what)),
    }
}

fn ioctl_int(fd: RawFd, req: u64, what: &'static str) -> Result<u32> {
    let mut v: libc::c_int = 0;
    // SAFETY: the three queue ioctls write one int through the pointer, which is valid.
    let r = unsafe { libc::ioctl(fd, req as _, &mut v as *mut libc::c_int) };
    if r < 0 {
        return Err(Error::sys(fd, what));
    }
    Ok(v.max(0) as u32)
}

/// States whose send queue ends in our FIN (not counted as data).
fn fin_in_sndq(state: u32) -> bool {
    matches!(
        state,
        state::FIN_WAIT1 | state::FIN_WAIT2 | state::CLOSING | state::LAST_ACK | state::CLOSE
    )
}

/// The connected states soccr saves and restores: established and the closing ones (one or
/// both FINs sent or received, not both acknowledged).
pub fn supported(s: u32) -> bool {
    matches!(
        s,
        state::ESTABLISHED
            | state::SYN_SENT
            | state::FIN_WAIT1
            | state::FIN_WAIT2
            | state::CLOSE_WAIT
            | state::LAST_ACK
            | state::CLOSING
    )
}

/// Our FIN is restored before the peer's (we closed first).
fn first_fin_ours(s: u32) -> bool {
    matches!(s, state::FIN_WAIT1 | state::FIN_WAIT2 | state::CLOSING)
}

/// The peer's FIN is in the receive queue.
fn peer_fin(s: u32) -> bool {
    matches!(s, state::CLOSE_WAIT | state::LAST_ACK | state::CLOSING)
}

/// Our FIN was acknowledged by the peer.
fn our_fin_acked(s: u32) -> bool {
    s == state::FIN_WAIT2
}

/// Reads state, queue lengths, options and window (not the queues themselves nor the
/// sequence numbers: [`read_queue`] does those).
pub fn save_data(fd: RawFd) -> Result<SkData> {
    let mut d = SkData::default();
    // The first bytes of struct tcp_info: state, ca_state, retransmits, probes, backoff,
    // options, then snd_wscale:4 | rcv_wscale:4.
    let mut ti = [0u8; 8];
    match getsockopt_raw(fd, libc::TCP_INFO, &mut ti) {
        Ok(n) if n >= 7 => {}
        Ok(n) => {
            return Err(Error::Invalid {
                fd,
                msg: format!("tcp_info: {n} bytes"),
            });
        }
        Err(()) => return Err(Error::sys(fd, "tcp_info")),
    }
    d.state = ti[0] as u32;
    if !supported(d.state) {
        return Err(Error::State { fd, state: d.state });
    }
    d.outq_len = ioctl_int(fd, sys::SIOCOUTQ, "send queue size")?;
    d.unsq_len = ioctl_int(fd, sys::SIOCOUTQNSD, "unsent queue size")?;
    if fin_in_sndq(d.state) {
        d.outq_len = d.outq_len.saturating_sub(1);
        d.unsq_len = d.unsq_len.saturating_sub(1);
    }
    d.inq_len = ioctl_int(fd, sys::SIOCINQ, "receive queue size")?;

    d.mss_clamp = getsockopt_u32(fd, libc::TCP_MAXSEG, "tcp mss")?;
    d.opt_mask = ti[5] as u32;
    if d.opt_mask & sys::TCPI_OPT_WSCALE != 0 {
        d.snd_wscale = (ti[6] & 0xf) as u32;
        d.rcv_wscale = (ti[6] >> 4) as u32;
    }
    if d.opt_mask & sys::TCPI_OPT_TIMESTAMPS != 0 {
        d.timestamp = getsockopt_u32(fd, sys::TCP_TIMESTAMP, "tcp timestamp")?;
    }

    let mut w = [0u8; 20];
    // A SYN_SENT connection has no window yet (nor options: its SYN carries them again).
    if d.state == state::SYN_SENT {
        return Ok(d);
    }
    match getsockopt_raw(fd, sys::TCP_REPAIR_WINDOW, &mut w) {
        Ok(20) => {
            let f = |i: usize| u32::from_ne_bytes([w[i], w[i + 1], w[i + 2], w[i + 3]]);
            d.flags |= FLAGS_WINDOW;
            d.snd_wl1 = f(0);
            d.snd_wnd = f(4);
            d.max_window = f(8);
            d.rcv_wnd = f(12);
            d.rcv_wup = f(16);
        }
        Ok(_) => {}
        Err(()) if io::Error::last_os_error().raw_os_error() == Some(libc::ENOPROTOOPT) => {}
        Err(()) => return Err(Error::sys(fd, "tcp repair window")),
    }
    Ok(d)
}

/// Selects `queue`, reads its sequence number (rcv_nxt or write_seq) and peeks its `len` bytes.
pub fn read_queue(fd: RawFd, queue: i32, len: u32) -> Result<(u32, Vec<u8>)> {
    let qname = if queue == sys::TCP_RECV_QUEUE {
        "receive"
    } else {
        "send"
    };
    setsockopt_u32(fd, sys::TCP_REPAIR_QUEUE, queue as u32)
        .map_err(|_| Error::sys(fd, "select repair queue"))?;
    let seq = getsockopt_u32(fd, sys::TCP_QUEUE_SEQ, "queue sequence")?;
    if len == 0 {
        return Ok((seq, Vec::new()));
    }
    // One byte more than expected proves the queue holds exactly len bytes.
    let mut buf = vec![0u8; len as usize + 1];
    // SAFETY: buf is writable for buf.len() bytes.
    let n = unsafe {
        libc::recv(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(Error::sys(fd, "peek queue"));
    }
    if n as usize != len as usize {
        return Err(Error::Queue {
            fd,
            queue: qname,
            got: n as usize,
            want: len as usize,
        });
    }
    buf.truncate(len as usize);
    Ok((seq, buf))
}

/// A sockaddr of either family, laid out as CRIU's `union libsoccr_addr`.
#[repr(C)]
#[derive(Clone, Copy)]
pub union SockAddr {
    pub sa: libc::sockaddr,
    pub v4: libc::sockaddr_in,
    pub v6: libc::sockaddr_in6,
}

impl SockAddr {
    fn family(&self) -> i32 {
        // SAFETY: every variant starts with sa_family_t.
        unsafe { self.sa.sa_family as i32 }
    }

    fn len(&self) -> libc::socklen_t {
        if self.family() == libc::AF_INET6 {
            size_of::<libc::sockaddr_in6>() as _
        } else {
            size_of::<libc::sockaddr_in>() as _
        }
    }

    /// The std form; None for a family other than AF_INET/AF_INET6.
    pub fn to_std(&self) -> Option<SocketAddr> {
        match self.family() {
            libc::AF_INET => {
                // SAFETY: the family says v4 is the live variant.
                let v4 = unsafe { self.v4 };
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr)),
                    u16::from_be(v4.sin_port),
                )))
            }
            libc::AF_INET6 => {
                // SAFETY: the family says v6 is the live variant.
                let v6 = unsafe { self.v6 };
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(v6.sin6_addr.s6_addr),
                    u16::from_be(v6.sin6_port),
                    u32::from_be(v6.sin6_flowinfo),
                    v6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}

impl From<SocketAddr> for SockAddr {
    fn from(a: SocketAddr) -> Self {
        // SAFETY: all-zero is a valid value of every sockaddr variant.
        let mut s: SockAddr = unsafe { zeroed() };
        match a {
            SocketAddr::V4(a) => {
                s.v4 = libc::sockaddr_in {
                    sin_family: libc::AF_INET as _,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(*a.ip()).to_be(),
                    },
                    sin_zero: [0; 8],
                }
            }
            SocketAddr::V6(a) => {
                s.v6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as _,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo().to_be(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                }
            }
        }
        s
    }
}

/// The local (`peer` false) or remote address of `fd`.
///
/// # Errors
/// [`Error::Sys`] naming the step.
pub fn sock_name(fd: RawFd, peer: bool) -> Result<SocketAddr> {
    // SAFETY: all-zero is a valid SockAddr.
    let mut s: SockAddr = unsafe { zeroed() };
    let mut len = size_of::<SockAddr>() as libc::socklen_t;
    let p = (&mut s as *mut SockAddr).cast::<libc::sockaddr>();
    // SAFETY: p is writable for len bytes (the whole union).
    let r = unsafe {
        if peer {
            libc::getpeername(fd, p, &mut len)
        } else {
            libc::getsockname(fd, p, &mut len)
        }
    };
    if r < 0 {
        return Err(Error::sys(
            fd,
            if peer { "getpeername" } else { "getsockname" },
        ));
    }
    s.to_std().ok_or_else(|| Error::Invalid {
        fd,
        msg: format!("address family {} is not inet", s.family()),
    })
}

fn set_queue_seq(fd: RawFd, queue: i32, seq: u32) -> Result<()> {
    setsockopt_u32(fd, sys::TCP_REPAIR_QUEUE, queue as u32)
        .map_err(|_| Error::sys(fd, "select repair queue"))?;
    setsockopt_u32(fd, sys::TCP_QUEUE_SEQ, seq).map_err(|_| Error::sys(fd, "set queue sequence"))
}

/// Writes `buf` into the selected queue, halving the chunk when the kernel refuses a large one
/// (repair-mode receive queue data goes into one linear buffer per call).
fn send_all(fd: RawFd, mut buf: &[u8], what: &'static str) -> Result<()> {
    let mut chunk = buf.len();
    while !buf.is_empty() {
        let n = chunk.min(buf.len());
        // SAFETY: buf is readable for n bytes.
        let r = unsafe { libc::send(fd, buf.as_ptr().cast(), n, libc::MSG_DONTWAIT) };
        if r <= 0 {
            if chunk > 1024 {
                chunk /= 2;
                continue;
            }
            return Err(Error::sys(fd, what));
        }
        buf = &buf[r as usize..];
    }
    Ok(())
}

/// The restore steps on a paused fresh socket: bind, sequence numbers, repair connect, options,
/// queues, window, and a FIN_WAIT1 socket's FIN. `data` is updated the way CRIU's libsoccr
/// updates it.
pub fn restore_data(
    fd: RawFd,
    data: &mut SkData,
    src: &SockAddr,
    dst: &SockAddr,
    recv_queue: Option<&[u8]>,
    send_queue: Option<&[u8]>,
) -> Result<()> {
    if !supported(data.state) {
        return Err(Error::State {
            fd,
            state: data.state,
        });
    }
    if data.unsq_len > data.outq_len {
        return Err(Error::Invalid {
            fd,
            msg: format!("unsent {} > send queue {}", data.unsq_len, data.outq_len),
        });
    }
    for (q, len, name) in [
        (recv_queue, data.inq_len, "receive"),
        (send_queue, data.outq_len, "send"),
    ] {
        if let Some(q) = q
            && q.len() < len as usize
        {
            return Err(Error::Queue {
                fd,
                queue: name,
                got: q.len(),
                want: len as usize,
            });
        }
    }
    let p = (src as *const SockAddr).cast::<libc::sockaddr>();
    // SAFETY: p points at a SockAddr at least src.len() bytes long.
    if unsafe { libc::bind(fd, p, src.len()) } < 0 {
        return Err(Error::sys(fd, "bind"));
    }
    if peer_fin(data.state) {
        data.inq_seq = data.inq_seq.wrapping_sub(1);
    }
    if fin_in_sndq(data.state) {
        data.outq_seq = data.outq_seq.wrapping_sub(1);
    }
    set_queue_seq(
        fd,
        sys::TCP_RECV_QUEUE,
        data.inq_seq.wrapping_sub(data.inq_len),
    )?;
    let syn_sent = data.state == state::SYN_SENT;
    // SYN_SENT: the send queue's sequence is the SYN's (it takes one number), which a real
    // connect with repair off sends again, as CRIU's libsoccr does.
    set_queue_seq(
        fd,
        sys::TCP_SEND_QUEUE,
        data.outq_seq
            .wrapping_sub(data.outq_len)
            .wrapping_sub(u32::from(syn_sent)),
    )?;
    if syn_sent {
        return connect_syn(fd, dst);
    }
    let p = (dst as *const SockAddr).cast::<libc::sockaddr>();
    // SAFETY: p points at a SockAddr at least dst.len() bytes long.
    if unsafe { libc::connect(fd, p, dst.len()) } < 0
        && io::Error::last_os_error().raw_os_error() != Some(libc::EINPROGRESS)
    {
        return Err(Error::sys(fd, "repair connect"));
    }

    let mut opts: Vec<[u32; 2]> = Vec::with_capacity(4);
    if data.opt_mask & sys::TCPI_OPT_SACK != 0 {
        opts.push([sys::TCPOPT_SACK_PERM, 0]);
    }
    if data.opt_mask & sys::TCPI_OPT_WSCALE != 0 {
        opts.push([
            sys::TCPOPT_WINDOW,
            data.snd_wscale + (data.rcv_wscale << 16),
        ]);
    }
    if data.opt_mask & sys::TCPI_OPT_TIMESTAMPS != 0 {
        opts.push([sys::TCPOPT_TIMESTAMP, 0]);
    }
    opts.push([sys::TCPOPT_MAXSEG, data.mss_clamp]);
    // SAFETY: opts is a contiguous array of struct tcp_repair_opt {u32, u32}.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_TCP,
            sys::TCP_REPAIR_OPTIONS,
            opts.as_ptr().cast(),
            (opts.len() * 8) as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(Error::sys(fd, "tcp repair options"));
    }
    if data.opt_mask & sys::TCPI_OPT_TIMESTAMPS != 0 {
        setsockopt_u32(fd, sys::TCP_TIMESTAMP, data.timestamp)
            .map_err(|_| Error::sys(fd, "tcp timestamp"))?;
    }

    if let Some(q) = recv_queue
        && data.inq_len > 0
    {
        setsockopt_u32(fd, sys::TCP_REPAIR_QUEUE, sys::TCP_RECV_QUEUE as u32)
            .map_err(|_| Error::sys(fd, "select repair queue"))?;
        send_all(fd, &q[..data.inq_len as usize], "refill receive queue")?;
    }
    if let Some(q) = send_queue {
        let sent = (data.outq_len - data.unsq_len) as usize;
        if sent > 0 {
            setsockopt_u32(fd, sys::TCP_REPAIR_QUEUE, sys::TCP_SEND_QUEUE as u32)
                .map_err(|_| Error::sys(fd, "select repair queue"))?;
            send_all(fd, &q[..sent], "refill send queue")?;
        }
    }

    if data.flags & FLAGS_WINDOW != 0 {
        // The peer's FIN, sent below, takes one more sequence number of the window.
        let fin = u32::from(peer_fin(data.state));
        let w = [
            data.snd_wl1,
            data.snd_wnd,
            data.max_window,
            data.rcv_wnd.wrapping_add(fin),
            data.rcv_wup.wrapping_sub(fin),
        ];
        setsockopt_raw(fd, sys::TCP_REPAIR_WINDOW, &w)
            .map_err(|_| Error::sys(fd, "tcp repair window"))?;
    }

    if our_fin_acked(data.state) {
        // Acknowledged, so nothing unsent comes before it.
        shutdown_fin(fd, true)?;
    }
    Ok(())
}

/// A SYN_SENT connection's connect: repair off for a non-blocking connect (its SYN goes out with
/// the saved sequence number), then repair on again.
fn connect_syn(fd: RawFd, dst: &SockAddr) -> Result<()> {
    set_repair(fd, false)?;
    // SAFETY: fcntl on fd, no pointers.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if fl < 0 {
        return Err(Error::sys(fd, "get file flags"));
    }
    // SAFETY: fcntl on fd with an integer argument, no pointers.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) } < 0 {
        return Err(Error::sys(fd, "set file flags"));
    }
    let p = (dst as *const SockAddr).cast::<libc::sockaddr>();
    // SAFETY: p points at a SockAddr at least dst.len() bytes long.
    let r = unsafe { libc::connect(fd, p, dst.len()) };
    let err = io::Error::last_os_error();
    // SAFETY: fcntl on fd with an integer argument, no pointers.
    unsafe { libc::fcntl(fd, libc::F_SETFL, fl) };
    if r < 0 && err.raw_os_error() != Some(libc::EINPROGRESS) {
        return Err(Error::Sys {
            fd,
            what: "connect (syn-sent)",
            source: err,
        });
    }
    set_repair(fd, true)
}

/// Puts our FIN into the send queue with `shutdown(SHUT_WR)`; an `acked` one as already sent
/// (the send queue selected), so the peer's acknowledgement then matches it.
fn shutdown_fin(fd: RawFd, acked: bool) -> Result<()> {
    if acked {
        setsockopt_u32(fd, sys::TCP_REPAIR_QUEUE, sys::TCP_SEND_QUEUE as u32)
            .map_err(|_| Error::sys(fd, "select repair queue"))?;
    }
    // SAFETY: plain syscall on fd.
    let r = unsafe { libc::shutdown(fd, libc::SHUT_WR) };
    let err = Error::sys(fd, "shutdown");
    if acked {
        setsockopt_u32(fd, sys::TCP_REPAIR_QUEUE, sys::TCP_NO_QUEUE as u32)
            .map_err(|_| Error::sys(fd, "select repair queue"))?;
    }
    if r < 0 {
        return Err(err);
    }
    Ok(())
}

/// `SO_BUF_LOCK` (Linux 5.14).
const SO_BUF_LOCK: i32 = 72;

fn get_sol_socket(fd: RawFd, opt: i32) -> Option<u32> {
    let mut v: u32 = 0;
    let mut len = size_of::<u32>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most len bytes into a live u32.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&mut v as *mut u32).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(v)
}

fn set_sol_socket(fd: RawFd, opt: i32, v: u32) -> std::result::Result<(), ()> {
    // SAFETY: setsockopt reads a u32 from a live local.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&v as *const u32).cast(),
            size_of::<u32>() as libc::socklen_t,
        )
    };
    if r < 0 { Err(()) } else { Ok(()) }
}

/// The send buffer size and the buffer lock bits of `fd`.
fn sndbuf(fd: RawFd) -> Option<(u32, u32)> {
    Some((
        get_sol_socket(fd, libc::SO_SNDBUF)?,
        get_sol_socket(fd, SO_BUF_LOCK).unwrap_or(0),
    ))
}

/// The second half of a restore, after [`restore_data`] on the same `data`, once the peer's
/// end can answer (a caller that restores both ends calls it when both exist, before repair is
/// turned off): the bytes never sent (`send_queue`'s last `unsq_len`) are written as a program
/// would, with repair off for that moment, so they go out; then a closing connection's FINs:
/// ours when it was not acknowledged yet (`shutdown(2)`, after those bytes), the peer's (a
/// hand-made packet from `dst` through a raw socket, which needs `CAP_NET_RAW`), ours of a
/// connection that closed second, and the peer's acknowledgement of ours where it had arrived.
///
/// # Errors
/// [`Error::Sys`] or [`Error::Invalid`] naming the step.
pub fn restore_fins(
    fd: RawFd,
    data: &mut SkData,
    src: &SockAddr,
    dst: &SockAddr,
    send_queue: Option<&[u8]>,
) -> Result<()> {
    let st = data.state;
    if let Some(q) = send_queue
        && data.unsq_len > 0
    {
        let (from, to) = (
            (data.outq_len - data.unsq_len) as usize,
            data.outq_len as usize,
        );
        let Some(unsent) = q.get(from..to) else {
            return Err(Error::Queue {
                fd,
                queue: "send",
                got: q.len(),
                want: to,
            });
        };
        // The bytes refilled in repair mode may already fill the send buffer the program had
        // (they were written while acknowledgements freed room): room for these too, for this
        // moment only.
        let old = sndbuf(fd);
        if let Some((size, _)) = old {
            let want = (data.outq_len as usize)
                .saturating_mul(2)
                .saturating_add(size as usize)
                .min(i32::MAX as usize) as u32;
            let _ = set_sol_socket(fd, libc::SO_SNDBUFFORCE, want / 2);
        }
        set_repair(fd, false)?;
        let r = send_all(fd, unsent, "refill unsent send queue");
        set_repair(fd, true)?;
        if let Some((size, lock)) = old {
            let _ = set_sol_socket(fd, libc::SO_SNDBUFFORCE, size / 2);
            let _ = set_sol_socket(fd, SO_BUF_LOCK, lock);
        }
        r?;
    }
    if first_fin_ours(st) && !our_fin_acked(st) {
        shutdown_fin(fd, false)?;
    }
    if !(peer_fin(st) || our_fin_acked(st)) {
        return Ok(());
    }
    let (Some(s), Some(d)) = (src.to_std(), dst.to_std()) else {
        return Err(Error::Invalid {
            fd,
            msg: "addresses are not inet".into(),
        });
    };
    let window = (data.snd_wnd >> data.snd_wscale.min(14)).min(0xffff) as u16;
    let window = if window == 0 { 0xffff } else { window };
    let seg = |seq, ack, flags| {
        raw::send_tcp(
            d,
            s,
            raw::TcpHeader {
                seq,
                ack,
                flags,
                window,
            },
        )
        .map_err(|source| Error::Sys {
            fd,
            what: "sending the peer's fin",
            source,
        })
    };
    if peer_fin(st) {
        seg(
            data.inq_seq,
            data.outq_seq.wrapping_sub(data.outq_len),
            raw::TH_FIN | raw::TH_ACK,
        )?;
    }
    if st == state::LAST_ACK {
        shutdown_fin(fd, false)?;
    }
    if our_fin_acked(st) {
        data.outq_seq = data.outq_seq.wrapping_add(1);
        seg(
            data.inq_seq,
            data.outq_seq.wrapping_sub(data.outq_len),
            raw::TH_ACK,
        )?;
    }
    Ok(())
}
