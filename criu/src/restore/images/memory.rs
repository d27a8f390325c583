//! A task's memory from its images: the areas of `mm-PID.img` checked against the files they
//! map, and the saved pages of `pagemap-PID.img` (and shared memory's own pagemaps).

use criu_images::vma::status;
use std::collections::HashMap;
use std::sync::Arc;

use crate::files::memfd::MemfdInode;

use criu_images::pagemap::{PE_PARENT, PE_PRESENT};
use criu_images::pb::{self, FileEntry, MmEntry, RegFileEntry, RemapFilePathEntry};
use criu_images::{ImageDir, names};

use super::super::abi;
use super::super::error::RestoreError;
use super::super::layout::{PAGE, TASK_SIZE};
use super::super::plan::*;
use super::entry::{bad, cpath, img};

fn reg_of<'a>(
    by_id: &HashMap<u32, &'a FileEntry>,
    id: u32,
    file: &str,
) -> Result<&'a RegFileEntry, RestoreError> {
    by_id.get(&id).and_then(|f| f.reg.as_ref()).ok_or_else(|| {
        bad(
            file,
            format!("file id {id} is not a regular file in files.img"),
        )
    })
}

/// Checks that a file the task maps is still the one it mapped (same size).
fn check_mapped_file(r: &RegFileEntry) -> Result<(), RestoreError> {
    let md = std::fs::metadata(&r.name).map_err(|e| RestoreError::MissingFile {
        path: r.name.clone().into(),
        source: e,
    })?;
    if let Some(size) = r.size
        && md.is_file()
        && md.len() != size
    {
        return Err(RestoreError::FileChanged {
            path: r.name.clone().into(),
            expected: size,
            found: md.len(),
        });
    }
    Ok(())
}

