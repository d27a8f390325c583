//! Any image to and from the JSON that CRIU's `crit` prints, driven by the message descriptors.
//!
//! The document is `{"magic": "CORE", "entries": [ ... ]}`; each entry is an object with the set
//! fields of its message in field-number order, plus `"extra"` for the raw payload that follows
//! some entries (base64, as crit writes it). With `pretty`, integers are shown the way CRIU's
//! annotations ask: `"0x..."` for hex fields (and every integer below a hex message field),
//! `"A | B"` for flags, `"major:minor"` for devices, addresses for IP fields, names for some
//! socket and task values. Encoding accepts both forms and rebuilds the binary image byte for
//! byte.
//!
//! ```no_run
//! use criu_images::json;
//! let bytes = std::fs::read("dir/core-42.img")?;
//! let doc = json::decode_image(&bytes, "dir/core-42.img".as_ref(), json::DecodeOptions::pretty())?;
//! let text = json::to_crit_string(&doc, true);
//! let back = json::encode_image(&serde_json::from_str(&text)?, "core-42.json".as_ref())?;
//! assert_eq!(back, bytes);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::ImageError;
use crate::image::{ImageReader, ImageWriter};
use crate::magic;
use crate::pb;
use crate::schema::{FieldDesc, Kind, Label, MessageDesc};
use crate::vma::status;

/// Errors of the JSON conversion.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// The binary image is malformed (names file and offset).
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The JSON text does not parse.
    #[error("{}: line {line} column {column}: invalid JSON: {reason}", file.display())]
    Syntax {
        /// The input file.
        file: PathBuf,
        /// Line of the error.
        line: usize,
        /// Column of the error.
        column: usize,
        /// What is wrong.
        reason: String,
    },
    /// The JSON parses but is not a valid image document; `at` locates the value
    /// (`entries[3].reg.flags`).
    #[error("{}: {at}: {reason}", file.display())]
    Shape {
        /// The input file.
        file: PathBuf,
        /// Where in the document.
        at: String,
        /// What is wrong.
        reason: String,
    },
    /// An image type crit cannot convert (raw images, or a magic with no known layout).
    #[error("{}: offset {offset}: no handler for {magic} images", file.display())]
    Unsupported {
        /// The input file.
        file: PathBuf,
        /// Offset of the magic (0 for JSON input).
        offset: u64,
        /// The image type.
        magic: String,
    },
}

/// How to decode.
#[derive(Clone, Copy, Debug, Default)]
pub struct DecodeOptions {
    /// Field-specific formatting (hex, flags, devices, addresses), as `crit decode --pretty`.
    pub pretty: bool,
    /// Replace extra payloads by their size (`"... <4KB>"`), as `crit show --nopl`.
    pub no_payload: bool,
}

impl DecodeOptions {
    /// `pretty: true`, payloads included.
    pub fn pretty() -> Self {
        Self {
            pretty: true,
            no_payload: false,
        }
    }
}

/// What follows an entry of an image type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extra {
    /// Nothing.
    None,
    /// `bytes` bytes of pipe/fifo data.
    PipeData,
    /// `length` bytes of socket queue data.
    SkQueue,
    /// `inq_len` then `outq_len` bytes of TCP queues (`{"inq": .., "outq": ..}`).
    TcpStream,
    /// `keys_bytes + values_bytes` of BPF map data.
    BpfmapData,
    /// `nsems` u16 semaphore values, padded to 8 bytes (a list of numbers).
    IpcSem,
    /// `qnum` framed `ipc_msg` entries each followed by data padded to 8 bytes.
    IpcMsg,
    /// `size` bytes of SysV shared memory padded to 4 bytes (unless `in_pagemaps`).
    IpcShm,
}

