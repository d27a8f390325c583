//! Raw Linux system calls over `compel_arch::syscallN`, with the kernel structures they take.

use compel_arch::{nr, syscall1, syscall2, syscall3, syscall4, syscall6};

/// An error number from the kernel (positive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    /// Bad file descriptor.
    pub const EBADF: Errno = Errno(9);
    /// Out of memory.
    pub const ENOMEM: Errno = Errno(12);
    /// Bad address.
    pub const EFAULT: Errno = Errno(14);
    /// Invalid argument.
    pub const EINVAL: Errno = Errno(22);
    /// Result out of range (a buffer too small).
    pub const ERANGE: Errno = Errno(34);
    /// Function not implemented (an unknown command).
    pub const ENOSYS: Errno = Errno(38);
    /// Protocol error (an unexpected message).
    pub const EPROTO: Errno = Errno(71);
    /// Bad message.
    pub const EBADMSG: Errno = Errno(74);
    /// Message too long.
    pub const EMSGSIZE: Errno = Errno(90);
    /// Transport endpoint is not connected.
    pub const ENOTCONN: Errno = Errno(107);
    /// Interrupted system call.
    pub const EINTR: Errno = Errno(4);
}

/// Turns a raw syscall return into a result.
pub fn result(ret: isize) -> Result<usize, Errno> {
    if (-4095..0).contains(&ret) {
        Err(Errno(-ret as i32))
    } else {
        Ok(ret as usize)
    }
}

/// `AF_UNIX`.
pub const AF_UNIX: i32 = 1;
/// `SOCK_SEQPACKET`.
pub const SOCK_SEQPACKET: i32 = 5;
/// `SOCK_CLOEXEC`.
pub const SOCK_CLOEXEC: i32 = 0o2_000_000;
/// `SOL_SOCKET`.
pub const SOL_SOCKET: i32 = 1;
/// `SCM_RIGHTS`.
pub const SCM_RIGHTS: i32 = 1;
/// `MSG_NOSIGNAL`: no `SIGPIPE` if the host is gone.
pub const MSG_NOSIGNAL: i32 = 0x4000;
/// `MSG_CTRUNC` (in `msg_flags`): control data was cut.
pub const MSG_CTRUNC: i32 = 0x8;
/// `MSG_TRUNC` (in `msg_flags`): data was cut.
pub const MSG_TRUNC: i32 = 0x20;
/// `PROT_READ`.
pub const PROT_READ: usize = 1;
/// `PROT_WRITE`.
pub const PROT_WRITE: usize = 2;
/// `MAP_SHARED`.
pub const MAP_SHARED: usize = 1;
/// `MFD_CLOEXEC`.
pub const MFD_CLOEXEC: usize = 1;

/// `struct iovec`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct IoVec {
    /// Start.
    pub base: *mut u8,
    /// Length.
    pub len: usize,
}

/// `struct msghdr`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MsgHdr {
    /// Address (unused on a connected socket).
    pub name: *mut u8,
    /// Its length.
    pub namelen: u32,
    /// The data buffers.
    pub iov: *mut IoVec,
    /// How many.
    pub iovlen: usize,
    /// Ancillary data.
    pub control: *mut u8,
    /// Its length.
    pub controllen: usize,
    /// Flags set by `recvmsg`.
    pub flags: i32,
}
const _: () = assert!(core::mem::size_of::<MsgHdr>() == 56);

/// `struct cmsghdr`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CmsgHdr {
    /// Length including this header.
    pub len: usize,
    /// Protocol level.
    pub level: i32,
    /// Type.
    pub ty: i32,
}
const _: () = assert!(core::mem::size_of::<CmsgHdr>() == 16);

/// `getpid()`.
pub fn getpid() -> i32 {
    // SAFETY: getpid takes no arguments and cannot fail.
    unsafe { compel_arch::syscall0(nr::GETPID) as i32 }
}

/// `gettid()`.
pub fn gettid() -> i32 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { compel_arch::syscall0(nr::GETTID) as i32 }
}

