//! The testkit parasite's commands and payloads, shared with the host
//! (`parasite_blobs::testkit::proto`). The testkit exists to exercise the infection runtime:
//! every command does one thing a test can check from outside.

use compel_proto::Plain;
use compel_proto::rpc::CMD_USER;

/// Adds [`Args::a`] and [`Args::b`] into [`Args::r`]; also reports pid and tid.
pub const CMD_ADD: u32 = CMD_USER;
/// Fails with errno [`Args::a`].
pub const CMD_FAIL: u32 = CMD_USER + 1;
/// Loads garbage into every general, vector and mask register and into MXCSR and the x87
/// control word, then answers: the task must see none of it after cure.
pub const CMD_CLOBBER: u32 = CMD_USER + 2;
/// Sleeps [`Args::a`] milliseconds.
pub const CMD_SLEEP: u32 = CMD_USER + 3;
/// Copies [`Args::b`] bytes (at most [`PEEK_MAX`]) from address [`Args::a`] of the task into
/// [`Args::data`], through `process_vm_readv` on itself: a bad address is `EFAULT`, never a
/// crash.
pub const CMD_PEEK: u32 = CMD_USER + 4;
/// Writes [`Args::a`] log lines.
pub const CMD_LOG: u32 = CMD_USER + 5;
/// Sends the task's fd [`Args::a`] to the host.
pub const CMD_SEND_FD: u32 = CMD_USER + 6;
/// Dereferences a null pointer: the parasite faults (the host must still save the task).
pub const CMD_CRASH: u32 = CMD_USER + 7;
/// Spins forever in user code without any syscall (the host must time out and still save the
/// task).
pub const CMD_SPIN: u32 = CMD_USER + 8;
/// Panics (the panic handler returns into the task through the frame by itself).
pub const CMD_PANIC: u32 = CMD_USER + 9;

/// The most bytes [`CMD_PEEK`] copies.
pub const PEEK_MAX: usize = 64;

/// Arguments and results of every testkit command.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Args {
    /// First argument.
    pub a: u64,
    /// Second argument.
    pub b: u64,
    /// Result.
    pub r: u64,
    /// The pid the parasite sees.
    pub pid: i32,
    /// The thread the command ran in.
    pub tid: i32,
    /// Bytes for [`CMD_PEEK`].
    pub data: [u8; PEEK_MAX],
}
const _: () = assert!(core::mem::size_of::<Args>() == 96);

impl Default for Args {
    fn default() -> Self {
        Args {
            a: 0,
            b: 0,
            r: 0,
            pid: 0,
            tid: 0,
            data: [0; PEEK_MAX],
        }
    }
}
// SAFETY: repr(C), integers and a byte array, no padding (3 * 8 + 2 * 4 + 64 = 96).
unsafe impl Plain for Args {}
