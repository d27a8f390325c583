//! Namespaces, one module per kind, each with both sides (dump and restore).
pub mod mnt;
pub mod mounts;
