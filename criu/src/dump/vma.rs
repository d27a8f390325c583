//! The VMAs of a task as CRIU's `vma_entry`s: each `/proc/PID/smaps` line classified the way
//! CRIU classifies it (`VMA_AREA_REGULAR`, `VMA_ANON_PRIVATE`, `VMA_FILE_PRIVATE`,
//! `VMA_FILE_SHARED`, `VMA_ANON_SHARED`, heap, vDSO, `[vvar]` + `[vvar_vclock]` merged into one
//! `VMA_AREA_VVAR`, vsyscall), with its protection, flags and madvise bits, and the files it maps
//! registered in the file table. Which of their pages are saved, and how, is [`super::pages`].

use criu_images::pb::VmaEntry;
use criu_images::vma::{TASK_SIZE, status};

use super::error::DumpError;
use super::files::FileTable;
use super::proc::Mapping;

const MAP_SHARED: u32 = libc::MAP_SHARED as u32;
const MAP_PRIVATE: u32 = libc::MAP_PRIVATE as u32;
const MAP_ANONYMOUS: u32 = libc::MAP_ANONYMOUS as u32;
/// `MAP_DROPPABLE`: a mapping type of its own (in `MAP_TYPE`, like shared and private).
pub const MAP_DROPPABLE: u32 = 0x08;
/// The mapping type bits of mmap's flags.
const MAP_TYPE: u32 = 0x0f;

/// One VMA of the dump with what its pages need.
#[derive(Clone, Debug, PartialEq)]
pub struct Vma {
    /// The image entry.
    pub entry: VmaEntry,
    /// Whether the task itself may read it (`r` permission).
    pub readable: bool,
}

impl Vma {
    /// Whether all of `bits` ([`status`]) are set.
    pub fn is(&self, bits: u32) -> bool {
        self.entry.has_status(bits)
    }

    /// Whether this VMA's pages go into the pages image.
    pub fn dumps_pages(&self) -> bool {
        // Droppable memory's pages are the kernel's to drop at any time (and a fork wipes
        // them): it comes back empty, as after a drop.
        (self.is(status::ANON_PRIVATE) || self.is(status::FILE_PRIVATE) || self.is(status::AIORING))
            && self.entry.flags & MAP_TYPE != MAP_DROPPABLE
            && !self.is(status::VVAR)
            && self.entry.end <= TASK_SIZE
    }
}

