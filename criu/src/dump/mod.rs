//! `criu dump`: checkpoint a live process tree (the process `-t PID`, its threads and its
//! descendants) into an images directory in CRIU's format.
//!
//! The flow, each step named in the error if it fails ([`DumpError`], in `error`; this module
//! keeps the flow; each job has a module of its own):
//!
//! 1. mark the images directory incomplete (an `inventory.img` left from an earlier dump is
//!    removed and a [`INCOMPLETE_MARKER`] file written; `inventory.img` is written last), run the
//!    `pre-dump` action scripts;
//! 2. seize the tree with compel (`seize`), breadth first (every thread of every process stopped
//!    under `PTRACE_SEIZE`, each process before its children are listed; children that exit
//!    while they are seized are kept as zombies, auto-reaped ones skipped), then re-list the
//!    frozen tree until a pass finds nothing new ([`DumpError::Unstable`] after a few passes);
//! 3. collect each process (`collect`): `/proc` ([`proc`]: stat, status, smaps, fds, cwd/root,
//!    auxv, timers); its namespaces against criu's and the root's (`ids` and
//!    [`crate::namespaces`]: what cannot be brought back is refused by name); its VMAs classified ([`vma`]) and its open
//!    files ([`files`]); what only the task can read about itself, through the dump parasite or
//!    remote syscalls ([`self_state`]); per thread (`thread`): registers with xsave and the
//!    blocked mask, rseq, the robust list, queued signals, the alternate signal stack, and the
//!    seccomp filters (`seccomp`);
//! 4. write the images (`write`): per process `core` ([`core`], one per thread), `mm`,
//!    `pagemap` + `pages` ([`pages`] picks the pages, `pages_file` copies them, read with
//!    `process_vm_readv`), `ids` (`ids`: mm, fd table, fs and signal handlers shared between
//!    processes found with kcmp), `fs`, `fdinfo`; for the tree `files` (one id per open file
//!    description, shared ones found with kcmp), ghost files, pipe data, shared anonymous
//!    memory once per object, `pstree`, `seccomp` (each filter once), `timens`, the root's own
//!    namespaces (one module per kind in [`crate::namespaces`]), `stats-dump`, and last
//!    `inventory`;
//! 5. run the `post-dump` scripts, then kill the tree (default), leave it running (`-R`) or
//!    stopped (`-s`), and detach.
//!
//! Whatever fails, every process is detached and runs on as it was (none is killed then), and
//! the images directory keeps no `inventory.img` and holds the marker with the error.
//!
//! ```no_run
//! let opts = criu::Options::parse(
//!     ["criu", "dump", "-t", "4242", "-D", "/tmp/img", "-R"].iter().map(|s| s.to_string()),
//! ).unwrap();
//! let dump_opts = criu::DumpOptions::from_options(&opts);
//! let summary = criu::dump(&dump_opts, None).unwrap();
//! println!("{} pages written", summary.pages_written);
//! ```

mod collect;
pub mod core;
pub mod dedup;
pub(crate) mod error;
pub mod files;
mod freeze;
mod ids;
mod pagemap_scan;
pub mod pages;
mod pages_file;
mod predump;
pub mod proc;
mod seccomp;
mod seize;
pub mod self_state;
mod summary;
mod thread;
pub(crate) mod track;
pub mod vma;
mod write;

pub use error::DumpError;
use error::file_err;

pub(crate) use ids::kcmp;
pub use predump::pre_dump;
pub use self_state::INSIDE_METHOD_ENV;
pub use summary::{DumpSummary, INCOMPLETE_MARKER};

use collect::collect_all;
use write::{write_images, write_inventory};

use std::path::Path;
use std::time::Instant;

use compel::TaskState;

use criu_images::names;

use crate::errno::chain;
use crate::options::{DumpOptions, FinalState};
use crate::scripts::{Notify, ScriptAction, ScriptError};

