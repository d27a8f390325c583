//! timerfd (`TIMERFD` entries): clock, flags, expirations not read yet, and its setting.
//!
//! Dump: `clockid`, `ticks`, `settime flags`, `it_value`, `it_interval` from fdinfo (the value
//! is the time left, relative even for an absolute timer). Restore: made in the task and armed
//! again (an absolute timer at now plus the time that was left), its ticks set with
//! `TFD_IOC_SET_TICKS`.
// Unsafe code: makes the timerfd and sets it with raw system calls inside the new task.
#![allow(unsafe_code)]

use std::sync::Arc;

use criu_images::names;
use criu_images::pb::{FdTypes, FileEntry, TimerfdEntry};

use super::{
    DumpFd, Ends, FileKind, ImageCtx, Parsed, RestoreFile, TaskError, check, fown_zero, made_with,
};
use crate::dump::error::DumpError;
use crate::restore::images::entry::{bad, kind_entry};

/// The timerfd kind.
#[derive(Debug, Default)]
pub struct TimerFd;

impl FileKind for TimerFd {
    fn fd_type(&self) -> FdTypes {
        FdTypes::Timerfd
    }

    fn claims(&self, fd: &DumpFd<'_>) -> bool {
        fd.name == "anon_inode:[timerfd]"
    }

    fn dump(&mut self, fd: &DumpFd<'_>, id: u32) -> Result<FileEntry, DumpError> {
        let text = fd.fdinfo_text()?;
        let bad = |what: &str| text.bad("[timerfd]", what);
        let num = |k: &str| text.field(k).and_then(|v| v.parse::<u64>().ok());
        let pair = |k: &str| -> Option<(u64, u64)> {
            let v = text.field(k)?.trim_start_matches('(').trim_end_matches(')');
            let (a, b) = v.split_once(',')?;
            Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
        };
        let (vsec, vnsec) = pair("it_value").ok_or_else(|| bad("it_value"))?;
        let (isec, insec) = pair("it_interval").ok_or_else(|| bad("it_interval"))?;
        Ok(FileEntry {
            id,
            r#type: FdTypes::Timerfd as i32,
            tfd: Some(TimerfdEntry {
                id,
                flags: fd.flags(),
                fown: fown_zero(),
                clockid: num("clockid").ok_or_else(|| bad("clockid"))? as u32,
                ticks: num("ticks").ok_or_else(|| bad("ticks"))?,
                settime_flags: text
                    .field("settime flags")
                    .and_then(|v| u32::from_str_radix(v, 8).ok())
                    .ok_or_else(|| bad("settime flags"))?,
                vsec,
                vnsec,
                isec,
                insec,
            }),
            ..FileEntry::default()
        })
    }

    fn parse(&mut self, _img: &ImageCtx<'_>, e: &FileEntry, fd: i32) -> Parsed {
        let e = kind_entry(&e.tfd, fd, "timerfd")?;
        if e.vnsec >= 1_000_000_000 || e.insec >= 1_000_000_000 {
            return Err(bad(names::FILES, format!("fd {fd}: timerfd nanoseconds")));
        }
        let interval = Timespec {
            sec: e.isec as i64,
            nsec: e.insec as i64,
        };
        let mut value = Timespec {
            sec: e.vsec as i64,
            nsec: e.vnsec as i64,
        };
        // A periodic timer that fired and was not read yet is not running (the kernel moves it
        // on when it is read): it shows no time left, only its ticks. It goes on one interval
        // from now.
        if value == Timespec::default() && interval != Timespec::default() && e.ticks != 0 {
            value = interval;
        }
        Ok(Arc::new(TimerFdFile {
            clock: e.clockid as i32,
            flags: e.flags as i32 & libc::O_NONBLOCK,
            ticks: e.ticks,
            settime_flags: e.settime_flags as i32,
            value,
            interval,
        }))
    }
}

/// A time as seconds and nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timespec {
    /// Seconds.
    pub sec: i64,
    /// Nanoseconds (below one second).
    pub nsec: i64,
}

/// A timerfd to make again.
#[derive(Debug)]
pub struct TimerFdFile {
    /// `CLOCK_*`.
    pub clock: i32,
    /// File status flags (`O_NONBLOCK`).
    pub flags: i32,
    /// Expirations not read yet.
    pub ticks: u64,
    /// `TFD_TIMER_*` flags it was set with.
    pub settime_flags: i32,
    /// Time left until the next expiration, relative even when the timer was set with an
    /// absolute time.
    pub value: Timespec,
    /// Interval.
    pub interval: Timespec,
}

/// `TFD_IOC_SET_TICKS`: `_IOW('T', 0, u64)`.
const TFD_IOC_SET_TICKS: libc::c_ulong = 0x4008_5400;

impl TimerFdFile {
    /// Arms the new timer `t` and sets its ticks.
    fn arm(&self, t: i32, d: u64) -> Result<(), TaskError> {
        let (value, interval) = (self.value, self.interval);
        // SAFETY: clock_gettime, timerfd_settime and ioctl with live locals on the timer this
        // task just made.
        unsafe {
            if value.sec != 0 || value.nsec != 0 {
                let mut at = libc::timespec {
                    tv_sec: value.sec,
                    tv_nsec: value.nsec,
                };
                if self.settime_flags & libc::TFD_TIMER_ABSTIME != 0 {
                    // Set with an absolute time (and maybe TFD_TIMER_CANCEL_ON_SET, which
                    // needs one): now on its clock plus the time that was left.
                    let mut now: libc::timespec = std::mem::zeroed();
                    let r = libc::clock_gettime(self.clock, &mut now);
                    check(r as _, d)?;
                    at.tv_sec += now.tv_sec;
                    at.tv_nsec += now.tv_nsec;
                    if at.tv_nsec >= 1_000_000_000 {
                        at.tv_sec += 1;
                        at.tv_nsec -= 1_000_000_000;
                    }
                }
                let spec = libc::itimerspec {
                    it_interval: libc::timespec {
                        tv_sec: interval.sec,
                        tv_nsec: interval.nsec,
                    },
                    it_value: at,
                };
                let r = libc::timerfd_settime(t, self.settime_flags, &spec, std::ptr::null_mut());
                check(r as _, d)?;
            }
            if self.ticks != 0 {
                let r = libc::ioctl(t, TFD_IOC_SET_TICKS as _, &self.ticks as *const u64);
                check(r as _, d)?;
            }
        }
        Ok(())
    }
}

impl RestoreFile for TimerFdFile {
    fn fd_type(&self) -> FdTypes {
        FdTypes::Timerfd
    }

    fn make_in_task(&self, fd: i32) -> Result<Ends, TaskError> {
        // SAFETY: timerfd_create makes a new descriptor; no memory is passed.
        let t = unsafe { libc::timerfd_create(self.clock, libc::TFD_CLOEXEC | self.flags) };
        made_with(t as _, fd, |t| self.arm(t, fd as u64))
    }
}
