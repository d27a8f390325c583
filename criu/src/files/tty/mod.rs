//! Terminals (`TTY` entries, each pointing at a `tty-info.img` entry; unread bytes in
//! `tty-data.img`).
//!
//! Pseudo-terminals: a `/dev/ptmx` master and its `/dev/pts/N` slave each get one
//! `tty-info.img` entry per pty (keyed by end and index) with the termios and locked termios,
//! window size, packet mode and lock state (master), exclusive mode (slave), the session and
//! foreground group the pty is the controlling terminal of, and the pty index. When the master
//! is in the tree, the bytes waiting in each direction are read (the master's copy is taken
//! with `pidfd_getfd`, the slave reached with `TIOCGPTPEER`) and written back at once through
//! the other end, so the tree keeps them; this is exact when the line discipline passes bytes
//! unchanged (raw mode). `c_cc` is stored as CRIU 4.2 stores it: the 19 control characters
//! packed four to a `u32`, little-endian.
//!
//! Restore: both ends of a pty are one object made by the engine ([`RestoreFile::group`] is the
//! index, end 0 the master, 1 the slave): `/dev/ptmx` is opened until the kernel hands out the
//! dumped index (it gives the lowest free one; the extra masters are closed), the slave is
//! opened with `TIOCGPTPEER`, settings are set, the saved bytes written, then the lock and
//! exclusive mode. A slave whose master is outside the tree is dumped only with `--shell-job`
//! (reopened by path, `/dev/pts/N`) or `--orphan-pts-master` (a new pty; its master goes to the
//! `orphan-pts-master` notification, [`take_orphan_masters`]). `/dev/tty` of the leader or a
//! member of a session whose terminal is a pty of the tree is CRIU's `CTTY` terminal, opened by
//! each holder once the session has its terminal again. `/dev/console` and virtual consoles
//! are CRIU's `CONSOLE` and `VT` terminals, reopened by path; serial lines are refused by
//! name, and other terminals need `--shell-job` (the regular kind records their path). CRIU's
//! `TTY` entries without a pty restore as criu's own terminal (`/dev/tty`) with `--shell-job`.
#![allow(unsafe_code)]

mod restore;
mod termios;

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;

use criu_images::pb::{
    FdTypes, FileEntry, TtyDataEntry, TtyFileEntry, TtyInfoEntry, TtyPtyEntry, Ttytype,
    WinsizeEntry,
};
use criu_images::{ImageDir, ImageReader, ImageWriter, magic, names};

use super::{DumpFd, Ends, FileKind, ImageCtx, RestoreFile, TaskError, fown_zero};
use crate::dump::error::DumpError;
use crate::restore::error::RestoreError;
use crate::restore::images::entry::{bad, img, kind_entry};
pub use restore::take_orphan_masters;
use restore::{PtyEnd, PtyPair, TtyFile, read_saved, unreachable_saved};
use termios::*;

/// The terminal kind: what the dump met (infos, data) or the restore read.
#[derive(Debug, Default)]
pub struct Tty {
    /// Dump: `tty-info.img` entries, with their key (master, index).
    infos: Vec<((bool, u32), TtyInfoEntry)>,
    /// Dump: `tty-data.img` entries.
    data: Vec<TtyDataEntry>,
    /// Dump: slaves met, for the check that their master is in the tree (pid, fd, index).
    slaves: Vec<(i32, i32, u32)>,
    /// Dump: the path and mode of each `TTY` entry, by file id.
    paths: Vec<(u32, String, u32)>,
    /// Dump: `--shell-job`.
    shell_job: bool,
    /// Dump: `--orphan-pts-master`.
    orphan: bool,
    /// Dump: holders of `/dev/tty` (pid, fd, session).
    cttys: Vec<(i32, i32, i32)>,
    /// Restore: `tty-info.img` by id and `tty-data.img` by tty id, read when first needed.
    saved: Option<Saved>,
    /// Restore: the pairs made so far, by index (one state shared by both ends).
    pairs: HashMap<u32, Arc<PtyPair>>,
}

/// What the restore read from the tty images.
#[derive(Debug, Default)]
struct Saved {
    infos: HashMap<u32, TtyInfoEntry>,
    data: HashMap<u32, Vec<u8>>,
}

/// The key of the one `tty-info.img` entry of `/dev/tty` among the ptys' (master, index).
const CTTY_KEY: (bool, u32) = (true, u32::MAX);

