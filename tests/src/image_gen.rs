//! Images of every kind, made up for the fuzz tests (issue 23): a random but well-formed image
//! for any magic criu-images knows ([`criu_images::magic::MAGICS`]), built from the schema's
//! descriptors (every field of every message, nested messages to a bounded depth, extra payloads
//! of the length the entry says), a mutator that damages any image, and the file name a restore
//! reads an image of that kind under.

use criu_images::json::{Extra, Layout, layout_of};
use criu_images::magic;
use criu_images::pb;
use criu_images::schema::{Kind, Label, MessageDesc};

use crate::rng::Rng;

/// Nested messages deeper than this get only their required fields.
const MAX_DEPTH: usize = 4;

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(number: u32, wire: u8, out: &mut Vec<u8>) {
    varint(u64::from(number) << 3 | u64::from(wire), out);
}

/// A number that is often small, sometimes a boundary.
fn number(rng: &mut Rng) -> u64 {
    match rng.below(6) {
        0 => 0,
        1 => 1,
        2 => rng.bits() & 0xff,
        3 => rng.bits() & 0xffff_ffff,
        4 => [0x7fff_ffff, 0xffff_ffff, u64::MAX, 4096, 0x7fff_ffff_ffff][rng.below(5)],
        _ => rng.bits() & 0xfff,
    }
}

/// One scalar value of `kind` (not a message), its wire bytes appended to `out`.
fn scalar(rng: &mut Rng, kind: Kind, out: &mut Vec<u8>) {
    match kind {
        Kind::U32 | Kind::Enum(_) | Kind::I32 | Kind::S32 => {
            let v = match kind {
                Kind::Enum(e) if !e.values.is_empty() && rng.below(8) != 0 => {
                    e.values[rng.below(e.values.len())].1 as i64 as u64
                }
                Kind::I32 => number(rng) as u32 as i32 as i64 as u64,
                _ => number(rng) & 0xffff_ffff,
            };
            varint(v, out)
        }
        Kind::U64 | Kind::I64 | Kind::S64 => varint(number(rng), out),
        Kind::Bool => out.push(rng.below(2) as u8),
        Kind::Fixed32 | Kind::Sfixed32 | Kind::Float => {
            out.extend_from_slice(&(number(rng) as u32).to_le_bytes())
        }
        Kind::Fixed64 | Kind::Sfixed64 | Kind::Double => {
            out.extend_from_slice(&number(rng).to_le_bytes())
        }
        Kind::Str | Kind::Bytes => {
            let n = rng.below(24);
            let s: Vec<u8> = (0..n)
                .map(|_| {
                    if matches!(kind, Kind::Str) {
                        b"abcdefghijklmnopqrstuvwxyz/._-0123456789"[rng.below(40)]
                    } else {
                        rng.bits() as u8
                    }
                })
                .collect();
            varint(s.len() as u64, out);
            out.extend_from_slice(&s);
        }
        Kind::Message(_) => unreachable!("messages are built by `message`"),
    }
}

/// A random encoding of a `desc` message: required fields always, optional ones most of the
/// time, repeated ones 0 to 3 times (packed where the schema says so); `fixed` gives top-level
/// fields a value of the caller's (lengths that an extra payload must match).
pub fn message(rng: &mut Rng, desc: &MessageDesc, depth: usize, fixed: &[(&str, u64)]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in desc.fields {
        if let Some((_, v)) = fixed.iter().find(|(n, _)| *n == f.name) {
            key(f.number, f.kind.wire_type(), &mut out);
            varint(*v, &mut out);
            continue;
        }
        let nested = matches!(f.kind, Kind::Message(_));
        let count = match f.label {
            Label::Required => 1,
            _ if nested && depth >= MAX_DEPTH => 0,
            Label::Optional => usize::from(rng.below(4) != 0),
            Label::Repeated => rng.below(4),
        };
        if count == 0 {
            continue;
        }
        if let Kind::Message(m) = f.kind {
            for _ in 0..count {
                let inner = message(rng, m, depth + 1, &[]);
                key(f.number, 2, &mut out);
                varint(inner.len() as u64, &mut out);
                out.extend_from_slice(&inner);
            }
        } else if f.opts.packed && f.label == Label::Repeated {
            let mut packed = Vec::new();
            for _ in 0..count {
                scalar(rng, f.kind, &mut packed);
            }
            key(f.number, 2, &mut out);
            varint(packed.len() as u64, &mut out);
            out.extend_from_slice(&packed);
        } else {
            for _ in 0..count {
                key(f.number, f.kind.wire_type(), &mut out);
                scalar(rng, f.kind, &mut out);
            }
        }
    }
    out
}

fn frame(entry: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(entry.len() as u32).to_le_bytes());
    out.extend_from_slice(entry);
}

fn junk(rng: &mut Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.bits() as u8).collect()
}

