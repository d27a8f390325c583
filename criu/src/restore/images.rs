//! From an image directory to a [`TaskPlan`]: reads every image a single-process restore needs
//! and checks it against itself and against this machine (files present with the recorded size,
//! page files long enough, areas sane), so that nothing is created from bad images.

use std::collections::HashMap;
use std::ffi::CString;
use std::path::Path;

use criu_images::pagemap::{PE_PARENT, PE_PRESENT};
use criu_images::pb::{self, CoreEntry, FileEntry, MmEntry, RegFileEntry, RemapFilePathEntry};
use criu_images::vma::status;
use criu_images::{ImageDir, magic, names, sigaction_slot, task_state};

use super::abi;
use super::error::RestoreError;
use super::layout::{PAGE, TASK_SIZE};
use super::plan::*;

pub(crate) fn img(file: &str, e: criu_images::ImageError) -> RestoreError {
    RestoreError::Image {
        file: file.to_string(),
        error: e,
    }
}

pub(crate) fn bad(file: &str, reason: impl Into<String>) -> RestoreError {
    RestoreError::BadImage {
        file: file.to_string(),
        reason: reason.into(),
    }
}

pub(crate) fn cpath(s: &str) -> Result<CString, RestoreError> {
    CString::new(s.as_bytes()).map_err(|_| bad("files.img", format!("path {s:?} holds a NUL byte")))
}

/// Reads the images of `dir` into a plan for its whole tree.
///
/// # Errors
/// [`RestoreError::Image`] for unreadable or malformed files, [`RestoreError::BadImage`] for
/// content that contradicts itself or this machine, [`RestoreError::Unsupported`] for state this
/// restore cannot bring back.
pub fn load(dir: &Path, shell_job: bool) -> Result<TreePlan, RestoreError> {
    let d = ImageDir::new(dir);
    let inv = d.read_inventory().map_err(|e| img(names::INVENTORY, e))?;
    if inv.img_version != 2 {
        return Err(bad(
            names::INVENTORY,
            format!("image version {} (expected 2)", inv.img_version),
        ));
    }
    let tree = d.read_pstree().map_err(|e| img(names::PSTREE, e))?;
    if tree.is_empty() {
        return Err(bad(names::PSTREE, "no processes"));
    }
    let mut seen = std::collections::HashSet::new();
    for t in &tree {
        if t.pid == 0 || t.pid > i32::MAX as u32 {
            return Err(bad(names::PSTREE, format!("pid {}", t.pid)));
        }
        for id in std::iter::once(t.pid).chain(t.threads.iter().copied().filter(|x| *x != t.pid)) {
            if id == 0 || id > i32::MAX as u32 || !seen.insert(id) {
                return Err(bad(names::PSTREE, format!("id {id} is invalid or twice")));
            }
        }
    }
    let files = if d.file(names::FILES).exists() {
        d.read_files().map_err(|e| img(names::FILES, e))?
    } else {
        Vec::new()
    };
    let by_id: HashMap<u32, &FileEntry> = files.iter().map(|f| (f.id, f)).collect();
    let remaps = read_remaps(&d)?;
    let mut plan = TreePlan::default();
    // Files the tasks map, checked once each (the tasks of a tree share most of them).
    let mut checked = std::collections::HashSet::new();
    for (i, task) in tree.iter().enumerate() {
        let t = load_task(&d, task, &by_id, &remaps, shell_job, &mut checked)?;
        if i == 0 && t.zombie.is_some() {
            return Err(bad(
                names::PSTREE,
                format!("the root {} is a zombie", t.pid),
            ));
        }
        plan.tasks.push(t);
    }
    link_tree(&mut plan)?;
    resolve_seccomp(&d, &mut plan)?;
    file_locks(&d, &mut plan)?;
    Ok(plan)
}