/// Major of `/dev/tty`, `/dev/console`, `/dev/ptmx`.
const TTYAUX_MAJOR: u32 = 5;
/// Minor of `/dev/ptmx`.
const PTMX_MINOR: u32 = 2;
/// First major of pty slaves (`/dev/pts/N`; 8 majors of 256 minors).
const PTS_MAJOR: u32 = 136;

/// What a character device is, as far as terminals go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Term {
    /// Not a terminal.
    No,
    /// A pty master (`/dev/ptmx`).
    Master,
    /// A pty slave, with its index.
    Slave(u32),
    /// `/dev/console`.
    Console,
    /// A virtual console (`/dev/ttyN`, major 4, minors below 64).
    Vt,
    /// A serial line (`/dev/ttySN`, major 4 from minor 64).
    Serial,
    /// Another terminal (`/dev/tty`).
    Other,
}

/// Major of virtual consoles and the first serial lines.
const TTY_MAJOR: u32 = 4;
/// First minor of serial lines under [`TTY_MAJOR`].
const SERIAL_MINOR: u32 = 64;
/// Minor of `/dev/console` under [`TTYAUX_MAJOR`].
const CONSOLE_MINOR: u32 = 1;

fn terminal(fd: &DumpFd<'_>) -> Term {
    if !fd.meta.file_type().is_char_device() {
        return Term::No;
    }
    let rdev = fd.meta.rdev();
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    if major == TTYAUX_MAJOR && minor == PTMX_MINOR {
        Term::Master
    } else if (PTS_MAJOR..PTS_MAJOR + 8).contains(&major) {
        Term::Slave((major - PTS_MAJOR) * 256 + minor)
    } else if major == TTYAUX_MAJOR && minor == CONSOLE_MINOR {
        Term::Console
    } else if major == TTY_MAJOR && minor < SERIAL_MINOR {
        Term::Vt
    } else if major == TTY_MAJOR {
        Term::Serial
    } else if major == TTYAUX_MAJOR {
        Term::Other
    } else {
        Term::No
    }
}

use libc::{TIOCGEXCL, TIOCGPKT, TIOCGPTLCK};

