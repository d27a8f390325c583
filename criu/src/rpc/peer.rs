//! Who the RPC client is and what it may ask a privileged criu to do (issue 23).
//!
//! The client is known by `SO_PEERCRED` and pinned by a pidfd opened at once (a pid that dies
//! and is reused while the request is checked is noticed: the pidfd then reports the exit).
//! A privileged client (effective uid 0 with `CAP_SYS_PTRACE` and `CAP_SYS_ADMIN`) keeps
//! criu's full power. Any other client, uid 0 without those capabilities included (what a
//! process of `setpriv --reuid 0 --inh-caps=-all --bounding-set=-all` is):
//!
//! - may dump only a tree whose every task it could `ptrace` itself
//!   (`PTRACE_MODE_ATTACH_REALCREDS`): the task's real, effective and saved uids and gids are the
//!   client's real uid and gid, its permitted capabilities are a subset of the client's, and it
//!   is dumpable;
//! - may restore only images whose every thread asks for the client's uid and gids and for no
//!   capability the client lacks, whose files the client could open itself (a file that is not
//!   there: its directory must be writable by the client), without a setuid or setgid
//!   executable of someone else, and without device nodes to make;
//! - names directories (images, work) it can itself write (dump) or read (restore).
//!
//! Every access check of a path is made by the kernel: a child process takes the client's
//! credentials (its capability sets too, so uid 0 without `CAP_DAC_OVERRIDE` meets file
//! permissions) and calls `access`.
// Unsafe code: pidfd_open, poll on the pidfd, and a forked child that drops to the client's
// credentials to ask the kernel whether it may reach a path.
#![allow(unsafe_code)]

use std::collections::HashSet;
use std::ffi::CString;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use criu_images::ImageDir;
use criu_images::pb::{CoreEntry, CredsEntry};
use nix::sys::socket::{getsockopt, sockopt};

/// Why a client may not do what it asked.
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    /// The client could not be identified.
    #[error("client pid {pid}: {why}")]
    Client {
        /// The client's pid.
        pid: i32,
        /// What failed.
        why: String,
    },
    /// A task of the tree to dump is not the client's to ptrace.
    #[error("client uid {uid} may not dump pid {pid}: {why}")]
    Dump {
        /// The client's real uid.
        uid: u32,
        /// The task.
        pid: i32,
        /// Which rule it breaks.
        why: String,
    },
    /// The images ask for more than the client has.
    #[error("client uid {uid} may not restore {file}: {why}")]
    Restore {
        /// The client's real uid.
        uid: u32,
        /// The image (or file) that asks for it.
        file: String,
        /// What it asks for.
        why: String,
    },
    /// A directory or file the client cannot reach itself.
    #[error("client uid {uid} cannot {what} {}: {source}", path.display())]
    Access {
        /// The client's real uid.
        uid: u32,
        /// What the client would need to do.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The kernel's answer for the client.
        source: nix::errno::Errno,
    },
}

impl Denied {
    /// The errno a client reads in `cr_errno`: `EACCES` for paths, `EPERM` otherwise.
    pub fn errno(&self) -> i32 {
        match self {
            Denied::Access { .. } => libc::EACCES,
            _ => libc::EPERM,
        }
    }
}

/// A task's credentials as `/proc/PID/status` shows them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Creds {
    /// Real, effective, saved and filesystem uid.
    pub uid: [u32; 4],
    /// Real, effective, saved and filesystem gid.
    pub gid: [u32; 4],
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Permitted capabilities.
    pub cap_prm: u64,
    /// Effective capabilities.
    pub cap_eff: u64,
    /// Bounding set.
    pub cap_bnd: u64,
}

const CAP_SYS_ADMIN: u64 = 1 << 21;
const CAP_SYS_PTRACE: u64 = 1 << 19;
/// More tasks than this in a tree to dump is refused (the walk is bounded).
const MAX_TASKS: usize = 1 << 16;

