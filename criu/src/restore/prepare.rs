//! Everything the parent sets up before the clone: checks against this machine, the reservation
//! that will hold the premapped memory and the restorer, the restorer's image, argument block
//! and final signal frame, and the child's work list.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};

use compel_arch::rt_sigframe_size;
use compel_proto::blob::BlobDesc;

use super::abi::{self, RestorerArgs};
use super::error::RestoreError;
use super::layout::{self, HUGE, PAGE, Special, page_up};
use super::ops::{ChildPlan, FdOp, FillHelper, FillOp, PremapOp, TaskCtx};
use super::plan::{FdSource, Rseq, TaskPlan, VmaKind};
pub use super::preflight::preflight_against;
use super::preflight::vdso_moves;
use super::restorer::{
    LeaderState, Reservation, STACK_SIZE, THREAD_STACK_SIZE, Task, map_restorer, restorer_args,
    restorer_blob, seccomp_size, sym, task_fpu,
};
use super::{RestoreOptions, fpu};
use crate::files::MAX_ENDS;
use crate::files::owned;

/// glibc's rseq signature on x86_64.
const GLIBC_RSEQ_SIG: u32 = 0x5305_3053;

/// What the parent made ready for the clone.
pub struct Prepared {
    /// The child's work list.
    pub child: ChildPlan,
    /// Our end of the status pipe.
    pub status_r: OwnedFd,
    /// Descriptors only the child needs (closed in the parent after the clone).
    pub child_only: Vec<OwnedFd>,
    /// The reservation `(start, len)`.
    pub resv: (u64, u64),
    /// Address of the restorer's `syscall` instruction.
    pub syscall_insn: u64,
    /// The restorer's own area `(start, len)` (unmapped once the task is back).
    pub restorer: (u64, u64),
}

/// Fills of at least this many bytes are shared with a helper process.
pub(crate) const HELPER_MIN_FILL: u64 = 64 << 20;

/// The descriptors a task makes, in order: each open file once with all of its ends this task
/// holds (other descriptors of an end are dups of the first), the ones the engine made
/// (`shared_fds`: target fd -> inherited descriptor) as dups; files that need other
/// descriptors first ([`crate::files::RestoreFile::after_fds`], an epoll's targets), and dups of
/// them, after all the others.
fn fd_ops(plan: &TaskPlan, shared_fds: &HashMap<i32, i32>) -> Vec<FdOp> {
    let mut fds = Vec::new();
    let mut late = Vec::new();
    let mut late_fds: Vec<i32> = Vec::new();
    // Groups made already: (kind, group).
    let mut groups_done: Vec<(i32, u64)> = Vec::new();
    for f in &plan.fds {
        if let Some(&from) = shared_fds.get(&f.fd) {
            fds.push(FdOp::Dup {
                fd: f.fd,
                of: from,
                cloexec: f.cloexec,
            });
            continue;
        }
        let file = match &f.source {
            FdSource::Dup { of } => {
                let op = FdOp::Dup {
                    fd: f.fd,
                    of: *of,
                    cloexec: f.cloexec,
                };
                if late_fds.contains(of) {
                    late_fds.push(f.fd);
                    late.push(op);
                } else {
                    fds.push(op);
                }
                continue;
            }
            FdSource::File(file) => file,
        };
        let out = if file.after_fds().is_empty() {
            &mut fds
        } else {
            late_fds.push(f.fd);
            &mut late
        };
        let mut at = [None; MAX_ENDS];
        let Some(group) = file.group() else {
            at[0] = Some((f.fd, f.cloexec));
            out.push(FdOp::Make {
                file: file.clone(),
                at,
                first: f.fd,
            });
            continue;
        };
        let key = (file.fd_type() as i32, group);
        if groups_done.contains(&key) {
            continue;
        }
        groups_done.push(key);
        // Every descriptor of this task on the object: the first of each end is placed when
        // it is made, the others are dups of it.
        // A second open file on the same end (reopened through `/proc/self/fd/N`) is opened
        // again the same way, not shared.
        let mut dups = Vec::new();
        let mut ids = [None; MAX_ENDS];
        for g in &plan.fds {
            let FdSource::File(o) = &g.source else {
                continue;
            };
            if shared_fds.contains_key(&g.fd) {
                continue;
            }
            if o.group() != Some(group) || o.fd_type() != file.fd_type() {
                continue;
            }
            let end = o.end();
            match at.get_mut(end) {
                Some(slot @ None) => {
                    *slot = Some((g.fd, g.cloexec));
                    ids[end] = Some(g.file_id);
                }
                Some(Some((first, _))) if ids[end] == Some(g.file_id) => dups.push(FdOp::Dup {
                    fd: g.fd,
                    of: *first,
                    cloexec: g.cloexec,
                }),
                Some(Some((first, _))) => dups.push(FdOp::Reopen {
                    fd: g.fd,
                    path: CString::new(format!("/proc/self/fd/{first}")).unwrap_or_default(),
                    flags: g.status.map_or(0, |s| s.flags) & libc::O_ACCMODE,
                    cloexec: g.cloexec,
                }),
                None => {}
            }
        }
        let first = at.iter().flatten().next().map_or(f.fd, |&(fd, _)| fd);
        out.push(FdOp::Make {
            file: file.clone(),
            at,
            first,
        });
        out.extend(dups);
    }
    fds.extend(late);
    fds
}

