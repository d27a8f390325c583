//! `criu pre-dump`: copy a live tree's memory while it keeps running, so that the final dump
//! (`criu dump --track-mem --prev-images-dir DIR`) writes only what changed since.
//!
//! The tree is frozen just long enough to list each process's areas, start or read back its
//! memory tracking ([`super::track`]) and plan which pages to copy; with `--pre-dump-mode
//! splice` (the default) the pages are copied before the tree resumes, with `read` after it
//! resumed (pages written meanwhile are written since the tracking pass, so the next dump takes
//! them again). A pre-dump writes what CRIU's does: `pagemap-PID.img` and `pages-N.img` per
//! process (pages not written since `--prev-images-dir` as `PE_PARENT` entries), the `parent`
//! link, `inventory.img` (with `pre_dump_mode`) and `stats-dump.img`; plus [`track::RECORD`].
//! It never kills or stops the tree, and leaves it running when it fails.

use std::path::Path;
use std::time::Instant;

use criu_images::pb::{DumpStatsEntry, InventoryEntry, Lsmtype, StatsEntry};
use criu_images::{ImageDir, magic, names};

use super::error::DumpError;
use super::pages::{PageStats, plan_private_pages};
use super::summary::{DumpSummary, INCOMPLETE_MARKER};
use super::track::{self, TaskTracker};
use super::{freeze, pages_file, proc, thread};
use crate::errno::chain;
use crate::options::{DumpOptions, PreDumpMode};

/// Pre-dumps the tree `opts.tree` into `opts.images_dir`, leaving it running.
///
/// # Errors
/// [`DumpError::Step`] naming the step that failed; the tree runs on.
pub fn pre_dump(opts: &DumpOptions) -> Result<DumpSummary, DumpError> {
    let pid = opts.tree.ok_or(DumpError::NoPid)?;
    let dir = opts.images_dir.clone();
    let marker = dir.join(INCOMPLETE_MARKER);
    let result = (|| {
        super::begin_images(&dir).map_err(|e| e.at("preparing the images directory"))?;
        inner(opts, pid, &dir)
    })();
    match &result {
        Ok(s) => {
            let _ = std::fs::remove_file(&marker);
            tracing::info!(pid, pages = s.pages_written, "pre-dump finished");
        }
        Err(e) => {
            let _ = std::fs::remove_file(dir.join(names::INVENTORY));
            let _ = criu_images::write_file(
                &marker,
                format!("pre-dump of {pid} failed: {}\n", chain(e)),
            );
        }
    }
    result
}

fn inner(opts: &DumpOptions, pid: i32, dir: &Path) -> Result<DumpSummary, DumpError> {
    if let Some(prev) = &opts.prev_images_dir {
        track::link_parent(dir, prev).map_err(|e| e.at("linking the parent images"))?;
    }
    let prev = track::parent_record(dir, opts.prev_images_dir.as_deref());
    let t0 = Instant::now();
    let (mut tasks, _zombies) =
        freeze::seize(pid, opts).map_err(|e| e.at("seizing the process tree"))?;
    let mut trackers = track::Trackers::default();
    let mut plans = Vec::with_capacity(tasks.len());
    let mut stats = PageStats::default();
    let planned = (|| {
        for (n, (p, task)) in tasks.iter_mut().enumerate() {
            thread::rseq_abort(task, *p)?;
            let maps = proc::read_smaps(*p)?;
            let mut files = super::files::FileTable::new(opts.ghost_limit);
            let vmas = super::vma::classify(*p, &maps, &mut files)?;
            let t = TaskTracker::open(task, *p, prev.get(p))?;
            let (pm, segs, st) = plan_private_pages(*p, &vmas, 1 + n as u32, Some(&t))?;
            trackers.insert(*p, t);
            stats.scanned += st.scanned;
            stats.written += st.written;
            stats.parent += st.parent;
            plans.push((*p, pm, segs));
        }
        Ok::<(), DumpError>(())
    })();
    if let Err(e) = planned {
        // The tracking descriptors made so far are not recorded anywhere: take them out again.
        trackers.close_in(&mut tasks);
        return Err(e.at("collecting the memory"));
    }
    // From here on the tracking is armed: the record names it even if copying fails (the
    // directory then has no inventory, and a later run does not take it for a parent).
    track::write_record(dir, &trackers).map_err(|e| e.at("writing the images"))?;
    let copy = |plans: &[(i32, criu_images::Pagemap, Vec<pages_file::Segment>)]| {
        if let Some((a, port)) = &opts.page_server {
            let mut ps = crate::pageserver::PageClient::open(
                a,
                *port,
                opts.page_server_fd,
                &opts.page_server_tls,
            )?;
            for (p, pm, _) in plans {
                ps.send_pagemap(*p, pm)?;
            }
            ps.close()?;
            return Ok(());
        }
        for (p, pm, segs) in plans {
            pages_file::write_one(*p, segs, dir, pm.pages_id)?;
            pm.write(dir.join(names::pagemap(*p as u32)))?;
        }
        Ok::<(), DumpError>(())
    };
    let frozen_us;
    match opts.pre_dump_mode {
        PreDumpMode::Splice => {
            copy(&plans).map_err(|e| e.at("writing the pages"))?;
            frozen_us = t0.elapsed().as_micros() as u64;
            drop(tasks);
        }
        PreDumpMode::Read => {
            frozen_us = t0.elapsed().as_micros() as u64;
            drop(tasks);
            copy(&plans).map_err(|e| e.at("reading the pages of the running tree"))?;
        }
    }
    write_stats(dir, &stats, frozen_us).map_err(|e| e.at("writing the images"))?;
    let inv = InventoryEntry {
        img_version: magic::IMAGES_V1_1,
        fdinfo_per_id: Some(true),
        root_ids: None,
        ns_per_id: Some(true),
        root_cg_set: None,
        lsmtype: Some(Lsmtype::NoLsm as i32),
        dump_uptime: None,
        pre_dump_mode: Some(opts.pre_dump_mode.number()),
        tcp_close: None,
        network_lock_method: None,
        plugins_entry: None,
        dump_criu_run_id: None,
        allow_uprobes: None,
    };
    ImageDir::new(dir)
        .write_inventory(&inv)
        .map_err(|e| DumpError::from(e).at("writing the images"))?;
    if opts.auto_dedup {
        super::dedup::after_dump(dir);
    }
    Ok(DumpSummary {
        pid,
        pages_scanned: stats.scanned,
        pages_written: stats.written,
        frozen_us,
    })
}

fn write_stats(dir: &Path, s: &PageStats, frozen_us: u64) -> Result<(), DumpError> {
    let e = StatsEntry {
        dump: Some(DumpStatsEntry {
            frozen_time: frozen_us as u32,
            pages_scanned: s.scanned,
            pages_skipped_parent: s.parent,
            pages_written: s.written,
            ..DumpStatsEntry::default()
        }),
        restore: None,
    };
    criu_images::write_all(dir.join(names::STATS_DUMP), magic::STATS, [&e])?;
    Ok(())
}
