//! The demo parasite's commands and their payloads, compiled into both the parasite and the host
//! (`parasite_blobs::demo::proto`).

use compel_proto::Plain;
use compel_proto::rpc::CMD_USER;

/// Answers with the task's pid and current directory in a [`HelloReply`].
pub const CMD_HELLO: u32 = CMD_USER;
/// Sends the task's fd [`FdArgs::fd`] to the host (the fds plugin).
pub const CMD_SEND_FD: u32 = CMD_USER + 1;
/// Receives one fd from the host and keeps it open in the task; its number is written back
/// into [`FdArgs::fd`].
pub const CMD_RECV_FD: u32 = CMD_USER + 2;
/// Creates a shared region of [`ShmemArgs::len`] bytes filled with [`ShmemArgs::fill`] and
/// sends it to the host (the shmem plugin); the parasite keeps it mapped.
pub const CMD_SHMEM_CREATE: u32 = CMD_USER + 3;
/// Receives a region from the host, answers the sum of its bytes in [`ShmemArgs::sum`], writes
/// [`ShmemArgs::fill`] into its first byte (for the host to see), and unmaps it here.
pub const CMD_SHMEM_SUM: u32 = CMD_USER + 4;

/// The answer to [`CMD_HELLO`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HelloReply {
    /// The task's pid (as the task sees it).
    pub pid: i32,
    /// Bytes of `cwd` used, without the terminator.
    pub cwd_len: u32,
    /// The current directory.
    pub cwd: [u8; 4096],
}
const _: () = assert!(core::mem::size_of::<HelloReply>() == 4104);
// SAFETY: repr(C), integers and a byte array, no padding (4 + 4 + 4096).
unsafe impl Plain for HelloReply {}

/// Arguments of [`CMD_SEND_FD`] and [`CMD_RECV_FD`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FdArgs {
    /// An fd in the task.
    pub fd: i32,
    /// Reserved, zero.
    pub reserved: u32,
}
const _: () = assert!(core::mem::size_of::<FdArgs>() == 8);
// SAFETY: repr(C), two 4-byte integers, no padding.
unsafe impl Plain for FdArgs {}

/// Arguments of [`CMD_SHMEM_CREATE`] and [`CMD_SHMEM_SUM`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ShmemArgs {
    /// Size of the region to create.
    pub len: u64,
    /// The byte to fill the new region with, or to write at the start of the received one.
    pub fill: u64,
    /// Answer of [`CMD_SHMEM_SUM`].
    pub sum: u64,
}
const _: () = assert!(core::mem::size_of::<ShmemArgs>() == 24);
// SAFETY: repr(C), three u64, no padding.
unsafe impl Plain for ShmemArgs {}
