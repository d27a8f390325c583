//! The parasites compel and criu ship (layer: above compel-plugins), built at build time into
//! position-independent blobs by `build.rs` through compel's builder.
//!
//! Each crate under `parasite-blobs/parasites/` becomes a module here with the generated
//! description of its blob: `blob()` (a [`compel_proto::blob::BlobDesc`] for the runtime),
//! `ENTRY`, `TEXT_SIZE`, `BSS_SIZE`, one `SYM_<NAME>` offset per `__export_<name>` symbol, and
//! `proto` with the commands it shares with the host.
//!
//! Adding a parasite: create `parasites/<name>/src/lib.rs`, a `#![no_std]` crate that can use
//! `compel_plugins`, `compel_proto` and `compel_arch` as extern crates and defines its command
//! handler with `compel_plugins::parasite_handler!` (or names its own entry point in
//! `parasites/<name>/compel.toml`: `entry = "symbol"`). Put the types its commands exchange with
//! the host in `src/proto.rs` (`mod proto;` in the parasite): they become
//! `parasite_blobs::<name>::proto` here. build.rs finds the new directory by itself.
//!
//! ```
//! let blob = parasite_blobs::demo::blob();
//! assert_eq!(blob.entry, parasite_blobs::demo::SYM_PARASITE_HEAD);
//! assert!(blob.validate().is_ok());
//! let hello = parasite_blobs::demo::proto::CMD_HELLO;
//! # let _ = hello;
//! ```
// Unsafe code is refused except in the parasites' `proto` modules (see build.rs).
#![deny(unsafe_code)]

include!(concat!(env!("OUT_DIR"), "/parasites.rs"));
