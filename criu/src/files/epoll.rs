//! epoll instances (`EVENTPOLL` entries) and what they watch.
//!
//! Dump: the `tfd:` lines of fdinfo (target descriptor, events, data). Restore: made in the
//! task after its targets ([`RestoreFile::after_fds`]), each target added with its events and
//! data.
// Unsafe code: makes the epoll instance and adds its targets with raw system calls inside the new
// task.
#![allow(unsafe_code)]

use std::sync::Arc;

use criu_images::names;
use criu_images::pb::{EventpollFileEntry, EventpollTfdEntry, FdTypes, FileEntry};

use super::{
    DumpFd, Ends, FileKind, ImageCtx, Parsed, RestoreFile, TaskError, check, fown_zero, made_with,
};
use crate::dump::error::DumpError;
use crate::restore::error::RestoreError;
use crate::restore::images::entry::{bad, kind_entry};

/// The epoll kind.
#[derive(Debug, Default)]
pub struct Epoll;

impl FileKind for Epoll {
    fn fd_type(&self) -> FdTypes {
        FdTypes::Eventpoll
    }

    fn claims(&self, fd: &DumpFd<'_>) -> bool {
        fd.name == "anon_inode:[eventpoll]"
    }

    fn dump(&mut self, fd: &DumpFd<'_>, id: u32) -> Result<FileEntry, DumpError> {
        let text = fd.fdinfo_text()?;
        let mut tfds = Vec::new();
        // The task's descriptors, to find each target by its file (listed once, when needed).
        let mut held: Option<Vec<i32>> = None;
        // The numbers targets were added under, so far (`toff` tells same numbers apart).
        let mut added: Vec<u32> = Vec::new();
        for l in text.text.lines().filter(|l| l.starts_with("tfd:")) {
            // tfd: N events: HEX data: HEX  pos:N ino:HEX sdev:HEX
            let words: Vec<&str> = l.split_whitespace().collect();
            let after = |k: &str| {
                words
                    .iter()
                    .position(|w| *w == k)
                    .and_then(|i| words.get(i + 1).copied())
            };
            let inline = |k: &str| words.iter().find_map(|w| w.strip_prefix(k));
            let tfd = after("tfd:").and_then(|v| v.parse::<u32>().ok());
            let events = after("events:").and_then(|v| u32::from_str_radix(v, 16).ok());
            let data = after("data:").and_then(|v| u64::from_str_radix(v, 16).ok());
            let (Some(tfd), Some(events), Some(data)) = (tfd, events, data) else {
                return Err(text.bad("[eventpoll]", "an epoll target"));
            };
            // A target is its file, not the number it was added under (since closed, or now
            // another file): it is saved as a descriptor holding that file now.
            let toff = added.iter().filter(|&&t| t == tfd).count() as u32;
            added.push(tfd);
            let tfd = if same_target(fd.pid, fd.fd, tfd, toff, tfd as i32) {
                tfd
            } else {
                let fds = match &mut held {
                    Some(f) => f,
                    None => held.insert(
                        crate::dump::proc::list_fds(fd.pid)?
                            .into_iter()
                            .map(|(n, _)| n)
                            .collect(),
                    ),
                };
                let found = fds
                    .iter()
                    .copied()
                    .find(|&n| n != fd.fd && same_target(fd.pid, fd.fd, tfd, toff, n));
                match found {
                    Some(n) => n as u32,
                    None => {
                        return Err(DumpError::EpollTarget {
                            pid: fd.pid,
                            fd: fd.fd,
                            target: tfd,
                        });
                    }
                }
            };
            tfds.push(EventpollTfdEntry {
                id,
                tfd,
                events,
                data,
                dev: inline("sdev:").and_then(|v| u32::from_str_radix(v, 16).ok()),
                inode: inline("ino:").and_then(|v| u64::from_str_radix(v, 16).ok()),
                pos: inline("pos:").and_then(|v| v.parse().ok()),
            });
        }
        Ok(FileEntry {
            id,
            r#type: FdTypes::Eventpoll as i32,
            epfd: Some(EventpollFileEntry {
                id,
                flags: fd.flags(),
                fown: fown_zero(),
                tfd: tfds,
            }),
            ..FileEntry::default()
        })
    }

    fn parse(&mut self, _img: &ImageCtx<'_>, e: &FileEntry, fd: i32) -> Parsed {
        let e = kind_entry(&e.epfd, fd, "epoll")?;
        let mut targets = Vec::with_capacity(e.tfd.len());
        for t in &e.tfd {
            let tfd = i32::try_from(t.tfd)
                .map_err(|_| bad(names::FILES, format!("fd {fd}: epoll target")))?;
            targets.push(EpollTarget {
                fd: tfd,
                events: t.events,
                data: t.data,
            });
        }
        Ok(Arc::new(EpollFile::new(
            e.flags as i32 & libc::O_NONBLOCK,
            targets,
        )))
    }
}

