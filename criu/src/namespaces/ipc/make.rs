//! Rebuilding the namespace: its objects read back from the images, then made again with their
//! old ids in the new namespace, and its sysctls set.
// Unsafe code: the SysV IPC system calls, on buffers we own.
#![allow(unsafe_code)]

use super::*;

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
/// Reads the images of namespace `id` of `dir`.
pub(super) fn read_images(dir: &std::path::Path, id: u32) -> Result<Objects, NsError> {
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
pub(super) fn make_objects(objs: &Objects) -> Result<(), NsError> {
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
