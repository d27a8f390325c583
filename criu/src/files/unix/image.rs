//! Reading and checking the unix socket images (`files.img` entries, `sk-queues.img`) before
//! anything is created.

use std::collections::{HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use criu_images::pb::{SkPacketEntry, UnixSkEntry};
use criu_images::{ImageReader, magic, names};

use crate::files::socket::SocketError;

use super::{MAX_MSG, ST_CLOSE, ST_ESTABLISHED, ST_LISTEN, printable, trim_nul};

/// One queued message: its bytes and the file ids of the descriptors in flight with it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Queued {
    /// The bytes.
    pub data: Vec<u8>,
    /// The files sent with it (`SCM_RIGHTS`), by file id, in order.
    pub rights: Vec<u32>,
    /// The sender's credentials (`SCM_CREDENTIALS`: pid, uid, gid), when the dump saw them.
    pub ucred: Option<super::creds::Ucred>,
    /// The name of a datagram's sender (as recvfrom gives it), when it had one.
    pub addr: Option<Vec<u8>>,
}

/// The most bytes queued for one socket a restore sends again: a unix socket's queue is bounded
/// by its sender's buffer, at most `INT_MAX` even with `SO_SNDBUFFORCE`; 256 MiB is far above
/// the default limits (`wmem_max`, 208 KiB).
pub const MAX_QUEUE: usize = 256 << 20;
/// The most messages queued for one socket (the kernel's `max_dgram_qlen` is 512 by default;
/// each message costs a buffer even when empty).
pub const MAX_QUEUED_MSGS: usize = 1 << 16;

/// The queued messages of `sk-queues.img` by receiving file id, in order (an absent file: no
/// data). A truncated or inconsistent entry is refused with the file and offset.
///
/// # Errors
/// [`SocketError::BadImage`].
pub fn read_queues(dir: &Path) -> Result<HashMap<u32, Vec<Queued>>, SocketError> {
    let path = dir.join(names::SK_QUEUES);
    let mut out: HashMap<u32, Vec<Queued>> = HashMap::new();
    if !path.exists() {
        return Ok(out);
    }
    let bad = |e: criu_images::ImageError| SocketError::BadImage {
        file: names::SK_QUEUES.into(),
        reason: e.to_string(),
    };
    let mut r = ImageReader::open_expect(&path, magic::SK_QUEUES).map_err(bad)?;
    let mut totals: HashMap<u32, usize> = HashMap::new();
    loop {
        let at = r.offset();
        let Some(e) = r.read_entry::<SkPacketEntry>().map_err(bad)? else {
            break;
        };
        if e.length as usize > MAX_MSG {
            return Err(SocketError::BadImage {
                file: names::SK_QUEUES.into(),
                reason: format!("offset {at}: a message of {} bytes", e.length),
            });
        }
        // One SCM_RIGHTS entry at most (the kernel merges them), with at most SCM_MAX_FD
        // descriptors.
        let rights = match e.scm.as_slice() {
            [] => Vec::new(),
            [s] if s.r#type == libc::SCM_RIGHTS as u32 && s.rights.len() <= 253 => s.rights.clone(),
            _ => {
                return Err(SocketError::BadImage {
                    file: names::SK_QUEUES.into(),
                    reason: format!(
                        "offset {at}: control messages other than one SCM_RIGHTS of at most 253 files"
                    ),
                });
            }
        };
        // A sender's name is a sockaddr_un path: at most 108 bytes, no path that climbs.
        if let Some(a) = &e.addr
            && (a.is_empty()
                || a.len() > 108
                || a[0] != 0
                    && Path::new(std::ffi::OsStr::from_bytes(super::trim_nul(a)))
                        .components()
                        .any(|c| c == std::path::Component::ParentDir))
        {
            return Err(SocketError::BadImage {
                file: names::SK_QUEUES.into(),
                reason: format!(
                    "offset {at}: a sender name of {} bytes or one that climbs",
                    a.len()
                ),
            });
        }
        let data = r.read_extra(u64::from(e.length)).map_err(bad)?;
        let q = out.entry(e.id_for).or_default();
        let total = totals.entry(e.id_for).or_insert(0usize);
        *total += data.len();
        if *total > MAX_QUEUE || q.len() >= MAX_QUEUED_MSGS {
            return Err(SocketError::BadImage {
                file: names::SK_QUEUES.into(),
                reason: format!(
                    "offset {at}: more than {MAX_QUEUE} bytes or {MAX_QUEUED_MSGS} messages queued for file id {}",
                    e.id_for
                ),
            });
        }
        q.push(Queued {
            data,
            rights,
            ucred: e.ucred.map(|u| (u.pid as i32, u.uid, u.gid)),
            addr: e.addr,
        });
    }
    Ok(out)
}

