//! Files of a task: the executable, mapped files, open descriptors, cwd and root, as CRIU's
//! `files.img` entries (`REG` entries for regular files, directories and character devices such
//! as `/dev/null`), `fdinfo-N.img`, and ghost files for files deleted while open.
//!
//! Ids are handed out in discovery order from 1, as CRIU does: the executable first, then mapped
//! files (one id per file, shared by its mappings), then descriptors (one id per open file
//! description: `dup`ed descriptors share it), then cwd and root.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use criu_images::pb::{
    EventfdFileEntry, EventpollFileEntry, EventpollTfdEntry, FdTypes, FdinfoEntry, FileEntry,
    FileLockEntry, FownEntry, GhostChunkEntry, GhostFileEntry, PipeDataEntry, PipeEntry,
    RegFileEntry, RemapFilePathEntry, RemapType, SignalfdEntry, TimerfdEntry, Timeval,
};
use criu_images::{ImageWriter, magic, names};

use super::DumpError;
use super::proc::{self, FdInfo, MapLine};

/// CRIU writes ghost files of at least this size in chunks.
const GHOST_CHUNKS_THRESH: u64 = 3 * 4096;

/// What a file was opened as, for the key that dedups mapped files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FileKey {
    dev: u64,
    ino: u64,
    flags: u32,
}

/// An open file description met by the dump: `(pid, fd, file id)`.
type OpenDesc = (i32, i32, u32);

/// A ghost file to write: a file deleted while open, saved with its content.
#[derive(Debug)]
struct Ghost {
    id: u32,
    orig_id: u32,
    /// Where criu can read it (`/proc/PID/fd/N` or `/proc/PID/map_files/...`).
    source: PathBuf,
    meta: std::fs::Metadata,
}

/// The file table being built for one dump.
#[derive(Debug, Default)]
pub struct FileTable {
    entries: Vec<FileEntry>,
    mapped: HashMap<FileKey, u32>,
    /// Mapped files by what `/proc/PID/maps` says of them (device, inode, path) and the open
    /// flags: the id they got, so that the areas of a tree that map one file stat it once.
    mapped_by_maps: HashMap<(u32, u32, u64, u32, String), u32>,
    ghosts: Vec<Ghost>,
    ghost_by_inode: HashMap<(u64, u64), u32>,
    remaps: Vec<RemapFilePathEntry>,
    ghost_limit: u64,
    pipes_seen: Vec<u64>,
    /// Open file descriptions met so far, by (device, inode): `(pid, fd, file id)`, compared
    /// with kcmp so that a description shared by descriptors (dup, or inherited across fork)
    /// gets one id.
    seen: HashMap<(u64, u64), Vec<OpenDesc>>,
    /// `(pipe inode, pipe size, waiting bytes)` of pipes holding data.
    pipe_data: Vec<(u32, u32, Vec<u8>)>,
    /// Sockets of the tree (unix, netlink, packet).
    sockets: crate::files::sockets::SocketDump,
    /// File locks held by the tree, as `filelocks.img` lists them.
    locks: Vec<FileLockEntry>,
    /// What makes each of `locks` one lock (flock/OFD: open file; POSIX: process and inode).
    lock_keys: std::collections::HashSet<(u32, i32, u64, u32, i64, i64)>,
}

/// CRIU's lock kinds (`file_lock_entry.flag`).
pub mod lock_kind {
    /// fcntl(F_SETLK) record locks, owned by the process.
    pub const POSIX: u32 = 1;
    /// flock(2) locks, owned by the open file.
    pub const FLOCK: u32 = 2;
    /// Open file description record locks (F_OFD_SETLK).
    pub const OFD: u32 = 4;
}

fn fown_zero() -> FownEntry {
    FownEntry {
        uid: 0,
        euid: 0,
        signum: 0,
        pid_type: 0,
        pid: 0,
    }
}

/// A socket module's error as a dump error.
fn socket_err(e: crate::files::socket::SocketError) -> DumpError {
    use crate::files::socket::SocketError as S;
    match e {
        S::Unsupported { what } => DumpError::Unsupported { what },
        S::Sys { what, source } => DumpError::File { what, source },
        other => DumpError::Unsupported {
            what: other.to_string(),
        },
    }
}

/// Strips the ` (deleted)` suffix the kernel appends to unlinked files' paths.
fn split_deleted(name: &str) -> (&str, bool) {
    match name.strip_suffix(" (deleted)") {
        Some(n) => (n, true),
        None => (name, false),
    }
}

impl FileTable {
    /// An empty table; deleted files larger than `ghost_limit` bytes are refused, as CRIU does.
    pub fn new(ghost_limit: u64) -> FileTable {
        FileTable {
            ghost_limit,
            ..FileTable::default()
        }
    }

