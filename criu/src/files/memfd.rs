//! memfd descriptors and mappings (`MEMFD` entries): the name, size, mode, owner, seals and
//! content of each memfd once per inode (`memfd.img` + `pagemap-shmem-SHMID.img` + a pages
//! file, as CRIU 4.2 writes them), and per descriptor its flags and position.
//!
//! Dump: a descriptor whose link reads `/memfd:NAME (deleted)`, or an area mapping one (the
//! VMA dump asks this kind for a `MEMFD` entry through `/proc/PID/map_files`, and marks the
//! area `VMA_AREA_MEMFD` with that entry's id, as CRIU does); the first time an inode is met
//! its seals (`F_GET_SEALS`) and content are read through the `/proc` link (a new open file
//! description: the task's position is untouched); holes and pages of zeros are not saved.
//! A hugetlb memfd (`MFD_HUGETLB`, a file of hugetlbfs) is saved the same way, with CRIU's
//! `hugetlb_flag` (`MFD_HUGETLB` and the page size in `MFD_HUGE_*` form, from the file
//! system's block size); its areas carry `MAP_HUGETLB` and the same page size bits. Restore: the engine makes each inode once per restore
//! ([`inode`]: `memfd_create` with sealing allowed, size, content, mode, owner, then the
//! seals; a hugetlb memfd is made with its `hugetlb_flag` and filled through a shared mapping,
//! since hugetlbfs takes no `write`) and opens every descriptor's own description on it through `/proc/self/fd`, with
//! its flags and position; the tasks inherit them. A task maps the same inode by opening the
//! engine's descriptor through `/proc/ENGINE/fd/N` ([`mapping_path`]), so shared mappings,
//! descriptors and other tasks see one memfd; the pages a private mapping changed come from
//! the task's own pagemap.
//!
//! `F_SEAL_FUTURE_WRITE` (and `F_SEAL_SEAL` with it) is set only once every task has mapped
//! its memory ([`seal_late`]): a task may still map the memfd shared and writable, as it did
//! when the seal was added, and keeps writing through that mapping; new writable mappings and
//! writes then fail as before.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use criu_images::pagemap::{PAGE_SIZE, PE_PARENT, PE_PRESENT};
use criu_images::pb::{FdTypes, FileEntry, MemfdFileEntry, MemfdInodeEntry};
use criu_images::{Pagemap, names};

use super::{DumpFd, Ends, FileKind, ImageCtx, Parsed, RestoreFile, TaskError, fown_zero};
use crate::dump::error::DumpError;
use crate::restore::error::RestoreError;
use crate::restore::images::entry::{bad, img, kind_entry};

/// `HUGETLBFS_MAGIC`: a memfd made with `MFD_HUGETLB` lives there.
const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;

/// The longest memfd name (`memfd_create` takes 249 bytes besides the `memfd:` prefix).
const MAX_NAME: usize = 249;

/// The largest memfd brought back (its content is held in memory while restoring).
const MAX_SIZE: u64 = 1 << 32;

/// `MFD_HUGETLB`.
const MFD_HUGETLB: u32 = libc::MFD_HUGETLB;

/// `MFD_HUGE_SHIFT`: where `memfd_create` takes the log2 of the huge page size.
const MFD_HUGE_SHIFT: u32 = 26;

/// The `MFD_HUGE_*` bits.
const MFD_HUGE_MASK: u32 = 0x3f << MFD_HUGE_SHIFT;

/// The largest huge page brought back (log2): 1 GiB.
const MAX_HUGE_LOG: u32 = 30;

/// CRIU's `hugetlb_flag` of a memfd whose huge pages are `page` bytes (a power of two).
fn hugetlb_flag(page: u64) -> u32 {
    MFD_HUGETLB | (page.trailing_zeros() << MFD_HUGE_SHIFT)
}

/// The huge page size a saved `hugetlb_flag` names, if it is one `memfd_create` takes.
fn huge_page_of(flag: u32) -> Option<u64> {
    if flag & MFD_HUGETLB == 0 || flag & !(MFD_HUGETLB | MFD_HUGE_MASK) != 0 {
        return None;
    }
    let log = (flag & MFD_HUGE_MASK) >> MFD_HUGE_SHIFT;
    // 0: the system's default huge page size, as memfd_create takes it.
    if log == 0 {
        return Some(0);
    }
    (13..=MAX_HUGE_LOG).contains(&log).then(|| 1u64 << log)
}

