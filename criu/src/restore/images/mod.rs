//! From an image directory to a [`TaskPlan`]: reads every image a single-process restore needs
//! and checks it against itself and against this machine (files present with the recorded size,
//! page files long enough, areas sane), so that nothing is created from bad images.
//!
//! The tree, files and locks are read here; a task's memory (areas and pages) in `memory.rs`,
//! each thread's core (registers, signals, creds, seccomp) in `thread.rs`, each open file by
//! its kind in [`crate::files`].

use std::collections::HashMap;
use std::ffi::CString;
use std::path::Path;

use criu_images::pb::{self, FileEntry, RemapFilePathEntry};
use criu_images::{ImageDir, magic, names};

use super::error::RestoreError;
use super::plan::*;

mod chain;
pub(crate) mod entry;
mod memory;
mod thread;

pub(crate) use entry::{bad, cpath, img};
use memory::memory;
use thread::{task_state, thread_plan};

/// Reads the images of `dir` into a plan for its whole tree.
///
/// # Errors
/// [`RestoreError::Image`] for unreadable or malformed files, [`RestoreError::BadImage`] for
/// content that contradicts itself or this machine, the typed refusals of [`RestoreError`]
/// ([`RestoreError::Arch`], [`RestoreError::FdType`], ...) for state this restore cannot bring
/// back.
pub fn load(dir: &Path, shell_job: bool) -> Result<TreePlan, RestoreError> {
    let files = crate::files::FileOpts {
        shell_job,
        ..Default::default()
    };
    load_under(dir, &files, None)
}

/// Reads `inventory.img` of `dir` and checks its image version: the first image a restore
/// reads, so an empty or foreign directory is named by the file that says what it is.
///
/// # Errors
/// [`RestoreError::Image`] when it cannot be read, [`RestoreError::BadImage`] for another
/// image version.
pub(crate) fn check_inventory(dir: &Path) -> Result<criu_images::pb::InventoryEntry, RestoreError> {
    let inv = ImageDir::new(dir)
        .read_inventory()
        .map_err(|e| img(names::INVENTORY, e))?;
    if inv.img_version != 2 {
        return Err(bad(
            names::INVENTORY,
            format!("image version {} (expected 2)", inv.img_version),
        ));
    }
    Ok(inv)
}

/// As [`load`], with every file path of the tree under `yard` (where its mount namespace is
/// rebuilt until the restore pivots into it).
///
/// # Errors
/// As [`load`].
pub fn load_under(
    dir: &Path,
    files_opts: &crate::files::FileOpts,
    yard: Option<&Path>,
) -> Result<TreePlan, RestoreError> {
    let d = ImageDir::new(dir);
    check_inventory(dir)?;
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
    let mut files = if d.file(names::FILES).exists() {
        d.read_files().map_err(|e| img(names::FILES, e))?
    } else {
        Vec::new()
    };
    if let Some(y) = yard {
        for r in files.iter_mut().filter_map(|f| f.reg.as_mut()) {
            if r.name.starts_with('/') {
                r.name = format!("{}{}", y.display(), r.name.trim_end_matches('/'));
            }
        }
    }
    let by_id: HashMap<u32, &FileEntry> = files.iter().map(|f| (f.id, f)).collect();
    let remaps = read_remaps(&d)?;
    let mut plan = TreePlan::default();
    // Files the tasks map, checked once each (the tasks of a tree share most of them).
    let mut checked = std::collections::HashSet::new();
    for (i, task) in tree.iter().enumerate() {
        let t = load_task(&d, task, &by_id, &remaps, files_opts, &mut checked)?;
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
        if ![1, 2, 4, 8].contains(&l.flag) {
            return Err(RestoreError::LockKind {
                flag: l.flag,
                file: name.into(),
            });
        }
        // A lease may be being broken (CRIU's bit 4) towards a read lease or none.
        let lease_breaking = [4, 4 | libc::F_UNLCK as u32];
        if l.r#type != libc::F_RDLCK as u32
            && l.r#type != libc::F_WRLCK as u32
            && !(l.flag == 8 && lease_breaking.contains(&l.r#type))
        {
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
        t.threads
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
        for s in t.threads.iter_mut().filter_map(|th| th.seccomp.as_mut()) {
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
    // Group leaders are made before their brothers and sisters, who may join their groups
    // (a zombie leader comes last in the images, after the live tasks).
    for kids in &mut plan.children {
        kids.sort_by_key(|&k| plan.tasks[k].pgid != plan.tasks[k].pid);
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
    files_opts: &crate::files::FileOpts,
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
        && tc.task_state == criu_images::task_state::DEAD
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
    let mut leader = task_state(&mut plan, &core, &core_name)?;
    // The leader's name is the task's.
    leader.comm = Some(plan.comm.clone());
    plan.threads.push(leader);
    for &tid in task.threads.iter().filter(|t| **t != pid) {
        let name = names::core(tid);
        let tcore = d.read_core(tid).map_err(|e| img(&name, e))?;
        plan.threads.push(thread_plan(&core, &tcore, tid, &name)?);
    }
    memory(&mut plan, d, &mm, by_id, remaps, &mm_name, checked)?;
    let files_id = ids.files_id;
    plan.files_id = files_id;
    plan.fs_id = ids.fs_id;
    let fdinfo_name = names::fdinfo(files_id);
    let fdinfo = if d.file(&fdinfo_name).exists() {
        d.read_fdinfo(files_id).map_err(|e| img(&fdinfo_name, e))?
    } else {
        Vec::new()
    };
    descriptors(&mut plan, d, &fdinfo, by_id, remaps, files_opts)?;
    // A cwd or root removed while in use is made again, as any deleted file.
    let mut reg_path = |id: u32, what: &str| -> Result<CString, RestoreError> {
        match by_id.get(&id).and_then(|f| f.reg.as_ref()) {
            Some(r) => match remaps.get(&id) {
                Some(rm) => {
                    let g = crate::files::regular::ghost_file(d, rm.remap_id, &r.name)?;
                    let p = g.path.clone();
                    plan.ghosts.push(g);
                    Ok(p)
                }
                None => cpath(&r.name),
            },
            None => Err(bad(
                &names::fs(pid),
                format!("{what} refers to missing file id {id}"),
            )),
        }
    };
    let cwd = reg_path(fs.cwd_id, "cwd")?;
    let root = reg_path(fs.root_id, "root")?;
    plan.cwd = Some(cwd);
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

fn descriptors(
    plan: &mut TaskPlan,
    d: &ImageDir,
    fdinfo: &[pb::FdinfoEntry],
    by_id: &HashMap<u32, &FileEntry>,
    remaps: &HashMap<u32, RemapFilePathEntry>,
    opts: &crate::files::FileOpts,
) -> Result<(), RestoreError> {
    let mut first_fd_of: HashMap<u32, i32> = HashMap::new();
    // Every kind but the regular one, then that one: each parses the entries of its type.
    let mut kinds = crate::files::kinds();
    kinds.push(Box::new(crate::files::regular::Regular::default()));
    let ctx = crate::files::ImageCtx {
        dir: d,
        remaps,
        opts,
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
                status: None,
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
            return Err(RestoreError::FdType { fd, ty: fi.r#type });
        };
        let source = FdSource::File(kind.parse(&ctx, fe, fd)?);
        fds.push(Fd {
            fd,
            file_id: fi.id,
            cloexec,
            source,
            status: crate::files::FileStatus::of(fe),
        });
    }
    plan.fds = fds;
    Ok(())
}
