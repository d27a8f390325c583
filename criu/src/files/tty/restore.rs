//! Restoring terminals: the saved tty images, terminals reopened by path, and pty pairs made
//! by the engine with their saved settings and bytes.
// Unsafe code: opening /dev/ptmx and pty ioctls on descriptors we hold.
#![allow(unsafe_code)]

use super::*;
use std::sync::Mutex;

pub(super) fn unreachable_saved() -> Result<&'static Saved, RestoreError> {
    Err(bad(names::TTY_INFO, "not read"))
}

/// The most bytes one direction of a pty may hold on restore.
const MAX_TTY_DATA: usize = 1 << 20;

/// Reads `tty-info.img` and `tty-data.img` (either may be absent).
pub(super) fn read_saved(d: &ImageDir) -> Result<Saved, RestoreError> {
    let mut s = Saved::default();
    let path = d.file(names::TTY_INFO);
    if path.exists() {
        let name = names::TTY_INFO;
        let mut r = ImageReader::open_expect(path, magic::TTY_INFO).map_err(|e| img(name, e))?;
        while let Some(e) = r.read_entry::<TtyInfoEntry>().map_err(|e| img(name, e))? {
            if e.r#type == Ttytype::Pty as i32 && e.pty.is_none() {
                return Err(bad(name, format!("pty {} has no index", e.id)));
            }
            s.infos.insert(e.id, e);
        }
    }
    let path = d.file(names::TTY_DATA);
    if path.exists() {
        let name = names::TTY_DATA;
        let mut r = ImageReader::open_expect(path, magic::TTY_DATA).map_err(|e| img(name, e))?;
        while let Some(e) = r.read_entry::<TtyDataEntry>().map_err(|e| img(name, e))? {
            if e.data.len() > MAX_TTY_DATA || !s.infos.contains_key(&e.tty_id) {
                return Err(bad(name, format!("bad data for tty {}", e.tty_id)));
            }
            s.data.insert(e.tty_id, e.data);
        }
    }
    Ok(s)
}

/// A terminal reopened by path: criu's own (`/dev/tty`) or a shell job's pty slave.
#[derive(Debug)]
pub struct TtyFile {
    /// The path.
    pub path: std::ffi::CString,
    /// `open` flags.
    pub flags: i32,
    /// `/dev/tty` dumped as CRIU's `CTTY`: opened once the session has its terminal.
    pub ctty: bool,
    /// Opened with `O_NOCTTY` (a console: never a session's terminal by accident; a shell
    /// job's pty slave, opened without it, becomes its session leader's terminal again).
    pub noctty: bool,
}

impl TtyFile {
    fn open_flags(&self) -> i32 {
        if self.noctty {
            self.flags | libc::O_NOCTTY
        } else {
            self.flags
        }
    }
}

impl RestoreFile for TtyFile {
    fn fd_type(&self) -> FdTypes {
        FdTypes::Tty
    }

    fn after_ctty(&self) -> bool {
        self.ctty
    }

    fn per_task(&self) -> bool {
        self.ctty
    }

    fn make_in_task(&self, fd: i32) -> Result<Ends, TaskError> {
        // A member of a session opens `/dev/tty` once its leader made the pty the session's
        // terminal again (it runs on its own): until then the open fails with ENXIO. 5 s at
        // most.
        let mut tries = 0;
        loop {
            let flags = self.open_flags();
            match super::super::regular::open_seek(&self.path, flags, 0, fd) {
                Err(e) if self.ctty && e.errno == libc::ENXIO && tries < 5000 => {
                    tries += 1;
                    let t = libc::timespec {
                        tv_sec: 0,
                        tv_nsec: 1_000_000,
                    };
                    // SAFETY: nanosleep reads a live local timespec.
                    unsafe { libc::nanosleep(&t, std::ptr::null_mut()) };
                }
                r => return r.map(Ends::one),
            }
        }
    }

    fn make_in_engine(&self) -> Result<Vec<OwnedFd>, RestoreError> {
        super::super::regular::open_in_engine(&self.path, self.open_flags(), 0).map(|f| vec![f])
    }
}

/// A terminal whose other end was outside the tree, given by the caller with `--inherit-fd`
/// (CRIU's key `tty[RDEV:DEV]`, the dumped terminal's device numbers in hex): the engine
/// duplicates criu's descriptor and the task inherits it; the saved settings (termios,
/// window size) are put on it.
#[derive(Debug)]
pub struct InheritedTty {
    /// criu's descriptor.
    pub fd: i32,
    /// The key it was given for (in errors).
    pub key: String,
    /// `O_NONBLOCK`/`O_ASYNC` of the dumped file.
    pub flags: i32,
    /// The dumped terminal's settings.
    pub info: criu_images::pb::TtyInfoEntry,
}

impl RestoreFile for InheritedTty {
    fn fd_type(&self) -> FdTypes {
        FdTypes::Tty
    }