/// One memfd inode met by the dump.
#[derive(Debug)]
struct DumpedInode {
    ino: u64,
    entry: MemfdInodeEntry,
    /// The saved pages: (offset, bytes), a whole number of pages each, in order.
    pages: Vec<(u64, Vec<u8>)>,
}

/// The memfd kind: the inodes met by a dump (at restore, [`inode`] finds them).
#[derive(Debug, Default)]
pub struct Memfd {
    dumped: Vec<DumpedInode>,
}

impl FileKind for Memfd {
    fn fd_type(&self) -> FdTypes {
        FdTypes::Memfd
    }

    fn claims(&self, fd: &DumpFd<'_>) -> bool {
        fd.name.starts_with("/memfd:") && fd.meta.file_type().is_file()
    }

    fn dump(&mut self, fd: &DumpFd<'_>, id: u32) -> Result<FileEntry, DumpError> {
        let ino = fd.meta.ino();
        let inode_id = match self.dumped.iter().position(|i| i.ino == ino) {
            Some(i) => i as u32 + 1,
            None => {
                let i = dump_inode(fd, self.dumped.len() as u64 + 1)?;
                tracing::debug!(pid = fd.pid, fd = fd.fd, name = %i.entry.name, ino, size = i.entry.size, seals = i.entry.seals, "memfd");
                self.dumped.push(i);
                self.dumped.len() as u32
            }
        };
        Ok(FileEntry {
            id,
            r#type: FdTypes::Memfd as i32,
            memfd: Some(MemfdFileEntry {
                id,
                flags: fd.flags(),
                pos: fd.info.pos,
                fown: fown_zero(),
                inode_id,
            }),
            ..FileEntry::default()
        })
    }

    fn write(&self, dir: &Path) -> Result<(), DumpError> {
        if self.dumped.is_empty() {
            return Ok(());
        }
        // The content is shared memory to the statistics, as CRIU counts it.
        let scanned: u64 = self
            .dumped
            .iter()
            .map(|i| i.entry.size.div_ceil(PAGE_SIZE))
            .sum();
        let written: u64 = self
            .dumped
            .iter()
            .flat_map(|i| i.pages.iter())
            .map(|(_, d)| d.len() as u64 / PAGE_SIZE)
            .sum();
        crate::stats::add_shpages(scanned, written);
        let entries: Vec<MemfdInodeEntry> = self.dumped.iter().map(|i| i.entry.clone()).collect();
        criu_images::ImageDir::new(dir).write_memfd(&entries)?;
        // The pages files of the tasks and of shared memory are written first: take the next
        // free ids.
        let mut pages_id = 1;
        for i in self.dumped.iter().filter(|i| !i.pages.is_empty()) {
            while dir.join(names::pages(pages_id)).exists() {
                pages_id += 1;
            }
            let mut pm = Pagemap {
                pages_id,
                entries: Vec::new(),
            };
            let mut bytes = Vec::new();
            for (off, data) in &i.pages {
                pm.push(*off, data.len() as u64 / PAGE_SIZE, PE_PRESENT);
                bytes.extend_from_slice(data);
            }
            let path = dir.join(names::pages(pages_id));
            std::fs::write(&path, &bytes).map_err(|source| DumpError::File {
                what: format!("write {}", path.display()),
                source,
            })?;
            pm.write(dir.join(names::pagemap_shmem(u64::from(i.entry.shmid))))?;
        }
        Ok(())
    }

    fn parse(&mut self, img: &ImageCtx<'_>, e: &FileEntry, fd: i32) -> Parsed {
        let m = kind_entry(&e.memfd, fd, "memfd")?;
        let inode = inode(img.dir, m.inode_id)?;
        Ok(Arc::new(MemfdFile {
            inode,
            flags: m.flags as i32,
            pos: m.pos,
        }))
    }
}