    fn next_id(&self) -> u32 {
        self.entries.len() as u32 + 1
    }

    /// All `files.img` entries, in id order.
    pub fn entries(&self) -> &[FileEntry] {
        &self.entries
    }

    /// The file locks held by the tree (see [`FileTable::add_fds`]).
    pub fn locks(&self) -> &[FileLockEntry] {
        &self.locks
    }

    /// Notes the locks descriptor `fd` (file id `id`) of `pid` holds, each lock once: a flock or
    /// OFD lock is its open file's, however many descriptors share it; a POSIX lock is the
    /// process's, whichever of its descriptors on the file shows it.
    fn note_locks(
        &mut self,
        pid: i32,
        fd: i32,
        id: u32,
        ino: u64,
        locks: &[super::proc::FdLock],
    ) -> Result<(), DumpError> {
        for l in locks {
            let kind = match l.class.as_str() {
                "POSIX" => lock_kind::POSIX,
                "FLOCK" => lock_kind::FLOCK,
                "OFDLCK" => lock_kind::OFD,
                other => {
                    return Err(DumpError::Unsupported {
                        what: format!(
                            "fd {fd} of {pid} holds a {other} lock (only flock, POSIX and OFD locks are dumped)"
                        ),
                    });
                }
            };
            let ltype = match l.kind.as_str() {
                "READ" => libc::F_RDLCK as u32,
                "WRITE" => libc::F_WRLCK as u32,
                other => {
                    return Err(DumpError::Unsupported {
                        what: format!("fd {fd} of {pid} holds a {} lock of type {other}", l.class),
                    });
                }
            };
            // The last byte is below OFFSET_MAX (which the kernel shows as EOF).
            let len = l
                .end
                .map_or(0, |e| e.saturating_sub(l.start).saturating_add(1));
            let key = if kind == lock_kind::POSIX {
                (kind, pid, ino, ltype, l.start, len)
            } else {
                (kind, 0, u64::from(id), ltype, l.start, len)
            };
            if self.lock_keys.insert(key) {
                self.locks.push(FileLockEntry {
                    flag: kind,
                    r#type: ltype,
                    pid,
                    fd,
                    start: l.start,
                    len,
                });
            }
        }
        Ok(())
    }

    /// Adds (or finds) a file reached through `source` (a `/proc` link that opens it) whose name
    /// the kernel reports as `name`, opened with `flags`, at `pos`. Mapped files and the
    /// executable are shared by (device, inode, flags); descriptors always get a new id.
    fn add_reg(
        &mut self,
        source: &Path,
        name: &str,
        flags: u32,
        pos: u64,
        dedup: bool,
    ) -> Result<u32, DumpError> {
        let meta = std::fs::metadata(source).map_err(|e| DumpError::File {
            what: format!("stat {} ({name})", source.display()),
            source: e,
        })?;
        self.add_reg_stat(source, meta, name, flags, pos, dedup)
    }