pub(super) fn memory(
    plan: &mut TaskPlan,
    d: &ImageDir,
    mm: &MmEntry,
    by_id: &HashMap<u32, &FileEntry>,
    remaps: &HashMap<u32, RemapFilePathEntry>,
    file: &str,
    checked: &mut std::collections::HashSet<u32>,
) -> Result<(), RestoreError> {
    // The path a mapped file is opened by: a file deleted while mapped is made again (once for
    // the restore), any other is checked to be the one that was mapped.
    let mut ghosts = Vec::new();
    let mut check = |id: u32| -> Result<std::ffi::CString, RestoreError> {
        let r = reg_of(by_id, id, file)?;
        if let Some(rm) = remaps.get(&id) {
            let g = crate::files::regular::ghost_file(d, rm.remap_id, &r.name)?;
            let p = g.path.clone();
            ghosts.push(g);
            return Ok(p);
        }
        if checked.insert(id) {
            check_mapped_file(r)?;
        }
        cpath(&r.name)
    };
    let mut prev_end = 0u64;
    for v in &mm.vmas {
        let st = v.status;
        if st & status::GUARD != 0 {
            // Not an area: guard pages inside the areas (listed after all of them).
            if v.start >= v.end || v.start % PAGE != 0 || v.end % PAGE != 0 || v.end > TASK_SIZE {
                return Err(bad(
                    file,
                    format!("guard range {:#x}-{:#x} is malformed", v.start, v.end),
                ));
            }
            plan.guards.push((v.start, v.end));
            continue;
        }
        if v.start >= v.end || v.start % PAGE != 0 || v.end % PAGE != 0 {
            return Err(bad(
                file,
                format!("area {:#x}-{:#x} is malformed", v.start, v.end),
            ));
        }
        if v.start < prev_end {
            return Err(bad(
                file,
                format!("area {:#x} overlaps the previous one", v.start),
            ));
        }
        prev_end = v.end;
        let unsupported = |what: &'static str| RestoreError::Vma {
            what,
            start: v.start,
        };
        if st & status::VSYSCALL != 0 {
            plan.vmas.push(mk_vma(v, VmaKind::Vsyscall));
            continue;
        }
        if v.end > TASK_SIZE {
            return Err(bad(
                file,
                format!("area {:#x}-{:#x} beyond user space", v.start, v.end),
            ));
        }
        if st & status::UNSUPP != 0 {
            return Err(unsupported("an area CRIU marked unsupported"));
        }
        if st & status::MEMFD != 0 {
            match memfd_of(d, by_id, v.shmid as u32, file)? {
                // CRIU writes shared anonymous memory as a mapping of a memfd named /dev/zero.
                Ok(shmid) => {
                    let mut vma = mk_vma(v, VmaKind::AnonShared { shmid });
                    vma.flags |= libc::MAP_ANONYMOUS;
                    plan.vmas.push(vma);
                }
                // A real memfd: the engine's one, mapped through its descriptor.
                Err(inode) => {
                    let path = crate::files::memfd::mapping_path(&inode)?;
                    plan.memfds.push(inode);
                    let kind = if st & status::FILE_SHARED != 0 {
                        let acc =
                            v.fdflags.unwrap_or(libc::O_RDONLY as u32) as i32 & libc::O_ACCMODE;
                        VmaKind::FileShared {
                            path,
                            writable: acc != libc::O_RDONLY,
                        }
                    } else if st & status::FILE_PRIVATE != 0 {
                        VmaKind::FilePrivate { path }
                    } else {
                        return Err(unsupported("a memfd area neither shared nor private"));
                    };
                    plan.vmas.push(mk_vma(v, kind));
                }
            }
            continue;
        }
        if st & status::AIORING != 0 {
            // An AIO ring: premapped and filled as private memory, then made again by the task
            // over it (crate::files::aio).
            let Some(e) = mm.aios.iter().find(|a| a.id == v.start) else {
                return Err(bad(
                    file,
                    format!("AIO ring area {:#x} has no aio_ring_entry", v.start),
                ));
            };
            if e.ring_len as u64 != v.end - v.start || e.nr_req == 0 {
                return Err(bad(
                    file,
                    format!(
                        "AIO ring {:#x}: ring_len or nr_req do not fit its area",
                        v.start
                    ),
                ));
            }
            let mut vma = mk_vma(v, VmaKind::AnonPrivate);
            vma.flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
            vma.prot = libc::PROT_READ | libc::PROT_WRITE;
            plan.vmas.push(vma);
            plan.aio.push((v.start, e.nr_req));
            continue;
        }
        if st & status::SOCKET != 0 {
            // A packet socket's rings (crate::files::packet): premapped as a placeholder, the
            // task maps its socket over it once its descriptors are in place.
            let mut vma = mk_vma(v, VmaKind::AnonPrivate);
            vma.flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
            plan.vmas.push(vma);
            plan.packet_rings.push((v.start, v.shmid as u32));
            continue;
        }
        if st & (status::SYSVIPC | status::SOCKET | status::SHSTK) != 0 {
            return Err(unsupported(
                "a System V shm, socket, aio or shadow-stack mapping",
            ));
        }
        if st & status::REGULAR == 0 {
            return Err(unsupported("an irregular area"));
        }
        let kind = if st & status::VVAR != 0 {
            VmaKind::Vvar
        } else if st & status::VDSO != 0 {
            VmaKind::Vdso
        } else if st & status::FILE_PRIVATE != 0 {
            VmaKind::FilePrivate {
                path: check(v.shmid as u32)?,
            }
        } else if st & status::FILE_SHARED != 0 {
            let path = check(v.shmid as u32)?;
            let acc = v.fdflags.unwrap_or(libc::O_RDONLY as u32) as i32 & libc::O_ACCMODE;
            VmaKind::FileShared {
                path,
                writable: acc != libc::O_RDONLY,
            }
        } else if st & status::ANON_SHARED != 0 {
            // One mapping of the object only: several are made as one object mapped again
            // (`mremap` of size 0), which hugetlb memory does not allow.
            if v.flags & libc::MAP_HUGETLB as u32 != 0 {
                if (v.flags >> 26) & 0x3f > 21 {
                    return Err(unsupported("hugetlb memory with pages over 2 MiB"));
                }
                if plan
                    .vmas
                    .iter()
                    .any(|o| o.kind == VmaKind::AnonShared { shmid: v.shmid })
                {
                    return Err(unsupported(
                        "shared anonymous hugetlb memory mapped more than once",
                    ));
                }
            }
            VmaKind::AnonShared { shmid: v.shmid }
        } else if st & status::ANON_PRIVATE != 0 {
            // Premapped in a reservation aligned to 2 MiB: larger huge pages do not fit.
            if v.flags & libc::MAP_HUGETLB as u32 != 0 && (v.flags >> 26) & 0x3f > 21 {
                return Err(unsupported("hugetlb memory with pages over 2 MiB"));
            }
            VmaKind::AnonPrivate
        } else {
            return Err(unsupported("an area of unknown kind"));
        };
        plan.vmas.push(mk_vma(v, kind));
    }
    // The kernel keeps at most AT_VECTOR_SIZE (52 on x86_64) auxv words.
    if mm.mm_saved_auxv.len() > 52 {
        return Err(bad(file, format!("{} auxv words", mm.mm_saved_auxv.len())));
    }
    plan.auxv = mm.mm_saved_auxv.clone();
    plan.dumpable = mm.dumpable;
    plan.thp_disabled = mm.thp_disabled;
    plan.exe = Some(check(mm.exe_file_id)?);
    plan.ghosts.extend(ghosts);
    plan.mm = Some(abi::MmMap {
        start_code: mm.mm_start_code,
        end_code: mm.mm_end_code,
        start_data: mm.mm_start_data,
        end_data: mm.mm_end_data,
        start_brk: mm.mm_start_brk,
        brk: mm.mm_brk,
        start_stack: mm.mm_start_stack,
        arg_start: mm.mm_arg_start,
        arg_end: mm.mm_arg_end,
        env_start: mm.mm_env_start,
        env_end: mm.mm_env_end,
        auxv: 0,
        auxv_size: 0,
        exe_fd: u32::MAX,
    });
    pages(plan, d)?;
    Ok(())
}

