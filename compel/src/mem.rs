//! Another task's memory: the [`RemoteAddr`] newtype and reads/writes through
//! `process_vm_readv`/`process_vm_writev`, falling back to `/proc/PID/mem` (which also writes
//! read-only pages, e.g. code, as ptrace's `FOLL_FORCE` allows).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::IoSliceMut;
use std::os::unix::fs::FileExt;

use nix::sys::uio::{RemoteIoVec, process_vm_readv, process_vm_writev};
use nix::unistd::Pid;

use crate::TaskError;

/// An address in another process. Never dereferenced here: only handed to the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RemoteAddr(pub u64);

impl RemoteAddr {
    /// The null address.
    pub const NULL: RemoteAddr = RemoteAddr(0);

    /// The address `off` bytes further (overflow is a caller bug and saturates).
    pub fn offset(self, off: u64) -> RemoteAddr {
        RemoteAddr(self.0.saturating_add(off))
    }

    /// The address rounded down to a multiple of `align` (a power of two).
    pub fn align_down(self, align: u64) -> RemoteAddr {
        RemoteAddr(self.0 & !(align - 1))
    }

    /// The raw value.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl std::ops::Add<u64> for RemoteAddr {
    type Output = RemoteAddr;

    fn add(self, off: u64) -> RemoteAddr {
        self.offset(off)
    }
}

impl fmt::Display for RemoteAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::LowerHex for RemoteAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

/// Memory access to one process, with a lazily opened `/proc/PID/mem` for the fallback.
#[derive(Debug)]
pub(crate) struct RemoteMem {
    pid: i32,
    mem: Option<File>,
}

impl RemoteMem {
    pub(crate) fn new(pid: i32) -> RemoteMem {
        RemoteMem { pid, mem: None }
    }

    fn mem_file(&mut self) -> std::io::Result<&File> {
        if self.mem.is_none() {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(format!("/proc/{}/mem", self.pid))?;
            self.mem = Some(f);
        }
        Ok(self.mem.as_ref().expect("opened above"))
    }

    /// Reads up to `buf.len()` bytes at `addr`; returns how many were read (fewer when the range
    /// runs into unmapped memory).
    pub(crate) fn read_partial(
        &mut self,
        addr: RemoteAddr,
        buf: &mut [u8],
    ) -> Result<usize, TaskError> {
        if buf.is_empty() {
            return Ok(0);
        }
        let len = buf.len();
        let remote = [RemoteIoVec {
            base: addr.0 as usize,
            len,
        }];
        let first = match process_vm_readv(
            Pid::from_raw(self.pid),
            &mut [IoSliceMut::new(buf)],
            &remote,
        ) {
            Ok(n) if n > 0 => return Ok(n),
            Ok(_) => std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
            Err(e) => std::io::Error::from(e),
        };
        tracing::debug!(pid = self.pid, %addr, len, error = %first, "process_vm_readv failed, trying /proc/PID/mem");
        let pid = self.pid;
        let err = |source| TaskError::Memory {
            pid,
            op: "read",
            addr,
            len,
            source,
        };
        let f = match self.mem_file() {
            Ok(f) => f,
            Err(_) => return Err(err(first)),
        };
        f.read_at(buf, addr.0).map_err(err)
    }

    pub(crate) fn read(&mut self, addr: RemoteAddr, buf: &mut [u8]) -> Result<(), TaskError> {
        let mut done = 0;
        while done < buf.len() {
            let n = self.read_partial(addr.offset(done as u64), &mut buf[done..])?;
            if n == 0 {
                return Err(TaskError::Memory {
                    pid: self.pid,
                    op: "read",
                    addr,
                    len: buf.len(),
                    source: std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
                });
            }
            done += n;
        }
        Ok(())
    }

    pub(crate) fn write(&mut self, addr: RemoteAddr, data: &[u8]) -> Result<(), TaskError> {
        if data.is_empty() {
            return Ok(());
        }
        let len = data.len();
        let remote = [RemoteIoVec {
            base: addr.0 as usize,
            len,
        }];
        let first = match process_vm_writev(
            Pid::from_raw(self.pid),
            &[std::io::IoSlice::new(data)],
            &remote,
        ) {
            Ok(n) if n == len => return Ok(()),
            Ok(_) => std::io::Error::from(std::io::ErrorKind::WriteZero),
            Err(e) => std::io::Error::from(e),
        };
        tracing::debug!(pid = self.pid, %addr, len, error = %first, "process_vm_writev failed, trying /proc/PID/mem");
        let pid = self.pid;
        let err = |source| TaskError::Memory {
            pid,
            op: "write",
            addr,
            len,
            source,
        };
        let f = match self.mem_file() {
            Ok(f) => f,
            Err(_) => return Err(err(first)),
        };
        f.write_all_at(data, addr.0).map_err(err)
    }
}