/// Whether the file of descriptor `n` of `pid` is the target epoll `epfd` of `pid` watches as
/// (`tfd`, `toff`) (`KCMP_EPOLL_TFD`).
fn same_target(pid: i32, epfd: i32, tfd: u32, toff: u32, n: i32) -> bool {
    /// `struct kcmp_epoll_slot`.
    #[repr(C)]
    struct Slot {
        efd: u32,
        tfd: u32,
        toff: u32,
    }
    const KCMP_EPOLL_TFD: libc::c_long = 7;
    let slot = Slot {
        efd: epfd as u32,
        tfd,
        toff,
    };
    // SAFETY: kcmp reads a live kcmp_epoll_slot and touches no other memory of ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid as libc::c_long,
            pid as libc::c_long,
            KCMP_EPOLL_TFD,
            n as libc::c_long,
            &slot as *const Slot,
        )
    };
    r == 0
}

/// One descriptor an epoll instance watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpollTarget {
    /// The watched descriptor (of the same task).
    pub fd: i32,
    /// `EPOLL*` events.
    pub events: u32,
    /// The data returned with its events.
    pub data: u64,
}

/// An epoll instance to make again, after every descriptor it watches.
#[derive(Debug)]
pub struct EpollFile {
    /// File status flags.
    pub flags: i32,
    /// What it watches.
    pub targets: Vec<EpollTarget>,
    /// The watched descriptors ([`RestoreFile::after_fds`]).
    target_fds: Vec<i32>,
}

impl EpollFile {
    /// An epoll instance with status flags `flags` watching `targets`.
    pub fn new(flags: i32, targets: Vec<EpollTarget>) -> EpollFile {
        let target_fds = targets.iter().map(|t| t.fd).collect();
        EpollFile {
            flags,
            targets,
            target_fds,
        }
    }
}

impl RestoreFile for EpollFile {
    fn fd_type(&self) -> FdTypes {
        FdTypes::Eventpoll
    }

    fn after_fds(&self) -> &[i32] {
        &self.target_fds
    }

    fn engine_targets(&self) -> &[i32] {
        &self.target_fds
    }

    /// Shared by several processes, an instance is made by the engine after its targets
    /// ([`RestoreFile::make_in_engine_with`]); without them only one that watches nothing.
    fn make_in_engine(&self) -> Result<Vec<std::os::fd::OwnedFd>, RestoreError> {
        if !self.targets.is_empty() {
            return Err(RestoreError::SharedEpoll);
        }
        self.make_in_engine_with(&[])
    }

    /// Made by the engine for several processes: each target is added through the engine's
    /// descriptor of its file (`targets`, in the order of [`EpollFile::targets`]).
    fn make_in_engine_with(
        &self,
        targets: &[i32],
    ) -> Result<Vec<std::os::fd::OwnedFd>, RestoreError> {
        if targets.len() != self.targets.len() {
            return Err(RestoreError::SharedEpoll);
        }
        let fail = |e: TaskError| RestoreError::Sys {
            what: "making a shared epoll instance",
            errno: nix::errno::Errno::from_raw(e.errno),
        };
        // SAFETY: epoll_create1 takes flags only.
        let t = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        let made = made_with(t as _, -1, |t| {
            // SAFETY: fcntl/epoll_ctl on the instance made here and on descriptors the engine
            // holds, with live locals.
            unsafe {
                if self.flags != 0 {
                    check(libc::fcntl(t, libc::F_SETFL, self.flags) as _, t as u64)?;
                }
                for (tg, &efd) in self.targets.iter().zip(targets) {
                    let mut ev = libc::epoll_event {
                        events: tg.events,
                        u64: tg.data,
                    };
                    let r = libc::epoll_ctl(t, libc::EPOLL_CTL_ADD, efd, &mut ev);
                    check(r as _, tg.fd as u64)?;
                }
            }
            Ok(())
        })
        .map_err(fail)?;
        Ok(vec![super::owned(made.fds[0])])
    }

    fn make_in_task(&self, fd: i32) -> Result<Ends, TaskError> {
        let d = fd as u64;
        // SAFETY: epoll_create1 takes flags only.
        let t = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        made_with(t as _, fd, |t| {
            // SAFETY: fcntl/epoll_ctl on the instance made here, with live locals.
            unsafe {
                if self.flags != 0 {
                    check(libc::fcntl(t, libc::F_SETFL, self.flags) as _, d)?;
                }
                for tg in &self.targets {
                    let mut ev = libc::epoll_event {
                        events: tg.events,
                        u64: tg.data,
                    };
                    let r = libc::epoll_ctl(t, libc::EPOLL_CTL_ADD, tg.fd, &mut ev);
                    check(r as _, tg.fd as u64)?;
                }
            }
            Ok(())
        })
    }
}
