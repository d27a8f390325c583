//! Pipes (`PIPE` entries, one per open end; the ends of one pipe share its `pipe_id`) and the
//! bytes waiting in them (`pipes-data.img`).
//!
//! Dump: each end's flags; the first time a pipe is met, its waiting bytes are copied with
//! `tee` (the task keeps them) and its capacity read. Restore: the two ends are one object
//! ([`RestoreFile::group`] is the pipe id, [`RestoreFile::end`] 0 for the read end, 1 for the
//! write end), made once by the task that holds them, or by the engine when several tasks do;
//! the saved bytes are written back before either end is placed.
// Unsafe code: makes pipes (pipe2), writes their saved bytes and sets their flags with raw system
// calls inside the new task.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::Arc;

use criu_images::pb::{self, FdTypes, FileEntry, PipeDataEntry, PipeEntry};
use criu_images::{ImageDir, ImageReader, ImageWriter, magic, names};

use super::{DumpFd, Ends, FileKind, ImageCtx, Parsed, RestoreFile, TaskError, check, fown_zero};
use crate::dump::error::DumpError;
use crate::restore::error::RestoreError;
use crate::restore::images::entry::{bad, img, kind_entry};

/// The pipes of one dump (the bytes waiting in them) or one restore (`pipes-data.img`, read
/// when the first pipe is met).
#[derive(Debug, Default)]
pub struct Pipe {
    /// Pipes met by the dump, by inode.
    seen: Vec<u64>,
    /// Pipes holding data, by pipe id (the inode).
    data: Vec<(u32, PipeData)>,
    /// Restore: what `pipes-data.img` holds, by pipe id.
    saved: Option<HashMap<u32, PipeData>>,
}

impl FileKind for Pipe {
    fn fd_type(&self) -> FdTypes {
        FdTypes::Pipe
    }

    fn claims(&self, fd: &DumpFd<'_>) -> bool {
        fd.name.starts_with("pipe:[") && fd.meta.file_type().is_fifo()
    }

    /// The entry of a pipe end and, the first time a pipe is seen, the bytes waiting in it
    /// (copied with `tee`, so the task still has them).
    fn dump(&mut self, fd: &DumpFd<'_>, id: u32) -> Result<FileEntry, DumpError> {
        use std::os::unix::fs::MetadataExt;
        let ino = fd.meta.ino();
        if !self.seen.contains(&ino) {
            self.seen.push(ino);
            // Every pipe gets an entry: its size matters even when it is empty.
            let (data, size) = peek_pipe(fd.pid, fd.fd)?;
            self.data.push((ino as u32, PipeData { size, bytes: data }));
        }
        Ok(FileEntry {
            r#type: FdTypes::Pipe as i32,
            id,
            pipe: Some(PipeEntry {
                id,
                pipe_id: ino as u32,
                flags: fd.flags(),
                fown: fown_zero(),
            }),
            ..FileEntry::default()
        })
    }

    fn write(&self, dir: &Path) -> Result<(), DumpError> {
        write_data(dir, names::PIPES_DATA, magic::PIPES_DATA, &self.data)
    }

    fn parse(&mut self, img: &ImageCtx<'_>, e: &FileEntry, fd: i32) -> Parsed {
        let p = kind_entry(&e.pipe, fd, "pipe")?;
        let acc = p.flags as i32 & libc::O_ACCMODE;
        if self.saved.is_none() {
            self.saved = Some(pipes_data(img.dir)?);
        }
        let PipeData { size, bytes: data } = self
            .saved
            .as_ref()
            .and_then(|m| m.get(&p.pipe_id))
            .cloned()
            .unwrap_or_default();
        Ok(Arc::new(PipeEnd {
            id: p.pipe_id,
            write: acc == libc::O_WRONLY,
            flags: p.flags as i32 & libc::O_NONBLOCK,
            data,
            size,
        }))
    }
}

/// The bytes waiting in a pipe and its capacity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PipeData {
    /// The pipe's capacity (`F_GETPIPE_SZ`; 0: unknown).
    pub size: u32,
    /// The bytes, in order.
    pub bytes: Vec<u8>,
}

