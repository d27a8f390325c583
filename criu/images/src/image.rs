//! Reading and writing image files: the magic header, then entries framed as a `u32`
//! little-endian size followed by that many bytes of protobuf payload, optionally followed by an
//! extra raw payload whose length the entry itself says.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use prost::Message;

use crate::error::ImageError;
use crate::magic;
use crate::schema::Described;

/// Largest entry size accepted when reading (CRIU's entries are small; pages are raw files).
pub const MAX_ENTRY_SIZE: u32 = 1 << 30;

/// Reads as many bytes as available up to `buf.len()`; returns the count (short only at EOF).
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// A reader of one image file, positioned after its magic header.
///
/// ```no_run
/// use criu_images::{ImageReader, magic, pb::PstreeEntry};
/// let mut r = ImageReader::open_expect("dir/pstree.img", magic::PSTREE)?;
/// for task in r.read_entries::<PstreeEntry>()? {
///     println!("pid {} pgid {}", task.pid, task.pgid);
/// }
/// # Ok::<(), criu_images::ImageError>(())
/// ```
#[derive(Debug)]
pub struct ImageReader<R = BufReader<File>> {
    r: R,
    file: PathBuf,
    offset: u64,
    magic: u32,
    header: Vec<u32>,
}

impl ImageReader<BufReader<File>> {
    /// Opens an image file and reads its magic header. The file itself is never a symlink
    /// (`O_NOFOLLOW`: a link planted in an images directory fails with `ELOOP` instead of
    /// having criu read whatever it points to); directories on the way (a `parent` link) are
    /// followed.
    ///
    /// # Errors
    /// I/O errors (`ELOOP` for a symlink), a truncated header, an unknown magic.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ImageError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = path.as_ref();
        let f = File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|source| ImageError::Io {
                file: path.into(),
                op: "open",
                source,
            })?;
        Self::new(BufReader::new(f), path)
    }

    /// Opens an image file and checks that it has the given magic.
    ///
    /// # Errors
    /// As [`ImageReader::open`], plus [`ImageError::WrongMagic`].
    pub fn open_expect(path: impl AsRef<Path>, magic: u32) -> Result<Self, ImageError> {
        let r = Self::open(path)?;
        r.expect_magic(magic)
    }
}

impl<R: Read> ImageReader<R> {
    /// Wraps a reader positioned at the start of an image; `file` names it in errors.
    ///
    /// # Errors
    /// I/O errors, a truncated header, an unknown magic (including the raw magic 0).
    pub fn new(mut r: R, file: impl Into<PathBuf>) -> Result<Self, ImageError> {
        let file = file.into();
        let mut header = Vec::new();
        let first = read_u32(&mut r, &file, 0, "magic")?.ok_or_else(|| ImageError::Truncated {
            file: file.clone(),
            offset: 0,
            what: "magic",
            need: 4,
            have: 0,
        })?;
        header.push(first);
        let mut offset = 4;
        let mut m = first;
        if first == magic::IMG_COMMON || first == magic::IMG_SERVICE {
            m = read_u32(&mut r, &file, offset, "magic")?.ok_or_else(|| ImageError::Truncated {
                file: file.clone(),
                offset,
                what: "magic",
                need: 4,
                have: 0,
            })?;
            header.push(m);
            offset += 4;
        }
        if m == magic::RAW
            || magic::name_of(m).is_none()
            || m == magic::IMG_COMMON
            || m == magic::IMG_SERVICE
        {
            return Err(ImageError::UnknownMagic {
                file,
                offset: offset - 4,
                magic: m,
            });
        }
        Ok(Self {
            r,
            file,
            offset,
            magic: m,
            header,
        })
    }

