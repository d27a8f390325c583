//! Images as untrusted input on the restore side (issue 23): a crafted size (a pipe's capacity,
//! a deleted file's size or one of its chunks) and an image or page file that is a symlink are
//! each refused with an error naming the file and what is wrong, before any task is created
//! (the dumped pid stays free) and with nothing left behind (no ghost file, the symlink's target
//! untouched). The untouched images restore afterwards, as a control.

use std::path::{Path, PathBuf};
use std::time::Duration;

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, criu, dump_and_reap, open_dir, pid_exists,
    restore_detached, spawn_ready, stderr_text, test_lock, wait_file,
};
use criu_images::pb::{GhostChunkEntry, GhostFileEntry, PipeDataEntry};
use criu_images::{ImageReader, ImageWriter, magic, names};

const PIPES: &str = env!("CARGO_BIN_EXE_criu-victim-pipes-data");
const FILES: &str = env!("CARGO_BIN_EXE_criu-victim-files");
const COUNTER: &str = env!("CARGO_BIN_EXE_criu-victim-counter");

/// `criu restore -d` of `img` fails (exit 1), its message and log say each of `want`, and no
/// task `pid` appears.
fn restore_refused(img: &Path, pid: i32, want: &[&str]) {
    let log = img.join("restore.log");
    let _ = std::fs::remove_file(&log);
    let o = criu(&[
        "restore",
        "-D",
        img.to_str().unwrap(),
        "-d",
        "-o",
        "restore.log",
    ]);
    let err = stderr_text(&o) + &std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(o.status.code(), Some(1), "{err}");
    for w in want {
        assert!(err.contains(w), "wanted {w:?}: {err}");
    }
    std::thread::sleep(Duration::from_millis(50));
    assert!(!pid_exists(pid), "a task {pid} was left behind");
}

fn pipe_entries(path: &Path) -> Vec<(PipeDataEntry, Vec<u8>)> {
    let mut r = ImageReader::open_expect(path, magic::PIPES_DATA).unwrap();
    let mut out = Vec::new();
    while let Some(e) = r.read_entry::<PipeDataEntry>().unwrap() {
        let data = r.read_extra(u64::from(e.bytes)).unwrap();
        out.push((e, data));
    }
    out
}

fn write_pipes(path: &Path, entries: &[(PipeDataEntry, Vec<u8>)]) {
    let mut w = ImageWriter::create(path, magic::PIPES_DATA).unwrap();
    for (e, data) in entries {
        w.write_entry(e).unwrap();
        w.write_extra(data).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn crafted_pipe_capacities_are_refused_before_anything_runs() {
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let mut v = spawn_ready(PIPES, d.path(), &[]);
    let pid = v.pid();
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    let path = img.join(names::PIPES_DATA);
    let orig = pipe_entries(&path);
    let k = orig.iter().position(|(e, _)| e.bytes > 0).unwrap();
    let id = orig[k].0.pipe_id;

    // 2 GiB of capacity asked of F_SETPIPE_SZ.
    let mut huge = orig.clone();
    huge[k].0.size = Some(1 << 31);
    write_pipes(&path, &huge);
    restore_refused(
        &img,
        pid,
        &[
            "pipes-data.img",
            &format!("pipe {id} of 2147483648 bytes capacity"),
        ],
    );

    // A capacity smaller than the bytes it holds.
    let mut small = orig.clone();
    small[k].0.size = Some(4096);
    small[k].1 = vec![7; 5000];
    small[k].0.bytes = 5000;
    write_pipes(&path, &small);
    restore_refused(&img, pid, &["pipes-data.img", "holding 5000 bytes"]);

    write_pipes(&path, &orig);
    let pid = restore_detached(&img, &[]);
    let _r = Spawned::guard(pid);
    assert_eq!(ask_check(pid, &d.path().join("out")), "ok");
}

/// The ghost image of `img` (the one deleted file the files victim holds).
fn ghost_image(img: &Path) -> PathBuf {
    std::fs::read_dir(img)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("ghost-file-")
        })
        .expect("a ghost file image")
}

fn ghosts_left(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("criu-ghost"))
        .collect()
}