    fn made_by_engine(&self) -> bool {
        true
    }

    fn make_in_task(&self, _fd: i32) -> Result<Ends, TaskError> {
        // Made by the engine (made_by_engine).
        Err(TaskError {
            errno: libc::EINVAL,
            detail: self.fd as u64,
        })
    }

    fn make_in_engine(&self) -> Result<Vec<OwnedFd>, RestoreError> {
        let io = |what: &'static str| {
            let error = std::io::Error::last_os_error();
            RestoreError::Io {
                what: format!("{what} (--inherit-fd fd[{}]:{})", self.fd, self.key),
                error,
            }
        };
        // SAFETY: duplicates criu's descriptor the caller passed; the new one is ours alone.
        let d = unsafe { libc::fcntl(self.fd, libc::F_DUPFD_CLOEXEC, 3) };
        if d < 0 {
            return Err(io("duplicating the inherited terminal"));
        }
        // SAFETY: d is a new descriptor owned by nothing else.
        let f = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(d) };
        // SAFETY: isatty on a live descriptor.
        if unsafe { libc::isatty(d) } != 1 {
            return Err(io("the inherited descriptor is not a terminal"));
        }
        if let Some(t) = &self.info.termios {
            set_termios(d, libc::TCSETS, &KTermios::from_entry(t))
                .map_err(|_| io("the inherited terminal's settings"))?;
        }
        if let Some(w) = self.info.winsize.as_ref() {
            set_winsize(d, w).map_err(|_| io("the inherited terminal's window size"))?;
        }
        let fl = self.flags & (libc::O_NONBLOCK | libc::O_ASYNC);
        // SAFETY: fcntl on our own descriptor.
        if fl != 0 && unsafe { libc::fcntl(d, libc::F_SETFL, fl) } < 0 {
            return Err(io("the inherited terminal's flags"));
        }
        Ok(vec![f])
    }
}

/// The masters made for slaves whose master was outside the tree, with their index, until the
/// restore hands them over ([`take_orphan_masters`]).
static ORPHAN_MASTERS: Mutex<Vec<(u32, OwnedFd)>> = Mutex::new(Vec::new());

/// The masters made for slaves whose master was outside the tree (index, master), for the
/// `orphan-pts-master` notification.
pub fn take_orphan_masters() -> Vec<(u32, OwnedFd)> {
    std::mem::take(&mut *ORPHAN_MASTERS.lock().unwrap_or_else(|e| e.into_inner()))
}

/// A pty to make: both ends' saved state.
#[derive(Debug)]
pub struct PtyPair {
    /// The index (`/dev/pts/N`).
    pub index: u32,
    /// Its master was outside the tree (`--orphan-pts-master`): any index will do when the
    /// dumped one is taken, and a copy of the master is kept for the notification.
    pub orphan: bool,
    /// The master's entry.
    pub master: TtyInfoEntry,
    /// The slave's entry (absent: the slave was not seen).
    pub slave: Option<TtyInfoEntry>,
    /// Bytes waiting to be read from the master.
    pub to_master: Vec<u8>,
    /// Bytes waiting to be read from the slave.
    pub to_slave: Vec<u8>,
}

/// One end of a pty.
#[derive(Debug)]
pub struct PtyEnd {
    /// The pty.
    pub pair: Arc<PtyPair>,
    /// The master end (else the slave).
    pub master: bool,
}

/// The most masters opened while looking for a pty index.
const MAX_PTY_TRIES: u32 = 4096;

impl PtyPair {
    fn make(&self) -> Result<Vec<OwnedFd>, RestoreError> {
        // A slave bound elsewhere in the restored mount namespace exists already.
        let made = crate::namespaces::mnt::take_pts_master(self.index);
        let m = match made.map_or_else(|| self.open_index(), Ok) {
            Ok(m) => m,
            Err(RestoreError::FileState { .. }) if self.orphan => {
                // SAFETY: opens a new master from a static path.
                let r = unsafe {
                    libc::open(
                        c"/dev/ptmx".as_ptr(),
                        libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
                    )
                };
                if r < 0 {
                    return Err(super::super::sys("opening /dev/ptmx"));
                }
                super::super::owned(r)
            }
            Err(e) => return Err(e),
        };
        let ends = self.set_up(m)?;
        if self.orphan {
            let copy = ends[0].try_clone().map_err(|e| RestoreError::Io {
                what: "keeping an orphan pty master".into(),
                error: e,
            })?;
            let index = get_int(copy.as_raw_fd(), libc::TIOCGPTN).unwrap_or(-1) as u32;
            tracing::info!(
                index,
                was = self.index,
                "a new master for an orphan pty slave"
            );
            ORPHAN_MASTERS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((index, copy));
        }
        Ok(ends)
    }