/// Shared anonymous objects mapped by more than one area of this task and not made by the
/// engine: `(shmid, size)`. They are made once and shared by every area that maps them; an
/// object mapped by one area is just that area.
fn shared_objects(premapped: &[&super::plan::Vma], ctx: &TaskCtx) -> Vec<(u64, u64)> {
    let mut seen: Vec<(u64, u64, usize)> = Vec::new();
    for v in premapped {
        if let VmaKind::AnonShared { shmid } = v.kind
            && !ctx.shm.contains_key(&shmid)
        {
            let end = v.pgoff + v.len();
            match seen.iter_mut().find(|o| o.0 == shmid) {
                Some(o) => {
                    o.1 = o.1.max(end);
                    o.2 += 1;
                }
                None => seen.push((shmid, end, 1)),
            }
        }
    }
    seen.into_iter()
        .filter(|o| o.2 > 1)
        .map(|o| (o.0, page_up(o.1)))
        .collect()
}

/// Where each premapped area and each shared object goes, as offsets from the 2 MiB aligned
/// base of the reservation, and the size of it all. An area of 2 MiB or more is placed at the
/// same offset within a 2 MiB block as its final address, so that moving it into place moves
/// whole page tables and huge pages instead of splitting them.
fn premap_layout(
    premapped: &[&super::plan::Vma],
    objects: &[(u64, u64)],
) -> (Vec<u64>, Vec<u64>, u64) {
    let mut off = 0;
    let mut areas = Vec::with_capacity(premapped.len());
    for v in premapped {
        if v.len() >= HUGE {
            off += (v.start.wrapping_sub(off)) & (HUGE - 1);
        }
        areas.push(off);
        off += v.len();
    }
    let mut objs = Vec::with_capacity(objects.len());
    for (_, size) in objects {
        objs.push(off);
        off += size;
    }
    (areas, objs, off)
}

/// The 2 MiB blocks (premap addresses, merged into sorted ranges) that the fills cover whole
/// inside areas `eligible` accepts: these get a huge page each before they are filled.
fn huge_chunks(
    fills: &[FillOp],
    fill_area: &[usize],
    eligible: impl Fn(usize) -> bool,
) -> Vec<(u64, u64)> {
    let mut spans: Vec<(u64, u64)> = Vec::new();
    for (f, &i) in fills.iter().zip(fill_area) {
        if !eligible(i) {
            continue;
        }
        match spans.last_mut() {
            Some(s) if s.1 == f.addr => s.1 += f.len,
            _ => spans.push((f.addr, f.addr + f.len)),
        }
    }
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (s, e) in spans {
        let (a, b) = (s.next_multiple_of(HUGE), e & !(HUGE - 1));
        if a < b {
            out.push((a, b - a));
        }
    }
    out.sort_unstable();
    out
}