impl Creds {
    /// Parses the `Uid:`, `Gid:`, `Groups:`, `CapPrm:`, `CapEff:` and `CapBnd:` lines.
    ///
    /// # Errors
    /// A line missing or malformed, named.
    pub fn parse(status: &str) -> Result<Creds, String> {
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(str::trim)
                .ok_or_else(|| format!("no {key} line"))
        };
        let four = |key: &str| -> Result<[u32; 4], String> {
            let v: Vec<u32> = field(key)?
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .map_err(|_| format!("bad {key} line"))?;
            v.try_into().map_err(|_| format!("bad {key} line"))
        };
        let hex = |key: &str| -> Result<u64, String> {
            u64::from_str_radix(field(key)?, 16).map_err(|_| format!("bad {key} line"))
        };
        Ok(Creds {
            uid: four("Uid:")?,
            gid: four("Gid:")?,
            groups: field("Groups:")
                .unwrap_or("")
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .map_err(|_| "bad Groups: line".to_string())?,
            cap_prm: hex("CapPrm:")?,
            cap_eff: hex("CapEff:")?,
            cap_bnd: hex("CapBnd:")?,
        })
    }

    /// The credentials of task `pid`.
    ///
    /// # Errors
    /// The task is gone or its status does not parse.
    pub fn of(pid: i32) -> Result<Creds, String> {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|e| format!("reading /proc/{pid}/status: {e}"))?;
        Creds::parse(&s)
    }

    /// Root with the capabilities that make criu's work the client's own.
    pub fn privileged(&self) -> bool {
        self.uid[1] == 0
            && self.cap_eff & (CAP_SYS_ADMIN | CAP_SYS_PTRACE) == CAP_SYS_ADMIN | CAP_SYS_PTRACE
    }
}

/// Takes task `pid`'s file mode creation mask (the `Umask:` line of its status) as this
/// process's; left as it is when the line cannot be read.
pub fn adopt_umask(pid: i32) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .and_then(|m| u32::from_str_radix(m.trim(), 8).ok());
    if let Some(m) = mask {
        tracing::debug!("client umask {m:04o}");
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(m & 0o777));
    }
}

/// The client of one RPC session.
#[derive(Debug)]
pub struct Client {
    /// Its pid (from `SO_PEERCRED`).
    pub pid: i32,
    /// Its credentials, read once its pidfd pinned it.
    pub creds: Creds,
    _pidfd: OwnedFd,
}

/// Pins `pid` with a pidfd and reads its credentials; `None` if it is gone or was replaced
/// while being read.
fn pinned_creds(pid: i32) -> Result<(OwnedFd, Creds), String> {
    let fd = crate::pidfd::open(pid).map_err(|e| format!("pidfd_open: {e}"))?;
    let c = Creds::of(pid)?;
    if crate::pidfd::exited(&fd) {
        return Err("exited while being checked".into());
    }
    Ok((fd, c))
}

impl Client {
    /// The client on the other end of `sk`.
    ///
    /// # Errors
    /// [`Denied::Client`] when it cannot be identified, or its credentials changed since it
    /// connected.
    pub fn of_socket(sk: BorrowedFd<'_>) -> Result<Client, Denied> {
        let pc = getsockopt(&sk, sockopt::PeerCredentials).map_err(|e| Denied::Client {
            pid: 0,
            why: format!("SO_PEERCRED: {e}"),
        })?;
        let pid = pc.pid();
        let deny = |why: String| Denied::Client { pid, why };
        let (pidfd, creds) = pinned_creds(pid).map_err(deny)?;
        if creds.uid[1] != pc.uid() || creds.gid[1] != pc.gid() {
            return Err(deny(format!(
                "its credentials ({}:{}) are not those it connected with ({}:{})",
                creds.uid[1],
                creds.gid[1],
                pc.uid(),
                pc.gid()
            )));
        }
        Ok(Client {
            pid,
            creds,
            _pidfd: pidfd,
        })
    }

    /// Whether the client keeps criu's full power.
    pub fn privileged(&self) -> bool {
        self.creds.privileged()
    }

    fn uid(&self) -> u32 {
        self.creds.uid[0]
    }

