//! `--tls` on the page server connection: a dump sent over TLS to `criu page-server` on
//! loopback (in a network namespace of the test's own) restores and passes the victim's check;
//! a client whose certificate another CA signed, and a server whose certificate names another
//! host, are refused with an error that says so, and the victim is left running.
//!
//! The certificates are made with the `openssl` command line tool. The tests run as root,
//! under the test lock and as a child subreaper, and kill and reap what they started.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use compel_criu_tests::tls_certs::{make_ca, make_cert, tls_args};
use compel_criu_tests::{
    CriuDaemon, Scratch, Spawned, ask_check, assert_ok_log, become_subreaper, criu, free_port,
    in_netns, pid_exists, skip_if_not_root, test_lock, wait_exit_timeout,
};

/// Starts `criu page-server -D DIR --address 127.0.0.1 --port PORT EXTRA` and waits for its
/// `--status-fd` byte.
fn page_server(dir: &Path, port: u16, extra: &[String]) -> CriuDaemon {
    fs::create_dir_all(dir).unwrap();
    let mut a: Vec<String> = vec!["page-server".into(), "-D".into(), dir.display().to_string()];
    a.extend(["--address", "127.0.0.1", "--port"].map(String::from));
    a.push(port.to_string());
    a.extend(["-o", "page-server.log", "-v4"].map(String::from));
    a.extend_from_slice(extra);
    CriuDaemon::start(&a, &[])
        .unwrap_or_else(|d| panic!("the page server did not start: {}", d.finish(SERVER_END).1))
}

/// How long a page server may take to end after its client.
const SERVER_END: Duration = Duration::from_secs(10);

/// `criu dump -t PID --page-server --address 127.0.0.1 --port PORT TLS... -D DIR`.
fn dump_to(pid: i32, dir: &Path, port: u16, tls: &[String]) -> std::process::Output {
    fs::create_dir_all(dir).unwrap();
    let (t, p) = (pid.to_string(), port.to_string());
    let mut a: Vec<&str> = vec!["dump", "-t", &t, "-D", dir.to_str().unwrap()];
    a.extend_from_slice(&["-o", "dump.log", "-v4", "--page-server"]);
    a.extend_from_slice(&["--address", "127.0.0.1", "--port", &p]);
    a.extend(tls.iter().map(String::as_str));
    criu(&a)
}

