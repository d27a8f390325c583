//! Reading the live namespace (from a thread inside it): its sysctls, every SysV shared memory
//! segment with its content, message queue with its messages and semaphore set with its
//! values, and the names of its POSIX message queues.
// Unsafe code: the SysV IPC system calls and a helper process, on buffers we own.
#![allow(unsafe_code)]

use super::*;

pub(super) fn read_var() -> Result<IpcVarEntry, NsError> {
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
/// Every shared memory segment of the calling thread's namespace, with its content.
pub(super) fn read_shm() -> Result<Vec<(IpcShmEntry, Vec<u8>)>, NsError> {
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
pub(super) fn read_msg() -> Result<Vec<Queue>, NsError> {
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
pub(super) fn read_sem() -> Result<Vec<(IpcSemEntry, Vec<u16>)>, NsError> {
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
pub(super) fn posix_queues(pid: i32) -> Result<Vec<String>, NsError> {
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
        // SAFETY: in the forked child: raw system calls on buffers prepared before the fork,
        // then _exit.
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
