//! Files of a task: the executable, mapped files, open descriptors, cwd and root, as CRIU's
//! `files.img` entries (`REG` entries for regular files, directories and character devices such
//! as `/dev/null`), `fdinfo-N.img`, and ghost files for files deleted while open.
//!
//! Ids are handed out in discovery order from 1, as CRIU does: the executable first, then mapped
//! files (one id per file, shared by its mappings), then descriptors (one id per open file
//! description: `dup`ed descriptors share it), then cwd and root.
//!
//! This module keeps only what all kinds of file share: ids, open file descriptions shared by
//! several descriptors or tasks (kcmp), file locks. What each kind reads and writes is in its
//! module under [`crate::files`], asked through [`crate::files::FileKind`].

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use criu_images::pb::{FdTypes, FdinfoEntry, FileEntry, FileLockEntry};
use criu_images::{magic, names};

use super::error::DumpError;
use super::proc::{self, FdInfo, Mapping};
use crate::files::regular::{self, Opened, Regular};
use crate::files::{DumpFd, FileKind};

#[cfg(test)]
use crate::files::regular::elf_build_id;

#[cfg(test)]
use criu_images::pb::{GhostFileEntry, RemapFilePathEntry};
#[cfg(test)]
use std::fs::File;

/// What a file was opened as, for the key that dedups mapped files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FileKey {
    dev: u64,
    ino: u64,
    flags: u32,
}

/// An open file description met by the dump: `(pid, fd, file id)`.
type OpenDesc = (i32, i32, u32);

/// The file table being built for one dump.
pub struct FileTable {
    entries: Vec<FileEntry>,
    mapped: HashMap<FileKey, u32>,
    /// Mapped files by what `/proc/PID/maps` says of them (device, inode, path) and the open
    /// flags: the id they got, so that the areas of a tree that map one file stat it once.
    mapped_by_maps: HashMap<(u32, u32, u64, u32, String), u32>,
    /// Regular files: the dump's fallback kind, also the executable's and mapped files'.
    regular: Regular,
    /// Every other kind, asked in order whether it takes a descriptor.
    kinds: Vec<Box<dyn FileKind>>,
    /// Open file descriptions met so far, by (device, inode): `(pid, fd, file id)`, compared
    /// with kcmp so that a description shared by descriptors (dup, or inherited across fork)
    /// gets one id.
    seen: HashMap<(u64, u64), Vec<OpenDesc>>,
    /// File locks held by the tree, as `filelocks.img` lists them.
    locks: Vec<FileLockEntry>,
    /// What makes each of `locks` one lock (flock/OFD: open file; POSIX: process and inode).
    lock_keys: std::collections::HashSet<(u32, i32, u64, u32, i64, i64)>,
    /// `--tcp-established`.
    pub tcp_established: bool,
    /// `--tcp-close`.
    pub tcp_close: bool,
    /// `--skip-in-flight`.
    pub skip_in_flight: bool,
    /// The lock of each saved TCP connection (tree in criu's network namespace).
    pub conn_lock: Option<crate::namespaces::net::conns::Shared>,
    /// Inodes of criu's own memory-tracking userfaultfds (`dump::track`): never dumped.
    pub skip_uffd: Vec<u64>,
    /// The dump ends the tree ([`FileKind::take_in_flight`]).
    pub tree_dies: bool,
    /// `--orphan-pts-master`.
    pub orphan_pts_master: bool,
    /// criu's copies of files in flight, kept open while the dump compares descriptions.
    in_flight: Vec<std::os::fd::OwnedFd>,
    /// A pidfd of each process whose descriptors were read (for `pidfd_getfd`), kept for the
    /// dump: the tree is seized, so no pid is reused meanwhile.
    pidfds: HashMap<i32, std::os::fd::OwnedFd>,
}

/// CRIU's lock kinds (`file_lock_entry.flag`).
pub mod lock_kind {
    /// fcntl(F_SETLK) record locks, owned by the process.
    pub const POSIX: u32 = 1;
    /// flock(2) locks, owned by the open file.
    pub const FLOCK: u32 = 2;
    /// Open file description record locks (F_OFD_SETLK).
    pub const OFD: u32 = 4;
    /// File leases (F_SETLEASE), owned by the open file.
    pub const LEASE: u32 = 8;
}

/// CRIU's bit in a lease's type for a lease being broken (the rest is the type it goes to).
pub const LEASE_BREAKING: u32 = 4;