    /// Fails with [`ImageError::WrongMagic`] unless the image has `magic`.
    ///
    /// # Errors
    /// [`ImageError::WrongMagic`].
    pub fn expect_magic(self, magic: u32) -> Result<Self, ImageError> {
        if self.magic != magic {
            return Err(ImageError::WrongMagic {
                file: self.file,
                offset: (self.header.len() as u64 - 1) * 4,
                expected: magic::name_of(magic).unwrap_or("?"),
                found: self.magic,
            });
        }
        Ok(self)
    }

    /// The image's own magic (the second one when there are two).
    pub fn magic(&self) -> u32 {
        self.magic
    }

    /// The magics as found at the start of the file (one or two).
    pub fn header(&self) -> &[u32] {
        &self.header
    }

    /// The file name used in errors.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads the next entry's payload bytes; `None` at a clean end of file.
    ///
    /// # Errors
    /// I/O errors, a truncated size or payload, an oversized entry.
    pub fn read_entry_bytes(&mut self) -> Result<Option<Vec<u8>>, ImageError> {
        let start = self.offset;
        let Some(size) = read_u32(&mut self.r, &self.file, start, "entry size")? else {
            return Ok(None);
        };
        if size > MAX_ENTRY_SIZE {
            return Err(ImageError::Invalid {
                file: self.file.clone(),
                offset: start,
                what: format!("entry size {size} is too large"),
            });
        }
        self.offset += 4;
        let mut buf = Vec::new();
        let got = (&mut self.r)
            .take(u64::from(size))
            .read_to_end(&mut buf)
            .map_err(|source| ImageError::Io {
                file: self.file.clone(),
                op: "read",
                source,
            })?;
        if got < size as usize {
            return Err(ImageError::Truncated {
                file: self.file.clone(),
                offset: start,
                what: "entry",
                need: u64::from(size),
                have: got as u64,
            });
        }
        self.offset += u64::from(size);
        Ok(Some(buf))
    }

    /// Reads and decodes the next entry; `None` at a clean end of file.
    ///
    /// # Errors
    /// As [`ImageReader::read_entry_bytes`], plus [`ImageError::Decode`].
    pub fn read_entry<M: Described>(&mut self) -> Result<Option<M>, ImageError> {
        let start = self.offset;
        let Some(buf) = self.read_entry_bytes()? else {
            return Ok(None);
        };
        M::decode(buf.as_slice())
            .map(Some)
            .map_err(|e| ImageError::Decode {
                file: self.file.clone(),
                offset: start,
                message: M::DESC.name,
                reason: e.to_string(),
            })
    }

    /// Reads exactly one more entry (it must be there).
    ///
    /// # Errors
    /// As [`ImageReader::read_entry`], plus [`ImageError::Missing`] at end of file.
    pub fn read_one<M: Described>(&mut self) -> Result<M, ImageError> {
        self.read_entry()?.ok_or_else(|| ImageError::Missing {
            file: self.file.clone(),
            offset: self.offset,
            message: M::DESC.name,
        })
    }

    /// Reads all remaining entries as `M` (for images without extra payloads).
    ///
    /// # Errors
    /// As [`ImageReader::read_entry`].
    pub fn read_entries<M: Described>(&mut self) -> Result<Vec<M>, ImageError> {
        let mut v = Vec::new();
        while let Some(m) = self.read_entry()? {
            v.push(m);
        }
        Ok(v)
    }

    /// Reads `len` bytes of extra payload following an entry.
    ///
    /// # Errors
    /// I/O errors, [`ImageError::Truncated`].
    pub fn read_extra(&mut self, len: u64) -> Result<Vec<u8>, ImageError> {
        let start = self.offset;
        let mut buf = Vec::new();
        let got = (&mut self.r)
            .take(len)
            .read_to_end(&mut buf)
            .map_err(|source| ImageError::Io {
                file: self.file.clone(),
                op: "read",
                source,
            })?;
        if (got as u64) < len {
            return Err(ImageError::Truncated {
                file: self.file.clone(),
                offset: start,
                what: "extra payload",
                need: len,
                have: got as u64,
            });
        }
        self.offset += len;
        Ok(buf)
    }