fn have_openssl() -> bool {
    Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A scratch directory with the victim running and certificates: CA `good` signed `server`
/// (for 127.0.0.1), `client` and `elsewhere` (for another host); CA `other` signed `stranger`.
fn setup() -> (Scratch, Spawned, PathBuf) {
    let s = Scratch::new();
    let pki = s.img.join("pki");
    fs::create_dir_all(&pki).unwrap();
    make_ca(&pki, "good");
    make_ca(&pki, "other");
    make_cert(&pki, "good", "server", "127.0.0.1");
    make_cert(&pki, "good", "client", "127.0.0.1");
    make_cert(&pki, "good", "elsewhere", "elsewhere.example");
    make_cert(&pki, "other", "stranger", "127.0.0.1");
    let (v, _) = s.spawn_victim(
        env!("CARGO_BIN_EXE_criu-victim-dirtier"),
        &["16", s.ready.to_str().unwrap()],
        None,
        Duration::from_secs(30),
    );
    (s, v, pki)
}

/// A dump sent over TLS: the server logs its TLS session, its images hold the pages, and
/// after the other images are copied across the restore passes the victim's check.
#[test]
fn tls_migration_over_loopback() {
    skip_if_not_root!("tls_migration_over_loopback");
    if !have_openssl() {
        eprintln!("skipped tls_migration_over_loopback: no openssl command");
        return;
    }
    let _g = test_lock();
    become_subreaper();
    in_netns(|| {
        let (s, mut v, pki) = setup();
        let pid = v.pid();
        let (src, dst) = (s.img.join("src"), s.img.join("dst"));
        let port = free_port();
        let ps = page_server(&dst, port, &tls_args(&pki, "good", "server"));
        let o = dump_to(pid, &src, port, &tls_args(&pki, "good", "client"));
        assert_ok_log(&o, "criu dump", &src.join("dump.log"));
        let (ok, err) = ps.finish(SERVER_END);
        assert!(ok, "page server: {err}");
        let _ = wait_exit_timeout(pid, Duration::from_secs(5));
        v.mark_reaped();
        let log = fs::read_to_string(dst.join("page-server.log")).unwrap();
        assert!(log.contains("TLS session with the client"), "{log}");
        assert!(dst.join(format!("pagemap-{pid}.img")).exists());
        assert!(!src.join(format!("pagemap-{pid}.img")).exists());
        for e in fs::read_dir(&src).unwrap() {
            let e = e.unwrap();
            if !dst.join(e.file_name()).exists() {
                fs::copy(e.path(), dst.join(e.file_name())).unwrap();
            }
        }
        let o = criu(&[
            "restore",
            "-d",
            "-D",
            dst.to_str().unwrap(),
            "-o",
            "restore.log",
        ]);
        assert_ok_log(&o, "criu restore", &dst.join("restore.log"));
        let task = Spawned::guard(pid);
        assert_eq!(
            ask_check(task.pid(), &s.ready.with_extension("2")).trim(),
            "check ok"
        );
    });
}

/// A client whose certificate another CA signed is refused by the server, and a server
/// whose certificate names another host is refused by the client (but accepted with
/// `--tls-no-cn-verify`, which is then not tried further here); the dumps fail saying TLS,
/// write no pages, and leave the victim running.
#[test]
fn tls_refuses_foreign_certificates() {
    skip_if_not_root!("tls_refuses_foreign_certificates");
    if !have_openssl() {
        eprintln!("skipped tls_refuses_foreign_certificates: no openssl command");
        return;
    }
    let _g = test_lock();
    become_subreaper();
    in_netns(|| {
        let (s, v, pki) = setup();
        let pid = v.pid();
        let good_client = tls_args(&pki, "good", "client");
        // The stranger trusts the good CA (so that it is the server that refuses).
        let mut stranger = tls_args(&pki, "good", "stranger");
        stranger[2] = pki.join("good-ca.pem").to_str().unwrap().to_string();
        let cases = [
            ("stranger", "server", stranger, "UnknownIssuer"),
            (
                "wrong name",
                "elsewhere",
                good_client.clone(),
                "not valid for name",
            ),
        ];
        for (what, server_cert, client_args, want) in cases {
            let dst = s.img.join(format!("dst-{server_cert}"));
            let src = s.img.join(format!("src-{server_cert}"));
            let port = free_port();
            let ps = page_server(&dst, port, &tls_args(&pki, "good", server_cert));
            let o = dump_to(pid, &src, port, &client_args);
            let err = String::from_utf8_lossy(&o.stderr).to_string();
            assert!(!o.status.success(), "{what}: the dump succeeded");
            assert!(err.contains("TLS"), "{what}: {err}");
            let (ok, serr) = ps.finish(SERVER_END);
            eprintln!("{what}: dump: {err}{what}: page server: {serr}");
            assert!(!ok, "{what}: the page server succeeded");
            assert!(serr.contains("TLS"), "{what}: {serr}");
            assert!(
                err.contains(want) || serr.contains(want),
                "{what}: want {want}: dump: {err} server: {serr}"
            );
            assert!(!dst.join(format!("pagemap-{pid}.img")).exists(), "{what}");
            assert!(pid_exists(pid), "{what}: the victim is gone");
        }
        // The same wrong-named server is accepted with --tls-no-cn-verify.
        let dst = s.img.join("dst-nocn");
        let src = s.img.join("src-nocn");
        let port = free_port();
        let ps = page_server(&dst, port, &tls_args(&pki, "good", "elsewhere"));
        let mut args = good_client;
        args.push("--tls-no-cn-verify".into());
        let o = dump_to(pid, &src, port, &args);
        assert_ok_log(&o, "criu dump --tls-no-cn-verify", &src.join("dump.log"));
        let (ok, err) = ps.finish(SERVER_END);
        assert!(ok, "page server: {err}");
        assert!(dst.join(format!("pagemap-{pid}.img")).exists());
        let _ = wait_exit_timeout(pid, Duration::from_secs(5));
        let mut v = v;
        v.mark_reaped();
    });
}
