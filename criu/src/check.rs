//! `criu check`: does this kernel (and this criu's privileges) have what dump and restore need.
//!
//! [`check_all`] runs the required checks and stops at the first that fails, as CRIU does;
//! [`check_feature`] answers `criu check --feature NAME` for every feature name CRIU knows: a
//! feature is supported when the kernel has it (probed here, not guessed from the version where
//! a probe is possible) *and* this criu handles what it gates. A tool that asks about `timens`
//! wants to know whether a task in a time namespace can be dumped and restored, not only whether
//! the kernel has time namespaces.
//!
//! ```no_run
//! match criu::check::check_feature("clone3_set_tid") {
//!     Ok(()) => println!("clone3_set_tid is supported"),
//!     Err(e) => eprintln!("{e}"),
//! }
//! ```

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;

/// Why the kernel (or this process's privileges) lacks something.
#[derive(Debug, thiserror::Error)]
pub enum Missing {
    /// The kernel is older than the release that brought the feature.
    #[error("kernel {release} is older than {major}.{minor}")]
    KernelTooOld {
        /// `uname -r`.
        release: String,
        /// The first release with the feature.
        major: u32,
        /// Its minor number.
        minor: u32,
    },
    /// A file the feature shows up as is not there.
    #[error("{path} does not exist")]
    NoPath {
        /// The file.
        path: &'static str,
    },
    /// A probing system call failed.
    #[error("{what}: {errno}")]
    Sys {
        /// The call.
        what: &'static str,
        /// How.
        errno: Errno,
    },
    /// The kernel answered, and the answer is no.
    #[error("{what}")]
    Absent {
        /// What is missing.
        what: &'static str,
    },
}

/// Errors from `criu check`. [`CheckError::errno`] is what an RPC reply carries.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// A feature name CRIU does not know.
    #[error("unknown feature {name}")]
    UnknownFeature {
        /// The name given.
        name: String,
    },
    /// A feature (or required check) the kernel lacks.
    #[error("{name} is not supported: {missing}")]
    Kernel {
        /// The feature.
        name: &'static str,
        /// What the kernel lacks.
        missing: Missing,
    },
    /// A feature the kernel has, gating something this criu does not handle yet.
    #[error("{name} is not supported: the kernel has it, but this criu does not handle {gates}")]
    NotHandled {
        /// The feature.
        name: &'static str,
        /// What it gates that this criu lacks.
        gates: &'static str,
    },
}

impl CheckError {
    /// The errno of an RPC reply: `EINVAL` for an unknown name, `EOPNOTSUPP` otherwise.
    pub fn errno(&self) -> i32 {
        match self {
            CheckError::UnknownFeature { .. } => libc::EINVAL,
            CheckError::Kernel { .. } | CheckError::NotHandled { .. } => libc::EOPNOTSUPP,
        }
    }
}

type Probe = fn() -> Result<(), Missing>;