/// Hands each lock of `filelocks.img` to the task that holds it, checking that it names one of
/// that task's descriptors.
fn file_locks(d: &ImageDir, plan: &mut TreePlan) -> Result<(), RestoreError> {
    let name = names::FILE_LOCKS;
    if !d.file(name).exists() {
        return Ok(());
    }
    let locks: Vec<pb::FileLockEntry> =
        criu_images::read_all(d.file(name), magic::FILE_LOCKS).map_err(|e| img(name, e))?;
    for l in locks {
        let what = |why: &str| bad(name, format!("lock of pid {} on fd {}: {why}", l.pid, l.fd));
        if ![1, 2, 4].contains(&l.flag) {
            return Err(RestoreError::Unsupported {
                what: format!("a file lock of kind {} in {name}", l.flag),
            });
        }
        if l.r#type != libc::F_RDLCK as u32 && l.r#type != libc::F_WRLCK as u32 {
            return Err(what(&format!("type {}", l.r#type)));
        }
        if l.start < 0 || l.len < 0 {
            return Err(what(&format!("range {} + {}", l.start, l.len)));
        }
        let task = plan
            .tasks
            .iter_mut()
            .find(|t| t.pid == l.pid && t.zombie.is_none())
            .ok_or_else(|| what("no such task"))?;
        if !task.fds.iter().any(|f| f.fd == l.fd) {
            return Err(what("no such descriptor"));
        }
        task.locks.push(LockOp {
            kind: l.flag,
            ltype: l.r#type,
            fd: l.fd,
            start: l.start,
            len: l.len,
        });
    }
    Ok(())
}

/// Most instructions a seccomp program may have (`BPF_MAXINSNS`).
const BPF_MAXINSNS: usize = 4096;
/// The `SECCOMP_FILTER_FLAG_*`s a saved filter may carry: `LOG` and `SPEC_ALLOW` (what
/// `PTRACE_SECCOMP_GET_METADATA` reports).
const SECCOMP_FLAGS_KNOWN: u32 = 2 | 4;

/// Gives every thread in filter mode its filters, oldest first, from `seccomp.img` (each
/// filter names the one before it with `prev`).
fn resolve_seccomp(d: &ImageDir, plan: &mut TreePlan) -> Result<(), RestoreError> {
    let name = names::SECCOMP;
    let wanted = plan.tasks.iter().any(|t| {
        t.seccomp.as_ref().is_some_and(|s| s.mode == 2)
            || t.threads
                .iter()
                .any(|th| th.seccomp.as_ref().is_some_and(|s| s.mode == 2))
    });
    if !wanted {
        return Ok(());
    }
    if !d.file(name).exists() {
        return Err(bad(name, "missing, but tasks run under seccomp filters"));
    }
    let table = d.read_seccomp().map_err(|e| img(name, e))?.seccomp_filters;
    let chain = |newest: u32| -> Result<Vec<(Vec<u8>, u32)>, RestoreError> {
        let mut out = Vec::new();
        let mut at = Some(newest);
        while let Some(i) = at {
            let f = table
                .get(i as usize)
                .ok_or_else(|| bad(name, format!("filter {i} of {}", table.len())))?;
            if out.len() >= table.len() {
                return Err(bad(name, format!("filter {newest}: its chain loops")));
            }
            let n = f.filter.len() / 8;
            if f.filter.len() % 8 != 0 || n == 0 || n > BPF_MAXINSNS {
                return Err(bad(name, format!("filter {i} of {} bytes", f.filter.len())));
            }
            let flags = f.flags.unwrap_or(0);
            if flags & !SECCOMP_FLAGS_KNOWN != 0 {
                return Err(bad(name, format!("filter {i} with flags {flags:#x}")));
            }
            out.push((f.filter.clone(), flags));
            at = f.prev;
        }
        out.reverse();
        Ok(out)
    };
    for t in &mut plan.tasks {
        let seccomps =
            std::iter::once(&mut t.seccomp).chain(t.threads.iter_mut().map(|th| &mut th.seccomp));
        for s in seccomps.flatten() {
            if let Some(newest) = s.newest {
                s.filters = chain(newest)?;
            }
        }
    }
    Ok(())
}

/// Finds every task's parent and children and the creation order; every task must hang below
/// the root.
fn link_tree(plan: &mut TreePlan) -> Result<(), RestoreError> {
    let n = plan.tasks.len();
    let index: HashMap<i32, usize> = plan
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.pid, i))
        .collect();
    plan.parent = vec![None; n];
    plan.children = vec![Vec::new(); n];
    for i in 1..n {
        let t = &plan.tasks[i];
        let p = *index.get(&t.ppid).ok_or_else(|| {
            bad(
                names::PSTREE,
                format!("parent {} of pid {} is not in the tree", t.ppid, t.pid),
            )
        })?;
        if plan.tasks[p].zombie.is_some() {
            return Err(bad(
                names::PSTREE,
                format!("pid {} has the zombie {} as parent", t.pid, t.ppid),
            ));
        }
        plan.parent[i] = Some(p);
        plan.children[p].push(i);
    }
    let mut order = Vec::with_capacity(n);
    let mut stack = vec![0usize];
    while let Some(i) = stack.pop() {
        if order.len() > n {
            break;
        }
        order.push(i);
        stack.extend(plan.children[i].iter().rev());
    }
    if order.len() != n {
        return Err(bad(
            names::PSTREE,
            "some processes do not descend from the root",
        ));
    }
    plan.order = order;
    Ok(())
}

