//! `--tls` on the lazy-pages connection (issue 18): `criu lazy-pages --page-server --tls`
//! takes a lazily restored victim's pages from `criu page-server --lazy-pages --tls` on
//! 127.0.0.1, and the victim's check of every byte passes; a daemon whose certificate another
//! CA signed is refused by the page server (and by `criu dump --lazy-pages --tls`, whose tree
//! then runs on), each side saying why.
//!
//! The certificates are made with the `openssl` command line tool. The tests run as root,
//! under the test lock and as a child subreaper, and kill and reap what they started.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use compel_criu_tests::tls_certs::{make_ca, make_cert, tls_args};
use compel_criu_tests::{
    CriuDaemon, Exit, Scratch, Spawned, ask_check, become_subreaper, copy_dir, dump_and_reap,
    free_port, restore_detached, skip_if_not_root, status_field, test_lock, wait_exit_timeout,
    wait_file,
};

/// A good CA with a server and a client certificate, and another CA with an intruder's.
fn certs(dir: &Path) {
    make_ca(dir, "good");
    make_ca(dir, "evil");
    make_cert(dir, "good", "server", "127.0.0.1");
    make_cert(dir, "good", "client", "127.0.0.1");
    make_cert(dir, "evil", "intruder", "127.0.0.1");
}

/// Whether a server's output tells of a refused TLS handshake: it refused the peer's
/// certificate, or the peer refused the server's (TLS 1.3: the client checks first and sends
/// an `UnknownCA` alert).
/// How long a criu process may take to end once its peer is done.
const END: Duration = Duration::from_secs(30);

fn refused_handshake(out: &str) -> bool {
    let out = out.to_lowercase();
    out.contains("tls") && (out.contains("certificate") || out.contains("unknownca"))
}