/// The layout of an image type's entries.
#[derive(Clone, Copy, Debug)]
pub enum Layout {
    /// Entries all of one message, each maybe followed by an extra payload.
    Entries(&'static MessageDesc, Extra),
    /// A `pagemap_head` then `pagemap_entry`s.
    Pagemap,
    /// A `ghost_file_entry` then either chunks (`ghost_chunk_entry` + data) or the whole content.
    GhostFile,
}

/// The layout of the image type named `name` (crit's magic names).
pub fn layout_of(name: &str) -> Option<Layout> {
    use Extra as E;
    let m = |d: &'static MessageDesc| Some(Layout::Entries(d, E::None));
    match name {
        "INVENTORY" => m(&pb::INVENTORY_ENTRY),
        "CORE" => m(&pb::CORE_ENTRY),
        "IDS" => m(&pb::TASK_KOBJ_IDS_ENTRY),
        "CREDS" => m(&pb::CREDS_ENTRY),
        "UTSNS" => m(&pb::UTSNS_ENTRY),
        "TIMENS" => m(&pb::TIMENS_ENTRY),
        "PIDNS" => m(&pb::PIDNS_ENTRY),
        "IPC_VAR" => m(&pb::IPC_VAR_ENTRY),
        "FS" => m(&pb::FS_ENTRY),
        "GHOST_FILE" => Some(Layout::GhostFile),
        "MM" => m(&pb::MM_ENTRY),
        "CGROUP" => m(&pb::CGROUP_ENTRY),
        "TCP_STREAM" => Some(Layout::Entries(&pb::TCP_STREAM_ENTRY, E::TcpStream)),
        "STATS" => m(&pb::STATS_ENTRY),
        "PAGEMAP" => Some(Layout::Pagemap),
        "PSTREE" => m(&pb::PSTREE_ENTRY),
        "REG_FILES" => m(&pb::REG_FILE_ENTRY),
        "NS_FILES" => m(&pb::NS_FILE_ENTRY),
        "EVENTFD_FILE" => m(&pb::EVENTFD_FILE_ENTRY),
        "EVENTPOLL_FILE" => m(&pb::EVENTPOLL_FILE_ENTRY),
        "EVENTPOLL_TFD" => m(&pb::EVENTPOLL_TFD_ENTRY),
        "SIGNALFD" => m(&pb::SIGNALFD_ENTRY),
        "TIMERFD" => m(&pb::TIMERFD_ENTRY),
        "INOTIFY_FILE" => m(&pb::INOTIFY_FILE_ENTRY),
        "INOTIFY_WD" => m(&pb::INOTIFY_WD_ENTRY),
        "FANOTIFY_FILE" => m(&pb::FANOTIFY_FILE_ENTRY),
        "FANOTIFY_MARK" => m(&pb::FANOTIFY_MARK_ENTRY),
        "VMAS" => m(&pb::VMA_ENTRY),
        "PIPES" => m(&pb::PIPE_ENTRY),
        "FIFO" => m(&pb::FIFO_ENTRY),
        "SIGACT" => m(&pb::SA_ENTRY),
        "NETLINK_SK" => m(&pb::NETLINK_SK_ENTRY),
        "REMAP_FPATH" => m(&pb::REMAP_FILE_PATH_ENTRY),
        "MNTS" => m(&pb::MNT_ENTRY),
        "TTY_FILES" => m(&pb::TTY_FILE_ENTRY),
        "TTY_INFO" => m(&pb::TTY_INFO_ENTRY),
        "TTY_DATA" => m(&pb::TTY_DATA_ENTRY),
        "RLIMIT" => m(&pb::RLIMIT_ENTRY),
        "TUNFILE" => m(&pb::TUNFILE_ENTRY),
        "EXT_FILES" => m(&pb::EXT_FILE_ENTRY),
        "IRMAP_CACHE" => m(&pb::IRMAP_CACHE_ENTRY),
        "FILE_LOCKS" => m(&pb::FILE_LOCK_ENTRY),
        "FDINFO" => m(&pb::FDINFO_ENTRY),
        "UNIXSK" => m(&pb::UNIX_SK_ENTRY),
        "INETSK" => m(&pb::INET_SK_ENTRY),
        "PACKETSK" => m(&pb::PACKET_SOCK_ENTRY),
        "ITIMERS" => m(&pb::ITIMER_ENTRY),
        "POSIX_TIMERS" => m(&pb::POSIX_TIMER_ENTRY),
        "NETDEV" => m(&pb::NET_DEVICE_ENTRY),
        "PIPES_DATA" | "FIFO_DATA" => Some(Layout::Entries(&pb::PIPE_DATA_ENTRY, E::PipeData)),
        "SK_QUEUES" => Some(Layout::Entries(&pb::SK_PACKET_ENTRY, E::SkQueue)),
        "IPCNS_SHM" => Some(Layout::Entries(&pb::IPC_SHM_ENTRY, E::IpcShm)),
        "IPCNS_SEM" => Some(Layout::Entries(&pb::IPC_SEM_ENTRY, E::IpcSem)),
        "IPCNS_MSG" => Some(Layout::Entries(&pb::IPC_MSG_ENTRY, E::IpcMsg)),
        "NETNS" => m(&pb::NETNS_ENTRY),
        "USERNS" => m(&pb::USERNS_ENTRY),
        "SECCOMP" => m(&pb::SECCOMP_ENTRY),
        "AUTOFS" => m(&pb::AUTOFS_ENTRY),
        "FILES" => m(&pb::FILE_ENTRY),
        "CPUINFO" => m(&pb::CPUINFO_ENTRY),
        "MEMFD_FILE" => m(&pb::MEMFD_FILE_ENTRY),
        "MEMFD_INODE" => m(&pb::MEMFD_INODE_ENTRY),
        "BPFMAP_FILE" => m(&pb::BPFMAP_FILE_ENTRY),
        "BPFMAP_DATA" => Some(Layout::Entries(&pb::BPFMAP_DATA_ENTRY, E::BpfmapData)),
        "APPARMOR" => m(&pb::APPARMOR_ENTRY),
        "BINFMT_MISC" => m(&pb::BINFMT_MISC_ENTRY),
        "PIDFD" => m(&pb::PIDFD_ENTRY),
        "SIGNAL" => m(&pb::SIGINFO_ENTRY),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Printing tables (CRIU's crit conventions).

const MMAP_PROT: &[(&str, u64)] = &[("PROT_READ", 0x1), ("PROT_WRITE", 0x2), ("PROT_EXEC", 0x4)];
const MMAP_FLAGS: &[(&str, u64)] = &[
    ("MAP_SHARED", 0x1),
    ("MAP_PRIVATE", 0x2),
    ("MAP_DROPPABLE", 0x08),
    ("MAP_ANON", 0x20),
    ("MAP_GROWSDOWN", 0x0100),
];
const MMAP_STATUS: &[(&str, u64)] = &[
    ("VMA_AREA_NONE", 0),
    ("VMA_AREA_REGULAR", status::REGULAR as u64),
    ("VMA_AREA_STACK", status::STACK as u64),
    ("VMA_AREA_VSYSCALL", status::VSYSCALL as u64),
    ("VMA_AREA_VDSO", status::VDSO as u64),
    ("VMA_AREA_HEAP", status::HEAP as u64),
    ("VMA_FILE_PRIVATE", status::FILE_PRIVATE as u64),
    ("VMA_FILE_SHARED", status::FILE_SHARED as u64),
    ("VMA_ANON_SHARED", status::ANON_SHARED as u64),
    ("VMA_ANON_PRIVATE", status::ANON_PRIVATE as u64),
    ("VMA_AREA_SYSVIPC", status::SYSVIPC as u64),
    ("VMA_AREA_SOCKET", status::SOCKET as u64),
    ("VMA_AREA_VVAR", status::VVAR as u64),
    ("VMA_AREA_AIORING", status::AIORING as u64),
    ("VMA_AREA_MEMFD", status::MEMFD as u64),
    ("VMA_AREA_SHSTK", status::SHSTK as u64),
    ("VMA_AREA_UPROBES", status::UPROBES as u64),
    ("VMA_UNSUPP", status::UNSUPP as u64),
];
const RFILE_FLAGS: &[(&str, u64)] = &[
    ("O_WRONLY", 0o1),
    ("O_RDWR", 0o2),
    ("O_CREAT", 0o100),
    ("O_EXCL", 0o200),
    ("O_NOCTTY", 0o400),
    ("O_TRUNC", 0o1000),
    ("O_APPEND", 0o2000),
    ("O_NONBLOCK", 0o4000),
    ("O_DSYNC", 0o10000),
    ("FASYNC", 0o20000),
    ("O_DIRECT", 0o40000),
    ("O_LARGEFILE", 0o100000),
    ("O_DIRECTORY", 0o200000),
    ("O_NOFOLLOW", 0o400000),
    ("O_NOATIME", 0o1000000),
    ("O_CLOEXEC", 0o2000000),
];
const SEALS_FLAGS: &[(&str, u64)] = &[
    ("F_SEAL_SEAL", 0x1),
    ("F_SEAL_SHRINK", 0x2),
    ("F_SEAL_GROW", 0x4),
    ("F_SEAL_WRITE", 0x8),
    ("F_SEAL_FUTURE_WRITE", 0x10),
];
const PMAP_FLAGS: &[(&str, u64)] = &[("PE_PARENT", 1), ("PE_LAZY", 2), ("PE_PRESENT", 4)];

fn flags_table(name: &str) -> Option<&'static [(&'static str, u64)]> {
    Some(match name {
        "mmap.prot" => MMAP_PROT,
        "mmap.flags" => MMAP_FLAGS,
        "mmap.status" => MMAP_STATUS,
        "rfile.flags" => RFILE_FLAGS,
        "pmap.flags" => PMAP_FLAGS,
        "seals.flags" => SEALS_FLAGS,
        _ => return None,
    })
}

fn dict_table(dict: &str, field: &str) -> Option<&'static [(u64, &'static str)]> {
    Some(match (dict, field) {
        ("gen", "task_state") => &[(1, "Alive"), (3, "Zombie"), (6, "Stopped")],
        ("sk", "family") => &[
            (1, "UNIX"),
            (2, "INET"),
            (10, "INET6"),
            (16, "NETLINK"),
            (17, "PACKET"),
        ],
        ("sk", "type") => &[
            (1, "STREAM"),
            (2, "DGRAM"),
            (3, "RAW"),
            (5, "SEQPACKET"),
            (10, "PACKET"),
        ],
        ("sk", "state") => &[
            (1, "ESTABLISHED"),
            (2, "SYN_SENT"),
            (3, "SYN_RECV"),
            (4, "FIN_WAIT1"),
            (5, "FIN_WAIT2"),
            (6, "TIME_WAIT"),
            (7, "CLOSE"),
            (8, "CLOSE_WAIT"),
            (9, "LAST_ACK"),
            (10, "LISTEN"),
        ],
        ("sk", "proto") => &[(0, "IP"), (6, "TCP"), (17, "UDP"), (136, "UDPLITE")],
        _ => return None,
    })
}

