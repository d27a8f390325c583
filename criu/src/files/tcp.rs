//! `tcp-stream-INO.img`: one established connection as CRIU writes it, a `tcp_stream_entry`
//! followed by the receive queue's `inq_len` bytes and the send queue's `outq_len` bytes; and
//! its conversion from and to [`soccr::Saved`].

use std::net::SocketAddr;
use std::path::Path;

use criu_images::pb::TcpStreamEntry;
use criu_images::{ImageReader, ImageWriter, magic, names};

use super::socket::SocketError;

/// One saved connection.
#[derive(Debug, Clone, PartialEq)]
pub struct Stream {
    /// Sequence numbers, queue lengths, options, window.
    pub entry: TcpStreamEntry,
    /// Received, not read.
    pub inq: Vec<u8>,
    /// Written, not acknowledged (the last `unsq_len` bytes never sent).
    pub outq: Vec<u8>,
}

impl Stream {
    /// The image form of what soccr saved.
    pub fn from_saved(s: &soccr::Saved) -> Stream {
        let d = &s.data;
        let win = d.flags & soccr::FLAGS_WINDOW != 0;
        Stream {
            entry: TcpStreamEntry {
                inq_len: d.inq_len,
                inq_seq: d.inq_seq,
                outq_len: d.outq_len,
                outq_seq: d.outq_seq,
                opt_mask: d.opt_mask,
                snd_wscale: d.snd_wscale,
                mss_clamp: d.mss_clamp,
                rcv_wscale: Some(d.rcv_wscale),
                timestamp: Some(d.timestamp),
                cork: None,
                nodelay: None,
                unsq_len: Some(d.unsq_len),
                snd_wl1: win.then_some(d.snd_wl1),
                snd_wnd: win.then_some(d.snd_wnd),
                max_window: win.then_some(d.max_window),
                rcv_wnd: win.then_some(d.rcv_wnd),
                rcv_wup: win.then_some(d.rcv_wup),
            },
            inq: s.recv_queue.clone(),
            outq: s.send_queue.clone(),
        }
    }

    /// What soccr restores: the connection in TCP state `state` with its addresses.
    pub fn to_saved(&self, state: u32, src: SocketAddr, dst: SocketAddr) -> soccr::Saved {
        let e = &self.entry;
        let win = e.snd_wl1.is_some()
            && e.snd_wnd.is_some()
            && e.max_window.is_some()
            && e.rcv_wnd.is_some()
            && e.rcv_wup.is_some();
        soccr::Saved {
            data: soccr::SkData {
                state,
                inq_len: e.inq_len,
                inq_seq: e.inq_seq,
                outq_len: e.outq_len,
                outq_seq: e.outq_seq,
                unsq_len: e.unsq_len.unwrap_or(0),
                opt_mask: e.opt_mask,
                mss_clamp: e.mss_clamp,
                snd_wscale: e.snd_wscale,
                rcv_wscale: e.rcv_wscale.unwrap_or(0),
                timestamp: e.timestamp.unwrap_or(0),
                flags: if win { soccr::FLAGS_WINDOW } else { 0 },
                snd_wl1: e.snd_wl1.unwrap_or(0),
                snd_wnd: e.snd_wnd.unwrap_or(0),
                max_window: e.max_window.unwrap_or(0),
                rcv_wnd: e.rcv_wnd.unwrap_or(0),
                rcv_wup: e.rcv_wup.unwrap_or(0),
            },
            src,
            dst,
            recv_queue: self.inq.clone(),
            send_queue: self.outq.clone(),
        }
    }
}

fn img_err(file: &str, e: criu_images::ImageError) -> SocketError {
    SocketError::BadImage {
        file: file.into(),
        reason: e.to_string(),
    }
}

/// Writes `tcp-stream-INO.img` into `dir`.
///
/// # Errors
/// [`SocketError::BadImage`] naming the image when writing fails.
pub fn write(dir: &Path, ino: u32, st: &Stream) -> Result<(), SocketError> {
    let name = names::tcp_stream(ino);
    let mut w =
        ImageWriter::create_in(dir, &name, magic::TCP_STREAM).map_err(|e| img_err(&name, e))?;
    w.write_entry(&st.entry).map_err(|e| img_err(&name, e))?;
    w.write_extra(&st.inq).map_err(|e| img_err(&name, e))?;
    w.write_extra(&st.outq).map_err(|e| img_err(&name, e))?;
    w.finish().map_err(|e| img_err(&name, e))?;
    Ok(())
}