/// Dumps the process `opts.tree` into `opts.images_dir` (see the module docs for the steps).
///
/// # Errors
/// [`DumpError::Step`] naming the step that failed; the task then runs on.
pub fn dump(opts: &DumpOptions, notify: Option<&dyn Notify>) -> Result<DumpSummary, DumpError> {
    let pid = opts.tree.ok_or(DumpError::NoPid)?;
    let dir = opts.images_dir.clone();
    let marker = dir.join(INCOMPLETE_MARKER);
    let result = (|| {
        begin_images(&dir).map_err(|e| e.at("preparing the images directory"))?;
        let quiet = |_: ScriptAction, _: Option<i32>| -> Result<(), ScriptError> { Ok(()) };
        dump_inner(opts, pid, &dir, notify.unwrap_or(&quiet))
    })();
    match &result {
        Ok(s) => {
            let _ = std::fs::remove_file(&marker);
            tracing::info!(pid, pages = s.pages_written, "dump finished");
        }
        Err(e) => {
            let _ = std::fs::remove_file(dir.join(names::INVENTORY));
            let _ =
                criu_images::write_file(&marker, format!("dump of {pid} failed: {}\n", chain(e)));
            tracing::debug!("dump of {pid} failed: {}", chain(e));
        }
    }
    result
}

fn begin_images(dir: &Path) -> Result<(), DumpError> {
    let md =
        std::fs::metadata(dir).map_err(file_err(format!("images directory {}", dir.display())))?;
    if !md.is_dir() {
        return Err(DumpError::ImagesNotDir {
            dir: dir.to_path_buf(),
        });
    }
    criu_images::write_file(&dir.join(INCOMPLETE_MARKER), "dump in progress\n").map_err(
        file_err(format!("write {}", dir.join(INCOMPLETE_MARKER).display())),
    )?;
    match std::fs::remove_file(dir.join(names::INVENTORY)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(file_err(format!("remove old {}", names::INVENTORY))(e)),
    }
}

