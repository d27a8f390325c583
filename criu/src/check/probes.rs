//! Kernel probes of `criu check` that need no network: system calls, /proc files, a mount
//! namespace of a throwaway thread.
// Unsafe code: probes kernel features with raw system calls (syscall, ioctl, timerfd, flock, mmap)
// and adopts the descriptors they return.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;

use super::Missing;

pub(super) fn sys(what: &'static str) -> impl FnOnce(Errno) -> Missing {
    move |errno| Missing::Sys { what, errno }
}

pub(super) fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> Missing {
    move |e| Missing::Sys {
        what,
        errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
    }
}

pub(super) fn kernel_at_least(major: u32, minor: u32) -> Result<(), Missing> {
    let uts = nix::sys::utsname::uname().map_err(sys("uname"))?;
    let rel = uts.release().to_string_lossy().into_owned();
    let mut it = rel.split(|c: char| !c.is_ascii_digit());
    let ma: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let mi: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    if (ma, mi) >= (major, minor) {
        Ok(())
    } else {
        Err(Missing::KernelTooOld {
            release: rel,
            major,
            minor,
        })
    }
}

pub(super) fn path_exists(path: &'static str) -> Result<(), Missing> {
    if Path::new(path).exists() {
        Ok(())
    } else {
        Err(Missing::NoPath { path })
    }
}

/// Runs a raw system call whose arguments touch no memory of ours; only `ENOSYS` counts as
/// missing. A descriptor it returns is closed.
pub(super) fn raw_syscall_works(
    nr: libc::c_long,
    args: [libc::c_long; 5],
    what: &'static str,
    returns_fd: bool,
) -> Result<(), Missing> {
    // SAFETY: callers pass probes whose arguments are null pointers, invalid descriptors or
    // plain integers, so the kernel either rejects them or acts on no memory of ours.
    let r = unsafe { libc::syscall(nr, args[0], args[1], args[2], args[3], args[4]) };
    if r < 0 && Errno::last() == Errno::ENOSYS {
        return Err(Missing::Sys {
            what,
            errno: Errno::ENOSYS,
        });
    }
    if r >= 0 && returns_fd {
        // SAFETY: r is a descriptor the probe just created and nothing else owns.
        drop(unsafe { OwnedFd::from_raw_fd(r as i32) });
    }
    Ok(())
}

