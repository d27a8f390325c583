//! What every socket kind shares: a copy of a task's socket taken with `pidfd_getfd(2)` (criu
//! reads queues and options through it, so the task's own descriptor stays as it was), socket
//! options as CRIU's `sk_opts_entry` (read with `getsockopt`, set again on restore), and the
//! error type of the socket modules (in `error`).
// Unsafe code: raw socket system calls (socket options, fcntl) and adopting their descriptors.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use criu_images::pb::{FownEntry, SkOptsEntry};

mod error;

pub use error::{SockAt, SocketError};

/// A socket being dumped: where the task holds it, criu's copy of it, the descriptor's file
/// status flags and the file id it becomes.
#[derive(Clone, Copy, Debug)]
pub struct DumpSock<'a> {
    /// The process, the descriptor and the socket's inode.
    pub at: SockAt,
    /// criu's copy of the task's socket ([`steal`]).
    pub sk: &'a OwnedFd,
    /// The file status flags of the task's descriptor.
    pub flags: u32,
    /// The `files.img` id it becomes.
    pub id: u32,
}
/// `SocketError::Sys` with the OS error of the last call.
pub fn sys(what: impl Into<String>) -> SocketError {
    SocketError::Sys {
        what: what.into(),
        source: std::io::Error::last_os_error(),
    }
}

/// A copy of descriptor `fd` of process `pid` (`pidfd_open` + `pidfd_getfd`, close-on-exec).
///
/// # Errors
/// [`SocketError::Sys`].
pub fn steal(pid: i32, fd: i32) -> Result<OwnedFd, SocketError> {
    let pidfd = crate::pidfd::open(pid).map_err(|source| SocketError::Sys {
        what: format!("pidfd_open {pid}"),
        source,
    })?;
    steal_from(pidfd.as_fd(), pid, fd)
}

/// As [`steal`], through a pidfd of `pid` the caller already holds.
///
/// # Errors
/// [`SocketError::Sys`].
pub fn steal_from(pidfd: BorrowedFd<'_>, pid: i32, fd: i32) -> Result<OwnedFd, SocketError> {
    // SAFETY: pidfd_getfd takes descriptors and flags, no pointers.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if r < 0 {
        return Err(sys(format!("pidfd_getfd fd {fd} of {pid}")));
    }
    // SAFETY: r is a new descriptor (close-on-exec) owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// An `int` socket option.
pub fn get_int(fd: RawFd, level: i32, opt: i32) -> std::io::Result<i32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into a live int.
    let r = unsafe {
        libc::getsockopt(
            fd,
            level,
            opt,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(v)
}

/// Sets an `int` socket option.
pub fn set_int(fd: RawFd, level: i32, opt: i32, v: i32) -> std::io::Result<()> {
    // SAFETY: setsockopt reads an int from a live local.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn get_timeval(fd: RawFd, opt: i32) -> std::io::Result<(u64, u64)> {
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    let mut len = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into a live timeval.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&mut tv as *mut libc::timeval).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((tv.tv_sec as u64, tv.tv_usec as u64))
}

fn set_timeval(fd: RawFd, opt: i32, sec: u64, usec: u64) -> std::io::Result<()> {
    let tv = libc::timeval {
        tv_sec: sec as libc::time_t,
        tv_usec: usec as libc::suseconds_t,
    };
    // SAFETY: setsockopt reads a timeval from a live local.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `SO_BUF_LOCK` (Linux 5.14).
const SO_BUF_LOCK: i32 = 72;

/// The classic BPF program attached to a socket (`SO_GET_FILTER`), each instruction packed
/// into a `u64` as CRIU saves it (code | jt << 16 | jf << 24 | k << 32).
fn get_filter(fd: RawFd) -> std::io::Result<Vec<u64>> {
    let mut len: libc::socklen_t = 0;
    // SAFETY: with a zero length getsockopt only reports the instruction count in `len`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_GET_FILTER,
            std::ptr::null_mut(),
            &mut len,
        )
    };
    if r < 0 || len == 0 {
        return Ok(Vec::new());
    }
    let mut prog = vec![
        libc::sock_filter {
            code: 0,
            jt: 0,
            jf: 0,
            k: 0
        };
        len as usize
    ];
    // SAFETY: the buffer holds `len` instructions, the unit SO_GET_FILTER counts in.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_GET_FILTER,
            prog.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    prog.truncate(len as usize);
    Ok(prog
        .iter()
        .map(|i| {
            u64::from(i.code) | u64::from(i.jt) << 16 | u64::from(i.jf) << 24 | u64::from(i.k) << 32
        })
        .collect())
}