/// The plan of one task of the tree.
fn load_task(
    d: &ImageDir,
    task: &pb::PstreeEntry,
    by_id: &HashMap<u32, &FileEntry>,
    remaps: &HashMap<u32, RemapFilePathEntry>,
    shell_job: bool,
    checked: &mut std::collections::HashSet<u32>,
) -> Result<TaskPlan, RestoreError> {
    let pid = task.pid;
    let core_name = names::core(pid);
    let core = d.read_core(pid).map_err(|e| img(&core_name, e))?;
    let mut plan = TaskPlan {
        pid: pid as i32,
        ppid: i32::try_from(task.ppid).map_err(|_| bad(names::PSTREE, "ppid"))?,
        pgid: i32::try_from(task.pgid).map_err(|_| bad(names::PSTREE, "pgid"))?,
        sid: i32::try_from(task.sid).map_err(|_| bad(names::PSTREE, "sid"))?,
        ..TaskPlan::default()
    };
    if let Some(tc) = &core.tc
        && tc.task_state == task_state::DEAD
    {
        plan.zombie = Some(tc.exit_code);
        plan.comm = tc.comm.clone();
        return Ok(plan);
    }
    if !task.threads.contains(&task.pid) {
        return Err(bad(
            names::PSTREE,
            format!(
                "pid {} is not among its threads {:?}",
                task.pid, task.threads
            ),
        ));
    }
    let mm_name = names::mm(pid);
    let mm = d.read_mm(pid).map_err(|e| img(&mm_name, e))?;
    let ids = d.read_ids(pid).map_err(|e| img(&names::ids(pid), e))?;
    let fs = d.read_fs(pid).map_err(|e| img(&names::fs(pid), e))?;
    task_state(&mut plan, &core, &core_name)?;
    for &tid in task.threads.iter().filter(|t| **t != pid) {
        let name = names::core(tid);
        let tcore = d.read_core(tid).map_err(|e| img(&name, e))?;
        plan.threads.push(thread_plan(&core, &tcore, tid, &name)?);
    }
    memory(&mut plan, d, &mm, by_id, &mm_name, checked)?;
    let files_id = ids.files_id;
    let fdinfo_name = names::fdinfo(files_id);
    let fdinfo = if d.file(&fdinfo_name).exists() {
        d.read_fdinfo(files_id).map_err(|e| img(&fdinfo_name, e))?
    } else {
        Vec::new()
    };
    descriptors(&mut plan, d, &fdinfo, by_id, remaps, shell_job)?;
    let reg_path = |id: u32, what: &str| -> Result<CString, RestoreError> {
        match by_id.get(&id).and_then(|f| f.reg.as_ref()) {
            Some(r) => cpath(&r.name),
            None => Err(bad(
                &names::fs(pid),
                format!("{what} refers to missing file id {id}"),
            )),
        }
    };
    plan.cwd = Some(reg_path(fs.cwd_id, "cwd")?);
    let root = reg_path(fs.root_id, "root")?;
    if root.as_bytes() != b"/" {
        plan.root = Some(root);
    }
    plan.umask = fs.umask.unwrap_or(0o022);
    Ok(plan)
}