fn sys(what: &'static str) -> impl FnOnce(Errno) -> Missing {
    move |errno| Missing::Sys { what, errno }
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> Missing {
    move |e| Missing::Sys {
        what,
        errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
    }
}

fn kernel_at_least(major: u32, minor: u32) -> Result<(), Missing> {
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

fn path_exists(path: &'static str) -> Result<(), Missing> {
    if Path::new(path).exists() {
        Ok(())
    } else {
        Err(Missing::NoPath { path })
    }
}

/// Runs a raw system call whose arguments touch no memory of ours; only `ENOSYS` counts as
/// missing. A descriptor it returns is closed.
fn raw_syscall_works(
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

fn socket(family: i32, ty: i32, proto: i32, what: &'static str) -> Result<OwnedFd, Missing> {
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

fn setsockopt_int(fd: &OwnedFd, level: i32, opt: i32, val: i32) -> Result<(), Errno> {
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

fn has_checkpoint_cap() -> Result<(), Missing> {
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

fn map_files() -> Result<(), Missing> {
    let d = std::fs::read_dir("/proc/self/map_files").map_err(io("reading map_files"))?;
    if let Some(e) = d.flatten().next() {
        std::fs::read_link(e.path()).map_err(io("reading a map_files link"))?;
        return Ok(());
    }
    Err(Missing::Absent {
        what: "/proc/self/map_files is empty",
    })
}

fn kcmp() -> Result<(), Missing> {
    let pid = std::process::id() as libc::c_long;
    // KCMP_FILE = 0 on fds 0 and 0.
    raw_syscall_works(libc::SYS_kcmp, [pid, pid, 0, 0, 0], "kcmp", false)
}

fn process_vm_readv() -> Result<(), Missing> {
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

fn soft_dirty() -> Result<(), Missing> {
    use std::io::{Read, Seek, SeekFrom};
    // Clear the soft-dirty bits, dirty one page, and look for bit 55 in its pagemap entry:
    // kernels without CONFIG_MEM_SOFT_DIRTY accept the write but never set the bit.
    std::fs::write("/proc/self/clear_refs", "4").map_err(io("clear_refs 4"))?;
    let mut page = vec![0u8; 8192];
    let addr = page.as_mut_ptr() as usize;
    let aligned = (addr + 4095) & !4095;
    page[aligned - addr] = 1;
    std::hint::black_box(&page);
    let mut f = std::fs::File::open("/proc/self/pagemap").map_err(io("opening pagemap"))?;
    f.seek(SeekFrom::Start((aligned / 4096 * 8) as u64))
        .map_err(io("reading pagemap"))?;
    let mut b = [0u8; 8];
    f.read_exact(&mut b).map_err(io("reading pagemap"))?;
    if u64::from_le_bytes(b) & (1 << 55) != 0 {
        Ok(())
    } else {
        Err(Missing::Absent {
            what: "the kernel does not track soft-dirty pages",
        })
    }
}

fn line_in(path: &'static str, prefix: &str, what: &'static str) -> Result<(), Missing> {
    let s = std::fs::read_to_string(path).map_err(io(path))?;
    if s.lines().any(|l| l.starts_with(prefix)) {
        Ok(())
    } else {
        Err(Missing::Absent { what })
    }
}

fn mnt_id() -> Result<(), Missing> {
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

fn timerfd() -> Result<(), Missing> {
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

/// A lock shows in the holder's fdinfo.
fn fdinfo_lock() -> Result<(), Missing> {
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
fn aio_remap() -> Result<(), Missing> {
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
    let len = maps.lines().find_map(|l| {
        let (range, _) = l.split_once(' ')?;
        let (a, b) = range.split_once('-')?;
        let a = u64::from_str_radix(a, 16).ok()?;
        let b = u64::from_str_radix(b, 16).ok()?;
        (a == ctx as u64).then_some((b - a) as usize)
    });
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

fn tun() -> Result<(), Missing> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(io("opening /dev/net/tun"))?;
    let mut features: libc::c_uint = 0;
    // SAFETY: TUNGETFEATURES writes one unsigned int into a live local.
    if unsafe { libc::ioctl(f.as_raw_fd(), libc::TUNGETFEATURES, &mut features) } < 0 {
        return Err(Missing::Sys {
            what: "TUNGETFEATURES",
            errno: Errno::last(),
        });
    }
    Ok(())
}

/// TCP_REPAIR can be turned on for a socket whose write side is shut down.
fn tcp_half_closed() -> Result<(), Missing> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(io("binding a TCP listener"))?;
    let addr = l.local_addr().map_err(io("getsockname"))?;
    let c = std::net::TcpStream::connect(addr).map_err(io("connecting over loopback"))?;
    c.shutdown(std::net::Shutdown::Write)
        .map_err(io("shutting the write side"))?;
    let fd = OwnedFd::from(c);
    match setsockopt_int(&fd, libc::SOL_TCP, libc::TCP_REPAIR, 1) {
        Ok(()) => {
            let _ = setsockopt_int(&fd, libc::SOL_TCP, libc::TCP_REPAIR, 0);
            Ok(())
        }
        Err(Errno::EPERM) => Err(Missing::Absent {
            what: "TCP_REPAIR cannot be enabled on a half-closed socket",
        }),
        Err(errno) => Err(Missing::Sys {
            what: "TCP_REPAIR",
            errno,
        }),
    }
}

fn sockopt_buf_lock() -> Result<(), Missing> {
    const SO_BUF_LOCK: i32 = 72;
    let fd = socket(libc::AF_INET, libc::SOCK_STREAM, 0, "a TCP socket")?;
    let mut v: u32 = 0;
    let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
    // SAFETY: the kernel writes at most len bytes into a live local and updates len.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_BUF_LOCK,
            (&mut v as *mut u32).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(Missing::Sys {
            what: "SO_BUF_LOCK",
            errno: Errno::last(),
        });
    }
    Ok(())
}

fn ipv6_freebind() -> Result<(), Missing> {
    let fd = socket(libc::AF_INET6, libc::SOCK_DGRAM, 0, "an IPv6 socket")?;
    setsockopt_int(&fd, libc::SOL_IPV6, libc::IPV6_FREEBIND, 1).map_err(sys("IPV6_FREEBIND"))
}

/// `SIOCUNIXFILE` opens a unix socket's file (`ENOENT` for an unbound socket is a yes).
fn sk_unix_file() -> Result<(), Missing> {
    const SIOCUNIXFILE: libc::c_ulong = 0x89e0;
    let fd = socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0, "a unix socket")?;
    // SAFETY: SIOCUNIXFILE takes no argument and returns a descriptor or an error.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), SIOCUNIXFILE as _) };
    if r >= 0 {
        // SAFETY: r is a descriptor the ioctl just created.
        drop(unsafe { OwnedFd::from_raw_fd(r) });
        return Ok(());
    }
    match Errno::last() {
        Errno::ENOENT => Ok(()),
        errno => Err(Missing::Sys {
            what: "SIOCUNIXFILE",
            errno,
        }),
    }
}

/// Sends one netlink request and returns the error code of the first answer (0 for an ack or
/// for data, which means the request was understood).
fn netlink_ask(proto: i32, msg_type: u16, flags: u16, body: &[u8]) -> Result<i32, Missing> {
    let fd = socket(libc::AF_NETLINK, libc::SOCK_RAW, proto, "a netlink socket")?;
    let len = 16 + body.len();
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&msg_type.to_ne_bytes());
    msg.extend_from_slice(&(flags | libc::NLM_F_REQUEST as u16).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(body);
    // SAFETY: sends len bytes from a live buffer to the kernel (a null address is the kernel).
    if unsafe { libc::send(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) } < 0 {
        return Err(Missing::Sys {
            what: "netlink send",
            errno: Errno::last(),
        });
    }
    let mut buf = vec![0u8; 32768];
    // SAFETY: the kernel writes at most buf.len() bytes into a live buffer.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 16 {
        return Err(Missing::Sys {
            what: "netlink recv",
            errno: Errno::last(),
        });
    }
    let ty = u16::from_ne_bytes([buf[4], buf[5]]);
    if ty == libc::NLMSG_ERROR as u16 && n >= 20 {
        let err = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
        return Ok(-err);
    }
    Ok(0)
}

/// `IFLA_NEW_IFINDEX`: setting a negative new index on a link that does not exist answers
/// `ERANGE` from kernels that know the attribute, `ENODEV` from the others.
fn newifindex() -> Result<(), Missing> {
    const IFLA_NEW_IFINDEX: u16 = 49;
    let mut body = vec![0u8; 16]; // ifinfomsg, AF_UNSPEC, index 0.
    let attr = |body: &mut Vec<u8>, ty: u16, data: &[u8]| {
        body.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        body.extend_from_slice(&ty.to_ne_bytes());
        body.extend_from_slice(data);
        while !body.len().is_multiple_of(4) {
            body.push(0);
        }
    };
    attr(&mut body, IFLA_NEW_IFINDEX, &(-1i32).to_ne_bytes());
    attr(&mut body, libc::IFLA_IFNAME, b"criu-kdat");
    let flags = (libc::NLM_F_ACK | libc::NLM_F_CREATE) as u16;
    match netlink_ask(libc::NETLINK_ROUTE, libc::RTM_SETLINK, flags, &body)? {
        libc::ERANGE => Ok(()),
        libc::ENODEV => Err(Missing::Absent {
            what: "the kernel ignores IFLA_NEW_IFINDEX",
        }),
        e => Err(Missing::Sys {
            what: "RTM_SETLINK with IFLA_NEW_IFINDEX",
            errno: Errno::from_raw(e),
        }),
    }
}

/// Network namespace ids: `RTM_GETNSID` for our own namespace is understood.
fn netns_ids() -> Result<(), Missing> {
    const NETNSA_FD: u16 = 3;
    let ns = std::fs::File::open("/proc/self/ns/net").map_err(io("/proc/self/ns/net"))?;
    let mut body = vec![0u8; 4]; // rtgenmsg, padded.
    body.extend_from_slice(&8u16.to_ne_bytes());
    body.extend_from_slice(&NETNSA_FD.to_ne_bytes());
    body.extend_from_slice(&ns.as_raw_fd().to_ne_bytes());
    match netlink_ask(libc::NETLINK_ROUTE, libc::RTM_GETNSID, 0, &body)? {
        0 => Ok(()),
        e => Err(Missing::Sys {
            what: "RTM_GETNSID",
            errno: Errno::from_raw(e),
        }),
    }
}

/// sock_diag answers for raw sockets of both families.
fn net_diag_raw() -> Result<(), Missing> {
    const NETLINK_SOCK_DIAG: i32 = 4;
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    for family in [libc::AF_INET, libc::AF_INET6] {
        // inet_diag_req_v2: family, protocol, ext, pad, states, then a 48-byte socket id.
        let mut body = vec![family as u8, libc::IPPROTO_RAW as u8, 0, 0];
        body.extend_from_slice(&u32::MAX.to_ne_bytes());
        body.extend_from_slice(&[0u8; 48]);
        let flags = libc::NLM_F_DUMP as u16;
        match netlink_ask(NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY, flags, &body)? {
            0 => {}
            e => {
                return Err(Missing::Sys {
                    what: "sock_diag for raw sockets",
                    errno: Errno::from_raw(e),
                });
            }
        }
    }
    Ok(())
}

/// `MOVE_MOUNT_SET_GROUP`, tried in a mount namespace of a throwaway thread so nothing is
/// left mounted.
fn move_mount_set_group() -> Result<(), Missing> {
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

/// A legacy (not nf_tables) iptables for IPv4 and IPv6.
fn ipt_legacy() -> Result<(), Missing> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    let found = |name: &str| std::env::split_paths(&path).any(|d| d.join(name).is_file());
    if !found("iptables-legacy") {
        return Err(Missing::Absent {
            what: "no iptables-legacy in PATH",
        });
    }
    if Path::new("/proc/net/if_inet6").exists() && !found("ip6tables-legacy") {
        return Err(Missing::Absent {
            what: "no ip6tables-legacy in PATH",
        });
    }
    Ok(())
}

fn pidfd_open() -> Result<(), Missing> {
    raw_syscall_works(
        libc::SYS_pidfd_open,
        [std::process::id() as _, 0, 0, 0, 0],
        "pidfd_open",
        true,
    )
}

/// The required checks, in order.
static REQUIRED: &[(&str, Probe)] = &[
    ("capabilities", has_checkpoint_cap),
    ("map_files", map_files),
    ("ns_last_pid", || {
        path_exists("/proc/sys/kernel/ns_last_pid")
    }),
    ("kcmp", kcmp),
    ("process_vm_readv", process_vm_readv),
    ("clone3_set_tid", || kernel_at_least(5, 5)),
    ("rseq", || kernel_at_least(5, 13)),
];

/// One feature of `criu check --feature`: its CRIU name, the kernel probe, and `None` when
/// this criu handles what it gates, else what it does not handle yet.
struct Feature {
    name: &'static str,
    probe: Probe,
    gates: Option<&'static str>,
}

const fn handled(name: &'static str, probe: Probe) -> Feature {
    Feature {
        name,
        probe,
        gates: None,
    }
}

const fn not_yet(name: &'static str, probe: Probe, gates: &'static str) -> Feature {
    Feature {
        name,
        probe,
        gates: Some(gates),
    }
}

/// Every feature name CRIU 4.2 knows, in CRIU's order.
static FEATURES: &[Feature] = &[
    handled("mnt_id", mnt_id),
    not_yet("mem_dirty_track", soft_dirty, "pre-dump and --track-mem"),
    not_yet("aio_remap", aio_remap, "AIO rings"),
    handled("timerfd", timerfd),
    not_yet("tun", tun, "tun devices"),
    not_yet("tun_ns", || kernel_at_least(5, 2), "tun devices"),
    not_yet(
        "userns",
        || path_exists("/proc/self/ns/user"),
        "user namespaces",
    ),
    handled("fdinfo_lock", fdinfo_lock),
    handled("seccomp_suspend", || kernel_at_least(4, 3)),
    handled("seccomp_filters", || kernel_at_least(4, 4)),
    not_yet(
        "loginuid",
        || path_exists("/proc/self/loginuid"),
        "restoring the audit login uid",
    ),
    not_yet(
        "cgroupns",
        || path_exists("/proc/self/ns/cgroup"),
        "cgroups and cgroup namespaces",
    ),
    not_yet(
        "autofs",
        || line_in("/proc/filesystems", "nodev\tautofs", "no autofs filesystem"),
        "autofs mounts",
    ),
    not_yet("tcp_half_closed", tcp_half_closed, "TCP sockets"),
    not_yet(
        "compat_cr",
        || path_exists("/proc/sys/abi/vsyscall32"),
        "32-bit tasks",
    ),
    not_yet(
        "uffd",
        || {
            raw_syscall_works(
                libc::SYS_userfaultfd,
                [libc::O_CLOEXEC as _, 0, 0, 0, 0],
                "userfaultfd",
                true,
            )
        },
        "lazy pages (criu lazy-pages, --lazy-pages)",
    ),
    not_yet(
        "uffd-noncoop",
        || kernel_at_least(4, 11),
        "lazy pages (criu lazy-pages, --lazy-pages)",
    ),
    not_yet(
        "can_map_vdso",
        || kernel_at_least(4, 9),
        "moving the vDSO (restore needs the same vDSO layout)",
    ),
    not_yet(
        "sk_ns",
        || path_exists("/proc/self/ns/net"),
        "network namespaces",
    ),
    not_yet("sk_unix_file", sk_unix_file, "unix sockets"),
    not_yet("net_diag_raw", net_diag_raw, "raw sockets"),
    not_yet("nsid", netns_ids, "network namespaces"),
    not_yet("link_nsid", netns_ids, "network namespaces"),
    not_yet(
        "kcmp_epoll",
        || kernel_at_least(4, 13),
        "epoll targets by KCMP_EPOLL_TFD",
    ),
    not_yet(
        "timens",
        || path_exists("/proc/self/ns/time"),
        "time namespaces",
    ),
    not_yet("external_net_ns", || Ok(()), "external network namespaces"),
    handled("clone3_set_tid", || kernel_at_least(5, 5)),
    not_yet("newifindex", newifindex, "network devices"),
    not_yet(
        "nftables",
        || path_exists("/proc/net/netfilter"),
        "nftables network locking",
    ),
    not_yet("has_ipt_legacy", ipt_legacy, "iptables network locking"),
    not_yet("pidfd_store", pidfd_open, "the RPC pidfd store"),
    not_yet(
        "ns_pid",
        || {
            line_in(
                "/proc/self/status",
                "NSpid:",
                "no NSpid in /proc/self/status",
            )
        },
        "pid namespaces",
    ),
    not_yet(
        "apparmor_stacking",
        || path_exists("/sys/kernel/security/apparmor"),
        "AppArmor profiles",
    ),
    not_yet(
        "network_lock_nftables",
        || path_exists("/proc/net/netfilter"),
        "nftables network locking",
    ),
    not_yet(
        "sockopt_buf_lock",
        sockopt_buf_lock,
        "SO_BUF_LOCK on sockets",
    ),
    not_yet("memfd_hugetlb", || kernel_at_least(4, 14), "hugetlb memfds"),
    not_yet(
        "move_mount_set_group",
        move_mount_set_group,
        "mount namespaces",
    ),
    not_yet(
        "openat2",
        || raw_syscall_works(libc::SYS_openat2, [-1, 0, 0, 0, 0], "openat2", true),
        "openat2 path resolution",
    ),
    not_yet(
        "get_rseq_conf",
        || kernel_at_least(5, 13),
        "threads caught inside an rseq critical section",
    ),
    not_yet("ipv6_freebind", ipv6_freebind, "IPv6 sockets"),
    handled("pagemap_scan", || kernel_at_least(6, 7)),
    not_yet(
        "timer_cr_ids",
        || kernel_at_least(6, 15),
        "restoring posix timer ids with PR_TIMER_CREATE_RESTORE_IDS",
    ),
    not_yet(
        "overlayfs_maps",
        || {
            line_in(
                "/proc/filesystems",
                "nodev\toverlay",
                "no overlay filesystem",
            )
        },
        "overlayfs mappings",
    ),
    not_yet(
        "breakpoints",
        || kernel_at_least(2, 6),
        "hardware breakpoints",
    ),
    not_yet(
        "pagemap_scan_guard_pages",
        || kernel_at_least(6, 14),
        "guard pages (MADV_GUARD_INSTALL)",
    ),
];

/// Runs the required checks; the first failure is the error.
///
/// # Errors
/// [`CheckError::Kernel`] naming the first missing piece.
pub fn check_all() -> Result<(), CheckError> {
    for (name, probe) in REQUIRED {
        tracing::debug!("checking {name}");
        probe().map_err(|missing| CheckError::Kernel { name, missing })?;
    }
    Ok(())
}

/// All feature names `--feature` accepts, in CRIU's order.
pub fn feature_names() -> Vec<&'static str> {
    FEATURES.iter().map(|f| f.name).collect()
}

/// Answers one named feature: the kernel has it and this criu handles what it gates.
///
/// # Errors
/// [`CheckError::UnknownFeature`] for names CRIU does not know, [`CheckError::Kernel`] when
/// the kernel lacks the feature, [`CheckError::NotHandled`] when it has it but this criu does
/// not handle what it gates.
pub fn check_feature(name: &str) -> Result<(), CheckError> {
    let Some(f) = FEATURES.iter().find(|f| f.name == name) else {
        return Err(CheckError::UnknownFeature {
            name: name.to_string(),
        });
    };
    (f.probe)().map_err(|missing| CheckError::Kernel {
        name: f.name,
        missing,
    })?;
    match f.gates {
        None => Ok(()),
        Some(gates) => Err(CheckError::NotHandled {
            name: f.name,
            gates,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_probe() {
        // This machine: kernel 6.18, no soft-dirty.
        check_feature("clone3_set_tid").unwrap();
        check_feature("pagemap_scan").unwrap();
        check_feature("seccomp_filters").unwrap();
        assert!(matches!(
            check_feature("mem_dirty_track"),
            Err(CheckError::Kernel { .. })
        ));
        // The kernel has these; this criu does not handle what they gate.
        for name in [
            "timens",
            "tun",
            "aio_remap",
            "ipv6_freebind",
            "sockopt_buf_lock",
            "sk_unix_file",
            "tcp_half_closed",
            "newifindex",
            "move_mount_set_group",
            "net_diag_raw",
            "link_nsid",
        ] {
            assert!(
                matches!(check_feature(name), Err(CheckError::NotHandled { .. })),
                "{name}: {:?}",
                check_feature(name)
            );
        }
        let e = check_feature("no_such_thing").unwrap_err();
        assert!(matches!(e, CheckError::UnknownFeature { .. }));
        assert_eq!(e.errno(), libc::EINVAL);
        process_vm_readv().unwrap();
        map_files().unwrap();
    }

    #[test]
    fn names_are_unique_and_criu_s() {
        let names = feature_names();
        let set: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(set.len(), names.len());
        assert_eq!(names.len(), 45);
        assert_eq!(names[0], "mnt_id");
        assert_eq!(names[names.len() - 1], "pagemap_scan_guard_pages");
    }
}
