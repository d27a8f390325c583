//! Code linked into parasites (layer: above `compel-arch`, `no_std`): [`std`], [`fds`],
//! [`shmem`].
//!
//! - [`std`]: raw system calls ([`std::sys`]), the log channel to the host ([`log!`]),
//!   `memcpy`/`memset`/`memcmp`/`str*`, the service loop the host talks to, and the entry stub
//!   `__export_parasite_head` that starts it all and returns into the task with `rt_sigreturn`.
//! - [`fds`]: pass file descriptors to and from the host over the control socket.
//! - [`shmem`]: a memory region shared with the host.
//!
//! The symbols that only make sense inside a parasite (the entry stub, the C memory functions,
//! the panic handler, the C API of the plugins) exist only when the crate is compiled with
//! `--cfg compel_parasite`, which compel's builder sets. Compiled as an ordinary host crate,
//! this is a plain library that defines none of them, so it cannot clash with the C library.
//!
//! A parasite is a `#![no_std]` crate that names its command handler:
//!
//! ```no_run
//! // In the parasite crate (`#![no_std]`, built by compel's builder):
//! use compel_plugins::std::{Errno, sys};
//!
//! compel_plugins::parasite_handler!(handle);
//!
//! fn handle(cmd: u32, payload: &mut [u8]) -> Result<(), Errno> {
//!     match cmd {
//!         compel_proto::rpc::CMD_USER => {
//!             let pid = sys::getpid();
//!             compel_plugins::log!(INFO, "hello from {pid}");
//!             compel_plugins::std::write_args(payload, &pid)
//!         }
//!         _ => Err(Errno::ENOSYS),
//!     }
//! }
//! ```
#![no_std]

pub mod fds;
pub mod shmem;
pub mod std;

/// Defines the C-ABI function `compel_parasite_handle` that the service loop calls for every
/// command that is not compel's own, from a Rust function
/// `fn(cmd: u32, payload: &mut [u8]) -> Result<(), Errno>`. `payload` is the args area after
/// its header; an `Err(e)` is reported to the host as errno `e`.
#[macro_export]
macro_rules! parasite_handler {
    ($handler:path) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn compel_parasite_handle(cmd: u32, payload: *mut u8, len: usize) -> i32 {
            let payload: &mut [u8] = if payload.is_null() || len == 0 {
                &mut []
            } else {
                // SAFETY: the service loop passes the payload area of the args area, `len`
                // bytes that nothing else in this task touches while the command runs.
                unsafe { ::core::slice::from_raw_parts_mut(payload, len) }
            };
            match $handler(cmd, payload) {
                Ok(()) => 0,
                Err(e) => -e.0,
            }
        }
    };
}
