//! The page server: a live migration over loopback (pre-dump and dump send their pages to
//! `criu page-server`, the rest of the images is copied, the restore reads the chain the
//! servers wrote), and a server that meets a broken client.
//!
//! The tests that dump run as root, under the test lock and as a child subreaper, and kill and
//! reap what they started.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use compel_criu_tests::{
    CriuDaemon, Scratch, Spawned, ask_check, assert_ok_log, become_subreaper, criu, criu_in,
    free_port, pid_exists, skip_if_not_root, test_lock, wait_exit_timeout, wait_file,
};
use nix::sys::signal::Signal;

/// Starts `criu page-server -D DIR --address 127.0.0.1 --port PORT EXTRA` and waits for its
/// `--status-fd` byte.
fn page_server(dir: &Path, port: u16, extra: &[&str]) -> CriuDaemon {
    fs::create_dir_all(dir).unwrap();
    let p = port.to_string();
    let mut a = vec![
        "page-server",
        "-D",
        dir.to_str().unwrap(),
        "--address",
        "127.0.0.1",
    ];
    a.extend_from_slice(&["--port", &p, "-o", "page-server.log", "-v4"]);
    a.extend_from_slice(extra);
    CriuDaemon::start(&a, &[])
        .unwrap_or_else(|d| panic!("the page server did not start: {}", d.finish(SERVER_END).1))
}

/// How long a page server may take to end after its client.
const SERVER_END: Duration = Duration::from_secs(5);

/// Pre-dump and then dump a running victim through page servers on loopback: the pages land
/// in the destination directories (none in the source ones), the second server keeps only
/// what changed with a parent link, and after copying the other images across the restore
/// from the destination passes the victim's check.
#[test]
fn live_migration_over_loopback() {
    skip_if_not_root!("live_migration_over_loopback");
    let _g = test_lock();
    become_subreaper();
    let s = Scratch::new();
    let (mut v, _) = s.spawn_victim(
        env!("CARGO_BIN_EXE_criu-victim-dirtier"),
        &["16", s.ready.to_str().unwrap()],
        None,
        Duration::from_secs(30),
    );
    let pid = v.pid();
    let t = pid.to_string();
    let (src, dst) = (s.img.join("src"), s.img.join("dst"));

    let port = free_port();
    let ps = page_server(&dst.join("1"), port, &[]);
    let p = port.to_string();
    let remote = ["--page-server", "--address", "127.0.0.1", "--port", &p];
    let mut args = vec!["pre-dump", "-t", &t];
    args.extend_from_slice(&remote);
    criu_in(&src.join("1"), "pre-dump", &args);
    let (ok, err) = ps.finish(SERVER_END);
    assert!(ok, "page server: {err}");
    assert!(pid_exists(pid));
    assert!(dst.join("1").join(format!("pagemap-{pid}.img")).exists());
    assert!(!src.join("1").join(format!("pagemap-{pid}.img")).exists());

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGUSR2).unwrap();
    wait_file(&s.ready.with_extension("r1"), Duration::from_secs(10));

    let port = free_port();
    let ps = page_server(&dst.join("2"), port, &["--prev-images-dir", "../1"]);
    let p = port.to_string();
    let remote = ["--page-server", "--address", "127.0.0.1", "--port", &p];
    let mut args = vec!["dump", "-t", &t, "--track-mem", "--prev-images-dir", "../1"];
    args.extend_from_slice(&remote);
    criu_in(&src.join("2"), "dump", &args);
    let (ok, err) = ps.finish(SERVER_END);
    assert!(ok, "page server: {err}");
    let _ = wait_exit_timeout(pid, Duration::from_secs(5));
    v.mark_reaped();
    let pm = criu_images::Pagemap::read(dst.join("2").join(format!("pagemap-{pid}.img"))).unwrap();
    assert!(
        pm.present_pages() < 4096 / 10 + 400,
        "{} pages",
        pm.present_pages()
    );
    assert_eq!(
        fs::read_link(dst.join("2").join("parent")).unwrap(),
        Path::new("../1")
    );

    // The migration: every other image goes across.
    for e in fs::read_dir(src.join("2")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if name == "parent" || dst.join("2").join(&name).exists() {
            continue;
        }
        fs::copy(e.path(), dst.join("2").join(&name)).unwrap();
    }
    let d2 = dst.join("2");
    let o = criu(&[
        "restore",
        "-d",
        "-D",
        d2.to_str().unwrap(),
        "-o",
        "restore.log",
        "-v4",
    ]);
    assert_ok_log(&o, "criu restore", &d2.join("restore.log"));
    let task = Spawned::guard(pid);
    assert_eq!(
        ask_check(task.pid(), &s.ready.with_extension("2")).trim(),
        "check ok"
    );
}

/// A client that stops in the middle of the pages, one that sends an unknown command, and
/// one that sends parent entries to a server without parent images: each ends the server
/// with an error that says so, and no half-written pagemap is left.
#[test]
fn page_server_refuses_broken_clients() {
    let iov = |cmd: u32, nr: u64, vaddr: u64, dst: u64| {
        let mut b = [0u8; 32];
        b[0..4].copy_from_slice(&cmd.to_ne_bytes());
        b[8..16].copy_from_slice(&nr.to_ne_bytes());
        b[16..24].copy_from_slice(&vaddr.to_ne_bytes());
        b[24..32].copy_from_slice(&dst.to_ne_bytes());
        b
    };
    let dst = (4242u64 << 8) | 1;
    type Client = Box<dyn Fn(&mut TcpStream)>;
    let cases: [(&str, Client); 3] = [
        (
            "went away",
            Box::new(move |c: &mut TcpStream| {
                c.write_all(&iov(4, 0, 0, dst)).unwrap();
                let mut b = [0u8; 1];
                c.read_exact(&mut b).unwrap();
                // PS_IOV_ADD_F with PE_PRESENT: two pages announced, one sent.
                c.write_all(&iov((4 << 16) | 6, 2, 0x10000, dst)).unwrap();
                c.write_all(&[7u8; 4096]).unwrap();
            }),
        ),
        (
            "unknown command",
            Box::new(move |c: &mut TcpStream| {
                c.write_all(&iov(0x77, 0, 0, dst)).unwrap();
            }),
        ),
        (
            "no parent images",
            Box::new(move |c: &mut TcpStream| {
                c.write_all(&iov(4, 0, 0, dst)).unwrap();
                let mut b = [1u8; 1];
                c.read_exact(&mut b).unwrap();
                assert_eq!(b[0], 0, "has_parent");
                c.write_all(&iov((1 << 16) | 6, 2, 0x10000, dst)).unwrap();
            }),
        ),
    ];
    for (want, client) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let port = free_port();
        let ps = page_server(tmp.path(), port, &[]);
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        client(&mut c);
        drop(c);
        let (ok, err) = ps.finish(SERVER_END);
        assert!(!ok, "{want}: the page server succeeded");
        assert!(err.contains(want), "{want}: {err}");
        assert!(!tmp.path().join("pagemap-4242.img").exists(), "{want}");
        assert!(!tmp.path().join("pages-65536.img").exists(), "{want}");
    }
}