/// Reads the inode behind `fd`: name, size, owner, mode, seals and the pages holding data.
fn dump_inode(fd: &DumpFd<'_>, inode_id: u64) -> Result<DumpedInode, DumpError> {
    let pid = fd.pid;
    // A mapping has no descriptor (fd -1): name its area's file instead.
    let held = if fd.fd < 0 {
        format!("an area of {pid}")
    } else {
        format!("fd {} of {pid}", fd.fd)
    };
    let refuse = |why: &str| DumpError::FileState {
        kind: "memfd",
        what: format!("{held} is a memfd ({}): {why}", fd.name),
    };
    let err = |what: &str| {
        let what = format!("{what} (memfd, {held})");
        move |source| DumpError::File { what, source }
    };
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(fd.source)
        .map_err(err("open"))?;
    // SAFETY: statfs is plain data; all-zero is a valid value.
    let mut sfs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatfs fills a live local struct from a descriptor we own.
    if unsafe { libc::fstatfs(f.as_raw_fd(), &mut sfs) } != 0 {
        return Err(err("fstatfs")(std::io::Error::last_os_error()));
    }
    let hugetlb = (sfs.f_type as i64 == HUGETLBFS_MAGIC).then_some(sfs.f_bsize as u64);
    if let Some(page) = hugetlb
        && (!page.is_power_of_two() || page.trailing_zeros() > MAX_HUGE_LOG)
    {
        return Err(refuse(&format!("hugetlb memfd with {page}-byte pages")));
    }
    // SAFETY: fcntl query on a descriptor we own.
    let seals = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) };
    if seals < 0 {
        return Err(err("F_GET_SEALS")(std::io::Error::last_os_error()));
    }
    let meta = f.metadata().map_err(err("fstat"))?;
    let size = meta.len();
    if size > MAX_SIZE {
        return Err(refuse(&format!("{size} bytes (at most {MAX_SIZE})")));
    }
    let name = fd
        .name
        .strip_prefix("/memfd:")
        .unwrap_or(fd.name)
        .trim_end_matches(" (deleted)")
        .to_string();
    let pages = read_pages(&f, size).map_err(err("read"))?;
    Ok(DumpedInode {
        ino: meta.ino(),
        entry: MemfdInodeEntry {
            name,
            uid: meta.uid(),
            gid: meta.gid(),
            size,
            shmid: meta.ino() as u32,
            seals: seals as u32,
            inode_id,
            hugetlb_flag: hugetlb.map(hugetlb_flag),
            mode: Some(meta.mode()),
        },
        pages,
    })
}

/// The pages of `f` (of `size` bytes) that hold data, skipping holes (`SEEK_DATA`) and pages of
/// zeros, merged into runs.
fn read_pages(f: &File, size: u64) -> std::io::Result<Vec<(u64, Vec<u8>)>> {
    let end = size.div_ceil(PAGE_SIZE) * PAGE_SIZE;
    let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut off = 0u64;
    let mut page = vec![0u8; PAGE_SIZE as usize];
    while off < end {
        // SAFETY: lseek on a descriptor we own; no memory involved.
        let data = unsafe { libc::lseek(f.as_raw_fd(), off as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break;
            }
            return Err(e);
        }
        off = data as u64 / PAGE_SIZE * PAGE_SIZE;
        if off >= end {
            break;
        }
        page.fill(0);
        let want = (size - off).min(PAGE_SIZE) as usize;
        f.read_exact_at(&mut page[..want], off)?;
        if page.iter().any(|&b| b != 0) {
            match out.last_mut() {
                Some((start, run)) if *start + run.len() as u64 == off => {
                    run.extend_from_slice(&page)
                }
                _ => out.push((off, page.clone())),
            }
        }
        off += PAGE_SIZE;
    }
    Ok(out)
}

/// A memfd inode to make again, once, for all descriptors on it.
#[derive(Debug)]
pub struct MemfdInode {
    /// `inode_id` in the images.
    pub inode_id: u64,
    /// The name (without the `memfd:` prefix).
    pub name: CString,
    /// Size in bytes.
    pub size: u64,
    /// Mode (permission bits used).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// `F_SEAL_*` bits.
    pub seals: u32,
    /// Content: (offset, bytes).
    pub pages: Vec<(u64, Vec<u8>)>,
    /// `MFD_HUGETLB` and its page size bits for a hugetlb memfd, else 0.
    pub hugetlb: u32,
    /// The memfd, once made.
    made: Mutex<Option<OwnedFd>>,
}

/// memfd inodes made so far, by their image: one memfd per inode however many tasks,
/// descriptors and mappings of a restore use it (let go once nothing holds it).
static MADE: Mutex<Vec<(PathBuf, u32, Weak<MemfdInode>)>> = Mutex::new(Vec::new());