/// Splits the fills in two halves of about the same bytes for the task and its fill helper,
/// cutting a run at a 2 MiB boundary when one straddles the middle; returns where the
/// helper's half starts.
fn split_fills(fills: &mut Vec<FillOp>) -> usize {
    let total: u64 = fills.iter().map(|f| f.len).sum();
    let mut acc = 0;
    for k in 0..fills.len() {
        let f = &fills[k];
        if (acc + f.len) * 2 <= total {
            acc += f.len;
            continue;
        }
        let cut = (f.addr + (total / 2 - acc)) & !(HUGE - 1);
        if cut <= f.addr {
            return k;
        }
        if cut >= f.addr + f.len {
            return k + 1;
        }
        let head = cut - f.addr;
        let tail = FillOp {
            file: f.file,
            offset: f.offset + head,
            addr: cut,
            len: f.len - head,
            anon: f.anon,
        };
        fills[k].len = head;
        fills.insert(k + 1, tail);
        return k + 1;
    }
    fills.len()
}

fn pipe() -> Result<(OwnedFd, OwnedFd), RestoreError> {
    let mut p = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into a live local array.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(RestoreError::last_sys("creating a pipe"));
    }
    Ok((owned(p[0]), owned(p[1])))
}

/// Duplicates `fd` at or above `min`.
fn dup_above(fd: &OwnedFd, min: i32) -> Result<OwnedFd, RestoreError> {
    // SAFETY: fcntl F_DUPFD_CLOEXEC on a descriptor we own creates a new one we own.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) };
    if r < 0 {
        return Err(RestoreError::last_sys("moving a service descriptor"));
    }
    Ok(owned(r))
}

/// Unmaps the reservation in this process.
pub fn unmap(resv: (u64, u64)) {
    // SAFETY: the range is the reservation this module mapped; nothing of ours points into it.
    unsafe { libc::munmap(resv.0 as *mut libc::c_void, resv.1 as usize) };
}

