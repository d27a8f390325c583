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
//! POSIX message queues, found through the namespace's mqueue filesystem (mounted by a helper
//! process in a mount namespace of its own), are saved with their messages by [`super::mqueue`].
//!
//! Not handled, refused by name: segments on huge pages, segments a task has attached (the mapping, `VMA_AREA_SYSVIPC`, is refused by
//! the memory dump). Semaphore undo lists are not saved (CRIU saves none either).
// Unsafe code: the SysV IPC system calls, on buffers we own.
#![allow(unsafe_code)]

use std::io::Read;

use criu_images::magic;
use criu_images::names;
use criu_images::pb::{IpcDescEntry, IpcMsg, IpcMsgEntry, IpcSemEntry, IpcShmEntry, IpcVarEntry};
use criu_images::{ImageReader, ImageWriter};
use nix::errno::Errno;

use super::{DumpCtx, Kind, NsError, NsOps, Rebuilt, RestoreCtx};

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
    /// POSIX message queues ([`super::mqueue`]).
    posix: Vec<super::mqueue::PosixQueue>,
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

fn read_var() -> Result<IpcVarEntry, NsError> {
    let opt = |p: &str| sysctl_one(p).ok().map(|v| v as u32);
    // -1 (never set) cannot be written back: left out, as CRIU does.
    let next = |p: &str| opt(p).filter(|&v| v != u32::MAX);
    Ok(IpcVarEntry {
        sem_ctls: sysctl_read("kernel/sem")?
            .into_iter()
            .map(|v| v as u32)
            .collect(),
        msg_ctlmax: sysctl_one("kernel/msgmax")? as u32,
        msg_ctlmnb: sysctl_one("kernel/msgmnb")? as u32,
        msg_ctlmni: sysctl_one("kernel/msgmni")? as u32,
        auto_msgmni: opt("kernel/auto_msgmni").unwrap_or(0),
        shm_ctlmax: sysctl_one("kernel/shmmax")?,
        shm_ctlall: sysctl_one("kernel/shmall")?,
        shm_ctlmni: sysctl_one("kernel/shmmni")? as u32,
        shm_rmid_forced: sysctl_one("kernel/shm_rmid_forced")? as u32,
        mq_queues_max: opt("fs/mqueue/queues_max").unwrap_or(0),
        mq_msg_max: opt("fs/mqueue/msg_max").unwrap_or(0),
        mq_msgsize_max: opt("fs/mqueue/msgsize_max").unwrap_or(0),
        mq_msg_default: opt("fs/mqueue/msg_default"),
        mq_msgsize_default: opt("fs/mqueue/msgsize_default"),
        msg_next_id: next("kernel/msg_next_id"),
        sem_next_id: next("kernel/sem_next_id"),
        shm_next_id: next("kernel/shm_next_id"),
    })
}

fn write_var(v: &IpcVarEntry) -> Result<(), NsError> {
    if !v.sem_ctls.is_empty() {
        let s: Vec<String> = v.sem_ctls.iter().map(u32::to_string).collect();
        sysctl_write("kernel/sem", &s.join(" "))?;
    }
    sysctl_write("kernel/msgmax", &v.msg_ctlmax.to_string())?;
    sysctl_write("kernel/msgmnb", &v.msg_ctlmnb.to_string())?;
    sysctl_write("kernel/msgmni", &v.msg_ctlmni.to_string())?;
    sysctl_write("kernel/shmmax", &v.shm_ctlmax.to_string())?;
    sysctl_write("kernel/shmall", &v.shm_ctlall.to_string())?;
    sysctl_write("kernel/shmmni", &v.shm_ctlmni.to_string())?;
    sysctl_write("kernel/shm_rmid_forced", &v.shm_rmid_forced.to_string())?;
    if std::path::Path::new("/proc/sys/fs/mqueue").exists() {
        // msg_max before the defaults it bounds.
        for (p, val) in [
            ("fs/mqueue/queues_max", Some(v.mq_queues_max)),
            ("fs/mqueue/msg_max", Some(v.mq_msg_max)),
            ("fs/mqueue/msgsize_max", Some(v.mq_msgsize_max)),
            ("fs/mqueue/msg_default", v.mq_msg_default),
            ("fs/mqueue/msgsize_default", v.mq_msgsize_default),
        ] {
            if let Some(val) = val {
                sysctl_write(p, &val.to_string())?;
            }
        }
    }
    for (p, val) in [
        ("kernel/msg_next_id", v.msg_next_id),
        ("kernel/sem_next_id", v.sem_next_id),
        ("kernel/shm_next_id", v.shm_next_id),
    ] {
        if let Some(val) = val {
            sysctl_write(p, &val.to_string())?;
        }
    }
    Ok(())
}