/// One end of a pipe (ends with the same `id` are connected).
#[derive(Debug)]
pub struct PipeEnd {
    /// The pipe's id in the image.
    pub id: u32,
    /// The write end (else the read end).
    pub write: bool,
    /// `O_NONBLOCK` and friends.
    pub flags: i32,
    /// Bytes that were buffered in the pipe (from `pipes-data.img`), refilled on creation.
    pub data: Vec<u8>,
    /// The pipe's capacity when dumped (0: unknown).
    pub size: u32,
}

impl RestoreFile for PipeEnd {
    fn fd_type(&self) -> FdTypes {
        FdTypes::Pipe
    }

    fn group(&self) -> Option<u64> {
        Some(u64::from(self.id))
    }

    fn end(&self) -> usize {
        usize::from(self.write)
    }

    fn make_in_task(&self, fd: i32) -> Result<Ends, TaskError> {
        let mut ends = [0i32; 2];
        // SAFETY: pipe2 writes two descriptors into a live local array.
        let r = unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC | self.flags) };
        check(r as _, fd as u64)?;
        if let Err(e) = refill(ends[1], &self.data, self.size, fd) {
            // SAFETY: closing the two ends we just made.
            unsafe {
                libc::close(ends[0]);
                libc::close(ends[1]);
            }
            return Err(e);
        }
        Ok(Ends { fds: ends, n: 2 })
    }

    fn make_in_engine(&self) -> Result<Vec<OwnedFd>, RestoreError> {
        let mut ends = [0i32; 2];
        // SAFETY: pipe2 writes two descriptors into a live local array.
        if unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC | self.flags) } != 0 {
            return Err(super::sys("creating a shared pipe"));
        }
        let (r, w) = (crate::files::owned(ends[0]), crate::files::owned(ends[1]));
        refill(w.as_raw_fd(), &self.data, self.size, 0).map_err(|f| RestoreError::Sys {
            what: "refilling a shared pipe",
            errno: nix::errno::Errno::from_raw(f.errno),
        })?;
        Ok(vec![r, w])
    }
}

/// Gives a new pipe its dumped capacity `size` (0: unknown, left as made) and writes its saved
/// bytes into its write end `wt`.
pub fn refill(wt: i32, data: &[u8], size: u32, first: i32) -> Result<(), TaskError> {
    // SAFETY: fcntl on the pipe end we just created.
    if size != 0 && unsafe { libc::fcntl(wt, libc::F_GETPIPE_SZ) } != size as libc::c_int {
        // SAFETY: fcntl with plain values on the pipe end we just created.
        let r = unsafe { libc::fcntl(wt, libc::F_SETPIPE_SZ, size as libc::c_int) };
        check(r as _, first as u64)?;
    }
    let mut off = 0;
    while off < data.len() {
        // SAFETY: writes from a live slice's remainder to the pipe end we own.
        let n = unsafe { libc::write(wt, data[off..].as_ptr().cast(), data.len() - off) };
        let n = check(n as _, first as u64)?;
        if n == 0 {
            return Err(TaskError {
                errno: libc::EAGAIN,
                detail: first as u64,
            });
        }
        off += n as usize;
    }
    Ok(())
}

/// The most bytes one pipe may hold on restore (the kernel's default maximum pipe size).
const MAX_PIPE_DATA: u32 = 1 << 20;

/// Reads `pipes-data.img` (absent: no pipe had data), by pipe id.
fn pipes_data(d: &ImageDir) -> Result<HashMap<u32, PipeData>, RestoreError> {
    read_data(
        d,
        names::PIPES_DATA,
        magic::PIPES_DATA,
        "pipe",
        MAX_PIPE_DATA,
    )
}

