//! Time namespaces: the monotonic and boot-time clocks (`timens-ID.img`, one `timens_entry`).
//!
//! As CRIU does, the image holds the namespace's clocks at dump time (criu's clock plus the
//! namespace's offsets from `/proc/PID/timens_offsets`), and the restore makes a namespace
//! whose clocks go on from there: offset = saved clock - this machine's clock now. The
//! namespace is made in criu's main thread (`unshare(CLONE_NEWTIME)` changes only which
//! namespace its next children enter), its offsets written before any process is in it, and
//! the engine enters it around the clone of the root.
// Unsafe code: unshare of the time namespace for children.
#![allow(unsafe_code)]

use std::os::fd::OwnedFd;

use criu_images::magic;
use criu_images::names;
use criu_images::pb::{TimensEntry, Timespec};
use nix::errno::Errno;
use nix::time::{ClockId, clock_gettime};

use super::{DumpCtx, Kind, NsError, NsOps, Rebuilt, RestoreCtx};

/// The time kind's operations.
pub(crate) static OPS: NsOps = NsOps {
    kind: Kind::Time,
    nested: false,
    dump,
    restore,
};

const K: Kind = Kind::Time;
const NSEC: i128 = 1_000_000_000;

/// A clock of criu's, in nanoseconds.
fn now(clock: ClockId) -> Result<i128, NsError> {
    let t = clock_gettime(clock).map_err(|e| NsError::sys(K, "clock_gettime", e))?;
    Ok(t.tv_sec() as i128 * NSEC + t.tv_nsec() as i128)
}

/// `/proc/PID/timens_offsets`: (monotonic, boottime) offsets in nanoseconds.
fn offsets(pid: &str) -> Result<(i128, i128), NsError> {
    let path = format!("/proc/{pid}/timens_offsets");
    let text =
        std::fs::read_to_string(&path).map_err(|e| NsError::io(K, format!("reading {path}"), e))?;
    let (mut mono, mut boot) = (0, 0);
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [name, sec, nsec] = f[..] else {
            continue;
        };
        let (Ok(sec), Ok(nsec)) = (sec.parse::<i64>(), nsec.parse::<i64>()) else {
            return Err(NsError::sys(K, format!("{path}: {line:?}"), Errno::EINVAL));
        };
        let v = sec as i128 * NSEC + nsec as i128;
        match name {
            "monotonic" | "1" => mono = v,
            "boottime" | "7" => boot = v,
            _ => {}
        }
    }
    Ok((mono, boot))
}

fn timespec(ns: i128) -> Timespec {
    let ns = ns.max(0);
    Timespec {
        tv_sec: (ns / NSEC) as u64,
        tv_nsec: (ns % NSEC) as u64,
    }
}

fn dump(ctx: &DumpCtx<'_>) -> Result<(), NsError> {
    let (mono, boot) = offsets(&ctx.pid.to_string())?;
    let e = TimensEntry {
        monotonic: timespec(now(ClockId::CLOCK_MONOTONIC)? + mono),
        boottime: timespec(now(ClockId::CLOCK_BOOTTIME)? + boot),
    };
    tracing::info!(id = ctx.id, mono_offset_ns = %mono, boot_offset_ns = %boot, "time namespace");
    let file = names::timens(ctx.id);
    criu_images::write_all(ctx.dir.join(&file), magic::TIMENS, [&e])
        .map_err(|er| NsError::image(K, file, er))
}

/// Splits nanoseconds into what `timens_offsets` takes (seconds, and 0..1e9 nanoseconds).
fn split(ns: i128) -> (i64, i64) {
    (ns.div_euclid(NSEC) as i64, ns.rem_euclid(NSEC) as i64)
}

fn restore(ctx: &RestoreCtx<'_>) -> Result<Rebuilt, NsError> {
    let file = names::timens(ctx.id);
    let e: TimensEntry = criu_images::read_single(ctx.dir.join(&file), magic::TIMENS)
        .map_err(|er| NsError::image(K, file.clone(), er))?;
    let ns = |t: &Timespec| {
        if t.tv_nsec >= NSEC as u64 || t.tv_sec > i64::MAX as u64 / 2 {
            return Err(NsError::bad(K, file.clone(), "clock out of range"));
        }
        Ok(t.tv_sec as i128 * NSEC + t.tv_nsec as i128)
    };
    let (mono_at_dump, boot_at_dump) = (ns(&e.monotonic)?, ns(&e.boottime)?);
    let own = std::fs::File::open("/proc/self/ns/time_for_children")
        .map_err(|er| NsError::io(K, "opening /proc/self/ns/time_for_children", er))?;
    // SAFETY: unshare(CLONE_NEWTIME) changes only which time namespace this thread's next
    // children enter; it is set back below.
    if unsafe { libc::unshare(libc::CLONE_NEWTIME) } != 0 {
        return Err(NsError::sys(K, "unshare(CLONE_NEWTIME)", Errno::last()));
    }
    let made = (|| -> Result<OwnedFd, NsError> {
        let mono = split(mono_at_dump - now(ClockId::CLOCK_MONOTONIC)?);
        let boot = split(boot_at_dump - now(ClockId::CLOCK_BOOTTIME)?);
        let text = format!(
            "{} {} {}\n{} {} {}\n",
            libc::CLOCK_MONOTONIC,
            mono.0,
            mono.1,
            libc::CLOCK_BOOTTIME,
            boot.0,
            boot.1
        );
        tracing::debug!(offsets = %text.replace('\n', "; "), "time namespace offsets");
        std::fs::write("/proc/self/timens_offsets", &text)
            .map_err(|er| NsError::io(K, format!("writing offsets {text:?}"), er))?;
        let fd = std::fs::File::open("/proc/self/ns/time_for_children")
            .map_err(|er| NsError::io(K, "opening the new time namespace", er))?;
        Ok(OwnedFd::from(fd))
    })();
    // Back to criu's own for children; the engine enters the new one around the clone.
    let back = super::setns(&own, K);
    let fd = made?;
    back?;
    Ok(Rebuilt {
        join: Some(fd),
        ..Rebuilt::default()
    })
}
