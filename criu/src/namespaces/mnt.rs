//! The mount namespace: both sides.
//!
//! Dump ([`dump`]): the tree's root task's `/proc/PID/mountinfo` becomes
//! `mountpoints-ID.img` (CRIU's `MntEntry`, one per mount, `ID` the namespace's id in the
//! task's `ids`), and each tmpfs mounted at its own root is archived with `tar` as
//! `tmpfs-dev-DEV.tar.gz` (DEV the kernel's encoding of its device), as CRIU does. A mount that
//! cannot be made again is refused by name before anything is written ([`PlanError`]): a bind
//! from outside the namespace has to be named `--external mnt[MOUNTPOINT]:KEY`.
//!
//! Restore ([`MountNs::prepare`]): before any task exists, criu enters a new mount namespace
//! of its own, makes everything private there, and rebuilds the saved table under a yard
//! directory (`/tmp/.criu.mntns.XXXXXX`): the root bound from `--root` (recursively, as CRIU),
//! file systems of the kernel mounted afresh, tmpfs filled back from its tarball, bind mounts
//! from the mount they come from, external ones from `--external mnt[KEY]:PATH`, then flags
//! and propagation (shared peer groups, slaves, private, unbindable). Files of the tree are
//! opened under the yard ([`MountNs::yard`] prefixes their paths), the tasks are created in
//! the namespace, and once every task waits to resume ([`MountNs::finish`]) criu pivots the
//! namespace's root to the yard, detaches the old root and goes back to its own namespace:
//! the tasks run on in a namespace that holds their mounts and nothing else. If the restore
//! fails first, criu leaves the namespace (dropping [`MountNs`]), which goes away with the
//! last task, and removes the yard directory.
// Unsafe code: unshare, setns, mount, pivot_root and umount of criu's own mount namespace.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use criu_images::{ImageError, magic, names, pb::MntEntry};
use nix::errno::Errno;

use super::mounts::mountinfo::{self, MountinfoError};
use super::mounts::overlay::{self, OVERLAY};
use super::mounts::plan::{self, How, PlanError, Step};
use crate::options::External;

