//! Bounded, adaptive busy waiting for events that usually come within microseconds: a ptrace
//! stop after a resume, a parasite's answer after a command.
//!
//! Blocking in `waitpid` or `poll` lets this CPU go idle; on a virtual machine whose idle CPUs
//! halt at once (no guest halt polling), waking it again when the event comes costs a round
//! trip through the hypervisor, about 20 us here, and a cross-CPU ptrace round trip pays one
//! such wake on each side. So a wait first checks without blocking, yielding the CPU between
//! checks (a victim on this same CPU still runs), for at most [`budget`] (100 us by default,
//! `COMPEL_SPIN_US` in the environment sets it, 0 turns spinning off), then blocks as before.
//!
//! Spinning only pays while events do come that fast. When the machine is loaded (the task
//! waits for a CPU) or the waits are for slow events, every spin is wasted CPU that others
//! need; so after [`MISSES_OFF`] spins in a row that ended without the event, only one wait
//! in [`RETRY_EVERY`] spins (to notice when things are fast again) until one succeeds.
// Unsafe code: sched_yield between spins.
#![allow(unsafe_code)]

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The default time a wait spins before it blocks.
const DEFAULT_US: u64 = 100;

/// Spins in a row without the event after which spinning mostly stops.
const MISSES_OFF: u32 = 4;

/// While spinning is mostly off, one wait in this many still spins.
const RETRY_EVERY: u32 = 16;

/// Spins in a row that ended without the event (saturating), and waits since spinning went off.
static MISSES: AtomicU32 = AtomicU32::new(0);
static SKIPPED: AtomicU32 = AtomicU32::new(0);

/// How long a wait spins before it blocks (read once from `COMPEL_SPIN_US`).
pub(crate) fn budget() -> Duration {
    static BUDGET: OnceLock<Duration> = OnceLock::new();
    *BUDGET.get_or_init(|| {
        let us = std::env::var("COMPEL_SPIN_US")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(DEFAULT_US);
        Duration::from_micros(us)
    })
}

/// Calls `ready` until it returns `Some` or the budget is spent (then `None`), yielding the
/// CPU between calls. Returns `None` at once while spinning is off (see the module docs).
pub(crate) fn spin<T>(mut ready: impl FnMut() -> Option<T>) -> Option<T> {
    let budget = budget();
    if budget.is_zero() {
        return None;
    }
    if MISSES.load(Ordering::Relaxed) >= MISSES_OFF
        && !SKIPPED
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(RETRY_EVERY)
    {
        return ready();
    }
    let start = Instant::now();
    loop {
        if let Some(v) = ready() {
            MISSES.store(0, Ordering::Relaxed);
            return Some(v);
        }
        if start.elapsed() >= budget {
            let _ = MISSES.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| {
                Some(m.saturating_add(1))
            });
            return None;
        }
        // SAFETY: sched_yield takes no arguments and cannot fail in a way that matters here.
        unsafe { libc::sched_yield() };
    }
}