    /// A master of the dumped index (the kernel hands out the lowest free one: masters are
    /// opened until it comes).
    fn open_index(&self) -> Result<OwnedFd, RestoreError> {
        let mut extra = Vec::new();
        let m = loop {
            if extra.len() as u32 > self.index.min(MAX_PTY_TRIES) {
                return Err(RestoreError::FileState {
                    kind: "tty",
                    what: format!("pty index {} is in use", self.index),
                });
            }
            // SAFETY: opens a new master from a static path.
            let r = unsafe {
                libc::open(
                    c"/dev/ptmx".as_ptr(),
                    libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
                )
            };
            if r < 0 {
                return Err(super::super::sys("opening /dev/ptmx"));
            }
            let m = super::super::owned(r);
            match get_int(r, libc::TIOCGPTN) {
                Some(i) if i as u32 == self.index => break m,
                Some(i) if i as u32 > self.index => {
                    return Err(RestoreError::FileState {
                        kind: "tty",
                        what: format!("pty index {} is in use", self.index),
                    });
                }
                Some(_) => extra.push(m),
                None => return Err(super::super::sys("TIOCGPTN")),
            }
        };
        drop(extra);
        Ok(m)
    }

    /// Unlocks master `m`, opens its slave, and sets both up as dumped.
    fn set_up(&self, m: OwnedFd) -> Result<Vec<OwnedFd>, RestoreError> {
        let sys = |what: &'static str| {
            move |e: std::io::Error| RestoreError::Sys {
                what,
                errno: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            }
        };
        let mf = m.as_raw_fd();
        let unlock: libc::c_int = 0;
        // SAFETY: TIOCSPTLCK reads one int from a live local.
        if unsafe { libc::ioctl(mf, libc::TIOCSPTLCK, &unlock as *const libc::c_int) } != 0 {
            return Err(super::super::sys("TIOCSPTLCK"));
        }
        let s = peer(mf, libc::O_RDWR | libc::O_CLOEXEC).map_err(sys("TIOCGPTPEER"))?;
        let sf = s.as_raw_fd();
        for (f, info) in [(mf, Some(&self.master)), (sf, self.slave.as_ref())] {
            let Some(info) = info else { continue };
            if let Some(t) = &info.termios {
                set_termios(f, libc::TCSETS, &KTermios::from_entry(t)).map_err(sys("TCSETS"))?;
            }
            if let Some(t) = &info.termios_locked {
                let k = KTermios::from_entry(t);
                if k.iflag | k.oflag | k.cflag | k.lflag != 0 {
                    set_termios(f, libc::TIOCSLCKTRMIOS, &k).map_err(sys("TIOCSLCKTRMIOS"))?;
                }
            }
        }
        if let Some(w) = self.master.winsize.as_ref() {
            set_winsize(mf, w).map_err(|_| super::super::sys("TIOCSWINSZ"))?;
        }
        put(sf, &self.to_master).map_err(sys("refilling a pty (master side)"))?;
        put(mf, &self.to_slave).map_err(sys("refilling a pty (slave side)"))?;
        let int_ioctl = |f: RawFd, req: libc::Ioctl, v: libc::c_int, what: &'static str| {
            // SAFETY: the request reads one int from a live local.
            if unsafe { libc::ioctl(f, req as _, &v as *const libc::c_int) } != 0 {
                return Err(super::super::sys(what));
            }
            Ok(())
        };
        if self.master.packet_mode {
            int_ioctl(mf, libc::TIOCPKT, 1, "TIOCPKT")?;
        }
        if self.master.locked {
            int_ioctl(mf, libc::TIOCSPTLCK, 1, "TIOCSPTLCK")?;
        }
        if self.slave.as_ref().is_some_and(|s| s.exclusive) {
            // SAFETY: TIOCEXCL takes no argument.
            if unsafe { libc::ioctl(sf, libc::TIOCEXCL) } != 0 {
                return Err(super::super::sys("TIOCEXCL"));
            }
        }
        Ok(vec![m, s])
    }
}

impl RestoreFile for PtyEnd {
    fn fd_type(&self) -> FdTypes {
        FdTypes::Tty
    }

    fn group(&self) -> Option<u64> {
        Some(u64::from(self.pair.index))
    }

    fn end(&self) -> usize {
        usize::from(!self.master)
    }

    fn made_by_engine(&self) -> bool {
        true
    }

    /// The slave of a pty that was a session's terminal.
    fn ctty(&self) -> Option<(i32, i32)> {
        let m = &self.pair.master;
        (!self.master && m.sid != 0).then_some((m.sid as i32, m.pgrp as i32))
    }

    fn make_in_task(&self, fd: i32) -> Result<Ends, TaskError> {
        Err(TaskError {
            errno: libc::ENOTSUP,
            detail: fd as u64,
        })
    }

    fn make_in_engine(&self) -> Result<Vec<OwnedFd>, RestoreError> {
        self.pair.make()
    }
}