/// Reads `tcp-stream-INO.img` from `dir`.
///
/// # Errors
/// [`SocketError::BadImage`] naming the image.
pub fn read(dir: &Path, ino: u32) -> Result<Stream, SocketError> {
    let name = names::tcp_stream(ino);
    let mut r = ImageReader::open_expect(dir.join(&name), magic::TCP_STREAM)
        .map_err(|e| img_err(&name, e))?;
    let entry: TcpStreamEntry = r.read_one().map_err(|e| img_err(&name, e))?;
    let max = crate::files::unix::MAX_QUEUE;
    if entry.inq_len as usize > max || entry.outq_len as usize > max {
        return Err(SocketError::BadImage {
            file: name,
            reason: format!(
                "queues of {} and {} bytes (max {max})",
                entry.inq_len, entry.outq_len
            ),
        });
    }
    if entry.unsq_len.unwrap_or(0) > entry.outq_len {
        return Err(SocketError::BadImage {
            file: name,
            reason: "unsent bytes exceed the send queue".into(),
        });
    }
    let inq = r
        .read_extra(u64::from(entry.inq_len))
        .map_err(|e| img_err(&name, e))?;
    let outq = r
        .read_extra(u64::from(entry.outq_len))
        .map_err(|e| img_err(&name, e))?;
    Ok(Stream { entry, inq, outq })
}

#[cfg(test)]
mod tests {
    use super::*;
    use criu_images::ImageDir;
    use criu_images::pb::FdTypes;

    /// CRIU 4.2's tcp-stream images read back (queues included) and write out byte for byte;
    /// its inet entries (a listener, both ends of a connection, a bound UDP socket) are all
    /// ones this restore takes.
    #[test]
    fn criu_fixture_tcp_streams_read_and_write_back_identically() {
        let dir = Path::new("/work/shared/fixtures/criu-4.2/files");
        if !dir.exists() {
            return;
        }
        let files = ImageDir::new(dir).read_files().unwrap();
        let inet: Vec<_> = files
            .iter()
            .filter(|e| e.r#type == FdTypes::Inetsk as i32)
            .filter_map(|e| e.isk.clone())
            .collect();
        assert_eq!(inet.len(), 4);
        super::super::inet::check(&inet).unwrap();
        let out = tempfile::tempdir().unwrap();
        let mut inqs = Vec::new();
        for e in inet.iter().filter(|e| e.state == 1) {
            let st = read(dir, e.ino).unwrap();
            assert_eq!(st.inq.len(), st.entry.inq_len as usize);
            inqs.push(String::from_utf8_lossy(&st.inq).into_owned());
            let back = st.to_saved(
                e.state,
                "127.0.0.1:1".parse().unwrap(),
                "127.0.0.1:2".parse().unwrap(),
            );
            assert_eq!(Stream::from_saved(&back).entry.snd_wnd, st.entry.snd_wnd);
            write(out.path(), e.ino, &st).unwrap();
            let name = names::tcp_stream(e.ino);
            assert_eq!(
                std::fs::read(out.path().join(&name)).unwrap(),
                std::fs::read(dir.join(&name)).unwrap(),
                "{name}"
            );
        }
        inqs.sort();
        assert!(inqs.contains(&"tcp-reply".to_string()), "{inqs:?}");
    }

    /// A queue length beyond the limit is refused naming the image, before its bytes are read.
    #[test]
    fn a_huge_queue_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut w =
            ImageWriter::create_in(dir.path(), &names::tcp_stream(9), magic::TCP_STREAM).unwrap();
        w.write_entry(&TcpStreamEntry {
            inq_len: u32::MAX,
            ..Default::default()
        })
        .unwrap();
        w.finish().unwrap();
        let e = read(dir.path(), 9).unwrap_err().to_string();
        assert!(
            e.contains("tcp-stream-9.img") && e.contains("4294967295"),
            "{e}"
        );
    }
}