    /// [`FileTable::add_reg`] with `source` stat'ed already.
    fn add_reg_stat(
        &mut self,
        source: &Path,
        meta: std::fs::Metadata,
        name: &str,
        flags: u32,
        pos: u64,
        dedup: bool,
    ) -> Result<u32, DumpError> {
        let key = FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
            flags,
        };
        if dedup && let Some(&id) = self.mapped.get(&key) {
            return Ok(id);
        }
        let id = self.next_id();
        let (path, deleted) = split_deleted(name);
        let ft = meta.file_type();
        let size = (ft.is_file()).then_some(meta.size());
        self.entries.push(FileEntry {
            r#type: FdTypes::Reg as i32,
            id,
            reg: Some(RegFileEntry {
                id,
                flags,
                pos,
                fown: fown_zero(),
                name: path.to_string(),
                mnt_id: None,
                size,
                ext: None,
                mode: Some(meta.mode()),
                build_id: Vec::new(),
                checksum: None,
                checksum_config: None,
                checksum_parameter: None,
            }),
            ..FileEntry::default()
        });
        if dedup {
            self.mapped.insert(key, id);
            // Mapped files and the executable carry their ELF build-id, as CRIU saves it (the
            // restore side checks it instead of only the size).
            if ft.is_file()
                && let Some(bid) = elf_build_id(source)
                && let Some(FileEntry { reg: Some(r), .. }) = self.entries.last_mut()
            {
                r.build_id = bid;
            }
        }
        // A file deleted while open (nlink 0) is saved with its contents.
        if deleted && meta.nlink() == 0 {
            self.add_ghost(id, source, meta)?;
        }
        Ok(id)
    }

    fn add_ghost(
        &mut self,
        orig_id: u32,
        source: &Path,
        meta: std::fs::Metadata,
    ) -> Result<(), DumpError> {
        if !(meta.file_type().is_file() || meta.file_type().is_dir()) {
            return Err(DumpError::Unsupported {
                what: format!(
                    "deleted special file {} (only regular files and directories)",
                    source.display()
                ),
            });
        }
        if meta.blocks() * 512 > self.ghost_limit {
            return Err(DumpError::Unsupported {
                what: format!(
                    "deleted file {} of {} bytes is over the ghost limit {} (--ghost-limit)",
                    source.display(),
                    meta.blocks() * 512,
                    self.ghost_limit
                ),
            });
        }
        let key = (meta.dev(), meta.ino());
        let id = match self.ghost_by_inode.get(&key) {
            Some(&id) => id,
            None => {
                let id = self.ghosts.len() as u32 + 1;
                self.ghost_by_inode.insert(key, id);
                self.ghosts.push(Ghost {
                    id,
                    orig_id,
                    source: source.to_path_buf(),
                    meta,
                });
                id
            }
        };
        self.remaps.push(RemapFilePathEntry {
            orig_id,
            remap_id: id,
            remap_type: Some(RemapType::Ghost as i32),
        });
        Ok(())
    }

    /// Adds the executable (`/proc/PID/exe`); returns its id.
    ///
    /// # Errors
    /// [`DumpError::File`] if the executable cannot be reached.
    pub fn add_exe(&mut self, pid: i32) -> Result<u32, DumpError> {
        let src = PathBuf::from(format!("/proc/{pid}/exe"));
        let name = std::fs::read_link(&src).map_err(|e| DumpError::File {
            what: format!("readlink {}", src.display()),
            source: e,
        })?;
        self.add_reg(&src, &name.to_string_lossy(), 0, 0, true)
    }

    /// Adds the file area `m` of `pid` maps (through `/proc/PID/map_files/START-END`, stat'ed
    /// once per file and flags for the whole tree); returns its id.
    ///
    /// # Errors
    /// [`DumpError::File`], [`DumpError::Unsupported`] for a file that is not regular.
    pub fn add_mapped(&mut self, pid: i32, m: &MapLine, flags: u32) -> Result<u32, DumpError> {
        let key = (m.dev_major, m.dev_minor, m.inode, flags, m.name.clone());
        if let Some(&id) = self.mapped_by_maps.get(&key) {
            return Ok(id);
        }
        let src = PathBuf::from(format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end));
        let meta = std::fs::metadata(&src).map_err(|e| DumpError::File {
            what: format!("stat mapped file {} at {:#x}", m.name, m.start),
            source: e,
        })?;
        if !meta.is_file() {
            return Err(DumpError::Unsupported {
                what: format!("mapping of non-regular file {} at {:#x}", m.name, m.start),
            });
        }
        let id = self.add_reg_stat(&src, meta, &m.name, flags, 0, true)?;
        self.mapped_by_maps.insert(key, id);
        Ok(id)
    }

    /// Adds a directory reached through a `/proc/PID/{cwd,root}` link; returns its id.
    ///
    /// # Errors
    /// [`DumpError::File`].
    pub fn add_dir_link(&mut self, pid: i32, which: &str) -> Result<u32, DumpError> {
        let src = PathBuf::from(format!("/proc/{pid}/{which}"));
        let name = std::fs::read_link(&src).map_err(|e| DumpError::File {
            what: format!("readlink {}", src.display()),
            source: e,
        })?;
        self.add_reg(&src, &name.to_string_lossy(), 0, 0, false)
    }

    /// Adds every open descriptor of `pid`; returns the `fdinfo` entries in fd order.
    ///
    /// # Errors
    /// [`DumpError::Unsupported`] for descriptors of a kind not handled yet (pipes, sockets,
    /// ...), [`DumpError::File`], [`DumpError::Proc`].
    ///
    /// Terminals (the controlling terminal of a shell job, any pty or tty) are only dumped with
    /// `shell_job` (`--shell-job`), as their path: the restored task reopens its terminal.
    pub fn add_fds(&mut self, pid: i32, shell_job: bool) -> Result<Vec<FdinfoEntry>, DumpError> {
        let fds = proc::list_fds(pid)?;
        let mut out = Vec::with_capacity(fds.len());
        // Descriptors holding locks: (fd, inode, locks), noted once their file ids are known.
        let mut locked = Vec::new();
        for (fd, target) in fds {
            let name = target.to_string_lossy().into_owned();
            let src = PathBuf::from(format!("/proc/{pid}/fd/{fd}"));
            let info: FdInfo = proc::read_fdinfo(pid, fd)?;
            let meta = std::fs::metadata(&src).map_err(|e| DumpError::File {
                what: format!("stat fd {fd} of {pid} ({name})"),
                source: e,
            })?;
            let ft = meta.file_type();
            if !info.locks.is_empty() {
                locked.push((fd, meta.ino(), info.locks.clone()));
            }
            if name.starts_with("pipe:[") && ft.is_fifo() {
                let key = (meta.dev(), meta.ino());
                let id = match self.find_open(key, pid, fd) {
                    Some(id) => id,
                    None => {
                        let id = self.add_pipe(pid, fd, &info, meta.ino())?;
                        self.seen.entry(key).or_default().push((pid, fd, id));
                        id
                    }
                };
                out.push(FdinfoEntry {
                    id,
                    flags: if info.flags & libc::O_CLOEXEC as u32 != 0 {
                        libc::FD_CLOEXEC as u32
                    } else {
                        0
                    },
                    r#type: FdTypes::Pipe as i32,
                    fd: fd as u32,
                    xattr_security_selinux: None,
                });
                continue;
            }
            if let Some(kind) = name.strip_prefix("anon_inode:") {
                let key = (meta.dev(), meta.ino());
                let (id, ty) = match self.find_open(key, pid, fd) {
                    Some(id) => (id, self.type_of(id)),
                    None => {
                        let (id, ty) = self.add_anon(pid, fd, kind, &info)?;
                        self.seen.entry(key).or_default().push((pid, fd, id));
                        (id, ty)
                    }
                };
                out.push(FdinfoEntry {
                    id,
                    flags: if info.flags & libc::O_CLOEXEC as u32 != 0 {
                        libc::FD_CLOEXEC as u32
                    } else {
                        0
                    },
                    r#type: ty,
                    fd: fd as u32,
                    xattr_security_selinux: None,
                });
                continue;
            }
            if let Some(ino) = name
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .and_then(|s| s.parse::<u32>().ok())
            {
                let key = (meta.dev(), meta.ino());
                let (id, ty) = match self.find_open(key, pid, fd) {
                    Some(id) => (id, self.type_of(id)),
                    None => {
                        let id = self.next_id();
                        let e = self
                            .sockets
                            .add(pid, fd, ino, info.flags, id)
                            .map_err(socket_err)?;
                        let ty = e.r#type;
                        self.entries.push(e);
                        self.seen.entry(key).or_default().push((pid, fd, id));
                        (id, ty)
                    }
                };
                out.push(FdinfoEntry {
                    id,
                    flags: if info.flags & libc::O_CLOEXEC as u32 != 0 {
                        libc::FD_CLOEXEC as u32
                    } else {
                        0
                    },
                    r#type: ty,
                    fd: fd as u32,
                    xattr_security_selinux: None,
                });
                continue;
            }
            if name.starts_with("/memfd:") {
                // Not a deleted file of that name: a memfd, which needs its own image kind.
                return Err(DumpError::Unsupported {
                    what: format!("fd {fd} of {pid} is a memfd ({name})"),
                });
            }
            if !name.starts_with('/') || !(ft.is_file() || ft.is_dir() || ft.is_char_device()) {
                return Err(DumpError::Unsupported {
                    what: format!(
                        "fd {fd} of {pid}: {name} (only files, directories and character devices are supported)"
                    ),
                });
            }
            if ft.is_char_device() {
                let major = libc::major(meta.rdev());
                let minor = libc::minor(meta.rdev());
                // 4: virtual consoles and serial ttys, 5: /dev/tty, /dev/console, /dev/ptmx,
                // 136..=143: pty slaves (/dev/pts/N).
                let ptmx = major == 5 && minor == 2;
                let tty = major == 4 || major == 5 || (136..=143).contains(&major);
                if ptmx {
                    return Err(DumpError::Unsupported {
                        what: format!("fd {fd} of {pid} is a pty master ({name})"),
                    });
                }
                if tty && !shell_job {
                    return Err(DumpError::Unsupported {
                        what: format!(
                            "fd {fd} of {pid} is the terminal {name}: dump a shell job with --shell-job"
                        ),
                    });
                }
            }
            let key = (meta.dev(), meta.ino());
            let id = match self.find_open(key, pid, fd) {
                Some(i) => i,
                None => {
                    let flags = info.flags & !(libc::O_CLOEXEC as u32);
                    let i = self.add_reg(&src, &name, flags, info.pos, false)?;
                    self.seen.entry(key).or_default().push((pid, fd, i));
                    i
                }
            };
            out.push(FdinfoEntry {
                id,
                flags: if info.flags & libc::O_CLOEXEC as u32 != 0 {
                    libc::FD_CLOEXEC as u32
                } else {
                    0
                },
                r#type: FdTypes::Reg as i32,
                fd: fd as u32,
                xattr_security_selinux: None,
            });
        }
        for (fd, ino, locks) in locked {
            if let Some(e) = out.iter().find(|e| e.fd == fd as u32) {
                let id = e.id;
                self.note_locks(pid, fd, id, ino, &locks)?;
            }
        }
        Ok(out)
    }

    /// The id of an already added open file description that fd `fd` of `pid` also refers to.
    fn find_open(&self, key: (u64, u64), pid: i32, fd: i32) -> Option<u32> {
        self.seen
            .get(&key)?
            .iter()
            .find(|&&(p, f, _)| same_file(pid, fd, p, f))
            .map(|&(_, _, id)| id)
    }

    fn type_of(&self, id: u32) -> i32 {
        self.entries
            .get(id as usize - 1)
            .map(|e| e.r#type)
            .unwrap_or(FdTypes::Und as i32)
    }

    /// Adds an anonymous-inode file: eventfd (its counter), signalfd (its mask), timerfd (clock,
    /// ticks, flags and settings) or epoll (its targets), from `/proc/PID/fdinfo/FD`.
    fn add_anon(
        &mut self,
        pid: i32,
        fd: i32,
        kind: &str,
        info: &FdInfo,
    ) -> Result<(u32, i32), DumpError> {
        let text = proc::read_fdinfo_text(pid, fd)?;
        let bad = |what: &str| DumpError::Unsupported {
            what: format!("fd {fd} of {pid} ({kind}): cannot parse {what} in its fdinfo"),
        };
        let field = |key: &str| -> Option<&str> {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim_start_matches(':').trim())
        };
        let id = self.next_id();
        let flags = info.flags & !(libc::O_CLOEXEC as u32);
        let mut e = FileEntry {
            id,
            ..FileEntry::default()
        };
        match kind {
            "[eventfd]" => {
                let count = field("eventfd-count")
                    .and_then(|v| u64::from_str_radix(v, 16).ok())
                    .ok_or_else(|| bad("eventfd-count"))?;
                e.r#type = FdTypes::Eventfd as i32;
                e.efd = Some(EventfdFileEntry {
                    id,
                    flags,
                    fown: fown_zero(),
                    counter: count,
                });
            }
            "[signalfd]" => {
                let mask = field("sigmask")
                    .and_then(|v| u64::from_str_radix(v, 16).ok())
                    .ok_or_else(|| bad("sigmask"))?;
                e.r#type = FdTypes::Signalfd as i32;
                e.sgfd = Some(SignalfdEntry {
                    id,
                    flags,
                    fown: fown_zero(),
                    sigmask: mask,
                });
            }
            "[timerfd]" => {
                let num = |k: &str| field(k).and_then(|v| v.parse::<u64>().ok());
                let pair = |k: &str| -> Option<(u64, u64)> {
                    let v = field(k)?.trim_start_matches('(').trim_end_matches(')');
                    let (a, b) = v.split_once(',')?;
                    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
                };
                let (vsec, vnsec) = pair("it_value").ok_or_else(|| bad("it_value"))?;
                let (isec, insec) = pair("it_interval").ok_or_else(|| bad("it_interval"))?;
                e.r#type = FdTypes::Timerfd as i32;
                e.tfd = Some(TimerfdEntry {
                    id,
                    flags,
                    fown: fown_zero(),
                    clockid: num("clockid").ok_or_else(|| bad("clockid"))? as u32,
                    ticks: num("ticks").ok_or_else(|| bad("ticks"))?,
                    settime_flags: field("settime flags")
                        .and_then(|v| u32::from_str_radix(v, 8).ok())
                        .ok_or_else(|| bad("settime flags"))?,
                    vsec,
                    vnsec,
                    isec,
                    insec,
                });
            }
            "[eventpoll]" => {
                let mut tfds = Vec::new();
                for l in text.lines().filter(|l| l.starts_with("tfd:")) {
                    // tfd: N events: HEX data: HEX  pos:N ino:HEX sdev:HEX
                    let words: Vec<&str> = l.split_whitespace().collect();
                    let after = |k: &str| {
                        words
                            .iter()
                            .position(|w| *w == k)
                            .and_then(|i| words.get(i + 1).copied())
                    };
                    let inline = |k: &str| words.iter().find_map(|w| w.strip_prefix(k));
                    let tfd = after("tfd:").and_then(|v| v.parse::<u32>().ok());
                    let events = after("events:").and_then(|v| u32::from_str_radix(v, 16).ok());
                    let data = after("data:").and_then(|v| u64::from_str_radix(v, 16).ok());
                    let (Some(tfd), Some(events), Some(data)) = (tfd, events, data) else {
                        return Err(bad("an epoll target"));
                    };
                    tfds.push(EventpollTfdEntry {
                        id,
                        tfd,
                        events,
                        data,
                        dev: inline("sdev:").and_then(|v| u32::from_str_radix(v, 16).ok()),
                        inode: inline("ino:").and_then(|v| u64::from_str_radix(v, 16).ok()),
                        pos: inline("pos:").and_then(|v| v.parse().ok()),
                    });
                }
                e.r#type = FdTypes::Eventpoll as i32;
                e.epfd = Some(EventpollFileEntry {
                    id,
                    flags,
                    fown: fown_zero(),
                    tfd: tfds,
                });
            }
            other => {
                return Err(DumpError::Unsupported {
                    what: format!("fd {fd} of {pid}: anon_inode:{other}"),
                });
            }
        }
        let ty = e.r#type;
        self.entries.push(e);
        Ok((id, ty))
    }

    /// Adds a pipe end (fd `fd` of `pid`) and, the first time a pipe is seen, the bytes waiting
    /// in it (copied with `tee`, so the task still has them).
    fn add_pipe(&mut self, pid: i32, fd: i32, info: &FdInfo, ino: u64) -> Result<u32, DumpError> {
        let id = self.next_id();
        self.entries.push(FileEntry {
            r#type: FdTypes::Pipe as i32,
            id,
            pipe: Some(PipeEntry {
                id,
                pipe_id: ino as u32,
                flags: info.flags & !(libc::O_CLOEXEC as u32),
                fown: fown_zero(),
            }),
            ..FileEntry::default()
        });
        if !self.pipes_seen.contains(&ino) {
            self.pipes_seen.push(ino);
            let (data, size) = peek_pipe(pid, fd)?;
            if !data.is_empty() {
                self.pipe_data.push((ino as u32, size, data));
            }
        }
        Ok(id)
    }

    /// Finishes the sockets once every process was collected: checks that each unix socket's
    /// peer is in the tree (or, with `ext_unix_sk`, adds the outside peer as an external
    /// entry) and puts the final unix entries in place.
    ///
    /// # Errors
    /// [`DumpError::Unsupported`] naming the socket.
    pub fn finish_sockets(&mut self, ext_unix_sk: Option<&[u32]>) -> Result<(), DumpError> {
        let mut next = self.next_id();
        let extra = self
            .sockets
            .unix
            .finish(ext_unix_sk, || {
                let id = next;
                next += 1;
                id
            })
            .map_err(socket_err)?;
        for e in self.entries.iter_mut() {
            if let Some(u) = e.usk.as_mut()
                && let Some(f) = self.sockets.unix.entry(u.ino)
            {
                *u = f.clone();
            }
        }
        for u in extra {
            self.entries.push(FileEntry {
                r#type: FdTypes::Unixsk as i32,
                id: u.id,
                usk: Some(u),
                ..FileEntry::default()
            });
        }
        Ok(())
    }

    /// Writes `files.img`, `remap-fpath.img` and the ghost files into `dir`.
    ///
    /// # Errors
    /// [`DumpError::Image`], [`DumpError::File`].
    pub fn write(&self, dir: &Path) -> Result<(), DumpError> {
        criu_images::write_all(dir.join(names::FILES), magic::FILES, &self.entries)?;
        if !self.remaps.is_empty() {
            criu_images::write_all(
                dir.join(names::REMAP_FPATH),
                magic::REMAP_FPATH,
                &self.remaps,
            )?;
        }
        for g in &self.ghosts {
            self.write_ghost(dir, g)?;
        }
        self.sockets.write(dir)?;
        if !self.pipe_data.is_empty() {
            let mut w = ImageWriter::create_in(dir, names::PIPES_DATA, magic::PIPES_DATA)?;
            for (pipe_id, size, data) in &self.pipe_data {
                w.write_entry(&PipeDataEntry {
                    pipe_id: *pipe_id,
                    bytes: data.len() as u32,
                    size: Some(*size),
                })?;
                w.write_extra(data)?;
            }
            w.finish()?;
        }
        Ok(())
    }

    fn write_ghost(&self, dir: &Path, g: &Ghost) -> Result<(), DumpError> {
        let m = &g.meta;
        let chunks = m.file_type().is_file() && m.size() >= GHOST_CHUNKS_THRESH;
        let gfe = GhostFileEntry {
            uid: m.uid(),
            gid: m.gid(),
            mode: m.mode(),
            dev: Some(m.dev() as u32),
            ino: Some(m.ino()),
            rdev: None,
            atim: Some(Timeval {
                tv_sec: m.atime() as u64,
                tv_usec: (m.atime_nsec() / 1000) as u64,
            }),
            mtim: Some(Timeval {
                tv_sec: m.mtime() as u64,
                tv_usec: (m.mtime_nsec() / 1000) as u64,
            }),
            chunks: chunks.then_some(true),
            size: chunks.then_some(m.size()),
            symlnk_target: None,
        };
        let mut w = ImageWriter::create_in(dir, &names::ghost_file(g.id), magic::GHOST_FILE)?;
        w.write_entry(&gfe)?;
        if m.file_type().is_file() {
            let ferr = |e| DumpError::File {
                what: format!("read ghost file (id {}) {}", g.orig_id, g.source.display()),
                source: e,
            };
            let mut f = File::open(&g.source).map_err(ferr)?;
            if chunks {
                // Data regions only (holes stay holes), each as a chunk header then its bytes.
                for (off, len) in data_regions(&mut f, m.size()).map_err(ferr)? {
                    w.write_entry(&GhostChunkEntry { len, off })?;
                    f.seek(SeekFrom::Start(off)).map_err(ferr)?;
                    let mut buf = vec![0u8; len as usize];
                    f.read_exact(&mut buf).map_err(ferr)?;
                    w.write_extra(&buf)?;
                }
            } else {
                let mut buf = Vec::with_capacity(m.size() as usize);
                f.read_to_end(&mut buf).map_err(ferr)?;
                w.write_extra(&buf)?;
            }
        }
        w.finish()?;
        Ok(())
    }
}