/// Turns `/proc/PID/smaps` lines into CRIU's VMA entries, registering mapped files in `files`.
///
/// # Errors
/// [`DumpError::Uprobes`], [`DumpError::SharedAnon`], [`DumpError::SysvShm`] for mappings
/// criu cannot dump, [`DumpError::File`] if a mapped file cannot be reached.
pub fn classify(pid: i32, maps: &[Mapping], files: &mut FileTable) -> Result<Vec<Vma>, DumpError> {
    let mut out: Vec<Vma> = Vec::with_capacity(maps.len());
    for m in maps {
        let mut prot = 0u32;
        if m.readable() {
            prot |= libc::PROT_READ as u32;
        }
        if m.writable() {
            prot |= libc::PROT_WRITE as u32;
        }
        if m.executable() {
            prot |= libc::PROT_EXEC as u32;
        }
        let mut flags = if m.shared() { MAP_SHARED } else { MAP_PRIVATE };
        let mut madv = 0u64;
        for f in &m.vm_flags {
            match f {
                b"gd" => flags |= libc::MAP_GROWSDOWN as u32,
                b"lo" => flags |= libc::MAP_LOCKED as u32,
                b"nr" => flags |= libc::MAP_NORESERVE as u32,
                b"ht" => flags |= libc::MAP_HUGETLB as u32,
                b"dp" => flags = (flags & !MAP_TYPE) | MAP_DROPPABLE,
                b"sr" => madv |= 1 << libc::MADV_SEQUENTIAL,
                b"rr" => madv |= 1 << libc::MADV_RANDOM,
                b"dc" => madv |= 1 << libc::MADV_DONTFORK,
                b"dd" => madv |= 1 << libc::MADV_DONTDUMP,
                b"mg" => madv |= 1 << libc::MADV_MERGEABLE,
                b"hg" => madv |= 1 << libc::MADV_HUGEPAGE,
                b"nh" => madv |= 1 << libc::MADV_NOHUGEPAGE,
                b"wf" => madv |= 1 << libc::MADV_WIPEONFORK,
                _ => {}
            }
        }
        let mut e = VmaEntry {
            start: m.start.0,
            end: m.end.0,
            pgoff: m.offset,
            shmid: 0,
            prot,
            flags,
            status: 0,
            fd: -1,
            madv: (madv != 0).then_some(madv),
            fdflags: None,
        };
        let anon = |e: &mut VmaEntry| {
            e.flags |= MAP_ANONYMOUS;
            e.status |= status::ANON_PRIVATE;
        };
        match m.name.as_str() {
            "[vsyscall]" => {
                e.status = status::VSYSCALL;
                anon(&mut e);
            }
            "[vdso]" => {
                e.status = status::REGULAR | status::VDSO;
                anon(&mut e);
            }
            "[vvar]" | "[vvar_vclock]" => {
                // CRIU merges the adjacent vvar areas into one.
                if let Some(prev) = out.last_mut()
                    && prev.is(status::VVAR)
                    && prev.entry.end == e.start
                {
                    prev.entry.end = e.end;
                    continue;
                }
                e.status = status::REGULAR | status::VVAR;
                anon(&mut e);
            }
            "[heap]" => {
                e.status = status::REGULAR | status::HEAP;
                anon(&mut e);
            }
            "[uprobes]" => {
                return Err(DumpError::Uprobes {
                    start: m.start,
                    end: m.end,
                });
            }
            n if n.starts_with("/[aio]") => {
                // An AIO ring (crate::files::aio): its pages saved as private memory.
                if crate::files::aio::ring_entry(m.start.0, m.end.0).is_none() {
                    return Err(DumpError::FileState {
                        kind: "aio",
                        what: format!(
                            "an AIO ring (io_setup) of {pid} at {:#x}-{:#x} of a size no ring has",
                            m.start.0, m.end.0
                        ),
                    });
                }
                tracing::debug!(pid, start = m.start.0, end = m.end.0, "AIO ring");
                e.flags = libc::MAP_PRIVATE as u32 | MAP_ANONYMOUS;
                e.status = status::AIORING;
            }
            _ if m.inode == 0 && !m.name.starts_with('/') => {
                // Anonymous ([stack], [anon:...], or unnamed).
                if m.shared() {
                    return Err(DumpError::SharedAnon {
                        pid,
                        start: m.start,
                        end: m.end,
                    });
                }
                e.status = status::REGULAR;
                anon(&mut e);
            }
            name if m.shared() && name.starts_with("/dev/zero") => {
                // Shared anonymous memory (`MAP_SHARED | MAP_ANONYMOUS`): a shmem object named by
                // its inode; its pages go to pagemap-shmem-SHMID.img.
                e.flags |= MAP_ANONYMOUS;
                e.status = status::REGULAR | status::ANON_SHARED;
                e.shmid = m.inode;
            }
            name if name.starts_with("/anon_hugepage") => {
                // Anonymous MAP_HUGETLB memory (a file of the kernel's hugetlbfs), as CRIU
                // writes it without a memfd: anonymous memory with MAP_HUGETLB and the page size
                // in the flags; shared, an object named by its inode like other shared
                // anonymous memory. Its pages are saved like any other's.
                e.flags |= MAP_ANONYMOUS | libc::MAP_HUGETLB as u32 | hugetlb_size_flag(pid, m);
                if m.shared() {
                    e.status = status::REGULAR | status::ANON_SHARED;
                    e.shmid = m.inode;
                } else {
                    e.status = status::REGULAR | status::ANON_PRIVATE;
                }
            }
            name if name.starts_with("socket:[") => {
                // A packet socket's rings mapped by the task (crate::files::packet): no pages
                // saved, as CRIU does; `shmid` is the socket's inode until the task's
                // descriptors are dumped, then its file id (collect.rs).
                e.status = status::REGULAR | status::SOCKET;
                e.shmid = m.inode;
            }
            name => {
                if name.starts_with("/SYSV") {
                    return Err(DumpError::SysvShm {
                        pid,
                        name: name.to_string(),
                        start: m.start,
                    });
                }
                let fdflags = if m.shared() {
                    shared_open_mode(pid, m)
                } else {
                    libc::O_RDONLY as u32
                };
                e.shmid = if name.starts_with("/memfd:") {
                    // A memfd: a MEMFD file (its content saved once, with its descriptors').
                    e.status |= status::MEMFD;
                    if e.flags & libc::MAP_HUGETLB as u32 != 0 {
                        // A hugetlb memfd: its page size too, as CRIU writes it.
                        e.flags |= hugetlb_size_flag(pid, m);
                    }
                    u64::from(files.add_mapped_memfd(pid, m, fdflags)?)
                } else {
                    u64::from(files.add_mapped(pid, m, fdflags)?)
                };
                e.fdflags = Some(fdflags);
                e.status |= status::REGULAR
                    | if m.shared() {
                        status::FILE_SHARED
                    } else {
                        status::FILE_PRIVATE
                    };
            }
        }
        out.push(Vma {
            entry: e,
            readable: m.readable(),
        });
    }
    Ok(out)
}