    /// Whether the client could ptrace `t`, a task with credentials `t` and dumpability
    /// `dumpable` (`PTRACE_MODE_ATTACH_REALCREDS`); `Err` names the rule broken.
    pub fn may_ptrace(&self, t: &Creds, dumpable: bool) -> Result<(), String> {
        if self.privileged() {
            return Ok(());
        }
        let (ruid, rgid) = (self.creds.uid[0], self.creds.gid[0]);
        if t.uid[..3].iter().any(|u| *u != ruid) {
            return Err(format!("its uids {:?} are not {ruid}", &t.uid[..3]));
        }
        if t.gid[..3].iter().any(|g| *g != rgid) {
            return Err(format!("its gids {:?} are not {rgid}", &t.gid[..3]));
        }
        if t.cap_prm & !self.creds.cap_prm != 0 {
            return Err(format!(
                "it has capabilities {:#x} the client lacks",
                t.cap_prm & !self.creds.cap_prm
            ));
        }
        if !dumpable {
            return Err("it is not dumpable".into());
        }
        Ok(())
    }

    /// Whether the client may dump the tree rooted at `root`: every task of it (threads and
    /// children, recursively) passes [`Client::may_ptrace`].
    ///
    /// # Errors
    /// [`Denied::Dump`] naming the first task refused.
    pub fn may_dump(&self, root: i32) -> Result<(), Denied> {
        if self.privileged() {
            return Ok(());
        }
        let deny = |pid: i32, why: String| Denied::Dump {
            uid: self.uid(),
            pid,
            why,
        };
        let mut seen = HashSet::new();
        let mut todo = vec![root];
        while let Some(pid) = todo.pop() {
            if !seen.insert(pid) {
                continue;
            }
            if seen.len() > MAX_TASKS {
                return Err(deny(
                    root,
                    format!("the tree has more than {MAX_TASKS} tasks"),
                ));
            }
            let (pidfd, c) = pinned_creds(pid).map_err(|w| deny(pid, w))?;
            // A task that is not dumpable has its /proc files owned by root (the directory
            // itself keeps the task's uid on recent kernels: its status file is the witness).
            let owner = std::fs::metadata(format!("/proc/{pid}/status"))
                .map(|m| m.uid())
                .map_err(|e| deny(pid, e.to_string()))?;
            self.may_ptrace(&c, owner == c.uid[1])
                .map_err(|w| deny(pid, w))?;
            let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
                .map_err(|e| deny(pid, format!("listing threads: {e}")))?;
            for t in tasks.flatten() {
                let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                    continue;
                };
                if tid != pid {
                    let tc = Creds::of(tid).map_err(|w| deny(tid, w))?;
                    self.may_ptrace(&tc, owner == tc.uid[1])
                        .map_err(|w| deny(tid, w))?;
                }
                let kids = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/children"))
                    .unwrap_or_default();
                todo.extend(
                    kids.split_whitespace()
                        .filter_map(|k| k.parse::<i32>().ok()),
                );
            }
            if crate::pidfd::exited(&pidfd) {
                return Err(deny(pid, "exited while being checked".into()));
            }
        }
        Ok(())
    }

    /// Whether the client can itself `access(path, mode)`.
    ///
    /// # Errors
    /// [`Denied::Access`] with the kernel's answer.
    pub fn may_access(&self, path: &Path, mode: i32, what: &'static str) -> Result<(), Denied> {
        if self.privileged() {
            return Ok(());
        }
        access_as(&self.creds, path, mode).map_err(|source| Denied::Access {
            uid: self.uid(),
            what,
            path: path.to_path_buf(),
            source,
        })
    }

    /// Whether the images in `dir` ask only for what the client has (see the module text).
    ///
    /// # Errors
    /// [`Denied::Restore`] naming the image and what it asks for; [`Denied::Access`] for a file
    /// the client could not open.
    pub fn may_restore(&self, dir: &Path) -> Result<(), Denied> {
        if self.privileged() {
            return Ok(());
        }
        let deny = |file: String, why: String| Denied::Restore {
            uid: self.uid(),
            file,
            why,
        };
        let d = ImageDir::new(dir);
        let tree = d
            .read_pstree()
            .map_err(|e| deny("pstree.img".into(), e.to_string()))?;
        for t in &tree {
            let mut ids = vec![t.pid];
            ids.extend(t.threads.iter().copied().filter(|x| *x != t.pid));
            for tid in ids {
                let name = criu_images::names::core(tid);
                let core = match d.read_core(tid) {
                    Ok(c) => c,
                    // A thread without a core of its own takes the leader's.
                    Err(_) if tid != t.pid => continue,
                    Err(e) => return Err(deny(name, e.to_string())),
                };
                self.check_core_creds(&core).map_err(|w| deny(name, w))?;
            }
        }
        self.check_files(&d, &tree)?;
        self.check_ghosts(dir)
    }

    fn check_core_creds(&self, core: &CoreEntry) -> Result<(), String> {
        let Some(c) = core.thread_core.as_ref().and_then(|t| t.creds.as_ref()) else {
            return Err("no credentials (the task would keep criu's, root's)".into());
        };
        self.check_creds(c)
    }

    /// The rules for one thread's credentials in an image.
    pub fn check_creds(&self, c: &CredsEntry) -> Result<(), String> {
        if self.privileged() {
            return Ok(());
        }
        let me = &self.creds;
        let uids = [c.uid, c.euid, c.suid, c.fsuid];
        if let Some(u) = uids.iter().find(|u| !me.uid.contains(u)) {
            return Err(format!("uid {u} (the client is uid {})", me.uid[0]));
        }
        let gids = [c.gid, c.egid, c.sgid, c.fsgid];
        let mine = |g: &u32| me.gid.contains(g) || me.groups.contains(g);
        if let Some(g) = gids.iter().chain(&c.groups).find(|g| !mine(g)) {
            return Err(format!("gid {g}, not one of the client's groups"));
        }
        let word = |v: &[u32]| {
            u64::from(v.first().copied().unwrap_or(0))
                | u64::from(v.get(1).copied().unwrap_or(0)) << 32
        };
        for (name, set) in [
            ("permitted", &c.cap_prm),
            ("effective", &c.cap_eff),
            ("inheritable", &c.cap_inh),
            ("ambient", &c.cap_amb),
        ] {
            let extra = word(set) & !me.cap_prm;
            if extra != 0 {
                return Err(format!("{name} capabilities {extra:#x} the client lacks"));
            }
        }
        let extra = word(&c.cap_bnd) & !me.cap_bnd;
        if extra != 0 {
            return Err(format!("bounding capabilities {extra:#x} the client lacks"));
        }
        Ok(())
    }

    fn check_files(
        &self,
        d: &ImageDir,
        tree: &[criu_images::pb::PstreeEntry],
    ) -> Result<(), Denied> {
        let deny = |file: String, why: String| Denied::Restore {
            uid: self.uid(),
            file,
            why,
        };
        // files.img is absent for a tree without files.
        let files = if d.file(criu_images::names::FILES).exists() {
            d.read_files()
                .map_err(|e| deny(criu_images::names::FILES.into(), e.to_string()))?
        } else {
            Vec::new()
        };
        let exes: HashSet<u32> = tree
            .iter()
            .filter_map(|t| d.read_mm(t.pid).ok().map(|m| m.exe_file_id))
            .collect();
        for f in &files {
            let Some(r) = &f.reg else { continue };
            let name = &r.name;
            if name.contains('\0') || Path::new(name).components().any(|c| c.as_os_str() == "..") {
                return Err(deny(name.clone(), "a path with '..' or a NUL byte".into()));
            }
            let p = Path::new(name);
            if name.starts_with("/proc/") {
                // The restored task's own /proc files are opened by the task, with its
                // (checked) credentials.
                continue;
            }
            match std::fs::metadata(p) {
                Ok(m) => {
                    let mode = match r.flags as i32 & libc::O_ACCMODE {
                        libc::O_WRONLY => libc::W_OK,
                        libc::O_RDWR => libc::R_OK | libc::W_OK,
                        _ => libc::R_OK,
                    };
                    self.may_access(p, mode, "open")?;
                    let setid = m.mode() & (libc::S_ISUID | libc::S_ISGID) != 0;
                    if exes.contains(&r.id) && setid && m.uid() != self.uid() {
                        return Err(deny(
                            name.clone(),
                            format!("a setuid/setgid executable of uid {}", m.uid()),
                        ));
                    }
                }
                Err(_) => {
                    let parent = p.parent().unwrap_or(Path::new("/"));
                    self.may_access(parent, libc::W_OK | libc::X_OK, "create files in")?;
                }
            }
        }
        Ok(())
    }

    /// Deleted device nodes would be made again with mknod: never for a client that could not.
    fn check_ghosts(&self, dir: &Path) -> Result<(), Denied> {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return Ok(());
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("ghost-file-") {
                continue;
            }
            let g: criu_images::pb::GhostFileEntry =
                criu_images::ImageReader::open_expect(e.path(), criu_images::magic::GHOST_FILE)
                    .and_then(|mut r| r.read_one())
                    .map_err(|err| Denied::Restore {
                        uid: self.uid(),
                        file: name.clone(),
                        why: err.to_string(),
                    })?;
            let fmt = g.mode & libc::S_IFMT;
            if fmt == libc::S_IFCHR || fmt == libc::S_IFBLK {
                return Err(Denied::Restore {
                    uid: self.uid(),
                    file: name,
                    why: "a device node to make".into(),
                });
            }
        }
        Ok(())
    }
}