impl Tty {
    fn info_id(&self, key: (bool, u32)) -> Option<u32> {
        self.infos
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, i)| i.id)
    }

    /// `/dev/tty` (the holder's controlling terminal) as CRIU's `CTTY` terminal: one
    /// `tty-info.img` entry for every such descriptor, reopened by path once the session has its
    /// terminal again (by the leader, or a member of the session: it waits for the leader);
    /// [`FileKind::finish`] checks that terminal is a pty of the tree.
    fn dump_ctty(&mut self, fd: &DumpFd<'_>, id: u32) -> Result<FileEntry, DumpError> {
        let (pid, n) = (fd.pid, fd.fd);
        // SAFETY: getsid takes a pid, no memory.
        let sid = unsafe { libc::getsid(pid) };
        let info = match self.info_id(CTTY_KEY) {
            Some(i) => i,
            None => {
                let i = self.infos.len() as u32 + 1;
                let entry = TtyInfoEntry {
                    id: i,
                    r#type: Ttytype::Ctty as i32,
                    locked: false,
                    exclusive: false,
                    packet_mode: false,
                    sid: 0,
                    pgrp: 0,
                    rdev: fd.meta.rdev() as u32,
                    termios: None,
                    termios_locked: None,
                    winsize: None,
                    pty: None,
                    dev: Some(fd.meta.dev() as u32),
                    uid: Some(fd.meta.uid()),
                    gid: Some(fd.meta.gid()),
                };
                self.infos.push((CTTY_KEY, entry));
                i
            }
        };
        tracing::debug!(pid, fd = n, sid, "/dev/tty (controlling terminal)");
        self.cttys.push((pid, n, sid));
        Ok(self.entry(fd, id, info, "/dev/tty".to_string()))
    }

    /// `/dev/console` or a virtual console (CRIU's `CONSOLE` and `VT` terminals): one
    /// `tty-info.img` entry per device, with its settings; reopened by path on restore, as the
    /// character device it is.
    fn dump_device(
        &mut self,
        fd: &DumpFd<'_>,
        id: u32,
        term: Term,
    ) -> Result<FileEntry, DumpError> {
        let (pid, n, name) = (fd.pid, fd.fd, fd.name);
        let rdev = fd.meta.rdev();
        // A key of its own among the ptys' (master, index): no pty index comes near.
        let key = (
            false,
            0x8000_0000 | (libc::minor(rdev) & 0xffff) | (libc::major(rdev) << 16),
        );
        let info = match self.info_id(key) {
            Some(i) => i,
            None => {
                let f = super::socket::steal(pid, n).map_err(|e| DumpError::FileState {
                    kind: "tty",
                    what: format!("fd {n} of {pid} ({name}): {e}"),
                })?;
                let i = self.info(fd, f.as_raw_fd(), key)?;
                if let Some((_, e)) = self.infos.iter_mut().find(|(k, _)| *k == key) {
                    e.r#type = if term == Term::Console {
                        Ttytype::Console as i32
                    } else {
                        Ttytype::Vt as i32
                    };
                    e.pty = None;
                }
                i
            }
        };
        tracing::debug!(pid, fd = n, name, "console terminal");
        Ok(self.entry(fd, id, info, name.to_string()))
    }

    /// Records the path `name` of file `id` (its `REG` entry, written by [`Self::finish`]) and
    /// makes its `TTY` entry on `tty-info.img` entry `info`.
    fn entry(&mut self, fd: &DumpFd<'_>, id: u32, info: u32, name: String) -> FileEntry {
        self.paths.push((id, name, fd.meta.mode()));
        FileEntry {
            r#type: FdTypes::Tty as i32,
            id,
            tty: Some(TtyFileEntry {
                id,
                tty_info_id: info,
                flags: fd.flags(),
                fown: fown_zero(),
                regf_id: None,
            }),
            ..FileEntry::default()
        }
    }

    /// The `tty-info.img` entry of one end of a pty, read from the tree's copy `f`.
    fn info(&mut self, fd: &DumpFd<'_>, f: RawFd, key: (bool, u32)) -> Result<u32, DumpError> {
        if let Some(id) = self.info_id(key) {
            return Ok(id);
        }
        let (master, index) = key;
        let (pid, n) = (fd.pid, fd.fd);
        let err = |what: &str| {
            let what = format!("{what} (tty fd {n} of {pid})");
            move |source| DumpError::File { what, source }
        };
        let termios = get_termios(f, libc::TCGETS).map_err(err("TCGETS"))?;
        let locked = get_termios(f, libc::TIOCGLCKTRMIOS).unwrap_or_default();
        let mut ws: libc::winsize = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one winsize into a live local.
        if unsafe { libc::ioctl(f, libc::TIOCGWINSZ, &mut ws as *mut libc::winsize) } != 0 {
            return Err(err("TIOCGWINSZ")(std::io::Error::last_os_error()));
        }
        let (mut sid, mut pgrp) = (0, 0);
        if master {
            // Asked of the master, these name the slave's session whoever asks.
            let mut v: libc::pid_t = 0;
            // SAFETY: TIOCGSID/TIOCGPGRP write one pid into a live local.
            if unsafe { libc::ioctl(f, libc::TIOCGSID, &mut v as *mut libc::pid_t) } == 0 {
                sid = v as u32;
                // SAFETY: TIOCGPGRP writes one pid into the live local `v`.
                if unsafe { libc::ioctl(f, libc::TIOCGPGRP, &mut v as *mut libc::pid_t) } == 0 {
                    pgrp = v as u32;
                }
            }
        }
        let id = self.infos.len() as u32 + 1;
        let entry = TtyInfoEntry {
            id,
            r#type: Ttytype::Pty as i32,
            locked: master && get_int(f, TIOCGPTLCK).unwrap_or(0) != 0,
            exclusive: !master && get_int(f, TIOCGEXCL).unwrap_or(0) != 0,
            packet_mode: master && get_int(f, TIOCGPKT).unwrap_or(0) != 0,
            sid,
            pgrp,
            rdev: fd.meta.rdev() as u32,
            termios: Some(termios.entry()),
            termios_locked: Some(locked.entry()),
            winsize: Some(WinsizeEntry {
                ws_row: u32::from(ws.ws_row),
                ws_col: u32::from(ws.ws_col),
                ws_xpixel: u32::from(ws.ws_xpixel),
                ws_ypixel: u32::from(ws.ws_ypixel),
            }),
            pty: Some(TtyPtyEntry { index }),
            dev: Some(fd.meta.dev() as u32),
            uid: Some(fd.meta.uid()),
            gid: Some(fd.meta.gid()),
        };
        self.infos.push((key, entry));
        Ok(id)
    }

    /// The bytes waiting in both directions of the pty whose master the tree holds at `m`,
    /// written back at once (the tree keeps them). `pkt`: packet mode, off while reading.
    fn data(&mut self, fd: &DumpFd<'_>, m: RawFd, index: u32, pkt: bool) -> Result<(), DumpError> {
        let (pid, n) = (fd.pid, fd.fd);
        let err = |what: &str| {
            let what = format!("{what} (pty master fd {n} of {pid}, index {index})");
            move |source| DumpError::File { what, source }
        };
        // A locked pty (its slave never opened, or locked again) opens no slave: unlocked for
        // the moment it takes to open one (the tree is frozen), then locked again.
        let locked = get_int(m, TIOCGPTLCK).unwrap_or(0) != 0;
        let set_lock = |on: libc::c_int| {
            // SAFETY: TIOCSPTLCK reads one int from a live local.
            unsafe { libc::ioctl(m, libc::TIOCSPTLCK, &on as *const libc::c_int) }
        };
        if locked && set_lock(0) != 0 {
            return Err(err("unlocking")(std::io::Error::last_os_error()));
        }
        let s = peer(m, libc::O_RDWR);
        if locked && set_lock(1) != 0 {
            return Err(err("locking again")(std::io::Error::last_os_error()));
        }
        let s = s.map_err(err("TIOCGPTPEER"))?;
        let s = s.as_raw_fd();
        let set_pkt = |on: libc::c_int| {
            // SAFETY: TIOCPKT reads one int from a live local.
            unsafe { libc::ioctl(m, libc::TIOCPKT, &on as *const libc::c_int) };
        };
        if pkt {
            set_pkt(0);
        }
        let to_master = drain(m);
        if pkt {
            set_pkt(1);
        }
        let to_master = to_master.map_err(err("reading the master"))?;
        put(s, &to_master).map_err(err("writing back to the slave"))?;
        let to_slave = drain(s).map_err(err("reading the slave"))?;
        put(m, &to_slave).map_err(err("writing back to the master"))?;
        let mid = self.info_id((true, index)).unwrap_or(0);
        let sid = match self.info_id((false, index)) {
            Some(id) => id,
            None => {
                // The slave is not open in the tree: its settings still belong to the pty.
                let st = std::fs::metadata(format!("/proc/self/fd/{s}")).map_err(err("stat"))?;
                let dfd = DumpFd { meta: &st, ..*fd };
                self.info(&dfd, s, (false, index))?
            }
        };
        for (id, bytes) in [(mid, to_master), (sid, to_slave)] {
            if !bytes.is_empty() {
                self.data.push(TtyDataEntry {
                    tty_id: id,
                    data: bytes,
                });
            }
        }
        Ok(())
    }
}