/// Builds everything for the clone.
///
/// # Errors
/// [`RestoreError::NoRoom`], [`RestoreError::Blob`], [`RestoreError::Sys`], and the checks of
/// [`preflight`] again.
pub fn prepare(
    plan: &TaskPlan,
    opts: &RestoreOptions,
    ctx: &TaskCtx,
) -> Result<Prepared, RestoreError> {
    let blob = restorer_blob(opts.restorer_blob.as_deref())?;
    let entry_off = sym(&blob, "__export_restorer_main")?;
    let syscall_off = sym(&blob, "__export_restorer_syscall")?;
    let maps = layout::self_maps()?;
    let special = Special::from_maps(&maps);
    let vdso = vdso_moves(plan, &special)?;
    let leader = plan.leader().ok_or_else(|| RestoreError::BadImage {
        file: format!("core-{}.img", plan.pid),
        reason: "a live task without threads".into(),
    })?;
    let xsave = task_fpu(plan.pid, &leader.fpu, opts)?;

    // Sizes.
    let premapped: Vec<&super::plan::Vma> = plan.vmas.iter().filter(|v| v.premapped()).collect();
    let premap_size = premap_layout(&premapped, &shared_objects(&premapped, ctx)).2;
    let blob_size = page_up(blob.map_size() as u64);
    let frame_size = rt_sigframe_size(xsave.bytes.len()) as u64;
    let extra = (premapped.len() * 24
        + plan.posix_timers.len() * 64
        + leader.creds.as_ref().map_or(0, |c| c.groups.len() * 4)
        + (plan.pending_shared.len() + leader.pending.len()) * abi::SIGINFO_SIZE
        + plan.auxv.len() * 8
        + seccomp_size(leader.seccomp.as_ref())) as u64;
    let thread_extra: u64 = plan
        .others()
        .iter()
        .map(|t| {
            (std::mem::size_of::<abi::ThreadArgs>()
                + t.pending.len() * abi::SIGINFO_SIZE
                + t.creds.as_ref().map_or(0, |c| c.groups.len() * 4)
                + seccomp_size(t.seccomp.as_ref())
                + 64) as u64
                + frame_size
                + 64
        })
        .sum();
    let args_size = page_up(
        std::mem::size_of::<RestorerArgs>() as u64 + extra + frame_size + thread_extra + 1024,
    );
    let scratch_size: u64 = vdso.iter().map(|m| m.len).sum::<u64>().max(PAGE);
    let restorer_len =
        blob_size + args_size + STACK_SIZE + plan.others().len() as u64 * THREAD_STACK_SIZE;
    let total = premap_size + PAGE + restorer_len + scratch_size;

    let mut busy: Vec<(u64, u64)> = maps.iter().map(|m| (m.start.0, m.end.0)).collect();
    busy.extend(plan.vmas.iter().map(|v| (v.start, v.end)));
    let base = layout::find_gap(&busy, total)?;
    // SAFETY: MAP_FIXED_NOREPLACE only takes the range if nothing is mapped there.
    let r = unsafe {
        libc::mmap(
            base as *mut libc::c_void,
            total as usize,
            libc::PROT_NONE,
            libc::MAP_PRIVATE
                | libc::MAP_ANONYMOUS
                | libc::MAP_NORESERVE
                | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if r == libc::MAP_FAILED || r as u64 != base {
        return Err(RestoreError::last_sys("reserving the restore area"));
    }
    let resv = (base, total);
    let lay = Reservation {
        base,
        premap_size,
        blob_size,
        args_size,
        restorer_len,
    };
    let task = Task { plan, opts, ctx };
    match build(task, &blob, &lay, &vdso, &xsave, &premapped) {
        Ok(mut p) => {
            p.resv = resv;
            // Unmapped as a whole at the end: by then only the restorer and the gap page are left.
            p.restorer = resv;
            p.syscall_insn = base + premap_size + PAGE + syscall_off;
            p.child.entry = base + premap_size + PAGE + entry_off;
            Ok(p)
        }
        Err(e) => {
            unmap(resv);
            Err(e)
        }
    }
}

/// The task's memory work: the areas to premap and the page runs to read into them.
struct MemoryPlan {
    /// Premap addresses of the premapped areas, in order.
    premap_addr: Vec<u64>,
    /// The areas and temporary shared objects to premap.
    premap: Vec<PremapOp>,
    /// The page runs.
    fills: Vec<FillOp>,
    /// Whole 2 MiB blocks to give a huge page first.
    collapse: Vec<(u64, u64)>,
    /// The fill helper's pid, when the fill is big enough to share.
    helper: Option<i32>,
    /// The helper's share: the runs from this index on.
    helper_from: usize,
    /// Guard ranges (`MADV_GUARD_INSTALL`) at the premapped copies of their areas.
    guards: Vec<(u64, u64)>,
}

/// Lays out the premapped areas of the task at `base` and splits its page runs over them.
fn memory_plan(
    plan: &TaskPlan,
    ctx: &TaskCtx,
    premapped: &[&super::plan::Vma],
    base: u64,
) -> MemoryPlan {
    // Premap addresses, in order; then the shared objects that several areas map.
    let objects = shared_objects(premapped, ctx);
    let (area_off, object_off, _) = premap_layout(premapped, &objects);
    let premap_addr: Vec<u64> = area_off.iter().map(|o| base + o).collect();
    let object_addr: std::collections::HashMap<u64, u64> = objects
        .iter()
        .zip(&object_off)
        .map(|((shmid, _), o)| (*shmid, base + o))
        .collect();
    let shared_at = |v: &super::plan::Vma| match v.kind {
        VmaKind::AnonShared { shmid } => object_addr
            .get(&shmid)
            .or(ctx.shm.get(&shmid))
            .map(|a| a + v.pgoff),
        _ => None,
    };
    // Objects the engine made and filled for the whole tree.
    let engine_filled = |v: &super::plan::Vma| match v.kind {
        VmaKind::AnonShared { shmid } => ctx.shm.contains_key(&shmid),
        _ => false,
    };
    // Where the bytes for `addr` go: the area's premapped copy, or its shared object.
    let to_premap = |addr: u64| -> Option<(usize, u64)> {
        premapped
            .iter()
            .position(|v| v.start <= addr && addr < v.end)
            .map(|i| {
                let v = premapped[i];
                let at = shared_at(v).unwrap_or(premap_addr[i]);
                (i, at + (addr - v.start))
            })
    };

    // Guard ranges, at the premapped copies of their areas (mremap moves the guards along).
    let mut guards = Vec::new();
    for &(s, e) in &plan.guards {
        for (i, v) in premapped.iter().enumerate() {
            let (a, b) = (s.max(v.start), e.min(v.end));
            if a < b {
                guards.push((premap_addr[i] + (a - v.start), b - a));
            }
        }
    }

    // Page runs, split at area boundaries.
    let mut fills = Vec::new();
    let mut filled = vec![false; premapped.len()];
    let mut fill_bytes = 0u64;
    let mut fill_area = Vec::new();
    for run in &plan.pages {
        let mut a = run.vaddr;
        let end = run.vaddr + run.nr_pages * PAGE;
        while a < end {
            let Some((i, pa)) = to_premap(a) else {
                // A special area (vdso): its pages are the kernel's.
                a = plan
                    .vmas
                    .iter()
                    .find(|v| v.start <= a && a < v.end)
                    .map_or(end, |v| v.end.min(end));
                continue;
            };
            let v = premapped[i];
            let b = v.end.min(end);
            if !matches!(v.kind, VmaKind::FileShared { .. }) && !engine_filled(v) {
                fills.push(FillOp {
                    file: run.file,
                    offset: run.offset + (a - run.vaddr),
                    addr: pa,
                    len: b - a,
                    anon: matches!(v.kind, VmaKind::AnonPrivate)
                        && v.flags & libc::MAP_GROWSDOWN == 0,
                });
                fill_area.push(i);
                filled[i] = true;
                fill_bytes += b - a;
            }
            a = b;
        }
    }
    let helper = ctx.helper_pid.filter(|_| fill_bytes >= HELPER_MIN_FILL);
    // Not for a process that turned huge pages off for itself (PR_SET_THP_DISABLE).
    let collapse = if ctx.huge_pages && plan.thp_disabled != Some(true) {
        huge_chunks(&fills, &fill_area, |i| {
            let v = premapped[i];
            matches!(v.kind, VmaKind::AnonPrivate)
                && v.flags & libc::MAP_GROWSDOWN == 0
                && v.madv & (1 << libc::MADV_NOHUGEPAGE) == 0
        })
    } else {
        Vec::new()
    };
    let helper_from = if helper.is_some() {
        split_fills(&mut fills)
    } else {
        fills.len()
    };
    let mut premap: Vec<PremapOp> = premapped
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let grows = v.flags & libc::MAP_GROWSDOWN;
            // Locked (mlock, MAP_LOCKED) areas are locked again once filled.
            let locked = v.flags & libc::MAP_LOCKED;
            let (map_flags, file) = match &v.kind {
                VmaKind::AnonShared { .. } => (libc::MAP_SHARED | libc::MAP_ANONYMOUS, None),
                VmaKind::FilePrivate { path } => {
                    (libc::MAP_PRIVATE, Some((path.clone(), libc::O_RDONLY)))
                }
                VmaKind::FileShared { path, writable } => (
                    libc::MAP_SHARED,
                    Some((
                        path.clone(),
                        if *writable {
                            libc::O_RDWR
                        } else {
                            libc::O_RDONLY
                        },
                    )),
                ),
                // MAP_DROPPABLE (0x08) is a mapping type of its own.
                _ if v.flags & 0x0f == 0x08 => (0x08 | libc::MAP_ANONYMOUS, None),
                _ => (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | grows, None),
            };
            PremapOp {
                addr: premap_addr[i],
                len: v.len(),
                prot: v.prot,
                map_flags: map_flags | locked,
                file,
                pgoff: v.pgoff,
                fill: filled[i],
                dup_of: shared_at(v),
                temporary: false,
                madv: v.madv,
            }
        })
        .collect();
    for (shmid, size) in &objects {
        premap.push(PremapOp {
            addr: object_addr[shmid],
            len: *size,
            prot: libc::PROT_READ | libc::PROT_WRITE,
            map_flags: libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            file: None,
            pgoff: 0,
            fill: true,
            madv: 0,
            dup_of: None,
            temporary: true,
        });
    }

    MemoryPlan {
        premap_addr,
        premap,
        fills,
        collapse,
        helper,
        helper_from,
        guards,
    }
}