/// The device a socket is bound to (`SO_BINDTODEVICE`), if any.
fn get_bound_dev(fd: RawFd) -> std::io::Result<Option<String>> {
    let mut b = [0u8; libc::IFNAMSIZ];
    let mut len = b.len() as libc::socklen_t;
    // SAFETY: getsockopt writes at most len bytes into b.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            b.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let b = &b[..(len as usize).min(b.len())];
    let name = b.split(|&c| c == 0).next().unwrap_or_default();
    Ok((!name.is_empty()).then(|| String::from_utf8_lossy(name).into_owned()))
}

/// The linger time in seconds of a socket with `SO_LINGER` on.
fn get_linger(fd: RawFd) -> std::io::Result<Option<u32>> {
    let mut l = libc::linger {
        l_onoff: 0,
        l_linger: 0,
    };
    let mut len = std::mem::size_of::<libc::linger>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most len bytes into a live linger.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&mut l as *mut libc::linger).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((l.l_onoff != 0).then_some(l.l_linger.max(0) as u32))
}

/// The options of socket `fd` as CRIU's `sk_opts_entry` (what CRIU saves for a unix, netlink
/// or packet socket).
///
/// # Errors
/// [`SocketError::Sys`] naming `who`.
pub fn read_opts(fd: RawFd, who: &str) -> Result<SkOptsEntry, SocketError> {
    let e = |opt: &str| {
        let what = format!("getsockopt {opt} on {who}");
        move |source| SocketError::Sys { what, source }
    };
    let int = |opt: i32, name: &str| get_int(fd, libc::SOL_SOCKET, opt).map_err(e(name));
    // Options some families do not have (SO_PASSCRED/SO_PASSSEC on packet sockets): absent.
    let maybe = |opt: i32, name: &str| match get_int(fd, libc::SOL_SOCKET, opt) {
        Ok(v) => Ok(Some(v != 0)),
        Err(err)
            if matches!(
                err.raw_os_error(),
                Some(libc::EOPNOTSUPP) | Some(libc::ENOPROTOOPT)
            ) =>
        {
            Ok(None)
        }
        Err(err) => Err(e(name)(err)),
    };
    let (snd_s, snd_us) = get_timeval(fd, libc::SO_SNDTIMEO).map_err(e("SO_SNDTIMEO"))?;
    let (rcv_s, rcv_us) = get_timeval(fd, libc::SO_RCVTIMEO).map_err(e("SO_RCVTIMEO"))?;
    let mark = int(libc::SO_MARK, "SO_MARK")? as u32;
    let filter = get_filter(fd).map_err(e("SO_GET_FILTER"))?;
    Ok(SkOptsEntry {
        so_sndbuf: int(libc::SO_SNDBUF, "SO_SNDBUF")? as u32,
        so_rcvbuf: int(libc::SO_RCVBUF, "SO_RCVBUF")? as u32,
        so_snd_tmo_sec: snd_s,
        so_snd_tmo_usec: snd_us,
        so_rcv_tmo_sec: rcv_s,
        so_rcv_tmo_usec: rcv_us,
        reuseaddr: Some(int(libc::SO_REUSEADDR, "SO_REUSEADDR")? != 0),
        so_priority: Some(int(libc::SO_PRIORITY, "SO_PRIORITY")? as u32),
        so_rcvlowat: Some(int(libc::SO_RCVLOWAT, "SO_RCVLOWAT")? as u32),
        so_mark: (mark != 0).then_some(mark),
        so_passcred: maybe(libc::SO_PASSCRED, "SO_PASSCRED")?,
        so_passsec: maybe(libc::SO_PASSSEC, "SO_PASSSEC")?,
        so_dontroute: Some(int(libc::SO_DONTROUTE, "SO_DONTROUTE")? != 0),
        so_no_check: Some(int(libc::SO_NO_CHECK, "SO_NO_CHECK")? != 0),
        so_bound_dev: get_bound_dev(fd).map_err(e("SO_BINDTODEVICE"))?,
        so_filter: filter,
        so_reuseport: Some(int(libc::SO_REUSEPORT, "SO_REUSEPORT")? != 0),
        so_broadcast: Some(int(libc::SO_BROADCAST, "SO_BROADCAST")? != 0),
        so_keepalive: Some(int(libc::SO_KEEPALIVE, "SO_KEEPALIVE")? != 0),
        tcp_keepcnt: None,
        tcp_keepidle: None,
        tcp_keepintvl: None,
        so_oobinline: Some(int(libc::SO_OOBINLINE, "SO_OOBINLINE")? as u32),
        so_linger: get_linger(fd).map_err(e("SO_LINGER"))?,
        so_buf_lock: Some(get_int(fd, libc::SOL_SOCKET, SO_BUF_LOCK).unwrap_or(0) as u32),
        so_lock_filter: maybe(libc::SO_LOCK_FILTER, "SO_LOCK_FILTER")?.filter(|&l| l),
    })
}