fn dump_inner(
    opts: &DumpOptions,
    pid: i32,
    dir: &Path,
    scripts: &dyn Notify,
) -> Result<DumpSummary, DumpError> {
    match compel::classify(pid) {
        Ok(TaskState::Dead) | Err(_) => {
            return Err(DumpError::NoProcess { pid }.at("checking the process"));
        }
        Ok(TaskState::Zombie) => return Err(DumpError::Zombie { pid }.at("checking the process")),
        Ok(_) => {}
    }
    scripts
        .notify(ScriptAction::PreDump, Some(pid))
        .map_err(|e| DumpError::from(e).at("pre-dump action script"))?;
    // Unlocked on every error return (dropped); kept when the tree dies.
    let net_lock = crate::namespaces::net::NetLock::take(pid, opts.network_lock, Some(scripts))
        .map_err(|e| DumpError::from(e).at("locking the network"))?;

    if let Some(prev) = &opts.prev_images_dir {
        track::link_parent(dir, prev).map_err(|e| e.at("linking the parent images"))?;
    }
    let prev = track::parent_record(dir, opts.prev_images_dir.as_deref());
    crate::stats::reset();
    let t0 = Instant::now();
    // Every process of the tree, the root first; each detaches on every return path (compel's
    // Task does on drop), so the tree runs on if anything fails.
    let (mut tasks, zombie_pids) =
        freeze::seize(pid, opts).map_err(|e| e.at("seizing the process tree"))?;
    let freezing = t0.elapsed();
    // `query-ext-files`: an RPC client may name more external resources now.
    let queried = scripts
        .query_external()
        .map_err(|e| DumpError::from(e).at("query-ext-files notification"))?;
    let external: Vec<crate::options::External> =
        opts.external.iter().cloned().chain(queried).collect();
    tracing::info!(
        pid,
        processes = tasks.len(),
        zombies = zombie_pids.len(),
        "seized"
    );
    let mut zombies = Vec::with_capacity(zombie_pids.len());
    for z in zombie_pids {
        zombies.push((
            z,
            proc::read_stat(z)
                .map_err(|e| DumpError::from(e).at("collecting the process state"))?,
        ));
    }
    let mut files = files::FileTable::new(opts.ghost_limit);
    files.tcp_established = opts.tcp_established;
    files.tcp_close = opts.tcp_close;
    files.skip_in_flight = opts.skip_in_flight;
    files.conn_lock = net_lock.as_ref().and_then(|l| l.conns());
    files.tree_dies = opts.final_state == FinalState::Dead;
    files.orphan_pts_master = opts.orphan_pts_master;
    // criu's own tracking descriptors (recorded ones; those an earlier run left are told
    // apart where a userfaultfd is met).
    files.skip_uffd = prev.values().map(|r| r.ino).collect();
    let mut procs = Vec::with_capacity(tasks.len());
    // criu's own namespaces, read once for the whole tree.
    let own_ns = ids::ns_inodes("self");
    let root_ns = ids::ns_inodes(&pid.to_string());
    collect_all(&mut tasks, &mut procs, opts, &mut files, &own_ns, &root_ns)
        .map_err(|e| e.at("collecting the process state"))?;
    files
        .finish_sockets(opts.ext_unix_sk.then_some(&[][..]))
        .map_err(|e| e.at("collecting the process state"))?;
    let collected = t0.elapsed();
    let mnt_ns_id = ids::task_ids(&procs[0].ns, &procs[0].own_ns, 0).mnt_ns_id;
    crate::namespaces::mnt::dump_for_tree(
        procs.iter().map(|p| (p.pid, &p.ns[..])),
        &own_ns,
        mnt_ns_id,
        dir,
        &external,
    )
    .map_err(|e| DumpError::from(e).at("dumping the mount namespace"))?;
    crate::namespaces::net::dump_for_tree(
        procs.iter().map(|p| (p.pid, &p.ns[..])),
        &own_ns,
        ids::task_ids(&procs[0].ns, &procs[0].own_ns, 0).net_ns_id,
        dir,
        &external,
    )
    .map_err(|e| DumpError::from(e).at("dumping the network namespace"))?;
    let trackers = if opts.track_mem {
        track::open_all(&mut tasks, &prev).map_err(|e| e.at("tracking memory changes"))?
    } else {
        track::Trackers::default()
    };
    let mut ps = match &opts.page_server {
        Some((a, p)) => Some(
            crate::pageserver::PageClient::open(a, *p, opts.page_server_fd, &opts.page_server_tls)
                .map_err(|e| DumpError::from(e).at("connecting to the page server"))?,
        ),
        None => None,
    };
    // Membership by the pids criu sees (a pid namespace's dump rewrites them later), so that
    // each core is written with its set.
    let mut cgroups = crate::namespaces::cgroup::collect(
        procs
            .iter()
            .map(|p| p.pid)
            .chain(zombies.iter().map(|z| z.0)),
    )
    .map_err(|e| DumpError::from(e).at("dumping the cgroups"))?;
    let root_set = cgroups.set_of(pid);
    crate::namespaces::cgroup_ns::add_prefixes(
        pid,
        &root_ns,
        &own_ns,
        &mut cgroups.entry,
        root_set,
    )
    .map_err(|e| DumpError::from(e).at("dumping the namespaces"))?;
    let before_write = t0.elapsed();
    let (stats, shared_stats) = write_images(
        dir,
        &procs,
        &zombies,
        &files,
        &trackers,
        &cgroups,
        ps.as_mut(),
    )
    .map_err(|e| e.at("writing the images"))?;
    if let Some(ps) = ps {
        ps.close()
            .map_err(|e| DumpError::from(e).at("closing the page server session"))?;
    }
    if opts.track_mem {
        track::write_record(dir, &trackers).map_err(|e| e.at("writing the images"))?;
    } else if opts.final_state != FinalState::Dead {
        track::close_recorded(&mut tasks, &prev);
    }
    let written = t0.elapsed();
    crate::namespaces::dump_all(pid, &root_ns, &own_ns, dir, &external)
        .map_err(|e| DumpError::from(e).at("dumping the namespaces"))?;
    crate::namespaces::cgroup_props::dump(dir, &opts.cgroup_dump_cfg(), cgroups.entry)
        .map_err(|e| DumpError::from(e).at("dumping the cgroups"))?;
    let frozen_us = t0.elapsed().as_micros() as u64;
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    tracing::debug!(
        seize_ms = ms(freezing),
        collect_ms = ms(collected - freezing),
        tree_ns_ms = ms(before_write - collected),
        write_ms = ms(written - before_write),
        ns_ms = ms(t0.elapsed() - written),
        "dump phases"
    );
    let counts = crate::stats::DumpCounts {
        freezing,
        frozen: t0.elapsed().saturating_sub(freezing),
        pages_scanned: stats.scanned.saturating_sub(shared_stats.scanned),
        pages_skipped_parent: stats.parent,
        pages_written: stats.written.saturating_sub(shared_stats.written),
        shpages: {
            let (scanned, written) = crate::stats::shpages();
            (
                shared_stats.scanned + scanned,
                shared_stats.written + written,
            )
        },
    };
    crate::stats::write_dump(dir, &counts)
        .map_err(|e| DumpError::from(e).at("writing the images"))?;
    write_inventory(dir, &procs[0], opts.tcp_close).map_err(|e| e.at("writing the images"))?;
    if opts.auto_dedup {
        dedup::after_dump(dir);
    }

    if let Err(e) = scripts.notify(ScriptAction::PostDump, Some(pid)) {
        // The tree resumes (dropping the tasks detaches them) and the dump fails.
        drop(tasks);
        return Err(DumpError::from(e).at("post-dump action script"));
    }
    // `--lazy-pages`: the tree stays frozen while its pages are served; if that fails it
    // resumes (dropping the tasks detaches them) and the dump fails.
    if let Some((a, p)) = &opts.lazy_pages {
        crate::pageserver::lazy::serve_dump(dir, a, *p, &opts.page_server_tls, || {
            // Listening: `status-ready` (scripts, the RPC client), then `--status-fd`.
            scripts.notify(ScriptAction::StatusReady, Some(pid))?;
            crate::pageserver::server::tell_status(opts.status_fd);
            Ok::<_, DumpError>(())
        })
        .map_err(|e| e.at("serving lazy pages"))?;
    }
    // Saved TCP connections stay in repair mode when the tree dies (closing sends nothing).
    files.dump_done(opts.final_state == FinalState::Dead);
    match net_lock {
        Some(l) if opts.final_state == FinalState::Dead => l.keep(),
        Some(l) => l
            .release(Some(scripts))
            .map_err(|e| DumpError::from(e).at("unlocking the network"))?,
        None => {}
    }
    let mut killed = Vec::new();
    let mut tracees = Vec::new();
    for (p, task) in tasks {
        match opts.final_state {
            FinalState::Dead => {
                tracing::info!(pid = p, "killing the dumped process");
                // Threads first: a leader's exit is reported after its threads'.
                tracees.extend(task.threads().into_iter().filter(|&t| t != p));
                tracees.push(p);
                if let Ok(fd) = crate::pidfd::open(p) {
                    killed.push((p, fd));
                }
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            FinalState::Stopped => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGSTOP,
                );
            }
            FinalState::Alive => {}
        }
        if let Err(e) = task.detach()
            && opts.final_state != FinalState::Dead
        {
            tracing::warn!(pid = p, "detaching after the dump: {e}");
        }
    }
    // SIGKILL is delivered asynchronously: the dump is over only once the tree has ended, so
    // that whoever asked (runc looks at the container's init next) never sees it running.
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    crate::pidfd::collect_killed_tracees(&tracees, deadline);
    for (p, fd) in &killed {
        if !crate::pidfd::wait_exit(fd, deadline) {
            tracing::warn!(
                pid = p,
                "the dumped process has not ended 5 s after SIGKILL"
            );
        }
    }
    Ok(DumpSummary {
        pid,
        pages_scanned: stats.scanned,
        pages_written: stats.written,
        frozen_us,
    })
}