/// `"A | B | 0x40"`, as crit prints flags (`""` for zero).
pub fn map_flags(value: u64, table: &[(&str, u64)]) -> String {
    let mut parts: Vec<String> = table
        .iter()
        .filter(|(_, b)| value & b != 0)
        .map(|(n, _)| n.to_string())
        .collect();
    let known: u64 = table.iter().fold(0, |a, (_, b)| a | b);
    let rest = value & !known;
    if rest != 0 {
        parts.push(format!("{rest:#x}"));
    }
    parts.join(" | ")
}

fn unmap_flags(s: &str, table: &[(&str, u64)]) -> Result<u64, String> {
    if s.is_empty() {
        return Ok(0);
    }
    let mut v: u64 = 0;
    for part in s.split('|').map(str::trim) {
        let bit = match table.iter().find(|(n, _)| *n == part) {
            Some((_, b)) => *b,
            None => parse_int(part)
                .and_then(|i| u64::try_from(i).ok())
                .ok_or_else(|| format!("unknown flag {part:?}"))?,
        };
        v = v.wrapping_add(bit);
    }
    Ok(v)
}

/// Parses an integer the way Python's `int(s, 0)` does (sign, `0x`/`0o`/`0b` prefixes,
/// underscores between digits).
fn parse_int(s: &str) -> Option<i128> {
    let t = s.trim();
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let lower = t.to_ascii_lowercase();
    let (radix, digits) = if let Some(r) = lower.strip_prefix("0x") {
        (16, r.to_string())
    } else if let Some(r) = lower.strip_prefix("0o") {
        (8, r.to_string())
    } else if let Some(r) = lower.strip_prefix("0b") {
        (2, r.to_string())
    } else {
        if lower.len() > 1 && lower.starts_with('0') && lower.chars().any(|c| c != '0' && c != '_')
        {
            return None; // Python refuses "010" with base 0.
        }
        (10, lower.clone())
    };
    let digits = digits.strip_prefix('_').unwrap_or(&digits);
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return None;
    }
    let v = i128::from_str_radix(&digits.replace('_', ""), radix).ok()?;
    Some(if neg { -v } else { v })
}

fn hex_string(v: i128) -> String {
    if v < 0 {
        format!("-{:#x}", -v)
    } else {
        format!("{v:#x}")
    }
}

// Python's os.major/os.minor/os.makedev (glibc encoding).
fn old_major(v: u64) -> u64 {
    ((v >> 32) & 0xffff_f000) | ((v >> 8) & 0xfff)
}
fn old_minor(v: u64) -> u64 {
    ((v >> 12) & 0xffff_ff00) | (v & 0xff)
}
fn old_makedev(maj: u64, min: u64) -> u64 {
    ((maj & 0xffff_f000) << 32) | ((maj & 0xfff) << 8) | ((min & 0xffff_ff00) << 12) | (min & 0xff)
}
const KERN_MINORBITS: u32 = 20;

/// IPv6 text as Python's `ipaddress` prints it (RFC 5952 compression, no dotted IPv4 tail).
fn ipv6_compressed(a: Ipv6Addr) -> String {
    let seg = a.segments();
    let (mut best_start, mut best_len) = (usize::MAX, 0);
    let mut i = 0;
    while i < 8 {
        if seg[i] == 0 {
            let start = i;
            while i < 8 && seg[i] == 0 {
                i += 1;
            }
            if i - start > best_len {
                best_start = start;
                best_len = i - start;
            }
        } else {
            i += 1;
        }
    }
    let hex = |s: &[u16]| {
        s.iter()
            .map(|x| format!("{x:x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    if best_len > 1 {
        format!(
            "{}::{}",
            hex(&seg[..best_start]),
            hex(&seg[best_start + best_len..])
        )
    } else {
        hex(&seg)
    }
}

// ---------------------------------------------------------------------------------------------
// Protobuf wire reading.

#[derive(Clone, Copy)]
enum Raw<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

struct Wire<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Wire<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or("truncated field")?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn field(&mut self) -> Result<(u32, Raw<'a>), String> {
        let key = self.varint()?;
        let number = u32::try_from(key >> 3).map_err(|_| "bad field number")?;
        if number == 0 {
            return Err("field number 0".into());
        }
        let raw = match key & 7 {
            0 => Raw::Varint(self.varint()?),
            1 => Raw::Fixed64(u64::from_le_bytes(
                self.take(8)?.try_into().map_err(|_| "truncated")?,
            )),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| "bad length")?;
                Raw::Bytes(self.take(len)?)
            }
            5 => Raw::Fixed32(u32::from_le_bytes(
                self.take(4)?.try_into().map_err(|_| "truncated")?,
            )),
            w => return Err(format!("unsupported wire type {w} (field {number})")),
        };
        Ok((number, raw))
    }
}

/// A decoded scalar before formatting.
enum Scalar {
    Int(i128),
    Bool(bool),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
}

fn scalar_of(kind: &Kind, raw: Raw<'_>) -> Result<Scalar, String> {
    use Kind as K;
    Ok(match (kind, raw) {
        (K::U32, Raw::Varint(v)) => Scalar::Int(i128::from(v as u32)),
        (K::U64, Raw::Varint(v)) => Scalar::Int(i128::from(v)),
        (K::I32 | K::Enum(_), Raw::Varint(v)) => Scalar::Int(i128::from(v as i32)),
        (K::I64, Raw::Varint(v)) => Scalar::Int(i128::from(v as i64)),
        (K::S32, Raw::Varint(v)) => {
            Scalar::Int(i128::from(((v as u32) >> 1) as i32 ^ -((v & 1) as i32)))
        }
        (K::S64, Raw::Varint(v)) => Scalar::Int(i128::from((v >> 1) as i64 ^ -((v & 1) as i64))),
        (K::Bool, Raw::Varint(v)) => Scalar::Bool(v != 0),
        (K::Fixed32, Raw::Fixed32(v)) => Scalar::Int(i128::from(v)),
        (K::Sfixed32, Raw::Fixed32(v)) => Scalar::Int(i128::from(v as i32)),
        (K::Float, Raw::Fixed32(v)) => Scalar::Float(f64::from(f32::from_bits(v))),
        (K::Fixed64, Raw::Fixed64(v)) => Scalar::Int(i128::from(v)),
        (K::Sfixed64, Raw::Fixed64(v)) => Scalar::Int(i128::from(v as i64)),
        (K::Double, Raw::Fixed64(v)) => Scalar::Float(f64::from_bits(v)),
        (K::Str, Raw::Bytes(b)) => Scalar::Str(
            String::from_utf8(b.to_vec()).map_err(|_| "string is not valid UTF-8".to_string())?,
        ),
        (K::Bytes, Raw::Bytes(b)) => Scalar::Bytes(b.to_vec()),
        _ => return Err("wire type does not match the field type".into()),
    })
}