/// memfd inode `id` of the images in `d`, read (and checked, with its content) the first time
/// it is asked for while nothing else holds it.
///
/// # Errors
/// [`RestoreError::BadImage`] and the image errors of `memfd.img` and its pages.
pub fn inode(d: &criu_images::ImageDir, id: u32) -> Result<Arc<MemfdInode>, RestoreError> {
    let mut made = MADE.lock().unwrap_or_else(|e| e.into_inner());
    made.retain(|(_, _, w)| w.strong_count() > 0);
    let path = d.path().to_path_buf();
    if let Some(i) = made
        .iter()
        .find(|(p, i, _)| *p == path && *i == id)
        .and_then(|(_, _, w)| w.upgrade())
    {
        return Ok(i);
    }
    let i = read_inodes(d)?
        .remove(&id)
        .ok_or_else(|| bad(names::MEMFD, format!("no memfd inode {id}")))?;
    made.push((path, id, Arc::downgrade(&i)));
    Ok(i)
}

/// The path a task opens to map memfd `inode` (made now if it is not yet): the engine's
/// descriptor of it, through `/proc`, which opens the same inode.
///
/// # Errors
/// [`RestoreError::Sys`] when the memfd cannot be made.
pub fn mapping_path(inode: &MemfdInode) -> Result<CString, RestoreError> {
    let fd = inode.get()?;
    CString::new(format!("/proc/{}/fd/{fd}", std::process::id())).map_err(|_| RestoreError::Sys {
        what: "a memfd path",
        errno: nix::errno::Errno::EINVAL,
    })
}

/// Reads `memfd.img` and each inode's `pagemap-shmem-SHMID.img` and pages, checking them.
fn read_inodes(d: &criu_images::ImageDir) -> Result<HashMap<u32, Arc<MemfdInode>>, RestoreError> {
    let name = names::MEMFD;
    let entries = d.read_memfd().map_err(|e| img(name, e))?;
    let mut out = HashMap::new();
    for e in entries {
        let id = u32::try_from(e.inode_id)
            .map_err(|_| bad(name, format!("inode id {} out of range", e.inode_id)))?;
        let hugetlb = e.hugetlb_flag.unwrap_or(0);
        if hugetlb != 0 {
            let page = huge_page_of(hugetlb).ok_or_else(|| {
                bad(
                    name,
                    format!("memfd {:?}: hugetlb flag {hugetlb:#x}", e.name),
                )
            })?;
            if page != 0 && e.size % page != 0 {
                return Err(bad(
                    name,
                    format!(
                        "hugetlb memfd {:?}: {} bytes, not whole {page}-byte pages",
                        e.name, e.size
                    ),
                ));
            }
        }
        if e.size > MAX_SIZE {
            return Err(bad(name, format!("memfd {:?}: {} bytes", e.name, e.size)));
        }
        if e.name.len() > MAX_NAME {
            return Err(bad(name, format!("memfd name of {} bytes", e.name.len())));
        }
        let cname = CString::new(e.name.clone())
            .map_err(|_| bad(name, format!("memfd name {:?} holds a NUL", e.name)))?;
        let pages = read_content(d, &e)?;
        let inode = MemfdInode {
            inode_id: e.inode_id,
            name: cname,
            size: e.size,
            mode: e.mode.unwrap_or(0o100777),
            uid: e.uid,
            gid: e.gid,
            seals: e.seals,
            pages,
            hugetlb,
            made: Mutex::new(None),
        };
        if out.insert(id, Arc::new(inode)).is_some() {
            return Err(bad(name, format!("inode {id} listed twice")));
        }
    }
    Ok(out)
}

/// The saved pages of memfd `e` (none without a `pagemap-shmem` image).
fn read_content(
    d: &criu_images::ImageDir,
    e: &MemfdInodeEntry,
) -> Result<Vec<(u64, Vec<u8>)>, RestoreError> {
    let pm_name = names::pagemap_shmem(u64::from(e.shmid));
    let path = d.file(&pm_name);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let pm = Pagemap::read(&path).map_err(|x| img(&pm_name, x))?;
    let pages_path = d.pages_path(pm.pages_id);
    let pages = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&pages_path)
        .map_err(|source| RestoreError::MissingFile {
            path: pages_path.clone(),
            source,
        })?;
    let limit = e.size.div_ceil(PAGE_SIZE) * PAGE_SIZE;
    let mut at = 0u64;
    let mut out = Vec::new();
    for p in &pm.entries {
        let flags = p.effective_flags();
        if flags & PE_PARENT != 0 {
            return Err(RestoreError::FileState {
                kind: "memfd",
                what: format!("memfd pages in a parent image ({pm_name})"),
            });
        }
        if flags & PE_PRESENT == 0 {
            continue;
        }
        let end = p.end().filter(|&end| end <= limit).ok_or_else(|| {
            bad(
                &pm_name,
                format!("pages at {:#x} beyond the memfd", p.vaddr),
            )
        })?;
        let len = end - p.vaddr;
        let mut buf = vec![0u8; len as usize];
        pages
            .read_exact_at(&mut buf, at)
            .map_err(|_| bad(&pm_name, format!("pages file too short at {at:#x}")))?;
        at += len;
        out.push((p.vaddr, buf));
    }
    Ok(out)
}