/// A mount namespace that cannot be saved or made again.
#[derive(Debug, thiserror::Error)]
pub enum MntError {
    /// The mount table refused or inconsistent.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// `/proc/PID/mountinfo` did not parse.
    #[error("mountinfo of {pid}: {source}")]
    Mountinfo {
        /// The task.
        pid: i32,
        /// What was wrong.
        #[source]
        source: MountinfoError,
    },
    /// A file criu needed could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What criu was doing.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A system call on a mount failed.
    #[error("{what}: {errno}")]
    Sys {
        /// What criu was doing (with the path).
        what: String,
        /// The error.
        errno: Errno,
    },
    /// `tar` failed for a tmpfs.
    #[error("tar {what} failed ({status})")]
    Tar {
        /// Which tmpfs and which way.
        what: String,
        /// How tar ended.
        status: String,
    },
    /// The mountpoints image.
    #[error(transparent)]
    Image(#[from] ImageError),
}

impl MntError {
    /// The errno a client sees.
    pub fn errno(&self) -> i32 {
        match self {
            MntError::Sys { errno, .. } => *errno as i32,
            MntError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            MntError::Plan(_) => libc::EOPNOTSUPP,
            _ => libc::EINVAL,
        }
    }
}

fn sys(what: impl Into<String>) -> MntError {
    MntError::Sys {
        what: what.into(),
        errno: Errno::last(),
    }
}

fn cstr(p: &str) -> Result<CString, MntError> {
    CString::new(p).map_err(|_| MntError::Sys {
        what: format!("path {p:?} has a NUL byte"),
        errno: Errno::EINVAL,
    })
}

/// Keys of `--external mnt[...]:...` options: at dump `mnt[MOUNTPOINT]:KEY` (mount point ->
/// key), at restore `mnt[KEY]:PATH` (key -> path), the RPC's `ext_mnt` the same way.
pub fn external_map(external: &[External]) -> HashMap<String, String> {
    external
        .iter()
        .filter(|e| e.kind == "mnt")
        .filter_map(|e| Some((e.id.clone(), e.value.clone()?)))
        .collect()
}

/// Dumps the mount namespace of `pid` (the tree's root) as `mountpoints-ID.img` in `dir`,
/// with the tarballs of its tmpfs mounts. Returns how many mounts were saved.
///
/// # Errors
/// [`MntError`]: the table refused by name ([`PlanError`]), mountinfo unreadable, tar failed.
pub fn dump(pid: i32, ns_id: u32, dir: &Path, external: &[External]) -> Result<usize, MntError> {
    let path = format!("/proc/{pid}/mountinfo");
    let text = std::fs::read_to_string(&path).map_err(|source| MntError::Io {
        what: format!("reading {path}"),
        source,
    })?;
    let mounts = mountinfo::parse(&text).map_err(|source| MntError::Mountinfo { pid, source })?;
    let entries = plan::entries(&mounts, &external_map(external))?;
    // Each overlay layer must be found again: in the namespace, or on the host.
    for e in entries
        .iter()
        .filter(|e| e.fstype == OVERLAY && e.ext_key.is_none())
    {
        for l in overlay::layers(&e.options) {
            let inside = Path::new(&format!("/proc/{pid}/root")).join(l.trim_start_matches('/'));
            if !inside.is_dir() && !Path::new(&l).is_dir() {
                return Err(PlanError::OverlayLayer {
                    id: e.mnt_id,
                    at: e.mountpoint.clone(),
                    layer: l,
                }
                .into());
            }
        }
    }
    let mut archived = std::collections::HashSet::new();
    for (m, e) in mounts.iter().zip(&entries) {
        if e.fstype != plan::TMPFS || m.root != "/" || e.ext_key.is_some() {
            continue;
        }
        if !archived.insert(e.root_dev) {
            continue;
        }
        tar_create(pid, m, dir, e.root_dev)?;
    }
    criu_images::write_all(dir.join(names::mountpoints(ns_id)), magic::MNTS, &entries)?;
    tracing::info!(pid, mounts = entries.len(), "mount namespace dumped");
    Ok(entries.len())
}

/// Archives the tmpfs mounted at `m` (seen through the task's root) as
/// `tmpfs-dev-DEV.tar.gz`.
fn tar_create(pid: i32, m: &mountinfo::MountInfo, dir: &Path, dev: u32) -> Result<(), MntError> {
    let at = format!("/proc/{pid}/root{}", m.mountpoint);
    let what = format!("{} (mount {})", m.mountpoint, m.id);
    // The path must reach that very file system (not one mounted over it).
    let md = std::fs::metadata(&at).map_err(|source| MntError::Io {
        what: format!("tmpfs at {what}"),
        source,
    })?;
    let (maj, min) = (libc::major(md.dev()), libc::minor(md.dev()));
    if (maj, min) != m.dev {
        return Err(MntError::Plan(PlanError::Overmount {
            id: m.id,
            at: m.mountpoint.clone(),
        }));
    }
    let name = format!("tmpfs-dev-{dev}.tar.gz");
    let out = std::fs::File::create(dir.join(&name)).map_err(|source| MntError::Io {
        what: format!("creating {name}"),
        source,
    })?;
    let st = Command::new("tar")
        .args([
            "--create",
            "--gzip",
            "--no-unquote",
            "--no-wildcards",
            "--one-file-system",
            "--check-links",
            "--preserve-permissions",
            "--sparse",
            "--numeric-owner",
            "--directory",
        ])
        .arg(&at)
        .arg(".")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::null())
        .status()
        .map_err(|source| MntError::Io {
            what: "running tar".into(),
            source,
        })?;
    if !st.success() {
        return Err(MntError::Tar {
            what: format!("--create of {what}"),
            status: st.to_string(),
        });
    }
    Ok(())
}