/// A random well-formed image of the kind crit calls `name` (`"CORE"`, `"PIPES_DATA"`, ...):
/// its magics, 1 to 3 entries, each followed by the extra payload its lengths announce.
/// `None` for a kind without a layout (the two header magics, `KDAT`).
pub fn image(rng: &mut Rng, name: &str) -> Option<Vec<u8>> {
    let m = magic::by_name(name)?;
    let layout = layout_of(name)?;
    let mut out = Vec::new();
    for h in magic::header(m) {
        out.extend_from_slice(&h.to_le_bytes());
    }
    let n = 1 + rng.below(3);
    match layout {
        Layout::Pagemap => {
            frame(&message(rng, &pb::PAGEMAP_HEAD, 0, &[]), &mut out);
            for _ in 0..n {
                frame(&message(rng, &pb::PAGEMAP_ENTRY, 0, &[]), &mut out);
            }
        }
        Layout::GhostFile => {
            let chunks = rng.below(2) == 0;
            let g = message(rng, &pb::GHOST_FILE_ENTRY, 0, &[("chunks", chunks as u64)]);
            frame(&g, &mut out);
            if chunks {
                for _ in 0..n {
                    let len = rng.below(64) as u64;
                    frame(
                        &message(rng, &pb::GHOST_CHUNK_ENTRY, 0, &[("len", len)]),
                        &mut out,
                    );
                    out.extend(junk(rng, len as usize));
                }
            } else {
                let len = rng.below(256);
                out.extend(junk(rng, len));
            }
        }
        Layout::Entries(desc, extra) => {
            for _ in 0..n {
                let a = rng.below(64) as u64;
                let b = rng.below(64) as u64;
                let (fixed, payload): (Vec<(&str, u64)>, u64) = match extra {
                    Extra::None => (vec![], 0),
                    Extra::PipeData => (vec![("bytes", a)], a),
                    Extra::SkQueue => (vec![("length", a)], a),
                    Extra::TcpStream => (vec![("inq_len", a), ("outq_len", b)], a + b),
                    Extra::BpfmapData => (vec![("keys_bytes", a), ("values_bytes", b)], a + b),
                    Extra::IpcSem => (vec![("nsems", a)], (a * 2).div_ceil(8) * 8),
                    Extra::IpcMsg => (vec![("qnum", 0)], 0),
                    Extra::IpcShm => (vec![("size", 8), ("in_pagemaps", 0)], 8),
                };
                frame(&message(rng, desc, 0, &fixed), &mut out);
                out.extend(junk(rng, payload as usize));
            }
        }
    }
    Some(out)
}

/// Every image kind criu-images knows, by crit's name, but the two header magics.
pub fn kinds() -> impl Iterator<Item = &'static str> {
    magic::MAGICS
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| *n != "IMG_COMMON" && *n != "IMG_SERVICE")
}

/// The ids a restore of an image directory puts in its per-task and per-namespace file names:
/// the root task's pid and its `ids-PID.img`.
#[derive(Clone, Debug)]
pub struct DirIds {
    /// The root task's pid.
    pub pid: u32,
    /// Its kernel object ids (`files_id`, namespace ids).
    pub ids: pb::TaskKobjIdsEntry,
}

