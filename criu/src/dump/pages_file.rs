//! Writing a `pages-N.img`: runs of task memory ([`Segment`]s) copied into it in order, read with
//! `process_vm_readv` in large batches (the fast path), or through `/proc/PID/mem` for what the
//! task itself cannot read (`PROT_NONE` holding data). Onto a tmpfs that backs files with huge
//! pages, a large file is filled through mappings of it instead of `write(2)`. A file that
//! cannot be completed is removed, giving its space (memory, on tmpfs) back. Which pages go in is
//! [`super::pages`]'s business.
// Unsafe code: fills the pages image through a shared mapping of the file (fallocate, mmap,
// munmap).
#![allow(unsafe_code)]

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use criu_images::names;

use super::error::DumpError;

/// Writes `pages-PAGES_ID.img` with `segs` of the memory of `pid`, in order.
///
/// # Errors
/// [`DumpError::Memory`] if the task's memory cannot be read, [`DumpError::File`] on write
/// errors; the partial file is removed.
pub(super) fn write_one(
    pid: i32,
    segs: &[Segment],
    dir: &Path,
    pages_id: u32,
) -> Result<(), DumpError> {
    let total: u64 = segs.iter().map(|s| s.len).sum();
    let path = dir.join(names::pages(pages_id));
    removed_on_error(&path, || {
        let huge = if total >= MAPPED_MIN {
            tmpfs_huge(dir)
        } else {
            None
        };
        if total >= HINT_MIN && huge == Some(false) {
            tracing::info!(
                "{} MiB of pages onto a tmpfs without huge pages: a tmpfs mounted with \
                 huge=within_size takes them several times faster",
                total >> 20
            );
        }
        if huge == Some(true) {
            copy_segments_mapped(pid, segs, &path, total)?;
            tracing::debug!(
                pid,
                bytes = total,
                "pages-{pages_id}.img filled through a mapping (tmpfs with huge pages)"
            );
            Ok(())
        } else {
            let mut out = PagesFile::create(dir, pages_id)?;
            out.progress = crate::stats::ProgressMeter::new(pid, total);
            copy_segments(pid, segs, &mut out)?;
            out.finish()
        }
    })
}

/// Writes `pages-PAGES_ID.img` with the memory of several processes: for each `(pid, segs)` of
/// `groups`, in order, `segs` of that process's memory.
///
/// # Errors
/// As [`write_one`].
pub(super) fn write_many(
    groups: &[(i32, Vec<Segment>)],
    dir: &Path,
    pages_id: u32,
) -> Result<(), DumpError> {
    removed_on_error(&dir.join(names::pages(pages_id)), || {
        let mut out = PagesFile::create(dir, pages_id)?;
        for (pid, segs) in groups {
            copy_segments(*pid, segs, &mut out)?;
        }
        out.finish()
    })
}

/// Runs `fill`, which writes the pages file `path`; if it fails, the partial file is removed so
/// that its space (memory, on tmpfs) is given back, and the dump can record its failure.
fn removed_on_error(
    path: &Path,
    fill: impl FnOnce() -> Result<(), DumpError>,
) -> Result<(), DumpError> {
    let r = fill();
    if r.is_err() {
        let _ = std::fs::remove_file(path);
    }
    r
}

/// From this many bytes on, a pages file on a huge-page tmpfs is filled through a mapping of it.
const MAPPED_MIN: u64 = 8 << 20;

/// From this many bytes on, a dump onto a small-page tmpfs says that huge pages would help.
const HINT_MIN: u64 = 64 << 20;

/// For `dir` on tmpfs, whether that tmpfs backs files with huge folios (mounted `huge=always` or
/// `huge=within_size`, or any tmpfs when `shmem_enabled` is `force`); `None` off tmpfs. With
/// huge folios the pages file is best filled through a mapping ([`copy_segments_mapped`]); on
/// small-page tmpfs `write(2)` wins, as it need not clear the pages it fills.
fn tmpfs_huge(dir: &Path) -> Option<bool> {
    let tmpfs = nix::sys::statfs::statfs(dir)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
    tmpfs.then(|| huge_folios(dir))
}

