//! Everything the parent sets up before the clone: checks against this machine, the reservation
//! that will hold the premapped memory and the restorer, the restorer's image, argument block
//! and final signal frame, and the child's work list.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};

use compel_arch::RT_SIGFRAME_UC_OFFSET;
use compel_arch::{SigStack, SigframeState, rt_sigframe_size, write_rt_sigframe};
use compel_proto::blob::BlobDesc;
use nix::errno::Errno;

use super::abi::{self, RestorerArgs};
use super::error::RestoreError;
use super::layout::{self, HUGE, PAGE, Special, TASK_SIZE, page_up};
use super::ops::{ChildPlan, FdOp, FillHelper, FillOp, PremapOp};
use super::plan::{FdSource, TaskPlan, VmaKind};
use super::{RestoreOptions, fpu};
use crate::files::MAX_ENDS;
use crate::files::owned;

/// Stack of the restorer.
const STACK_SIZE: u64 = 64 << 10;
/// Stack of each other thread in the restorer.
const THREAD_STACK_SIZE: u64 = 16 << 10;
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

/// Checks the plan against this machine: pid free, hard limits reachable, FPU state fitting,
/// vDSO layout the same.
///
/// # Errors
/// [`RestoreError::PidBusy`], [`RestoreError::Rlimit`], [`RestoreError::Fpu`],
/// [`RestoreError::Vdso`], [`RestoreError::Io`] (our own maps unreadable).
pub fn preflight(plan: &TaskPlan) -> Result<(), RestoreError> {
    preflight_against(plan, &Special::from_maps(&layout::self_maps()?), true)
}

/// [`preflight`] against `ours`, our own special mappings ([`Special::from_maps`]), read once
/// for all the tasks of a tree; FPU state this CPU cannot hold is refused only when
/// `fpu_check` (see [`fpu::build_checked`]).
///
/// # Errors
/// As [`preflight`].
pub fn preflight_against(
    plan: &TaskPlan,
    ours: &Special,
    fpu_check: bool,
) -> Result<(), RestoreError> {
    for id in std::iter::once(plan.pid).chain(plan.threads.iter().map(|t| t.tid)) {
        if std::path::Path::new(&format!("/proc/{id}")).exists() {
            return Err(RestoreError::PidBusy { pid: id });
        }
    }
    for t in &plan.threads {
        fpu::build_checked(&t.fpu, fpu_check)?;
    }
    let cap_resource = has_cap(24);
    for (res, l) in plan.rlimits.iter().enumerate() {
        if l.cur > l.max {
            return Err(RestoreError::BadImage {
                file: format!("core-{}.img", plan.pid),
                reason: format!("rlimit {res}: soft {} above hard {}", l.cur, l.max),
            });
        }
        if let Some(have) = our_hard_limit(res)
            && l.max > have
            && !cap_resource
            && !MACHINE_SIZED_RLIMITS.contains(&res)
        {
            return Err(RestoreError::Rlimit {
                resource: res,
                wanted: l.max,
                have,
            });
        }
    }
    fpu::build_checked(&plan.fpu, fpu_check)?;
    vdso_moves(plan, ours)?;
    // CAP_SYS_ADMIN (21): the engine traces tasks under seccomp with PTRACE_O_SUSPEND_SECCOMP.
    if plan.under_seccomp() && !has_cap(21) {
        return Err(RestoreError::Unsupported {
            what: format!(
                "task {} runs under seccomp: restoring it needs CAP_SYS_ADMIN",
                plan.pid
            ),
        });
    }
    Ok(())
}

/// The xsave area of thread `tid`: with `--cpu-cap=none`, state this CPU has no registers for
/// is left out, with a warning naming it.
fn task_fpu(
    tid: i32,
    fpu: &super::plan::FpuPlan,
    opts: &RestoreOptions,
) -> Result<fpu::Xsave, RestoreError> {
    let (x, dropped) = fpu::build_checked(fpu, !opts.no_fpu_check)?;
    for n in dropped {
        tracing::warn!(
            tid,
            component = n,
            what = fpu::component_name(n),
            "saved register state left out: this CPU has no such registers (--cpu-cap=none)"
        );
    }
    Ok(x)
}