impl FileTable {
    /// An empty table; deleted files larger than `ghost_limit` bytes are refused, as CRIU does.
    pub fn new(ghost_limit: u64) -> FileTable {
        FileTable {
            entries: Vec::new(),
            mapped: HashMap::new(),
            mapped_by_maps: HashMap::new(),
            regular: Regular::new(ghost_limit),
            kinds: crate::files::kinds(),
            seen: HashMap::new(),
            locks: Vec::new(),
            lock_keys: Default::default(),
            tcp_established: false,
            tcp_close: false,
            skip_in_flight: false,
            conn_lock: None,
            skip_uffd: Vec::new(),
            tree_dies: false,
            orphan_pts_master: false,
            in_flight: Vec::new(),
            pidfds: HashMap::new(),
        }
    }

    /// The dump is over (`killed`: the tree was killed); kinds let go of what they hold.
    pub fn dump_done(&mut self, killed: bool) {
        for k in self.kinds.iter_mut() {
            k.dump_done(killed);
        }
    }

    fn next_id(&self) -> u32 {
        self.entries.len() as u32 + 1
    }

    /// All `files.img` entries, in id order.
    #[cfg(test)]
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
                "LEASE" => lock_kind::LEASE,
                other => {
                    return Err(DumpError::LockClass {
                        pid,
                        fd,
                        class: other.to_string(),
                    });
                }
            };
            let ltype = match (kind, l.mode.as_str(), l.kind.as_str()) {
                // A lease being broken: the type it goes to (`F_GETLEASE` says; fdinfo shows
                // the type it had) with CRIU's `LEASE_BREAKING` bit.
                (lock_kind::LEASE, "BREAKING", _) => {
                    crate::files::common::lease_target(pid, fd)? | LEASE_BREAKING
                }
                (lock_kind::LEASE, mode, _) if mode != "ACTIVE" => {
                    return Err(DumpError::LockType {
                        pid,
                        fd,
                        class: l.class.clone(),
                        ty: mode.to_string(),
                    });
                }
                (_, _, "READ") => libc::F_RDLCK as u32,
                (_, _, "WRITE") => libc::F_WRLCK as u32,
                (_, _, other) => {
                    return Err(DumpError::LockType {
                        pid,
                        fd,
                        class: l.class.clone(),
                        ty: other.to_string(),
                    });
                }
            };
            // The last byte is below OFFSET_MAX (which the kernel shows as EOF).
            let len = l
                .end
                .map_or(0, |e| e.saturating_sub(l.start).saturating_add(1));
            if kind == lock_kind::LEASE {
                tracing::debug!(pid, fd, ltype, "lease");
            }
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
        let e = self.regular.entry(
            source,
            meta,
            name,
            Opened {
                flags,
                pos,
                mapped: dedup,
            },
            id,
        )?;
        self.entries.push(e);
        if dedup {
            self.mapped.insert(key, id);
        }
        Ok(id)
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
    /// [`DumpError::File`], [`DumpError::MappedNotRegular`].
    pub fn add_mapped(&mut self, pid: i32, m: &Mapping, flags: u32) -> Result<u32, DumpError> {
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
            return Err(DumpError::MappedNotRegular {
                name: m.name.clone(),
                start: m.start,
            });
        }
        let id = self.add_reg_stat(&src, meta, &m.name, flags, 0, true)?;
        self.mapped_by_maps.insert(key, id);
        Ok(id)
    }

    /// Adds the memfd area `m` of `pid` maps as a `MEMFD` file opened with `flags` (one per
    /// memfd and flags for the tree; the memfd's inode and content are the memfd kind's, shared
    /// with its descriptors); returns its id.
    ///
    /// # Errors
    /// [`DumpError::File`], and the memfd kind's refusals.
    pub fn add_mapped_memfd(
        &mut self,
        pid: i32,
        m: &Mapping,
        flags: u32,
    ) -> Result<u32, DumpError> {
        let key = (m.dev_major, m.dev_minor, m.inode, flags, m.name.clone());
        if let Some(&id) = self.mapped_by_maps.get(&key) {
            return Ok(id);
        }
        let src = PathBuf::from(format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end));
        let meta = std::fs::metadata(&src).map_err(|e| DumpError::File {
            what: format!("stat mapped memfd {} at {:#x}", m.name, m.start),
            source: e,
        })?;
        let info = FdInfo {
            flags,
            ino: meta.ino(),
            ..FdInfo::default()
        };
        let probe = DumpFd {
            pid,
            fd: -1,
            name: &m.name,
            source: &src,
            meta: &meta,
            info: &info,
            shell_job: false,
            tcp_established: false,
            tcp_close: false,
            skip_in_flight: false,
            conn_lock: None,
            orphan_pts_master: false,
        };
        let id = self.next_id();
        let kind = self
            .kinds
            .iter_mut()
            .find(|k| k.fd_type() == FdTypes::Memfd && k.claims(&probe))
            .ok_or_else(|| DumpError::MappedNotRegular {
                name: m.name.clone(),
                start: m.start,
            })?;
        let e = kind.dump(&probe, id)?;
        self.entries.push(e);
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
    /// [`DumpError::FdKind`] for descriptors of a kind not handled yet (pipes, sockets,
    /// ...), [`DumpError::File`], [`DumpError::Proc`].
    ///
    /// Terminals (the controlling terminal of a shell job, any pty or tty) are only dumped with
    /// `shell_job` (`--shell-job`), as their path: the restored task reopens its terminal.
    pub fn add_fds(&mut self, pid: i32, shell_job: bool) -> Result<Vec<FdinfoEntry>, DumpError> {
        let fds = proc::list_fds(pid)?;
        let mut out = Vec::with_capacity(fds.len());
        // Descriptors holding locks: (fd, inode, locks), noted once their file ids are known.
        let mut locked = Vec::new();
        let conn_lock = self.conn_lock.clone();
        for (fd, target) in fds {
            let name = target.to_string_lossy().into_owned();
            let src = PathBuf::from(format!("/proc/{pid}/fd/{fd}"));
            let info: FdInfo = proc::read_fdinfo(pid, fd)?;
            let meta = std::fs::metadata(&src).map_err(|e| DumpError::File {
                what: format!("stat fd {fd} of {pid} ({name})"),
                source: e,
            })?;
            // criu's own tracking descriptors: recorded, or left by an earlier run.
            if name == "anon_inode:[userfaultfd]"
                && (self.skip_uffd.contains(&meta.ino()) || super::track::is_stale_tracker(pid, fd))
            {
                continue;
            }
            if !info.locks.is_empty() {
                locked.push((fd, meta.ino(), info.locks.clone()));
            }
            let probe = DumpFd {
                pid,
                fd,
                name: &name,
                source: &src,
                meta: &meta,
                info: &info,
                shell_job,
                tcp_established: self.tcp_established,
                tcp_close: self.tcp_close,
                skip_in_flight: self.skip_in_flight,
                conn_lock: conn_lock.as_ref(),
                orphan_pts_master: self.orphan_pts_master,
            };
            let key = (meta.dev(), meta.ino());
            let (id, ty) = match self.find_open(key, pid, fd) {
                Some(id) => (id, self.type_of(id)),
                None => self.add_new(&probe, key)?,
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
        }
        for (fd, ino, locks) in locked {
            if let Some(e) = out.iter().find(|e| e.fd == fd as u32) {
                let id = e.id;
                self.note_locks(pid, fd, id, ino, &locks)?;
            }
        }
        Ok(out)
    }

    /// Adds the open file description behind `probe`, met for the first time (`key`: its
    /// device and inode); returns its id and type.
    fn add_new(&mut self, probe: &DumpFd<'_>, key: (u64, u64)) -> Result<(u32, i32), DumpError> {
        let id = self.next_id();
        let mut e = match self.kinds.iter_mut().find(|k| k.claims(probe)) {
            Some(kind) => kind.dump(probe, id)?,
            None if self.regular.claims(probe) => self.regular.dump(probe, id)?,
            None => return Err(regular::refuse(probe)),
        };
        let fown = self.owner(probe.pid, probe.fd)?;
        crate::files::set_fown(&mut e, fown);
        let ty = e.r#type;
        let kind = FdTypes::try_from(ty).map_or_else(|_| ty.to_string(), crate::files::kind_name);
        tracing::debug!(pid = probe.pid, fd = probe.fd, id, kind, "dumping file");
        self.entries.push(e);
        self.seen
            .entry(key)
            .or_default()
            .push((probe.pid, probe.fd, id));
        Ok((id, ty))
    }

    /// The owner for signals (`F_GETOWN_EX`, `F_GETSIG`) of the open file behind fd `fd` of
    /// `pid`, read on a copy of it (`pidfd_getfd`): it belongs to the open file, whatever its
    /// kind. One pidfd per process of the tree serves all its descriptors.
    fn owner(&mut self, pid: i32, fd: i32) -> Result<criu_images::pb::FownEntry, DumpError> {
        use std::collections::hash_map::Entry;
        use std::os::fd::{AsFd, AsRawFd};
        let pidfd = match self.pidfds.entry(pid) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => v.insert(crate::pidfd::open(pid).map_err(|source| {
                crate::files::sockets::dump_err(crate::files::socket::SocketError::Sys {
                    what: format!("pidfd_open {pid}"),
                    source,
                })
            })?),
        };
        let f = crate::files::socket::steal_from(pidfd.as_fd(), pid, fd)
            .map_err(crate::files::sockets::dump_err)?;
        Ok(crate::files::socket::read_fown(f.as_raw_fd()))
    }

    /// Adds a file criu itself holds a copy of (a descriptor in flight in a socket's queue):
    /// the id of the tree's open file description it is, or a new one.
    fn add_own(&mut self, f: std::os::fd::OwnedFd) -> Result<u32, DumpError> {
        use std::os::fd::AsRawFd;
        let (pid, fd) = (std::process::id() as i32, f.as_raw_fd());
        let src = PathBuf::from(format!("/proc/{pid}/fd/{fd}"));
        let name = std::fs::read_link(&src).map_err(|e| DumpError::File {
            what: format!("readlink {} (a file in flight)", src.display()),
            source: e,
        })?;
        let name = name.to_string_lossy().into_owned();
        let info: FdInfo = proc::read_fdinfo(pid, fd)?;
        let meta = std::fs::metadata(&src).map_err(|e| DumpError::File {
            what: format!("stat {name} (a file in flight)"),
            source: e,
        })?;
        let key = (meta.dev(), meta.ino());
        if let Some(id) = self.find_open(key, pid, fd) {
            return Ok(id);
        }
        tracing::debug!(name, "a file in flight, held by no task");
        let probe = DumpFd {
            pid,
            fd,
            name: &name,
            source: &src,
            meta: &meta,
            info: &info,
            shell_job: false,
            tcp_established: self.tcp_established,
            tcp_close: self.tcp_close,
            skip_in_flight: self.skip_in_flight,
            conn_lock: None,
            orphan_pts_master: self.orphan_pts_master,
        };
        let (id, _) = self.add_new(&probe, key)?;
        self.in_flight.push(f);
        Ok(id)
    }

    /// Dumps the files in flight the kinds met ([`FileKind::take_in_flight`]) until none is
    /// left (a socket in flight may carry more).
    fn add_in_flight(&mut self) -> Result<(), DumpError> {
        loop {
            let mut more = false;
            for k in 0..self.kinds.len() {
                let fds = self.kinds[k].take_in_flight(self.tree_dies)?;
                if fds.is_empty() {
                    continue;
                }
                more = true;
                let mut ids = Vec::with_capacity(fds.len());
                for f in fds {
                    ids.push(self.add_own(f)?);
                }
                self.kinds[k].in_flight_ids(&ids);
            }
            if !more {
                return Ok(());
            }
        }
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

    /// Finishes the kinds once every process was collected ([`FileKind::finish`]: each unix
    /// socket's peer is in the tree, or with `ext_unix_sk` an outside peer gets an entry).
    ///
    /// # Errors
    /// [`DumpError::Socket`] naming the file.
    pub fn finish_sockets(&mut self, ext_unix_sk: Option<&[u32]>) -> Result<(), DumpError> {
        self.add_in_flight()?;
        for k in self.kinds.iter_mut() {
            k.finish(&mut self.entries, ext_unix_sk)?;
            for (id, source, meta) in k.take_ghosts() {
                self.regular.add_ghost(id, &source, meta)?;
            }
        }
        Ok(())
    }

    /// Writes `files.img`, `remap-fpath.img` and the ghost files into `dir`.
    ///
    /// # Errors
    /// [`DumpError::Image`], [`DumpError::File`].
    pub fn write(&self, dir: &Path) -> Result<(), DumpError> {
        criu_images::write_all(dir.join(names::FILES), magic::FILES, &self.entries)?;
        self.regular.write(dir)?;
        for k in &self.kinds {
            k.write(dir)?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for FileTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileTable")
            .field("entries", &self.entries.len())
            .field("locks", &self.locks.len())
            .finish_non_exhaustive()
    }
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