pub fn file_name(name: &str, ids: &DirIds) -> Option<String> {
    let pid = ids.pid;
    let i = &ids.ids;
    let ns = |v: Option<u32>| v.unwrap_or(0);
    Some(match name {
        "INVENTORY" => "inventory.img".into(),
        "PSTREE" => "pstree.img".into(),
        "FDINFO" => format!("fdinfo-{}.img", i.files_id),
        "PAGEMAP" => format!("pagemap-{pid}.img"),
        "CORE" => format!("core-{pid}.img"),
        "IDS" => format!("ids-{pid}.img"),
        "VMAS" => format!("vmas-{pid}.img"),
        "PIPES" => "pipes.img".into(),
        "PIPES_DATA" => "pipes-data.img".into(),
        "FIFO" => "fifo.img".into(),
        "FIFO_DATA" => "fifo-data.img".into(),
        "SIGACT" => format!("sigacts-{pid}.img"),
        "UNIXSK" => "unixsk.img".into(),
        "INETSK" => "inetsk.img".into(),
        "PACKETSK" => "packetsk.img".into(),
        "ITIMERS" => format!("itimers-{pid}.img"),
        "POSIX_TIMERS" => format!("posix-timers-{pid}.img"),
        "SK_QUEUES" => "sk-queues.img".into(),
        "UTSNS" => format!("utsns-{}.img", ns(i.uts_ns_id)),
        "CREDS" => format!("creds-{pid}.img"),
        "IPC_VAR" => format!("ipcns-var-{}.img", ns(i.ipc_ns_id)),
        "IPCNS_SHM" => format!("ipcns-shm-{}.img", ns(i.ipc_ns_id)),
        "IPCNS_MSG" => format!("ipcns-msg-{}.img", ns(i.ipc_ns_id)),
        "IPCNS_SEM" => format!("ipcns-sem-{}.img", ns(i.ipc_ns_id)),
        "REG_FILES" => "reg-files.img".into(),
        "EXT_FILES" => "ext-files.img".into(),
        "FS" => format!("fs-{pid}.img"),
        "MM" => format!("mm-{pid}.img"),
        "REMAP_FPATH" => "remap-fpath.img".into(),
        "GHOST_FILE" => "ghost-file-1.img".into(),
        "TCP_STREAM" => "tcp-stream-1.img".into(),
        "EVENTFD_FILE" => "eventfd.img".into(),
        "EVENTPOLL_FILE" => "eventpoll.img".into(),
        "EVENTPOLL_TFD" => "eventpoll-tfd.img".into(),
        "SIGNALFD" => "signalfd.img".into(),
        "INOTIFY_FILE" => "inotify.img".into(),
        "INOTIFY_WD" => "inotify-wd.img".into(),
        "MNTS" => format!("mountpoints-{}.img", ns(i.mnt_ns_id)),
        "NETDEV" => format!("netdev-{}.img", ns(i.net_ns_id)),
        "NETNS" => format!("netns-{}.img", ns(i.net_ns_id)),
        "TTY_FILES" => "tty.img".into(),
        "TTY_INFO" => "tty-info.img".into(),
        "TTY_DATA" => "tty-data.img".into(),
        "FILE_LOCKS" => "filelocks.img".into(),
        "RLIMIT" => format!("rlimit-{pid}.img"),
        "FANOTIFY_FILE" => "fanotify.img".into(),
        "FANOTIFY_MARK" => "fanotify-mark.img".into(),
        "SIGNAL" => format!("signal-p-{pid}.img"),
        "NETLINK_SK" => "netlinksk.img".into(),
        "NS_FILES" => "ns-files.img".into(),
        "TUNFILE" => "tunfile.img".into(),
        "CGROUP" => "cgroup.img".into(),
        "TIMERFD" => "timerfd.img".into(),
        "CPUINFO" => "cpuinfo.img".into(),
        "USERNS" => format!("userns-{}.img", ns(i.user_ns_id)),
        "SECCOMP" => "seccomp.img".into(),
        "BINFMT_MISC" => format!("binfmt-misc-{}.img", ns(i.mnt_ns_id)),
        "AUTOFS" => format!("autofs-{}.img", ns(i.mnt_ns_id)),
        "FILES" => "files.img".into(),
        "MEMFD_INODE" => "memfd.img".into(),
        "TIMENS" => "timens-0.img".into(),
        "PIDNS" => format!("pidns-{}.img", ns(i.pid_ns_id)),
        "BPFMAP_FILE" => "bpfmap-file.img".into(),
        "BPFMAP_DATA" => "bpfmap-data.img".into(),
        "APPARMOR" => "apparmor.img".into(),
        "PIDFD" => "pidfd.img".into(),
        "STATS" => "stats-restore".into(),
        "IRMAP_CACHE" => "irmap-cache".into(),
        _ => return None,
    })
}

const INTERESTING: [u64; 10] = [
    0,
    1,
    0x7f,
    0xff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x7fff_ffff_ffff_ffff,
    u64::MAX,
    4096,
];

/// A mutated copy of `data` (bit flips, interesting values, truncation, insertion,
/// duplication, huge varints); the 8 bytes of magics at the start are kept most of the time,
/// so the decoders get past them.
pub fn mutate(rng: &mut Rng, data: &[u8]) -> Vec<u8> {
    let mut d = data.to_vec();
    let keep_magic = rng.below(4) != 0;
    for _ in 0..1 + rng.below(3) {
        let keep = if keep_magic { 8.min(d.len()) } else { 0 };
        let span = d.len() - keep;
        // An offset in the mutable part (`d.len()` when it is empty).
        let at = |rng: &mut Rng| keep + rng.below(span);
        match rng.below(6) {
            0 if span > 0 => {
                for _ in 0..1 + rng.below(8) {
                    let i = at(rng);
                    d[i] ^= 1 << rng.below(8);
                }
            }
            1 if span >= 8 => {
                let v = INTERESTING[rng.below(INTERESTING.len())].to_le_bytes();
                let w = [1, 2, 4, 8][rng.below(4)];
                let i = keep + rng.below(span - w + 1);
                d[i..i + w].copy_from_slice(&v[..w]);
            }
            2 => d.truncate(keep + rng.below(span + 1)),
            3 => {
                let i = keep + rng.below(span + 1);
                let n = 1 + rng.below(16);
                let junk: Vec<u8> = (0..n).map(|_| rng.bits() as u8).collect();
                d.splice(i..i, junk);
            }
            4 if span > 0 => {
                let a = at(rng);
                let n = (1 + rng.below(64)).min(d.len() - a);
                let chunk = d[a..a + n].to_vec();
                let b = keep + rng.below(span + 1);
                d.splice(b..b, chunk);
            }
            _ if span >= 2 => {
                // A varint-looking length made huge.
                let i = keep + rng.below(span - 1);
                d[i] = 0xff;
                d[i + 1] = 0xff;
            }
            _ => {}
        }
    }
    d
}
