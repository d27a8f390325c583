//! The page the engine and the tasks of a tree synchronise through while the tree is created:
//! one slot of futex words per task and an abort slot, mapped shared before the first task is
//! cloned and inherited by all.
// Unsafe code: the futex page shared by all tasks of the restore (mapped, read and written through
// raw pointers).
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::error::RestoreError;
use super::layout::page_up;

/// The state one task shares with the engine and the other tasks while the tree is created
/// (one slot per task in a shared page; the words are futexes).
#[repr(C)]
#[derive(Debug, Default)]
pub struct SyncSlot {
    /// Set by the task once it exists (its pid is taken).
    pub born: AtomicU32,
    /// Set by the engine once it traces the task: it may go on.
    pub go: AtomicU32,
    /// Set by the task once it and all its descendants exist with their sessions and groups.
    pub created: AtomicU32,
    /// Set by the task when it failed before its restorer ran (then `stage`, `errno`,
    /// `detail` say why); in the slot after the last task: everybody gives up.
    pub failed: AtomicU32,
    /// The failed step.
    pub stage: AtomicU32,
    /// Its errno.
    pub errno: AtomicU32,
    /// The address, fd or pid involved.
    pub detail: AtomicU64,
    /// Set by the task once it has its session and group (members of its group wait for it).
    /// In the slot after the last task: the number of tasks born so far.
    pub grouped: AtomicU32,
    /// Set by a task that shares its parent's descriptor table or fs info once its own setup
    /// is over (the parent sets up the shared ones after that). In the slot after the last
    /// task: set by the engine once it opened the files that exist only with the tree (then
    /// `detail` there is the engine's pid, to take them from).
    pub settled: AtomicU32,
    /// Bytes of saved memory the task (and its fill helper) put in place so far: what the
    /// engine reports as the restore's progress.
    pub filled: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<SyncSlot>() == 48);

/// The shared slots: `n` tasks and the abort slot.
#[derive(Clone, Copy, Debug)]
pub struct Slots {
    /// Address of slot 0 in a shared mapping every task inherits.
    pub addr: u64,
    /// Number of tasks.
    pub n: usize,
}

impl Slots {
    /// Slot `i` (`i == n`: the abort slot).
    pub fn slot(&self, i: usize) -> &SyncSlot {
        assert!(i <= self.n);
        // SAFETY: the engine mapped n + 1 zeroed slots at `addr`, shared and never unmapped while
        // tasks run criu's code; every field is an atomic, so shared access is sound.
        unsafe { &*((self.addr as *const SyncSlot).add(i)) }
    }

    /// Whether someone gave up.
    pub fn aborted(&self) -> bool {
        self.slot(self.n).failed.load(Ordering::SeqCst) != 0
    }

    /// Makes everybody give up (waiters notice within their poll interval).
    pub fn abort(&self) {
        self.slot(self.n).failed.store(1, Ordering::SeqCst);
    }
}

/// Sets `word` and wakes whoever waits on it.
pub fn raise(word: &AtomicU32) {
    word.store(1, Ordering::SeqCst);
    wake(word);
}

/// Wakes whoever waits on `word`.
pub fn wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE on a live, aligned u32 in shared memory.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            0usize,
            0usize,
            0u32,
        );
    }
}

/// Waits up to `ms` milliseconds for `word` to become non-zero; returns whether it is.
pub fn wait_word(word: &AtomicU32, ms: i64) -> bool {
    if word.load(Ordering::SeqCst) != 0 {
        return true;
    }
    wait_change(word, 0, ms);
    word.load(Ordering::SeqCst) != 0
}

/// Waits up to `ms` milliseconds while `word` still holds `seen`.
pub fn wait_change(word: &AtomicU32, seen: u32, ms: i64) {
    let ts = libc::timespec {
        tv_sec: ms / 1000,
        tv_nsec: (ms % 1000) * 1_000_000,
    };
    // SAFETY: FUTEX_WAIT on a live, aligned u32 in shared memory with a live timeout.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            seen,
            &raw const ts,
            0usize,
            0u32,
        );
    }
}

/// The shared page of [`SyncSlot`]s.
pub struct SyncPage {
    addr: u64,
    len: u64,
    /// Number of tasks.
    pub n: usize,
}

impl SyncPage {
    /// Maps zeroed slots for `n` tasks and the abort slot.
    ///
    /// # Errors
    /// [`RestoreError::Sys`].
    pub fn new(n: usize) -> Result<SyncPage, RestoreError> {
        let len = page_up(((n + 1) * std::mem::size_of::<SyncSlot>()) as u64);
        // SAFETY: a fresh shared anonymous mapping (zeroed) wherever the kernel likes.
        let a = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if a == libc::MAP_FAILED {
            return Err(RestoreError::Sys {
                what: "mapping the tree's sync page",
                errno: nix::errno::Errno::last(),
            });
        }
        Ok(SyncPage {
            addr: a as u64,
            len,
            n,
        })
    }

    /// The slots.
    pub fn slots(&self) -> Slots {
        Slots {
            addr: self.addr,
            n: self.n,
        }
    }
}

impl Drop for SyncPage {
    fn drop(&mut self) {
        // SAFETY: the mapping made in new(); the borrows of Slots end with self.
        unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len as usize) };
    }
}