/// Every shared memory segment of the calling thread's namespace, with its content.
fn read_shm() -> Result<Vec<(IpcShmEntry, Vec<u8>)>, NsError> {
    let mut info = [0u64; 16];
    // SAFETY: SHM_INFO fills a `struct shm_info` (smaller than the buffer) and returns the
    // highest index in use.
    let max = unsafe { libc::shmctl(0, SHM_INFO, info.as_mut_ptr().cast()) };
    if max < 0 {
        return Err(NsError::sys(K, "shmctl(SHM_INFO)", Errno::last()));
    }
    let mut out = Vec::new();
    for i in 0..=max {
        // SAFETY: plain data, filled by SHM_STAT.
        let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: SHM_STAT fills the live local.
        let id = unsafe { libc::shmctl(i, SHM_STAT, &mut ds) };
        if id < 0 {
            match Errno::last() {
                Errno::EINVAL | Errno::EIDRM => continue,
                e => return Err(NsError::sys(K, format!("shmctl(SHM_STAT) of index {i}"), e)),
            }
        }
        if ds.shm_perm.mode as u32 & libc::SHM_HUGETLB as u32 != 0 {
            return Err(NsError::unsupported(
                K,
                format!("SysV shared memory segment {id} on huge pages"),
            ));
        }
        if ds.shm_nattch != 0 {
            tracing::debug!(id, attached = ds.shm_nattch, "segment attached by tasks");
        }
        let size = ds.shm_segsz as u64;
        // SAFETY: attaching read-only at an address the kernel picks; detached below.
        let addr = unsafe { libc::shmat(id, std::ptr::null(), libc::SHM_RDONLY) };
        if addr as isize == -1 {
            return Err(NsError::sys(
                K,
                format!("shmat of segment {id}"),
                Errno::last(),
            ));
        }
        // SAFETY: the segment is mapped at `addr` for `size` bytes until the shmdt below.
        let data = unsafe { std::slice::from_raw_parts(addr as *const u8, size as usize) }.to_vec();
        // SAFETY: detaches the mapping made above.
        unsafe { libc::shmdt(addr) };
        out.push((
            IpcShmEntry {
                desc: desc(id, &ds.shm_perm),
                size,
                in_pagemaps: Some(true),
                hugetlb_flag: None,
            },
            data,
        ));
    }
    Ok(out)
}

/// Every message queue of the calling thread's namespace, with its messages (copied in place
/// with `MSG_COPY`: the queue keeps them).
fn read_msg() -> Result<Vec<Queue>, NsError> {
    // SAFETY: plain data.
    let mut info: libc::msqid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: MSG_INFO fills a `struct msginfo`, smaller than `msqid_ds`.
    let max = unsafe { libc::msgctl(0, libc::MSG_INFO, &mut info) };
    if max < 0 {
        return Err(NsError::sys(K, "msgctl(MSG_INFO)", Errno::last()));
    }
    let msgmax = sysctl_one("kernel/msgmax")? as usize;
    let mut buf = vec![0u8; 8 + msgmax];
    let mut out = Vec::new();
    for i in 0..=max {
        // SAFETY: plain data.
        let mut ds: libc::msqid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: MSG_STAT fills the live local.
        let id = unsafe { libc::msgctl(i, libc::MSG_STAT, &mut ds) };
        if id < 0 {
            match Errno::last() {
                Errno::EINVAL | Errno::EIDRM => continue,
                e => return Err(NsError::sys(K, format!("msgctl(MSG_STAT) of index {i}"), e)),
            }
        }
        let mut msgs = Vec::new();
        for n in 0..ds.msg_qnum as libc::c_long {
            // SAFETY: msgrcv writes at most `msgmax` bytes of text after the 8-byte type into
            // the live buffer of 8 + msgmax bytes.
            let got = unsafe {
                libc::msgrcv(
                    id,
                    buf.as_mut_ptr().cast(),
                    msgmax,
                    n,
                    libc::IPC_NOWAIT | libc::MSG_COPY,
                )
            };
            if got < 0 {
                return Err(NsError::sys(
                    K,
                    format!("copying message {n} of queue {id} (MSG_COPY)"),
                    Errno::last(),
                ));
            }
            let mut ty = [0u8; 8];
            ty.copy_from_slice(&buf[..8]);
            let len = got as usize;
            msgs.push((
                IpcMsg {
                    mtype: u64::from_ne_bytes(ty),
                    msize: len as u32,
                },
                buf[8..8 + len].to_vec(),
            ));
        }
        out.push((
            IpcMsgEntry {
                desc: desc(id, &ds.msg_perm),
                qbytes: ds.msg_qbytes as u32,
                qnum: msgs.len() as u32,
            },
            msgs,
        ));
    }
    Ok(out)
}