/// The GNU build-id of an ELF file (its `NT_GNU_BUILD_ID` note) as CRIU saves it: the id's
/// bytes as little-endian 32-bit words. `None` for anything else or anything malformed.
pub fn elf_build_id(path: &Path) -> Option<Vec<u32>> {
    let f = File::open(path).ok()?;
    let mut hdr = [0u8; 64];
    f.read_exact_at(&mut hdr, 0).ok()?;
    if &hdr[..4] != b"\x7fELF" || hdr[4] != 2 || hdr[5] != 1 {
        return None; // not ELF64 little-endian
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as u64;
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or([0; 4]));
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
    let (phoff, phentsize, phnum) = (u64_at(&hdr, 0x20), u16_at(&hdr, 0x36), u16_at(&hdr, 0x38));
    if phentsize < 56 || phnum > 256 {
        return None;
    }
    let mut phdrs = vec![0u8; (phentsize * phnum) as usize];
    f.read_exact_at(&mut phdrs, phoff).ok()?;
    for ph in phdrs.chunks_exact(phentsize as usize) {
        const PT_NOTE: u32 = 4;
        if u32_at(ph, 0) != PT_NOTE {
            continue;
        }
        let (off, size) = (u64_at(ph, 0x08), u64_at(ph, 0x20));
        if size > 64 << 10 {
            continue;
        }
        let mut notes = vec![0u8; size as usize];
        f.read_exact_at(&mut notes, off).ok()?;
        let mut at = 0usize;
        while at + 12 <= notes.len() {
            let namesz = u32_at(&notes, at) as usize;
            let descsz = u32_at(&notes, at + 4) as usize;
            let ty = u32_at(&notes, at + 8);
            let name_at = at + 12;
            let desc_at = name_at + namesz.div_ceil(4) * 4;
            let end = desc_at + descsz.div_ceil(4) * 4;
            if end > notes.len() || desc_at + descsz > notes.len() {
                break;
            }
            const NT_GNU_BUILD_ID: u32 = 3;
            if ty == NT_GNU_BUILD_ID && notes.get(name_at..name_at + namesz) == Some(b"GNU\0") {
                let id = &notes[desc_at..desc_at + descsz];
                return Some(
                    id.chunks(4)
                        .map(|c| {
                            let mut w = [0u8; 4];
                            w[..c.len()].copy_from_slice(c);
                            u32::from_le_bytes(w)
                        })
                        .collect(),
                );
            }
            at = end;
        }
    }
    None
}