/// criu inside the mount namespace it rebuilt for the tree, until [`MountNs::finish`] leaves it.
#[derive(Debug)]
pub struct MountNs {
    /// criu's own mount namespace, to go back to.
    orig: OwnedFd,
    /// criu's working directory there.
    cwd: OwnedFd,
    /// Where the namespace's root is built.
    yard: PathBuf,
    /// Left already.
    left: bool,
}

impl MountNs {
    /// Reads the tree's mount namespace from `dir` (when its root task had one of its own)
    /// and rebuilds it, criu entering it. `None` when the tree lives in criu's.
    ///
    /// # Errors
    /// [`MntError`]: the image refused ([`PlanError`]: no `--root`, an external mount not
    /// given, ...) before anything is made, or a mount that failed (criu then is back in its
    /// own namespace and the yard is gone).
    pub fn prepare(
        dir: &Path,
        root: Option<&Path>,
        external: &[External],
    ) -> Result<Option<MountNs>, MntError> {
        let d = criu_images::ImageDir::new(dir);
        let Some(pid) = d.read_pstree()?.first().map(|t| t.pid) else {
            return Ok(None);
        };
        let ids_name = names::ids(pid);
        if !d.file(&ids_name).exists() {
            return Ok(None);
        }
        let ids = d.read_ids(pid)?;
        let Some(ns_id) = ids.mnt_ns_id else {
            return Ok(None);
        };
        let img = d.file(&names::mountpoints(ns_id));
        if !img.exists() {
            return Ok(None);
        }
        let entries: Vec<MntEntry> = criu_images::read_all(&img, magic::MNTS)?;
        let root = root.map(|r| r.to_string_lossy().into_owned());
        let steps = plan::steps(&entries, root.as_deref(), &external_map(external))?;
        for s in &steps {
            if let Some(dev) = s.tar_dev {
                let t = d.file(&format!("tmpfs-dev-{dev}.tar.gz"));
                if !t.exists() {
                    return Err(MntError::Io {
                        what: format!("tmpfs of mount {} at {}", s.mnt_id, s.at),
                        source: std::io::Error::from_raw_os_error(libc::ENOENT),
                    });
                }
            }
        }
        let mut ns = MountNs::enter()?;
        ns.build(&steps, dir)?;
        tracing::info!(mounts = steps.len(), yard = %ns.yard.display(), "mount namespace built");
        Ok(Some(ns))
    }

    /// The directory the tree's paths are under until [`MountNs::finish`].
    pub fn yard(&self) -> &Path {
        &self.yard
    }