impl FileKind for Tty {
    fn fd_type(&self) -> FdTypes {
        FdTypes::Tty
    }

    /// Takes ptys (both ends) and the other terminals it refuses (any without `--shell-job`;
    /// a shell job's terminal is left to the regular kind, which records its path).
    fn claims(&self, fd: &DumpFd<'_>) -> bool {
        fd.name.starts_with('/')
            && match terminal(fd) {
                Term::Master | Term::Slave(_) | Term::Console | Term::Vt => true,
                Term::Other | Term::Serial => !fd.shell_job,
                Term::No => false,
            }
    }

    fn dump(&mut self, fd: &DumpFd<'_>, id: u32) -> Result<FileEntry, DumpError> {
        let (pid, n, name) = (fd.pid, fd.fd, fd.name);
        self.shell_job = fd.shell_job;
        self.orphan = fd.orphan_pts_master;
        let term = terminal(fd);
        if term == Term::Other && fd.meta.rdev() == libc::makedev(TTYAUX_MAJOR, 0) {
            return self.dump_ctty(fd, id);
        }
        if term == Term::Other {
            let what = format!(
                "fd {n} of {pid} is the terminal {name}: dump a shell job with --shell-job"
            );
            return Err(DumpError::FileState { kind: "tty", what });
        }
        if term == Term::Serial {
            let what = format!(
                "fd {n} of {pid} is the serial line {name} (serial terminals are not dumped; \
                 a shell job's terminal is reopened by path with --shell-job)"
            );
            return Err(DumpError::FileState { kind: "tty", what });
        }
        if let Term::Console | Term::Vt = term {
            return self.dump_device(fd, id, term);
        }
        let f = super::socket::steal(pid, n).map_err(|e| DumpError::FileState {
            kind: "tty",
            what: format!("fd {n} of {pid} ({name}): {e}"),
        })?;
        let f = f.as_raw_fd();
        let key = match term {
            Term::Slave(index) => {
                self.slaves.push((pid, n, index));
                (false, index)
            }
            _ => {
                let index = get_int(f, libc::TIOCGPTN).ok_or_else(|| DumpError::File {
                    what: format!("TIOCGPTN (pty master fd {n} of {pid})"),
                    source: std::io::Error::last_os_error(),
                })? as u32;
                (true, index)
            }
        };
        let first = self.info_id(key).is_none();
        let info = self.info(fd, f, key)?;
        if key.0 && first {
            let pkt = self.infos.iter().any(|(k, i)| *k == key && i.packet_mode);
            self.data(fd, f, key.1, pkt)?;
        }
        Ok(self.entry(fd, id, info, name.to_string()))
    }

