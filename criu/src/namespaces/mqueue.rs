//! POSIX message queues of a dumped IPC namespace, with their messages (CRIU 4.2 refuses
//! them: it has no image for them).
//!
//! Dump, in a thread that entered the namespace (`mq_open` works in the caller's IPC
//! namespace): each queue found in the namespace's mqueue filesystem is opened, its mode and
//! owner read (`fstat`), its attributes (`mq_getattr`: the most messages and the message size),
//! then every message received (highest priority first, in order within a priority) and sent
//! back at once in the same order, so the queue keeps them. The tree is frozen meanwhile.
//!
//! Image: `ipcns-posixmq-ID.json` (this criu's own; CRIU ignores it), one object per queue:
//! `name`, `mode`, `uid`, `gid`, `maxmsg`, `msgsize`, `messages` (`prio`, `data` in hex).
//!
//! Restore, in the thread that made the new namespace, after its limits
//! (`fs/mqueue/*`) are set: each queue is created with its attributes, mode and owner, then
//! its messages sent in the saved order.
//!
//! Not saved: a registration made with `mq_notify` (the kernel does not show it), and queues
//! open as descriptors in the tree (the files dump refuses those).
// Unsafe code: the mq_* calls on buffers we own.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::errno::Errno;
use serde_json::{Value, json};

use super::{Kind, NsError};

const K: Kind = Kind::Ipc;

/// The most bytes a saved queue may hold, messages and all, on restore.
const MAX_QUEUE_BYTES: u64 = 64 << 20;

/// One queue with its messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PosixQueue {
    /// Its name without the leading `/`.
    pub name: String,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// `mq_maxmsg`.
    pub maxmsg: i64,
    /// `mq_msgsize`.
    pub msgsize: i64,
    /// Messages in receive order: (priority, bytes).
    pub messages: Vec<(u32, Vec<u8>)>,
}

/// The image of namespace `id`.
pub(crate) fn image_name(id: u32) -> String {
    format!("ipcns-posixmq-{id}.json")
}

fn path_of(name: &str) -> Result<CString, NsError> {
    CString::new(format!("/{name}"))
        .map_err(|_| NsError::bad(K, "mqueue", format!("queue name {name:?}")))
}

fn open(
    name: &str,
    flags: libc::c_int,
    attr: Option<&mut libc::mq_attr>,
) -> Result<OwnedFd, NsError> {
    let path = path_of(name)?;
    let mode: libc::mode_t = 0o600;
    let attr = attr.map_or(std::ptr::null_mut(), |a| a as *mut libc::mq_attr);
    // SAFETY: a NUL-terminated name, and for O_CREAT a mode and an attr that is NULL or a live
    // local; mq_open returns a new descriptor or -1.
    let fd = unsafe { libc::mq_open(path.as_ptr(), flags | libc::O_CLOEXEC, mode, attr) };
    if fd < 0 {
        return Err(NsError::sys(K, format!("mq_open /{name}"), Errno::last()));
    }
    // SAFETY: mq_open just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn send(fd: &OwnedFd, name: &str, prio: u32, data: &[u8]) -> Result<(), NsError> {
    use std::os::fd::AsRawFd;
    // SAFETY: the message is a live slice of data.len() bytes.
    let r = unsafe { libc::mq_send(fd.as_raw_fd(), data.as_ptr().cast(), data.len(), prio) };
    if r != 0 {
        return Err(NsError::sys(
            K,
            format!("mq_send to /{name}"),
            Errno::last(),
        ));
    }
    Ok(())
}