    fn enter() -> Result<MountNs, MntError> {
        let open = |p: &str| {
            std::fs::File::open(p)
                .map(OwnedFd::from)
                .map_err(|source| MntError::Io {
                    what: format!("opening {p}"),
                    source,
                })
        };
        let orig = open("/proc/self/ns/mnt")?;
        let cwd = open(".")?;
        let mut tmpl = *b"/tmp/.criu.mntns.XXXXXX\0";
        // SAFETY: mkdtemp rewrites the X's of a NUL-terminated template we own.
        if unsafe { libc::mkdtemp(tmpl.as_mut_ptr().cast()) }.is_null() {
            return Err(sys("making the mount yard"));
        }
        let yard = PathBuf::from(String::from_utf8_lossy(&tmpl[..tmpl.len() - 1]).into_owned());
        let ns = MountNs {
            orig,
            cwd,
            yard,
            left: true,
        };
        if let Some(fd) = super::user_owned::premade(super::Kind::Mnt) {
            // Made inside the tree's user namespace (which then owns it): entered, by a thread
            // whose fs is its own.
            // SAFETY: unshare of this thread's fs and setns into a namespace we hold; criu
            // keeps a descriptor of the old one to go back.
            unsafe {
                if libc::unshare(libc::CLONE_FS) != 0 {
                    return Err(sys("unshare(CLONE_FS)"));
                }
                if libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNS) != 0 {
                    return Err(sys("entering the mount namespace made for the tree"));
                }
            }
        } else {
            // SAFETY: unshare of this process's mount namespace; criu keeps a descriptor of
            // the old one to go back.
            if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
                return Err(sys("unshare(CLONE_NEWNS)"));
            }
        }
        let mut ns = ns;
        ns.left = false;
        // Nothing made here reaches criu's namespace (or any other).
        mount_raw(None, "/", None, libc::MS_REC | libc::MS_PRIVATE, None)
            .map_err(|e| e.at("making / private in the new namespace"))?;
        Ok(ns)
    }

    fn target(&self, at: &str) -> PathBuf {
        self.yard.join(at.trim_start_matches('/'))
    }

    fn build(&mut self, steps: &[Step], dir: &Path) -> Result<(), MntError> {
        let yard = self.yard.to_string_lossy().into_owned();
        for s in steps {
            let target = self.target(&s.at);
            let t = target.to_string_lossy().into_owned();
            let what = |w: &str| format!("{w} mount {} at {}", s.mnt_id, s.at);
            if !target.exists() {
                std::fs::create_dir_all(&target).map_err(|source| MntError::Io {
                    what: what("making the mount point of"),
                    source,
                })?;
            }
            // A mount that the kernel already made here by propagation from a peer.
            if s.at != "/" && propagated_here(&target, s.dev) {
                tracing::debug!(at = %s.at, "made by propagation");
                continue;
            }
            let ro_bits = s.flags;
            match &s.how {
                How::Root(r) => {
                    mount_raw(Some(r), &t, None, libc::MS_BIND | libc::MS_REC, None)
                        .map_err(|e| e.at(&what("binding --root for")))?;
                    remount(&t, ro_bits).map_err(|e| e.at(&what("flags of")))?;
                }
                How::Fresh { fs, source, data } => {
                    // An overlay whose layers are all in the namespace being built: mounted
                    // from a thread whose root is the yard, so that the layers it keeps (and
                    // shows) are the namespace's paths, as at dump time.
                    let layers = overlay::layers(data);
                    if fs == "overlay"
                        && !layers.is_empty()
                        && layers.iter().all(|l| self.target(l).is_dir())
                    {
                        mount_in_root(
                            &self.yard,
                            source,
                            &s.at,
                            fs,
                            ro_bits & !libc::MS_RDONLY,
                            data,
                        )
                        .map_err(|e| e.at(&what("mounting")))?;
                        if ro_bits & libc::MS_RDONLY != 0 {
                            remount(&t, ro_bits).map_err(|e| e.at(&what("flags of")))?;
                        }
                        self.propagate(s, &t)?;
                        continue;
                    }
                    // Else each layer in the namespace, or on the host.
                    let data = if fs == "overlay" {
                        overlay::rewrite(data, |l| {
                            let inside = self.target(l);
                            if inside.is_dir() {
                                Ok(inside.to_string_lossy().into_owned())
                            } else if Path::new(l).is_dir() {
                                Ok(l.to_string())
                            } else {
                                Err(MntError::Plan(PlanError::OverlayLayer {
                                    id: s.mnt_id,
                                    at: s.at.clone(),
                                    layer: l.to_string(),
                                }))
                            }
                        })?
                    } else {
                        data.clone()
                    };
                    let data = &data;
                    mount_raw(
                        Some(source),
                        &t,
                        Some(fs),
                        ro_bits & !libc::MS_RDONLY,
                        Some(data),
                    )
                    .map_err(|e| e.at(&what("mounting")))?;
                    if let Some(dev) = s.tar_dev {
                        tar_extract(&dir.join(format!("tmpfs-dev-{dev}.tar.gz")), &target)
                            .map_err(|e| match e {
                                MntError::Tar { status, .. } => MntError::Tar {
                                    what: what("--extract into"),
                                    status,
                                },
                                e => e,
                            })?;
                    }
                    if ro_bits & libc::MS_RDONLY != 0 {
                        remount(&t, ro_bits).map_err(|e| e.at(&what("flags of")))?;
                    }
                }
                How::Bind { from, in_yard } => {
                    let src = if *in_yard {
                        format!("{yard}/{from}")
                    } else {
                        from.clone()
                    };
                    if *in_yard {
                        make_pts_slave(Path::new(&src)).map_err(|e| e.at(&what("a pty for")))?;
                    }
                    mount_raw(Some(&src), &t, None, libc::MS_BIND, None)
                        .map_err(|e| e.at(&what("binding")))?;
                    remount(&t, ro_bits).map_err(|e| e.at(&what("flags of")))?;
                }
            }
            self.propagate(s, &t)?;
        }
        // Last: nothing is bound from an unbindable mount.
        for s in steps.iter().filter(|s| s.prop.unbindable) {
            let t = self.target(&s.at).to_string_lossy().into_owned();
            mount_raw(None, &t, None, libc::MS_UNBINDABLE, None)
                .map_err(|e| e.at(&format!("making mount {} unbindable", s.mnt_id)))?;
        }
        Ok(())
    }

    /// Sets the propagation of mount `s`, made at `t`.
    fn propagate(&self, s: &Step, t: &str) -> Result<(), MntError> {
        for (on, bit, name) in [
            (s.prop.slave, libc::MS_SLAVE, "slave"),
            (s.prop.shared, libc::MS_SHARED, "shared"),
            (s.prop.private, libc::MS_PRIVATE, "private"),
        ] {
            if on {
                mount_raw(None, t, None, bit, None)
                    .map_err(|e| e.at(&format!("making mount {} at {} {name}", s.mnt_id, s.at)))?;
            }
        }
        Ok(())
    }

    /// Once every task waits to resume: makes the yard the namespace's root (the old root
    /// detached), and takes criu back to its own namespace.
    ///
    /// # Errors
    /// [`MntError::Sys`] for a failed pivot (the tree is then in a namespace that still
    /// holds criu's mounts, and the restore fails).
    pub fn finish(&mut self) -> Result<(), MntError> {
        let yard = cstr(&self.yard.to_string_lossy())?;
        // SAFETY: chdir, pivot_root and umount2 on paths we own in criu's private copy of the
        // namespace (every mount there is private); the old root, stacked on the new one by
        // pivot_root(".", "."), is detached at once.
        unsafe {
            if libc::chdir(yard.as_ptr()) != 0 {
                return Err(sys("entering the mount yard"));
            }
            if libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) != 0 {
                return Err(sys("pivot_root into the restored root"));
            }
            if libc::umount2(c".".as_ptr(), libc::MNT_DETACH) != 0 {
                return Err(sys("detaching criu's root from the restored namespace"));
            }
        }
        self.leave()?;
        Ok(())
    }

    fn leave(&mut self) -> Result<(), MntError> {
        if self.left {
            return Ok(());
        }
        // SAFETY: setns into the namespace criu came from, by a descriptor it holds, then back
        // into its working directory (setns put it at the namespace's root).
        unsafe {
            if libc::setns(self.orig.as_raw_fd(), libc::CLONE_NEWNS) != 0 {
                return Err(sys("going back to criu's mount namespace"));
            }
            libc::fchdir(self.cwd.as_raw_fd());
        }
        self.left = true;
        let _ = std::fs::remove_dir(&self.yard);
        Ok(())
    }
}

