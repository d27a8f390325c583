//! The restorer's side of a task's reservation: the blob, placed and relocated, and its
//! argument area ([`RestorerArgs`] and everything it points at: areas to move, timers, groups,
//! signals, seccomp filters, auxv, each thread's signal frame and record).
// Unsafe code: lays the restorer's argument area out in memory mapped for it, through raw pointers.
#![allow(unsafe_code)]

use compel_arch::RT_SIGFRAME_UC_OFFSET;
use compel_arch::{SigStack, SigframeError, SigframeState, rt_sigframe_size, write_rt_sigframe};
use compel_proto::blob::BlobDesc;

use super::RestoreOptions;
use super::abi::{self, RestorerArgs};
use super::error::RestoreError;
use super::fpu;
use super::layout::{PAGE, TASK_SIZE, page_up};
use super::ops::TaskCtx;
use super::plan::{AltStack, TaskPlan, ThreadPlan};
use super::preflight::reachable_rlimits;

/// Stack of the restorer.
pub(super) const STACK_SIZE: u64 = 64 << 10;
/// Stack of each other thread in the restorer.
pub(super) const THREAD_STACK_SIZE: u64 = 16 << 10;
/// The xsave area of thread `tid`: with `--cpu-cap=none`, state this CPU has no registers for
/// is left out, with a warning naming it.
pub(super) fn task_fpu(
    tid: i32,
    fpu: &super::plan::FpuPlan,
    opts: &RestoreOptions,
) -> Result<fpu::Xsave, RestoreError> {
    let (x, dropped) = fpu::build_checked(fpu, opts.cpu_cap.fpu())?;
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

/// A growable byte area with a known base address in the task.
pub(super) struct Area {
    pub(super) base: u64,
    pub(super) bytes: Vec<u8>,
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
pub(super) fn seccomp_size(s: Option<&super::plan::SeccompPlan>) -> usize {
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
pub(super) fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: callers pass `repr(C)` types of integer fields without padding (the abi types,
    // whose sizes are pinned to the sum of their fields), so every byte is initialised.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
        .to_vec()
}

pub(super) fn slice_bytes<T: Copy>(v: &[T]) -> Vec<u8> {
    v.iter().flat_map(|x| bytes_of(x)).collect()
}

pub(super) fn restorer_blob(
    file: Option<&std::path::Path>,
) -> Result<BlobDesc<'static>, RestoreError> {
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

pub(super) fn sym(b: &BlobDesc<'_>, name: &str) -> Result<u64, RestoreError> {
    b.symbol(name)
        .map(|o| o as u64)
        .ok_or_else(|| RestoreError::Blob {
            reason: format!("no symbol {name}"),
        })
}

/// Where the parts of a task's reservation are: the premapped areas first, a gap page, then
/// the restorer (blob, argument area, stacks) and the scratch room for the vDSO moves.
#[derive(Clone, Copy, Debug)]
pub(super) struct Reservation {
    /// Start of the reservation (the premapped areas).
    pub(super) base: u64,
    /// Bytes of premapped areas and shared objects.
    pub(super) premap_size: u64,
    /// Bytes of the restorer blob (page aligned).
    pub(super) blob_size: u64,
    /// Bytes of the argument area (page aligned).
    pub(super) args_size: u64,
    /// Bytes of the restorer's own area: blob, arguments, stacks.
    pub(super) restorer_len: u64,
}

impl Reservation {
    /// Where the restorer blob starts.
    pub(super) fn rbase(&self) -> u64 {
        self.base + self.premap_size + PAGE
    }

    /// Where the argument area starts.
    pub(super) fn args_base(&self) -> u64 {
        self.rbase() + self.blob_size
    }

    /// The top of the restorer's stack (of its main thread).
    pub(super) fn stack_top(&self) -> u64 {
        self.args_base() + self.args_size + STACK_SIZE
    }
}

/// The task being prepared: its plan, the options and what it shares with its tree.
#[derive(Clone, Copy)]
pub(super) struct Task<'a> {
    pub(super) plan: &'a TaskPlan,
    pub(super) opts: &'a RestoreOptions,
    pub(super) ctx: &'a TaskCtx,
}

/// What the restorer sets for the whole process besides the plan: the special mappings and
/// premapped areas to move, the service descriptors.
pub(super) struct ProcessArgs<'a> {
    pub(super) vdso: &'a [abi::Move],
    /// Where the premapped areas go.
    pub(super) moves: &'a [abi::Move],
    /// The status pipe's write end in the task.
    pub(super) status_fd: i32,
    /// The executable's descriptor in the task (`u32::MAX`: none).
    pub(super) exe_fd: u32,
}

/// The restorer's argument area: [`RestorerArgs`] and everything it points at (areas to move,
/// timers, signals, auxv, and every thread's record with its signal frame, signals, groups and
/// seccomp filters). `xsaves` are the threads' FPU states, in the order of
/// [`TaskPlan::threads`].
pub(super) fn restorer_args(
    t: Task<'_>,
    lay: &Reservation,
    process: &ProcessArgs<'_>,
    xsaves: &[fpu::Xsave],
) -> Result<Area, RestoreError> {
    let Task { plan, .. } = t;
    let (vdso, moves) = (process.vdso, process.moves);
    let (status_fd, exe_fd) = (process.status_fd, process.exe_fd);
    let (base, premap_size, restorer_len) = (lay.base, lay.premap_size, lay.restorer_len);
    let scratch = lay.rbase() + restorer_len;
    // The argument block and everything it points at.
    let mut area = Area {
        base: lay.args_base(),
        bytes: vec![0u8; std::mem::size_of::<RestorerArgs>()],
    };
    let vmas_at = area.push(&slice_bytes(moves), 8);
    let timers_at = area.push(&slice_bytes(&plan.posix_timers), 8);
    let shared_siginfo_at = area.push(&plan.pending_shared.concat(), 8);
    let auxv_at = area.push(&slice_bytes(&plan.auxv), 8);

    let states = thread_states(t, lay, xsaves, &mut area)?;
    let threads_at = area.push(&slice_bytes(&states), 8);
    if area.bytes.len() as u64 > lay.args_size {
        return Err(RestoreError::Blob {
            reason: "argument area overflow".into(),
        });
    }

    let opt = |v: Option<i32>| v.unwrap_or(abi::KEEP);
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
        personality: plan.personality.map_or(abi::KEEP, |p| p as i32),
        dumpable: opt(plan.dumpable),
        thp_disabled: opt(plan.thp_disabled.map(i32::from)),
        child_subreaper: opt(plan.child_subreaper.map(i32::from)),
        stop_before_return: 1,
        shared_siginfo: shared_siginfo_at,
        n_siginfo_shared: plan.pending_shared.len() as u32,
        n_threads: states.len() as u32,
        threads: threads_at,
        threads_ready: 0,
        pad2: 0,
    };
    let ab = bytes_of(&args);
    area.bytes[..ab.len()].copy_from_slice(&ab);

    Ok(area)
}