pub(super) fn socket(
    family: i32,
    ty: i32,
    proto: i32,
    what: &'static str,
) -> Result<OwnedFd, Missing> {
    // SAFETY: socket takes no pointers.
    let fd = unsafe { libc::socket(family, ty | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return Err(Missing::Sys {
            what,
            errno: Errno::last(),
        });
    }
    // SAFETY: fd was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(super) fn setsockopt_int(fd: &OwnedFd, level: i32, opt: i32, val: i32) -> Result<(), Errno> {
    // SAFETY: the kernel reads size_of::<i32>() bytes from a live local.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&val as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r < 0 { Err(Errno::last()) } else { Ok(()) }
}

pub(super) fn has_checkpoint_cap() -> Result<(), Missing> {
    let eff = compel::proc::self_effective_caps().ok_or(Missing::Absent {
        what: "no CapEff in /proc/self/status",
    })?;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_SYS_PTRACE: u32 = 19;
    const CAP_CHECKPOINT_RESTORE: u32 = 40;
    let has = |c: u32| eff & (1u64 << c) != 0;
    if (has(CAP_CHECKPOINT_RESTORE) || has(CAP_SYS_ADMIN)) && has(CAP_SYS_PTRACE) {
        Ok(())
    } else {
        Err(Missing::Absent {
            what: "criu needs CAP_CHECKPOINT_RESTORE (or CAP_SYS_ADMIN) and CAP_SYS_PTRACE",
        })
    }
}

pub(super) fn map_files() -> Result<(), Missing> {
    let d = std::fs::read_dir("/proc/self/map_files").map_err(io("reading map_files"))?;
    if let Some(e) = d.flatten().next() {
        std::fs::read_link(e.path()).map_err(io("reading a map_files link"))?;
        return Ok(());
    }
    Err(Missing::Absent {
        what: "/proc/self/map_files is empty",
    })
}

pub(super) fn kcmp() -> Result<(), Missing> {
    let pid = std::process::id() as libc::c_long;
    // KCMP_FILE = 0 on fds 0 and 0.
    raw_syscall_works(libc::SYS_kcmp, [pid, pid, 0, 0, 0], "kcmp", false)
}

pub(super) fn process_vm_readv() -> Result<(), Missing> {
    let src = [0x5au8; 16];
    let mut dst = [0u8; 16];
    let local = [std::io::IoSliceMut::new(&mut dst)];
    let remote = [nix::sys::uio::RemoteIoVec {
        base: src.as_ptr() as usize,
        len: src.len(),
    }];
    nix::sys::uio::process_vm_readv(nix::unistd::Pid::this(), &mut { local }, &remote)
        .map_err(sys("process_vm_readv"))?;
    if dst == src {
        Ok(())
    } else {
        Err(Missing::Absent {
            what: "process_vm_readv read wrong bytes",
        })
    }
}

/// Memory-change tracking as pre-dump and `--track-mem` use it: asynchronous userfaultfd
/// write-protection read back with `PAGEMAP_SCAN` (soft-dirty bits are not used, so a kernel
/// with only those does not count).
pub(super) fn dirty_track() -> Result<(), Missing> {
    crate::dump::track::probe().map_err(|(what, e)| Missing::Sys {
        what,
        errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
    })
}

/// Lazy restore: a userfaultfd with the fork, remap, remove and unmap events.
pub(super) fn lazy_pages() -> Result<(), Missing> {
    match crate::lazy::uffd::open(crate::lazy::uffd::LAZY_FEATURES) {
        Ok((_, got))
            if got & crate::lazy::uffd::LAZY_FEATURES == crate::lazy::uffd::LAZY_FEATURES =>
        {
            Ok(())
        }
        Ok(_) => Err(Missing::Absent {
            what: "userfaultfd fork, remap, remove and unmap events",
        }),
        Err(e) => Err(Missing::Sys {
            what: "userfaultfd",
            errno: Errno::from_raw(e),
        }),
    }
}

pub(super) fn line_in(path: &'static str, prefix: &str, what: &'static str) -> Result<(), Missing> {
    let s = std::fs::read_to_string(path).map_err(io(path))?;
    if s.lines().any(|l| l.starts_with(prefix)) {
        Ok(())
    } else {
        Err(Missing::Absent { what })
    }
}

pub(super) fn mnt_id() -> Result<(), Missing> {
    let f = std::fs::File::open("/proc/self/status").map_err(io("/proc/self/status"))?;
    let path = format!("/proc/self/fdinfo/{}", f.as_raw_fd());
    let s = std::fs::read_to_string(&path).map_err(io("reading fdinfo"))?;
    if s.lines().any(|l| l.starts_with("mnt_id:")) {
        Ok(())
    } else {
        Err(Missing::Absent {
            what: "no mnt_id in fdinfo",
        })
    }
}

pub(super) fn timerfd() -> Result<(), Missing> {
    // SAFETY: timerfd_create takes no pointers.
    let fd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC) };
    if fd < 0 {
        return Err(Missing::Sys {
            what: "timerfd_create",
            errno: Errno::last(),
        });
    }
    // SAFETY: fd was just created and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let s = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))
        .map_err(io("reading timerfd fdinfo"))?;
    if s.lines().any(|l| l.starts_with("it_value:")) {
        Ok(())
    } else {
        Err(Missing::Absent {
            what: "timerfd fdinfo does not show the timer",
        })
    }
}