/// `write(fd, buf)`.
///
/// # Errors
/// The kernel's.
pub fn write(fd: i32, buf: &[u8]) -> Result<usize, Errno> {
    // SAFETY: the kernel reads at most buf.len() bytes from a live slice.
    result(unsafe { syscall3(nr::WRITE, fd as usize, buf.as_ptr() as usize, buf.len()) })
}

/// `read(fd, buf)`.
///
/// # Errors
/// The kernel's.
pub fn read(fd: i32, buf: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: the kernel writes at most buf.len() bytes into a live, exclusively borrowed slice.
    result(unsafe { syscall3(nr::READ, fd as usize, buf.as_mut_ptr() as usize, buf.len()) })
}

/// `close(fd)`.
///
/// # Errors
/// The kernel's.
pub fn close(fd: i32) -> Result<(), Errno> {
    // SAFETY: closing an fd touches no memory of ours.
    result(unsafe { syscall1(nr::CLOSE, fd as usize) }).map(drop)
}

/// `getcwd(buf)`: the length written, including the terminating NUL.
///
/// # Errors
/// The kernel's ([`Errno::ERANGE`] if `buf` is too small).
pub fn getcwd(buf: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: the kernel writes at most buf.len() bytes into a live, exclusively borrowed slice.
    result(unsafe { syscall2(nr::GETCWD, buf.as_mut_ptr() as usize, buf.len()) })
}

/// `socket(domain, ty, protocol)`.
///
/// # Errors
/// The kernel's.
pub fn socket(domain: i32, ty: i32, protocol: i32) -> Result<i32, Errno> {
    // SAFETY: no memory is passed.
    result(unsafe { syscall3(nr::SOCKET, domain as usize, ty as usize, protocol as usize) })
        .map(|fd| fd as i32)
}

/// `connect(fd, addr)`, `addr` a raw `struct sockaddr`.
///
/// # Errors
/// The kernel's.
pub fn connect(fd: i32, addr: &[u8]) -> Result<(), Errno> {
    // SAFETY: the kernel reads addr.len() bytes from a live slice.
    result(unsafe { syscall3(nr::CONNECT, fd as usize, addr.as_ptr() as usize, addr.len()) })
        .map(drop)
}

/// `sendmsg(fd, msg, flags)`.
///
/// # Safety
/// `msg` and every buffer it points to must be valid for the kernel to read.
///
/// # Errors
/// The kernel's.
pub unsafe fn sendmsg(fd: i32, msg: &MsgHdr, flags: i32) -> Result<usize, Errno> {
    // SAFETY: the caller guarantees the buffers msg points to are valid.
    result(unsafe {
        syscall3(
            nr::SENDMSG,
            fd as usize,
            msg as *const MsgHdr as usize,
            flags as usize,
        )
    })
}

/// `recvmsg(fd, msg, flags)`.
///
/// # Safety
/// `msg` and every buffer it points to must be valid for the kernel to write.
///
/// # Errors
/// The kernel's.
pub unsafe fn recvmsg(fd: i32, msg: &mut MsgHdr, flags: i32) -> Result<usize, Errno> {
    // SAFETY: the caller guarantees the buffers msg points to are valid and writable.
    result(unsafe {
        syscall3(
            nr::RECVMSG,
            fd as usize,
            msg as *mut MsgHdr as usize,
            flags as usize,
        )
    })
}

/// `mmap(addr, len, prot, flags, fd, off)`.
///
/// # Safety
/// A fixed mapping may replace memory in use; the caller decides what may be replaced.
///
/// # Errors
/// The kernel's.
pub unsafe fn mmap(
    addr: usize,
    len: usize,
    prot: usize,
    flags: usize,
    fd: i32,
    off: usize,
) -> Result<usize, Errno> {
    // SAFETY: the caller is responsible for what the mapping replaces.
    result(unsafe { syscall6(nr::MMAP, addr, len, prot, flags, fd as usize, off) })
}

/// `munmap(addr, len)`.
///
/// # Safety
/// Nothing may use the range afterwards.
///
/// # Errors
/// The kernel's.
pub unsafe fn munmap(addr: usize, len: usize) -> Result<(), Errno> {
    // SAFETY: the caller guarantees the range is no longer used.
    result(unsafe { syscall2(nr::MUNMAP, addr, len) }).map(drop)
}