    /// Reads everything left in the file as raw bytes.
    ///
    /// # Errors
    /// I/O errors.
    pub fn read_rest(&mut self) -> Result<Vec<u8>, ImageError> {
        let mut buf = Vec::new();
        let got = self
            .r
            .read_to_end(&mut buf)
            .map_err(|source| ImageError::Io {
                file: self.file.clone(),
                op: "read",
                source,
            })?;
        self.offset += got as u64;
        Ok(buf)
    }

    /// Gives the underlying reader back.
    pub fn into_inner(self) -> R {
        self.r
    }
}

/// Reads a little-endian u32: `None` at a clean EOF, an error if only part of it is there.
fn read_u32<R: Read>(
    r: &mut R,
    file: &Path,
    offset: u64,
    what: &'static str,
) -> Result<Option<u32>, ImageError> {
    let mut b = [0u8; 4];
    let got = read_full(r, &mut b).map_err(|source| ImageError::Io {
        file: file.into(),
        op: "read",
        source,
    })?;
    match got {
        0 => Ok(None),
        4 => Ok(Some(u32::from_le_bytes(b))),
        n => Err(ImageError::Truncated {
            file: file.into(),
            offset,
            what,
            need: 4,
            have: n as u64,
        }),
    }
}

/// A writer of one image file: writes the magic header on creation, then entries.
///
/// ```no_run
/// use criu_images::{ImageWriter, magic, pb::PstreeEntry};
/// let mut w = ImageWriter::create("dir/pstree.img", magic::PSTREE)?;
/// w.write_entry(&PstreeEntry { pid: 42, ppid: 0, pgid: 42, sid: 42, threads: vec![42] })?;
/// w.finish()?;
/// # Ok::<(), criu_images::ImageError>(())
/// ```
#[derive(Debug)]
pub struct ImageWriter<W: Write = BufWriter<File>> {
    w: W,
    file: PathBuf,
    offset: u64,
}