/// Every semaphore set of the calling thread's namespace, with its values.
fn read_sem() -> Result<Vec<(IpcSemEntry, Vec<u16>)>, NsError> {
    let mut info = [0i32; 16];
    // SAFETY: SEM_INFO fills a `struct seminfo` (ten ints) through the union argument.
    let max = unsafe { libc::semctl(0, 0, libc::SEM_INFO, info.as_mut_ptr()) };
    if max < 0 {
        return Err(NsError::sys(K, "semctl(SEM_INFO)", Errno::last()));
    }
    let mut out = Vec::new();
    for i in 0..=max {
        // SAFETY: plain data.
        let mut ds: libc::semid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: SEM_STAT fills the live local through the union argument.
        let id = unsafe { libc::semctl(i, 0, libc::SEM_STAT, &mut ds as *mut libc::semid_ds) };
        if id < 0 {
            match Errno::last() {
                Errno::EINVAL | Errno::EIDRM => continue,
                e => return Err(NsError::sys(K, format!("semctl(SEM_STAT) of index {i}"), e)),
            }
        }
        let n = ds.sem_nsems as usize;
        let mut values = vec![0u16; n.max(1)];
        // SAFETY: GETALL writes `nsems` values into the live array of at least that many.
        if unsafe { libc::semctl(id, 0, libc::GETALL, values.as_mut_ptr()) } < 0 {
            return Err(NsError::sys(
                K,
                format!("semctl(GETALL) of set {id}"),
                Errno::last(),
            ));
        }
        values.truncate(n);
        out.push((
            IpcSemEntry {
                desc: desc(id, &ds.sem_perm),
                nsems: n as u32,
            },
            values,
        ));
    }
    Ok(out)
}

/// The POSIX message queues of task `pid`'s IPC namespace: a helper process joins it, makes a
/// mount namespace of its own, mounts the namespace's mqueue filesystem there and lists it.
fn posix_queues(pid: i32) -> Result<Vec<String>, NsError> {
    // The names come back through a pipe; the mount is on /tmp inside the helper's own
    // (private) mount namespace, seen by no one else.
    let (r, w) = nix::unistd::pipe().map_err(|e| NsError::sys(K, "pipe", e))?;
    // The helper: a forked copy of us, so that setns(mnt) is allowed (single-threaded, and
    // CLONE_NEWNS needs an fs not shared with other threads).
    let ipc_path = format!("/proc/{pid}/ns/ipc");
    let ipc = std::fs::File::open(&ipc_path)
        .map_err(|e| NsError::io(K, format!("opening {ipc_path}"), e))?;
    let c_mnt = c"/tmp";
    // SAFETY: the child only makes raw system calls on data prepared before the fork, then
    // _exits; it never returns into our code.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(NsError::sys(K, "forking the mqueue helper", Errno::last()));
    }
    if child == 0 {
        // SAFETY: as above: raw calls on prepared buffers, then _exit.
        unsafe {
            use std::os::fd::AsRawFd;
            let ok = libc::setns(ipc.as_raw_fd(), libc::CLONE_NEWIPC) == 0
                && libc::unshare(libc::CLONE_NEWNS) == 0
                && libc::mount(
                    c"none".as_ptr(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) == 0
                && libc::mount(
                    c"mqueue".as_ptr(),
                    c_mnt.as_ptr(),
                    c"mqueue".as_ptr(),
                    0,
                    std::ptr::null(),
                ) == 0;
            if !ok {
                libc::_exit(1);
            }
            let dirp = libc::opendir(c_mnt.as_ptr());
            if dirp.is_null() {
                libc::_exit(2);
            }
            let fd = w.as_raw_fd();
            loop {
                let ent = libc::readdir(dirp);
                if ent.is_null() {
                    break;
                }
                let name = std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()).to_bytes();
                if name == b"." || name == b".." {
                    continue;
                }
                libc::write(fd, name.as_ptr().cast(), name.len());
                libc::write(fd, c"\n".as_ptr().cast(), 1);
            }
            libc::_exit(0);
        }
    }
    drop(w);
    let mut text = String::new();
    let read = std::fs::File::from(r).read_to_string(&mut text);
    let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(child), None)
        .map_err(|e| NsError::sys(K, "waiting for the mqueue helper", e))?;
    if !matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0)) {
        return Err(NsError::sys(
            K,
            format!("listing the POSIX message queues: helper {status:?}"),
            Errno::EIO,
        ));
    }
    read.map_err(|e| NsError::io(K, "reading the mqueue helper's list", e))?;
    Ok(text.lines().map(str::to_string).collect())
}