/// What CRIU's memfd file `id` that an area maps is: the shmem id of a shared anonymous
/// object (`Ok`), or a real memfd's inode (`Err`).
#[allow(clippy::type_complexity)]
fn memfd_of(
    d: &ImageDir,
    by_id: &HashMap<u32, &FileEntry>,
    id: u32,
    file: &str,
) -> Result<Result<u64, Arc<MemfdInode>>, RestoreError> {
    let m = by_id
        .get(&id)
        .and_then(|f| f.memfd.as_ref())
        .ok_or_else(|| {
            bad(
                file,
                format!("memfd mapping refers to missing file id {id}"),
            )
        })?;
    let inodes = d.read_memfd().map_err(|e| img("memfd.img", e))?;
    let inode = inodes
        .iter()
        .find(|i| i.inode_id == u64::from(m.inode_id))
        .ok_or_else(|| bad("memfd.img", format!("no inode {}", m.inode_id)))?;
    if inode.name == "/dev/zero" {
        return Ok(Ok(u64::from(inode.shmid)));
    }
    Ok(Err(crate::files::memfd::inode(d, m.inode_id)?))
}

fn mk_vma(v: &pb::VmaEntry, kind: VmaKind) -> Vma {
    Vma {
        start: v.start,
        end: v.end,
        pgoff: v.pgoff,
        prot: v.prot as i32,
        flags: v.flags as i32,
        madv: v.madv.unwrap_or(0),
        kind,
    }
}