/// `capget`/`capset`'s header (`_LINUX_CAPABILITY_VERSION_3`, this process).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

/// One 32-bit word of `capget`/`capset`'s data (two of them make the 64 bits).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_VERSION_3: u32 = 0x2008_0522;

/// Asks the kernel whether a process with credentials `c` may `access(path, mode)`: a child
/// takes those credentials (groups, gids, uids, then no capability beyond the client's
/// permitted and effective sets: a uid-0 client without capabilities is not let past file
/// permissions) and tries.
///
/// # Errors
/// The errno the child got (or `EPERM` when it could not take the credentials).
pub fn access_as(c: &Creds, path: &Path, mode: i32) -> Result<(), nix::errno::Errno> {
    let cpath = CString::new(path.as_os_str().as_bytes()).map_err(|_| nix::errno::Errno::EINVAL)?;
    let groups: Vec<libc::gid_t> = c.groups.clone();
    let (prm, eff) = (c.cap_prm, c.cap_eff & c.cap_prm);
    // SAFETY: the child calls only async-signal-safe functions (setgroups, setresgid,
    // setresuid, capget, capset, access, _exit) on data prepared before the fork.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(nix::errno::Errno::last());
    }
    if child == 0 {
        let mut hdr = CapHeader {
            version: CAP_VERSION_3,
            pid: 0,
        };
        let mut data = [CapData::default(); 2];
        // SAFETY: in the forked child: async-signal-safe credential calls, capget/capset on the
        // live header and two-word data array above (the layout of version 3), and access on
        // buffers prepared before the fork, then _exit.
        unsafe {
            let took = libc::setgroups(groups.len(), groups.as_ptr()) == 0
                && libc::setresgid(c.gid[0], c.gid[1], c.gid[2]) == 0
                && libc::setresuid(c.uid[0], c.uid[1], c.uid[2]) == 0
                && libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) == 0;
            // What is left after the uid change (nothing unless a uid stayed 0), cut to the
            // client's own sets.
            let took = took && {
                for (i, d) in data.iter_mut().enumerate() {
                    let shift = 32 * i;
                    d.permitted &= (prm >> shift) as u32;
                    d.effective &= (eff >> shift) as u32;
                    d.inheritable = 0;
                }
                libc::syscall(libc::SYS_capset, &hdr, data.as_ptr()) == 0
            };
            let code = if !took {
                255
            } else if libc::access(cpath.as_ptr(), mode) == 0 {
                0
            } else {
                *libc::__errno_location() & 0xff
            };
            libc::_exit(code)
        }
    }
    let mut status = 0;
    loop {
        // SAFETY: waits for the child just forked, writing into a live local.
        let r = unsafe { libc::waitpid(child, &mut status, 0) };
        if r == child {
            break;
        }
        if nix::errno::Errno::last() != nix::errno::Errno::EINTR {
            return Err(nix::errno::Errno::last());
        }
    }
    match (libc::WIFEXITED(status), libc::WEXITSTATUS(status)) {
        (true, 0) => Ok(()),
        (true, 255) | (false, _) => Err(nix::errno::Errno::EPERM),
        (true, e) => Err(nix::errno::Errno::from_raw(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tx\nUid:\t1000\t1000\t1000\t1000\nGid:\t100\t100\t100\t100\n\
        Groups:\t100 27\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n\
        CapBnd:\t000001ffffffffff\n";

    fn user() -> Client {
        Client {
            pid: 1,
            creds: Creds::parse(STATUS).unwrap(),
            _pidfd: crate::pidfd::open(std::process::id() as i32).unwrap(),
        }
    }

    #[test]
    fn status_lines_parse_and_garbage_is_an_error() {
        let c = Creds::parse(STATUS).unwrap();
        assert_eq!(c.uid, [1000; 4]);
        assert_eq!(c.groups, vec![100, 27]);
        assert_eq!(c.cap_bnd, 0x1ff_ffff_ffff);
        assert!(!c.privileged());
        assert!(Creds::parse("Uid:\t1\t2\n").is_err());
        assert!(Creds::parse(&STATUS.replace("1000\t1000\t1000", "x")).is_err());
    }

    #[test]
    fn a_user_may_ptrace_only_its_own_plain_dumpable_tasks() {
        let u = user();
        let mut t = u.creds.clone();
        assert!(u.may_ptrace(&t, true).is_ok());
        assert!(u.may_ptrace(&t, false).unwrap_err().contains("dumpable"));
        t.uid[2] = 0;
        assert!(u.may_ptrace(&t, true).unwrap_err().contains("uids"));
        t = u.creds.clone();
        t.gid[1] = 0;
        assert!(u.may_ptrace(&t, true).unwrap_err().contains("gids"));
        t = u.creds.clone();
        t.cap_prm = 1 << 21;
        assert!(u.may_ptrace(&t, true).unwrap_err().contains("capabilities"));
    }

    #[test]
    fn uid_0_without_capabilities_meets_file_permissions() {
        use std::os::unix::fs::PermissionsExt;
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let theirs = d.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        let mut root = Creds::of(std::process::id() as i32).unwrap();
        root.groups.clear();
        assert_eq!(access_as(&root, &theirs, libc::W_OK), Ok(()));
        let uncapped = Creds {
            cap_prm: 0,
            cap_eff: 0,
            ..root.clone()
        };
        assert!(!uncapped.privileged());
        assert_eq!(
            access_as(&uncapped, &theirs, libc::W_OK),
            Err(nix::errno::Errno::EACCES)
        );
        // Its own (root's) directory it may still write, as the owner.
        assert_eq!(access_as(&uncapped, d.path(), libc::W_OK), Ok(()));
    }

    #[test]
    fn image_creds_beyond_the_client_s_are_refused() {
        let u = user();
        let mine = CredsEntry {
            uid: 1000,
            euid: 1000,
            suid: 1000,
            fsuid: 1000,
            gid: 100,
            egid: 100,
            sgid: 100,
            fsgid: 100,
            groups: vec![27],
            cap_bnd: vec![u32::MAX, 0x1ff],
            ..Default::default()
        };
        assert!(u.check_creds(&mine).is_ok());
        let mut c = mine.clone();
        c.euid = 0;
        assert!(u.check_creds(&c).unwrap_err().contains("uid 0"));
        c = mine.clone();
        c.groups.push(0);
        assert!(u.check_creds(&c).unwrap_err().contains("gid 0"));
        c = mine.clone();
        c.cap_eff = vec![1 << 21, 0];
        assert!(u.check_creds(&c).unwrap_err().contains("effective"));
        c = mine;
        c.cap_bnd = vec![u32::MAX, u32::MAX];
        assert!(u.check_creds(&c).unwrap_err().contains("bounding"));
    }
}