impl Drop for MountNs {
    fn drop(&mut self) {
        if let Err(e) = self.leave() {
            tracing::error!(error = %e, "cannot leave the restored mount namespace");
        }
    }
}

/// The pty masters made for pty slaves bound elsewhere (runc binds the console's slave onto
/// `/dev/console`), by index, until the tty restore takes them ([`take_pts_master`]).
static PTS_MASTERS: std::sync::Mutex<Vec<(u32, OwnedFd)>> = std::sync::Mutex::new(Vec::new());

/// `DEVPTS_SUPER_MAGIC`.
const DEVPTS_MAGIC: i64 = 0x1cd1;

/// When `src` is the missing slave `N` of a devpts mounted in the yard (a bind of `/dev/pts/N`),
/// makes pty `N` there (masters are opened from its `ptmx` until the kernel hands out index
/// `N`) so that the bind finds its source; the master waits for the tty restore.
fn make_pts_slave(src: &Path) -> Result<(), Failed> {
    let (Some(dir), Some(index)) = (
        src.parent(),
        src.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok()),
    ) else {
        return Ok(());
    };
    if src.exists()
        || !nix::sys::statfs::statfs(dir).is_ok_and(|f| f.filesystem_type().0 == DEVPTS_MAGIC)
    {
        return Ok(());
    }
    let ptmx = CString::new(dir.join("ptmx").into_os_string().into_encoded_bytes())
        .map_err(|_| Failed(Errno::EINVAL))?;
    let mut extra = Vec::new();
    loop {
        if extra.len() > 4096 {
            return Err(Failed(Errno::EBUSY));
        }
        // SAFETY: opens a master from a NUL-terminated path we own.
        let r = unsafe {
            libc::open(
                ptmx.as_ptr(),
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            )
        };
        if r < 0 {
            return Err(Failed(Errno::last()));
        }
        // SAFETY: r is a new descriptor owned by nothing else.
        let m = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(r) };
        let mut n: libc::c_int = -1;
        // SAFETY: TIOCGPTN writes one int into a live local.
        if unsafe { libc::ioctl(r, libc::TIOCGPTN, &mut n as *mut libc::c_int) } != 0 {
            return Err(Failed(Errno::last()));
        }
        match u32::try_from(n) {
            Ok(i) if i == index => {
                tracing::debug!(index, devpts = %dir.display(), "made a pty for a bound slave");
                PTS_MASTERS
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((index, m));
                return Ok(());
            }
            Ok(i) if i < index => extra.push(m),
            _ => return Err(Failed(Errno::EBUSY)),
        }
    }
}

