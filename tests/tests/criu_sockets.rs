//! `criu dump` then `criu restore` of unix sockets in many shapes (pairs, names, listeners with
//! queued connections, queued data, shutdowns, closed peers, options, a socket shared with a
//! child): the restored victim checks each one itself. Also: a restore twice in a row from the
//! same images, the images in CRIU's format, and a refused kind (`AF_VSOCK`) leaving the victim running.

use std::path::Path;
use std::time::Duration;

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, children_of, criu_dump, dump_and_reap, pid_exists,
    restore_detached, skip_if_not_root, test_lock, wait_exit_timeout, wait_file,
};
use criu_images::pb::{FdTypes, FileEntry, SkPacketEntry};
use criu_images::{ImageReader, magic, names};

struct Run {
    dir: tempfile::TempDir,
}

impl Run {
    fn new() -> Run {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("work")).unwrap();
        Run { dir }
    }

    fn p(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    fn spawn(&self, extra: &[&str]) -> (Spawned, Spawned) {
        let (out, ready, work) = (self.p("out"), self.p("ready"), self.p("work"));
        let mut args = vec![
            out.to_str().unwrap(),
            ready.to_str().unwrap(),
            work.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let v = Spawned::spawn(
            env!("CARGO_BIN_EXE_criu-victim-sockets"),
            &args,
            &self.p("victim.log"),
            None,
        );
        wait_file(&ready, Duration::from_secs(10));
        let kid = Spawned::guard(child_of(v.pid()));
        (v, kid)
    }

    fn verdict(&self, pid: i32) -> String {
        let _ = std::fs::remove_file(self.p("out"));
        ask_check(pid, &self.p("out"))
    }
}

fn child_of(pid: i32) -> i32 {
    for _ in 0..500 {
        if let Some(&k) = children_of(pid).first() {
            return k;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the victim {pid} has no child");
}

/// Restores `img` detached; returns guards for the restored victim and its child.
fn restore(img: &Path, pid: i32, kid: i32) -> (Spawned, Spawned) {
    let _ = std::fs::remove_file(img.join("restored.pid"));
    let r = restore_detached(img, &[]);
    let rv = Spawned::guard(r);
    assert_eq!(r, pid, "restored with another pid");
    assert_eq!(children_of(r), vec![kid], "the restored child");
    (rv, Spawned::guard(kid))
}

/// Without a dump the victim's own check passes (so a `bad` after restore is the restore's).
#[test]
fn socket_victim_checks_pass_untouched() {
    let _g = test_lock();
    become_subreaper();
    let run = Run::new();
    let (v, _k) = run.spawn(&[]);
    assert_eq!(run.verdict(v.pid()), "check ok");
}

#[test]
fn unix_sockets_come_back_twice_from_the_same_images() {
    skip_if_not_root!("unix_sockets_come_back_twice_from_the_same_images");
    let _g = test_lock();
    become_subreaper();
    let run = Run::new();
    let (mut v, mut k) = run.spawn(&[]);
    let (pid, kid) = (v.pid(), k.pid());
    let img = run.p("img");
    dump_and_reap(&mut v, &img, &[]);
    assert!(
        k.wait(Duration::from_secs(5)).is_some(),
        "the child was not killed"
    );

    // CRIU's format: UNIXSK entries, sk-queues with the stream pair's bytes for its receiver.
    let files: Vec<FileEntry> =
        criu_images::read_all(img.join(names::FILES), magic::FILES).unwrap();
    let unix: Vec<_> = files
        .iter()
        .filter(|f| f.r#type == FdTypes::Unixsk as i32)
        .filter_map(|f| f.usk.as_ref())
        .collect();
    assert!(unix.len() >= 18, "{} unix sockets in files.img", unix.len());
    let listener = unix
        .iter()
        .find(|u| u.state == 10 && u.name.first() == Some(&0))
        .expect("the abstract listener");
    assert_eq!(listener.name, format!("\0criu-sk-{pid}").into_bytes());
    let gone = unix
        .iter()
        .find(|u| u.name.ends_with(b"gone.sock\0") || u.name.ends_with(b"gone.sock"))
        .expect("the removed name");
    assert_eq!(gone.deleted, Some(true));
    let rel = unix
        .iter()
        .find(|u| u.name.starts_with(b"rel.sock"))
        .unwrap();
    assert_eq!(
        rel.name_dir.as_deref(),
        Some(run.p("work").to_str().unwrap())
    );
    let mut r = ImageReader::open_expect(img.join(names::SK_QUEUES), magic::SK_QUEUES).unwrap();
    let mut queued = 0;
    let mut total = 0;
    while let Some(e) = r.read_entry::<SkPacketEntry>().unwrap() {
        let data = r.read_extra(u64::from(e.length)).unwrap();
        assert!(files.iter().any(|f| f.id == e.id_for && f.usk.is_some()));
        queued += 1;
        total += data.len();
    }
    assert!(queued >= 10, "{queued} queued messages");
    assert!(total >= 3000 + 4 + 4, "{total} queued bytes");

    same_json_shape_as_criu(&img);

    for round in 0..2 {
        let (rv, rk) = restore(&img, pid, kid);
        assert_eq!(run.verdict(rv.pid()), "check ok", "round {round}");
        drop(rv);
        drop(rk);
        assert!(!pid_exists(pid) && !pid_exists(kid));
    }

    // A truncated sk-queues.img fails the restore before anything runs, naming file and offset.
    let q = img.join(names::SK_QUEUES);
    let len = std::fs::metadata(&q).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&q).unwrap();
    f.set_len(len - 3).unwrap();
    let o = compel_criu_tests::criu(&["restore", "-d", "-D", img.to_str().unwrap()]);
    assert!(
        !o.status.success(),
        "a restore from a truncated sk-queues.img"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("sk-queues.img") && err.contains("offset"),
        "stderr: {err}"
    );
    assert!(!pid_exists(pid) && !pid_exists(kid));
}

#[test]
fn a_vsock_socket_is_refused_by_name_and_the_victim_runs_on() {
    skip_if_not_root!("a_vsock_socket_is_refused_by_name_and_the_victim_runs_on");
    let _g = test_lock();
    become_subreaper();
    let run = Run::new();
    let (v, _k) = run.spawn(&["vsock"]);
    let img = run.p("img");
    std::fs::create_dir_all(&img).unwrap();
    let o = criu_dump(v.pid(), &img, &["-o", "dump.log", "-v4"]);
    assert!(
        !o.status.success(),
        "the dump of an AF_VSOCK socket succeeded"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("AF_VSOCK") && err.contains("socket:["),
        "stderr: {err}"
    );
    assert_eq!(
        wait_exit_timeout(v.pid(), Duration::from_millis(200)),
        Ok(None)
    );
    assert_eq!(run.verdict(v.pid()), "check ok");
}

/// The keys of every `usk` object (and of its `opts`) in crit's JSON of `files.img` in `dir`.
fn usk_keys(dir: &Path) -> Vec<(Vec<String>, Vec<String>)> {
    let p = dir.join(names::FILES);
    let v = criu_images::json::decode_image(
        &std::fs::read(&p).unwrap(),
        &p,
        criu_images::json::DecodeOptions::pretty(),
    )
    .unwrap();
    let keys = |o: &serde_json::Value| -> Vec<String> {
        let mut k: Vec<String> = o.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.get("usk"))
        .map(|u| (keys(u), keys(&u["opts"])))
        .collect()
}

/// Our `files.img` read by our crit prints unix sockets with the keys CRIU's crit prints for
/// CRIU 4.2's own (the `files` fixture): the same option keys, and entry keys among CRIU's
/// (plus the optional `shutdown`, `deleted`, `name_dir` CRIU writes for such sockets).
fn same_json_shape_as_criu(img: &Path) {
    let theirs = usk_keys(&compel_criu_tests::fixtures_dir().join("files"));
    let ours = usk_keys(img);
    let their_opts = &theirs[0].1;
    let mut allowed: Vec<String> = theirs.iter().flat_map(|(k, _)| k.clone()).collect();
    allowed.extend(["shutdown", "deleted", "name_dir"].map(String::from));
    for (k, o) in &ours {
        assert_eq!(o, their_opts, "opts keys");
        for key in k {
            assert!(allowed.contains(key), "key {key} in our usk entries");
        }
        for must in [
            "id", "ino", "type", "state", "flags", "peer", "opts", "name",
        ] {
            assert!(k.iter().any(|x| x == must), "{must} missing");
        }
    }
}

#[test]
fn netlink_and_packet_sockets_come_back() {
    skip_if_not_root!("netlink_and_packet_sockets_come_back");
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let (out, ready) = (d.path().join("out"), d.path().join("ready"));
    let mut v = Spawned::spawn(
        env!("CARGO_BIN_EXE_criu-victim-sockets-nl"),
        &[out.to_str().unwrap(), ready.to_str().unwrap()],
        &d.path().join("victim.log"),
        None,
    );
    wait_file(&ready, Duration::from_secs(10));
    assert_eq!(ask_check(v.pid(), &out), "check ok", "before the dump");
    let _ = std::fs::remove_file(&out);
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    let files: Vec<FileEntry> =
        criu_images::read_all(img.join(names::FILES), magic::FILES).unwrap();
    let nl: Vec<_> = files.iter().filter_map(|f| f.nlsk.as_ref()).collect();
    let pk: Vec<_> = files.iter().filter_map(|f| f.psk.as_ref()).collect();
    assert_eq!((nl.len(), pk.len()), (3, 2));
    assert!(
        nl.iter()
            .any(|n| n.portid == v.pid() as u32 && n.groups == [1])
    );
    let raw = pk
        .iter()
        .find(|p| p.r#type == libc::SOCK_RAW as u32)
        .unwrap();
    assert!(raw.aux_data && raw.ifindex != 0 && raw.fanout == Some(0x4242));
    assert_eq!(raw.mclist.len(), 1);
    let r = Spawned::guard(restore_detached(&img, &[]));
    assert_eq!(r.pid(), v.pid());
    assert_eq!(ask_check(r.pid(), &out), "check ok", "after the restore");
}

/// Descriptors in flight are dumped now (criu_unix_scm restores them); a dump that leaves
/// the tree running takes nothing from its queues.
#[test]
fn descriptors_in_flight_are_dumped_and_the_victim_runs_on() {
    skip_if_not_root!("descriptors_in_flight_are_dumped_and_the_victim_runs_on");
    let _g = test_lock();
    become_subreaper();
    let run = Run::new();
    let (v, _k) = run.spawn(&["scm"]);
    let img = run.p("img");
    std::fs::create_dir_all(&img).unwrap();
    let o = criu_dump(v.pid(), &img, &["-R", "-o", "dump.log", "-v4"]);
    assert!(
        o.status.success(),
        "the dump of an fd in flight failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut r = ImageReader::open_expect(img.join(names::SK_QUEUES), magic::SK_QUEUES).unwrap();
    let mut rights = 0;
    while let Some(e) = r.read_entry::<SkPacketEntry>().unwrap() {
        r.read_extra(u64::from(e.length)).unwrap();
        rights += e.scm.iter().map(|s| s.rights.len()).sum::<usize>();
    }
    assert_eq!(rights, 1, "the pipe end in flight");
    assert_eq!(run.verdict(v.pid()), "check ok");
}

#[test]
fn a_peer_outside_the_tree_needs_ext_unix_sk_and_is_connected_again() {
    skip_if_not_root!("a_peer_outside_the_tree_needs_ext_unix_sk_and_is_connected_again");
    let _g = test_lock();
    become_subreaper();
    let run = Run::new();
    let lpath = run.p("outside.sock");
    let l = std::os::unix::net::UnixListener::bind(&lpath).unwrap();
    let arg = format!("ext={}", lpath.display());
    let (mut v, mut k) = run.spawn(&[&arg]);
    let (pid, kid) = (v.pid(), k.pid());
    let (_first, _) = l.accept().unwrap();
    let img = run.p("img");
    std::fs::create_dir_all(&img).unwrap();
    // Refused by name without the option; the victim runs on.
    let o = criu_dump(pid, &img, &["-o", "dump.log", "-v4"]);
    assert!(!o.status.success(), "a dump with an outside peer succeeded");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("outside the dumped tree") && err.contains("outside.sock"),
        "stderr: {err}"
    );
    assert_eq!(wait_exit_timeout(pid, Duration::from_millis(100)), Ok(None));
    dump_and_reap(&mut v, &img, &["--ext-unix-sk"]);
    assert!(k.wait(Duration::from_secs(5)).is_some());
    let (rv, _rk) = restore(&img, pid, kid);
    // The restored socket is a new connection to the same listener.
    l.set_nonblocking(false).unwrap();
    let _ = std::fs::remove_file(run.p("out"));
    compel_criu_tests::signal(rv.pid(), nix::sys::signal::Signal::SIGUSR1);
    let (mut again, _) = l.accept().unwrap();
    again
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut b = [0u8; 5];
    std::io::Read::read_exact(&mut again, &mut b).unwrap();
    assert_eq!(&b, b"again");
    assert_eq!(
        wait_file(&run.p("out"), Duration::from_secs(10)),
        "check ok"
    );
}
