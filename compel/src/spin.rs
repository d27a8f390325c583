//! Bounded busy waiting for events that usually come within microseconds: a ptrace stop after
//! a resume, a parasite's answer after a command.
//!
//! Blocking in `waitpid` or `poll` lets this CPU go idle; on a virtual machine whose idle CPUs
//! halt at once (no guest halt polling), waking it again when the event comes costs a round
//! trip through the hypervisor, about 20 us here, and a cross-CPU ptrace round trip pays one
//! such wake on each side. So a wait first checks without blocking, yielding the CPU between
//! checks (a victim on this same CPU still runs), for at most [`budget`] (200 us by default,
//! `COMPEL_SPIN_US` in the environment sets it, 0 turns spinning off), then blocks as before.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The default time a wait spins before it blocks.
const DEFAULT_US: u64 = 200;

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
/// CPU between calls.
pub(crate) fn spin<T>(mut ready: impl FnMut() -> Option<T>) -> Option<T> {
    let budget = budget();
    if budget.is_zero() {
        return None;
    }
    let start = Instant::now();
    loop {
        if let Some(v) = ready() {
            return Some(v);
        }
        if start.elapsed() >= budget {
            return None;
        }
        // SAFETY: sched_yield takes no arguments and cannot fail in a way that matters here.
        unsafe { libc::sched_yield() };
    }
}