fn read_remaps(d: &ImageDir) -> Result<HashMap<u32, RemapFilePathEntry>, RestoreError> {
    let name = "remap-fpath.img";
    if !d.file(name).exists() {
        return Ok(HashMap::new());
    }
    let v: Vec<RemapFilePathEntry> =
        criu_images::read_all(d.file(name), magic::REMAP_FPATH).map_err(|e| img(name, e))?;
    Ok(v.into_iter().map(|r| (r.orig_id, r)).collect())
}

/// The state of a thread other than the leader (whose core alone holds the task-wide part).
fn thread_plan(
    leader: &CoreEntry,
    core: &CoreEntry,
    tid: u32,
    file: &str,
) -> Result<ThreadPlan, RestoreError> {
    let tid = i32::try_from(tid).map_err(|_| bad(names::PSTREE, format!("tid {tid}")))?;
    let mut c = core.clone();
    let mut tc = c.tc.take().or_else(|| leader.tc.clone());
    if let Some(tc) = tc.as_mut() {
        // Process-wide pending signals belong to the leader.
        tc.signals_s = None;
    }
    c.tc = tc;
    let mut p = TaskPlan::default();
    task_state(&mut p, &c, file)?;
    Ok(ThreadPlan {
        tid,
        regs: p.regs,
        fpu: p.fpu,
        sigmask: p.sigmask,
        altstack: p.altstack,
        clear_tid_addr: p.clear_tid_addr,
        robust_list: p.robust_list,
        rseq: p.rseq,
        pending: p.pending_thread,
        creds: p.creds,
        no_new_privs: p.no_new_privs,
        pdeath_sig: p.pdeath_sig,
        comm: core.thread_core.as_ref().and_then(|t| t.comm.clone()),
        seccomp: p.seccomp,
    })
}

