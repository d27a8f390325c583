//! Everything the parent sets up before the clone: checks against this machine, the reservation
//! that will hold the premapped memory and the restorer, the restorer's image, argument block
//! and final signal frame, and the child's work list (its memory laid out in `memory`, its
//! descriptors ordered in `fds`).

mod fds;
mod memory;

use fds::fd_ops;
pub(crate) use memory::HELPER_MIN_FILL;
use memory::{MemoryPlan, memory_plan, premap_layout, shared_objects};

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};

use compel_arch::rt_sigframe_size;
use compel_proto::blob::BlobDesc;

use super::abi::{self, RestorerArgs};
use super::error::RestoreError;
use super::layout::{self, PAGE, Special, page_up};
use super::ops::{ChildPlan, FillHelper, TaskCtx};
use super::plan::{Rseq, TaskPlan};
pub use super::preflight::preflight_against;
use super::preflight::vdso_moves;
use super::restorer::{
    ProcessArgs, Reservation, STACK_SIZE, THREAD_STACK_SIZE, Task, map_restorer, restorer_args,
    restorer_blob, seccomp_size, sym, task_fpu,
};
use super::{RestoreOptions, fpu};
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
    /// Its private anonymous areas with saved pages, which its children may take over.
    pub cow_areas: Vec<super::ops::CowArea>,
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

/// Has every task whose child takes areas over from it premap and fill its memory before it
/// creates its children (the child inherits the filled areas at the fork).
pub fn mark_cow_sources(tree: &super::plan::TreePlan, preps: &mut [Option<Prepared>]) {
    for i in 0..preps.len() {
        let takes = preps[i]
            .as_ref()
            .is_some_and(|p| p.child.premap.iter().any(|op| op.inherit_from.is_some()));
        if takes
            && let Some(p) = tree.parent.get(i).copied().flatten()
            && let Some(Some(parent)) = preps.get_mut(p)
        {
            parent.child.early_memory = true;
        }
    }
}

/// What `prepare` needs to know about this process, read once for the whole tree instead of
/// once per task: its mappings (with the reservations made since), its executable's identity
/// and its login uid.
pub struct Ours {
    /// `/proc/self/maps` as last read.
    maps: Vec<compel::proc::Mapping>,
    /// Reservations made since `maps` was read.
    reserved: Vec<(u64, u64)>,
    /// Device and inode of `/proc/self/exe`.
    exe: Option<(u64, u64)>,
    /// `/proc/self/loginuid`.
    loginuid: Option<String>,
}

impl Ours {
    /// Reads this process's mappings, executable and login uid.
    ///
    /// # Errors
    /// [`RestoreError::Io`] when `/proc/self/maps` cannot be read.
    pub fn read() -> Result<Ours, RestoreError> {
        use std::os::unix::fs::MetadataExt;
        Ok(Ours {
            maps: layout::self_maps()?,
            reserved: Vec::new(),
            exe: std::fs::metadata("/proc/self/exe")
                .ok()
                .map(|m| (m.dev(), m.ino())),
            loginuid: std::fs::read_to_string("/proc/self/loginuid").ok(),
        })
    }

    /// This kernel's special mappings here.
    pub fn special(&self) -> Special {
        Special::from_maps(&self.maps)
    }

    /// Reads the mappings again (something else was mapped since).
    fn refresh(&mut self) -> Result<(), RestoreError> {
        self.maps = layout::self_maps()?;
        self.reserved.clear();
        Ok(())
    }

    /// Every range in use here, as far as known.
    fn busy(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.maps
            .iter()
            .map(|m| (m.start.0, m.end.0))
            .chain(self.reserved.iter().copied())
    }
}