fn unpack_packed<'a>(kind: &Kind, data: &'a [u8]) -> Result<Vec<Raw<'a>>, String> {
    let mut w = Wire { buf: data, pos: 0 };
    let mut out = Vec::new();
    while w.pos < data.len() {
        out.push(match kind.wire_type() {
            0 => Raw::Varint(w.varint()?),
            1 => Raw::Fixed64(u64::from_le_bytes(
                w.take(8)?.try_into().map_err(|_| "truncated")?,
            )),
            5 => Raw::Fixed32(u32::from_le_bytes(
                w.take(4)?.try_into().map_err(|_| "truncated")?,
            )),
            _ => return Err("packed encoding of a non-scalar field".into()),
        });
    }
    Ok(out)
}

/// Decodes one protobuf message into a crit JSON object.
///
/// # Errors
/// A description of the first malformed field (with the field path).
pub fn decode_message(
    desc: &'static MessageDesc,
    buf: &[u8],
    pretty: bool,
) -> Result<Map<String, Value>, String> {
    decode_msg(desc, buf, pretty, false)
}

fn decode_msg(
    desc: &'static MessageDesc,
    buf: &[u8],
    pretty: bool,
    hex: bool,
) -> Result<Map<String, Value>, String> {
    let mut per_field: Vec<Vec<Raw<'_>>> = vec![Vec::new(); desc.fields.len()];
    let mut w = Wire { buf, pos: 0 };
    while w.pos < buf.len() {
        let (number, raw) = w.field().map_err(|e| format!("{}: {e}", desc.name))?;
        let Some(idx) = desc.fields.iter().position(|f| f.number == number) else {
            tracing::debug!(message = desc.name, number, "skipping unknown field");
            continue;
        };
        let f = &desc.fields[idx];
        match (raw, f.kind.wire_type()) {
            (Raw::Bytes(data), 0 | 1 | 5) if f.label == Label::Repeated => per_field[idx].extend(
                unpack_packed(&f.kind, data)
                    .map_err(|e| format!("{}.{}: {e}", desc.name, f.name))?,
            ),
            _ => per_field[idx].push(raw),
        }
    }
    let mut out = Map::new();
    for (f, raws) in desc.fields.iter().zip(per_field) {
        let at = |e: String| format!("{}.{}: {e}", desc.name, f.name);
        let hex = hex || f.opts.hex;
        if f.label == Label::Repeated {
            if raws.is_empty() {
                continue;
            }
            if pretty && f.opts.ipadd && matches!(raws.len(), 1 | 4) {
                let words: Vec<u32> = raws
                    .iter()
                    .map(|r| match r {
                        Raw::Varint(v) => Ok(*v as u32),
                        _ => Err(at("wire type does not match the field type".into())),
                    })
                    .collect::<Result<_, _>>()?;
                let text = if words.len() == 1 {
                    Ipv4Addr::from(u32::from_be(words[0])).to_string()
                } else {
                    let mut o = [0u8; 16];
                    for (i, w) in words.iter().enumerate() {
                        o[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
                    }
                    ipv6_compressed(Ipv6Addr::from(o))
                };
                out.insert(f.name.into(), Value::Array(vec![Value::String(text)]));
                continue;
            }
            let mut vals = Vec::with_capacity(raws.len());
            for r in raws {
                vals.push(decode_value(f, r, pretty, hex).map_err(at)?);
            }
            out.insert(f.name.into(), Value::Array(vals));
        } else if let Kind::Message(sub) = f.kind {
            if raws.is_empty() {
                if f.label == Label::Required {
                    return Err(at("missing required field".into()));
                }
                continue;
            }
            // Repeated occurrences of a message field merge: decode their concatenation.
            let mut joined = Vec::new();
            for r in raws {
                match r {
                    Raw::Bytes(b) => joined.extend_from_slice(b),
                    _ => return Err(at("wire type does not match the field type".into())),
                }
            }
            out.insert(
                f.name.into(),
                Value::Object(decode_msg(sub, &joined, pretty, hex).map_err(at)?),
            );
        } else {
            match raws.last() {
                Some(r) => {
                    out.insert(f.name.into(), decode_value(f, *r, pretty, hex).map_err(at)?);
                }
                None if f.label == Label::Required => {
                    return Err(at("missing required field".into()));
                }
                None => {}
            }
        }
    }
    Ok(out)
}

fn decode_value(f: &FieldDesc, raw: Raw<'_>, pretty: bool, hex: bool) -> Result<Value, String> {
    if let Kind::Message(sub) = f.kind {
        return match raw {
            Raw::Bytes(b) => Ok(Value::Object(decode_msg(sub, b, pretty, hex)?)),
            _ => Err("wire type does not match the field type".into()),
        };
    }
    let s = scalar_of(&f.kind, raw)?;
    Ok(match s {
        Scalar::Bool(b) => Value::Bool(b),
        Scalar::Float(x) => serde_json::Number::from_f64(x)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        Scalar::Str(s) => Value::String(s),
        Scalar::Bytes(b) => Value::String(match f.opts.conv {
            Some("unix_name") => quopri_encode(&b),
            _ => base64_encodebytes(&b),
        }),
        Scalar::Int(i) => {
            if let Kind::Enum(e) = f.kind {
                return Ok(match e.name_of(i as i32) {
                    Some(n) => Value::String(n.into()),
                    None => Value::from(i as i64),
                });
            }
            if pretty {
                if hex {
                    return Ok(Value::String(hex_string(i)));
                }
                if f.opts.dev {
                    let v = i as u64;
                    return Ok(Value::String(if f.opts.odev {
                        format!("{}:{}", old_major(v), old_minor(v))
                    } else {
                        format!(
                            "{}:{}",
                            v >> KERN_MINORBITS,
                            v & ((1 << KERN_MINORBITS) - 1)
                        )
                    }));
                }
                if let Some(name) = f.opts.flags {
                    return Ok(Value::String(match flags_table(name) {
                        Some(t) => map_flags(i as u64, t),
                        None => hex_string(i),
                    }));
                }
                if let Some(d) = f.opts.dict
                    && let Some(t) = dict_table(d, f.name)
                    && let Some((_, n)) = t.iter().find(|(v, _)| i128::from(*v) == i)
                {
                    return Ok(Value::String((*n).into()));
                }
            }
            int_value(i)
        }
    })
}

fn int_value(i: i128) -> Value {
    if let Ok(u) = u64::try_from(i) {
        Value::from(u)
    } else {
        Value::from(i as i64)
    }
}

// ---------------------------------------------------------------------------------------------
// Protobuf wire writing.

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, number: u32, wt: u8) {
    put_varint(out, (u64::from(number) << 3) | u64::from(wt));
}

/// Encodes a crit JSON object as a protobuf message.
///
/// # Errors
/// A description of the first bad value, with its path below `at`.
pub fn encode_message(
    desc: &'static MessageDesc,
    obj: &Map<String, Value>,
    at: &str,
) -> Result<Vec<u8>, (String, String)> {
    let mut out = Vec::new();
    encode_msg(desc, obj, at, &mut out, false)?;
    Ok(out)
}