/// Pushes the signal frame thread `t` resumes from (its registers, FPU state `x`, signal mask
/// and alternate stack) into `area`, aligned for the FPU state; its address.
fn push_sigframe(area: &mut Area, t: &ThreadPlan, x: &fpu::Xsave) -> Result<u64, SigframeError> {
    area.align(compel_arch::FPSTATE_ALIGN);
    let at = area.base + area.bytes.len() as u64;
    let mut frame = vec![0u8; rt_sigframe_size(x.bytes.len())];
    let state = SigframeState {
        regs: &t.regs,
        xsave: &x.bytes,
        xfeatures: x.xfeatures,
        sigmask: t.sigmask,
        altstack: t.altstack.map(|AltStack { sp, flags, size }| SigStack {
            ss_sp: sp,
            ss_flags: flags,
            pad: 0,
            ss_size: size,
        }),
    };
    write_rt_sigframe(&mut frame, at, &state)?;
    area.bytes.extend_from_slice(&frame);
    Ok(at)
}

/// Every thread's signal frame, pending signals, seccomp filters and groups into `area`;
/// returns their records, the leader's first. The leader runs on the restorer's own stack,
/// each other thread on one of its own after it.
fn thread_states(
    t: Task<'_>,
    lay: &Reservation,
    xsaves: &[fpu::Xsave],
    area: &mut Area,
) -> Result<Vec<abi::ThreadState>, RestoreError> {
    let Task { plan, opts, ctx } = t;
    let mut states: Vec<abi::ThreadState> = Vec::with_capacity(plan.threads.len());
    for (i, (t, x)) in plan.threads.iter().zip(xsaves).enumerate() {
        let frame_at = push_sigframe(area, t, x).map_err(|e| RestoreError::Fpu {
            reason: if i == 0 {
                format!("signal frame: {e:?}")
            } else {
                format!("signal frame of thread {}: {e:?}", t.tid)
            },
        })?;
        let siginfo = area.push(&t.pending.concat(), 8);
        let seccomp = push_seccomp(area, t.seccomp.as_ref());
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
        // The parent-death signal fires when the task's parent goes: criu, right away, when it
        // detaches. Then the task keeps running without it, like a child of init. A sibling of
        // criu (`--restore-sibling`) has the client for its parent and keeps it.
        let pdeath_sig = match t.pdeath_sig {
            Some(sig) if sig != 0 && opts.detach && !opts.sibling && ctx.root => {
                tracing::warn!(
                    pid = plan.pid,
                    tid = t.tid,
                    sig,
                    "parent-death signal not restored: criu detaches and would trigger it"
                );
                abi::KEEP
            }
            other => other.unwrap_or(abi::KEEP),
        };
        let (stack_top, stack_size) = if i == 0 {
            (lay.stack_top(), STACK_SIZE)
        } else {
            (
                lay.stack_top() + i as u64 * THREAD_STACK_SIZE,
                THREAD_STACK_SIZE,
            )
        };
        states.push(abi::ThreadState {
            tid: t.tid,
            set_creds: t.creds.is_some() as u32,
            stack_top,
            stack_size,
            sigframe_sp: frame_at + RT_SIGFRAME_UC_OFFSET as u64,
            fs_base: t.regs.fs_base,
            gs_base: t.regs.gs_base,
            clear_tid_addr: t.clear_tid_addr,
            robust_list: t.robust_list.head,
            robust_list_len: t.robust_list.len,
            rseq: t.rseq.map_or(0, |r| r.area),
            rseq_len: t.rseq.map_or(0, |r| r.len),
            rseq_sig: t.rseq.map_or(0, |r| r.sig),
            siginfo,
            n_siginfo: t.pending.len() as u32,
            pdeath_sig,
            comm,
            creds,
            no_new_privs: t.no_new_privs as i32,
            pad: 0,
            seccomp,
        });
    }
    Ok(states)
}

/// Maps the restorer's area (blob, arguments, stacks) at its place in the reservation, copies
/// the relocated blob and the argument area in and makes the blob's code executable.
pub(super) fn map_restorer(
    blob: &BlobDesc<'_>,
    lay: &Reservation,
    area: &Area,
    threads: usize,
) -> Result<(), RestoreError> {
    let (rbase, blob_size, args_size) = (lay.rbase(), lay.blob_size, lay.args_size);
    let rw_len =
        (blob_size + args_size + STACK_SIZE) as usize + threads * THREAD_STACK_SIZE as usize;
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
        return Err(RestoreError::last_sys("mapping the restorer"));
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
        return Err(RestoreError::last_sys("protecting the restorer's code"));
    }

    Ok(())
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
}