/// Whether the tmpfs of `dir` backs files with huge folios (see [`tmpfs_huge`]).
fn huge_folios(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let policy = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/shmem_enabled")
        .unwrap_or_default();
    if policy.contains("[deny]") {
        return false;
    }
    if policy.contains("[force]") {
        return true;
    }
    let Ok(dev) = std::fs::metadata(dir).map(|m| m.dev()) else {
        return false;
    };
    let dev = (libc::major(dev), libc::minor(dev));
    std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|mi| mount_huge(&mi, dev))
}

/// Whether the file system `dev` (major, minor) of `mountinfo` is mounted with huge folios for
/// all files (`huge=always` or `huge=within_size` among its super options).
fn mount_huge(mountinfo: &str, dev: (u32, u32)) -> bool {
    let want = format!("{}:{}", dev.0, dev.1);
    mountinfo.lines().any(|l| {
        let mut f = l.split(' ');
        if f.nth(2) != Some(want.as_str()) {
            return false;
        }
        // After the optional fields: "- fstype source super-options".
        let mut rest = l.split(" - ").nth(1).unwrap_or("").split(' ');
        rest.nth(2)
            .unwrap_or("")
            .split(',')
            .any(|o| o == "huge=always" || o == "huge=within_size")
    })
}

/// Copies `segs` of task memory (`total` bytes), in order, into a new pages file at `path` on
/// a huge-page tmpfs: the file is allocated whole first (so a full file system fails here,
/// cleanly), and two threads, each taking half, read the task's memory straight into shared
/// mappings of it, [`WINDOW`] bytes at a time. This saves the copy through a buffer, and the threads do not queue
/// on the file's lock as writers do.
fn copy_segments_mapped(
    pid: i32,
    segs: &[Segment],
    path: &Path,
    total: u64,
) -> Result<(), DumpError> {
    use std::os::fd::AsRawFd;
    let file_err = |what: &str| {
        let what = format!("{what} {}", path.display());
        move |source| DumpError::File { what, source }
    };
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(file_err("create"))?;
    let len = usize::try_from(total)
        .map_err(|_| file_err("size")(std::io::Error::from_raw_os_error(libc::EFBIG)))?;
    // SAFETY: fallocate on our own descriptor.
    if unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, total as libc::off_t) } != 0 {
        return Err(file_err("allocate")(std::io::Error::last_os_error()));
    }
    let fd = f.as_raw_fd();
    // Each thread fills one half of the file, split at a multiple of 2 MiB (whole huge folios),
    // one window at a time.
    const HUGE: usize = 2 << 20;
    let mid = (len / 2) / HUGE * HUGE;
    let progress = std::sync::Mutex::new(crate::stats::ProgressMeter::new(pid, total));
    let fill = |from: usize, to: usize| -> Result<(), DumpError> {
        let mut mem: Option<File> = None;
        let mut w = from;
        while w < to {
            let n = (to - w).min(WINDOW);
            let mut win = Window::map(fd, w, n).map_err(file_err("map"))?;
            let buf = win.bytes();
            let mut at = 0usize; // offset in the file of the current segment
            for sg in segs {
                let sl = sg.len as usize;
                // The part of this segment in the window [w, w + n).
                let (lo, hi) = (at.max(w), (at + sl).min(w + n));
                if lo < hi {
                    let addr = sg.addr + (lo - at) as u64;
                    read_into(pid, sg.readable, addr, &mut buf[lo - w..hi - w], &mut mem)?;
                }
                at += sl;
                if at >= w + n {
                    break;
                }
            }
            w += n;
            if let Ok(mut p) = progress.lock()
                && let Some(p) = p.as_mut()
            {
                p.add(n as u64);
            }
        }
        Ok(())
    };
    std::thread::scope(|sc| {
        let second = sc.spawn(|| fill(mid, len));
        let first = fill(0, mid);
        let second = second.join().unwrap_or_else(|_| {
            Err(file_err("fill")(std::io::Error::other(
                "copy thread panicked",
            )))
        });
        first.and(second)
    })
}

/// How much of a pages file each thread maps at a time: the dumper's resident memory for the
/// copy stays at twice this, whatever the size of the file.
const WINDOW: usize = 16 << 20;

