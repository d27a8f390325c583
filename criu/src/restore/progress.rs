//! The restore's progress, pages restored out of pages to restore, for the sink the binary
//! installs ([`crate::stats::set_progress`], the same meter a dump reports through): the tasks
//! count the bytes they put in place in their sync slots ([`super::sync::SyncSlot::filled`]),
//! and a thread of the engine adds them up every few milliseconds while the tree is created.
//! The thread ends once every task is ready, before criu goes back to its own mount namespace
//! (which a process with more than one thread cannot enter).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::sync::Slots;
use crate::stats::ProgressMeter;

/// How often the slots are read.
const EVERY: Duration = Duration::from_millis(20);

/// The thread reading the slots; stopped (after a last reading) when dropped.
pub(super) struct Watch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Starts reporting the progress of filling `total` bytes into the tree of `root`, when a sink
/// is installed and the tree is big enough ([`crate::stats::PROGRESS_MIN_BYTES`]). The
/// [`super::sync::SyncPage`] behind `slots` must outlive the returned [`Watch`].
pub(super) fn watch(slots: Slots, root: i32, total: u64) -> Option<Watch> {
    let mut meter = ProgressMeter::restoring(root, total)?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = Arc::clone(&stop);
    let read = move || -> u64 {
        (0..slots.n)
            .map(|i| slots.slot(i).filled.load(Ordering::Relaxed))
            .sum::<u64>()
            .min(total)
    };
    // The thread takes every signal blocked: SIGCHLD of the tracees, the signalfd the engine
    // waits on and the engine's own handlers stay with the engine's thread.
    let all = nix::sys::signal::SigSet::all();
    let old = all
        .thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK)
        .ok()?;
    let thread = std::thread::Builder::new()
        .name("restore-progress".into())
        .spawn(move || {
            let mut seen = 0;
            loop {
                let last = stopping.load(Ordering::SeqCst);
                let now = read();
                if now > seen {
                    meter.add(now - seen);
                    seen = now;
                }
                if last || seen >= total {
                    break;
                }
                std::thread::park_timeout(EVERY);
            }
        });
    let _ = old.thread_set_mask();
    match thread {
        Ok(t) => Some(Watch {
            stop,
            thread: Some(t),
        }),
        Err(e) => {
            tracing::debug!("no progress thread: {e}");
            None
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}
