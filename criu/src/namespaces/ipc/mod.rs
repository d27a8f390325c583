//! IPC namespaces: the SysV objects and the namespace's limits, in CRIU's images.
//!
//! | image | content |
//! |---|---|
//! | `ipcns-var-ID.img` | one `ipc_var_entry`: the `kernel/{sem,msg*,shm*}` and `fs/mqueue/*` sysctls, the `*_next_id` ones |
//! | `ipcns-shm-ID.img` | per segment an `ipc_shm_entry` (`in_pagemaps`); the content in `pagemap-shmem-SHMID.img` + `pages-N.img` |
//! | `ipcns-msg-ID.img` | per queue an `ipc_msg_entry`, then per message an `ipc_msg` and its text padded to 8 bytes |
//! | `ipcns-sem-ID.img` | per set an `ipc_sem_entry`, then its values (`u16`) padded to 8 bytes |
//!
//! Dump: a thread enters the root's namespace and reads every object (`*_STAT` over the index
//! range, messages copied with `MSG_COPY`, segments attached read-only). Restore: a thread makes a
//! new namespace and creates each object with its old id (`kernel/*_next_id`), key, mode and
//! owner, then its content; the engine enters the namespace around the clone of the root.
//!
//! Not handled, refused by name: POSIX message queues (`mq_open`; the dump checks the
//! namespace's mqueue filesystem through its own mount of it in a helper process), segments
//! on huge pages, segments a task has attached (the mapping, `VMA_AREA_SYSVIPC`, is refused by
//! the memory dump). Semaphore undo lists are not saved (CRIU saves none either).
// Unsafe code: the SysV IPC system calls, on buffers we own.
#![allow(unsafe_code)]

mod make;
mod read;

use std::io::Read;

use criu_images::magic;
use criu_images::names;
use criu_images::pb::{IpcDescEntry, IpcMsg, IpcMsgEntry, IpcSemEntry, IpcShmEntry, IpcVarEntry};
use criu_images::{ImageReader, ImageWriter};
use nix::errno::Errno;

use super::{DumpCtx, Kind, NsError, NsOps, Rebuilt, RestoreCtx};
use make::{make_objects, read_images};
use read::{posix_queues, read_msg, read_sem, read_shm, read_var};

/// The IPC kind's operations.
pub(crate) static OPS: NsOps = NsOps {
    kind: Kind::Ipc,
    nested: false,
    dump,
    restore,
};

const K: Kind = Kind::Ipc;
const PAGE: u64 = 4096;
/// `shmctl` commands (`<linux/shm.h>`).
const SHM_STAT: libc::c_int = 13;
const SHM_INFO: libc::c_int = 14;
/// The `PE_PRESENT` pagemap flag.
const PE_PRESENT: u32 = 4;

fn shm_name(id: u32) -> String {
    format!("ipcns-shm-{id}.img")
}
fn msg_name(id: u32) -> String {
    format!("ipcns-msg-{id}.img")
}
fn sem_name(id: u32) -> String {
    format!("ipcns-sem-{id}.img")
}

/// A message queue with its messages (each with its text).
type Queue = (IpcMsgEntry, Vec<(IpcMsg, Vec<u8>)>);

/// Everything of one namespace.
#[derive(Default)]
struct Objects {
    var: IpcVarEntry,
    shm: Vec<(IpcShmEntry, Vec<u8>)>,
    msg: Vec<Queue>,
    sem: Vec<(IpcSemEntry, Vec<u16>)>,
}

fn desc(id: i32, p: &libc::ipc_perm) -> IpcDescEntry {
    IpcDescEntry {
        key: p.__key as u32,
        uid: p.uid,
        gid: p.gid,
        cuid: p.cuid,
        cgid: p.cgid,
        mode: p.mode as u32 & 0o777,
        id: id as u32,
    }
}

/// A sysctl of the calling thread's namespaces (`/proc/sys/PATH`), as numbers.
fn sysctl_read(path: &str) -> Result<Vec<u64>, NsError> {
    let full = format!("/proc/sys/{path}");
    let text =
        std::fs::read_to_string(&full).map_err(|e| NsError::io(K, format!("reading {full}"), e))?;
    text.split_whitespace()
        .map(|w| {
            w.parse::<u64>()
                .or_else(|_| w.parse::<i64>().map(|v| v as u64))
                .map_err(|_| NsError::sys(K, format!("{full}: not a number: {w:?}"), Errno::EINVAL))
        })
        .collect()
}

fn sysctl_one(path: &str) -> Result<u64, NsError> {
    sysctl_read(path)?
        .first()
        .copied()
        .ok_or_else(|| NsError::sys(K, format!("/proc/sys/{path} is empty"), Errno::EINVAL))
}