/// Our own hard limit of `res`.
fn our_hard_limit(res: usize) -> Option<u64> {
    let mut have = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit64 writes one struct into a live local.
    (unsafe { libc::getrlimit64(res as _, &mut have) } == 0).then_some(have.rlim_max)
}

/// `RLIMIT_NPROC` and `RLIMIT_SIGPENDING`: their default hard limits follow the machine's memory
/// size, so a task dumped on a slightly bigger machine comes back with ours (and a warning)
/// instead of failing.
const MACHINE_SIZED_RLIMITS: [usize; 2] = [6, 11];

/// The limits to install: the saved ones, except that a machine-sized hard limit above ours is
/// lowered to ours when we cannot raise it.
fn reachable_rlimits(plan: &TaskPlan) -> Vec<abi::Rlimit> {
    let cap_resource = has_cap(24);
    let mut out = plan.rlimits.clone();
    for &res in &MACHINE_SIZED_RLIMITS {
        let Some(l) = out.get_mut(res) else { continue };
        if let Some(have) = our_hard_limit(res)
            && l.max > have
            && !cap_resource
        {
            tracing::warn!(
                pid = plan.pid,
                resource = res,
                saved = l.max,
                ours = have,
                "hard limit lowered to this machine's"
            );
            l.max = have;
            l.cur = l.cur.min(l.max);
        }
    }
    out
}

fn has_cap(cap: u32) -> bool {
    // Our capabilities do not change while we restore: read them once.
    static EFFECTIVE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let eff = EFFECTIVE.get_or_init(|| compel::proc::self_effective_caps().unwrap_or(0));
    eff & (1 << cap) != 0
}

/// The moves that put this kernel's special mappings where the task had them.
fn vdso_moves(plan: &TaskPlan, cur: &Special) -> Result<Vec<abi::Move>, RestoreError> {
    let span = |k: VmaKind| -> Option<(u64, u64)> {
        let mut it = plan.vmas.iter().filter(|v| v.kind == k);
        let first = it.next()?;
        let mut s = (first.start, first.end);
        for v in it {
            if v.start == s.1 {
                s.1 = v.end;
            }
        }
        Some(s)
    };
    let t_vdso = span(VmaKind::Vdso);
    let t_vvar = span(VmaKind::Vvar);
    let mut moves = Vec::new();
    let vdso_err = |reason: String| RestoreError::Vdso { reason };
    if let Some((ts, te)) = t_vdso {
        let (cs, ce) = cur
            .vdso
            .ok_or_else(|| vdso_err("this process has no vdso".into()))?;
        if ce - cs != te - ts {
            return Err(vdso_err(format!(
                "vdso is {:#x} bytes here, {:#x} in the image (another kernel?)",
                ce - cs,
                te - ts
            )));
        }
        moves.push(abi::Move {
            from: cs,
            to: ts,
            len: te - ts,
        });
    }
    if let Some((ts, te)) = t_vvar {
        let (cs, ce) = cur
            .vvar_span()
            .ok_or_else(|| vdso_err("this process has no vvar".into()))?;
        if ce - cs != te - ts {
            return Err(vdso_err(format!(
                "vvar is {:#x} bytes here, {:#x} in the image (another kernel?)",
                ce - cs,
                te - ts
            )));
        }
        if let (Some((tds, _)), Some((cds, _))) = (t_vdso, cur.vdso)
            && tds.wrapping_sub(ts) != cds.wrapping_sub(cs)
        {
            return Err(vdso_err(
                "vvar and vdso are placed differently by this kernel".into(),
            ));
        }
        for part in [cur.vvar, cur.vvar_vclock].into_iter().flatten() {
            moves.push(abi::Move {
                from: part.0,
                to: ts + (part.0 - cs),
                len: part.1 - part.0,
            });
        }
    } else {
        // The task had no vvar: this kernel's is unmapped with the rest.
    }
    if moves.len() > abi::MAX_VDSO {
        return Err(vdso_err("too many special mappings".into()));
    }
    Ok(moves)
}

