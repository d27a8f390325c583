//! Checks of a task's plan against this machine, made for every task of a tree before anything
//! is created: pids free, hard limits reachable, FPU state fitting, the same vDSO layout,
//! capabilities the task's state needs.
// Unsafe code: reads our own hard limits with getrlimit64.
#![allow(unsafe_code)]

use super::abi;
use super::error::RestoreError;
use super::fpu;
use super::layout::Special;
use super::plan::{TaskPlan, VmaKind};

/// Checks the plan against this machine: pids free, hard limits reachable, FPU state fitting,
/// vDSO layout the same as `ours`, our own special mappings ([`Special::from_maps`], read once
/// for all the tasks of a tree); FPU state this CPU cannot hold is refused only when
/// `fpu_check` (see [`fpu::build_checked`]). Pids are checked free only when `pids_here` (a
/// tree in a new pid namespace of its own has all of them).
///
/// # Errors
/// [`RestoreError::PidBusy`], [`RestoreError::Rlimit`], [`RestoreError::Fpu`],
/// [`RestoreError::Vdso`].
pub fn preflight_against(
    plan: &TaskPlan,
    ours: &Special,
    fpu_check: bool,
    pids_here: bool,
) -> Result<(), RestoreError> {
    for id in std::iter::once(plan.pid)
        .chain(plan.others().iter().map(|t| t.tid))
        .filter(|_| pids_here)
    {
        if std::path::Path::new(&format!("/proc/{id}")).exists() {
            return Err(RestoreError::PidBusy { pid: id });
        }
    }
    for t in plan.others() {
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
        // Our limit is asked for only when it could refuse (a syscall per limit and task).
        if !cap_resource
            && !MACHINE_SIZED_RLIMITS.contains(&res)
            && let Some(have) = our_hard_limit(res)
            && l.max > have
        {
            return Err(RestoreError::Rlimit {
                resource: res,
                wanted: l.max,
                have,
            });
        }
    }
    if let Some(leader) = plan.leader() {
        fpu::build_checked(&leader.fpu, fpu_check)?;
    }
    vdso_moves(plan, ours)?;
    // CAP_SYS_ADMIN (21): the engine traces tasks under seccomp with PTRACE_O_SUSPEND_SECCOMP.
    if plan.under_seccomp() && !has_cap(21) {
        return Err(RestoreError::SeccompNeedsAdmin { pid: plan.pid });
    }
    Ok(())
}

/// Our own hard limit of `res`. Read once (a syscall per limit, and each task of a tree asks
/// for all of them): criu never changes its own hard limits, only raises a soft one.
fn our_hard_limit(res: usize) -> Option<u64> {
    const KNOWN: usize = 16;
    static HARD: std::sync::OnceLock<[Option<u64>; KNOWN]> = std::sync::OnceLock::new();
    let read = |res: usize| {
        let mut have = libc::rlimit64 {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit64 writes one struct into a live local.
        (unsafe { libc::getrlimit64(res as _, &mut have) } == 0).then_some(have.rlim_max)
    };
    if res >= KNOWN {
        return read(res);
    }
    HARD.get_or_init(|| std::array::from_fn(read))[res]
}

/// `RLIMIT_NPROC` and `RLIMIT_SIGPENDING`: their default hard limits follow the machine's memory
/// size, so a task dumped on a slightly bigger machine comes back with ours (and a warning)
/// instead of failing.
const MACHINE_SIZED_RLIMITS: [usize; 2] = [6, 11];

/// The limits to install: the saved ones, except that a machine-sized hard limit above ours is
/// lowered to ours when we cannot raise it.
pub(super) fn reachable_rlimits(plan: &TaskPlan) -> Vec<abi::Rlimit> {
    let cap_resource = has_cap(24);
    let mut out = plan.rlimits.clone();
    for &res in &MACHINE_SIZED_RLIMITS {
        let Some(l) = out.get_mut(res) else { continue };
        if !cap_resource
            && let Some(have) = our_hard_limit(res)
            && l.max > have
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
pub(super) fn vdso_moves(plan: &TaskPlan, cur: &Special) -> Result<Vec<abi::Move>, RestoreError> {
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