/// The master made for pty slave `index` of the restored mount namespace (a slave bound
/// elsewhere), if any: the tty restore sets it up instead of opening a new one.
pub fn take_pts_master(index: u32) -> Option<OwnedFd> {
    let mut m = PTS_MASTERS.lock().unwrap_or_else(|e| e.into_inner());
    let i = m.iter().position(|(n, _)| *n == index)?;
    Some(m.swap_remove(i).1)
}

/// A failed mount call, before it is told where.
struct Failed(Errno);

impl Failed {
    fn at(self, what: &str) -> MntError {
        MntError::Sys {
            what: what.to_string(),
            errno: self.0,
        }
    }
}

fn mount_raw(
    src: Option<&str>,
    target: &str,
    fs: Option<&str>,
    flags: u64,
    data: Option<&str>,
) -> Result<(), Failed> {
    let c = |s: &str| CString::new(s).map_err(|_| Failed(Errno::EINVAL));
    let src = src.map(c).transpose()?;
    let target = c(target)?;
    let fs = fs.map(c).transpose()?;
    let data = data.filter(|d| !d.is_empty()).map(c).transpose()?;
    let p = |s: &Option<CString>| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: mount(2) with NUL-terminated strings we own (or NULL) in criu's private copy of
    // the namespace.
    let r = unsafe {
        libc::mount(
            p(&src),
            target.as_ptr(),
            p(&fs),
            flags as libc::c_ulong,
            p(&data).cast(),
        )
    };
    if r != 0 {
        return Err(Failed(Errno::last()));
    }
    Ok(())
}