/// A shared read-write mapping of `len` bytes of a file at offset `off` (a multiple of 2 MiB, so
/// huge folios are mapped whole), unmapped on drop.
struct Window {
    at: *mut u8,
    len: usize,
}

impl Window {
    fn map(fd: std::os::fd::RawFd, off: usize, len: usize) -> std::io::Result<Window> {
        let off = libc::off_t::try_from(off).map_err(|_| std::io::Error::other("offset"))?;
        // SAFETY: a new shared mapping of part of our own file; checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                off,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Window {
            at: p as *mut u8,
            len,
        })
    }

    /// The mapped bytes.
    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is ours, `len` bytes, readable and writable, and reached only
        // through this borrow of the window. The caller allocated the file in full, so no page
        // of it is missing; the kernel fills it (process_vm_readv, pread), and a fault there
        // fails that call instead of raising SIGBUS.
        unsafe { std::slice::from_raw_parts_mut(self.at, self.len) }
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, no longer borrowed once this runs.
        unsafe { libc::munmap(self.at as *mut libc::c_void, self.len) };
    }
}

/// A range of task memory to copy into a pages file.
#[derive(Clone, Copy, Debug)]
pub(super) struct Segment {
    /// Whether the task itself may read it (else it is read through `/proc/PID/mem`).
    pub readable: bool,
    /// Its address in the task.
    pub addr: u64,
    /// Its length in bytes.
    pub len: u64,
}

/// The size of the buffers the copy pipeline passes around: large enough that a write costs
/// far more than the syscall, small enough that the dumper stays small.
const CHUNK: usize = 1 << 20;

/// How many such buffers the pipeline has: one being filled while the other is written.
const BUFFERS: usize = 2;

/// Copies `segs` of task memory, in order, into `out` (a fresh pages file).
fn copy_segments(pid: i32, segs: &[Segment], out: &mut PagesFile) -> Result<(), DumpError> {
    let total: u64 = segs.iter().map(|s| s.len).sum();
    let mut mem: Option<File> = None;
    if total <= 2 * CHUNK as u64 {
        let mut buf = vec![0u8; total as usize];
        let mut at = 0usize;
        for sg in segs {
            let n = sg.len as usize;
            read_into(pid, sg.readable, sg.addr, &mut buf[at..at + n], &mut mem)?;
            at += n;
        }
        return out.write(&buf);
    }
    // Big copies run as a pipeline: a reader thread fills buffers from the task while this
    // thread writes the previous ones out, so reading and writing overlap.
    std::thread::scope(|sc| {
        let (full_tx, full_rx) =
            std::sync::mpsc::sync_channel::<Result<Vec<u8>, DumpError>>(BUFFERS);
        let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        for _ in 0..BUFFERS {
            let _ = empty_tx.send(vec![0u8; CHUNK]);
        }
        sc.spawn(move || {
            let mut mem: Option<File> = None;
            let Ok(mut buf) = empty_rx.recv() else {
                return;
            };
            let mut fill = 0usize;
            for sg in segs {
                let mut done = 0u64;
                while done < sg.len {
                    let n = ((sg.len - done) as usize).min(CHUNK - fill);
                    let dst = &mut buf[fill..fill + n];
                    if let Err(e) = read_into(pid, sg.readable, sg.addr + done, dst, &mut mem) {
                        let _ = full_tx.send(Err(e));
                        return;
                    }
                    fill += n;
                    done += n as u64;
                    if fill == CHUNK {
                        if full_tx.send(Ok(buf)).is_err() {
                            return;
                        }
                        let Ok(b) = empty_rx.recv() else {
                            return;
                        };
                        buf = b;
                        fill = 0;
                    }
                }
            }
            if fill > 0 {
                buf.truncate(fill);
                let _ = full_tx.send(Ok(buf));
            }
        });
        for msg in full_rx {
            let b = msg?;
            out.write(&b)?;
            let _ = empty_tx.send(b);
        }
        Ok(())
    })
}

/// Reads task memory at `addr` into `buf`: `process_vm_readv` for what the task can read,
/// `/proc/PID/mem` (opened once, into `mem`) for the rest.
fn read_into(
    pid: i32,
    readable: bool,
    addr: u64,
    buf: &mut [u8],
    mem: &mut Option<File>,
) -> Result<(), DumpError> {
    crate::stats::memdump(|| read_task(pid, readable, addr, buf, mem))
}