fn encode_msg(
    desc: &'static MessageDesc,
    obj: &Map<String, Value>,
    at: &str,
    out: &mut Vec<u8>,
    allow_extra: bool,
) -> Result<(), (String, String)> {
    for k in obj.keys() {
        if desc.field_by_name(k).is_none() && !(allow_extra && k == "extra") {
            return Err((
                format!("{at}.{k}"),
                format!("unknown field of {}", desc.name),
            ));
        }
    }
    for f in desc.fields {
        let here = format!("{at}.{}", f.name);
        let Some(v) = obj.get(f.name) else {
            if f.label == Label::Required {
                return Err((here, format!("missing required field of {}", desc.name)));
            }
            continue;
        };
        if f.label == Label::Repeated {
            let Value::Array(items) = v else {
                return Err((here, "expected a list".into()));
            };
            if f.opts.ipadd
                && let Some(Value::String(s)) = items.first()
            {
                let ip: std::net::IpAddr = s
                    .parse()
                    .map_err(|_| (here.clone(), format!("bad IP address {s:?}")))?;
                let words: Vec<u32> = match ip {
                    std::net::IpAddr::V4(a) => vec![u32::from_ne_bytes(a.octets())],
                    std::net::IpAddr::V6(a) => {
                        let o = a.octets();
                        (0..4)
                            .map(|i| {
                                u32::from_ne_bytes([
                                    o[i * 4],
                                    o[i * 4 + 1],
                                    o[i * 4 + 2],
                                    o[i * 4 + 3],
                                ])
                            })
                            .collect()
                    }
                };
                for w in words {
                    put_key(out, f.number, 0);
                    put_varint(out, u64::from(w));
                }
                continue;
            }
            if f.opts.packed {
                let mut body = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    encode_scalar_body(f, item, &mut body)
                        .map_err(|e| (format!("{here}[{i}]"), e))?;
                }
                put_key(out, f.number, 2);
                put_varint(out, body.len() as u64);
                out.extend_from_slice(&body);
            } else {
                for (i, item) in items.iter().enumerate() {
                    encode_field(f, item, &format!("{here}[{i}]"), out)?;
                }
            }
        } else {
            encode_field(f, v, &here, out)?;
        }
    }
    Ok(())
}

fn encode_field(
    f: &FieldDesc,
    v: &Value,
    here: &str,
    out: &mut Vec<u8>,
) -> Result<(), (String, String)> {
    if let Kind::Message(sub) = f.kind {
        let Value::Object(o) = v else {
            return Err((here.into(), "expected an object".into()));
        };
        let mut body = Vec::new();
        encode_msg(sub, o, here, &mut body, false)?;
        put_key(out, f.number, 2);
        put_varint(out, body.len() as u64);
        out.extend_from_slice(&body);
        return Ok(());
    }
    put_key(out, f.number, f.kind.wire_type());
    encode_scalar_body(f, v, out).map_err(|e| (here.into(), e))
}

fn json_int(f: &FieldDesc, v: &Value) -> Result<i128, String> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
            .ok_or_else(|| format!("expected an integer, found {n}")),
        Value::String(s) => {
            if f.opts.dev {
                let (a, b) = s
                    .split_once(':')
                    .ok_or_else(|| format!("bad device {s:?} (want major:minor)"))?;
                let (a, b): (u64, u64) = match (a.trim().parse(), b.trim().parse()) {
                    (Ok(a), Ok(b)) => (a, b),
                    _ => return Err(format!("bad device {s:?}")),
                };
                return Ok(i128::from(if f.opts.odev {
                    old_makedev(a, b)
                } else {
                    (a << KERN_MINORBITS) | b
                }));
            }
            if let Some(t) = f.opts.flags.and_then(flags_table) {
                return unmap_flags(s, t).map(i128::from);
            }
            if let Some(d) = f.opts.dict
                && let Some(t) = dict_table(d, f.name)
                && let Some((v, _)) = t.iter().find(|(_, n)| n == s)
            {
                return Ok(i128::from(*v));
            }
            parse_int(s).ok_or_else(|| format!("bad integer {s:?}"))
        }
        Value::Bool(b) => Ok(i128::from(*b)),
        other => Err(format!("expected an integer, found {other}")),
    }
}

fn encode_scalar_body(f: &FieldDesc, v: &Value, out: &mut Vec<u8>) -> Result<(), String> {
    use Kind as K;
    let range = |i: i128, lo: i128, hi: i128| {
        if i < lo || i > hi {
            Err(format!("{i} out of range for {}", f.name))
        } else {
            Ok(i)
        }
    };
    match f.kind {
        K::U32 => put_varint(out, range(json_int(f, v)?, 0, u32::MAX.into())? as u64),
        K::U64 => put_varint(out, range(json_int(f, v)?, 0, u64::MAX.into())? as u64),
        K::I32 => put_varint(
            out,
            range(json_int(f, v)?, i32::MIN.into(), i32::MAX.into())? as i64 as u64,
        ),
        K::I64 => put_varint(
            out,
            range(json_int(f, v)?, i64::MIN.into(), i64::MAX.into())? as i64 as u64,
        ),
        K::S32 => {
            let i = range(json_int(f, v)?, i32::MIN.into(), i32::MAX.into())? as i32;
            put_varint(out, u64::from(((i << 1) ^ (i >> 31)) as u32));
        }
        K::S64 => {
            let i = range(json_int(f, v)?, i64::MIN.into(), i64::MAX.into())? as i64;
            put_varint(out, ((i << 1) ^ (i >> 63)) as u64);
        }
        K::Fixed32 => out
            .extend_from_slice(&(range(json_int(f, v)?, 0, u32::MAX.into())? as u32).to_le_bytes()),
        K::Sfixed32 => out.extend_from_slice(
            &(range(json_int(f, v)?, i32::MIN.into(), i32::MAX.into())? as i32).to_le_bytes(),
        ),
        K::Fixed64 => out
            .extend_from_slice(&(range(json_int(f, v)?, 0, u64::MAX.into())? as u64).to_le_bytes()),
        K::Sfixed64 => out.extend_from_slice(
            &(range(json_int(f, v)?, i64::MIN.into(), i64::MAX.into())? as i64).to_le_bytes(),
        ),
        K::Float => {
            out.extend_from_slice(&(v.as_f64().ok_or("expected a number")? as f32).to_le_bytes())
        }
        K::Double => out.extend_from_slice(&v.as_f64().ok_or("expected a number")?.to_le_bytes()),
        K::Bool => match v {
            Value::Bool(b) => put_varint(out, u64::from(*b)),
            Value::Number(n) if n.as_u64().is_some() => {
                put_varint(out, u64::from(n.as_u64() != Some(0)))
            }
            _ => return Err(format!("expected a boolean, found {v}")),
        },
        K::Enum(e) => {
            let n = match v {
                Value::String(s) => e
                    .value_of(s)
                    .ok_or_else(|| format!("{s:?} is not a value of enum {}", e.name))?,
                Value::Number(n) => n
                    .as_i64()
                    .and_then(|i| i32::try_from(i).ok())
                    .ok_or_else(|| format!("bad enum number {n}"))?,
                _ => return Err(format!("expected an enum name, found {v}")),
            };
            put_varint(out, n as i64 as u64);
        }
        K::Str => {
            let s = v
                .as_str()
                .ok_or_else(|| format!("expected a string, found {v}"))?;
            put_varint(out, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
        }
        K::Bytes => {
            let s = v
                .as_str()
                .ok_or_else(|| format!("expected a string, found {v}"))?;
            let b = match f.opts.conv {
                Some("unix_name") => quopri_decode(s),
                _ => base64_decode(s)?,
            };
            put_varint(out, b.len() as u64);
            out.extend_from_slice(&b);
        }
        K::Message(_) => return Err("message in scalar position".into()),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// base64 (as Python's base64.encodebytes: lines of 76 characters, each ending in "\n") and
// quoted-printable (as Python's quopri.encodestring, used for unix socket names).

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Base64 with a newline after every 76 characters and at the end (`""` for no bytes).
pub fn base64_encodebytes(data: &[u8]) -> String {
    let mut flat = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                flat.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                flat.push('=');
            }
        }
    }
    let mut out = String::with_capacity(flat.len() + flat.len() / 76 + 1);
    for line in flat.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// Decodes base64, ignoring characters outside the alphabet (as Python's `decodebytes`).
///
/// # Errors
/// Incorrect padding.
pub fn base64_decode(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let mut acc: u32 = 0;
    let mut n = 0;
    let mut pad = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => {
                pad += 1;
                continue;
            }
            _ => continue,
        };
        if pad > 0 {
            return Err("bad base64: data after padding".into());
        }
        acc = (acc << 6) | u32::from(v);
        n += 1;
        if n == 4 {
            out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8, acc as u8]);
            acc = 0;
            n = 0;
        }
    }
    match n {
        0 => {}
        2 => out.push((acc >> 4) as u8),
        3 => out.extend_from_slice(&[(acc >> 10) as u8, (acc >> 2) as u8]),
        _ => return Err("bad base64: incorrect padding".into()),
    }
    Ok(out)
}

