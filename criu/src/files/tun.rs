//! `/dev/net/tun` descriptors attached to a tun or tap device (`TUNF` entries, CRIU's
//! `TunfileEntry`: the device's name).
//!
//! Dump: the device from fdinfo's `iff:` line (a descriptor not attached to any is refused by
//! name, and so is one in criu's own network namespace, where no link is saved). The device itself is dumped with the network namespace's links
//! ([`crate::namespaces::net`]), persistent or not (`IFF_PERSIST` in its flags). Restore: the
//! network namespace made the device again, persistent; the task opens `/dev/net/tun` and
//! attaches with `TUNSETIFF` and the device's saved flags; a device that was not persistent
//! (held only by the tree's descriptors) is made so again with `TUNSETPERSIST 0`, so that it goes
//! away with its last descriptor as before.
// Unsafe code: open and the tun ioctls inside the new task.
#![allow(unsafe_code)]

use std::sync::Arc;

use criu_images::pb::{FdTypes, FileEntry, NetDeviceEntry, TunfileEntry};

use super::{DumpFd, Ends, FileKind, ImageCtx, Parsed, RestoreFile, TaskError, check, made_with};
use crate::dump::error::DumpError;
use crate::restore::images::entry::kind_entry;

/// `IFF_PERSIST` in a tun link's saved flags.
pub const IFF_PERSIST: u32 = 0x800;
/// The flags `TUNSETIFF` takes (type, `IFF_NO_PI`, `IFF_VNET_HDR`, `IFF_MULTI_QUEUE`).
const SETIFF_FLAGS: u32 = 0x1 | 0x2 | 0x100 | 0x1000 | 0x4000;
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;

/// The tun file kind.
#[derive(Debug, Default)]
pub struct Tun;

impl FileKind for Tun {
    fn fd_type(&self) -> FdTypes {
        FdTypes::Tunf
    }

    fn claims(&self, fd: &DumpFd<'_>) -> bool {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        fd.name == "/dev/net/tun"
            && fd.meta.file_type().is_char_device()
            && (libc::major(fd.meta.rdev()), libc::minor(fd.meta.rdev())) == (10, 200)
    }

    fn dump(&mut self, fd: &DumpFd<'_>, id: u32) -> Result<FileEntry, DumpError> {
        let text = fd.fdinfo_text()?;
        let dev = text
            .field("iff")
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .ok_or_else(|| text.bad("/dev/net/tun (attached to no device)", "iff"))?
            .to_string();
        // The device is saved with the links of a network namespace of the tree's own; in
        // criu's namespace nothing would make it again (CRIU refuses this at dump too).
        let ns = |who: String| std::fs::read_link(format!("/proc/{who}/ns/net")).ok();
        if ns(fd.pid.to_string()).is_some_and(|n| Some(n) == ns("self".into())) {
            return Err(DumpError::FileState {
                kind: "tun",
                what: format!(
                    "fd {} of {}: /dev/net/tun attached to {dev} in criu's own network namespace \
                     (a tun or tap device is dumped only with a network namespace of the \
                     tree's own)",
                    fd.fd, fd.pid
                ),
            });
        }
        Ok(FileEntry {
            id,
            r#type: FdTypes::Tunf as i32,
            tunf: Some(TunfileEntry {
                id,
                netdev: Some(dev),
                detached: None,
                ns_id: None,
            }),
            ..FileEntry::default()
        })
    }

    fn parse(&mut self, img: &ImageCtx<'_>, e: &FileEntry, fd: i32) -> Parsed {
        let e = kind_entry(&e.tunf, fd, "tun")?;
        let name = e.netdev.clone().unwrap_or_default();
        // The device's saved flags, from the network namespace's links.
        let mut flags = None;
        let dir = img.dir.file("inventory.img");
        if let Some(d) = dir.parent().and_then(|d| std::fs::read_dir(d).ok()) {
            for f in d.flatten() {
                let n = f.file_name().to_string_lossy().into_owned();
                if !(n.starts_with("netdev-") && n.ends_with(".img")) {
                    continue;
                }
                let devs: Vec<NetDeviceEntry> =
                    criu_images::read_all(f.path(), criu_images::magic::NETDEV).unwrap_or_default();
                if let Some(t) = devs
                    .iter()
                    .find(|x| x.name == name)
                    .and_then(|x| x.tun.as_ref())
                {
                    flags = Some(t.flags);
                }
            }
        }
        let flags = flags.ok_or_else(|| crate::restore::error::RestoreError::BadImage {
            file: "files.img".into(),
            reason: format!(
                "fd {fd}: /dev/net/tun attached to {name}, which no netdev image holds"
            ),
        })?;
        Ok(Arc::new(TunFile { name, flags }))
    }
}

/// A `/dev/net/tun` descriptor to attach again.
#[derive(Debug)]
pub struct TunFile {
    /// The device.
    pub name: String,
    /// Its saved tun flags (with `IFF_PERSIST` when it was persistent).
    pub flags: u32,
}

impl RestoreFile for TunFile {
    fn fd_type(&self) -> FdTypes {
        FdTypes::Tunf
    }

    fn make_in_task(&self, fd: i32) -> Result<Ends, TaskError> {
        let d = fd as u64;
        // SAFETY: all-zero is a valid ifreq.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, c) in ifr.ifr_name.iter_mut().zip(self.name.bytes().take(15)) {
            *dst = c as libc::c_char;
        }
        ifr.ifr_ifru.ifru_flags = (self.flags & SETIFF_FLAGS) as i16;
        // SAFETY: opens the tun device from a static NUL-terminated path.
        let t = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        made_with(t as _, fd, |t| {
            // SAFETY: the tun ioctls on the descriptor made here, reading a live ifreq.
            unsafe {
                check(libc::ioctl(t, TUNSETIFF, &ifr) as _, d)?;
                if self.flags & IFF_PERSIST == 0 {
                    check(libc::ioctl(t, TUNSETPERSIST, 0) as _, d)?;
                }
            }
            Ok(())
        })
    }
}