fn task_state(plan: &mut TaskPlan, core: &CoreEntry, file: &str) -> Result<(), RestoreError> {
    if core.mtype != pb::CoreEntryMarch::X8664 as i32 {
        return Err(RestoreError::Unsupported {
            what: format!("architecture {} in {file}", core.mtype),
        });
    }
    let ti = core
        .thread_info
        .as_ref()
        .ok_or_else(|| bad(file, "no x86 thread info"))?;
    let tc = core.tc.as_ref().ok_or_else(|| bad(file, "no task core"))?;
    let th = core.thread_core.as_ref();
    // Seccomp state in the task core is the layout of old images (per thread since CRIU 3.x).
    if let Some(m) = tc.old_seccomp_mode.filter(|m| *m != 0) {
        return Err(RestoreError::Unsupported {
            what: format!("seccomp mode {m} in the task core of {file} (an old image layout)"),
        });
    }
    let g = &ti.gpregs;
    if g.mode.unwrap_or(1) != 1 {
        return Err(RestoreError::Unsupported {
            what: "a 32-bit (compat) task".into(),
        });
    }
    plan.regs = compel_arch::UserRegs {
        r15: g.r15,
        r14: g.r14,
        r13: g.r13,
        r12: g.r12,
        rbp: g.bp,
        rbx: g.bx,
        r11: g.r11,
        r10: g.r10,
        r9: g.r9,
        r8: g.r8,
        rax: g.ax,
        rcx: g.cx,
        rdx: g.dx,
        rsi: g.si,
        rdi: g.di,
        orig_rax: g.orig_ax,
        rip: g.ip,
        cs: g.cs,
        eflags: g.flags,
        rsp: g.sp,
        ss: g.ss,
        fs_base: g.fs_base,
        gs_base: g.gs_base,
        ds: g.ds,
        es: g.es,
        fs: g.fs,
        gs: g.gs,
    };
    let f = &ti.fpregs;
    let mut legacy = vec![0u8; 512];
    legacy[0..2].copy_from_slice(&(f.cwd as u16).to_le_bytes());
    legacy[2..4].copy_from_slice(&(f.swd as u16).to_le_bytes());
    legacy[4..6].copy_from_slice(&(f.twd as u16).to_le_bytes());
    legacy[6..8].copy_from_slice(&(f.fop as u16).to_le_bytes());
    legacy[8..16].copy_from_slice(&f.rip.to_le_bytes());
    legacy[16..24].copy_from_slice(&f.rdp.to_le_bytes());
    legacy[24..28].copy_from_slice(&f.mxcsr.to_le_bytes());
    legacy[28..32].copy_from_slice(&f.mxcsr_mask.to_le_bytes());
    if f.st_space.len() > 32 || f.xmm_space.len() > 64 {
        return Err(bad(file, "oversized x87/SSE register arrays"));
    }
    let st = words32(&f.st_space);
    legacy[32..32 + st.len()].copy_from_slice(&st);
    let xmm = words32(&f.xmm_space);
    legacy[160..160 + xmm.len()].copy_from_slice(&xmm);
    let mut fpu = FpuPlan {
        legacy,
        xstate_bv: 0b11,
        components: Vec::new(),
    };
    if let Some(x) = &f.xsave {
        fpu.xstate_bv = x.xstate_bv;
        let comps: [(u32, Vec<u8>); 7] = [
            (2, words32(&x.ymmh_space)),
            (3, words64(&x.bndreg_state)),
            (4, words64(&x.bndcsr_state)),
            (5, words64(&x.opmask_reg)),
            (6, words64(&x.zmm_upper)),
            (7, words64(&x.hi16_zmm)),
            (9, words32(&x.pkru)),
        ];
        fpu.components = comps.into_iter().filter(|(_, b)| !b.is_empty()).collect();
    }
    plan.fpu = fpu;
    match tc.task_state {
        task_state::ALIVE => {}
        task_state::STOPPED => {
            let sig = tc.stop_signo.map_or(libc::SIGSTOP, |s| s as i32);
            // A stop signal the task blocks would only pend: stop it with SIGSTOP then.
            let blocked = sig > 0 && sig <= 64 && plan.sigmask & (1 << (sig - 1)) != 0;
            plan.stop_signal = Some(if blocked || !(1..=64).contains(&sig) {
                libc::SIGSTOP
            } else {
                sig
            });
        }
        other => {
            return Err(RestoreError::Unsupported {
                what: format!("task state {other} in {file} (only alive and stopped tasks)"),
            });
        }
    }
    plan.clear_tid_addr = ti.clear_tid_addr;
    plan.comm = tc.comm.clone();
    plan.personality = Some(tc.personality);
    plan.sigmask = th.and_then(|t| t.blk_sigset).unwrap_or(tc.blk_sigset);
    // Handlers.
    if !tc.sigactions.is_empty() {
        let mut acts = vec![abi::KSigaction::default(); abi::NSIG];
        for sig in 1..=abi::NSIG as u32 {
            let Some(slot) = sigaction_slot(sig) else {
                continue;
            };
            if let Some(sa) = tc.sigactions.get(slot) {
                acts[sig as usize - 1] = abi::KSigaction {
                    handler: sa.sigaction,
                    flags: sa.flags,
                    restorer: sa.restorer,
                    mask: sa.mask,
                };
            }
        }
        plan.sigactions = acts;
    }
    if let Some(rl) = &tc.rlimits {
        if rl.rlimits.len() > abi::NRLIMITS {
            return Err(bad(file, format!("{} rlimits", rl.rlimits.len())));
        }
        plan.rlimits = rl
            .rlimits
            .iter()
            .map(|r| abi::Rlimit {
                cur: r.cur,
                max: r.max,
            })
            .collect();
    }
    if let Some(t) = &tc.timers {
        for (i, it) in [&t.real, &t.virt, &t.prof].into_iter().enumerate() {
            plan.itimers[i] = Some(abi::Itimerval {
                interval_sec: it.isec as i64,
                interval_usec: it.iusec as i64,
                value_sec: it.vsec as i64,
                value_usec: it.vusec as i64,
            });
        }
        for p in &t.posix {
            plan.posix_timers.push(abi::PosixTimer {
                id: p.it_id as i32,
                clock_id: p.clock_id as i32,
                notify: p.it_sigev_notify as i32,
                signo: p.si_signo as i32,
                notify_tid: p.notify_thread_id.unwrap_or(0),
                pad: 0,
                value: p.sival_ptr,
                interval_sec: p.isec as i64,
                interval_nsec: p.insec as i64,
                value_sec: p.vsec as i64,
                value_nsec: p.vnsec as i64,
            });
        }
    }
    plan.child_subreaper = tc.child_subreaper;
    plan.oom_score_adj = tc.oom_score_adj.filter(|v| *v != 0);
    plan.loginuid = tc.loginuid;
    plan.membarrier = tc.membarrier_registration_mask.unwrap_or(0);
    let siginfos = |q: Option<&pb::SignalQueueEntry>| -> Result<Vec<[u8; 128]>, RestoreError> {
        let mut out = Vec::new();
        for s in q.map(|q| q.signals.as_slice()).unwrap_or(&[]) {
            let arr: [u8; 128] = s
                .siginfo
                .as_slice()
                .try_into()
                .map_err(|_| bad(file, format!("siginfo of {} bytes", s.siginfo.len())))?;
            out.push(arr);
        }
        Ok(out)
    };
    plan.pending_shared = siginfos(tc.signals_s.as_ref())?;
    if let Some(th) = th {
        plan.pending_thread = siginfos(th.signals_p.as_ref())?;
        plan.robust_list = (th.futex_rla, th.futex_rla_len as u64);
        let nice = th.sched_nice.unwrap_or(0);
        let policy = th.sched_policy.unwrap_or(0);
        if !(-20..=19).contains(&nice) {
            return Err(bad(file, format!("nice value {nice}")));
        }
        if nice != 0 || policy != 0 {
            plan.sched = Some((nice, policy, th.sched_prio.unwrap_or(0)));
        }
        plan.pdeath_sig = th.pdeath_sig.map(|s| s as i32);
        if let Some(sas) = &th.sas {
            plan.altstack = Some((sas.ss_sp, sas.ss_flags as i32, sas.ss_size));
        }
        if let Some(r) = &th.rseq_entry
            && r.rseq_abi_pointer != 0
        {
            plan.rseq = Some((r.rseq_abi_pointer, r.rseq_abi_size, r.signature));
        }
        match (th.seccomp_mode.unwrap_or(0), th.seccomp_filter) {
            (0, _) => {}
            (1, _) => {
                plan.seccomp = Some(SeccompPlan {
                    mode: 1,
                    ..SeccompPlan::default()
                })
            }
            (2, Some(newest)) => {
                plan.seccomp = Some(SeccompPlan {
                    mode: 2,
                    newest: Some(newest),
                    filters: Vec::new(),
                })
            }
            (2, None) => return Err(bad(file, "seccomp filter mode without a filter")),
            (m, _) => return Err(bad(file, format!("seccomp mode {m}"))),
        }
        if let Some(c) = &th.creds {
            let two = |v: &[u32]| {
                [
                    v.first().copied().unwrap_or(0),
                    v.get(1).copied().unwrap_or(0),
                ]
            };
            plan.no_new_privs = c.no_new_privs.unwrap_or(0) != 0;
            plan.creds = Some(CredsPlan {
                creds: abi::Creds {
                    uid: c.uid,
                    euid: c.euid,
                    suid: c.suid,
                    fsuid: c.fsuid,
                    gid: c.gid,
                    egid: c.egid,
                    sgid: c.sgid,
                    fsgid: c.fsgid,
                    secbits: c.secbits,
                    ngroups: 0,
                    groups: 0,
                    cap_inh: two(&c.cap_inh),
                    cap_prm: two(&c.cap_prm),
                    cap_eff: two(&c.cap_eff),
                    cap_bnd: two(&c.cap_bnd),
                    cap_amb: two(&c.cap_amb),
                },
                groups: c.groups.clone(),
            });
        }
    }
    Ok(())
}

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

