//! The socket images of CRIU 4.2's `files` fixture (`files.img` with its `UNIXSK` entries,
//! `sk-queues.img`, the `fdinfo` tables naming them): our JSON equals what CRIU's own
//! `crit decode --pretty` printed, character for character, and encodes back to the same bytes;
//! the unix socket entries and queues read as typed messages say what the program made.

mod fixture_dir;
use fixture_dir::fixtures;

use criu_images::json::{self, DecodeOptions};
use criu_images::pb::{FdTypes, FileEntry, SkPacketEntry};
use criu_images::{ImageReader, magic, names};

#[test]
fn socket_images_print_as_crit_prints_them() {
    let dir = fixtures().join("files");
    for name in ["files.img", "sk-queues.img", "fdinfo-2.img", "fdinfo-3.img"] {
        let ipath = dir.join(name);
        let bytes = std::fs::read(&ipath).unwrap();
        let want_text =
            std::fs::read_to_string(dir.join("crit-json").join(format!("{name}.json"))).unwrap();
        let want: serde_json::Value = serde_json::from_str(&want_text).unwrap();
        let got = json::decode_image(&bytes, &ipath, DecodeOptions::pretty())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got, want, "{name}: JSON differs from crit's");
        // (These files were saved with a final newline, which crit's printing has not.)
        assert_eq!(
            json::to_crit_string(&got, true),
            want_text.trim_end_matches('\n'),
            "{name}: text"
        );
        assert_eq!(
            json::encode_image(&want, &ipath).unwrap(),
            bytes,
            "{name}: encode"
        );
    }
}

#[test]
fn unix_socket_entries_and_queues_of_the_fixture() {
    let dir = fixtures().join("files");
    let files: Vec<FileEntry> =
        criu_images::read_all(dir.join(names::FILES), magic::FILES).unwrap();
    let unix: Vec<_> = files
        .iter()
        .filter(|f| f.r#type == FdTypes::Unixsk as i32)
        .map(|f| f.usk.as_ref().unwrap())
        .collect();
    assert_eq!(unix.len(), 9);
    // The dgram socket bound to a path (with the NUL the kernel keeps), the abstract listener.
    assert!(
        unix.iter()
            .any(|u| u.name == b"/tmp/fx/files.dgram\0" && u.r#type == 2)
    );
    let l = unix.iter().find(|u| u.state == 10).unwrap();
    assert_eq!((l.name.as_slice(), l.backlog), (&b"\0fx-files"[..], 4));
    // Pairs name each other.
    for u in &unix {
        if u.peer != 0 && u.r#type != 2 {
            let p = unix.iter().find(|p| p.ino == u.peer).unwrap();
            assert_eq!(p.peer, u.ino);
        }
    }
    let mut r = ImageReader::open_expect(dir.join(names::SK_QUEUES), magic::SK_QUEUES).unwrap();
    let mut got = Vec::new();
    while let Some(e) = r.read_entry::<SkPacketEntry>().unwrap() {
        got.push((e.id_for, r.read_extra(u64::from(e.length)).unwrap()));
    }
    let want: Vec<(u32, &[u8])> = vec![
        (8, b"pong"),
        (9, b"ping"),
        (11, b"one"),
        (11, b"two!"),
        (12, b"dgram"),
    ];
    assert_eq!(
        got.iter()
            .map(|(i, d)| (*i, d.as_slice()))
            .collect::<Vec<_>>(),
        want
    );
}