/// Sets the options of `o` on socket `fd` (buffer sizes first: the kernel doubles what it is
/// given, so half the saved value is set, with the `FORCE` variants as root).
///
/// # Errors
/// [`SocketError::Sys`] naming `who` and the option.
pub fn write_opts(fd: RawFd, o: &SkOptsEntry, who: &str) -> Result<(), SocketError> {
    let e = |opt: &str| {
        let what = format!("setsockopt {opt} on {who}");
        move |source| SocketError::Sys { what, source }
    };
    let set = |opt: i32, v: i32, name: &str| set_int(fd, libc::SOL_SOCKET, opt, v).map_err(e(name));
    let cur_snd = get_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF).unwrap_or(0) as u32;
    if o.so_sndbuf != cur_snd && o.so_sndbuf > 0 {
        set(
            libc::SO_SNDBUFFORCE,
            (o.so_sndbuf / 2) as i32,
            "SO_SNDBUFFORCE",
        )
        .or_else(|_| set(libc::SO_SNDBUF, (o.so_sndbuf / 2) as i32, "SO_SNDBUF"))?;
    }
    let cur_rcv = get_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF).unwrap_or(0) as u32;
    if o.so_rcvbuf != cur_rcv && o.so_rcvbuf > 0 {
        set(
            libc::SO_RCVBUFFORCE,
            (o.so_rcvbuf / 2) as i32,
            "SO_RCVBUFFORCE",
        )
        .or_else(|_| set(libc::SO_RCVBUF, (o.so_rcvbuf / 2) as i32, "SO_RCVBUF"))?;
    }
    if let Some(l) = o.so_buf_lock {
        // Setting a size locks it; put the saved lock bits back (old kernels lack the option).
        let _ = set_int(fd, libc::SOL_SOCKET, SO_BUF_LOCK, l as i32);
    }
    if o.so_snd_tmo_sec != 0 || o.so_snd_tmo_usec != 0 {
        set_timeval(fd, libc::SO_SNDTIMEO, o.so_snd_tmo_sec, o.so_snd_tmo_usec)
            .map_err(e("SO_SNDTIMEO"))?;
    }
    if o.so_rcv_tmo_sec != 0 || o.so_rcv_tmo_usec != 0 {
        set_timeval(fd, libc::SO_RCVTIMEO, o.so_rcv_tmo_sec, o.so_rcv_tmo_usec)
            .map_err(e("SO_RCVTIMEO"))?;
    }
    let flags: [(Option<bool>, i32, &str); 7] = [
        (o.reuseaddr, libc::SO_REUSEADDR, "SO_REUSEADDR"),
        (o.so_passcred, libc::SO_PASSCRED, "SO_PASSCRED"),
        (o.so_passsec, libc::SO_PASSSEC, "SO_PASSSEC"),
        (o.so_dontroute, libc::SO_DONTROUTE, "SO_DONTROUTE"),
        (o.so_reuseport, libc::SO_REUSEPORT, "SO_REUSEPORT"),
        (o.so_broadcast, libc::SO_BROADCAST, "SO_BROADCAST"),
        (o.so_keepalive, libc::SO_KEEPALIVE, "SO_KEEPALIVE"),
    ];
    for (v, opt, name) in flags {
        if v == Some(true) {
            set(opt, 1, name)?;
        }
    }
    if o.so_no_check == Some(true) {
        // Meaningless for local sockets; the kernel accepts it everywhere.
        let _ = set(libc::SO_NO_CHECK, 1, "SO_NO_CHECK");
    }
    if let Some(p) = o.so_priority.filter(|&p| p != 0) {
        set(libc::SO_PRIORITY, p as i32, "SO_PRIORITY")?;
    }
    if let Some(l) = o.so_rcvlowat.filter(|&l| l > 1) {
        set(libc::SO_RCVLOWAT, l as i32, "SO_RCVLOWAT")?;
    }
    if let Some(m) = o.so_mark.filter(|&m| m != 0) {
        set(libc::SO_MARK, m as i32, "SO_MARK")?;
    }
    if let Some(v) = o.so_oobinline.filter(|&v| v != 0) {
        set(libc::SO_OOBINLINE, v as i32, "SO_OOBINLINE")?;
    }
    if let Some(dev) = o.so_bound_dev.as_deref().filter(|d| !d.is_empty()) {
        // SAFETY: setsockopt reads dev.len() bytes of a live string.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_BINDTODEVICE,
                dev.as_ptr().cast(),
                dev.len() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(sys(format!("setsockopt SO_BINDTODEVICE {dev} on {who}")));
        }
    }
    if let Some(secs) = o.so_linger {
        let l = libc::linger {
            l_onoff: 1,
            l_linger: secs.min(i32::MAX as u32) as i32,
        };
        // SAFETY: setsockopt reads a live linger.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&l as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(sys(format!("setsockopt SO_LINGER on {who}")));
        }
    }
    if !o.so_filter.is_empty() {
        let mut prog: Vec<libc::sock_filter> = o
            .so_filter
            .iter()
            .map(|&w| libc::sock_filter {
                code: w as u16,
                jt: (w >> 16) as u8,
                jf: (w >> 24) as u8,
                k: (w >> 32) as u32,
            })
            .collect();
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            filter: prog.as_mut_ptr(),
        };
        // SAFETY: the program points at `len` live instructions for the duration of the call.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                (&fprog as *const libc::sock_fprog).cast(),
                std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(sys(format!("setsockopt SO_ATTACH_FILTER on {who}")));
        }
    }
    if o.so_lock_filter == Some(true) {
        // After the filter: a locked filter cannot be changed, and neither can the lock.
        set(libc::SO_LOCK_FILTER, 1, "SO_LOCK_FILTER")?;
    }
    Ok(())
}