/// What a task shares with the others of its tree, made by the engine before the first task
/// is created.
#[derive(Debug, Default)]
pub struct TaskCtx {
    /// The root of the tree (criu is its parent).
    pub root: bool,
    /// Service descriptors go at or above this number (above every task's descriptors and the
    /// shared ones).
    pub fd_floor: i32,
    /// Target fd -> the engine's descriptor of the open file it shares with other tasks.
    pub shared_fds: std::collections::HashMap<i32, i32>,
    /// shmid -> the engine's mapping of a shared anonymous object other tasks map too (already
    /// filled).
    pub shm: std::collections::HashMap<u64, u64>,
    /// A free pid for a helper process that shares a big fill (none: the task fills alone).
    pub helper_pid: Option<i32>,
    /// Give wholly saved 2 MiB blocks of private anonymous memory a huge page each
    /// (`MADV_COLLAPSE`) before filling them.
    pub huge_pages: bool,
    /// Fill small pages of private anonymous memory with `UFFDIO_COPY` where it can.
    pub uffd: bool,
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
        let mut dups = Vec::new();
        for g in &plan.fds {
            let FdSource::File(o) = &g.source else {
                continue;
            };
            if o.group() != Some(group) || o.fd_type() != file.fd_type() {
                continue;
            }
            match at.get_mut(o.end()) {
                Some(slot @ None) => *slot = Some((g.fd, g.cloexec)),
                Some(Some((first, _))) => dups.push(FdOp::Dup {
                    fd: g.fd,
                    of: *first,
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

/// A growable byte area with a known base address in the task.
struct Area {
    base: u64,
    bytes: Vec<u8>,
}

impl Area {
    fn align(&mut self, a: usize) {
        let n = self.bytes.len().next_multiple_of(a);
        self.bytes.resize(n, 0);
    }

    fn push(&mut self, data: &[u8], align: usize) -> u64 {
        self.align(align);
        let at = self.base + self.bytes.len() as u64;
        self.bytes.extend_from_slice(data);
        at
    }
}

/// Bytes the argument area needs for a thread's seccomp filters (records and programs).
fn seccomp_size(s: Option<&super::plan::SeccompPlan>) -> usize {
    s.map_or(0, |s| {
        s.filters
            .iter()
            .map(|(prog, _)| prog.len() + std::mem::size_of::<abi::SeccompFilter>() + 8)
            .sum::<usize>()
            + 8
    })
}

/// Places a thread's seccomp filters in the argument area; returns its record for the
/// restorer.
fn push_seccomp(area: &mut Area, s: Option<&super::plan::SeccompPlan>) -> abi::Seccomp {
    let Some(s) = s else {
        return abi::Seccomp::default();
    };
    let recs: Vec<abi::SeccompFilter> = s
        .filters
        .iter()
        .map(|(prog, flags)| abi::SeccompFilter {
            prog: area.push(prog, 8),
            len: (prog.len() / 8) as u32,
            flags: *flags,
        })
        .collect();
    abi::Seccomp {
        mode: s.mode,
        n_filters: recs.len() as u32,
        filters: area.push(&slice_bytes(&recs), 8),
    }
}

/// Bytes of a plain `repr(C)` value made only of integers.
fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: callers pass `repr(C)` types of integer fields without padding (the abi types,
    // whose sizes are pinned to the sum of their fields), so every byte is initialised.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
        .to_vec()
}

fn slice_bytes<T: Copy>(v: &[T]) -> Vec<u8> {
    v.iter().flat_map(|x| bytes_of(x)).collect()
}

fn restorer_blob(file: Option<&std::path::Path>) -> Result<BlobDesc<'static>, RestoreError> {
    // A blob file named in the options replaces the built-in one (for debugging).
    let b = match file {
        Some(path) => {
            let data = std::fs::read(path).map_err(|e| RestoreError::Io {
                what: format!("reading {}", path.display()),
                error: e,
            })?;
            let data: &'static [u8] = Box::leak(data.into_boxed_slice());
            BlobDesc::parse(data).map_err(|e| RestoreError::Blob {
                reason: format!("{e:?}"),
            })?
        }
        None => builtin_blob()?,
    };
    b.validate().map_err(|e| RestoreError::Blob {
        reason: format!("{e:?}"),
    })?;
    Ok(b)
}

fn builtin_blob() -> Result<BlobDesc<'static>, RestoreError> {
    Ok(parasite_blobs::restorer::blob())
}

fn sym(b: &BlobDesc<'_>, name: &str) -> Result<u64, RestoreError> {
    b.symbol(name)
        .map(|o| o as u64)
        .ok_or_else(|| RestoreError::Blob {
            reason: format!("no symbol {name}"),
        })
}

fn sys_err(what: &'static str) -> RestoreError {
    RestoreError::Sys {
        what,
        errno: Errno::last(),
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), RestoreError> {
    let mut p = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into a live local array.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(sys_err("creating a pipe"));
    }
    Ok((owned(p[0]), owned(p[1])))
}

/// Duplicates `fd` at or above `min`.
fn dup_above(fd: &OwnedFd, min: i32) -> Result<OwnedFd, RestoreError> {
    // SAFETY: fcntl F_DUPFD_CLOEXEC on a descriptor we own creates a new one we own.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) };
    if r < 0 {
        return Err(sys_err("moving a service descriptor"));
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
    let xsave = task_fpu(plan.pid, &plan.fpu, opts)?;

    // Sizes.
    let premapped: Vec<&super::plan::Vma> = plan.vmas.iter().filter(|v| v.premapped()).collect();
    let premap_size = premap_layout(&premapped, &shared_objects(&premapped, ctx)).2;
    let blob_size = page_up(blob.map_size() as u64);
    let frame_size = rt_sigframe_size(xsave.bytes.len()) as u64;
    let extra = (premapped.len() * 24
        + plan.posix_timers.len() * 64
        + plan.creds.as_ref().map_or(0, |c| c.groups.len() * 4)
        + (plan.pending_shared.len() + plan.pending_thread.len()) * abi::SIGINFO_SIZE
        + plan.auxv.len() * 8
        + seccomp_size(plan.seccomp.as_ref())) as u64;
    let thread_extra: u64 = plan
        .threads
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
        blob_size + args_size + STACK_SIZE + plan.threads.len() as u64 * THREAD_STACK_SIZE;
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
        return Err(sys_err("reserving the restore area"));
    }
    let resv = (base, total);
    match build(
        plan,
        opts,
        ctx,
        &blob,
        base,
        premap_size,
        blob_size,
        args_size,
        restorer_len,
        &vdso,
        &xsave,
        &premapped,
    ) {
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

#[allow(clippy::too_many_arguments)]
fn build(
    plan: &TaskPlan,
    opts: &RestoreOptions,
    ctx: &TaskCtx,
    blob: &BlobDesc<'_>,
    base: u64,
    premap_size: u64,
    blob_size: u64,
    args_size: u64,
    restorer_len: u64,
    vdso: &[abi::Move],
    xsave: &fpu::Xsave,
    premapped: &[&super::plan::Vma],
) -> Result<Prepared, RestoreError> {
    let rbase = base + premap_size + PAGE;
    let args_base = rbase + blob_size;
    let stack_top = args_base + args_size + STACK_SIZE;
    let scratch = rbase + restorer_len;

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
        exe_fd = fd.as_raw_fd() as u32;
        child_only.push(fd);
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

    // Descriptors.
    let fds = fd_ops(plan, &ctx.shared_fds);

    // The argument block and everything it points at.
    let mut area = Area {
        base: args_base,
        bytes: vec![0u8; std::mem::size_of::<RestorerArgs>()],
    };
    let moves: Vec<abi::Move> = premapped
        .iter()
        .enumerate()
        .map(|(i, v)| abi::Move {
            from: premap_addr[i],
            to: v.start,
            len: v.len(),
        })
        .collect();
    let vmas_at = area.push(&slice_bytes(&moves), 8);
    let timers_at = area.push(&slice_bytes(&plan.posix_timers), 8);
    let mut creds = abi::Creds::default();
    if let Some(c) = &plan.creds {
        creds = c.creds;
        creds.ngroups = c.groups.len() as u32;
        creds.groups = area.push(&slice_bytes(&c.groups), 8);
    }
    let mut sig_bytes = Vec::new();
    for s in plan.pending_shared.iter().chain(&plan.pending_thread) {
        sig_bytes.extend_from_slice(s);
    }
    let siginfo_at = area.push(&sig_bytes, 8);
    let seccomp = push_seccomp(&mut area, plan.seccomp.as_ref());
    let auxv_at = area.push(&slice_bytes(&plan.auxv), 8);
    area.align(compel_arch::FPSTATE_ALIGN);
    let frame_at = area.base + area.bytes.len() as u64;
    let mut frame = vec![0u8; rt_sigframe_size(xsave.bytes.len())];
    let state = SigframeState {
        regs: &plan.regs,
        xsave: &xsave.bytes,
        xfeatures: xsave.xfeatures,
        sigmask: plan.sigmask,
        altstack: plan.altstack.map(|(sp, flags, size)| SigStack {
            ss_sp: sp,
            ss_flags: flags,
            pad: 0,
            ss_size: size,
        }),
    };
    write_rt_sigframe(&mut frame, frame_at, &state).map_err(|e| RestoreError::Fpu {
        reason: format!("signal frame: {e:?}"),
    })?;
    area.bytes.extend_from_slice(&frame);

    // The other threads: their frames, signals, groups and argument records.
    let mut targs: Vec<abi::ThreadArgs> = Vec::with_capacity(plan.threads.len());
    for (i, t) in plan.threads.iter().enumerate() {
        let tx = task_fpu(t.tid, &t.fpu, opts)?;
        area.align(compel_arch::FPSTATE_ALIGN);
        let t_frame_at = area.base + area.bytes.len() as u64;
        let mut frame = vec![0u8; rt_sigframe_size(tx.bytes.len())];
        let state = SigframeState {
            regs: &t.regs,
            xsave: &tx.bytes,
            xfeatures: tx.xfeatures,
            sigmask: t.sigmask,
            altstack: t.altstack.map(|(sp, flags, size)| SigStack {
                ss_sp: sp,
                ss_flags: flags,
                pad: 0,
                ss_size: size,
            }),
        };
        write_rt_sigframe(&mut frame, t_frame_at, &state).map_err(|e| RestoreError::Fpu {
            reason: format!("signal frame of thread {}: {e:?}", t.tid),
        })?;
        area.bytes.extend_from_slice(&frame);
        let sig: Vec<u8> = t.pending.iter().flatten().copied().collect();
        let t_siginfo = area.push(&sig, 8);
        let t_seccomp = push_seccomp(&mut area, t.seccomp.as_ref());
        let mut creds = abi::Creds::default();
        if let Some(c) = &t.creds {
            creds = c.creds;
            creds.ngroups = c.groups.len() as u32;
            creds.groups = area.push(&slice_bytes(&c.groups), 8);
        }
        let mut comm = [0u8; 16];
        if let Some(name) = &t.comm {
            for (d, s) in comm.iter_mut().zip(name.bytes().take(15)) {
                *d = s;
            }
        }
        let stack_top = args_base + args_size + STACK_SIZE + (i as u64 + 1) * THREAD_STACK_SIZE;
        targs.push(abi::ThreadArgs {
            tid: t.tid,
            set_creds: t.creds.is_some() as u32,
            stack_top,
            stack_size: THREAD_STACK_SIZE,
            sigframe_sp: t_frame_at + RT_SIGFRAME_UC_OFFSET as u64,
            fs_base: t.regs.fs_base,
            gs_base: t.regs.gs_base,
            clear_tid_addr: t.clear_tid_addr,
            robust_list: t.robust_list.0,
            robust_list_len: t.robust_list.1,
            rseq: t.rseq.map_or(0, |r| r.0),
            rseq_len: t.rseq.map_or(0, |r| r.1),
            rseq_sig: t.rseq.map_or(0, |r| r.2),
            siginfo: t_siginfo,
            n_siginfo: t.pending.len() as u32,
            pdeath_sig: if opts.detach && ctx.root {
                abi::KEEP
            } else {
                t.pdeath_sig.unwrap_or(abi::KEEP)
            },
            comm,
            creds,
            no_new_privs: t.no_new_privs as i32,
            pad: 0,
            seccomp: t_seccomp,
        });
    }
    let threads_at = area.push(&slice_bytes(&targs), 8);
    if area.bytes.len() as u64 > args_size {
        return Err(RestoreError::Blob {
            reason: "argument area overflow".into(),
        });
    }

    let opt = |v: Option<i32>| v.unwrap_or(abi::KEEP);
    // The parent-death signal fires when the task's parent goes: criu, right away, when it
    // detaches. Then the task keeps running without it, like a child of init.
    let pdeath_sig = match plan.pdeath_sig {
        Some(sig) if sig != 0 && opts.detach && ctx.root => {
            tracing::warn!(
                pid = plan.pid,
                sig,
                "parent-death signal not restored: criu detaches and would trigger it"
            );
            abi::KEEP
        }
        other => opt(other),
    };
    let mut comm = [0u8; 16];
    for (d, s) in comm.iter_mut().zip(plan.comm.bytes().take(15)) {
        *d = s;
    }
    let mut keep = [abi::Range::default(); abi::MAX_KEEP];
    keep[0] = abi::Range {
        start: base,
        end: base
            + premap_size
            + PAGE
            + restorer_len
            + vdso.iter().map(|m| m.len).sum::<u64>().max(PAGE),
    };
    let mut vdso_arr = [abi::Move::default(); abi::MAX_VDSO];
    vdso_arr[..vdso.len()].copy_from_slice(vdso);
    let mut sigactions = [abi::KSigaction::default(); abi::NSIG];
    if !plan.sigactions.is_empty() {
        sigactions.copy_from_slice(&plan.sigactions[..abi::NSIG]);
    }
    let mut rlimits = [abi::Rlimit::default(); abi::NRLIMITS];
    rlimits[..plan.rlimits.len()].copy_from_slice(&reachable_rlimits(plan));
    let mut itimers = [abi::Itimerval::default(); 3];
    let mut itimers_mask = 0;
    for (i, t) in plan.itimers.iter().enumerate() {
        if let Some(t) = t {
            itimers[i] = *t;
            itimers_mask |= 1 << i;
        }
    }
    let mm = plan.mm.map(|mut m| {
        m.auxv = auxv_at;
        m.auxv_size = (plan.auxv.len() * 8) as u32;
        m.exe_fd = exe_fd;
        m
    });
    let args = RestorerArgs {
        magic: abi::ARGS_MAGIC,
        version: abi::ARGS_VERSION,
        size: std::mem::size_of::<RestorerArgs>() as u32,
        status_fd,
        n_keep: 1,
        keep,
        task_size: TASK_SIZE,
        old_rseq: 0,
        old_rseq_len: 0,
        old_rseq_sig: 0,
        n_vdso: vdso.len() as u32,
        pad0: 0,
        vdso: vdso_arr,
        vdso_scratch: scratch,
        vmas: vmas_at,
        n_vmas: moves.len() as u64,
        mm: mm.unwrap_or_default(),
        set_mm: mm.is_some() as u32,
        set_sigactions: !plan.sigactions.is_empty() as u32,
        sigactions,
        n_rlimits: plan.rlimits.len() as u32,
        itimers_mask,
        rlimits,
        itimers,
        posix_timers: timers_at,
        n_posix_timers: plan.posix_timers.len() as u32,
        set_creds: plan.creds.is_some() as u32,
        creds,
        personality: plan.personality.map_or(abi::KEEP, |p| p as i32),
        dumpable: opt(plan.dumpable),
        pdeath_sig,
        no_new_privs: plan.no_new_privs as i32,
        thp_disabled: opt(plan.thp_disabled.map(i32::from)),
        child_subreaper: opt(plan.child_subreaper.map(i32::from)),
        comm,
        clear_tid_addr: plan.clear_tid_addr,
        robust_list: plan.robust_list.0,
        robust_list_len: plan.robust_list.1,
        rseq: plan.rseq.map_or(0, |r| r.0),
        rseq_len: plan.rseq.map_or(0, |r| r.1),
        rseq_sig: plan.rseq.map_or(0, |r| r.2),
        siginfo: siginfo_at,
        n_siginfo_shared: plan.pending_shared.len() as u32,
        n_siginfo_thread: plan.pending_thread.len() as u32,
        fs_base: plan.regs.fs_base,
        gs_base: plan.regs.gs_base,
        sigframe_sp: frame_at + RT_SIGFRAME_UC_OFFSET as u64,
        stop_before_return: 1,
        n_threads: targs.len() as u32,
        threads: threads_at,
        threads_ready: 0,
        pad2: 0,
        seccomp,
    };
    let ab = bytes_of(&args);
    area.bytes[..ab.len()].copy_from_slice(&ab);

    // Map the restorer's area (blob, arguments, stack) and fill it.
    let rw_len = (blob_size + args_size + STACK_SIZE) as usize
        + plan.threads.len() * THREAD_STACK_SIZE as usize;
    // SAFETY: the range is inside our own reservation, which nothing else uses.
    let r = unsafe {
        libc::mmap(
            rbase as *mut libc::c_void,
            rw_len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    if r == libc::MAP_FAILED {
        return Err(sys_err("mapping the restorer"));
    }
    // SAFETY: the range was just mapped readable and writable and is ours alone.
    let mem = unsafe { std::slice::from_raw_parts_mut(rbase as *mut u8, rw_len) };
    blob.copy_into(&mut mem[..blob_size as usize])
        .map_err(|e| RestoreError::Blob {
            reason: format!("{e:?}"),
        })?;
    blob.apply_relocs(&mut mem[..blob_size as usize], rbase)
        .map_err(|e| RestoreError::Blob {
            reason: format!("{e:?}"),
        })?;
    mem[blob_size as usize..blob_size as usize + area.bytes.len()].copy_from_slice(&area.bytes);
    let text = page_up(blob.text_size as u64) as usize;
    // SAFETY: changes the protection of the blob's text inside our reservation.
    if unsafe {
        libc::mprotect(
            rbase as *mut libc::c_void,
            text,
            libc::PROT_READ | libc::PROT_EXEC,
        )
    } != 0
    {
        return Err(sys_err("protecting the restorer's code"));
    }

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
        fds,
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
        guards,
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
        resv: (base, 0), // set by prepare()
        syscall_insn: 0, // set by prepare()
        restorer: (rbase, restorer_len),
    })
}

unsafe extern "C" {
    static __rseq_offset: isize;
    static __rseq_size: u32;
}

/// The rseq area glibc registered for this thread, if any.
fn glibc_rseq() -> Option<(u64, u32, u32)> {
    // SAFETY: glibc (2.35 and later) exports these two read-only variables, set at start-up.
    let (off, size) = unsafe { (__rseq_offset, __rseq_size) };
    if size == 0 {
        return None;
    }
    // SAFETY: pthread_self has no preconditions; with glibc it is the thread pointer.
    let tp = unsafe { libc::pthread_self() } as u64;
    Some((tp.wrapping_add(off as u64), size.max(32), GLIBC_RSEQ_SIG))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_bytes_match_struct_size() {
        let r = abi::Range { start: 1, end: 2 };
        assert_eq!(bytes_of(&r).len(), 16);
        assert_eq!(slice_bytes(&[r, r]).len(), 32);
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