/// Creates (or truncates) a file criu writes into an images directory, never through a
/// symlink (`O_NOFOLLOW`: a link planted by whoever can write the directory fails with
/// `ELOOP` instead of sending root's write to its target), with the caller's umask.
///
/// # Errors
/// I/O errors (`ELOOP` for a symlink).
pub fn create_file(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Writes `data` as the whole content of `path` (see [`create_file`]).
///
/// # Errors
/// I/O errors (`ELOOP` for a symlink).
pub fn write_file(path: &Path, data: impl AsRef<[u8]>) -> std::io::Result<()> {
    use std::io::Write;
    create_file(path)?.write_all(data.as_ref())
}

impl ImageWriter<BufWriter<File>> {
    /// Creates (or truncates) an image file and writes the header for `magic`; a symlink in
    /// its place is refused ([`create_file`]).
    ///
    /// # Errors
    /// I/O errors.
    pub fn create(path: impl AsRef<Path>, magic: u32) -> Result<Self, ImageError> {
        let path = path.as_ref();
        let f = create_file(path).map_err(|source| ImageError::Io {
            file: path.into(),
            op: "create",
            source,
        })?;
        Self::new(BufWriter::new(f), path, magic)
    }

    /// Creates `dir/name` (see [`crate::names`] for the names CRIU uses).
    ///
    /// # Errors
    /// I/O errors.
    pub fn create_in(dir: impl AsRef<Path>, name: &str, magic: u32) -> Result<Self, ImageError> {
        Self::create(dir.as_ref().join(name), magic)
    }
}

impl<W: Write> ImageWriter<W> {
    /// Wraps a writer and writes the header for `magic` (see [`magic::header`]).
    ///
    /// # Errors
    /// I/O errors.
    pub fn new(w: W, file: impl Into<PathBuf>, magic: u32) -> Result<Self, ImageError> {
        Self::with_header(w, file, &magic::header(magic))
    }

    /// Wraps a writer and writes exactly these header magics.
    ///
    /// # Errors
    /// I/O errors.
    pub fn with_header(w: W, file: impl Into<PathBuf>, header: &[u32]) -> Result<Self, ImageError> {
        let mut me = Self {
            w,
            file: file.into(),
            offset: 0,
        };
        for m in header {
            me.write_extra(&m.to_le_bytes())?;
        }
        Ok(me)
    }

    /// Writes one entry: its encoded size and payload.
    ///
    /// # Errors
    /// I/O errors.
    pub fn write_entry<M: Message>(&mut self, msg: &M) -> Result<(), ImageError> {
        let buf = msg.encode_to_vec();
        self.write_entry_bytes(&buf)
    }

    /// Writes one entry from already encoded payload bytes.
    ///
    /// # Errors
    /// I/O errors; an entry larger than [`MAX_ENTRY_SIZE`].
    pub fn write_entry_bytes(&mut self, payload: &[u8]) -> Result<(), ImageError> {
        let size = u32::try_from(payload.len())
            .ok()
            .filter(|s| *s <= MAX_ENTRY_SIZE)
            .ok_or_else(|| ImageError::Invalid {
                file: self.file.clone(),
                offset: self.offset,
                what: format!("entry of {} bytes is too large", payload.len()),
            })?;
        self.write_extra(&size.to_le_bytes())?;
        self.write_extra(payload)
    }

    /// Writes raw bytes (an entry's extra payload).
    ///
    /// # Errors
    /// I/O errors.
    pub fn write_extra(&mut self, data: &[u8]) -> Result<(), ImageError> {
        self.w.write_all(data).map_err(|source| ImageError::Io {
            file: self.file.clone(),
            op: "write",
            source,
        })?;
        self.offset += data.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Flushes and returns the underlying writer.
    ///
    /// # Errors
    /// I/O errors.
    pub fn finish(mut self) -> Result<W, ImageError> {
        self.w.flush().map_err(|source| ImageError::Io {
            file: self.file.clone(),
            op: "flush",
            source,
        })?;
        Ok(self.w)
    }
}

/// Reads every entry of the image at `path`, which must have `magic`.
///
/// # Errors
/// As [`ImageReader::open_expect`] and [`ImageReader::read_entries`].
pub fn read_all<M: Described>(path: impl AsRef<Path>, magic: u32) -> Result<Vec<M>, ImageError> {
    ImageReader::open_expect(path, magic)?.read_entries()
}

/// Reads the single entry of the image at `path` (core, mm, ids, fs, inventory, ...).
///
/// # Errors
/// As [`ImageReader::open_expect`] and [`ImageReader::read_one`].
pub fn read_single<M: Described>(path: impl AsRef<Path>, magic: u32) -> Result<M, ImageError> {
    ImageReader::open_expect(path, magic)?.read_one()
}

/// Writes `entries` as a whole image file at `path`.
///
/// # Errors
/// I/O errors.
pub fn write_all<'a, M: Message + 'a>(
    path: impl AsRef<Path>,
    magic: u32,
    entries: impl IntoIterator<Item = &'a M>,
) -> Result<(), ImageError> {
    let mut w = ImageWriter::create(path, magic)?;
    for e in entries {
        w.write_entry(e)?;
    }
    w.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_file_refuses_a_symlink_and_leaves_its_target() {
        let d = std::env::temp_dir().join(format!("criu-images-nofollow-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let target = d.join("target");
        std::fs::write(&target, "keep").unwrap();
        let link = d.join("core-1.img");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = create_file(&link).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
        assert!(ImageWriter::create(&link, 0x1234).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        // A plain name is created, and truncated when it exists.
        let plain = d.join("plain");
        write_file(&plain, "a long first content").unwrap();
        write_file(&plain, "b").unwrap();
        assert_eq!(std::fs::read_to_string(&plain).unwrap(), "b");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