/// Reads the task's pagemap (and the shared-memory pagemaps) into page runs, checking each
/// run against the areas and the page files' sizes.
fn pages(plan: &mut TaskPlan, d: &ImageDir) -> Result<(), RestoreError> {
    let pid = plan.pid as u32;
    let pm_name = names::pagemap(pid);
    let pm = d.read_pagemap(pid).map_err(|e| img(&pm_name, e))?;
    let add_path = |plan: &mut TaskPlan, p: std::path::PathBuf| -> usize {
        match plan.page_files.iter().position(|f| *f == p) {
            Some(i) => i,
            None => {
                plan.page_files.push(p);
                plan.page_files.len() - 1
            }
        }
    };
    let add_file = |plan: &mut TaskPlan, pages_id: u32| add_path(plan, d.pages_path(pages_id));
    let mut used: HashMap<usize, u64> = HashMap::new();
    let mut parents = super::chain::Parents::new(d.path(), pid);
    let fi = add_file(plan, pm.pages_id);
    let mut off = 0u64;
    let mut prev_end = 0u64;
    for e in &pm.entries {
        let flags = e.effective_flags();
        let n = e.pages();
        let end = e
            .end()
            .ok_or_else(|| bad(&pm_name, format!("entry at {:#x} overflows", e.vaddr)))?;
        if e.vaddr % PAGE != 0 {
            return Err(RestoreError::PagemapOutside {
                file: pm_name.clone(),
                vaddr: e.vaddr,
                end,
            });
        }
        if e.vaddr < prev_end {
            return Err(RestoreError::PagemapOverlap {
                file: pm_name.clone(),
                vaddr: e.vaddr,
                prev_end,
            });
        }
        prev_end = end;
        if flags & PE_PARENT != 0 {
            if !covered(&plan.vmas, e.vaddr, end) {
                return Err(RestoreError::PagemapOutside {
                    file: pm_name.clone(),
                    vaddr: e.vaddr,
                    end,
                });
            }
            let mut found = Vec::new();
            parents.resolve(0, e.vaddr, end, &mut found)?;
            found.sort_by_key(|f| f.0);
            for (vaddr, nr_pages, path, offset) in found {
                let file = add_path(plan, path);
                let need = used.entry(file).or_insert(0);
                *need = (*need).max(offset + nr_pages * PAGE);
                plan.pages.push(PageRun {
                    vaddr,
                    nr_pages,
                    file,
                    offset,
                });
            }
            continue;
        }
        if flags & PE_PRESENT == 0 {
            continue;
        }
        if !covered(&plan.vmas, e.vaddr, end) {
            return Err(RestoreError::PagemapOutside {
                file: pm_name.clone(),
                vaddr: e.vaddr,
                end,
            });
        }
        plan.pages.push(PageRun {
            vaddr: e.vaddr,
            nr_pages: n,
            file: fi,
            offset: off,
        });
        off += n * PAGE;
    }
    let need = used.entry(fi).or_insert(0);
    *need = (*need).max(off);
    // Shared anonymous memory: pagemap-shmem-SHMID.img, offsets relative to the object; each
    // object's pages go to every area that maps them.
    let shared: Vec<(u64, u64, u64, u64)> = plan
        .vmas
        .iter()
        .filter_map(|v| match v.kind {
            VmaKind::AnonShared { shmid } => Some((shmid, v.start, v.end, v.pgoff)),
            _ => None,
        })
        .collect();
    let mut shmids: Vec<u64> = shared.iter().map(|s| s.0).collect();
    shmids.sort_unstable();
    shmids.dedup();
    for shmid in shmids {
        let name = names::pagemap_shmem(shmid);
        if !d.file(&name).exists() {
            continue;
        }
        let pm = criu_images::Pagemap::read(d.file(&name)).map_err(|e| img(&name, e))?;
        let fi = add_file(plan, pm.pages_id);
        let mut off = used.get(&fi).copied().unwrap_or(0);
        for e in &pm.entries {
            if e.effective_flags() & PE_PRESENT == 0 {
                continue;
            }
            let len = e
                .end()
                .ok_or_else(|| bad(&name, format!("entry at {:#x} overflows", e.vaddr)))?
                - e.vaddr;
            for &(_, start, vend, pgoff) in shared.iter().filter(|s| s.0 == shmid) {
                // The run's part that falls inside this mapping of the object.
                let a = e.vaddr.max(pgoff);
                let b = e
                    .vaddr
                    .saturating_add(len)
                    .min(pgoff.saturating_add(vend - start));
                if a < b {
                    plan.pages.push(PageRun {
                        vaddr: start + (a - pgoff),
                        nr_pages: (b - a) / PAGE,
                        file: fi,
                        offset: off + (a - e.vaddr),
                    });
                }
            }
            off = off.saturating_add(len);
        }
        used.insert(fi, off);
    }
    for (fi, need) in used {
        let path = &plan.page_files[fi];
        // Never a symlink (the tasks open it with O_NOFOLLOW too): refused here, before
        // any task exists.
        let meta = std::fs::symlink_metadata(path).map_err(|e| RestoreError::MissingFile {
            path: path.clone(),
            source: e,
        })?;
        if !meta.is_file() {
            return Err(RestoreError::MissingFile {
                path: path.clone(),
                source: std::io::Error::from_raw_os_error(if meta.is_symlink() {
                    libc::ELOOP
                } else {
                    libc::EINVAL
                }),
            });
        }
        let have = meta.len();
        if have < need {
            return Err(bad(
                &path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                format!("holds {have} bytes, the pagemap needs {need}"),
            ));
        }
    }
    Ok(())
}

/// Whether `[a, b)` is entirely inside areas (adjacent areas may share a run).
fn covered(vmas: &[Vma], a: u64, b: u64) -> bool {
    let mut cur = a;
    for v in vmas {
        if v.start <= cur && cur < v.end {
            cur = v.end;
            if cur >= b {
                return true;
            }
        }
    }
    cur >= b
}