fn dump(ctx: &DumpCtx<'_>) -> Result<(), NsError> {
    let queues = posix_queues(ctx.pid)?;
    let objs = super::in_ns_of(ctx.pid, &[K], move || {
        Ok(Objects {
            var: read_var()?,
            shm: read_shm()?,
            msg: read_msg()?,
            sem: read_sem()?,
            posix: super::mqueue::read_queues(&queues)?,
        })
    })?;
    tracing::info!(
        id = ctx.id,
        shm = objs.shm.len(),
        msg = objs.msg.len(),
        sem = objs.sem.len(),
        posix_mq = objs.posix.len(),
        "ipc namespace"
    );
    super::mqueue::write(ctx.dir, ctx.id, &objs.posix)?;
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

/// Reads the images of namespace `id` of `dir`.
fn read_images(dir: &std::path::Path, id: u32) -> Result<Objects, NsError> {
    let img = img_err;
    let var = names::ipcns_var(id);
    let var_entry = criu_images::read_single(dir.join(&var), magic::IPC_VAR).map_err(img(&var))?;
    let mut objs = Objects {
        var: var_entry,
        ..Objects::default()
    };
    let shm = shm_name(id);
    let mut r = ImageReader::open_expect(dir.join(&shm), magic::IPCNS_SHM).map_err(img(&shm))?;
    while let Some(e) = r.read_entry::<IpcShmEntry>().map_err(img(&shm))? {
        if e.size > 1 << 40 {
            return Err(NsError::bad(
                K,
                shm,
                format!("segment {} of {} bytes", e.desc.id, e.size),
            ));
        }
        let data = if e.in_pagemaps == Some(true) {
            shm_from_pagemap(dir, &e)?
        } else {
            let mut d = r
                .read_extra(e.size.next_multiple_of(4))
                .map_err(img(&shm))?;
            d.truncate(e.size as usize);
            d
        };
        objs.shm.push((e, data));
    }
    let msg = msg_name(id);
    let mut r = ImageReader::open_expect(dir.join(&msg), magic::IPCNS_MSG).map_err(img(&msg))?;
    while let Some(e) = r.read_entry::<IpcMsgEntry>().map_err(img(&msg))? {
        let mut msgs = Vec::new();
        for _ in 0..e.qnum {
            let m: IpcMsg = r.read_entry().map_err(img(&msg))?.ok_or_else(|| {
                NsError::bad(K, msg.clone(), format!("queue {} ends early", e.desc.id))
            })?;
            let mut text = r
                .read_extra((m.msize as u64).next_multiple_of(8))
                .map_err(img(&msg))?;
            text.truncate(m.msize as usize);
            msgs.push((m, text));
        }
        objs.msg.push((e, msgs));
    }
    let sem = sem_name(id);
    let mut r = ImageReader::open_expect(dir.join(&sem), magic::IPCNS_SEM).map_err(img(&sem))?;
    while let Some(e) = r.read_entry::<IpcSemEntry>().map_err(img(&sem))? {
        if e.nsems > 65536 {
            return Err(NsError::bad(
                K,
                sem,
                format!("set {} of {} semaphores", e.desc.id, e.nsems),
            ));
        }
        let raw = r
            .read_extra((e.nsems as u64 * 2).next_multiple_of(8))
            .map_err(img(&sem))?;
        let values = raw
            .chunks_exact(2)
            .take(e.nsems as usize)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        objs.sem.push((e, values));
    }
    objs.posix = super::mqueue::read(dir, id)?;
    Ok(objs)
}

/// The content of a segment saved as a shmem pagemap (pages not listed are zero).
fn shm_from_pagemap(dir: &std::path::Path, e: &IpcShmEntry) -> Result<Vec<u8>, NsError> {
    let name = names::pagemap_shmem(e.desc.id as u64);
    let pm = criu_images::Pagemap::read(dir.join(&name))
        .map_err(|er| NsError::image(K, name.clone(), er))?;
    let pf = names::pages(pm.pages_id);
    let pages =
        std::fs::read(dir.join(&pf)).map_err(|er| NsError::io(K, format!("reading {pf}"), er))?;
    let mut data = vec![0u8; e.size as usize];
    let mut off = 0usize;
    for ent in &pm.entries {
        let len = (ent.pages() * PAGE) as usize;
        if ent.effective_flags() & PE_PRESENT == 0 {
            continue;
        }
        let src = pages
            .get(off..off + len)
            .ok_or_else(|| NsError::bad(K, pf.clone(), "shorter than its pagemap says"))?;
        let at = ent.vaddr as usize;
        if at >= data.len() {
            return Err(NsError::bad(
                K,
                name,
                format!("page at {at:#x} past the segment"),
            ));
        }
        let n = len.min(data.len() - at);
        data[at..at + n].copy_from_slice(&src[..n]);
        off += len;
    }
    Ok(data)
}

/// Sets `kernel/KIND_next_id` so that the next object made gets `id`.
fn next_id(kind: &str, id: u32) -> Result<(), NsError> {
    sysctl_write(&format!("kernel/{kind}_next_id"), &id.to_string())
}

/// The new id differs from the saved one.
fn id_mismatch(what: &str, got: i32, want: u32) -> NsError {
    NsError::sys(
        K,
        format!("{what} came back as id {got}, not {want}"),
        Errno::EEXIST,
    )
}

/// Makes every object of `objs` in the calling thread's (new) namespace.
fn make_objects(objs: &Objects) -> Result<(), NsError> {
    for (e, data) in &objs.shm {
        let d = &e.desc;
        next_id("shm", d.id)?;
        let flags = d.mode as i32 & 0o777 | libc::IPC_CREAT | libc::IPC_EXCL;
        // SAFETY: shmget with plain arguments.
        let id = unsafe { libc::shmget(d.key as libc::key_t, e.size as usize, flags) };
        if id < 0 {
            return Err(NsError::sys(
                K,
                format!("shmget of segment {}", d.id),
                Errno::last(),
            ));
        }
        if id as u32 != d.id {
            return Err(id_mismatch("shared memory segment", id, d.id));
        }
        // SAFETY: plain data, filled by IPC_STAT.
        let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: IPC_STAT fills and IPC_SET reads the live local.
        let ok = unsafe {
            libc::shmctl(id, libc::IPC_STAT, &mut ds) == 0 && {
                ds.shm_perm.uid = d.uid;
                ds.shm_perm.gid = d.gid;
                libc::shmctl(id, libc::IPC_SET, &mut ds) == 0
            }
        };
        if !ok {
            return Err(NsError::sys(
                K,
                format!("owner of segment {id}"),
                Errno::last(),
            ));
        }
        if !data.is_empty() {
            // SAFETY: attaching read-write where the kernel picks; detached below.
            let addr = unsafe { libc::shmat(id, std::ptr::null(), 0) };
            if addr as isize == -1 {
                return Err(NsError::sys(
                    K,
                    format!("shmat of segment {id}"),
                    Errno::last(),
                ));
            }
            let n = data.len().min(e.size as usize);
            // SAFETY: the segment is `size` bytes mapped at `addr` until the shmdt below.
            unsafe {
                std::ptr::copy_nonoverlapping(data.as_ptr(), addr.cast::<u8>(), n);
                libc::shmdt(addr);
            }
        }
    }
    for (e, msgs) in &objs.msg {
        let d = &e.desc;
        next_id("msg", d.id)?;
        let flags = d.mode as i32 & 0o777 | libc::IPC_CREAT | libc::IPC_EXCL;
        // SAFETY: msgget with plain arguments.
        let id = unsafe { libc::msgget(d.key as libc::key_t, flags) };
        if id < 0 {
            return Err(NsError::sys(
                K,
                format!("msgget of queue {}", d.id),
                Errno::last(),
            ));
        }
        if id as u32 != d.id {
            return Err(id_mismatch("message queue", id, d.id));
        }
        // SAFETY: plain data, filled by IPC_STAT.
        let mut ds: libc::msqid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: IPC_STAT fills and IPC_SET reads the live local.
        let ok = unsafe {
            libc::msgctl(id, libc::IPC_STAT, &mut ds) == 0 && {
                ds.msg_perm.uid = d.uid;
                ds.msg_perm.gid = d.gid;
                ds.msg_qbytes = e.qbytes as _;
                libc::msgctl(id, libc::IPC_SET, &mut ds) == 0
            }
        };
        if !ok {
            return Err(NsError::sys(
                K,
                format!("owner and size of queue {id}"),
                Errno::last(),
            ));
        }
        for (m, text) in msgs {
            let mut buf = Vec::with_capacity(8 + text.len());
            buf.extend_from_slice(&m.mtype.to_ne_bytes());
            buf.extend_from_slice(text);
            // SAFETY: msgsnd reads the 8-byte type and `len` bytes of text from the buffer.
            if unsafe { libc::msgsnd(id, buf.as_ptr().cast(), text.len(), libc::IPC_NOWAIT) } != 0 {
                return Err(NsError::sys(
                    K,
                    format!("msgsnd into queue {id}"),
                    Errno::last(),
                ));
            }
        }
    }
    for (e, values) in &objs.sem {
        let d = &e.desc;
        next_id("sem", d.id)?;
        let flags = d.mode as i32 & 0o777 | libc::IPC_CREAT | libc::IPC_EXCL;
        // SAFETY: semget with plain arguments.
        let id = unsafe { libc::semget(d.key as libc::key_t, e.nsems as i32, flags) };
        if id < 0 {
            return Err(NsError::sys(
                K,
                format!("semget of set {}", d.id),
                Errno::last(),
            ));
        }
        if id as u32 != d.id {
            return Err(id_mismatch("semaphore set", id, d.id));
        }
        // SAFETY: plain data, filled by IPC_STAT.
        let mut ds: libc::semid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: IPC_STAT fills and IPC_SET reads the live local through the union argument.
        let ok = unsafe {
            libc::semctl(id, 0, libc::IPC_STAT, &mut ds as *mut libc::semid_ds) == 0 && {
                ds.sem_perm.uid = d.uid;
                ds.sem_perm.gid = d.gid;
                libc::semctl(id, 0, libc::IPC_SET, &mut ds as *mut libc::semid_ds) == 0
            }
        };
        if !ok {
            return Err(NsError::sys(K, format!("owner of set {id}"), Errno::last()));
        }
        let mut v = values.clone();
        v.resize(e.nsems as usize, 0);
        // SAFETY: SETALL reads `nsems` values from the live array.
        if !v.is_empty() && unsafe { libc::semctl(id, 0, libc::SETALL, v.as_mut_ptr()) } != 0 {
            return Err(NsError::sys(
                K,
                format!("values of set {id}"),
                Errno::last(),
            ));
        }
    }
    write_var(&objs.var)
}

fn restore(ctx: &RestoreCtx<'_>) -> Result<Rebuilt, NsError> {
    let objs = read_images(ctx.dir, ctx.id)?;
    // The queues after the namespace's limits (make_objects sets them last).
    let (_, mut fds) = super::in_fresh_ns(&[K], move || {
        make_objects(&objs)?;
        super::mqueue::make(&objs.posix)
    })?;
    Ok(Rebuilt {
        join: fds.pop(),
        ..Rebuilt::default()
    })
}