/// Reads a pipe data image (`pipes-data.img`, `fifo-data.img`: `name`, `magic`; absent: none
/// had data), by pipe id, refusing a `what` (`pipe`, `fifo`) holding more than `max` bytes.
pub(super) fn read_data(
    d: &ImageDir,
    name: &'static str,
    magic: u32,
    what: &str,
    max: u32,
) -> Result<HashMap<u32, PipeData>, RestoreError> {
    let mut out = HashMap::new();
    let path = d.file(name);
    if !path.exists() {
        return Ok(out);
    }
    let mut r = ImageReader::open_expect(path, magic).map_err(|e| img(name, e))?;
    // The kernel's limit, read once for the whole image.
    let limit = max.max(pipe_max_size());
    while let Some(e) = r
        .read_entry::<pb::PipeDataEntry>()
        .map_err(|e| img(name, e))?
    {
        if e.bytes > max {
            return Err(bad(
                name,
                format!("{what} {} holds {} bytes (max {max})", e.pipe_id, e.bytes),
            ));
        }
        // The capacity F_SETPIPE_SZ is asked for: none (0), or one that holds the bytes and
        // that the kernel's limit allows (the default 1 MiB, or a raised pipe-max-size).
        let size = e.size.unwrap_or(0);
        if size != 0 && (size < e.bytes || size > limit) {
            return Err(bad(
                name,
                format!(
                    "{what} {} of {size} bytes capacity holding {} bytes (max {limit})",
                    e.pipe_id, e.bytes
                ),
            ));
        }
        let bytes = r.read_extra(u64::from(e.bytes)).map_err(|x| img(name, x))?;
        out.insert(
            e.pipe_id,
            PipeData {
                size: e.size.unwrap_or(0),
                bytes,
            },
        );
    }
    Ok(out)
}

/// `/proc/sys/fs/pipe-max-size` (0 when unreadable).
fn pipe_max_size() -> u32 {
    std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Writes a pipe data image (`pipes-data.img`, `fifo-data.img`: `name`, `magic`) into `dir`
/// when any pipe held data: each pipe id's bytes and capacity.
///
/// # Errors
/// [`DumpError::Image`].
pub(super) fn write_data(
    dir: &Path,
    name: &str,
    magic: u32,
    data: &[(u32, PipeData)],
) -> Result<(), DumpError> {
    if !data.is_empty() {
        let mut w = ImageWriter::create_in(dir, name, magic)?;
        for (pipe_id, d) in data {
            w.write_entry(&PipeDataEntry {
                pipe_id: *pipe_id,
                bytes: d.bytes.len() as u32,
                size: Some(d.size),
            })?;
            w.write_extra(&d.bytes)?;
        }
        w.finish()?;
    }
    Ok(())
}

/// The bytes waiting in the pipe behind fd `fd` of `pid`, without taking them: the pipe is
/// opened through `/proc/PID/fd/FD` and `tee`d into a pipe of ours. Also returns the pipe's
/// size (`F_GETPIPE_SZ`).
pub(crate) fn peek_pipe(pid: i32, fd: i32) -> Result<(Vec<u8>, u32), DumpError> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::fs::OpenOptionsExt;
    let src_path = format!("/proc/{pid}/fd/{fd}");
    let err = |what: &str| {
        let what = format!("{what} (pipe fd {fd} of {pid})");
        move |source| DumpError::File { what, source }
    };
    let src = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&src_path)
        .map_err(err("open"))?;
    // SAFETY: fcntl queries the pipe size of a descriptor we own.
    let size = unsafe { libc::fcntl(src.as_raw_fd(), libc::F_GETPIPE_SZ) };
    if size < 0 {
        return Err(err("F_GETPIPE_SZ")(std::io::Error::last_os_error()));
    }
    let mut ends = [0i32; 2];
    // SAFETY: pipe2 writes two new descriptors into `ends`.
    if unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(err("pipe2")(std::io::Error::last_os_error()));
    }
    // SAFETY: both descriptors were just created and are owned by nothing else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1])) };
    // SAFETY: fcntl on our own pipe; make it as big as the source so one tee takes it all.
    unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, size) };
    // SAFETY: tee duplicates pipe contents between two descriptors we own; no memory involved.
    let n = unsafe {
        libc::tee(
            src.as_raw_fd(),
            w.as_raw_fd(),
            size as usize,
            libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EAGAIN) {
            return Ok((Vec::new(), size as u32));
        }
        return Err(err("tee")(e));
    }
    drop(w);
    let mut data = Vec::with_capacity(n as usize);
    let mut f = File::from(r);
    f.read_to_end(&mut data).map_err(err("read"))?;
    Ok((data, size as u32))
}
