//! The fdspy parasite's command, shared with the host (`parasite_blobs::fdspy::proto`).

use compel_proto::Plain;
use compel_proto::rpc::CMD_USER;

/// Describes the task's fd [`FdInfo::fd`] (fd flags, file status flags, offset) into the
/// payload and sends the fd itself to the host.
pub const CMD_SPY: u32 = CMD_USER;

/// Arguments and results of [`CMD_SPY`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FdInfo {
    /// The fd in the task (argument).
    pub fd: i32,
    /// `fcntl(F_GETFD)`: the fd's own flags (`FD_CLOEXEC`), which the copy the host receives
    /// does not share.
    pub fd_flags: i32,
    /// `fcntl(F_GETFL)`: access mode and status flags.
    pub status_flags: i32,
    /// Reserved, zero.
    pub reserved: i32,
    /// The file offset (`lseek(fd, 0, SEEK_CUR)`), or -errno for files without one (pipes).
    pub offset: i64,
}
const _: () = assert!(core::mem::size_of::<FdInfo>() == 24);
// SAFETY: repr(C), integers only, no padding (4 * 4 + 8).
unsafe impl Plain for FdInfo {}