impl MemfdInode {
    /// The memfd, made the first time (content, mode, owner and seals in place).
    fn get(&self) -> Result<i32, RestoreError> {
        let mut made = self.made.lock().map_err(|_| RestoreError::Sys {
            what: "a memfd lock was poisoned",
            errno: nix::errno::Errno::EINVAL,
        })?;
        if let Some(fd) = made.as_ref() {
            return Ok(fd.as_raw_fd());
        }
        // SAFETY: memfd_create with a NUL-terminated name.
        let fd = unsafe {
            libc::memfd_create(
                self.name.as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING | self.hugetlb,
            )
        };
        if fd < 0 {
            return Err(super::sys("memfd_create"));
        }
        let fd = super::owned(fd);
        let file = File::from(fd.try_clone().map_err(|_| super::sys("dup of a memfd"))?);
        file.set_len(self.size)
            .map_err(|_| super::sys("setting a memfd's size"))?;
        if self.hugetlb != 0 {
            self.fill_hugetlb(&file)?;
        } else {
            for (off, data) in &self.pages {
                // The last page may reach past the size: write only what lies inside.
                let n = (self.size.saturating_sub(*off)).min(data.len() as u64) as usize;
                file.write_all_at(&data[..n], *off)
                    .map_err(|_| super::sys("writing a memfd's content"))?;
            }
        }
        // SAFETY: fchmod/fchown on the memfd we own.
        unsafe {
            if libc::fchmod(fd.as_raw_fd(), self.mode & 0o7777) != 0 {
                return Err(super::sys("fchmod of a memfd"));
            }
            if (self.uid != libc::geteuid() || self.gid != libc::getegid())
                && libc::fchown(fd.as_raw_fd(), self.uid, self.gid) != 0
            {
                return Err(super::sys("fchown of a memfd"));
            }
        }
        let now = self.seals & !late_seals(self.seals);
        if now != 0 {
            // SAFETY: fcntl on the memfd we own.
            if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, now as i32) } != 0 {
                return Err(super::sys("sealing a memfd"));
            }
        }
        tracing::debug!(inode = self.inode_id, name = ?self.name, size = self.size, hugetlb = self.hugetlb, "memfd made");
        let raw = fd.as_raw_fd();
        *made = Some(fd);
        Ok(raw)
    }

    /// Writes the content of a hugetlb memfd (`file`, already of its size) through a shared
    /// mapping: hugetlbfs takes no `write`. Each page touched takes a huge page from the pool.
    fn fill_hugetlb(&self, file: &File) -> Result<(), RestoreError> {
        if self.pages.is_empty() || self.size == 0 {
            return Ok(());
        }
        let len = usize::try_from(self.size).map_err(|_| super::sys("a memfd's size"))?;
        // SAFETY: a new shared mapping of our own memfd of `len` bytes; the kernel picks the
        // address; it is unmapped below and nothing else points into it.
        let m = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if m == libc::MAP_FAILED {
            return Err(RestoreError::FileState {
                kind: "memfd",
                what: format!(
                    "hugetlb memfd {:?} ({} bytes): mapping it failed ({}; free huge pages in /proc/sys/vm/nr_hugepages?)",
                    self.name,
                    self.size,
                    std::io::Error::last_os_error()
                ),
            });
        }
        // SAFETY: `m` maps `len` writable bytes until the munmap below; each run lies inside
        // the size (checked against the size when the images were read) and is cut to it.
        let dst = unsafe { std::slice::from_raw_parts_mut(m.cast::<u8>(), len) };
        for (off, data) in &self.pages {
            let at = (*off as usize).min(len);
            let n = (len - at).min(data.len());
            dst[at..at + n].copy_from_slice(&data[..n]);
        }
        // SAFETY: unmaps the mapping made above; `dst` is not used after this.
        unsafe { libc::munmap(m, len) };
        Ok(())
    }
}