/// Quoted-printable as Python's `quopri.encodestring` (how crit shows unix socket names) (no header mode, quote tabs/spaces at line
/// ends, soft line breaks at 76 characters).
pub fn quopri_encode(data: &[u8]) -> String {
    let needs = |c: u8| c == b'=' || !(b' '..=b'~').contains(&c) && c != b'\t' && c != b'\n';
    let mut out = String::new();
    let lines: Vec<&[u8]> = data.split_inclusive(|&c| c == b'\n').collect();
    for line in lines {
        let (body, nl) = match line.strip_suffix(b"\n") {
            Some(b) => (b, true),
            None => (line, false),
        };
        let mut enc: Vec<String> = body
            .iter()
            .map(|&c| {
                if needs(c) {
                    format!("={c:02X}")
                } else {
                    (c as char).to_string()
                }
            })
            .collect();
        if let Some(last) = enc.last_mut()
            && (last == " " || last == "\t")
        {
            *last = format!("={:02X}", last.as_bytes()[0]);
        }
        let mut cur = String::new();
        for piece in enc {
            if cur.len() + piece.len() > 75 {
                out.push_str(&cur);
                out.push_str("=\n");
                cur.clear();
            }
            cur.push_str(&piece);
        }
        out.push_str(&cur);
        if nl {
            out.push('\n');
        }
    }
    out
}

fn quopri_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' {
            if b.get(i + 1) == Some(&b'\n') {
                i += 2;
                continue;
            }
            if let (Some(h), Some(l)) = (b.get(i + 1), b.get(i + 2))
                && let Ok(v) =
                    u8::from_str_radix(std::str::from_utf8(&[*h, *l]).unwrap_or("zz"), 16)
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Whole images.

fn human_size(n: u64) -> String {
    let mut x = n as f64;
    for unit in ["", "K", "M", "G", "T", "P", "E", "Z"] {
        if x < 1024.0 {
            return if x.fract() == 0.0 {
                format!("{x:.0}{unit}B")
            } else {
                format!("{x:.1}{unit}B")
            };
        }
        x /= 1024.0;
    }
    format!("{x:.1}YB")
}

fn round_up(x: u64, to: u64) -> u64 {
    x.div_ceil(to) * to
}

fn uint_field(obj: &Map<String, Value>, name: &str) -> u64 {
    obj.get(name).and_then(Value::as_u64).unwrap_or(0)
}

/// Decodes a whole binary image into crit's JSON document.
///
/// # Errors
/// Framing and decoding errors with file and offset; [`JsonError::Unsupported`] for image types
/// without a layout (raw images fail as [`ImageError::UnknownMagic`]).
pub fn decode_image(bytes: &[u8], file: &Path, opts: DecodeOptions) -> Result<Value, JsonError> {
    let mut r = ImageReader::new(bytes, file)?;
    let name = magic::name_of(r.magic()).unwrap_or("?");
    let layout = layout_of(name).ok_or_else(|| JsonError::Unsupported {
        file: file.into(),
        offset: r.offset() - 4,
        magic: name.into(),
    })?;
    let entries = decode_entries(&mut r, layout, opts)?;
    let mut doc = Map::new();
    doc.insert("magic".into(), Value::String(name.into()));
    doc.insert("entries".into(), Value::Array(entries));
    Ok(Value::Object(doc))
}

fn entry<R: std::io::Read>(
    r: &mut ImageReader<R>,
    desc: &'static MessageDesc,
    pretty: bool,
) -> Result<Option<ShownAndPlain>, JsonError> {
    let start = r.offset();
    let Some(buf) = r.read_entry_bytes()? else {
        return Ok(None);
    };
    let bad = |reason: String| ImageError::Decode {
        file: r.file().into(),
        offset: start,
        message: desc.name,
        reason,
    };
    let shown = decode_msg(desc, &buf, pretty, false).map_err(bad)?;
    let plain = if pretty {
        decode_msg(desc, &buf, false, false).map_err(bad)?
    } else {
        shown.clone()
    };
    Ok(Some((shown, plain)))
}

fn decode_entries<R: std::io::Read>(
    r: &mut ImageReader<R>,
    layout: Layout,
    opts: DecodeOptions,
) -> Result<Vec<Value>, JsonError> {
    let mut out = Vec::new();
    match layout {
        Layout::Pagemap => {
            let mut desc: &'static MessageDesc = &pb::PAGEMAP_HEAD;
            while let Some((e, _)) = entry(r, desc, opts.pretty)? {
                out.push(Value::Object(e));
                desc = &pb::PAGEMAP_ENTRY;
            }
        }
        Layout::GhostFile => {
            let (mut g, plain) =
                entry(r, &pb::GHOST_FILE_ENTRY, opts.pretty)?.ok_or_else(|| {
                    ImageError::Missing {
                        file: r.file().into(),
                        offset: r.offset(),
                        message: pb::GHOST_FILE_ENTRY.name,
                    }
                })?;
            if plain.get("chunks") == Some(&Value::Bool(true)) {
                out.push(Value::Object(g));
                while let Some((mut c, plain)) = entry(r, &pb::GHOST_CHUNK_ENTRY, opts.pretty)? {
                    let len = uint_field(&plain, "len");
                    let data = r.read_extra(len)?;
                    c.insert("extra".into(), extra_bytes(&data, opts));
                    out.push(Value::Object(c));
                }
            } else {
                let data = r.read_rest()?;
                g.insert("extra".into(), extra_bytes(&data, opts));
                out.push(Value::Object(g));
            }
        }
        Layout::Entries(desc, extra) => {
            while let Some((mut e, plain)) = entry(r, desc, opts.pretty)? {
                if extra != Extra::None {
                    let x = read_extra(r, extra, &plain, opts)?;
                    if let Some(x) = x {
                        e.insert("extra".into(), x);
                    }
                }
                out.push(Value::Object(e));
            }
        }
    }
    Ok(out)
}