fn page_server(src: &Path, port: u16, tls: Vec<String>) -> CriuDaemon {
    let mut a: Vec<String> = ["page-server", "--lazy-pages", "-D"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.push(src.display().to_string());
    a.extend(["--address", "127.0.0.1", "--port"].map(String::from));
    a.push(port.to_string());
    a.extend(["-o", "page-server.log", "-v4"].map(String::from));
    a.extend(tls);
    CriuDaemon::start(&a, &[]).unwrap_or_else(|c| panic!("page server: {}", c.finish(END).1))
}

fn lazy_args(dst: &Path, port: u16, tls: Vec<String>) -> Vec<String> {
    let mut a: Vec<String> = vec!["lazy-pages".into(), "-D".into(), dst.display().to_string()];
    a.extend(["--page-server", "--address", "127.0.0.1", "--port"].map(String::from));
    a.push(port.to_string());
    a.extend(["-o", "lazy.log", "-v4"].map(String::from));
    a.extend(tls);
    a
}

#[test]
fn lazy_pages_over_tls_and_a_wrong_ca_refused() {
    skip_if_not_root!("lazy_pages_over_tls_and_a_wrong_ca_refused");
    let _g = test_lock();
    become_subreaper();
    let s = Scratch::new();
    let c = s.path("certs");
    fs::create_dir(&c).unwrap();
    certs(&c);
    let (mut v, _) = s.spawn_victim(
        env!("CARGO_BIN_EXE_criu-victim-big-memory"),
        &["16", s.ready.to_str().unwrap(), "holes"],
        None,
        Duration::from_secs(30),
    );
    let pid = v.pid();
    dump_and_reap(&mut v, &s.img, &[]);
    let dst = s.path("dst");
    fs::create_dir(&dst).unwrap();
    copy_dir(&s.img, &dst);

    // An intruder's daemon: the page server refuses its certificate, the daemon says so.
    let port = free_port();
    let ps = page_server(&s.img, port, tls_args(&c, "good", "server"));
    let daemon = CriuDaemon::start(
        &lazy_args(&dst, port, tls_args(&c, "evil", "intruder")),
        &[],
    )
    .expect_err("the intruder's daemon started");
    let (ok, err) = daemon.finish(END);
    assert!(!ok);
    let log = fs::read_to_string(dst.join("lazy.log")).unwrap_or_default();
    assert!(
        (err.clone() + &log).to_lowercase().contains("tls"),
        "{err}\n{log}"
    );
    let (ok, err) = ps.finish(END);
    let ps_log = fs::read_to_string(s.img.join("page-server.log")).unwrap_or_default();
    assert!(!ok, "the page server took the intruder: {ps_log}");
    assert!(refused_handshake(&(err + &ps_log)), "{ps_log}");

    // The right certificates: every page the victim reads comes over TLS.
    let port = free_port();
    let ps = page_server(&s.img, port, tls_args(&c, "good", "server"));
    let daemon = CriuDaemon::start(
        &lazy_args(&dst, port, tls_args(&c, "good", "client")),
        &[("CRIU_LAZY_PUSH", "0")],
    )
    .unwrap_or_else(|c| panic!("daemon: {}", c.finish(END).1));
    let restored = restore_detached(&dst, &["--lazy-pages"]);
    let r = Spawned::guard(restored);
    assert_eq!(restored, pid);
    assert_eq!(ask_check(pid, &s.ready.with_extension("2")), "check ok");
    drop(r);
    let (ok, err) = daemon.finish(END);
    let log = fs::read_to_string(dst.join("lazy.log")).unwrap_or_default();
    assert!(ok, "{err}\n{log}");
    assert!(log.contains("tls=true"), "{log}");
    let faults: u64 = log
        .lines()
        .find(|l| l.contains("all lazy pages are in"))
        .and_then(|l| l.split("fault_pages=").nth(1))
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{log}"));
    assert!(faults >= 16 * 256 - 16, "{log}");
    let (ok, err) = ps.finish(END);
    assert!(ok, "{err}");
}

#[test]
fn dump_lazy_pages_over_tls_refuses_a_wrong_ca_and_the_tree_runs_on() {
    skip_if_not_root!("dump_lazy_pages_over_tls_refuses_a_wrong_ca_and_the_tree_runs_on");
    let _g = test_lock();
    become_subreaper();
    let s = Scratch::new();
    let c = s.path("certs");
    fs::create_dir(&c).unwrap();
    certs(&c);
    let count = s.path("count");
    let v = Spawned::spawn(
        env!("CARGO_BIN_EXE_criu-victim-counter"),
        &[count.to_str().unwrap(), s.ready.to_str().unwrap()],
        &s.path("victim.log"),
        None,
    );
    wait_file(&s.ready, Duration::from_secs(10));
    let port = free_port();
    let mut a: Vec<String> = vec![
        "dump".into(),
        "-t".into(),
        v.pid().to_string(),
        "-D".into(),
        s.img.display().to_string(),
    ];
    a.extend(["--lazy-pages", "--address", "127.0.0.1", "--port"].map(String::from));
    a.push(port.to_string());
    a.extend(["-o", "dump.log", "-v4"].map(String::from));
    a.extend(tls_args(&c, "good", "server"));
    let dump = CriuDaemon::spawn(&a, &[]);
    // Serving once the log says so.
    let end = Instant::now() + Duration::from_secs(30);
    while !fs::read_to_string(s.img.join("dump.log"))
        .unwrap_or_default()
        .contains("serving lazy pages")
    {
        assert!(Instant::now() < end, "the dump never served");
        std::thread::sleep(Duration::from_millis(20));
    }
    let dst = s.path("dst");
    fs::create_dir(&dst).unwrap();
    copy_dir(&s.img, &dst);
    let daemon = CriuDaemon::start(
        &lazy_args(&dst, port, tls_args(&c, "evil", "intruder")),
        &[],
    )
    .expect_err("the intruder's daemon started");
    let (ok, _) = daemon.finish(END);
    assert!(!ok);
    let (ok, err) = dump.finish(END);
    let log = fs::read_to_string(s.img.join("dump.log")).unwrap_or_default();
    assert!(!ok, "the dump served the intruder: {log}");
    assert!(refused_handshake(&(err + &log)), "{log}");
    // The tree runs on, untraced.
    assert_eq!(status_field(v.pid(), "TracerPid:"), "0");
    let n = || {
        fs::read_to_string(&count)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let before = n();
    std::thread::sleep(Duration::from_millis(300));
    assert!(n() > before, "the counter stopped");
    assert_eq!(
        wait_exit_timeout(v.pid(), Duration::from_millis(1)),
        Ok(None::<Exit>)
    );
}
