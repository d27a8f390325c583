//! CRIU's on-disk image format: the format layer under the `criu` engine and `crit`.
//!
//! An image directory holds one file per kind of state. Every file but the raw ones starts with
//! `u32` little-endian magics ([`magic`]), then holds entries, each a `u32` little-endian size
//! followed by a protobuf message ([`pb`]); a few entries are followed by an extra raw payload
//! whose length the entry gives (pipe data, socket queues, ghost file contents). Page contents
//! live in raw `pages-N.img` files addressed by pagemaps ([`pagemap`]). The messages, field
//! numbers and magics are CRIU's, so CRIU and its tools read what we write and we read theirs.
//!
//! - [`ImageReader`] / [`ImageWriter`]: framing, typed entries, extra payloads.
//! - [`pb`]: one prost struct per message (`PstreeEntry`, `CoreEntry`, `MmEntry`, ...), each with
//!   a static descriptor ([`schema`]) used by [`json`] to convert any image to and from the JSON
//!   that CRIU's `crit` prints.
//! - [`ImageDir`]: typed read/write of the usual images of a directory by pid or id.
//! - [`names`]: the file names (`core-PID.img`, `pages-N.img`, ...).
//! - Format facts the engine's dump and restore share: [`vma`] (VMA status bits, `TASK_SIZE`),
//!   [`task_state`]; fd types are the generated [`pb::FdTypes`].
//!
//! ```no_run
//! use criu_images::{magic, names, pb, ImageWriter, read_single};
//! let dir = std::path::Path::new("/tmp/img");
//! let mut w = ImageWriter::create_in(dir, names::PSTREE, magic::PSTREE)?;
//! w.write_entry(&pb::PstreeEntry { pid: 7, ppid: 0, pgid: 7, sid: 7, threads: vec![7] })?;
//! w.finish()?;
//! let core: pb::CoreEntry = read_single(dir.join(names::core(7)), magic::CORE)?;
//! println!("{:?}", core.tc.map(|tc| tc.comm));
//! # Ok::<(), criu_images::ImageError>(())
//! ```
//!
//! No unsafe code: everything read is untrusted and reported as an [`ImageError`] naming the file
//! and offset.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod dir;
pub mod error;
pub mod image;
pub mod json;
pub mod magic;
pub mod names;
pub mod pagemap;
pub mod pb;
pub mod schema;
pub mod task_state;
pub mod vma;

pub use dir::{ImageDir, SIGACTION_SLOTS, sigaction_slot};
pub use error::ImageError;
pub use image::{
    ImageReader, ImageWriter, create_file, read_all, read_single, write_all, write_file,
};
pub use pagemap::Pagemap;
pub use schema::Described;
