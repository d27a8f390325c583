//! Types shared by the compel host runtime and parasite code (layer: bottom, `no_std`).
//!
//! Everything here is `#[repr(C)]` with its size pinned by a `const` assertion, because both
//! sides of the parasite boundary compile this crate and must agree on every byte.
#![no_std]