/// `kcmp(KCMP_EPOLL_TFD)` finds the file an epoll instance watches (the dump finds epoll
/// targets by their file with it).
pub(super) fn kcmp_epoll() -> Result<(), Missing> {
    /// `struct kcmp_epoll_slot`.
    #[repr(C)]
    struct Slot {
        efd: u32,
        tfd: u32,
        toff: u32,
    }
    const KCMP_EPOLL_TFD: libc::c_long = 7;
    // SAFETY: epoll_create1/eventfd take no pointers; the descriptors are owned right away.
    let (ep, ev) = unsafe {
        (
            libc::epoll_create1(libc::EPOLL_CLOEXEC),
            libc::eventfd(0, libc::EFD_CLOEXEC),
        )
    };
    if ep < 0 || ev < 0 {
        return Err(Missing::Sys {
            what: "epoll_create1/eventfd",
            errno: Errno::last(),
        });
    }
    // SAFETY: both were just created and are owned by nobody else.
    let (ep, ev) = unsafe { (OwnedFd::from_raw_fd(ep), OwnedFd::from_raw_fd(ev)) };
    let mut e = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: 0,
    };
    // SAFETY: epoll_ctl on our own descriptors with a live event.
    if unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, ev.as_raw_fd(), &mut e) } != 0
    {
        return Err(Missing::Sys {
            what: "epoll_ctl",
            errno: Errno::last(),
        });
    }
    let slot = Slot {
        efd: ep.as_raw_fd() as u32,
        tfd: ev.as_raw_fd() as u32,
        toff: 0,
    };
    let pid = std::process::id() as libc::c_long;
    // SAFETY: kcmp reads a live kcmp_epoll_slot and touches no other memory of ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid,
            pid,
            KCMP_EPOLL_TFD,
            ev.as_raw_fd() as libc::c_long,
            &slot as *const Slot,
        )
    };
    match r {
        0 => Ok(()),
        r if r < 0 => Err(Missing::Sys {
            what: "kcmp(KCMP_EPOLL_TFD)",
            errno: Errno::last(),
        }),
        _ => Err(Missing::Absent {
            what: "kcmp(KCMP_EPOLL_TFD) does not find the target",
        }),
    }
}

/// A lock shows in the holder's fdinfo.
pub(super) fn fdinfo_lock() -> Result<(), Missing> {
    let fd = nix::sys::memfd::memfd_create(c"criu-check", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .map_err(sys("memfd_create"))?;
    // SAFETY: flock on a descriptor this probe owns; no memory involved.
    if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_SH) } < 0 {
        return Err(Missing::Sys {
            what: "flock",
            errno: Errno::last(),
        });
    }
    let s = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))
        .map_err(io("reading fdinfo"))?;
    if s.lines().any(|l| l.starts_with("lock:")) {
        Ok(())
    } else {
        Err(Missing::Absent {
            what: "fdinfo does not show file locks",
        })
    }
}

/// An AIO ring can be moved with `mremap` and still works there.
pub(super) fn aio_remap() -> Result<(), Missing> {
    let mut ctx: libc::c_ulong = 0;
    // SAFETY: io_setup writes one aio_context_t into a live local.
    if unsafe { libc::syscall(libc::SYS_io_setup, 16, &mut ctx as *mut libc::c_ulong) } < 0 {
        return Err(Missing::Sys {
            what: "io_setup",
            errno: Errno::last(),
        });
    }
    let destroy = |c: libc::c_ulong| {
        // SAFETY: c is the context of the ring this probe set up; nothing else uses it.
        unsafe { libc::syscall(libc::SYS_io_destroy, c) };
    };
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let len = compel::proc::parse_maps(&maps)
        .into_iter()
        .find(|m| m.start.get() == ctx as u64)
        .map(|m| m.end.get().saturating_sub(m.start.get()) as usize);
    let Some(len) = len else {
        destroy(ctx);
        return Err(Missing::Absent {
            what: "the AIO ring is not in /proc/self/maps",
        });
    };
    // SAFETY: a fresh anonymous mapping at an address the kernel picks.
    let target = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_ANONYMOUS | libc::MAP_PRIVATE,
            -1,
            0,
        )
    };
    if target == libc::MAP_FAILED {
        destroy(ctx);
        return Err(Missing::Sys {
            what: "mmap",
            errno: Errno::last(),
        });
    }
    // SAFETY: moves the ring this probe owns onto the mapping it just made for it; no Rust
    // object lives in either range.
    let moved = unsafe {
        libc::mremap(
            ctx as *mut libc::c_void,
            len,
            len,
            libc::MREMAP_FIXED | libc::MREMAP_MAYMOVE,
            target,
        )
    };
    if moved == libc::MAP_FAILED {
        let errno = Errno::last();
        // SAFETY: unmaps the placeholder this probe made.
        unsafe { libc::munmap(target, len) };
        destroy(ctx);
        return Err(Missing::Sys {
            what: "mremap of the AIO ring",
            errno,
        });
    }
    let new_ctx = moved as libc::c_ulong;
    // SAFETY: io_getevents with min_nr 0, no event buffer and no timeout reads no memory of ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_io_getevents,
            new_ctx,
            0,
            1,
            std::ptr::null_mut::<u8>(),
            std::ptr::null_mut::<u8>(),
        )
    };
    let errno = Errno::last();
    destroy(new_ctx);
    if r < 0 {
        return Err(Missing::Sys {
            what: "io_getevents on the moved ring",
            errno,
        });
    }
    Ok(())
}