/// `MAP_HUGE_SHIFT`: where `mmap` takes the log2 of the huge page size in its flags (CRIU
/// keeps the same bits in a VMA entry's flags).
pub const MAP_HUGE_SHIFT: u32 = 26;

/// The huge page size of hugetlb area `m` in `MAP_HUGE_*` form: the block size of the
/// hugetlbfs file behind it (its `map_files` link), else the system's default huge page size
/// (`Hugepagesize` in `/proc/meminfo`), else 2 MiB.
fn hugetlb_size_flag(pid: i32, m: &Mapping) -> u32 {
    use std::os::unix::fs::MetadataExt;
    let link = format!("/proc/{pid}/map_files/{:x}-{:x}", m.start.0, m.end.0);
    let size = std::fs::metadata(link)
        .map(|md| md.blksize())
        .ok()
        .filter(|b| b.is_power_of_two() && *b > 4096)
        .or_else(|| {
            std::fs::read_to_string("/proc/meminfo")
                .ok()?
                .lines()
                .find_map(|l| l.strip_prefix("Hugepagesize:"))?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
                .map(|kb| kb << 10)
                .filter(|b| b.is_power_of_two())
        })
        .unwrap_or(2 << 20);
    size.trailing_zeros() << MAP_HUGE_SHIFT
}

/// The open mode of the file behind a shared file mapping: the mode of its
/// `/proc/PID/map_files` link shows the file's (`0400` read, `0200` write), which the
/// mapping's current protection does not (a read-only mapping of a file opened `O_RDWR` may
/// be made writable later). Falls back to the protection when the link cannot be read.
fn shared_open_mode(pid: i32, m: &Mapping) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    let link = format!("/proc/{pid}/map_files/{:x}-{:x}", m.start.0, m.end.0);
    match std::fs::symlink_metadata(link).map(|md| md.permissions().mode() & 0o600) {
        Ok(0o600) => libc::O_RDWR as u32,
        Ok(0o200) => libc::O_WRONLY as u32,
        Ok(0o400) => libc::O_RDONLY as u32,
        _ if m.writable() => libc::O_RDWR as u32,
        _ => libc::O_RDONLY as u32,
    }
}

/// The `aio_ring_entry`s of the AIO rings among a task's areas (see `crate::files::aio`).
pub fn aio_rings(vmas: &[Vma]) -> Vec<criu_images::pb::AioRingEntry> {
    vmas.iter()
        .filter(|v| v.is(status::AIORING))
        .filter_map(|v| crate::files::aio::ring_entry(v.entry.start, v.entry.end))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dump::proc::read_smaps;

    #[test]
    fn classify_own_maps() {
        let pid = std::process::id() as i32;
        let maps = read_smaps(pid).unwrap();
        let mut files = FileTable::new(1 << 20);
        let vmas = classify(pid, &maps, &mut files).unwrap();
        let vdso = vmas.iter().find(|v| v.is(status::VDSO)).unwrap();
        assert!(vdso.dumps_pages());
        assert_eq!(vdso.entry.flags, MAP_PRIVATE | MAP_ANONYMOUS);
        let vvars: Vec<_> = vmas.iter().filter(|v| v.is(status::VVAR)).collect();
        assert_eq!(vvars.len(), 1, "vvar areas are merged");
        assert!(!vvars[0].dumps_pages());
        let stack = vmas
            .iter()
            .find(|v| v.entry.flags & libc::MAP_GROWSDOWN as u32 != 0)
            .unwrap();
        assert_eq!(stack.entry.status, status::REGULAR | status::ANON_PRIVATE);
        let exe = vmas.iter().find(|v| v.is(status::FILE_PRIVATE)).unwrap();
        assert_eq!(exe.entry.fdflags, Some(0));
        assert!(exe.entry.shmid >= 1);
        if let Some(vs) = vmas.iter().find(|v| v.is(status::VSYSCALL)) {
            assert!(!vs.dumps_pages());
        }
    }
}
