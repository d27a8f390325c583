//! The kernel's termios and the tty ioctls both sides use: reading and setting settings,
//! draining and putting back the bytes a pty holds, reaching a master's slave.
// Unsafe code: tty ioctls and reads/writes on descriptors we hold.
#![allow(unsafe_code)]

use std::os::fd::{OwnedFd, RawFd};

use criu_images::pb::{TermiosEntry, WinsizeEntry};

/// The kernel's `struct termios` (what `TCGETS` and `TIOCGLCKTRMIOS` read).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct KTermios {
    pub(super) iflag: u32,
    pub(super) oflag: u32,
    pub(super) cflag: u32,
    pub(super) lflag: u32,
    pub(super) line: u8,
    pub(super) cc: [u8; NCC],
}

/// Control characters in the kernel's termios.
pub(super) const NCC: usize = 19;

impl KTermios {
    pub(super) fn entry(&self) -> TermiosEntry {
        let mut cc = vec![0u32; NCC];
        for (i, b) in self.cc.iter().enumerate() {
            cc[i / 4] |= u32::from(*b) << (8 * (i % 4));
        }
        TermiosEntry {
            c_iflag: self.iflag,
            c_oflag: self.oflag,
            c_cflag: self.cflag,
            c_lflag: self.lflag,
            c_line: u32::from(self.line),
            c_ispeed: 0,
            c_ospeed: 0,
            c_cc: cc,
        }
    }

    pub(super) fn from_entry(e: &TermiosEntry) -> KTermios {
        let mut t = KTermios {
            iflag: e.c_iflag,
            oflag: e.c_oflag,
            cflag: e.c_cflag,
            lflag: e.c_lflag,
            line: e.c_line as u8,
            cc: [0; NCC],
        };
        for (i, b) in t.cc.iter_mut().enumerate() {
            *b = e.c_cc.get(i / 4).map_or(0, |w| (w >> (8 * (i % 4))) as u8);
        }
        t
    }
}

/// An int-valued tty ioctl (`None` on failure).
pub(super) fn get_int(fd: RawFd, req: libc::Ioctl) -> Option<i32> {
    let mut v: libc::c_int = 0;
    // SAFETY: the request writes one int into a live local.
    let r = unsafe { libc::ioctl(fd, req as _, &mut v as *mut libc::c_int) };
    (r == 0).then_some(v)
}

pub(super) fn get_termios(fd: RawFd, req: libc::Ioctl) -> std::io::Result<KTermios> {
    let mut t = KTermios::default();
    // SAFETY: TCGETS / TIOCGLCKTRMIOS write one kernel termios into a live local of that layout.
    let r = unsafe { libc::ioctl(fd, req as _, &mut t as *mut KTermios) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(t)
}

pub(super) fn set_termios(fd: RawFd, req: libc::Ioctl, t: &KTermios) -> std::io::Result<()> {
    // SAFETY: TCSETS / TIOCSLCKTRMIOS read one kernel termios from a live local.
    let r = unsafe { libc::ioctl(fd, req as _, t as *const KTermios) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Sets the window size of terminal `fd` from the image's entry.
pub(super) fn set_winsize(fd: RawFd, w: &WinsizeEntry) -> std::io::Result<()> {
    let ws = libc::winsize {
        ws_row: w.ws_row as u16,
        ws_col: w.ws_col as u16,
        ws_xpixel: w.ws_xpixel as u16,
        ws_ypixel: w.ws_ypixel as u16,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from a live local.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws as *const libc::winsize) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Reads every byte waiting on `fd` without blocking (its file's `O_NONBLOCK` is set for the
/// time of the reads and put back).
pub(super) fn drain(fd: RawFd) -> std::io::Result<Vec<u8>> {
    // SAFETY: F_GETFL/F_SETFL on a descriptor we own a copy of.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if fl < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: F_SETFL takes an int of flags, no pointer; `fd` is a descriptor we own a copy of.
    unsafe { libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) };
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let res = loop {
        // SAFETY: reads into a live local buffer of its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            out.extend_from_slice(&buf[..n as usize]);
            continue;
        }
        let e = std::io::Error::last_os_error();
        if n == 0 || matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EIO)) {
            break Ok(out);
        }
        break Err(e);
    };
    // SAFETY: F_SETFL takes an int of flags (the ones the file had), no pointer; `fd` is a
    // descriptor we own a copy of.
    unsafe { libc::fcntl(fd, libc::F_SETFL, fl) };
    res
}

/// Writes all of `data` to `fd`.
pub(super) fn put(fd: RawFd, data: &[u8]) -> std::io::Result<()> {
    let mut off = 0;
    while off < data.len() {
        // SAFETY: writes from a live slice's remainder.
        let n = unsafe { libc::write(fd, data[off..].as_ptr().cast(), data.len() - off) };
        if n <= 0 {
            return Err(std::io::Error::last_os_error());
        }
        off += n as usize;
    }
    Ok(())
}

/// The slave of master `m` (`TIOCGPTPEER`), not becoming our terminal.
pub(super) fn peer(m: RawFd, flags: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: TIOCGPTPEER takes open flags and returns a new descriptor.
    let r = unsafe { libc::ioctl(m, libc::TIOCGPTPEER as _, flags | libc::O_NOCTTY) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(super::super::owned(r))
}