/// Checks the unix socket entries of `files.img` before anything is created: types, states,
/// names, peers, queue owners. `path` names the file in messages.
///
/// # Errors
/// [`SocketError::BadImage`].
pub fn check(
    entries: &[UnixSkEntry],
    queues: &HashMap<u32, Vec<Queued>>,
) -> Result<(), SocketError> {
    let bad = |id: u32, reason: String| SocketError::BadImage {
        file: names::FILES.into(),
        reason: format!("unix socket id {id}: {reason}"),
    };
    let mut inos = HashSet::new();
    for e in entries {
        let ty = e.r#type as i32;
        if ![libc::SOCK_STREAM, libc::SOCK_DGRAM, libc::SOCK_SEQPACKET].contains(&ty) {
            return Err(bad(e.id, format!("type {}", e.r#type)));
        }
        if ![ST_ESTABLISHED, ST_CLOSE, ST_LISTEN].contains(&e.state) {
            return Err(bad(e.id, format!("state {}", e.state)));
        }
        if e.name.len() > 108 {
            return Err(bad(e.id, format!("name of {} bytes", e.name.len())));
        }
        // A path name (and the directory it is relative to) never climbs or hides a NUL: a
        // bind makes a file there.
        let climbs = |b: &[u8]| {
            Path::new(std::ffi::OsStr::from_bytes(b))
                .components()
                .any(|c| c == std::path::Component::ParentDir)
        };
        if e.name.first().is_some_and(|b| *b != 0)
            && (trim_nul(&e.name).contains(&0) || climbs(trim_nul(&e.name)))
        {
            return Err(bad(e.id, format!("name {:?}", printable(&e.name))));
        }
        if e.name_dir
            .as_deref()
            .is_some_and(|d| d.contains('\0') || climbs(d.as_bytes()))
        {
            return Err(bad(e.id, "name_dir with '..' or a NUL byte".into()));
        }
        if e.shutdown.is_some_and(|s| !(0..=3).contains(&s)) {
            return Err(bad(e.id, "shutdown".into()));
        }
        if !inos.insert(e.ino) {
            return Err(bad(e.id, format!("inode {} appears twice", e.ino)));
        }
    }
    let ids: HashSet<u32> = entries.iter().map(|e| e.id).collect();
    for id in queues.keys() {
        if !ids.contains(id) {
            return Err(SocketError::BadImage {
                file: names::SK_QUEUES.into(),
                reason: format!("queued data for file id {id}, which is no unix socket"),
            });
        }
    }
    Ok(())
}

/// The inodes of the entries that are connections still queued on a listener of the images,
/// not accepted (criu accepted them at dump time to read their data): named as a listener of
/// the same type, whose client names the listener as its peer. No task holds them; the
/// client connects again and sends their data.
pub fn embryos(entries: &[UnixSkEntry]) -> HashSet<u32> {
    let by_ino: HashMap<u32, &UnixSkEntry> = entries.iter().map(|e| (e.ino, e)).collect();
    entries
        .iter()
        .filter(|e| {
            e.state == ST_ESTABLISHED
                && e.r#type != libc::SOCK_DGRAM as u32
                && !e.name.is_empty()
                && e.uflags & super::USK_EXTERN == 0
        })
        .filter(|e| {
            let Some(client) = by_ino.get(&e.peer) else {
                return false;
            };
            entries.iter().any(|l| {
                l.state == ST_LISTEN
                    && l.name == e.name
                    && l.r#type == e.r#type
                    && client.peer == l.ino
            })
        })
        .map(|e| e.ino)
        .collect()
}

/// Rewrites the senders' pids of `sk-queues.img` in `dir` (criu's pids, as the dump read
/// them) as the tree's own pid namespace numbers them, by `inside` (criu's pid → the pid
/// inside, for every task of the tree). A sender that is no task of the tree (it exited
/// before the dump, or lives outside the namespace) has no number there: its messages keep
/// their uid and gid with pid 0, which is what such a receiver reads.
///
/// # Errors
/// [`SocketError::BadImage`] when the image cannot be read or written again.
pub fn queued_pids_inside(dir: &Path, inside: &HashMap<i64, i64>) -> Result<(), SocketError> {
    let path = dir.join(names::SK_QUEUES);
    if !path.exists() {
        return Ok(());
    }
    let bad = |e: criu_images::ImageError| SocketError::BadImage {
        file: names::SK_QUEUES.into(),
        reason: e.to_string(),
    };
    let mut r = ImageReader::open_expect(&path, magic::SK_QUEUES).map_err(bad)?;
    let mut all = Vec::new();
    let mut changed = false;
    while let Some(mut e) = r.read_entry::<SkPacketEntry>().map_err(bad)? {
        let data = r.read_extra(u64::from(e.length)).map_err(bad)?;
        if let Some(u) = e.ucred.as_mut()
            && u.pid != 0
        {
            u.pid = inside
                .get(&i64::from(u.pid))
                .and_then(|&p| u32::try_from(p).ok())
                .unwrap_or(0);
            changed = true;
        }
        all.push((e, data));
    }
    if !changed {
        return Ok(());
    }
    let tmp = dir.join(format!("{}.pidns", names::SK_QUEUES));
    let mut w = criu_images::ImageWriter::create(&tmp, magic::SK_QUEUES).map_err(bad)?;
    for (e, data) in &all {
        w.write_entry(e).map_err(bad)?;
        w.write_extra(data).map_err(bad)?;
    }
    w.finish().map_err(bad)?;
    std::fs::rename(&tmp, &path).map_err(|e| SocketError::BadImage {
        file: names::SK_QUEUES.into(),
        reason: format!("replacing it: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(name: &[u8], dir: Option<&str>) -> UnixSkEntry {
        UnixSkEntry {
            id: 1,
            ino: 7,
            r#type: libc::SOCK_STREAM as u32,
            state: ST_LISTEN,
            name: name.to_vec(),
            name_dir: dir.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn a_queued_connection_is_told_from_an_accepted_one() {
        let sk = |ino, state, peer, name: &[u8]| UnixSkEntry {
            id: ino,
            ino,
            r#type: libc::SOCK_STREAM as u32,
            state,
            peer,
            name: name.to_vec(),
            ..Default::default()
        };
        let entries = [
            sk(1, ST_LISTEN, 0, b"/l"),
            // Accepted: its client names it as its peer.
            sk(2, ST_ESTABLISHED, 3, b"/l"),
            sk(3, ST_ESTABLISHED, 2, b""),
            // Still queued: its client names the listener.
            sk(4, ST_ESTABLISHED, 5, b"/l"),
            sk(5, ST_ESTABLISHED, 1, b""),
        ];
        assert_eq!(embryos(&entries), HashSet::from([4]));
    }

    #[test]
    fn socket_names_that_climb_or_hide_a_nul_are_refused() {
        let ok = |e: UnixSkEntry| check(&[e], &HashMap::new()).is_ok();
        assert!(ok(bound(b"/tmp/a.sock", None)));
        assert!(
            ok(bound(b"\0abstract/../x", None)),
            "abstract names are no paths"
        );
        assert!(ok(bound(b"a.sock\0", Some("/tmp/d"))));
        assert!(!ok(bound(b"/tmp/../etc/a.sock", None)));
        assert!(!ok(bound(b"../a.sock", Some("/tmp/d"))));
        assert!(!ok(bound(b"/tmp/a\0b", None)));
        assert!(!ok(bound(b"a.sock", Some("/tmp/../etc"))));
    }

    /// More messages queued for one socket than the limit: refused naming the image and the
    /// socket, though each message is empty.
    #[test]
    fn too_many_queued_messages_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut w =
            criu_images::ImageWriter::create_in(dir.path(), names::SK_QUEUES, magic::SK_QUEUES)
                .unwrap();
        for _ in 0..=MAX_QUEUED_MSGS {
            w.write_entry(&SkPacketEntry {
                id_for: 5,
                length: 0,
                ..Default::default()
            })
            .unwrap();
        }
        w.finish().unwrap();
        let e = read_queues(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("sk-queues.img") && e.contains("messages queued for file id 5"),
            "{e}"
        );
    }
}