/// Mounts file system `fs` at `at` (a path of the namespace) from a helper thread whose root
/// is `yard` (its own fs information, `unshare(CLONE_FS)`), so that the paths in `data` are
/// looked up, and kept, as paths of the namespace.
fn mount_in_root(
    yard: &Path,
    src: &str,
    at: &str,
    fs: &str,
    flags: u64,
    data: &str,
) -> Result<(), Failed> {
    let yard =
        CString::new(yard.as_os_str().as_encoded_bytes()).map_err(|_| Failed(Errno::EINVAL))?;
    std::thread::scope(|sc| {
        sc.spawn(|| {
            // SAFETY: unshare of this helper thread's fs information, then chroot and chdir of
            // it alone (criu's other threads keep theirs); the thread ends after the mount.
            unsafe {
                if libc::unshare(libc::CLONE_FS) != 0
                    || libc::chroot(yard.as_ptr()) != 0
                    || libc::chdir(c"/".as_ptr()) != 0
                {
                    return Err(Failed(Errno::last()));
                }
            }
            mount_raw(Some(src), at, Some(fs), flags, Some(data))
        })
        .join()
        .unwrap_or(Err(Failed(Errno::EFAULT)))
    })
}

/// Applies per-mount flags to a mount (a bind remount: ro, nosuid, nodev, noexec, atime).
fn remount(target: &str, flags: u64) -> Result<(), Failed> {
    let keep = libc::MS_RDONLY
        | libc::MS_NOSUID
        | libc::MS_NODEV
        | libc::MS_NOEXEC
        | libc::MS_NOATIME
        | libc::MS_NODIRATIME
        | libc::MS_RELATIME
        | libc::MS_STRICTATIME;
    let f = flags & keep;
    if f & !(libc::MS_RELATIME) == 0 {
        return Ok(());
    }
    mount_raw(
        None,
        target,
        None,
        libc::MS_BIND | libc::MS_REMOUNT | f,
        None,
    )
}

/// Whether `target` is already a mount point of device `dev` (old encoding) made by
/// propagation: its device differs from its parent directory's and, for a file system that
/// keeps its numbers (not a fresh one), matches.
fn propagated_here(target: &Path, _dev: u32) -> bool {
    let (Ok(t), Some(Ok(p))) = (
        std::fs::metadata(target),
        target.parent().map(std::fs::metadata),
    ) else {
        return false;
    };
    // Only a mount point of its own shows another device than the directory above it. A
    // mount of the same file system (a bind of its own parent) is not recognised and made.
    t.dev() != p.dev()
}

fn tar_extract(tarball: &Path, into: &Path) -> Result<(), MntError> {
    let f = std::fs::File::open(tarball).map_err(|source| MntError::Io {
        what: format!("opening {}", tarball.display()),
        source,
    })?;
    let st = Command::new("tar")
        .args([
            "--extract",
            "--gzip",
            "--no-unquote",
            "--no-wildcards",
            "--directory",
        ])
        .arg(into)
        .stdin(f)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|source| MntError::Io {
            what: "running tar".into(),
            source,
        })?;
    if !st.success() {
        return Err(MntError::Tar {
            what: into.display().to_string(),
            status: st.to_string(),
        });
    }
    Ok(())
}

/// Dumps the tree's mount namespace when its root task (the first of `tasks`, each a pid with
/// its namespace inodes) has one of its own (not criu's, `own_ns`), as `ns_id`.
///
/// # Errors
/// [`MntError`]; a task of the tree in yet another mount namespace is refused by name.
pub(crate) fn dump_for_tree<'a>(
    mut tasks: impl Iterator<Item = (i32, &'a [(String, u64)])>,
    own_ns: &[(String, u64)],
    ns_id: Option<u32>,
    dir: &Path,
    external: &[External],
) -> Result<(), MntError> {
    let mnt = |ns: &[(String, u64)]| ns.iter().find(|(k, _)| k == "mnt").map(|n| n.1);
    let Some((root, root_ns)) = tasks.next() else {
        return Ok(());
    };
    let theirs = mnt(root_ns);
    if let Some((pid, _)) = tasks.find(|(_, ns)| mnt(ns) != theirs) {
        return Err(MntError::Plan(PlanError::OtherNamespace { pid }));
    }
    if theirs == mnt(own_ns) {
        return Ok(());
    }
    let ns_id = ns_id.ok_or(MntError::Plan(PlanError::Bad {
        id: 0,
        what: "the root task has no mount namespace id",
    }))?;
    dump(root, ns_id, dir, external).map(|_| ())
}