/// Reserves `total` bytes free both here and in the task's layout (`theirs`). The view of our
/// own mappings may be older than some mapping made since (the allocator's, a thread's stack):
/// then the kernel refuses the range, and the mappings are read again for a second try.
fn reserve(ours: &mut Ours, theirs: &[(u64, u64)], total: u64) -> Result<u64, RestoreError> {
    let mut refreshed = false;
    loop {
        let mut busy: Vec<(u64, u64)> = ours.busy().collect();
        busy.extend_from_slice(theirs);
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
        if r != libc::MAP_FAILED && r as u64 == base {
            ours.reserved.push((base, base + total));
            return Ok(base);
        }
        let taken = nix::errno::Errno::last() == nix::errno::Errno::EEXIST;
        let err = RestoreError::last_sys("reserving the restore area");
        if r != libc::MAP_FAILED {
            // An old kernel without MAP_FIXED_NOREPLACE placed it elsewhere.
            // SAFETY: the mapping just made, used by nothing.
            unsafe { libc::munmap(r, total as usize) };
            return Err(err);
        }
        if refreshed || !taken {
            return Err(err);
        }
        ours.refresh()?;
        refreshed = true;
    }
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
    ours: &mut Ours,
) -> Result<Prepared, RestoreError> {
    let blob = restorer_blob(opts.restorer_blob.as_deref())?;
    let entry_off = sym(&blob, "__export_restorer_main")?;
    let syscall_off = sym(&blob, "__export_restorer_syscall")?;
    let special = ours.special();
    let vdso = vdso_moves(plan, &special)?;
    if plan.threads.is_empty() {
        return Err(RestoreError::BadImage {
            file: format!("core-{}.img", plan.pid),
            reason: "a live task without threads".into(),
        });
    }
    // Every thread's FPU state, in the order of `plan.threads` (the leader first).
    let xsaves = plan
        .threads
        .iter()
        .map(|t| task_fpu(t.tid, &t.fpu, opts))
        .collect::<Result<Vec<_>, _>>()?;

    // Sizes.
    let premapped: Vec<&super::plan::Vma> = plan.vmas.iter().filter(|v| v.premapped()).collect();
    let premap_size = premap_layout(&premapped, &shared_objects(&premapped, ctx)).2;
    let blob_size = page_up(blob.map_size() as u64);
    let extra = (premapped.len() * 24
        + plan.posix_timers.len() * 64
        + plan.pending_shared.len() * abi::SIGINFO_SIZE
        + plan.auxv.len() * 8) as u64;
    // Each thread's record, signals, groups, filters and signal frame (with room to align).
    let thread_extra: u64 = plan
        .threads
        .iter()
        .zip(&xsaves)
        .map(|(t, x)| {
            (std::mem::size_of::<abi::ThreadState>()
                + t.pending.len() * abi::SIGINFO_SIZE
                + t.creds.as_ref().map_or(0, |c| c.groups.len() * 4)
                + seccomp_size(t.seccomp.as_ref())
                + 64) as u64
                + rt_sigframe_size(x.bytes.len()) as u64
                + 64
        })
        .sum();
    let args_size =
        page_up(std::mem::size_of::<RestorerArgs>() as u64 + extra + thread_extra + 1024);
    let scratch_size: u64 = vdso.iter().map(|m| m.len).sum::<u64>().max(PAGE);
    let restorer_len =
        blob_size + args_size + STACK_SIZE + plan.others().len() as u64 * THREAD_STACK_SIZE;
    let total = premap_size + PAGE + restorer_len + scratch_size;

    let theirs: Vec<(u64, u64)> = plan.vmas.iter().map(|v| (v.start, v.end)).collect();
    let base = reserve(ours, &theirs, total)?;
    let resv = (base, total);
    let lay = Reservation {
        base,
        premap_size,
        blob_size,
        args_size,
        restorer_len,
    };
    let task = Task { plan, opts, ctx };
    match build(task, ours, &blob, &lay, &vdso, &xsaves, &premapped) {
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
fn service_fds(plan: &TaskPlan, ctx: &TaskCtx, ours: &Ours) -> Result<ServiceFds, RestoreError> {
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
        if !same_file_as_ours(&fd, ours) {
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
fn same_file_as_ours(fd: &OwnedFd, ours: &Ours) -> bool {
    use std::os::unix::fs::MetadataExt;
    let theirs = fd
        .try_clone()
        .and_then(|f| std::fs::File::from(f).metadata());
    matches!((ours.exe, theirs), (Some(a), Ok(b)) if a == (b.dev(), b.ino()))
}

/// Builds the task's work list and its restorer's area inside the reservation `lay`.
fn build(
    t: Task<'_>,
    ours: &Ours,
    blob: &BlobDesc<'_>,
    lay: &Reservation,
    vdso: &[abi::Move],
    xsaves: &[fpu::Xsave],
    premapped: &[&super::plan::Vma],
) -> Result<Prepared, RestoreError> {
    let Task { plan, ctx, .. } = t;
    let mem = memory_plan(plan, ctx, premapped, lay.base);
    let lazy = ctx.lazy.as_ref().map(|l| l.at(premapped, &mem.premap_addr));
    let fds = service_fds(plan, ctx, ours)?;
    let moves: Vec<abi::Move> = premapped
        .iter()
        .zip(&mem.premap_addr)
        .map(|(v, &from)| abi::Move {
            from,
            to: v.start,
            len: v.len(),
        })
        .collect();
    // AIO rings: made again by the task over their premapped areas, then moved as those.
    // A ring whose area is not premapped would come back as plain memory: refused.
    let aio: Vec<crate::files::aio::RingOp> = plan
        .aio
        .iter()
        .map(|&(start, nr_req)| {
            let i = premapped
                .iter()
                .position(|v| v.start == start)
                .ok_or_else(|| RestoreError::BadImage {
                    file: format!("mm-{}.img", plan.pid),
                    reason: format!("AIO ring at {start:#x} has no area of its own"),
                })?;
            Ok(crate::files::aio::RingOp {
                at: mem.premap_addr[i],
                len: premapped[i].len(),
                nr_req,
            })
        })
        .collect::<Result<_, RestoreError>>()?;
    // Packet socket rings: the task maps its socket over the premapped area, which then
    // moves to its place with the others.
    let packet_rings: Vec<crate::files::packet::RingMap> = plan
        .packet_rings
        .iter()
        .map(|&(start, id)| {
            let bad = |reason: String| RestoreError::BadImage {
                file: format!("mm-{}.img", plan.pid),
                reason,
            };
            let i = premapped
                .iter()
                .position(|v| v.start == start)
                .ok_or_else(|| bad(format!("packet ring at {start:#x} has no area of its own")))?;
            let fd = plan
                .fds
                .iter()
                .find(|f| f.file_id == id)
                .ok_or_else(|| {
                    bad(format!(
                        "packet ring at {start:#x} maps file id {id}, which the task does not hold"
                    ))
                })?
                .fd;
            Ok(crate::files::packet::RingMap {
                at: mem.premap_addr[i],
                len: premapped[i].len(),
                prot: premapped[i].prot,
                fd,
            })
        })
        .collect::<Result<_, RestoreError>>()?;
    let process = ProcessArgs {
        vdso,
        moves: &moves,
        status_fd: fds.status_fd,
        exe_fd: fds.exe_fd,
    };
    let area = restorer_args(t, lay, &process, xsaves)?;
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
        cow_fills,
        cow_zero,
        cow_areas,
        collapse,
        helper,
        helper_from,
        ..
    } = mem;
    let old_rseq = glibc_rseq();
    let early_memory = premap.iter().any(|op| op.inherit_from.is_some());
    let child = ChildPlan {
        aio,
        packet_rings,
        premap,
        fills,
        cow_fills,
        cow_zero,
        early_memory,
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
        lazy,
        fds: fd_ops(plan, &ctx.shared_fds, &ctx.late_fds),
        settle: plan
            .fds
            .iter()
            .filter_map(|f| Some((f.fd, f.status?)))
            .collect(),
        ctty: ctty_of(plan),
        ctty_early: ctty_of(plan).and_then(|(fd, _)| ctx.shared_fds.get(&fd).copied()),
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
            .filter(|&v| ours.loginuid.as_deref() != Some(&v.to_string()))
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
        cow_areas,
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

/// The descriptor of a session leader's controlling terminal and the foreground group to give
/// it.
fn ctty_of(plan: &TaskPlan) -> Option<(i32, i32)> {
    plan.fds.iter().find_map(|f| match &f.source {
        crate::restore::plan::FdSource::File(x) => x
            .ctty()
            .filter(|&(sid, _)| sid == plan.pid)
            .map(|(_, pgrp)| (f.fd, pgrp)),
        crate::restore::plan::FdSource::Dup { .. } => None,
    })
}