/// `mprotect(addr, len, prot)`.
///
/// # Safety
/// Taking access away from memory in use faults its users; the caller decides what may lose it.
///
/// # Errors
/// The kernel's.
pub unsafe fn mprotect(addr: usize, len: usize, prot: usize) -> Result<(), Errno> {
    // SAFETY: the caller guarantees nothing needs the access taken away.
    result(unsafe { syscall3(nr::MPROTECT, addr, len, prot) }).map(drop)
}

/// `socketpair(domain, ty, protocol)`: the two connected fds.
///
/// # Errors
/// The kernel's.
pub fn socketpair(domain: i32, ty: i32, protocol: i32) -> Result<[i32; 2], Errno> {
    let mut sv = [-1i32; 2];
    // SAFETY: the kernel writes two ints into sv, a live local array of two ints.
    result(unsafe {
        syscall4(
            nr::SOCKETPAIR,
            domain as usize,
            ty as usize,
            protocol as usize,
            sv.as_mut_ptr() as usize,
        )
    })?;
    Ok(sv)
}

/// Unblocks signal `sig` in the calling thread (`rt_sigprocmask(SIG_UNBLOCK)`).
///
/// # Errors
/// The kernel's.
pub fn unblock_signal(sig: i32) -> Result<(), Errno> {
    const SIG_UNBLOCK: usize = 1;
    let set: u64 = 1 << (sig - 1);
    // SAFETY: the kernel reads one 8-byte mask from a live local; no old mask is written.
    result(unsafe {
        syscall4(
            nr::RT_SIGPROCMASK,
            SIG_UNBLOCK,
            &raw const set as usize,
            0,
            8,
        )
    })
    .map(drop)
}

/// Sends signal `sig` to the calling thread (`tgkill(getpid(), gettid(), sig)`).
///
/// # Errors
/// The kernel's.
pub fn raise(sig: i32) -> Result<(), Errno> {
    // SAFETY: no memory is passed.
    result(unsafe {
        syscall3(
            nr::TGKILL,
            getpid() as usize,
            gettid() as usize,
            sig as usize,
        )
    })
    .map(drop)
}

/// `memfd_create(name, flags)`; `name` must end with a NUL byte.
///
/// # Errors
/// The kernel's, or [`Errno::EINVAL`] if `name` has no terminator.
pub fn memfd_create(name: &[u8], flags: usize) -> Result<i32, Errno> {
    if name.last() != Some(&0) {
        return Err(Errno::EINVAL);
    }
    // SAFETY: name is a live NUL-terminated string the kernel only reads.
    result(unsafe { syscall2(nr::MEMFD_CREATE, name.as_ptr() as usize, flags) }).map(|fd| fd as i32)
}

/// `ftruncate(fd, len)`.
///
/// # Errors
/// The kernel's.
pub fn ftruncate(fd: i32, len: usize) -> Result<(), Errno> {
    // SAFETY: no memory is passed.
    result(unsafe { syscall2(nr::FTRUNCATE, fd as usize, len) }).map(drop)
}

/// `prctl(option, arg2, arg3, arg4)` (e.g. `PR_GET_NAME`), raw.
///
/// # Safety
/// The pointers some options take must be valid.
///
/// # Errors
/// The kernel's.
pub unsafe fn prctl(option: usize, a2: usize, a3: usize, a4: usize) -> Result<usize, Errno> {
    // SAFETY: the caller guarantees the option's pointers are valid.
    result(unsafe { syscall4(nr::PRCTL, option, a2, a3, a4) })
}