#[test]
fn crafted_ghost_file_sizes_are_refused_and_leave_nothing() {
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let fdir = d.path().join("files");
    std::fs::create_dir(&fdir).unwrap();
    // The files victim takes its directory first and its ready file second.
    let ready = d.path().join("ready");
    let mut v = Spawned::spawn(
        FILES,
        &[fdir.to_str().unwrap(), ready.to_str().unwrap()],
        &d.path().join("victim.log"),
        None,
    );
    wait_file(&ready, Duration::from_secs(10));
    let pid = v.pid();
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    let path = ghost_image(&img);
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let orig = std::fs::read(&path).unwrap();
    let mut r = ImageReader::open_expect(&path, magic::GHOST_FILE).unwrap();
    let g: GhostFileEntry = r.read_one().unwrap();
    assert_ne!(g.chunks, Some(true), "the victim's deleted file is small");
    let data = r.read_rest().unwrap();
    assert_eq!(data, b"ghost data 42");

    // A size of 1 PiB.
    let mut big = g.clone();
    big.size = Some(1 << 50);
    let mut w = ImageWriter::create(&path, magic::GHOST_FILE).unwrap();
    w.write_entry(&big).unwrap();
    w.write_extra(&data).unwrap();
    w.finish().unwrap();
    restore_refused(
        &img,
        pid,
        &[&name, "a deleted file of 1125899906842624 bytes"],
    );
    assert_eq!(ghosts_left(&fdir), Vec::<String>::new());

    // Chunks: one beyond the size the file claims, then one far away (a sparse file of 1 EiB).
    for (size, off, says) in [
        (4u64, 0u64, "chunk of 13 bytes at 0"),
        (1 << 30, 1 << 60, "chunk of 13 bytes at 1152921504606846976"),
    ] {
        let mut c = g.clone();
        c.chunks = Some(true);
        c.size = Some(size);
        let mut w = ImageWriter::create(&path, magic::GHOST_FILE).unwrap();
        w.write_entry(&c).unwrap();
        w.write_entry(&GhostChunkEntry { len: 13, off }).unwrap();
        w.write_extra(&data).unwrap();
        w.finish().unwrap();
        restore_refused(&img, pid, &[&name, says]);
        assert_eq!(ghosts_left(&fdir), Vec::<String>::new(), "{says}");
    }

    std::fs::write(&path, &orig).unwrap();
    let pid = restore_detached(&img, &[]);
    let _r = Spawned::guard(pid);
    assert_eq!(ask_check(pid, &d.path().join("ready.2")), "check ok");
}

#[test]
fn symlinked_image_and_page_files_are_refused() {
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let (out, ready) = (d.path().join("count"), d.path().join("ready"));
    let mut v = Spawned::spawn(
        COUNTER,
        &[out.to_str().unwrap(), ready.to_str().unwrap()],
        &d.path().join("victim.log"),
        None,
    );
    wait_file(&ready, Duration::from_secs(10));
    let pid = v.pid();
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    // Each file moved out and a link to it planted in its place: a restore must not read
    // through it, though the target is a perfectly good image.
    let aside = d.path().join("aside");
    std::fs::create_dir(&aside).unwrap();
    let pages = std::fs::read_dir(&img)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("pages-"))
        .unwrap();
    for f in [format!("core-{pid}.img"), "pstree.img".into(), pages] {
        let (at, to) = (img.join(&f), aside.join(&f));
        std::fs::rename(&at, &to).unwrap();
        std::os::unix::fs::symlink(&to, &at).unwrap();
        let before = std::fs::read(&to).unwrap();
        restore_refused(&img, pid, &[&f]);
        let log = std::fs::read_to_string(img.join("restore.log")).unwrap_or_default();
        assert!(
            log.contains("symbolic links") || log.contains("ELOOP"),
            "{f}: {log}"
        );
        assert_eq!(std::fs::read(&to).unwrap(), before);
        std::fs::remove_file(&at).unwrap();
        std::fs::rename(&to, &at).unwrap();
    }
    // Put back, the images restore.
    let pid2 = restore_detached(&img, &[]);
    assert_eq!(pid2, pid);
    let _r = Spawned::guard(pid);
    let n = || std::fs::read_to_string(&out).unwrap().lines().count();
    let before = n();
    std::thread::sleep(Duration::from_millis(300));
    assert!(n() > before, "the restored counter does not count");
}
