//! The images written from what was collected: per process `core`, `mm`, pages, `ids`, `fs`,
//! `fdinfo`; for the tree `files`, `pstree`, `seccomp`, `timens`, `inventory`
//! (`stats-dump` is written by [`crate::stats`]).

use std::path::Path;

use criu_images::pb::{
    FsEntry, InventoryEntry, Lsmtype, MmEntry, PluginsEntry, PstreeEntry, SeccompEntry,
};
use criu_images::{ImageDir, magic, names};

use super::collect::Collected;
use super::error::DumpError;
use super::{core, files, ids, pages, proc, seccomp};

/// Refuses a descriptor table or fs info shared by processes that are not parent and child
/// along the tree (`(pid, ppid, files_id, fs_id)` per live process): a restore creates each
/// process from its parent, so only a parent can hand its own to a child.
fn check_sharing(procs: &[(i32, i32, u32, u32)]) -> Result<(), DumpError> {
    let of = |pid: i32| procs.iter().find(|p| p.0 == pid);
    for &(pid, ppid, files, fs) in procs {
        let parent = of(ppid);
        for (what, id, pick) in [
            ("descriptor table (CLONE_FILES)", files, 2usize),
            ("fs info (CLONE_FS)", fs, 3usize),
        ] {
            let key = |p: &(i32, i32, u32, u32)| if pick == 2 { p.2 } else { p.3 };
            let Some(other) = procs.iter().find(|p| p.0 != pid && key(p) == id) else {
                continue;
            };
            if parent.is_some_and(|p| key(p) == id) {
                continue;
            }
            // The one that shares no parent's must be the top of its group: no other member
            // may be its ancestor-less peer.
            if procs
                .iter()
                .any(|p| p.0 != pid && key(p) == id && of(p.1).is_none_or(|pp| key(pp) != id))
            {
                return Err(DumpError::SharedTable {
                    pid,
                    table: what,
                    other: other.0,
                });
            }
        }
    }
    Ok(())
}

/// Writes the private pages of every process of `procs` (`pages-N.img` with N its index plus 1,
/// and its pagemap), spread over up to one thread per CPU; the page counts in process order,
/// or the error of the first process (in order) that failed.
fn private_pages_parallel(
    dir: &Path,
    procs: &[Collected],
    trackers: &super::track::Trackers,
) -> Result<Vec<pages::PageStats>, DumpError> {
    let workers = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(procs.len());
    let one = |n: usize| {
        let p = &procs[n];
        pages::dump_private_pages(p.pid, &p.vmas, dir, 1 + n as u32, trackers.get(p.pid))
    };
    if workers <= 1 {
        return (0..procs.len()).map(one).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n >= procs.len() {
                return done;
            }
            let r = one(n);
            let failed = r.is_err();
            done.push((n, r));
            if failed {
                // The others stop taking work too.
                next.store(procs.len(), std::sync::atomic::Ordering::Relaxed);
                return done;
            }
        }
    };
    let mut all: Vec<(usize, Result<pages::PageStats, DumpError>)> = std::thread::scope(|sc| {
        let helpers: Vec<_> = (1..workers).map(|_| sc.spawn(work)).collect();
        let mut all = work();
        for h in helpers {
            // A worker that panicked left its processes undone: they are missing below.
            all.extend(h.join().unwrap_or_default());
        }
        all
    });
    all.sort_by_key(|(n, _)| *n);
    let mut out = Vec::with_capacity(procs.len());
    for (n, r) in all {
        if n != out.len() {
            // A process was never copied: a worker failed on an earlier one or panicked.
            break;
        }
        out.push(r?);
    }
    if out.len() < procs.len() {
        // Only reached after a panic (an error returned above); copy the rest here.
        for n in out.len()..procs.len() {
            out.push(one(n)?);
        }
    }
    Ok(out)
}