/// The kind-specific part of descriptor `fd`'s file entry (`what` names it in the error).
pub(crate) fn kind_entry<'a, T>(
    part: &'a Option<T>,
    fd: i32,
    what: &str,
) -> Result<&'a T, RestoreError> {
    part.as_ref()
        .ok_or_else(|| bad(names::FILES, format!("fd {fd}: no {what} entry")))
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

fn memory(
    plan: &mut TaskPlan,
    d: &ImageDir,
    mm: &MmEntry,
    by_id: &HashMap<u32, &FileEntry>,
    file: &str,
    checked: &mut std::collections::HashSet<u32>,
) -> Result<(), RestoreError> {
    let mut check = |id: u32| -> Result<&RegFileEntry, RestoreError> {
        let r = reg_of(by_id, id, file)?;
        if checked.insert(id) {
            check_mapped_file(r)?;
        }
        Ok(r)
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
        let unsupported = |what: &str| RestoreError::Unsupported {
            what: format!("{what} at {:#x}", v.start),
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
            // CRIU writes shared anonymous memory as a mapping of a memfd named /dev/zero.
            let shmid = anon_shared_memfd(d, by_id, v.shmid as u32, file)?
                .ok_or_else(|| unsupported("a memfd mapping"))?;
            let mut vma = mk_vma(v, VmaKind::AnonShared { shmid });
            vma.flags |= libc::MAP_ANONYMOUS;
            plan.vmas.push(vma);
            continue;
        }
        if st & (status::SYSVIPC | status::SOCKET | status::AIORING | status::SHSTK) != 0 {
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
            let r = check(v.shmid as u32)?;
            VmaKind::FilePrivate {
                path: cpath(&r.name)?,
            }
        } else if st & status::FILE_SHARED != 0 {
            let r = check(v.shmid as u32)?;
            let acc = v.fdflags.unwrap_or(libc::O_RDONLY as u32) as i32 & libc::O_ACCMODE;
            VmaKind::FileShared {
                path: cpath(&r.name)?,
                writable: acc != libc::O_RDONLY,
            }
        } else if st & status::ANON_SHARED != 0 {
            VmaKind::AnonShared { shmid: v.shmid }
        } else if st & status::ANON_PRIVATE != 0 {
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
    let exe = check(mm.exe_file_id)?;
    plan.exe = Some(cpath(&exe.name)?);
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

/// The shmem id of the shared anonymous object behind CRIU's memfd file `id`, or `None` when
/// it is a real memfd.
fn anon_shared_memfd(
    d: &ImageDir,
    by_id: &HashMap<u32, &FileEntry>,
    id: u32,
    file: &str,
) -> Result<Option<u64>, RestoreError> {
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
    Ok((inode.name == "/dev/zero").then_some(u64::from(inode.shmid)))
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
    let add_file = |plan: &mut TaskPlan, pages_id: u32| -> usize {
        let p = d.pages_path(pages_id);
        match plan.page_files.iter().position(|f| *f == p) {
            Some(i) => i,
            None => {
                plan.page_files.push(p);
                plan.page_files.len() - 1
            }
        }
    };
    let mut used: HashMap<usize, u64> = HashMap::new();
    let fi = add_file(plan, pm.pages_id);
    let mut off = 0u64;
    for e in &pm.entries {
        let flags = e.effective_flags();
        let n = e.pages();
        let end = e
            .end()
            .ok_or_else(|| bad(&pm_name, format!("entry at {:#x} overflows", e.vaddr)))?;
        if flags & PE_PARENT != 0 {
            return Err(RestoreError::Unsupported {
                what: format!("pages in a parent image ({pm_name} at {:#x})", e.vaddr),
            });
        }
        if flags & PE_PRESENT == 0 {
            continue;
        }
        if !covered(&plan.vmas, e.vaddr, end) {
            return Err(bad(
                &pm_name,
                format!("pages {:#x}-{end:#x} lie outside the task's areas", e.vaddr),
            ));
        }
        plan.pages.push(PageRun {
            vaddr: e.vaddr,
            nr_pages: n,
            file: fi,
            offset: off,
        });
        off += n * PAGE;
    }
    used.insert(fi, off);
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
        let have = std::fs::metadata(path)
            .map_err(|e| RestoreError::MissingFile {
                path: path.clone(),
                source: e,
            })?
            .len();
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

fn descriptors(
    plan: &mut TaskPlan,
    d: &ImageDir,
    fdinfo: &[pb::FdinfoEntry],
    by_id: &HashMap<u32, &FileEntry>,
    remaps: &HashMap<u32, RemapFilePathEntry>,
    shell_job: bool,
) -> Result<(), RestoreError> {
    let mut first_fd_of: HashMap<u32, i32> = HashMap::new();
    // Every kind but the regular one, then that one: each parses the entries of its type.
    let mut kinds = crate::files::kinds();
    kinds.push(Box::new(crate::files::regular::Regular::default()));
    let ctx = crate::files::ImageCtx {
        dir: d,
        remaps,
        shell_job,
    };
    let mut fds: Vec<Fd> = Vec::new();
    let mut sorted: Vec<&pb::FdinfoEntry> = fdinfo.iter().collect();
    sorted.sort_by_key(|f| f.fd);
    for fi in sorted {
        let fd = i32::try_from(fi.fd).map_err(|_| bad("fdinfo", format!("fd {}", fi.fd)))?;
        let cloexec = fi.flags & libc::FD_CLOEXEC as u32 != 0;
        if let Some(&of) = first_fd_of.get(&fi.id) {
            fds.push(Fd {
                fd,
                file_id: fi.id,
                cloexec,
                source: FdSource::Dup { of },
            });
            continue;
        }
        first_fd_of.insert(fi.id, fd);
        let Some(fe) = by_id.get(&fi.id) else {
            return Err(bad(
                names::FILES,
                format!("fd {fd} refers to missing file id {}", fi.id),
            ));
        };
        let Some(kind) = kinds.iter_mut().find(|k| k.fd_type() as i32 == fi.r#type) else {
            return Err(RestoreError::Unsupported {
                what: format!("fd {fd} of type {}", fi.r#type),
            });
        };
        let source = FdSource::File(kind.parse(&ctx, fe, fd)?);
        fds.push(Fd {
            fd,
            file_id: fi.id,
            cloexec,
            source,
        });
    }
    plan.fds = fds;
    Ok(())
}

/// Packs little-endian `u32` words.
pub fn words32(w: &[u32]) -> Vec<u8> {
    w.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Packs little-endian `u64` words.
pub fn words64(w: &[u64]) -> Vec<u8> {
    w.iter().flat_map(|x| x.to_le_bytes()).collect()
}
