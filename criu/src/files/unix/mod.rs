//! Unix sockets (`AF_UNIX`: stream, datagram, seqpacket), both sides.
//!
//! **Dump.** What the kernel knows (type, state, name, bound file, peer, queued connections,
//! shutdown) comes from one sock_diag dump for the whole tree ([`super::sockdiag`]); options
//! and queued data are read through criu's own copy of the task's socket
//! ([`super::socket::steal`]): the peek offset is saved, set to 0, every message is peeked in
//! order (`MSG_PEEK`, boundaries kept), and the offset is put back, so the task's socket is as
//! it was. Each socket becomes a `UNIXSK` entry of `files.img` (CRIU's `unix_sk_entry`) and
//! its receive queue `sk-queues.img` entries (`id_for` = the receiving socket's file id, the
//! bytes after the entry), as CRIU writes them.
//!
//! **Restore.** criu itself creates every socket before the tasks exist ([`create_all`]);
//! the tasks inherit them and put them at their numbers. Pairs whose ends are both known come
//! from `socketpair`, or from `connect` + `accept` when one end was accepted from a listener
//! of the tree; names are bound again (absolute, abstract, or relative to the binder's cwd,
//! `name_dir`), a name removed after bind is bound then unlinked, a stale socket file left by
//! the dumped tree is replaced; clients whose connection was still queued are connected again
//! in order, so the backlog is rebuilt; queues are refilled in order by sending from the peer
//! (or from a temporary socket to the receiver's name); then shutdowns, then peers that were
//! closed are closed, then options and file flags.
//!
//! Descriptors in flight (`SCM_RIGHTS`) come to criu with the peek: the dump makes each a file
//! of the tree ([`crate::files::FileKind::take_in_flight`]) and names its file id in the
//! message's `scm` entry; the restore makes those files first (the engine's
//! [`crate::files::RestoreFile::engine_files`]) and sends them with their message. A
//! connection still queued on a listener that holds data is read by accepting it on criu's
//! copy of the listener, only when the dump ends the tree: its server end becomes an entry no
//! task holds ([`embryos`]), whose client connects again and sends the data on restore.
//!
//! Not covered (refused by name at dump time): descriptors in flight in an empty datagram, a
//! queued connection that holds data when the tree runs on (`-R`) or that comes from outside
//! the tree, peers outside the tree without `--ext-unix-sk`.

mod creds;
mod dump;
mod image;
pub mod late;
mod restore;
mod send;

pub use dump::UnixDump;
pub use image::{MAX_QUEUE, Queued, check, embryos, queued_pids_inside, read_queues};
pub use restore::create_all;

/// `unix_sk_entry.uflags`: the peer is outside the dumped tree (`--ext-unix-sk`).
pub const USK_EXTERN: u32 = 1;

/// `TCP_ESTABLISHED`, as sock_diag reports a connected unix socket.
pub const ST_ESTABLISHED: u32 = 1;
/// `TCP_CLOSE`: not connected.
pub const ST_CLOSE: u32 = 7;
/// `TCP_LISTEN`.
pub const ST_LISTEN: u32 = 10;

/// The largest message the dump will peek (bigger datagrams cannot be sent on a unix socket
/// with the default limits anyway).
const MAX_MSG: usize = 8 << 20;
/// A printable form of a socket name: the path, or `@name` for an abstract one.
pub fn printable(name: &[u8]) -> String {
    match name.split_first() {
        None => "(unbound)".into(),
        Some((0, rest)) => format!("@{}", String::from_utf8_lossy(rest)),
        Some(_) => String::from_utf8_lossy(trim_nul(name)).into_owned(),
    }
}

/// A path name without the trailing NULs the kernel may keep.
fn trim_nul(name: &[u8]) -> &[u8] {
    let mut n = name;
    while let [rest @ .., 0] = n {
        n = rest;
    }
    n
}