/// The bytes waiting in the pipe behind fd `fd` of `pid`, without taking them: the pipe is
/// opened through `/proc/PID/fd/FD` and `tee`d into a pipe of ours. Also returns the pipe's
/// size (`F_GETPIPE_SZ`).
fn peek_pipe(pid: i32, fd: i32) -> Result<(Vec<u8>, u32), DumpError> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::fs::OpenOptionsExt;
    let src_path = format!("/proc/{pid}/fd/{fd}");
    let err = |what: &str| {
        let what = format!("{what} (pipe fd {fd} of {pid})");
        move |source| DumpError::File { what, source }
    };
    let src = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&src_path)
        .map_err(err("open"))?;
    // SAFETY: fcntl queries the pipe size of a descriptor we own.
    let size = unsafe { libc::fcntl(src.as_raw_fd(), libc::F_GETPIPE_SZ) };
    if size < 0 {
        return Err(err("F_GETPIPE_SZ")(std::io::Error::last_os_error()));
    }
    let mut ends = [0i32; 2];
    // SAFETY: pipe2 writes two new descriptors into `ends`.
    if unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(err("pipe2")(std::io::Error::last_os_error()));
    }
    // SAFETY: both descriptors were just created and are owned by nothing else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1])) };
    // SAFETY: fcntl on our own pipe; make it as big as the source so one tee takes it all.
    unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, size) };
    // SAFETY: tee duplicates pipe contents between two descriptors we own; no memory involved.
    let n = unsafe {
        libc::tee(
            src.as_raw_fd(),
            w.as_raw_fd(),
            size as usize,
            libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EAGAIN) {
            return Ok((Vec::new(), size as u32));
        }
        return Err(err("tee")(e));
    }
    drop(w);
    let mut data = Vec::with_capacity(n as usize);
    let mut f = File::from(r);
    f.read_to_end(&mut data).map_err(err("read"))?;
    Ok((data, size as u32))
}