/// An entry as shown (maybe pretty) and as plain values (to read lengths from).
type ShownAndPlain = (Map<String, Value>, Map<String, Value>);

fn extra_bytes(data: &[u8], opts: DecodeOptions) -> Value {
    if opts.no_payload {
        Value::String(format!("... <{}>", human_size(data.len() as u64)))
    } else {
        Value::String(base64_encodebytes(data))
    }
}

fn read_extra<R: std::io::Read>(
    r: &mut ImageReader<R>,
    extra: Extra,
    plain: &Map<String, Value>,
    opts: DecodeOptions,
) -> Result<Option<Value>, JsonError> {
    Ok(Some(match extra {
        Extra::None => return Ok(None),
        Extra::PipeData => extra_bytes(&r.read_extra(uint_field(plain, "bytes"))?, opts),
        Extra::SkQueue => extra_bytes(&r.read_extra(uint_field(plain, "length"))?, opts),
        Extra::BpfmapData => {
            let n = uint_field(plain, "keys_bytes") + uint_field(plain, "values_bytes");
            extra_bytes(&r.read_extra(n)?, opts)
        }
        Extra::TcpStream => {
            let inq = r.read_extra(uint_field(plain, "inq_len"))?;
            let outq = r.read_extra(uint_field(plain, "outq_len"))?;
            if opts.no_payload {
                Value::String(format!(
                    "... <{}>",
                    human_size((inq.len() + outq.len()) as u64)
                ))
            } else {
                let mut m = Map::new();
                m.insert("inq".into(), Value::String(base64_encodebytes(&inq)));
                m.insert("outq".into(), Value::String(base64_encodebytes(&outq)));
                Value::Object(m)
            }
        }
        Extra::IpcShm => {
            if plain.get("in_pagemaps") == Some(&Value::Bool(true)) {
                return Ok(None);
            }
            let size = uint_field(plain, "size");
            let data = r.read_extra(size)?;
            r.read_extra(round_up(size, 4) - size)?;
            extra_bytes(&data, opts)
        }
        Extra::IpcSem => {
            let size = 2 * uint_field(plain, "nsems");
            let data = r.read_extra(size)?;
            r.read_extra(round_up(size, 8) - size)?;
            if opts.no_payload {
                Value::String(format!("... <{}>", human_size(size)))
            } else {
                Value::Array(
                    data.chunks(2)
                        .map(|c| Value::from(u16::from_le_bytes([c[0], c[1]])))
                        .collect(),
                )
            }
        }
        Extra::IpcMsg => {
            let mut items = Vec::new();
            let mut total = 0u64;
            for _ in 0..uint_field(plain, "qnum") {
                let Some((m, mplain)) = entry(r, &pb::IPC_MSG, false)? else {
                    break;
                };
                let msize = uint_field(&mplain, "msize");
                let data = r.read_extra(msize)?;
                r.read_extra(round_up(msize, 8) - msize)?;
                total += msize;
                items.push(Value::Object(m));
                items.push(Value::String(base64_encodebytes(&data)));
            }
            if opts.no_payload {
                Value::String(format!("... <{}>", human_size(total)))
            } else {
                Value::Array(items)
            }
        }
    }))
}

/// `{"magic": NAME, "count": N}` as `crit info` prints: the number of entries (for a pagemap, of
/// page runs, not counting the head).
///
/// # Errors
/// As [`decode_image`].
pub fn info(bytes: &[u8], file: &Path) -> Result<Value, JsonError> {
    let doc = decode_image(
        bytes,
        file,
        DecodeOptions {
            pretty: false,
            no_payload: true,
        },
    )?;
    let name = doc["magic"].as_str().unwrap_or("?").to_string();
    let mut n = doc["entries"].as_array().map_or(0, Vec::len);
    if name == "PAGEMAP" {
        n = n.saturating_sub(1);
    }
    let mut m = Map::new();
    m.insert("magic".into(), Value::String(name));
    m.insert("count".into(), Value::from(n));
    Ok(Value::Object(m))
}

/// Encodes crit's JSON document back into the binary image.
///
/// # Errors
/// [`JsonError::Shape`] naming the first bad value (`entries[2].reg.flags`).
pub fn encode_image(doc: &Value, file: &Path) -> Result<Vec<u8>, JsonError> {
    let shape = |at: &str, reason: String| JsonError::Shape {
        file: file.into(),
        at: at.into(),
        reason,
    };
    let obj = doc.as_object().ok_or_else(|| {
        shape(
            "top level",
            "expected an object with magic and entries".into(),
        )
    })?;
    let name = obj
        .get("magic")
        .and_then(Value::as_str)
        .ok_or_else(|| shape("magic", "missing or not a string".into()))?;
    let m = magic::by_name(name)
        .ok_or_else(|| shape("magic", format!("unknown image magic {name:?}")))?;
    let layout = layout_of(name).ok_or_else(|| JsonError::Unsupported {
        file: file.into(),
        offset: 0,
        magic: name.into(),
    })?;
    let entries = obj
        .get("entries")
        .and_then(Value::as_array)
        .ok_or_else(|| shape("entries", "missing or not a list".into()))?;
    let mut w = ImageWriter::new(Vec::new(), file, m)?;
    let err = |(at, reason): (String, String)| JsonError::Shape {
        file: file.into(),
        at,
        reason,
    };
    for (i, e) in entries.iter().enumerate() {
        let at = format!("entries[{i}]");
        let o = e
            .as_object()
            .ok_or_else(|| shape(&at, "expected an object".into()))?;
        let desc: &'static MessageDesc = match layout {
            Layout::Pagemap if i == 0 => &pb::PAGEMAP_HEAD,
            Layout::Pagemap => &pb::PAGEMAP_ENTRY,
            Layout::GhostFile if i == 0 => &pb::GHOST_FILE_ENTRY,
            Layout::GhostFile => &pb::GHOST_CHUNK_ENTRY,
            Layout::Entries(d, _) => d,
        };
        let has_extra = !matches!(layout, Layout::Pagemap | Layout::Entries(_, Extra::None));
        let mut buf = Vec::new();
        encode_msg(desc, o, &at, &mut buf, has_extra).map_err(err)?;
        w.write_entry_bytes(&buf)?;
        let Some(x) = o.get("extra") else { continue };
        let xat = format!("{at}.extra");
        let b64 = |v: &Value| -> Result<Vec<u8>, JsonError> {
            let s = v
                .as_str()
                .ok_or_else(|| shape(&xat, "expected a base64 string".into()))?;
            base64_decode(s).map_err(|e| shape(&xat, e))
        };
        match layout {
            Layout::GhostFile
            | Layout::Entries(_, Extra::PipeData | Extra::SkQueue | Extra::BpfmapData) => {
                w.write_extra(&b64(x)?)?
            }
            Layout::Entries(_, Extra::TcpStream) => {
                let q = |k: &str| x.get(k).ok_or_else(|| shape(&xat, format!("missing {k}")));
                w.write_extra(&b64(q("inq")?)?)?;
                w.write_extra(&b64(q("outq")?)?)?;
            }
            Layout::Entries(_, Extra::IpcShm) => {
                let size = json_u64(o, "size");
                let mut data = b64(x)?;
                data.resize(round_up(size, 4) as usize, 0);
                w.write_extra(&data)?;
            }
            Layout::Entries(_, Extra::IpcSem) => {
                let vals = x
                    .as_array()
                    .ok_or_else(|| shape(&xat, "expected a list of numbers".into()))?;
                let nsems = json_u64(o, "nsems");
                if vals.len() as u64 != nsems {
                    return Err(shape(
                        &xat,
                        format!("{} values for {nsems} semaphores", vals.len()),
                    ));
                }
                let mut data = Vec::new();
                for v in vals {
                    let n = v
                        .as_u64()
                        .and_then(|n| u16::try_from(n).ok())
                        .ok_or_else(|| shape(&xat, "bad semaphore value".into()))?;
                    data.extend_from_slice(&n.to_le_bytes());
                }
                data.resize(round_up(data.len() as u64, 8) as usize, 0);
                w.write_extra(&data)?;
            }
            Layout::Entries(_, Extra::IpcMsg) => {
                let items = x
                    .as_array()
                    .ok_or_else(|| shape(&xat, "expected a list".into()))?;
                for (j, pair) in items.chunks(2).enumerate() {
                    let mat = format!("{xat}[{}]", 2 * j);
                    let mo = pair[0]
                        .as_object()
                        .ok_or_else(|| shape(&mat, "expected an ipc_msg object".into()))?;
                    let mut mb = Vec::new();
                    encode_msg(&pb::IPC_MSG, mo, &mat, &mut mb, false).map_err(err)?;
                    w.write_entry_bytes(&mb)?;
                    let msize = json_u64(mo, "msize") as usize;
                    let mut data = b64(pair
                        .get(1)
                        .ok_or_else(|| shape(&mat, "message without data".into()))?)?;
                    data.resize(msize, 0);
                    data.resize(round_up(msize as u64, 8) as usize, 0);
                    w.write_extra(&data)?;
                }
            }
            Layout::Pagemap | Layout::Entries(_, Extra::None) => {}
        }
    }
    Ok(w.finish()?)
}