    /// A slave whose master is not in the tree needs `--shell-job` (it is reopened by path).
    /// Each `TTY` entry gets a `REG` entry with its path (`regf_id`), as CRIU writes them.
    fn finish(
        &mut self,
        entries: &mut Vec<FileEntry>,
        _ext: Option<&[u32]>,
    ) -> Result<(), DumpError> {
        for &(pid, fd, index) in &self.slaves {
            if !self.shell_job && !self.orphan && self.info_id((true, index)).is_none() {
                return Err(DumpError::FileState {
                    kind: "tty",
                    what: format!(
                        "fd {fd} of {pid} is /dev/pts/{index}, whose master is outside the tree: \
                         dump a shell job with --shell-job (or --orphan-pts-master)"
                    ),
                });
            }
        }
        for &(pid, fd, sid) in &self.cttys {
            let has_pty = self
                .infos
                .iter()
                .any(|(k, i)| k.0 && *k != CTTY_KEY && i.sid == sid as u32);
            if !has_pty {
                return Err(DumpError::FileState {
                    kind: "tty",
                    what: format!(
                        "fd {fd} of {pid} is /dev/tty, and its session's terminal is not a pty                          whose master the tree holds"
                    ),
                });
            }
        }
        let mut next = entries.iter().map(|e| e.id).max().unwrap_or(0);
        for (id, name, mode) in &self.paths {
            next += 1;
            let Some(t) = entries
                .iter_mut()
                .find(|e| e.id == *id)
                .and_then(|e| e.tty.as_mut())
            else {
                continue;
            };
            t.regf_id = Some(next);
            let reg = criu_images::pb::RegFileEntry {
                id: next,
                flags: t.flags,
                pos: 0,
                fown: fown_zero(),
                name: name.clone(),
                mode: Some(*mode),
                ..Default::default()
            };
            entries.push(FileEntry {
                r#type: FdTypes::Reg as i32,
                id: next,
                reg: Some(reg),
                ..FileEntry::default()
            });
        }
        Ok(())
    }

    fn write(&self, dir: &Path) -> Result<(), DumpError> {
        if !self.infos.is_empty() {
            let mut w = ImageWriter::create_in(dir, names::TTY_INFO, magic::TTY_INFO)?;
            for (_, i) in &self.infos {
                w.write_entry(i)?;
            }
            w.finish()?;
        }
        if !self.data.is_empty() {
            let mut w = ImageWriter::create_in(dir, names::TTY_DATA, magic::TTY_DATA)?;
            for d in &self.data {
                w.write_entry(d)?;
            }
            w.finish()?;
        }
        Ok(())
    }