fn sysctl_write(path: &str, value: &str) -> Result<(), NsError> {
    let full = format!("/proc/sys/{path}");
    std::fs::write(&full, value)
        .map_err(|e| NsError::io(K, format!("writing {value:?} into {full}"), e))
}

fn dump(ctx: &DumpCtx<'_>) -> Result<(), NsError> {
    let queues = posix_queues(ctx.pid)?;
    if let Some(q) = queues.first() {
        return Err(NsError::unsupported(
            K,
            format!(
                "POSIX message queue /{q} in the ipc namespace of {} (POSIX queues are not \
                 dumped)",
                ctx.pid
            ),
        ));
    }
    let objs = super::in_ns_of(ctx.pid, &[K], || {
        Ok(Objects {
            var: read_var()?,
            shm: read_shm()?,
            msg: read_msg()?,
            sem: read_sem()?,
        })
    })?;
    tracing::info!(
        id = ctx.id,
        shm = objs.shm.len(),
        msg = objs.msg.len(),
        sem = objs.sem.len(),
        "ipc namespace"
    );
    let img = img_err;
    let var = names::ipcns_var(ctx.id);
    criu_images::write_all(ctx.dir.join(&var), magic::IPC_VAR, [&objs.var]).map_err(img(&var))?;
    // Segments: entries, and each content as a shmem pagemap with its own pages file.
    let shm = shm_name(ctx.id);
    let mut w = ImageWriter::create(ctx.dir.join(&shm), magic::IPCNS_SHM).map_err(img(&shm))?;
    let mut pages_id = free_pages_id(ctx.dir);
    for (e, data) in &objs.shm {
        w.write_entry(e).map_err(img(&shm))?;
        let pm_name = names::pagemap_shmem(e.desc.id as u64);
        let mut pm = criu_images::Pagemap {
            pages_id,
            entries: Vec::new(),
        };
        let mut pages = Vec::new();
        for (k, chunk) in data.chunks(PAGE as usize).enumerate() {
            if chunk.iter().all(|&b| b == 0) {
                continue;
            }
            pm.push(k as u64 * PAGE, 1, PE_PRESENT);
            pages.extend_from_slice(chunk);
            pages.resize(pages.len().next_multiple_of(PAGE as usize), 0);
        }
        pm.write(ctx.dir.join(&pm_name)).map_err(img(&pm_name))?;
        let pf = names::pages(pages_id);
        std::fs::write(ctx.dir.join(&pf), &pages)
            .map_err(|e| NsError::io(K, format!("writing {pf}"), e))?;
        pages_id += 1;
    }
    w.finish().map_err(img(&shm))?;
    let msg = msg_name(ctx.id);
    let mut w = ImageWriter::create(ctx.dir.join(&msg), magic::IPCNS_MSG).map_err(img(&msg))?;
    for (e, msgs) in &objs.msg {
        w.write_entry(e).map_err(img(&msg))?;
        for (m, text) in msgs {
            w.write_entry(m).map_err(img(&msg))?;
            let mut padded = text.clone();
            padded.resize(text.len().next_multiple_of(8), 0);
            w.write_extra(&padded).map_err(img(&msg))?;
        }
    }
    w.finish().map_err(img(&msg))?;
    let sem = sem_name(ctx.id);
    let mut w = ImageWriter::create(ctx.dir.join(&sem), magic::IPCNS_SEM).map_err(img(&sem))?;
    for (e, values) in &objs.sem {
        w.write_entry(e).map_err(img(&sem))?;
        let mut raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        raw.resize(raw.len().next_multiple_of(8), 0);
        w.write_extra(&raw).map_err(img(&sem))?;
    }
    w.finish().map_err(img(&sem))?;
    Ok(())
}

/// Maps an image error on `file`.
fn img_err(file: &str) -> impl Fn(criu_images::ImageError) -> NsError + '_ {
    move |e| NsError::image(K, file, e)
}

/// A pages file id no image of `dir` uses yet.
fn free_pages_id(dir: &std::path::Path) -> u32 {
    let mut max = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = name
                .strip_prefix("pages-")
                .and_then(|r| r.strip_suffix(".img"))
                .and_then(|n| n.parse::<u32>().ok())
            {
                max = max.max(n);
            }
        }
    }
    max + 1
}

fn restore(ctx: &RestoreCtx<'_>) -> Result<Rebuilt, NsError> {
    let objs = read_images(ctx.dir, ctx.id)?;
    let (_, mut fds) = super::in_fresh_ns(&[K], move || make_objects(&objs))?;
    Ok(Rebuilt {
        join: fds.pop(),
        ..Rebuilt::default()
    })
}