/// The owner of a file (`F_GETOWN_EX`, `F_GETSIG`) as CRIU's `fown_entry` (uids are criu's
/// view: the file's credentials are not visible, so 0 as CRIU writes for unowned files).
pub fn read_fown(fd: RawFd) -> FownEntry {
    /// `struct f_owner_ex`.
    #[repr(C)]
    struct OwnerEx {
        ty: i32,
        pid: i32,
    }
    const F_GETOWN_EX: i32 = 16;
    const F_GETSIG: i32 = 11;
    let mut ex = OwnerEx { ty: 0, pid: 0 };
    // SAFETY: F_GETOWN_EX writes a live f_owner_ex.
    let r = unsafe { libc::fcntl(fd, F_GETOWN_EX, &mut ex as *mut OwnerEx) };
    // SAFETY: F_GETSIG takes no pointer.
    let sig = unsafe { libc::fcntl(fd, F_GETSIG) };
    FownEntry {
        uid: 0,
        euid: 0,
        signum: sig.max(0) as u32,
        pid_type: if r == 0 && ex.pid != 0 {
            ex.ty as u32
        } else {
            0
        },
        pid: if r == 0 { ex.pid as u32 } else { 0 },
    }
}

/// `SO_DOMAIN` of a socket.
pub fn family(fd: RawFd) -> std::io::Result<i32> {
    get_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN)
}

/// Name of an address family, for messages.
pub fn family_name(f: i32) -> String {
    match f {
        libc::AF_UNIX => "AF_UNIX".into(),
        libc::AF_INET => "AF_INET".into(),
        libc::AF_INET6 => "AF_INET6".into(),
        libc::AF_NETLINK => "AF_NETLINK".into(),
        libc::AF_PACKET => "AF_PACKET".into(),
        libc::AF_VSOCK => "AF_VSOCK".into(),
        libc::AF_ALG => "AF_ALG".into(),
        libc::AF_BLUETOOTH => "AF_BLUETOOTH".into(),
        libc::AF_TIPC => "AF_TIPC".into(),
        libc::AF_XDP => "AF_XDP".into(),
        other => format!("family {other}"),
    }
}

/// Moves `fd` to a number at least `min` (close-on-exec).
///
/// # Errors
/// [`SocketError::Sys`].
pub fn move_up(fd: OwnedFd, min: i32) -> Result<OwnedFd, SocketError> {
    if fd.as_raw_fd() >= min {
        return Ok(fd);
    }
    // SAFETY: fcntl on a descriptor we own; the copy is ours too.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) };
    if r < 0 {
        return Err(sys("moving a socket descriptor up"));
    }
    // SAFETY: r is a new descriptor owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn options_round_trip() {
        let (a, _b) = UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        set_int(fd, libc::SOL_SOCKET, libc::SO_PASSCRED, 1).unwrap();
        set_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, 40000).unwrap();
        set_timeval(fd, libc::SO_RCVTIMEO, 3, 500_000).unwrap();
        let o = read_opts(fd, "test").unwrap();
        assert_eq!(o.so_passcred, Some(true));
        assert_eq!((o.so_rcv_tmo_sec, o.so_rcv_tmo_usec), (3, 500_000));
        let (c, _d) = UnixStream::pair().unwrap();
        write_opts(c.as_raw_fd(), &o, "copy").unwrap();
        let o2 = read_opts(c.as_raw_fd(), "copy").unwrap();
        assert_eq!(o2.so_sndbuf, o.so_sndbuf);
        assert_eq!(o2.so_passcred, Some(true));
        assert_eq!((o2.so_rcv_tmo_sec, o2.so_rcv_tmo_usec), (3, 500_000));
        let me = std::process::id() as i32;
        let copy = steal(me, fd).unwrap();
        assert_eq!(family(copy.as_raw_fd()).unwrap(), libc::AF_UNIX);
    }
}