fn read_task(
    pid: i32,
    readable: bool,
    addr: u64,
    buf: &mut [u8],
    mem: &mut Option<File>,
) -> Result<(), DumpError> {
    if readable {
        return read_remote(pid, addr, buf);
    }
    let f =
        match mem {
            Some(f) => f,
            None => mem.insert(File::open(format!("/proc/{pid}/mem")).map_err(|e| {
                DumpError::Memory {
                    pid,
                    addr,
                    source: e,
                }
            })?),
        };
    f.read_exact_at(buf, addr).map_err(|e| DumpError::Memory {
        pid,
        addr,
        source: e,
    })
}

/// A `pages-N.img` being written.
struct PagesFile {
    path: std::path::PathBuf,
    out: BufWriter<File>,
    /// Where the bytes written are reported, for a big file.
    progress: Option<crate::stats::ProgressMeter>,
}

impl PagesFile {
    fn create(dir: &Path, id: u32) -> Result<PagesFile, DumpError> {
        let path = dir.join(names::pages(id));
        let f = criu_images::create_file(&path).map_err(|e| DumpError::File {
            what: format!("create {}", path.display()),
            source: e,
        })?;
        Ok(PagesFile {
            path,
            out: BufWriter::with_capacity(1 << 20, f),
            progress: None,
        })
    }

    fn write(&mut self, b: &[u8]) -> Result<(), DumpError> {
        crate::stats::memwrite(|| self.out.write_all(b)).map_err(|e| DumpError::File {
            what: format!("write {}", self.path.display()),
            source: e,
        })?;
        if let Some(p) = self.progress.as_mut() {
            p.add(b.len() as u64);
        }
        Ok(())
    }

    fn finish(mut self) -> Result<(), DumpError> {
        crate::stats::memwrite(|| self.out.flush()).map_err(|e| DumpError::File {
            what: format!("write {}", self.path.display()),
            source: e,
        })
    }
}

/// Reads `buf.len()` bytes at `addr` of `pid` with `process_vm_readv`, falling back to
/// `/proc/PID/mem` for what it cannot read.
fn read_remote(pid: i32, addr: u64, buf: &mut [u8]) -> Result<(), DumpError> {
    let mut done = 0usize;
    while done < buf.len() {
        let remote = [nix::sys::uio::RemoteIoVec {
            base: (addr as usize) + done,
            len: buf.len() - done,
        }];
        let mut local = [std::io::IoSliceMut::new(&mut buf[done..])];
        match nix::sys::uio::process_vm_readv(nix::unistd::Pid::from_raw(pid), &mut local, &remote)
        {
            Ok(0) | Err(_) => {
                // A page the task cannot read right now: /proc/PID/mem forces access.
                let f = File::open(format!("/proc/{pid}/mem")).map_err(|e| DumpError::Memory {
                    pid,
                    addr: addr + done as u64,
                    source: e,
                })?;
                f.read_exact_at(&mut buf[done..], addr + done as u64)
                    .map_err(|e| DumpError::Memory {
                        pid,
                        addr: addr + done as u64,
                        source: e,
                    })?;
                return Ok(());
            }
            Ok(n) => done += n,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_huge_reads_super_options() {
        let mi = "22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n\
                  30 22 0:25 / /dev/shm rw,relatime shared:5 - tmpfs tmpfs rw,size=100k\n\
                  31 22 0:26 / /tmp/h rw master:3 - tmpfs x rw,size=2g,huge=within_size\n\
                  32 22 0:27 / /tmp/a rw - tmpfs x rw,huge=always,inode64\n\
                  33 22 0:28 / /tmp/d rw - tmpfs x rw,huge=advise\n";
        assert!(!mount_huge(mi, (0, 21)));
        assert!(!mount_huge(mi, (0, 25)));
        assert!(mount_huge(mi, (0, 26)));
        assert!(mount_huge(mi, (0, 27)));
        assert!(!mount_huge(mi, (0, 28)));
        assert!(!mount_huge(mi, (0, 99)));
        assert!(!mount_huge("garbage\n\n - -", (0, 26)));
    }
}