/// The data regions of a file (SEEK_DATA/SEEK_HOLE), or the whole file if the file system
/// cannot tell.
fn data_regions(f: &mut File, size: u64) -> std::io::Result<Vec<(u64, u64)>> {
    use std::os::fd::AsRawFd;
    let fd = f.as_raw_fd();
    let mut out = Vec::new();
    let mut off: i64 = 0;
    while (off as u64) < size {
        // SAFETY: lseek on a descriptor we own; it only moves the file offset.
        let data = unsafe { libc::lseek(fd, off, libc::SEEK_DATA) };
        if data < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break;
            }
            return Ok(vec![(0, size)]);
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        let hole = if hole < 0 { size as i64 } else { hole };
        out.push((data as u64, (hole - data) as u64));
        off = hole;
    }
    Ok(out)
}

/// Whether fd `fd1` of `pid1` and fd `fd2` of `pid2` are the same open file description
/// (kcmp).
fn same_file(pid1: i32, fd1: i32, pid2: i32, fd2: i32) -> bool {
    const KCMP_FILE: libc::c_long = 0;
    super::kcmp(pid1, pid2, KCMP_FILE, fd1, fd2) == Some(std::cmp::Ordering::Equal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn exe_dedup_dup_sharing_and_ghosts() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello world").unwrap();
        let f = File::open(&p).unwrap();
        let dup = f.try_clone().unwrap();
        let pid = std::process::id() as i32;
        assert!(same_file(pid, f.as_raw_fd(), pid, dup.as_raw_fd()));
        let other = File::open(&p).unwrap();
        assert!(!same_file(pid, f.as_raw_fd(), pid, other.as_raw_fd()));
        let mut t = FileTable::new(1 << 20);
        assert_eq!(t.add_exe(pid).unwrap(), 1);
        assert_eq!(t.add_exe(pid).unwrap(), 1);
        // The test binary is an ELF with a GNU build-id (rustc passes --build-id).
        let exe_bid = &t.entries()[0].reg.as_ref().unwrap().build_id;
        assert!(exe_bid.len() >= 4, "{exe_bid:?}");
        // CRIU's fixture program: the build-id CRIU recorded for it.
        let fixture = Path::new("/work/shared/fixtures/criu-4.2/programs/single");
        if fixture.exists() {
            assert_eq!(
                elf_build_id(fixture).unwrap(),
                vec![2401136925, 3187992955, 718202396, 3666075703, 2743893105]
            );
        }
        assert_eq!(elf_build_id(Path::new("/etc/hostname")), None);
        let src = PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
        let id = t.add_reg(&src, p.to_str().unwrap(), 0, 3, false).unwrap();
        assert_eq!(id, 2);
        let reg = t.entries()[1].reg.as_ref().unwrap();
        assert_eq!((reg.pos, reg.size), (3, Some(11)));
        // Deleted while open: a ghost with the contents.
        std::fs::remove_file(&p).unwrap();
        let name = format!("{} (deleted)", p.display());
        let gid = t.add_reg(&src, &name, 0, 0, false).unwrap();
        assert_eq!(
            t.entries()[2].reg.as_ref().unwrap().name,
            p.to_str().unwrap()
        );
        let out = tempfile::tempdir().unwrap();
        t.write(out.path()).unwrap();
        let remaps: Vec<RemapFilePathEntry> =
            criu_images::read_all(out.path().join(names::REMAP_FPATH), magic::REMAP_FPATH).unwrap();
        assert_eq!((remaps[0].orig_id, remaps[0].remap_id), (gid, 1));
        let mut r = criu_images::ImageReader::open_expect(
            out.path().join(names::ghost_file(1)),
            magic::GHOST_FILE,
        )
        .unwrap();
        let g: GhostFileEntry = r.read_one().unwrap();
        assert_eq!(g.chunks, None);
        assert_eq!(r.read_rest().unwrap(), b"hello world");
        drop((f, dup, other));
    }
}