/// The seals of `seals` set only once the tasks have mapped their memory: `F_SEAL_FUTURE_WRITE`
/// (which forbids new writable shared mappings, which the tasks make again), and `F_SEAL_SEAL`
/// with it (which would forbid adding it later).
fn late_seals(seals: u32) -> u32 {
    let future = libc::F_SEAL_FUTURE_WRITE as u32;
    if seals & future == 0 {
        return 0;
    }
    seals & (future | libc::F_SEAL_SEAL as u32)
}

/// Sets the seals held back until every task mapped its memory ([`late_seals`]) on each memfd
/// this restore of the images in `dir` made.
///
/// # Errors
/// [`RestoreError::Sys`] when `F_ADD_SEALS` fails.
pub fn seal_late(dir: &Path) -> Result<(), RestoreError> {
    let live: Vec<Arc<MemfdInode>> = {
        let made = MADE.lock().unwrap_or_else(|e| e.into_inner());
        made.iter()
            .filter(|(p, _, _)| p == dir)
            .filter_map(|(_, _, w)| w.upgrade())
            .collect()
    };
    for i in live {
        let late = late_seals(i.seals);
        if late == 0 {
            continue;
        }
        let made = i.made.lock().map_err(|_| RestoreError::Sys {
            what: "a memfd lock was poisoned",
            errno: nix::errno::Errno::EINVAL,
        })?;
        let Some(fd) = made.as_ref() else { continue };
        // SAFETY: fcntl on the memfd the engine holds.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, late as i32) } != 0 {
            return Err(super::sys("sealing a memfd once it is mapped"));
        }
        tracing::debug!(
            inode = i.inode_id,
            seals = late,
            "memfd sealed after mapping"
        );
    }
    Ok(())
}

/// One descriptor of a memfd: its own open file description on the inode.
#[derive(Debug)]
pub struct MemfdFile {
    /// The inode.
    pub inode: Arc<MemfdInode>,
    /// Open flags.
    pub flags: i32,
    /// Position.
    pub pos: u64,
}

impl RestoreFile for MemfdFile {
    fn fd_type(&self) -> FdTypes {
        FdTypes::Memfd
    }

    fn made_by_engine(&self) -> bool {
        true
    }

    fn make_in_task(&self, fd: i32) -> Result<Ends, TaskError> {
        super::engine_makes_it(fd)
    }

    fn make_in_engine(&self) -> Result<Vec<OwnedFd>, RestoreError> {
        let m = self.inode.get()?;
        super::regular::reopen_in_engine(m, self.flags, self.pos).map(|f| vec![f])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Holes and pages of zeros are not saved; the tail page is read up to the size.
    #[test]
    fn read_pages_skips_holes_and_zero_pages() {
        // SAFETY: memfd_create with a NUL-terminated name; the descriptor is owned below.
        let fd = unsafe { libc::memfd_create(c"t".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0);
        let f = File::from(super::super::owned(fd));
        let size = 5 * PAGE_SIZE + 10;
        f.set_len(size).unwrap();
        f.write_all_at(&[1u8; 4096], 0).unwrap();
        f.write_all_at(&[0u8; 4096], 2 * PAGE_SIZE).unwrap();
        f.write_all_at(b"tail", 5 * PAGE_SIZE).unwrap();
        let pages = read_pages(&f, size).unwrap();
        let got: Vec<(u64, usize)> = pages.iter().map(|(o, d)| (*o, d.len())).collect();
        assert_eq!(got, [(0, 4096), (5 * PAGE_SIZE, 4096)]);
        assert_eq!(&pages[1].1[..5], b"tail\0");
    }

    /// CRIU 4.2's memfd images read as the memfd it dumped: name, size, seals, 16 pages.
    #[test]
    fn criu_fixture_memfd_reads_back() {
        let dir = Path::new("/work/shared/fixtures/criu-4.2/files");
        if !dir.exists() {
            return;
        }
        let inodes = read_inodes(&criu_images::ImageDir::new(dir)).unwrap();
        let i = inodes.get(&1).expect("inode 1");
        assert_eq!(i.name.to_bytes(), b"fx-memfd");
        assert_eq!(i.size, 65536);
        assert_eq!(i.seals, (libc::F_SEAL_SHRINK | libc::F_SEAL_GROW) as u32);
        assert_eq!(i.mode, 0o100777);
        let bytes: usize = i.pages.iter().map(|(_, d)| d.len()).sum();
        assert_eq!(bytes, 16 * 4096);
    }
}