/// `MOVE_MOUNT_SET_GROUP`, tried in a mount namespace of a throwaway thread so nothing is
/// left mounted.
pub(super) fn move_mount_set_group() -> Result<(), Missing> {
    std::thread::spawn(|| -> Result<(), Missing> {
        const MOVE_MOUNT_SET_GROUP: libc::c_long = 0x100;
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).map_err(sys("unshare"))?;
        use nix::mount::{MsFlags, mount};
        let none: Option<&str> = None;
        mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
            .map_err(sys("making / private"))?;
        mount(Some("criu"), "/tmp", Some("tmpfs"), MsFlags::empty(), none)
            .map_err(sys("mounting a tmpfs"))?;
        mount(none, "/tmp", none, MsFlags::MS_PRIVATE, none).map_err(sys("MS_PRIVATE"))?;
        std::fs::create_dir("/tmp/sub").map_err(io("mkdir"))?;
        mount(Some("/tmp/sub"), "/tmp/sub", none, MsFlags::MS_BIND, none)
            .map_err(sys("bind mount"))?;
        mount(none, "/tmp", none, MsFlags::MS_SHARED, none).map_err(sys("MS_SHARED"))?;
        let from = c"/tmp";
        let to = c"/tmp/sub";
        // SAFETY: two NUL-terminated paths that live across the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                libc::AT_FDCWD,
                from.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                MOVE_MOUNT_SET_GROUP,
            )
        };
        if r < 0 {
            return Err(Missing::Sys {
                what: "move_mount(MOVE_MOUNT_SET_GROUP)",
                errno: Errno::last(),
            });
        }
        Ok(())
    })
    .join()
    .unwrap_or(Err(Missing::Absent {
        what: "the probe thread panicked",
    }))
}

pub(super) fn pidfd_open() -> Result<(), Missing> {
    raw_syscall_works(
        libc::SYS_pidfd_open,
        [std::process::id() as _, 0, 0, 0, 0],
        "pidfd_open",
        true,
    )
}

/// The `PAGEMAP_SCAN` ioctl on `/proc/self/pagemap` exists (an empty range is scanned; only
/// `ENOTTY` means the kernel lacks it).
pub(super) fn pagemap_scan() -> Result<(), Missing> {
    // struct pm_scan_arg: twelve u64s, the first its size.
    const PAGEMAP_SCAN: libc::c_ulong = 0xc060_6610;
    let f = std::fs::File::open("/proc/self/pagemap").map_err(io("opening pagemap"))?;
    let mut arg = [0u64; 12];
    arg[0] = std::mem::size_of_val(&arg) as u64;
    // SAFETY: the kernel reads and updates a live 96-byte pm_scan_arg; the range is empty and
    // no output vector is given, so nothing else is written.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), PAGEMAP_SCAN as _, arg.as_mut_ptr()) };
    if r < 0 && Errno::last() == Errno::ENOTTY {
        return Err(Missing::Sys {
            what: "PAGEMAP_SCAN",
            errno: Errno::ENOTTY,
        });
    }
    Ok(())
}