pub(super) fn write_images(
    dir: &Path,
    procs: &[Collected],
    zombies: &[(i32, proc::ProcStat)],
    files: &files::FileTable,
    trackers: &super::track::Trackers,
    cgroups: &crate::namespaces::cgroup::CgroupSets,
    mut ps: Option<&mut crate::pageserver::PageClient>,
) -> Result<(pages::PageStats, pages::PageStats), DumpError> {
    let img = ImageDir::new(dir);
    let mut stats = pages::PageStats::default();
    let mut shared = pages::SharedObjects::default();
    let mut kobj_ids = ids::KobjIds::default();
    let mut seccomp_table = seccomp::SeccompTable::default();
    let mut fdinfo_written = Vec::new();
    let mut sharing = Vec::with_capacity(procs.len());
    let own_ns = &procs[0].own_ns;
    let in_tree = |pid: i32| procs.iter().any(|p| p.pid == pid);
    let mut tree = Vec::with_capacity(procs.len());
    // Without a page server, every process's private pages are copied first, by as many
    // threads as there are CPUs (each process has a pages file of its own).
    let mut early = match ps {
        Some(_) => Vec::new(),
        None => private_pages_parallel(dir, procs, trackers)?,
    }
    .into_iter();
    for (n, process) in procs.iter().enumerate() {
        let pid = process.pid;
        let upid = pid as u32;
        let private = match (ps.as_deref_mut(), early.next()) {
            (None, Some(st)) => st,
            // The pages go to the page server; the other images stay here.
            (Some(ps), _) => {
                let (pm, _, st) =
                    pages::plan_private_pages(pid, &process.vmas, 1 + n as u32, trackers.get(pid))?;
                ps.send_pagemap(pid, &pm)?;
                st
            }
            (None, None) => {
                pages::dump_private_pages(pid, &process.vmas, dir, 1 + n as u32, trackers.get(pid))?
            }
        };
        stats.scanned += private.scanned;
        stats.written += private.written;
        stats.parent += private.parent;
        shared.add(pid, &process.vmas)?;
        let heap_end = process
            .vmas
            .iter()
            .find(|v| v.is(criu_images::vma::status::HEAP))
            .map(|v| v.entry.end);
        let mm_entry = MmEntry {
            mm_start_code: process.stat.start_code,
            mm_end_code: process.stat.end_code,
            mm_start_data: process.stat.start_data,
            mm_end_data: process.stat.end_data,
            mm_start_stack: process.stat.start_stack,
            mm_start_brk: process.stat.start_brk,
            mm_brk: if process.brk != 0 {
                process.brk
            } else {
                heap_end.unwrap_or(process.stat.start_brk)
            },
            mm_arg_start: process.stat.arg_start,
            mm_arg_end: process.stat.arg_end,
            mm_env_start: process.stat.env_start,
            mm_env_end: process.stat.env_end,
            exe_file_id: process.exe_id,
            mm_saved_auxv: process.auxv.clone(),
            // Guard ranges after every real area, as CRIU writes them.
            vmas: process
                .vmas
                .iter()
                .map(|v| v.entry.clone())
                .chain(
                    process
                        .guards
                        .iter()
                        .map(|&(start, end)| criu_images::pb::VmaEntry {
                            start,
                            end,
                            status: criu_images::vma::status::GUARD,
                            fd: -1,
                            ..Default::default()
                        }),
                )
                .collect(),
            dumpable: Some(process.dumpable),
            aios: super::vma::aio_rings(&process.vmas),
            thp_disabled: Some(process.thp_disabled),
        };
        img.write_mm(upid, &mm_entry)?;
        for t in &process.threads {
            let mut core = t.core.clone();
            if let Some(th) = core.thread_core.as_mut()
                && t.seccomp_mode != 0
            {
                th.seccomp_mode = Some(t.seccomp_mode as i32);
                th.seccomp_filter = seccomp_table.add(&t.seccomp_filters);
            }
            if t.tid == pid
                && let Some(tc) = core.tc.as_mut()
            {
                tc.cg_set = cgroups.set_of(pid);
            }
            img.write_core(t.tid as u32, &core)?;
        }
        let mut task_ids = ids::task_ids(&process.ns, own_ns, 0);
        kobj_ids.assign(pid, &mut task_ids);
        img.write_ids(upid, &task_ids)?;
        img.write_fs(
            upid,
            &FsEntry {
                cwd_id: process.cwd_id,
                root_id: process.root_id,
                umask: Some(process.umask),
            },
        )?;
        // Processes sharing one descriptor table (CLONE_FILES) share one fdinfo image.
        if !fdinfo_written.contains(&task_ids.files_id) {
            img.write_fdinfo(task_ids.files_id, &process.fdinfo)?;
            fdinfo_written.push(task_ids.files_id);
        }
        let ppid = if n == 0 || !in_tree(process.stat.ppid) {
            0
        } else {
            process.stat.ppid as u32
        };
        sharing.push((pid, ppid as i32, task_ids.files_id, task_ids.fs_id));
        tree.push(PstreeEntry {
            pid: upid,
            ppid,
            pgid: process.stat.pgid as u32,
            sid: process.stat.sid as u32,
            threads: process.threads.iter().map(|t| t.tid as u32).collect(),
        });
    }
    check_sharing(&sharing)?;
    // Zombies: a pstree entry and a core with the task's end, as CRIU saves them.
    for (z, st) in zombies {
        tree.push(PstreeEntry {
            pid: *z as u32,
            ppid: if in_tree(st.ppid) { st.ppid as u32 } else { 0 },
            pgid: st.pgid as u32,
            sid: st.sid as u32,
            threads: vec![*z as u32],
        });
        let mut core = core::zombie_core(st);
        if let Some(tc) = core.tc.as_mut() {
            tc.cg_set = cgroups.set_of(*z);
        }
        img.write_core(*z as u32, &core)?;
    }
    shared.check_unmapped()?;
    let shared_stats = shared.write(dir, 1 + procs.len() as u32)?;
    stats.scanned += shared_stats.scanned;
    stats.written += shared_stats.written;
    files.write(dir)?;
    img.write_pstree(&tree)?;
    if !files.locks().is_empty() {
        criu_images::write_all(
            dir.join(names::FILE_LOCKS),
            magic::FILE_LOCKS,
            files.locks(),
        )?;
    }
    img.write_seccomp(&SeccompEntry {
        seccomp_filters: seccomp_table.filters,
    })?;
    img.write_timens(0, &ids::timens_now())?;
    Ok((stats, shared_stats))
}

pub(super) fn write_inventory(
    dir: &Path,
    root: &Collected,
    tcp_close: bool,
) -> Result<(), DumpError> {
    let inv = InventoryEntry {
        img_version: magic::IMAGES_V1_1,
        fdinfo_per_id: Some(true),
        root_ids: Some(ids::task_ids(&root.own_ns, &root.own_ns, 1)),
        ns_per_id: Some(true),
        root_cg_set: None,
        lsmtype: Some(Lsmtype::NoLsm as i32),
        dump_uptime: None,
        pre_dump_mode: None,
        tcp_close: tcp_close.then_some(true),
        network_lock_method: Some(0),
        plugins_entry: Some(PluginsEntry::default()),
        dump_criu_run_id: Some(crate::namespaces::net::conns::run_id().to_string()),
        allow_uprobes: None,
    };
    ImageDir::new(dir).write_inventory(&inv)?;
    Ok(())
}