fn json_u64(o: &Map<String, Value>, k: &str) -> u64 {
    match o.get(k) {
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(Value::String(s)) => parse_int(s)
            .and_then(|i| u64::try_from(i).ok())
            .unwrap_or(0),
        _ => 0,
    }
}

/// Parses JSON text, reporting syntax errors with line and column.
///
/// # Errors
/// [`JsonError::Syntax`].
pub fn parse_json(text: &[u8], file: &Path) -> Result<Value, JsonError> {
    serde_json::from_slice(text).map_err(|e| JsonError::Syntax {
        file: file.into(),
        line: e.line(),
        column: e.column(),
        reason: e.to_string(),
    })
}

/// Formats JSON exactly as Python's `json.dump` does: with `pretty`, an indent of 4 and `": "`;
/// otherwise one line with `", "` and `": "`; non-ASCII escaped as `\uXXXX`. No final newline.
pub fn to_crit_string(v: &Value, pretty: bool) -> String {
    let mut out = String::new();
    write_value(&mut out, v, pretty, 0);
    out
}

fn write_value(out: &mut String, v: &Value, pretty: bool, depth: usize) {
    let nl = |out: &mut String, d: usize| {
        out.push('\n');
        for _ in 0..d * 4 {
            out.push(' ');
        }
    };
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_str(out, s),
        Value::Array(a) => {
            if a.is_empty() {
                out.push_str("[]");
                return;
            }
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                    if !pretty {
                        out.push(' ');
                    }
                }
                if pretty {
                    nl(out, depth + 1);
                }
                write_value(out, x, pretty, depth + 1);
            }
            if pretty {
                nl(out, depth);
            }
            out.push(']');
        }
        Value::Object(o) => {
            if o.is_empty() {
                out.push_str("{}");
                return;
            }
            out.push('{');
            for (i, (k, x)) in o.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                    if !pretty {
                        out.push(' ');
                    }
                }
                if pretty {
                    nl(out, depth + 1);
                }
                write_str(out, k);
                out.push_str(": ");
                write_value(out, x, pretty, depth + 1);
            }
            if pretty {
                nl(out, depth);
            }
            out.push('}');
        }
    }
}

fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (' '..='~').contains(&c) => out.push(c),
            c => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_python() {
        assert_eq!(base64_encodebytes(b""), "");
        assert_eq!(base64_encodebytes(b"a"), "YQ==\n");
        assert_eq!(base64_encodebytes(b"hello world"), "aGVsbG8gd29ybGQ=\n");
        let long = vec![0u8; 60];
        let enc = base64_encodebytes(&long);
        assert_eq!(enc, format!("{}\n{}\n", "A".repeat(76), "A".repeat(4)));
        assert_eq!(base64_decode(&enc).unwrap(), long);
        assert!(base64_decode("YQ=").is_ok());
        assert!(base64_decode("Y").is_err());
    }

    #[test]
    fn flags_and_ints() {
        assert_eq!(map_flags(0, RFILE_FLAGS), "");
        assert_eq!(map_flags(0o100001, RFILE_FLAGS), "O_WRONLY | O_LARGEFILE");
        assert_eq!(map_flags(0x4 | 0x40, PMAP_FLAGS), "PE_PRESENT | 0x40");
        assert_eq!(unmap_flags("PE_PRESENT | 0x40", PMAP_FLAGS).unwrap(), 0x44);
        assert!(unmap_flags("PE_BOGUS", PMAP_FLAGS).is_err());
        assert_eq!(parse_int("0x1f"), Some(31));
        assert_eq!(parse_int("-12"), Some(-12));
        assert_eq!(parse_int("010"), None);
        assert_eq!(parse_int("0"), Some(0));
        assert_eq!(hex_string(-5), "-0x5");
    }

    #[test]
    fn devices_and_addresses() {
        for (maj, min) in [(8, 1), (259, 3), (4095, 1 << 19)] {
            let v = old_makedev(maj, min);
            assert_eq!((old_major(v), old_minor(v)), (maj, min));
        }
        assert_eq!(ipv6_compressed("::1".parse().unwrap()), "::1");
        assert_eq!(
            ipv6_compressed("::ffff:1.2.3.4".parse().unwrap()),
            "::ffff:102:304"
        );
        assert_eq!(
            ipv6_compressed("fe80:0:1::1".parse().unwrap()),
            "fe80:0:1::1"
        );
        assert_eq!(
            ipv6_compressed("1:2:3:4:5:6:7:8".parse().unwrap()),
            "1:2:3:4:5:6:7:8"
        );
    }

    #[test]
    fn quopri_roundtrip() {
        let name = b"\0abc= \xff/tmp/sock ";
        let enc = quopri_encode(name);
        assert_eq!(quopri_decode(&enc), name);
        assert_eq!(quopri_encode(b"/tmp/x"), "/tmp/x");
    }

    #[test]
    fn python_json_format() {
        let v: Value = serde_json::from_str(r#"{"a": [1, {"b": "é"}], "c": {}, "d": []}"#).unwrap();
        assert_eq!(
            to_crit_string(&v, false),
            r#"{"a": [1, {"b": "\u00e9"}], "c": {}, "d": []}"#
        );
        assert_eq!(
            to_crit_string(&v, true),
            "{\n    \"a\": [\n        1,\n        {\n            \"b\": \"\\u00e9\"\n        }\n    ],\n    \"c\": {},\n    \"d\": []\n}"
        );
    }
}
