//! Per-architecture facts and primitives (layer: bottom, `no_std`).
//!
//! Every `cfg(target_arch)` of the project lives here. Each supported architecture is one module
//! with the same public names, re-exported at the crate root, so callers never need a `cfg`.
#![no_std]

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
pub use x86_64::*;

#[cfg(not(any(target_arch = "x86_64")))]
compile_error!("compel-arch: this architecture is not supported yet (x86_64 only; aarch64 is planned)");