/// Sends `data` with `fds` attached as `SCM_RIGHTS` (at most [`compel_proto::rpc::FDS_PER_MSG`]).
///
/// # Errors
/// The kernel's; [`Errno::EINVAL`] for too many fds.
pub fn send_with_fds(sock: i32, data: &[u8], fds: &[i32]) -> Result<usize, Errno> {
    const MAX: usize = compel_proto::rpc::FDS_PER_MSG;
    if fds.len() > MAX {
        return Err(Errno::EINVAL);
    }
    let mut control = [0u64; (16 + 4 * MAX) / 8];
    let mut iov = IoVec {
        base: data.as_ptr().cast_mut(),
        len: data.len(),
    };
    let mut msg = MsgHdr {
        name: core::ptr::null_mut(),
        namelen: 0,
        iov: &mut iov,
        iovlen: 1,
        control: core::ptr::null_mut(),
        controllen: 0,
        flags: 0,
    };
    if !fds.is_empty() {
        let cmsg = CmsgHdr {
            len: 16 + 4 * fds.len(),
            level: SOL_SOCKET,
            ty: SCM_RIGHTS,
        };
        let bytes = as_bytes_mut(&mut control);
        bytes[..8].copy_from_slice(&cmsg.len.to_ne_bytes());
        bytes[8..12].copy_from_slice(&cmsg.level.to_ne_bytes());
        bytes[12..16].copy_from_slice(&cmsg.ty.to_ne_bytes());
        for (i, fd) in fds.iter().enumerate() {
            bytes[16 + 4 * i..20 + 4 * i].copy_from_slice(&fd.to_ne_bytes());
        }
        msg.control = bytes.as_mut_ptr();
        msg.controllen = (cmsg.len + 7) & !7;
    }
    // SAFETY: msg points at iov (over `data`, only read) and `control`, all alive for the call.
    unsafe { sendmsg(sock, &msg, MSG_NOSIGNAL) }
}

/// Receives one message into `data`, and the fds attached to it into `fds`. Returns the data
/// length and the number of fds. A message with more fds than `fds` holds, or data cut short,
/// is an error (the fds that came are closed).
///
/// # Errors
/// The kernel's; [`Errno::EMSGSIZE`] for a cut message; `Ok((0, 0))` is end of file.
pub fn recv_with_fds(sock: i32, data: &mut [u8], fds: &mut [i32]) -> Result<(usize, usize), Errno> {
    const MAX: usize = compel_proto::rpc::FDS_PER_MSG;
    let mut control = [0u64; (16 + 4 * MAX) / 8];
    let mut iov = IoVec {
        base: data.as_mut_ptr(),
        len: data.len(),
    };
    let bytes = as_bytes_mut(&mut control);
    let mut msg = MsgHdr {
        name: core::ptr::null_mut(),
        namelen: 0,
        iov: &mut iov,
        iovlen: 1,
        control: bytes.as_mut_ptr(),
        controllen: bytes.len(),
        flags: 0,
    };
    let n = loop {
        // SAFETY: msg points at iov (over `data`, exclusively borrowed) and `control`, both
        // alive and writable for the call.
        match unsafe { recvmsg(sock, &mut msg, 0) } {
            Err(Errno::EINTR) => continue,
            r => break r?,
        }
    };
    // Collect the fds first so that they are closed on every error below.
    let mut got = [0i32; MAX];
    let mut count = 0;
    let control_len = msg.controllen.min(bytes.len());
    let mut off = 0;
    while off + 16 <= control_len {
        let len = usize::from_ne_bytes(bytes[off..off + 8].try_into().unwrap_or([0; 8]));
        let level = i32::from_ne_bytes(bytes[off + 8..off + 12].try_into().unwrap_or([0; 4]));
        let ty = i32::from_ne_bytes(bytes[off + 12..off + 16].try_into().unwrap_or([0; 4]));
        if len < 16 || off + len > control_len {
            break;
        }
        if level == SOL_SOCKET && ty == SCM_RIGHTS {
            for chunk in bytes[off + 16..off + len].chunks_exact(4) {
                if count < MAX {
                    got[count] = i32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                    count += 1;
                }
            }
        }
        off += (len + 7) & !7;
    }
    let close_all = |got: &[i32]| {
        for &fd in got {
            let _ = close(fd);
        }
    };
    if msg.flags & (MSG_CTRUNC | MSG_TRUNC) != 0 || count > fds.len() {
        close_all(&got[..count]);
        return Err(Errno::EMSGSIZE);
    }
    fds[..count].copy_from_slice(&got[..count]);
    Ok((n, count))
}

fn as_bytes_mut(words: &mut [u64]) -> &mut [u8] {
    // SAFETY: u64 has no invalid bit patterns or padding, u8 has alignment 1, and the byte
    // slice covers exactly the words' memory, borrowed exclusively.
    unsafe { core::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 8) }
}