    fn parse(
        &mut self,
        img: &ImageCtx<'_>,
        e: &FileEntry,
        fd: i32,
    ) -> Result<Arc<dyn RestoreFile>, RestoreError> {
        let t = kind_entry(&e.tty, fd, "tty")?;
        if self.saved.is_none() {
            self.saved = Some(read_saved(img.dir)?);
        }
        let saved = self
            .saved
            .as_ref()
            .map_or_else(|| unreachable_saved(), Ok)?;
        if saved
            .infos
            .get(&t.tty_info_id)
            .is_some_and(|i| i.r#type == Ttytype::Ctty as i32)
        {
            return Ok(Arc::new(TtyFile {
                path: c"/dev/tty".into(),
                flags: t.flags as i32,
                ctty: true,
                noctty: false,
            }));
        }
        if let Some(i) = saved
            .infos
            .get(&t.tty_info_id)
            .filter(|i| i.r#type == Ttytype::Console as i32 || i.r#type == Ttytype::Vt as i32)
        {
            let (major, minor) = (
                libc::major(u64::from(i.rdev)),
                libc::minor(u64::from(i.rdev)),
            );
            let path = match (major, minor) {
                (TTYAUX_MAJOR, CONSOLE_MINOR) => "/dev/console".to_string(),
                (TTY_MAJOR, m) if m < SERIAL_MINOR => format!("/dev/tty{m}"),
                _ => {
                    return Err(bad(
                        names::TTY_INFO,
                        format!("console terminal id {} with device {major}:{minor}", i.id),
                    ));
                }
            };
            let path = std::ffi::CString::new(path).map_err(|_| bad(names::TTY_INFO, "path"))?;
            return Ok(Arc::new(TtyFile {
                path,
                flags: t.flags as i32,
                ctty: false,
                noctty: true,
            }));
        }
        let pty = saved
            .infos
            .get(&t.tty_info_id)
            .filter(|i| i.r#type == Ttytype::Pty as i32)
            .and_then(|i| Some((i, i.pty.as_ref()?.index)));
        let Some((info, index)) = pty else {
            if !img.opts.shell_job {
                return Err(RestoreError::FileState {
                    kind: "tty",
                    what: format!("terminal at fd {fd} without --shell-job"),
                });
            }
            return Ok(Arc::new(TtyFile {
                path: c"/dev/tty".into(),
                flags: t.flags as i32,
                ctty: false,
                noctty: false,
            }));
        };
        let master = libc::major(u64::from(info.rdev)) == TTYAUX_MAJOR;
        let find = |m: bool| {
            saved.infos.values().find(|i| {
                i.r#type == Ttytype::Pty as i32
                    && i.pty.as_ref().is_some_and(|p| p.index == index)
                    && (libc::major(u64::from(i.rdev)) == TTYAUX_MAJOR) == m
            })
        };
        let orphan = img.opts.orphan_pts_master;
        let mi = match find(true) {
            // `--orphan-pts-master`: a new pty whose master goes to the `orphan-pts-master`
            // notification, with the slave's settings on both ends.
            None if orphan && !master => Some(info),
            m => m,
        };
        let key = format!("tty[{:x}:{:x}]", info.rdev, info.dev.unwrap_or(0));
        if mi.is_none()
            && let Some(ifd) = img.opts.inherited(&key)
        {
            // `--inherit-fd fd[N]:tty[RDEV:DEV]`: the caller's terminal stands for it.
            return Ok(Arc::new(restore::InheritedTty {
                fd: ifd,
                key,
                flags: t.flags as i32,
                info: info.clone(),
            }));
        }
        let Some(mi) = mi else {
            // A shell job's terminal (the dump asked for --shell-job): reopened by path, as
            // the regular kind reopens files.
            let path = std::ffi::CString::new(format!("/dev/pts/{index}"))
                .map_err(|_| bad(names::TTY_INFO, "pty path"))?;
            return Ok(Arc::new(TtyFile {
                path,
                flags: t.flags as i32,
                ctty: false,
                noctty: false,
            }));
        };
        let pair = match self.pairs.get(&index) {
            Some(p) => p.clone(),
            None => {
                let si = find(false);
                let orphan = find(true).is_none();
                let mut mi = mi.clone();
                if orphan {
                    (mi.sid, mi.pgrp, mi.locked, mi.packet_mode) = (0, 0, false, false);
                }
                let p = Arc::new(PtyPair {
                    index,
                    orphan,
                    master: mi.clone(),
                    slave: si.cloned(),
                    to_master: if orphan {
                        Vec::new()
                    } else {
                        saved.data.get(&mi.id).cloned().unwrap_or_default()
                    },
                    to_slave: si
                        .and_then(|s| saved.data.get(&s.id).cloned())
                        .unwrap_or_default(),
                });
                self.pairs.insert(index, p.clone());
                p
            }
        };
        Ok(Arc::new(PtyEnd { pair, master }))
    }
}
