//! CRIU 4.2's `files` fixture (`fixtures/criu-4.2/files`): its socket images read by our crit
//! as CRIU's crit printed them, its whole tree (unix stream/seqpacket/dgram sockets, an
//! established TCP connection with data both ways, a TCP listener, a UDP socket, a pty, a sealed
//! memfd, a FIFO, an inotify watch, a pidfd) restored by us in a network namespace of the
//! test's own until the program's own check passes, and damaged socket images refused before
//! anything runs, naming the file and the offset.
//!
//! The restore test runs as root, under the test lock and as a child subreaper, and kills and
//! reaps what it restored; it skips (saying why) when a recorded pid is taken or this CPU
//! cannot hold the saved register state.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use compel_criu_tests::{
    FixtureBinary, Spawned, become_subreaper, copy_dir, criu, criu_bin, fixtures_dir, fpu_misfit,
    in_netns, needs_cpu_cap_none, pid_exists, skip_if_not_root, test_lock, wait_state,
};
use criu_images::pb::FileEntry;
use criu_images::{magic, names};

/// The fixture's root task and its child (the images are named for them).
const ROOT: i32 = 32508;
const CHILD: i32 = 32510;

/// `crit decode --pretty` of `img`, by our crit binary.
fn crit_pretty(img: &Path) -> String {
    let crit = criu_bin().with_file_name("crit");
    let o = std::process::Command::new(crit)
        .args(["decode", "--pretty", "-i"])
        .arg(img)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

/// Our crit prints CRIU 4.2's TCP stream images (sequence numbers, windows, queue sizes, ...),
/// its unix queue image (`sk-queues.img`, data after each entry) and `files.img` with its
/// INETSK and UNIXSK entries exactly as CRIU's own crit did.
#[test]
fn crit_prints_criu_socket_images_as_criu_crit_did() {
    let dir = fixtures_dir().join("files");
    for name in [
        "tcp-stream-5a8f3.img",
        "tcp-stream-5a8f4.img",
        "sk-queues.img",
        "files.img",
    ] {
        let ours = crit_pretty(&dir.join(name));
        let theirs = fs::read_to_string(dir.join("crit-json").join(format!("{name}.json")))
            .expect("the fixture's crit json");
        assert_eq!(
            ours.trim_end(),
            theirs.trim_end(),
            "crit decode --pretty of CRIU's {name}"
        );
    }
    // The comparison covers what it says: both kinds of socket entry are in files.img.
    let files: Vec<FileEntry> =
        criu_images::read_all(dir.join(names::FILES), magic::FILES).unwrap();
    assert_eq!(files.iter().filter(|f| f.isk.is_some()).count(), 4);
    assert_eq!(files.iter().filter(|f| f.usk.is_some()).count(), 9);
}

/// What the fixture program needs around it: its binary at `/tmp/fx/files`, the FIFO and the
/// watched file it made at start, its output file `/tmp/fxw/out` (opened `O_APPEND` at offset
/// 12, after "ready 32508\n"), and a scratch copy of its images. Dropping it removes all that
/// (and the name its datagram socket is bound to once restored).
struct FilesFixture {
    img: tempfile::TempDir,
    _bin: FixtureBinary,
}

const FIFO: &str = "/tmp/fx/files.fifo";
const WATCHED: &str = "/tmp/fx/files.watched";
const OUT_DIR: &str = "/tmp/fxw";
const OUT: &str = "/tmp/fxw/out";

impl FilesFixture {
    fn new() -> FilesFixture {
        let bin = FixtureBinary::install("files");
        let _ = fs::remove_file(FIFO);
        nix::unistd::mkfifo(FIFO, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        fs::write(WATCHED, b"").unwrap();
        fs::create_dir_all(OUT_DIR).unwrap();
        fs::write(OUT, format!("ready {ROOT}\n")).unwrap();
        let img = tempfile::tempdir().unwrap();
        copy_dir(&fixtures_dir().join("files"), img.path());
        FilesFixture { img, _bin: bin }
    }

    fn dir(&self) -> &Path {
        self.img.path()
    }

    /// Adapts the copy to this machine as a user would with `crit edit`: the working
    /// directory recorded (`/work/steering`, where CRIU was run) becomes `/tmp/fx`, and the
    /// inotify watch names the inode `/tmp/fx/files.watched` has now (the program made it
    /// afresh; an inode that changed is refused, as CRIU's file handle would not open).
    fn adapt(&self) {
        let p = self.dir().join(names::FILES);
        let mut files: Vec<FileEntry> = criu_images::read_all(&p, magic::FILES).unwrap();
        let ino = fs::metadata(WATCHED).unwrap().ino();
        let (mut dirs, mut watches) = (0, 0);
        for f in &mut files {
            if let Some(r) = &mut f.reg
                && r.name == "/work/steering"
            {
                r.name = "/tmp/fx".into();
                dirs += 1;
            }
            if let Some(i) = &mut f.ify {
                for w in &mut i.wd {
                    w.i_ino = ino;
                    watches += 1;
                }
            }
        }
        assert_eq!((dirs, watches), (2, 1));
        criu_images::write_all(&p, magic::FILES, &files).unwrap();
    }
}

impl Drop for FilesFixture {
    fn drop(&mut self) {
        let _ = fs::remove_file(FIFO);
        let _ = fs::remove_file(WATCHED);
        // The datagram receiver's name, bound again by the restore.
        let _ = fs::remove_file("/tmp/fx/files.dgram");
        let _ = fs::remove_file(OUT);
        let _ = fs::remove_dir(OUT_DIR);
        // The binary's guard then removes /tmp/fx/files and the empty /tmp/fx.
    }
}

/// `criu restore -d` of `dir` in a network namespace of its own with `lo` up.
fn restore_in_netns(dir: &Path) -> std::process::Output {
    let dir: PathBuf = dir.to_path_buf();
    in_netns(move || {
        let d = dir.to_str().unwrap();
        let mut args = vec!["restore", "-d", "-D", d, "-o", "restore.log", "-v4"];
        if needs_cpu_cap_none(&dir) {
            args.push("--cpu-cap=none");
        }
        criu(&args)
    })
}

/// The text of the program's output file once it holds `want`, or what it holds after 10 s.
fn wait_out(want: &str) -> String {
    let t = Instant::now();
    loop {
        let s = fs::read_to_string(OUT).unwrap_or_default();
        if s.contains(want) || t.elapsed() > Duration::from_secs(10) {
            return s;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// CRIU 4.2's images of a tree holding sockets of every local kind and TCP/UDP ones (plus a pty,
/// a memfd, a FIFO, an inotify watch and a pidfd) restored by us: the program's own check
/// (SIGUSR1, then every queued byte read and compared, the TCP connection's 4000 + 9 unread
/// bytes, the pty's window, the memfd's seals, the inotify event, the child killed through the
/// pidfd) writes "OK 32508".
#[test]
fn criu_4_2_files_fixture_restores_and_its_own_check_passes() {
    skip_if_not_root!("criu_4_2_files_fixture_restores_and_its_own_check_passes");
    let _g = test_lock();
    become_subreaper();
    if pid_exists(ROOT) || pid_exists(CHILD) {
        eprintln!("skipped: pid {ROOT} or {CHILD} recorded in the fixture is taken");
        return;
    }
    let fx = FilesFixture::new();
    let tree = criu::images_plan::load(fx.dir(), false).expect("the fixture's images load");
    if let Some(why) = fpu_misfit(&tree) {
        eprintln!("skipped: the fixture's FPU state does not fit this CPU: {why}");
        return;
    }
    fx.adapt();
    let o = restore_in_netns(fx.dir());
    let root = Spawned::guard(ROOT);
    let child = Spawned::guard(CHILD);
    let log = fs::read_to_string(fx.dir().join("restore.log")).unwrap_or_default();
    assert!(
        o.status.success(),
        "restore failed: {}\n{log}",
        String::from_utf8_lossy(&o.stderr)
    );
    for pid in [ROOT, CHILD] {
        assert_eq!(
            wait_state(pid, "S", Duration::from_secs(5)),
            Some('S'),
            "pid {pid} is not sleeping"
        );
    }
    // Both TCP ends and the listener are back, in the namespace the tree now lives in.
    let tcp = fs::read_to_string(format!("/proc/{ROOT}/net/tcp")).unwrap();
    let states: Vec<&str> = tcp
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(3))
        .collect();
    assert_eq!(
        states.iter().filter(|s| **s == "01").count(),
        2,
        "two established ends: {tcp}"
    );
    assert_eq!(
        states.iter().filter(|s| **s == "0A").count(),
        1,
        "one listener: {tcp}"
    );

    // The datagram receiver is bound to its path again.
    use std::os::unix::fs::FileTypeExt;
    assert!(
        fs::symlink_metadata("/tmp/fx/files.dgram")
            .unwrap()
            .file_type()
            .is_socket()
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(ROOT),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    let out = wait_out(&format!("OK {ROOT}"));
    assert!(
        out.contains(&format!("OK {ROOT}")),
        "the program says: {out}"
    );
    assert!(!out.contains("BAD"), "{out}");
    // The check killed the child through its pidfd and reaped it.
    assert!(!pid_exists(CHILD));
    drop(child);
    drop(root);
}

/// Damages `name` in a copy of the fixture's images with `damage` and restores it: the restore
/// fails before any task exists, and its error names the file and the offset.
fn refused(name: &str, damage: impl FnOnce(&mut Vec<u8>), want: &[&str]) {
    let fx = FilesFixture::new();
    let p = fx.dir().join(name);
    let mut b = fs::read(&p).unwrap();
    damage(&mut b);
    fs::write(&p, &b).unwrap();
    let o = restore_in_netns(fx.dir());
    let _root = Spawned::guard(ROOT);
    let _child = Spawned::guard(CHILD);
    assert!(!o.status.success(), "a restore from a damaged {name}");
    let err = String::from_utf8_lossy(&o.stderr);
    for w in want {
        assert!(err.contains(w), "{w:?} not in: {err}");
    }
    assert!(!pid_exists(ROOT) && !pid_exists(CHILD), "a task ran");
    assert_eq!(
        fs::read_to_string(OUT).unwrap(),
        format!("ready {ROOT}\n"),
        "the program ran"
    );
}

/// The offsets of the entries of a protobuf image (after its two magic words): where each
/// size word starts. For `sk-queues.img` each entry's data follows it: `data` gives its length.
fn entry_offsets(b: &[u8], data: impl Fn(&[u8]) -> usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut at = 8;
    while at + 4 <= b.len() {
        out.push(at);
        let n = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
        at += 4 + n + data(&b[at + 4..at + 4 + n]);
    }
    out
}

/// The first UNIXSK entry of the fixture's files.img: where its size word is, and its size.
fn first_unix_entry(b: &[u8]) -> (usize, usize) {
    let files: Vec<FileEntry> = criu_images::read_all(
        fixtures_dir().join("files").join(names::FILES),
        magic::FILES,
    )
    .unwrap();
    let i = files.iter().position(|f| f.usk.is_some()).unwrap();
    let at = entry_offsets(b, |_| 0)[i];
    (
        at,
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize,
    )
}

#[test]
fn a_truncated_socket_entry_in_files_img_fails_the_restore_naming_file_and_offset() {
    skip_if_not_root!(
        "a_truncated_socket_entry_in_files_img_fails_the_restore_naming_file_and_offset"
    );
    let _g = test_lock();
    become_subreaper();
    if pid_exists(ROOT) || pid_exists(CHILD) {
        eprintln!("skipped: pid {ROOT} or {CHILD} recorded in the fixture is taken");
        return;
    }
    let b = fs::read(fixtures_dir().join("files").join(names::FILES)).unwrap();
    let (at, n) = first_unix_entry(&b);
    refused(
        names::FILES,
        |b| b.truncate(at + 4 + n / 2),
        &[
            "files.img",
            &format!("offset {at}"),
            &format!("truncated entry: {} of {n} bytes", n / 2),
        ],
    );
}

#[test]
fn a_corrupt_socket_entry_in_files_img_fails_the_restore_naming_file_and_offset() {
    skip_if_not_root!(
        "a_corrupt_socket_entry_in_files_img_fails_the_restore_naming_file_and_offset"
    );
    let _g = test_lock();
    become_subreaper();
    if pid_exists(ROOT) || pid_exists(CHILD) {
        eprintln!("skipped: pid {ROOT} or {CHILD} recorded in the fixture is taken");
        return;
    }
    let b = fs::read(fixtures_dir().join("files").join(names::FILES)).unwrap();
    let (at, _) = first_unix_entry(&b);
    // type (08 05), id (10 09), then the usk message: tag 82 01 and its length, made longer
    // than the entry.
    assert_eq!(&b[at + 4..at + 10], &[0x08, 0x05, 0x10, 0x09, 0x82, 0x01]);
    refused(
        names::FILES,
        |b| b[at + 10] = 0x7f,
        &["files.img", &format!("offset {at}"), "usk"],
    );
}

/// sk-queues.img: each entry's data (its `length`, field 2) follows it.
fn queue_data_len(e: &[u8]) -> usize {
    use prost::Message;
    criu_images::pb::SkPacketEntry::decode(e).map_or(0, |p| p.length as usize)
}

#[test]
fn a_truncated_or_corrupt_sk_queues_img_fails_the_restore_naming_file_and_offset() {
    skip_if_not_root!(
        "a_truncated_or_corrupt_sk_queues_img_fails_the_restore_naming_file_and_offset"
    );
    let _g = test_lock();
    become_subreaper();
    if pid_exists(ROOT) || pid_exists(CHILD) {
        eprintln!("skipped: pid {ROOT} or {CHILD} recorded in the fixture is taken");
        return;
    }
    let b = fs::read(fixtures_dir().join("files").join(names::SK_QUEUES)).unwrap();
    let at = entry_offsets(&b, queue_data_len);
    assert_eq!(at.len(), 5, "five queued messages");
    // Cut in the data of the second message.
    let cut = at[2] - 2;
    refused(
        names::SK_QUEUES,
        |b| b.truncate(cut),
        &["sk-queues.img", "offset"],
    );
    // The third entry made undecodable: its first tag given wire type 7, which does not exist.
    let third = at[2];
    refused(
        names::SK_QUEUES,
        |b| b[third + 4] = 0x0f,
        &["sk-queues.img", &format!("offset {third}")],
    );
}
