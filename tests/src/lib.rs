//! Helpers shared by the integration tests: a process-wide lock, a subreaper, victim processes
//! that are always reaped, skip macros that say why, running code as an unprivileged user, and
//! the dump/restore round trips every criu test file builds on.
//!
//! Layer: test support (not shipped). Every test that forks, ptraces or changes process-wide
//! state takes [`test_lock`] first, so that the tests of one test binary run one at a time where
//! it matters. Everything is re-exported at the crate root; the modules group it:
//!
//! - `process`: [`test_lock`], [`become_subreaper`], waiting for and reaping by pid
//!   ([`wait_exit`]), [`Victim`] (piped stdio), `/proc` queries ([`status_field`], [`fdinfo`],
//!   [`stat_ids`], [`tty_nr`], [`read_mem`], ...), running as another user, where binaries are
//!   ([`bin_path`], [`workspace_bin`]).
//! - `criu_cmd`: running the `criu` binary ([`criu()`], [`criu_dump`], [`restore_detached`],
//!   [`restore_d`], [`restore_in_background`], [`wait_resumed`]), [`Spawned`] (a victim for
//!   criu, killed and reaped on drop), [`Scratch`] (a test's image dir, ready file and victim
//!   log) with [`Scratch::round_trip`], [`restore_and_check`] (restore, let the victim check
//!   itself on `SIGUSR1`, expect `check ok`), [`ready_numbers`], [`criu_victim`], [`open_dir`].
//! - `fixtures`: CRIU 4.2's fixture images ([`fixtures_dir`], [`FixtureBinary`],
//!   [`fixture_usable`], [`detached`] restore options, [`copy_dir`]) and [`OwnTmpfs`].
//! - `avx`: the vector-register patterns of the AVX victims.
//! - `netns`: [`in_netns`], a network namespace of the test's own (loopback only).
//!
//! A test file for a new kind of file or state copies this shape (one file per feature under
//! `tests/tests/`, a victim `criu-victim-WHAT` under `src/bin/` that writes `ready PID ...` and
//! answers `SIGUSR1` with `check ok` in `READY.2`):
//!
//! ```no_run
//! use std::time::Duration;
//! use compel_criu_tests::{Scratch, become_subreaper, criu_victim, skip_if_not_root, test_lock};
//!
//! fn my_kind_comes_back() {
//!     skip_if_not_root!("my_kind_comes_back");
//!     let _g = test_lock();
//!     become_subreaper();
//!     let dir = Scratch::new();
//!     dir.round_trip(
//!         &criu_victim("my-kind"),
//!         &[dir.ready.to_str().unwrap()],
//!         Duration::from_secs(10),
//!         Duration::from_millis(50),
//!     );
//! }
//! ```
//!
//! A victim with piped stdio, for compel:
//!
//! ```no_run
//! use compel_criu_tests::{Victim, become_subreaper, test_lock};
//! use std::time::Duration;
//!
//! let _guard = test_lock();
//! become_subreaper();
//! let mut victim = Victim::spawn("/path/to/victim-busy", &[]).unwrap();
//! let line = victim.expect_line("ready", Duration::from_secs(5)).unwrap();
//! println!("victim {} said {line}", victim.pid());
//! // ... act on victim.pid() ...
//! // Dropping the guard kills and reaps the victim if it still runs.
//! ```
// Unsafe code is refused except in the modules that opt in and say why.
#![deny(unsafe_code)]

mod avx;
pub mod c_host;
pub mod cgroups;
mod criu_cmd;
mod daemon;
mod fixtures;
pub mod fuzz_ns;
mod hugepool;
pub mod image_gen;
pub mod mnt_ns;
pub mod mounts;
mod netns;
mod process;
pub mod pty;
pub mod rng;
pub mod rpc_fuzz;
pub mod rpc_service;
pub mod runc;
mod swrk;
pub mod tls_certs;
pub mod victim;

pub use avx::*;
pub use criu_cmd::*;
pub use daemon::{CriuDaemon, free_port};
pub use fixtures::*;
pub use hugepool::HugePool;
pub use netns::in_netns;
pub use process::*;
pub use pty::{pty, talk};
pub use swrk::{Swrk, recv_resp, req, swrk_once};

/// Skips the rest of the current test (returns from it) unless running as root, printing why.
#[macro_export]
macro_rules! skip_if_not_root {
    ($name:expr) => {
        if !$crate::is_root() {
            eprintln!("skipped {}: needs root (effective uid 0)", $name);
            return;
        }
    };
}

/// Skips the rest of the current test (returns from it) unless `cond` holds, printing `why`.
///
/// ```ignore
/// skip_unless!(compel_arch::cpu_has_avx512f(), "the CPU has no AVX-512F");
/// ```
#[macro_export]
macro_rules! skip_unless {
    ($cond:expr, $($why:tt)+) => {
        if !$cond {
            eprintln!("skipped: {}", format_args!($($why)+));
            return;
        }
    };
}