/// Reads queues `names` of the calling thread's IPC namespace, leaving their messages in.
///
/// # Errors
/// [`NsError::Sys`] naming the queue.
pub(crate) fn read_queues(names: &[String]) -> Result<Vec<PosixQueue>, NsError> {
    use std::os::fd::AsRawFd;
    let mut out = Vec::new();
    for name in names {
        let fd = open(name, libc::O_RDWR | libc::O_NONBLOCK, None)?;
        let md = std::fs::File::from(
            fd.try_clone()
                .map_err(|e| NsError::io(K, format!("dup of /{name}"), e))?,
        )
        .metadata()
        .map_err(|e| NsError::io(K, format!("fstat of /{name}"), e))?;
        // SAFETY: mq_attr is plain data; all-zero is valid for mq_getattr to fill.
        let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
        // SAFETY: mq_getattr fills one live mq_attr.
        if unsafe { libc::mq_getattr(fd.as_raw_fd(), &mut attr) } != 0 {
            return Err(NsError::sys(
                K,
                format!("mq_getattr /{name}"),
                Errno::last(),
            ));
        }
        let size = usize::try_from(attr.mq_msgsize).unwrap_or(0).max(1);
        let mut buf = vec![0u8; size];
        let mut messages: Vec<(u32, Vec<u8>)> = Vec::new();
        loop {
            let mut prio: libc::c_uint = 0;
            // SAFETY: buf is a live buffer of `size` bytes (the queue's message size), prio a
            // live local.
            let n = unsafe {
                libc::mq_receive(fd.as_raw_fd(), buf.as_mut_ptr().cast(), size, &mut prio)
            };
            if n < 0 {
                let e = Errno::last();
                if e == Errno::EAGAIN {
                    break;
                }
                if e == Errno::EINTR {
                    continue;
                }
                // Put back what was taken before failing.
                for (p, d) in &messages {
                    let _ = send(&fd, name, *p, d);
                }
                return Err(NsError::sys(K, format!("mq_receive from /{name}"), e));
            }
            messages.push((prio, buf[..n as usize].to_vec()));
        }
        for (p, d) in &messages {
            send(&fd, name, *p, d)?;
        }
        out.push(PosixQueue {
            name: name.clone(),
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            maxmsg: attr.mq_maxmsg,
            msgsize: attr.mq_msgsize,
            messages,
        });
    }
    Ok(out)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Writes the image of namespace `id` (nothing when it has no queue).
///
/// # Errors
/// [`NsError::Io`].
pub(crate) fn write(dir: &Path, id: u32, queues: &[PosixQueue]) -> Result<(), NsError> {
    if queues.is_empty() {
        return Ok(());
    }
    let v: Vec<Value> = queues
        .iter()
        .map(|q| {
            json!({
                "name": q.name,
                "mode": q.mode,
                "uid": q.uid,
                "gid": q.gid,
                "maxmsg": q.maxmsg,
                "msgsize": q.msgsize,
                "messages": q.messages.iter().map(|(p, d)| json!({"prio": p, "data": hex(d)}))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    let name = image_name(id);
    let text = serde_json::to_vec_pretty(&json!({ "queues": v }))
        .map_err(|e| NsError::bad(K, name.clone(), format!("encoding: {e}")))?;
    std::fs::write(dir.join(&name), text).map_err(|e| NsError::io(K, format!("writing {name}"), e))
}

/// Reads the image of namespace `id` (no queue when it is absent).
///
/// # Errors
/// [`NsError::Io`], [`NsError::BadImage`] for anything malformed or too large.
pub(crate) fn read(dir: &Path, id: u32) -> Result<Vec<PosixQueue>, NsError> {
    let name = image_name(id);
    let path = dir.join(&name);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read(&path).map_err(|e| NsError::io(K, format!("reading {name}"), e))?;
    let bad = |why: String| NsError::bad(K, name.clone(), why);
    let v: Value = serde_json::from_slice(&text).map_err(|e| bad(format!("decoding: {e}")))?;
    let Some(qs) = v["queues"].as_array() else {
        return Err(bad("no queues".into()));
    };
    let mut out = Vec::new();
    for q in qs {
        let qname = q["name"].as_str().unwrap_or("");
        if qname.is_empty() || qname.contains('/') || qname.contains('\0') || qname.len() > 255 {
            return Err(bad(format!("queue name {qname:?}")));
        }
        let num = |k: &str| q[k].as_i64().ok_or_else(|| bad(format!("/{qname}: {k}")));
        let (maxmsg, msgsize) = (num("maxmsg")?, num("msgsize")?);
        if maxmsg <= 0
            || msgsize <= 0
            || (maxmsg as u64).saturating_mul(msgsize as u64) > MAX_QUEUE_BYTES
        {
            return Err(bad(format!(
                "/{qname}: {maxmsg} messages of {msgsize} bytes"
            )));
        }
        let u32_of = |k: &str| {
            num(k).and_then(|x| u32::try_from(x).map_err(|_| bad(format!("/{qname}: {k}"))))
        };
        let mut messages = Vec::new();
        for m in q["messages"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            let prio = m["prio"]
                .as_u64()
                .and_then(|p| u32::try_from(p).ok())
                .ok_or_else(|| bad(format!("/{qname}: message priority")))?;
            let data = m["data"]
                .as_str()
                .and_then(unhex)
                .filter(|d| d.len() as i64 <= msgsize)
                .ok_or_else(|| bad(format!("/{qname}: message data")))?;
            messages.push((prio, data));
        }
        if messages.len() as i64 > maxmsg {
            return Err(bad(format!("/{qname}: more messages than it holds")));
        }
        out.push(PosixQueue {
            name: qname.to_string(),
            mode: u32_of("mode")? & 0o7777,
            uid: u32_of("uid")?,
            gid: u32_of("gid")?,
            maxmsg,
            msgsize,
            messages,
        });
    }
    Ok(out)
}

/// Makes `queues` in the calling thread's IPC namespace, with their messages.
///
/// # Errors
/// [`NsError::Sys`] naming the queue.
pub(crate) fn make(queues: &[PosixQueue]) -> Result<(), NsError> {
    use std::os::fd::AsRawFd;
    for q in queues {
        // SAFETY: mq_attr is plain data; all-zero is a valid start.
        let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
        attr.mq_maxmsg = q.maxmsg;
        attr.mq_msgsize = q.msgsize;
        let flags = libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NONBLOCK;
        let fd = open(&q.name, flags, Some(&mut attr))?;
        let f = fd.as_raw_fd();
        // SAFETY: fchmod/fchown on a descriptor we own (mq_open's mode went through the umask).
        if unsafe { libc::fchmod(f, q.mode as libc::mode_t) } != 0 {
            return Err(NsError::sys(
                K,
                format!("fchmod /{}", q.name),
                Errno::last(),
            ));
        }
        // SAFETY: fchown with plain values on a descriptor we own.
        if unsafe { libc::fchown(f, q.uid, q.gid) } != 0 {
            return Err(NsError::sys(
                K,
                format!("fchown /{}", q.name),
                Errno::last(),
            ));
        }
        for (p, d) in &q.messages {
            send(&fd, &q.name, *p, d)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_round_trips_and_bad_ones_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let q = PosixQueue {
            name: "q".into(),
            mode: 0o640,
            uid: 1,
            gid: 2,
            maxmsg: 4,
            msgsize: 16,
            messages: vec![(3, b"abc".to_vec()), (0, vec![0, 255])],
        };
        write(d.path(), 9, std::slice::from_ref(&q)).unwrap();
        assert_eq!(read(d.path(), 9).unwrap(), vec![q]);
        assert!(read(d.path(), 10).unwrap().is_empty());
        std::fs::write(
            d.path().join(image_name(11)),
            r#"{"queues":[{"name":"../x","mode":0,"uid":0,"gid":0,"maxmsg":1,"msgsize":1}]}"#,
        )
        .unwrap();
        assert!(read(d.path(), 11).is_err());
        std::fs::write(
            d.path().join(image_name(12)),
            r#"{"queues":[{"name":"x","mode":0,"uid":0,"gid":0,"maxmsg":1,"msgsize":1,
                "messages":[{"prio":0,"data":"0102"}]}]}"#,
        )
        .unwrap();
        assert!(read(d.path(), 12).is_err(), "a message longer than msgsize");
    }
}
