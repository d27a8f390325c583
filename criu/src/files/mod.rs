//! Open files, one module per kind, each holding both of its sides: what the dump reads about
//! a descriptor and which `files.img` entry it becomes, and how the restore brings it back and
//! what must exist first (CRIU's `files-reg.c`, `pipes.c`, `sk-unix.c`, ... shape).
//!
//! Sockets: [`sockets`] dispatches on the family ([`unix`], [`netlink`], [`packet`]);
//! [`sockdiag`] is the sock_diag client they share and [`socket`] the socket options and the
//! stolen copy of a task's socket. A new socket family is one new module here plus one arm in
//! [`sockets`].
#![allow(unsafe_code)]

pub mod netlink;
pub mod packet;
pub mod sockdiag;
pub mod socket;
pub mod sockets;
pub mod unix;