/// The descriptors the task keeps while it closes the others.
struct ServiceFds {
    /// Our end of the status pipe.
    status_r: OwnedFd,
    /// Descriptors only the child needs (the status pipe's write end first, the executable).
    child_only: Vec<OwnedFd>,
    /// The executable's descriptor (`u32::MAX`: none).
    exe_fd: u32,
    /// The engine's shared descriptors this task inherits.
    inherited: Vec<i32>,
    /// All descriptors kept, sorted.
    service_fds: Vec<i32>,
    /// The status pipe's write end.
    status_fd: i32,
    /// Temporary descriptors go at or above this number.
    tmp_fd_base: i32,
}

/// Opens the status pipe and the executable above every descriptor number the task uses.
fn service_fds(plan: &TaskPlan, ctx: &TaskCtx) -> Result<ServiceFds, RestoreError> {
    // Service descriptors above every target number (and above the shared ones).
    let max_fd = plan.fds.iter().map(|f| f.fd).max().unwrap_or(2).max(2);
    let floor = ctx.fd_floor.max(max_fd + 1);
    let (status_r, status_w) = pipe()?;
    let status_w = dup_above(&status_w, floor)?;
    let mut child_only = vec![status_w];
    let mut exe_fd = u32::MAX;
    if let Some(exe) = &plan.exe {
        // SAFETY: open with a NUL-terminated path we own.
        let fd = unsafe { libc::open(exe.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(RestoreError::MissingFile {
                path: String::from_utf8_lossy(exe.as_bytes()).into_owned().into(),
                source: std::io::Error::last_os_error(),
            });
        }
        let fd = dup_above(&owned(fd), floor)?;
        // The task is a fork of ours, so its executable is already ours: when that is the same
        // file, leave it (the kernel refuses a new exe file with EBUSY while the old one is
        // mapped, and the restored memory maps it when a program restores its own fork).
        if !same_file_as_ours(&fd) {
            exe_fd = fd.as_raw_fd() as u32;
            child_only.push(fd);
        }
    }
    let mut inherited: Vec<i32> = plan
        .fds
        .iter()
        .filter_map(|f| ctx.shared_fds.get(&f.fd).copied())
        .collect();
    inherited.sort_unstable();
    inherited.dedup();
    let mut service_fds: Vec<i32> = child_only.iter().map(|f| f.as_raw_fd()).collect();
    service_fds.extend(&inherited);
    service_fds.sort_unstable();
    service_fds.dedup();
    let status_fd = child_only[0].as_raw_fd();
    let tmp_fd_base = service_fds.last().copied().unwrap_or(max_fd) + 1;

    Ok(ServiceFds {
        status_r,
        child_only,
        exe_fd,
        inherited,
        service_fds,
        status_fd,
        tmp_fd_base,
    })
}

/// Whether `fd` is the file this process runs (same device and inode as `/proc/self/exe`).
fn same_file_as_ours(fd: &OwnedFd) -> bool {
    use std::os::unix::fs::MetadataExt;
    let ours = std::fs::metadata("/proc/self/exe");
    let theirs = fd
        .try_clone()
        .and_then(|f| std::fs::File::from(f).metadata());
    matches!((ours, theirs), (Ok(a), Ok(b)) if a.dev() == b.dev() && a.ino() == b.ino())
}

/// Builds the task's work list and its restorer's area inside the reservation `lay`.
fn build(
    t: Task<'_>,
    blob: &BlobDesc<'_>,
    lay: &Reservation,
    vdso: &[abi::Move],
    xsave: &fpu::Xsave,
    premapped: &[&super::plan::Vma],
) -> Result<Prepared, RestoreError> {
    let Task { plan, ctx, .. } = t;
    let mem = memory_plan(plan, ctx, premapped, lay.base);
    let fds = service_fds(plan, ctx)?;
    let moves: Vec<abi::Move> = premapped
        .iter()
        .zip(&mem.premap_addr)
        .map(|(v, &from)| abi::Move {
            from,
            to: v.start,
            len: v.len(),
        })
        .collect();
    let thread = plan.leader().ok_or_else(|| RestoreError::BadImage {
        file: format!("core-{}.img", plan.pid),
        reason: "a live task without threads".into(),
    })?;
    let leader = LeaderState {
        thread,
        vdso,
        xsave,
        moves: &moves,
        status_fd: fds.status_fd,
        exe_fd: fds.exe_fd,
    };
    let area = restorer_args(t, lay, &leader)?;
    map_restorer(blob, lay, &area, plan.others().len())?;
    let stack_top = lay.stack_top();
    let args_base = lay.args_base();
    let ServiceFds {
        status_r,
        child_only,
        inherited,
        service_fds,
        status_fd,
        tmp_fd_base,
        ..
    } = fds;
    let MemoryPlan {
        premap,
        fills,
        collapse,
        helper,
        helper_from,
        ..
    } = mem;
    let old_rseq = glibc_rseq();
    let child = ChildPlan {
        premap,
        fills,
        page_files: plan
            .page_files
            .iter()
            .map(|p| CString::new(p.as_os_str().as_encoded_bytes()).unwrap_or_default())
            .collect(),
        fill_helper: helper.map(|pid| FillHelper {
            pid,
            // The restorer's stack: unused until the jump, after the helper ended.
            stack_top: stack_top & !15,
            from: helper_from,
        }),
        collapse,
        uffd: ctx.uffd,
        fds: fd_ops(plan, &ctx.shared_fds),
        settle: plan
            .fds
            .iter()
            .filter_map(|f| Some((f.fd, f.status?)))
            .collect(),
        ctty: plan.fds.iter().find_map(|f| match &f.source {
            super::plan::FdSource::File(x) => x
                .ctty()
                .filter(|&(sid, _)| sid == plan.pid)
                .map(|(_, pgrp)| (f.fd, pgrp)),
            super::plan::FdSource::Dup { .. } => None,
        }),
        service_fds,
        inherited,
        tmp_fd_base,
        root: plan.root.clone(),
        cwd: plan.cwd.clone(),
        umask: plan.umask,
        sched: plan.sched,
        locks: plan.locks.clone(),
        oom_score_adj: plan
            .oom_score_adj
            .and_then(|v| CString::new(v.to_string()).ok()),
        membarrier: plan.membarrier,
        guards: mem.guards.clone(),
        loginuid: plan
            .loginuid
            .filter(|&v| {
                std::fs::read_to_string("/proc/self/loginuid")
                    .ok()
                    .as_deref()
                    != Some(&v.to_string())
            })
            .and_then(|v| CString::new(v.to_string()).ok()),
        status_fd,
        old_rseq,
        entry: 0, // set by prepare(), which knows the blob's symbols
        stack_top: stack_top & !15,
        args: args_base,
    };
    Ok(Prepared {
        child,
        status_r,
        child_only,
        resv: (lay.base, 0), // set by prepare()
        syscall_insn: 0,     // set by prepare()
        restorer: (lay.rbase(), lay.restorer_len),
    })
}

unsafe extern "C" {
    static __rseq_offset: isize;
    static __rseq_size: u32;
}

/// The rseq area glibc registered for this thread, if any.
fn glibc_rseq() -> Option<Rseq> {
    // SAFETY: glibc (2.35 and later) exports these two read-only variables, set at start-up.
    let (off, size) = unsafe { (__rseq_offset, __rseq_size) };
    if size == 0 {
        return None;
    }
    // SAFETY: pthread_self has no preconditions; with glibc it is the thread pointer.
    let tp = unsafe { libc::pthread_self() } as u64;
    Some(Rseq {
        area: tp.wrapping_add(off as u64),
        len: size.max(32),
        sig: GLIBC_RSEQ_SIG,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_ops_make_each_object_once_and_epolls_after_their_targets() {
        use crate::files::epoll::{EpollFile, EpollTarget};
        use crate::files::eventfd::EventFdFile;
        use crate::files::pipe::PipeEnd;
        use crate::restore::plan::Fd;
        use std::sync::Arc;
        let end = |write| {
            FdSource::File(Arc::new(PipeEnd {
                id: 9,
                write,
                flags: 0,
                data: Vec::new(),
                size: 0,
            }))
        };
        let epoll = FdSource::File(Arc::new(EpollFile::new(
            0,
            vec![EpollTarget {
                fd: 5,
                events: 1,
                data: 7,
            }],
        )));
        let efd = FdSource::File(Arc::new(EventFdFile {
            counter: 0,
            flags: 0,
        }));
        let fd = |fd, file_id, source| Fd {
            fd,
            file_id,
            cloexec: false,
            source,
            status: None,
        };
        let plan = TaskPlan {
            fds: vec![
                fd(3, 1, end(false)),
                fd(4, 2, epoll),
                fd(5, 3, efd),
                fd(6, 2, FdSource::Dup { of: 4 }),
                fd(7, 4, end(true)),
                // A second open file on the read end (its own flags and offset): reopened
                // through the first, not a dup of it.
                fd(8, 5, end(false)),
                fd(9, 6, end(true)),
            ],
            ..TaskPlan::default()
        };
        // fd 9 was made by the engine for several tasks: inherited as engine fd 100.
        let shared = HashMap::from([(9, 100)]);
        let ops = fd_ops(&plan, &shared);
        let shape: Vec<String> = ops
            .iter()
            .map(|op| match op {
                FdOp::Make { file, at, first } => {
                    format!("make {:?} {at:?} first {first}", file.fd_type())
                }
                FdOp::Dup { fd, of, .. } => format!("dup {fd} of {of}"),
                FdOp::Reopen { fd, path, .. } => format!("reopen {fd} {path:?}"),
            })
            .collect();
        assert_eq!(
            shape,
            [
                "make Pipe [Some((3, false)), Some((7, false))] first 3",
                "reopen 8 \"/proc/self/fd/3\"",
                "make Eventfd [Some((5, false)), None] first 5",
                "dup 9 of 100",
                "make Eventpoll [Some((4, false)), None] first 4",
                "dup 6 of 4",
            ]
        );
    }

    fn run(addr: u64, len: u64) -> FillOp {
        FillOp {
            file: 0,
            offset: addr,
            addr,
            len,
            anon: true,
        }
    }

    #[test]
    fn huge_chunks_are_whole_covered_blocks_of_eligible_areas() {
        let m = 1 << 20;
        // Area 0: runs 1..4 MiB and 4..9 MiB (contiguous), then 11..13.5 MiB; area 1 not
        // eligible.
        let fills = [
            run(m, 3 * m),
            run(4 * m, 5 * m),
            run(11 * m, 5 * m / 2),
            run(20 * m, 4 * m),
        ];
        let got = huge_chunks(&fills, &[0, 0, 0, 1], |i| i == 0);
        // 2..8 MiB from the first span; 12..13.5 MiB holds no whole block.
        assert_eq!(got, vec![(2 * m, 6 * m)]);
        assert!(huge_chunks(&fills, &[0, 0, 0, 1], |_| false).is_empty());
    }

    #[test]
    fn split_fills_halves_at_a_block_boundary() {
        let m = 1 << 20;
        let mut fills = vec![run(3 * m, 100 * m)];
        let k = split_fills(&mut fills);
        assert_eq!(k, 1);
        assert_eq!(fills.len(), 2);
        assert_eq!(fills[1].addr % HUGE, 0);
        assert_eq!(fills[0].len + fills[1].len, 100 * m);
        assert_eq!(fills[1].offset, fills[1].addr);
        assert!(fills[0].len.abs_diff(fills[1].len) <= HUGE * 2);
        // Many small runs: cut between them.
        let mut fills: Vec<FillOp> = (0..10).map(|i| run(i * 8 * m, 4096)).collect();
        assert_eq!(split_fills(&mut fills), 5);
        assert_eq!(fills.len(), 10);
    }

    #[test]
    fn big_areas_keep_their_offset_within_a_block() {
        let m = 1 << 20;
        let vma = |start: u64, len: u64| super::super::plan::Vma {
            start,
            end: start + len,
            pgoff: 0,
            prot: 0,
            flags: 0,
            madv: 0,
            kind: VmaKind::AnonPrivate,
        };
        let (a, b, c) = (
            vma(0x1000, 0x3000),
            vma(0x7f00_0012_3000, 64 * m),
            vma(0x7f10_0000_5000, 0x2000),
        );
        let (areas, objs, total) = premap_layout(&[&a, &b, &c], &[(7, 4 * m)]);
        assert_eq!(areas[0], 0);
        assert_eq!(areas[1] % HUGE, b.start % HUGE);
        assert!(areas[1] >= 0x3000);
        assert_eq!(areas[2], areas[1] + 64 * m);
        assert_eq!(objs, vec![areas[2] + 0x2000]);
        assert_eq!(total, objs[0] + 4 * m);
    }
}
